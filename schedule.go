package viperkv

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// schedule is when each secret is next refreshed, and what expiry has been announced. The
// provider's updateMu guards it.
type schedule struct {
	interval, retryMin, retryMax, expiryWarning time.Duration

	polls    map[Reference]*pollState
	warned   map[Reference]string     // version whose near expiry was announced
	told     map[Reference]expiryNote // what Key Vault said of a version's expiry (Notify)
	updated  map[Reference]heldAttrs  // the attributes of the version last fetched and held, for lists
	recheck  map[Reference]bool       // checked next by GET: a list cannot tell (see settle)
	clocks   map[string]vaultClock    // how far each vault's clock is ahead of this machine's
	expiryAt time.Time                // when checkExpiry next has something to say; zero: never
}

// pollState is the refresh schedule of one secret.
type pollState struct {
	next  time.Time
	fails int       // consecutive failed refreshes
	ok    time.Time // the value held was last confirmed current
	since time.Time // when the current run of failures began
}

// maxWait bounds one sleep of the poll loop when nothing is scheduled.
const maxWait = 24 * time.Hour

func newSchedule(o options) schedule {
	return schedule{interval: o.refreshInterval, retryMin: o.retryMin, retryMax: o.retryMax,
		expiryWarning: o.expiryWarning, polls: map[Reference]*pollState{}, warned: map[Reference]string{}, told: map[Reference]expiryNote{},
		updated: map[Reference]heldAttrs{}, recheck: map[Reference]bool{}, clocks: map[string]vaultClock{}}
}

// record sets when each fetched secret is next refreshed and forgets secrets no longer held.
// Successes share one jittered interval; failures back off exponentially.
func (s *schedule) record(fetched, held map[Reference]*secret, now time.Time) {
	next := now.Add(jitter(s.interval, 0.1))
	for r, f := range fetched {
		st := s.polls[r]
		if st == nil {
			st = &pollState{}
			s.polls[r] = st
		}
		h := held[r]
		switch {
		// Success, or the vault answered with nothing new to use while a good value is held:
		// a newest version not valid yet, or the held version itself expired. Neither is a
		// fault to retry quickly; the next version arrives on the interval.
		case f.status == StatusResolved,
			f.status == StatusSecretNotYetValid && h != nil && h.has,
			f.status == StatusSecretExpired && h != nil && h.has && h.version == f.version:
			st.fails, st.next, st.since = 0, next, time.Time{}
			if f.status == StatusResolved || (h != nil && h.has && h.version == f.version) {
				st.ok = now
			}
			if f.notBefore != nil && f.notBefore.After(now) && f.notBefore.Before(st.next) {
				st.next = *f.notBefore
			}
			if f.status == StatusResolved && f.updated != nil {
				s.updated[r] = heldAttrs{updated: *f.updated, expires: f.expires, notBefore: f.notBefore}
				// Measured on the vault's clock when it said (its Date header): this
				// machine's clock may be seconds off the vault's.
				served := now
				if f.served != nil {
					served = *f.served
					if f.servedBy == "" { // not a failover vault's clock
						s.noteClock(r.Vault, served, now)
					}
				}
				s.recheck[r] = served.Sub(*f.updated) < sameSecond
			}
		default:
			if st.fails == 0 {
				st.since = now
			}
			st.fails++
			st.next = now.Add(s.backoff(st.fails))
		}
	}
	for r := range s.polls {
		if _, ok := held[r]; !ok {
			delete(s.polls, r)
			delete(s.warned, r)
			delete(s.told, r)
			delete(s.updated, r)
			delete(s.recheck, r)
		}
	}
}

// heldAttrs are the attributes of a version as fetched: what a list item must match.
type heldAttrs struct {
	updated            time.Time
	expires, notBefore *time.Time
}

// confirm records that a list showed refs unchanged: a successful check, due again after
// an interval.
func (s *schedule) confirm(refs []Reference, now time.Time) {
	next := now.Add(jitter(s.interval, 0.1))
	for _, r := range refs {
		st := s.polls[r]
		if st == nil {
			st = &pollState{}
			s.polls[r] = st
		}
		st.fails, st.next, st.ok, st.since = 0, next, now, time.Time{}
	}
}

// postpone backs refs off, as a failed refresh would, without an event: their value is
// good, only the check could not be made.
func (s *schedule) postpone(refs []Reference, now time.Time) {
	for _, r := range refs {
		st := s.polls[r]
		if st == nil {
			st = &pollState{}
			s.polls[r] = st
		}
		st.fails++
		st.next = now.Add(s.backoff(st.fails))
	}
}

// deferTo makes refs due at t, as checked (no failure): a vault source's next list will
// check them.
func (s *schedule) deferTo(refs []Reference, t time.Time) {
	for _, r := range refs {
		st := s.polls[r]
		if st == nil {
			st = &pollState{}
			s.polls[r] = st
		}
		st.next = t
	}
}

// due returns the secrets of cur whose refresh time has come, and how long until the next
// refresh or expiry check.
func (s *schedule) due(cur *snapshot, now time.Time) ([]Reference, time.Duration) {
	wait := maxWait
	if !s.expiryAt.IsZero() {
		wait = min(wait, s.expiryAt.Sub(now))
	}
	var due []Reference
	for _, r := range refreshable(cur) {
		st := s.polls[r]
		if st == nil { // fetched before this schedule knew it: start its clock now
			st = &pollState{next: now.Add(jitter(s.interval, 0.1))}
			s.polls[r] = st
		}
		if d := st.next.Sub(now); d <= 0 {
			due = append(due, r)
		} else {
			wait = min(wait, d)
		}
	}
	return due, wait
}

// backoff is the wait before retry n (n >= 1): RetryMin doubling up to RetryMax, with
// "equal jitter" (half fixed, half random) so a fleet's retries spread out.
func (s *schedule) backoff(n int) time.Duration {
	d := s.retryMax
	if n < 31 {
		d = min(s.retryMin<<(n-1), s.retryMax)
	}
	return d/2 + rand.N(d/2+1)
}

// jitter returns d scaled by a random factor in [1-f, 1+f].
func jitter(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (1 - f + 2*f*rand.Float64()))
}

// checkExpiry marks versions in use that have expired (they keep serving: nothing is lost,
// but the status and an event say so) and, when warn is set, announces once per version
// those about to. It plans the next check, so expiry is noticed even when nothing is due
// to be fetched (for example a configuration of pinned versions only).
func (s *schedule) checkExpiry(secrets map[Reference]*secret, src Source, now time.Time, warn bool) []Event {
	var evs []Event
	for _, r := range slices.SortedFunc(maps.Keys(secrets), compareRefs) {
		sec := secrets[r]
		note, told := s.told[r]
		told = told && sec.has && strings.EqualFold(note.version, sec.version)
		if !sec.has || (sec.expires == nil && !told) {
			continue
		}
		exp := s.expiryOf(r, sec)
		// Key Vault's word counts even when this clock has not reached the time yet.
		expired := (!exp.IsZero() && !now.Before(exp)) || (told && note.expired)
		near := (!exp.IsZero() && exp.Sub(now) <= s.expiryWarning) || told
		switch {
		case expired && sec.status == StatusResolved:
			x := *sec
			x.status = StatusSecretExpired
			x.reason = "version " + sec.version + " expired"
			if !exp.IsZero() {
				x.reason += " at " + exp.UTC().Format(time.RFC3339)
			}
			x.reason += "; still serving it"
			secrets[r] = &x
			evs = append(evs, Event{Kind: EventError, Source: src, Time: now, Secret: r, OldVersion: sec.version,
				NewVersion: sec.version, Status: x.status, Expires: exp, Certificate: sec.cert,
				Err: &ReferenceError{Key: r.String(), Status: x.status, Reason: x.reason}})
		case warn && !expired && near && s.warned[r] != sec.version:
			s.warned[r] = sec.version
			evs = append(evs, Event{Kind: EventNearExpiry, Source: src, Time: now, Secret: r,
				OldVersion: sec.version, NewVersion: sec.version, Status: sec.status, Expires: exp, Certificate: sec.cert})
		}
	}
	s.expiryAt = time.Time{}
	plan := func(t time.Time) {
		if s.expiryAt.IsZero() || t.Before(s.expiryAt) {
			s.expiryAt = t
		}
	}
	for r, sec := range secrets {
		exp := s.expiryOf(r, sec)
		if !sec.has || exp.IsZero() || !now.Before(exp) {
			continue
		}
		plan(exp)
		if s.warned[r] != sec.version {
			if t := exp.Add(-s.expiryWarning); t.After(now) {
				plan(t)
			} else {
				plan(now)
			}
		}
	}
	return evs
}

// expiryNote is what Key Vault said (through Notify) of a version's expiry.
type expiryNote struct {
	version string
	expired bool      // SecretExpired; else SecretNearExpiry
	expires time.Time // the event's EXP; zero when absent
}

// expiryOf returns when the version sec holds expires: its exp, else what Key Vault said of
// it; zero when unknown.
func (s *schedule) expiryOf(r Reference, sec *secret) time.Time {
	if sec.expires != nil {
		return *sec.expires
	}
	if n, ok := s.told[r]; ok && sec.has && strings.EqualFold(n.version, sec.version) {
		return n.expires
	}
	return time.Time{}
}

// tell records a note for r; checkExpiry acts on it while r holds that version.
func (s *schedule) tell(r Reference, n expiryNote) {
	if old, ok := s.told[r]; ok && old.version == n.version && old.expired {
		n.expired = true // a late near-expiry notice does not undo an expiry
	}
	s.told[r] = n
}
