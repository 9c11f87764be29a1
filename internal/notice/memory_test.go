package notice

import (
	"fmt"
	"strings"
	"testing"
)

// Ids are remembered up to MaxIDs, the oldest forgotten first, whatever their length; ""
// is never remembered.
func TestMemoryRemembersRecentIDs(t *testing.T) {
	var m Memory[string]
	long := strings.Repeat("x", 64<<10)
	for i := range MaxIDs + 10 {
		m.RememberID(fmt.Sprint(i, long))
	}
	m.RememberID("")
	if m.SeenID(fmt.Sprint(0, long)) || m.SeenID(fmt.Sprint(9, long)) {
		t.Error("the oldest ids beyond MaxIDs are still remembered")
	}
	if !m.SeenID(fmt.Sprint(10, long)) || !m.SeenID(fmt.Sprint(MaxIDs+9, long)) {
		t.Error("a recent id is forgotten")
	}
	if m.SeenID("") || m.SeenID("never") {
		t.Error("an id never remembered is seen")
	}
	if len(m.ids) != MaxIDs || len(m.idOrder) != MaxIDs {
		t.Errorf("%d ids held (%d in order), want %d", len(m.ids), len(m.idOrder), MaxIDs)
	}
}

// Earlier versions are remembered per key, the newest maxVersions of them; a change is
// handled once at a time.
func TestMemoryVersionsAndChangesInFlight(t *testing.T) {
	var m Memory[string]
	for i := range maxVersions + 3 {
		m.HeldBefore("a", fmt.Sprint("v", i))
	}
	m.HeldBefore("a", "")
	if m.WasHeld("a", "v0") || !m.WasHeld("a", "v3") || !m.WasHeld("a", fmt.Sprint("v", maxVersions+2)) || m.WasHeld("b", "v3") || m.WasHeld("a", "") {
		t.Errorf("history of a: %q", m.history["a"])
	}
	if !m.Start("a", "v9") || m.Start("a", "v9") || !m.Start("a", "v10") || !m.Start("b", "v9") {
		t.Error("a change already in flight started again, or another could not start")
	}
	m.Finish("a", "v9")
	if !m.Start("a", "v9") {
		t.Error("a finished change cannot start again")
	}
	m.Finish("a", "v9")
	m.Finish("a", "v10")
	m.Finish("b", "v9")
	if len(m.inflight) != 0 {
		t.Errorf("changes left in flight: %v", m.inflight)
	}
}
