// Package logtest holds what tests need to read a log written from many goroutines.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer collects what any goroutine writes to it, for a test to read while they write.
// The zero Buffer is ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
