//go:build !windows

package main

import (
	"os"
	"syscall"
)

// forwardedSignals are passed on to the child. SIGINT from a terminal reaches the child
// directly too (it is in viperkv's process group); a second SIGINT is harmless to
// programs that handle the first.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// stopping reports whether a signal asks the process to end, so a rotation must not
// restart the child after it. SIGHUP is left out: daemons take it as "reload".
func stopping(sig os.Signal) bool {
	return sig == syscall.SIGINT || sig == syscall.SIGTERM || sig == syscall.SIGQUIT
}

// terminate asks a process to end gracefully.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

// statusOf is the exit status a shell would report: the code, or 128+N after signal N.
func statusOf(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// signalStatus is the exit status for ending on sig before a child ran.
func signalStatus(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}
