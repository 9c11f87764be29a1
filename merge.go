package viperkv

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/viperlayers"
)

// mergeSecrets combines the secrets prev held with fresh fetches, for the references sc
// found, and returns the events the changes make. A secret not fetched keeps its state; a
// secret no longer referenced is dropped.
func mergeSecrets(sc *scan, prev *snapshot, fetched map[Reference]*secret, src Source, now time.Time) (map[Reference]*secret, []Event) {
	var held map[Reference]*secret
	if prev != nil {
		held = prev.secrets
	}
	refs := sc.distinct()
	secrets := make(map[Reference]*secret, len(refs))
	var evs []Event
	for _, r := range refs {
		old := held[r]
		s, ok := fetched[r]
		if !ok {
			if old != nil {
				secrets[r] = old
			}
			continue
		}
		merged, events := merge(r, old, s, src, now)
		secrets[r] = merged
		evs = append(evs, events...)
	}
	return secrets, evs
}

// equalSecrets reports whether two sets hold the same secret states (merge returns the old
// state itself when nothing changed).
func equalSecrets(a, b map[Reference]*secret) bool { return maps.Equal(a, b) }

// merge combines a secret's previous state with a fresh fetch. A failure keeps the last
// good value; a new version replaces it. It returns old itself when nothing changed, so
// an unchanged refresh publishes nothing.
func merge(r Reference, old, s *secret, src Source, now time.Time) (*secret, []Event) {
	if old != nil && old.has && s.has && certparse.IsCertificate(old.contentType) && !certparse.IsCertificate(s.contentType) {
		// A certificate is replaced only by a certificate: a version stored as something
		// else (text/plain, a bare key) would break every handshake.
		s = &secret{status: StatusCertificateInvalid, took: s.took,
			reason: fmt.Sprintf("version %s has content type %q, not a certificate's (the version held is %s)", s.version, s.contentType, old.contentType)}
	}
	ev := func(kind EventKind, st *secret) Event {
		e := Event{Kind: kind, Source: src, Time: now, Secret: r, Status: st.status}
		if old != nil && old.has {
			e.OldVersion = old.version
		}
		if st.has {
			e.NewVersion, e.Certificate, e.ServedBy = st.version, st.cert, cmp.Or(st.servedBy, r.Vault)
		}
		if kind == EventError {
			e.Err = &ReferenceError{Key: r.String(), Status: st.status, Reason: st.reason}
			if s.status == StatusSecretExpired && s.expires != nil {
				e.Expires = *s.expires // as checkExpiry's SecretExpired events say
			}
		}
		return e
	}
	switch {
	case s.status == StatusResolved:
		if old == nil {
			return s, nil // a reference new in the settings: their Changed event covers it
		}
		var evs []Event
		if old.status != StatusResolved {
			evs = append(evs, ev(EventRecovered, s))
		}
		if old.has && old.version == s.version {
			if old.status == StatusResolved {
				return old, nil
			}
			return s, evs
		}
		if old.has && old.servedBy != s.servedBy && old.value == s.value && old.contentType == s.contentType {
			// The same value from another vault (a failover vault, or the primary back):
			// its version id differs, the configuration does not.
			return s, evs
		}
		return s, append(evs, ev(EventChanged, s))
	case old != nil && old.has && s.status == StatusSecretNotYetValid:
		// The newest version is not valid yet: keep serving the current one.
		return old, nil
	case old != nil && old.has && s.status == StatusSecretExpired && s.version == old.version:
		// The version held has expired and no newer one exists: checkExpiry marks it (it keeps
		// serving) and says so once; this fetch adds nothing.
		return old, nil
	case old != nil && old.has:
		if old.status == s.status && old.reason == s.reason {
			return old, nil
		}
		kept := *old
		kept.status, kept.reason, kept.took = s.status, s.reason, s.took
		if old.status == s.status {
			return &kept, nil // same failure, new wording: no new event
		}
		return &kept, []Event{ev(EventError, &kept)}
	default:
		if old != nil && old.status == s.status {
			return s, nil
		}
		return s, []Event{ev(EventError, s)}
	}
}

// settingsEvents returns the events that new settings make, beyond the secrets' own
// events evs: one Changed event for the keys whose values changed that evs do not name,
// an Error event for each key whose reference became malformed or disallowed (the key
// keeps its last good value), and a Recovered event for each key such an error left.
func settingsEvents(prev, cur *snapshot, src Source, now time.Time, evs []Event) []Event {
	if cur.scan == prev.scan {
		return nil
	}
	var out []Event
	byRef := cur.scan.keysByRef()
	covered := map[string]bool{}
	for _, e := range evs {
		if e.Kind == EventChanged {
			for _, k := range byRef[e.Secret] {
				covered[k] = true
			}
		}
	}
	var keys []string
	for _, k := range changedKeys(prev, cur) {
		if !covered[k] {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		out = append(out, Event{Kind: EventChanged, Source: src, Time: now, Keys: keys, Status: StatusResolved})
	}
	for _, k := range slices.Sorted(maps.Keys(cur.scan.invalid)) {
		re := cur.scan.invalid[k]
		if was, ok := prev.scan.invalid[k]; ok && *was == *re {
			continue // announced when it first went wrong
		}
		out = append(out, Event{Kind: EventError, Source: src, Time: now, Keys: []string{k}, Status: re.Status, Err: re})
	}
	// A key whose reference was malformed or disallowed and no longer is (fixed, or gone
	// from the settings) recovers: a watcher that raised an alarm hears it cleared. A fixed
	// reference whose secret fails is the secret's own events' to tell.
	for _, k := range slices.Sorted(maps.Keys(prev.scan.invalid)) {
		if _, still := cur.scan.invalid[k]; still {
			continue
		}
		if t, ok := cur.scan.templates[k]; ok && !slices.ContainsFunc(refsOf(t), func(r Reference) bool {
			s := cur.secrets[r.key()]
			return s == nil || s.status != StatusResolved
		}) || !ok {
			out = append(out, Event{Kind: EventRecovered, Source: src, Time: now, Keys: []string{k}, Status: StatusResolved})
		}
	}
	return out
}

// changedKeys lists the keys whose resolved values differ between two snapshots.
func changedKeys(a, b *snapshot) []string {
	delim := b.scan.delim
	fa, fb := viperlayers.Flatten(a.v.AllSettings(), delim), viperlayers.Flatten(b.v.AllSettings(), delim)
	var keys []string
	for k, va := range fa {
		if vb, ok := fb[k]; !ok || !reflect.DeepEqual(va, vb) {
			keys = append(keys, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// keysByRef maps each secret to the config keys that reference it, sorted.
func (sc *scan) keysByRef() map[Reference][]string {
	out := map[Reference][]string{}
	for _, k := range sc.keys() {
		t, ok := sc.templates[k]
		if !ok {
			continue
		}
		for _, r := range refsOf(t) {
			if ks := out[r.key()]; len(ks) == 0 || ks[len(ks)-1] != k {
				out[r.key()] = append(ks, k)
			}
		}
	}
	return out
}

// compareRefs orders references by vault, name and version, for stable event order.
func compareRefs(a, b Reference) int {
	if c := strings.Compare(a.Vault, b.Vault); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.Version, b.Version)
}
