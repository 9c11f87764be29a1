// Package nettest holds the attacker tests' listener checks, shared by the root package's
// and kvtest's tests. Only tests import it.
package nettest

import (
	"net"
	"testing"
)

// ConnectionsBefore counts the connections made to ln so far, without waiting on the
// clock: it dials a marker connection and accepts in backlog order until the marker
// arrives, so a stray dial that happened before the call has been counted by then.
func ConnectionsBefore(t testing.TB, ln net.Listener) int {
	t.Helper()
	m, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	n := 0
	for {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		mine := c.RemoteAddr().String() == m.LocalAddr().String()
		c.Close()
		if mine {
			return n
		}
		n++
	}
}
