//go:build windows

package main

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

var forwardedSignals = []os.Signal{os.Interrupt}

func stopping(sig os.Signal) bool { return sig == os.Interrupt }

// stopSignal and killSignal both end the command: Windows has no SIGTERM to send.
var stopSignal, killSignal os.Signal = os.Kill, os.Kill

// childAttr starts the command as it is; newProcessGroup then puts it in a job object.
func childAttr(any) *syscall.SysProcAttr { return nil }

// processGroup is a job object holding the command and, since Windows puts a child in
// its parent's job, every process it starts. The job kills them all when its last handle
// closes, so even viperkv's own death leaves none behind. A process the command starts in
// the instant between its start and its assignment to the job escapes it.
type processGroup struct {
	job  windows.Handle // 0: no job could be made; the command alone is handled
	proc *os.Process
}

func newProcessGroup(p *os.Process) *processGroup {
	g := &processGroup{proc: p}
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return g
	}
	limits := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{}
	limits.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&limits)), uint32(unsafe.Sizeof(limits))); err != nil {
		windows.CloseHandle(job)
		return g
	}
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(p.Pid))
	if err != nil {
		windows.CloseHandle(job)
		return g
	}
	defer windows.CloseHandle(h)
	if err := windows.AssignProcessToJobObject(job, h); err != nil {
		windows.CloseHandle(job)
		return g
	}
	g.job = job
	return g
}

// signal ends every process of the job: Windows has no SIGTERM to send.
func (g *processGroup) signal(os.Signal) error {
	if g.job == 0 {
		return g.proc.Kill()
	}
	return windows.TerminateJobObject(g.job, 1)
}

// basicAccounting is JOBOBJECT_BASIC_ACCOUNTING_INFORMATION.
type basicAccounting struct {
	TotalUserTime, TotalKernelTime, ThisPeriodTotalUserTime, ThisPeriodTotalKernelTime int64
	TotalPageFaultCount, TotalProcesses, ActiveProcesses, TotalTerminatedProcesses     uint32
}

// alive reports whether a process of the job remains.
func (g *processGroup) alive() bool {
	if g.job == 0 {
		return false
	}
	var info basicAccounting
	if err := windows.QueryInformationJobObject(g.job, windows.JobObjectBasicAccountingInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)), nil); err != nil {
		return false
	}
	return info.ActiveProcesses > 0
}

// release closes the job's handle (killing what is left in it).
func (g *processGroup) release() {
	if g.job != 0 {
		windows.CloseHandle(g.job)
		g.job = 0
	}
}

func statusOf(ps *os.ProcessState) int { return ps.ExitCode() }

func signalStatus(os.Signal) int { return 1 }

// reloadSignal: Windows has no signal a server takes as "re-read your files".
func reloadSignal(string) (os.Signal, error) {
	return nil, errors.New("not supported on Windows, which has no such signals")
}
