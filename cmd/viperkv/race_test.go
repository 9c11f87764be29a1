//go:build race && !windows

package main

// raceEnabled: the tests run with -race, so the viperkv binary is built with it too. The
// build then reuses the packages the test build compiled, and the detector watches the
// command as well.
const raceEnabled = true
