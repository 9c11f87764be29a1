package main

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// concealed replaces each secret value in a child's output.
const concealed = "<concealed by viperkv>"

// secretSet is the set of values to conceal. It only grows: after a rotation the old
// values stay concealed too.
type secretSet struct {
	mu sync.Mutex
	m  atomic.Pointer[matcher]
}

// matcher finds secrets; it is immutable once built.
type matcher struct {
	all     map[string]bool
	byFirst [256][][]byte // candidates by first byte, longest first
}

// add adds values (and, for multi-line values, each line of them, so output that splits
// or re-indents a certificate is still concealed). Blank values are ignored.
func (s *secretSet) add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	all := map[string]bool{}
	if old != nil {
		for v := range old.all {
			all[v] = true
		}
	}
	n := len(all)
	for _, v := range values {
		if strings.TrimSpace(v) == "" {
			continue
		}
		all[v] = true
		if strings.ContainsAny(v, "\r\n") {
			for _, line := range strings.FieldsFunc(v, func(r rune) bool { return r == '\r' || r == '\n' }) {
				if len(strings.TrimSpace(line)) >= 4 {
					all[line] = true
				}
			}
		}
	}
	if old != nil && len(all) == n {
		return
	}
	m := &matcher{all: all}
	for v := range all {
		m.byFirst[v[0]] = append(m.byFirst[v[0]], []byte(v))
	}
	for i := range m.byFirst {
		slices.SortFunc(m.byFirst[i], func(a, b []byte) int {
			if len(a) != len(b) {
				return len(b) - len(a)
			}
			return bytes.Compare(a, b)
		})
	}
	s.m.Store(m)
}

// maskWriter conceals secrets in a stream. A secret split across writes is still found:
// output that could be the start of a secret is held back until the next write (or
// Flush) shows whether it is one.
type maskWriter struct {
	w   io.Writer
	set *secretSet

	mu      sync.Mutex
	pending []byte
}

func newMaskWriter(w io.Writer, set *secretSet) *maskWriter { return &maskWriter{w: w, set: set} }

func (m *maskWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	buf := append(m.pending, p...)
	out, rest := m.set.m.Load().scan(buf, false)
	m.pending = append(m.pending[:0:0], rest...)
	if len(out) > 0 {
		if _, err := m.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what is held back, concealing whole secrets in it: the stream has ended.
func (m *maskWriter) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 {
		return nil
	}
	out, _ := m.set.m.Load().scan(m.pending, true)
	m.pending = nil
	_, err := m.w.Write(out)
	return err
}

// scan conceals every secret in buf. Unless final, it stops at the first position where a
// secret may start but buf ends first, and returns the rest to hold back. At each
// position the longest secret wins, and a longer secret that may still complete wins over
// a shorter one that is already complete, so no part of the longer one escapes.
func (m *matcher) scan(buf []byte, final bool) (out, rest []byte) {
	if m == nil {
		return buf, nil
	}
	out = make([]byte, 0, len(buf))
	emit, i := 0, 0
next:
	for i < len(buf) {
		cands := m.byFirst[buf[i]]
		if len(cands) == 0 {
			i++
			continue
		}
		tail := buf[i:]
		if !final {
			for _, s := range cands {
				if len(tail) < len(s) && bytes.HasPrefix(s, tail) {
					out = append(out, buf[emit:i]...)
					return out, buf[i:]
				}
			}
		}
		for _, s := range cands {
			if bytes.HasPrefix(tail, s) {
				out = append(out, buf[emit:i]...)
				out = append(out, concealed...)
				i += len(s)
				emit = i
				continue next
			}
		}
		i++
	}
	return append(out, buf[emit:]...), nil
}
