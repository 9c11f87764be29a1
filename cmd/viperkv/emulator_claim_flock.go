//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockInfo takes the lock file lockPath with flock(2), without waiting, and writes this
// process's pid into it. holder is the running emulator holding it instead (its pid, as
// it wrote it). release removes the file and lets the lock go.
func lockInfo(lockPath string) (release func(), holder *infoHolder, err error) {
	// The holder removes the file before it lets the lock go: a lock taken on a file that
	// was removed meanwhile guards nothing, so try again on the new file.
	for range 10 {
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("creating the lock file: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			b, _ := io.ReadAll(io.LimitReader(f, 32))
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				return nil, &infoHolder{pid: pid}, nil
			}
			return nil, nil, fmt.Errorf("locking %s: %w", lockPath, err)
		}
		held, err1 := f.Stat()
		named, err2 := os.Stat(lockPath)
		if err1 != nil || err2 != nil || !os.SameFile(held, named) {
			_ = f.Close()
			continue
		}
		if err := f.Truncate(0); err != nil {
			_ = f.Close()
			return nil, nil, fmt.Errorf("writing %s: %w", lockPath, err)
		}
		if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
			_ = f.Close()
			return nil, nil, fmt.Errorf("writing %s: %w", lockPath, err)
		}
		return func() {
			_ = os.Remove(lockPath)
			_ = f.Close()
		}, nil, nil
	}
	return nil, nil, fmt.Errorf("locking %s: it keeps being removed and re-created", lockPath)
}
