//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

// lockInfo takes no lock where flock(2) is missing (Windows among others): the probe of
// the emulator the existing info file names decides alone. Two emulators started at the
// same instant with one --info may then both start; the later one's files win.
func lockInfo(string) (release func(), holder *infoHolder, err error) {
	return func() {}, nil, nil
}
