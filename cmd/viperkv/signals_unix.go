//go:build !windows

package main

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"unsafe"
)

// forwardedSignals are passed on to the command's process group. In a terminal, the
// command's group is the foreground one, so a Ctrl-C reaches it directly.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// stopping reports whether a signal asks the process to end, so a rotation must not
// restart the child after it. SIGHUP is left out: daemons take it as "reload".
func stopping(sig os.Signal) bool {
	return sig == syscall.SIGINT || sig == syscall.SIGTERM || sig == syscall.SIGQUIT
}

// reloadSignal parses --reload-signal: a signal servers take as "re-read your files".
func reloadSignal(name string) (os.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(name), "SIG") {
	case "HUP":
		return syscall.SIGHUP, nil
	case "USR1":
		return syscall.SIGUSR1, nil
	case "USR2":
		return syscall.SIGUSR2, nil
	}
	return nil, errors.New("want HUP, USR1 or USR2")
}

// stopSignal asks a process to end gracefully; killSignal ends it.
var stopSignal, killSignal os.Signal = syscall.SIGTERM, syscall.SIGKILL

// childAttr starts the command in a process group of its own, so that the whole tree it
// starts can be signalled and waited for; when viperkv runs in the foreground of a
// terminal, the group takes the terminal's foreground, as a shell's job does.
func childAttr(stdin any) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if f, ok := stdin.(*os.File); ok && inForeground(f) {
		attr.Foreground, attr.Ctty = true, int(f.Fd())
	}
	return attr
}

// inForeground reports whether f is a terminal whose foreground process group is this
// process's.
func inForeground(f *os.File) bool {
	var pgrp int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp)))
	return errno == 0 && int(pgrp) == syscall.Getpgrp()
}

// processGroup is the command's process group (its id is the command's pid, see
// childAttr).
type processGroup struct{ pid int }

func newProcessGroup(p *os.Process) *processGroup { return &processGroup{pid: p.Pid} }

// signal sends sig to every process of the group.
func (g *processGroup) signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return syscall.EINVAL
	}
	return syscall.Kill(-g.pid, s)
}

// release does nothing: a process group needs no handle.
func (g *processGroup) release() {}

// alive reports whether a process of the group remains, after reaping those that are
// viperkv's own children (orphans come to viperkv when it runs as a container's first
// process). Zombies do not count: they hold nothing but an exit status. Call it only once
// the command itself has been waited for.
func (g *processGroup) alive() bool {
	pid := g.pid
	for {
		var ws syscall.WaitStatus
		if wpid, err := syscall.Wait4(-pid, &ws, syscall.WNOHANG, nil); wpid <= 0 || err != nil {
			break
		}
	}
	if alive, known := groupAliveProc(pid); known {
		return alive
	}
	err := syscall.Kill(-pid, 0)
	return err == nil || err == syscall.EPERM
}

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
