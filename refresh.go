package viperkv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrNotLoaded is returned by Watch and Refresh before the first Load.
var ErrNotLoaded = errors.New("viperkv: call Load before Watch or Refresh")

// pollState is the refresh schedule of one secret.
type pollState struct {
	next  time.Time
	fails int // consecutive failed refreshes
}

// OnChange registers fn to be called with every event, in order, on a goroutine of its
// own: a slow fn delays only its own later events, and a panic in fn is logged and the
// event skipped. Events carry no values; read them from Event.Current (and Event.Previous).
// The returned func unregisters fn; events not yet delivered to it are dropped.
func (p *Provider) OnChange(fn func(Event)) (cancel func()) {
	return p.notify.subscribe(fn)
}

// Watch keeps the resolved configuration current until ctx ends: it re-checks versionless
// references on the refresh interval (with jitter), retries failing ones with capped
// exponential back-off, watches the Viper's config file, publishes each new configuration
// in one atomic step and notifies OnChange watchers. Values that fail to refresh keep their
// last good value. Watch returns ctx's error once every goroutine it started has stopped.
func (p *Provider) Watch(ctx context.Context) error {
	if p.cur.Load() == nil {
		return ErrNotLoaded
	}
	if !p.watching.CompareAndSwap(false, true) {
		return errors.New("viperkv: Watch is already running")
	}
	defer p.watching.Store(false)

	var fw *fileWatcher
	if path := p.src.ConfigFileUsed(); path != "" && p.opts.watchFile {
		var err error
		if fw, err = newFileWatcher(path); err != nil {
			return fmt.Errorf("viperkv: watching config file: %w", err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pollLoop(ctx) })
	if fw != nil {
		wg.Go(func() { p.fileLoop(ctx, fw) })
	}
	wg.Wait()
	return ctx.Err()
}

// Refresh re-fetches now every versionless reference and every reference without a good
// value, publishes the result and notifies watchers. Call it when you know a secret changed
// (for example on an Event Grid notification); Watch calls the same code on its schedule.
// It returns a *LoadError when references are failing (those keep their last good values).
func (p *Provider) Refresh(ctx context.Context) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	if p.cur.Load() == nil {
		return ErrNotLoaded
	}
	snap, err := p.update(ctx, SourceRefresh, nil, func(_ *scan, cur *snapshot) []Reference { return refreshable(cur) })
	if err != nil {
		return err
	}
	select { // the schedule changed (a retry, or a version's nbf to wait for): re-plan the poll loop
	case p.wake <- struct{}{}:
	default:
	}
	if failed := failures(snap.status); len(failed) > 0 {
		return &LoadError{Failed: failed}
	}
	return nil
}

// refreshable lists the secrets a refresh re-fetches: versionless ones (a new version may
// exist) and any without a good value. A pinned version that resolved never changes.
func refreshable(cur *snapshot) []Reference {
	var out []Reference
	for r, s := range cur.secrets {
		if r.Version == "" || !s.has {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, compareRefs)
	return out
}

// compareRefs orders references by vault, name and version, for stable event order.
func compareRefs(a, b Reference) int {
	return cmp.Or(strings.Compare(a.Vault, b.Vault), strings.Compare(a.Name, b.Name), strings.Compare(a.Version, b.Version))
}

// update builds and publishes a new snapshot. tree is the new settings, or nil to keep the
// current ones; pick chooses the secrets to fetch. Secrets not fetched keep their current
// state. It returns the published snapshot, or ctx's error (publishing nothing) when ctx
// ended during a refresh. The caller holds updateMu.
func (p *Provider) update(ctx context.Context, src Source, tree map[string]any, pick func(*scan, *snapshot) []Reference) (*snapshot, error) {
	cur := p.cur.Load()
	var sc *scan
	if tree == nil {
		tree, sc = cur.tree, cur.scan
	} else {
		sc = scanSettings(tree, p.parse)
	}
	refs := pick(sc, cur)

	fctx, cancel := context.WithTimeout(ctx, p.opts.fetchTimeout)
	fetched := p.fetch.fetchAll(fctx, refs)
	cancel()
	if cur != nil && ctx.Err() != nil {
		// Shutting down: an aborted fetch says nothing about the vault.
		return nil, ctx.Err()
	}

	now := time.Now()
	var prevSecrets map[Reference]*secret
	if cur != nil {
		prevSecrets = cur.secrets
	}
	secrets := make(map[Reference]*secret, len(refs))
	var evs []Event
	for _, r := range sc.distinct() {
		old := prevSecrets[r]
		s, ok := fetched[r]
		if !ok {
			if old != nil {
				secrets[r] = old
			}
			continue
		}
		merged, events := merge(r, old, s, src, now)
		secrets[r] = merged
		if cur != nil {
			evs = append(evs, events...)
		}
	}
	// The first Load announces nothing (no watcher has seen a configuration yet), so it
	// must not mark near-expiry warnings as given either: the first cycle after it does.
	evs = append(evs, p.checkExpiry(secrets, src, now, cur != nil)...)

	if cur != nil && src != SourceFile && maps.Equal(secrets, cur.secrets) {
		p.reschedule(refs, fetched, secrets, now)
		p.announce(evs, sc, cur, cur) // near-expiry events need no new snapshot
		return cur, nil
	}
	snap := p.build(tree, sc, secrets, cur)
	p.cur.Store(snap)
	p.reschedule(refs, fetched, secrets, now)

	if cur != nil {
		if src == SourceFile {
			if keys := changedKeys(cur, snap); len(keys) > 0 {
				evs = append([]Event{{Kind: EventChanged, Source: src, Time: now, Keys: keys, Status: StatusResolved}}, evs...)
			}
		}
		p.announce(evs, sc, cur, snap)
	}
	return snap, nil
}

// announce completes events (keys, the snapshots before and after), logs and publishes them.
func (p *Provider) announce(evs []Event, sc *scan, prev, cur *snapshot) {
	if len(evs) == 0 {
		return
	}
	byRef := sc.keysByRef()
	for i := range evs {
		e := &evs[i]
		if e.Keys == nil && e.Secret.Name != "" {
			e.Keys = byRef[e.Secret]
		}
		if re, ok := e.Err.(*ReferenceError); ok && len(e.Keys) > 0 {
			named := *re // name the config keys, as Load's errors do
			named.Key = strings.Join(e.Keys, ", ")
			e.Err = &named
		}
		e.Previous, e.Current = prev.v, cur.v
		p.logEvent(*e)
	}
	p.notify.publish(evs)
}

// merge combines a secret's previous state with a fresh fetch. A failure keeps the last
// good value; a new version replaces it. It returns old itself when nothing changed, so
// an unchanged refresh publishes nothing.
func merge(r Reference, old, s *secret, src Source, now time.Time) (*secret, []Event) {
	ev := func(kind EventKind, st *secret) Event {
		e := Event{Kind: kind, Source: src, Time: now, Secret: r, Status: st.status}
		if old != nil && old.has {
			e.OldVersion = old.version
		}
		if st.has {
			e.NewVersion = st.version
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
		var evs []Event
		if old != nil && old.status != StatusResolved {
			evs = append(evs, ev(EventRecovered, s))
		}
		if old == nil {
			return s, nil // a reference new in the file: the file's Changed event covers it
		}
		if old.has && old.version == s.version {
			if old.status == StatusResolved {
				return old, nil
			}
			return s, evs
		}
		return s, append(evs, ev(EventChanged, s))
	case old != nil && old.has && s.status == StatusSecretNotYetValid:
		// The newest version is not valid yet: keep serving the current one.
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

// checkExpiry marks versions in use that have expired (they keep serving: nothing is lost,
// but the status and an event say so) and, when warn is set, announces once per version
// those about to.
func (p *Provider) checkExpiry(secrets map[Reference]*secret, src Source, now time.Time, warn bool) []Event {
	var evs []Event
	p.expiryAt = time.Time{}
	plan := func(t time.Time) {
		if p.expiryAt.IsZero() || t.Before(p.expiryAt) {
			p.expiryAt = t
		}
	}
	defer func() {
		// Plan the next check, so expiry is noticed even when nothing is due to be fetched
		// (for example a configuration of pinned versions only).
		for r, s := range secrets {
			if !s.has || s.expires == nil || !now.Before(*s.expires) {
				continue
			}
			plan(*s.expires)
			if p.warned[r] != s.version {
				if t := s.expires.Add(-p.opts.expiryWarning); t.After(now) {
					plan(t)
				} else {
					plan(now)
				}
			}
		}
	}()
	for _, r := range slices.SortedFunc(maps.Keys(secrets), compareRefs) {
		s := secrets[r]
		if !s.has || s.expires == nil {
			continue
		}
		exp := *s.expires
		switch {
		case !now.Before(exp) && s.status == StatusResolved:
			x := *s
			x.status = StatusSecretExpired
			x.reason = "version " + s.version + " expired at " + exp.UTC().Format(time.RFC3339) + "; still serving it"
			secrets[r] = &x
			evs = append(evs, Event{Kind: EventError, Source: src, Time: now, Secret: r, OldVersion: s.version,
				NewVersion: s.version, Status: x.status, Expires: exp,
				Err: &ReferenceError{Key: r.String(), Status: x.status, Reason: x.reason}})
		case warn && now.Before(exp) && exp.Sub(now) <= p.opts.expiryWarning && p.warned[r] != s.version:
			p.warned[r] = s.version
			evs = append(evs, Event{Kind: EventNearExpiry, Source: src, Time: now, Secret: r,
				OldVersion: s.version, NewVersion: s.version, Status: s.status, Expires: exp})
		}
	}
	return evs
}

// reschedule sets when each fetched secret is next refreshed and forgets secrets no longer
// referenced. Successes share one jittered interval; failures back off exponentially.
func (p *Provider) reschedule(fetchedRefs []Reference, fetched map[Reference]*secret, secrets map[Reference]*secret, now time.Time) {
	next := now.Add(jitter(p.opts.refreshInterval, 0.1))
	for _, r := range fetchedRefs {
		st := p.polls[r]
		if st == nil {
			st = &pollState{}
			p.polls[r] = st
		}
		s := fetched[r]
		switch {
		case s.status == StatusResolved || (s.status == StatusSecretNotYetValid && secrets[r].has):
			st.fails, st.next = 0, next
			if s.notBefore != nil && s.notBefore.After(now) && s.notBefore.Before(st.next) {
				st.next = *s.notBefore
			}
		default:
			st.fails++
			st.next = now.Add(p.backoff(st.fails))
		}
	}
	for r := range p.polls {
		if _, ok := secrets[r]; !ok {
			delete(p.polls, r)
			delete(p.warned, r)
		}
	}
}

// backoff is the wait before retry n (n >= 1): RetryMin doubling up to RetryMax, with
// "equal jitter" (half fixed, half random) so a fleet's retries spread out.
func (p *Provider) backoff(n int) time.Duration {
	d := p.opts.retryMax
	if n < 31 {
		d = min(p.opts.retryMin<<(n-1), p.opts.retryMax)
	}
	return d/2 + rand.N(d/2+1)
}

// jitter returns d scaled by a random factor in [1-f, 1+f].
func jitter(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (1 - f + 2*f*rand.Float64()))
}

// pollLoop runs the refresh schedule until ctx ends. Between cycles it sleeps on a timer:
// nothing spins while idle.
func (p *Provider) pollLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		p.updateMu.Lock()
		now := time.Now()
		due, wait := p.due(now)
		if !p.expiryAt.IsZero() {
			wait = min(wait, p.expiryAt.Sub(now))
		}
		if len(due) > 0 || wait <= 0 {
			_, _ = p.update(ctx, SourcePoll, nil, func(*scan, *snapshot) []Reference { return due })
			p.updateMu.Unlock()
			continue
		}
		p.updateMu.Unlock()

		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.wake:
			if !timer.Stop() {
				<-timer.C
			}
		}
	}
}

// due returns the secrets whose refresh time has come and how long until the next one.
// Secrets seen for the first time are scheduled one interval from now (or retried soon if
// they have no good value). The caller holds updateMu.
func (p *Provider) due(now time.Time) ([]Reference, time.Duration) {
	wait := 24 * time.Hour
	var due []Reference
	for _, r := range refreshable(p.cur.Load()) {
		st := p.polls[r]
		if st == nil {
			st = &pollState{next: now.Add(jitter(p.opts.refreshInterval, 0.1))}
			if s := p.cur.Load().secrets[r]; !s.has {
				st.fails = 1
				st.next = now.Add(p.backoff(1))
			}
			p.polls[r] = st
		}
		if d := st.next.Sub(now); d <= 0 {
			due = append(due, r)
		} else {
			wait = min(wait, d)
		}
	}
	return due, wait
}

// logEvent logs an event without values.
func (p *Provider) logEvent(e Event) {
	attrs := []any{"source", e.Source, "keys", e.Keys}
	if e.Secret.Name != "" {
		attrs = append(attrs, "vault", e.Secret.Vault, "secret", e.Secret.Name, "old_version", e.OldVersion, "new_version", e.NewVersion)
	}
	switch e.Kind {
	case EventError:
		p.opts.logger.Warn("viperkv: refresh failed; keeping the last good value", append(attrs, "status", e.Status, "error", e.Err)...)
	case EventNearExpiry:
		p.opts.logger.Warn("viperkv: secret version expires soon", append(attrs, "expires", e.Expires)...)
	default:
		p.opts.logger.Info("viperkv: "+strings.ToLower(string(e.Kind)), attrs...)
	}
}

// changedKeys lists the keys whose resolved values differ between two snapshots.
func changedKeys(a, b *snapshot) []string {
	fa, fb := flatten(a.v.AllSettings()), flatten(b.v.AllSettings())
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

func flatten(m map[string]any) map[string]any {
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(prefix+k+".", sub)
				continue
			}
			out[prefix+k] = v
		}
	}
	walk("", m)
	return out
}

// keysByRef maps each secret to the config keys that reference it, sorted.
func (sc *scan) keysByRef() map[Reference][]string {
	out := map[Reference][]string{}
	for _, k := range sc.keys() {
		t, ok := sc.templates[k]
		if !ok {
			continue
		}
		for _, r := range t.refs() {
			if ks := out[r.key()]; len(ks) == 0 || ks[len(ks)-1] != k {
				out[r.key()] = append(ks, k)
			}
		}
	}
	return out
}
