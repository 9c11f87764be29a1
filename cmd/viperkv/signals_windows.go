//go:build windows

package main

import (
	"errors"
	"os"
	"syscall"
)

var forwardedSignals = []os.Signal{os.Interrupt}

func stopping(sig os.Signal) bool { return sig == os.Interrupt }

// stopSignal and killSignal both end the command: Windows has no SIGTERM to send.
var stopSignal, killSignal os.Signal = os.Kill, os.Kill

// childAttr starts the command as it is: Windows has no process groups to signal, so the
// command alone is stopped.
func childAttr(any) *syscall.SysProcAttr { return nil }

// signalGroup ends the command: Windows has no SIGTERM to send.
func signalGroup(pid int, _ os.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// groupAlive is false: the command alone is waited for.
func groupAlive(int) bool { return false }

func statusOf(ps *os.ProcessState) int { return ps.ExitCode() }

func signalStatus(os.Signal) int { return 1 }

// reloadSignal: Windows has no signal a server takes as "re-read your files".
func reloadSignal(string) (os.Signal, error) {
	return nil, errors.New("not supported on Windows, which has no such signals")
}
