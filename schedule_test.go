package viperkv

import (
	"slices"
	"testing"
	"time"
)

// The schedule alone, with explicit times: when each secret is due, how failures back
// off, what a list may vouch for, and what expiry says.

func testSchedule() schedule {
	o := defaultOptions()
	o.refreshInterval, o.retryMin, o.retryMax, o.expiryWarning = time.Minute, time.Second, 30*time.Second, time.Hour
	return newSchedule(o)
}

func TestScheduleRecord(t *testing.T) {
	s := testSchedule()
	now := time.Unix(1_700_000_000, 0)
	ok := Reference{Vault: "v.vault.azure.net", Name: "ok"}
	bad := Reference{Vault: "v.vault.azure.net", Name: "bad"}
	gone := Reference{Vault: "v.vault.azure.net", Name: "gone"}
	updated := now.Add(-10 * time.Second)
	good := &secret{has: true, status: StatusResolved, version: "1", updated: &updated}
	held := map[Reference]*secret{ok: good, bad: good, gone: good}
	failed := &secret{status: StatusOtherReasons, reason: "503"}
	s.record(map[Reference]*secret{ok: good, bad: failed, gone: good}, held, now)
	if d := s.polls[ok].next.Sub(now); d < 54*time.Second || d > 66*time.Second || !s.polls[ok].ok.Equal(now) {
		t.Errorf("a success is due again in %v (confirmed %v), want the interval +/-10%%", d, s.polls[ok].ok)
	}
	if s.recheck[ok] {
		t.Error("a version updated 10 s before the fetch is to be re-checked by GET")
	}
	for n := 1; n <= 8; n++ {
		at := now.Add(time.Duration(n) * time.Hour)
		s.record(map[Reference]*secret{bad: failed}, held, at)
		want := min(time.Second<<n, 30*time.Second) // for failure n+1
		st := s.polls[bad]
		if d := st.next.Sub(at); d < want/2 || d > want || st.fails != n+1 || !st.since.Equal(now) {
			t.Errorf("failure %d: due in %v, fails %d, since %v; want [%v, %v], %d, %v", n+1, d, st.fails, st.since, want/2, want, n+1, now)
		}
	}
	delete(held, gone)
	s.record(nil, held, now)
	if _, ok := s.polls[gone]; ok {
		t.Error("a secret no longer held is still scheduled")
	}

	// A fetch within two seconds of the version's last change, by the vault's clock (here
	// 30 s behind this machine's): a list cannot tell a version of the same second, so a
	// GET checks it once more.
	served := now.Add(-30 * time.Second)
	recent := served.Add(-time.Second)
	fresh := &secret{has: true, status: StatusResolved, version: "2", updated: &recent, served: &served}
	s.record(map[Reference]*secret{ok: fresh}, held, now)
	if !s.recheck[ok] {
		t.Error("a version fetched a second after its change, by the vault's clock, is not re-checked")
	}
	older := served.Add(-10 * time.Second)
	fresh.updated = &older
	s.record(map[Reference]*secret{ok: fresh}, held, now)
	if s.recheck[ok] {
		t.Error("a version 10 s old by the vault's clock is re-checked")
	}
}

func TestScheduleDue(t *testing.T) {
	s := testSchedule()
	now := time.Unix(1_700_000_000, 0)
	a := Reference{Vault: "v.vault.azure.net", Name: "a"}
	b := Reference{Vault: "v.vault.azure.net", Name: "b"}
	pinned := Reference{Vault: "v.vault.azure.net", Name: "p", Version: "0123456789abcdef0123456789abcdef"}
	good := &secret{has: true, status: StatusResolved}
	cur := &snapshot{secrets: map[Reference]*secret{a: good, b: good, pinned: good}}
	s.polls[a] = &pollState{next: now.Add(-time.Second)}
	s.polls[b] = &pollState{next: now.Add(42 * time.Second)}
	due, wait := s.due(cur, now)
	if !slices.Equal(due, []Reference{a}) || wait != 42*time.Second {
		t.Errorf("due %v, wait %v; want [a] and 42s (the pinned version is never due)", due, wait)
	}
	s.confirm([]Reference{a}, now)
	s.postpone([]Reference{b}, now)
	if s.polls[a].next.Before(now.Add(54*time.Second)) || s.polls[b].fails != 1 {
		t.Errorf("confirm and postpone: %+v %+v", s.polls[a], s.polls[b])
	}
}

func TestScheduleExpiry(t *testing.T) {
	s := testSchedule()
	now := time.Unix(1_700_000_000, 0)
	r := Reference{Vault: "v.vault.azure.net", Name: "s"}
	soon := now.Add(30 * time.Minute)
	secrets := map[Reference]*secret{r: {has: true, status: StatusResolved, version: "1", expires: &soon}}
	evs := s.checkExpiry(secrets, SourcePoll, now, true)
	if len(evs) != 1 || evs[0].Kind != EventNearExpiry || !s.expiryAt.Equal(soon) {
		t.Fatalf("30 min before expiry with a 1 h warning: %v, next check %v", evs, s.expiryAt)
	}
	if evs := s.checkExpiry(secrets, SourcePoll, now, true); len(evs) != 0 {
		t.Errorf("the near expiry is announced again: %v", evs)
	}
	evs = s.checkExpiry(secrets, SourcePoll, soon, true)
	if len(evs) != 1 || evs[0].Kind != EventError || secrets[r].status != StatusSecretExpired || !secrets[r].has {
		t.Errorf("at expiry: %v, %+v; want one Error event, SecretExpired, the value kept", evs, secrets[r])
	}
	// Key Vault's word counts before this clock reaches the time.
	unknown := map[Reference]*secret{r: {has: true, status: StatusResolved, version: "2"}}
	s.tell(r, expiryNote{version: "2", expired: true})
	if evs := s.checkExpiry(unknown, SourcePush, now, true); len(evs) != 1 || unknown[r].status != StatusSecretExpired {
		t.Errorf("told expired: %v, %+v", evs, unknown[r])
	}
}
