//go:build windows

package main

import "os"

var forwardedSignals = []os.Signal{os.Interrupt}

func stopping(sig os.Signal) bool { return sig == os.Interrupt }

// terminate ends a process: Windows has no SIGTERM to send.
func terminate(p *os.Process) error { return p.Kill() }

func statusOf(ps *os.ProcessState) int { return ps.ExitCode() }

func signalStatus(os.Signal) int { return 1 }
