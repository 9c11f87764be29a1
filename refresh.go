package viperkv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// Watch keeps the resolved configuration current until ctx ends: it re-checks versionless
// references on the refresh interval (with jitter), retries failing ones with capped
// exponential back-off, watches the Viper's config file, publishes each new configuration
// in one atomic step and notifies OnChange watchers. Values that fail to refresh keep their
// last good value. If no Load has run, Watch runs one first (its failures are logged and
// retried like any other). Watch returns once every goroutine it started has stopped:
// ctx's error when ctx ends, ErrClosed when the provider is closed.
func (p *Provider) Watch(ctx context.Context) error {
	outer := ctx
	ctx, done, err := p.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	if !p.watching.CompareAndSwap(false, true) {
		return errors.New("viperkv: Watch is already running")
	}
	defer p.watching.Store(false)
	if p.cur.Load() == nil {
		if err := p.Load(ctx); err != nil && ctx.Err() != nil {
			return watchEnd(outer)
		}
	}

	var fw *fileWatcher
	p.updateMu.Lock()
	path := p.captured.path
	p.updateMu.Unlock()
	if path != "" && p.opts.watchFile {
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
	return watchEnd(outer)
}

// watchEnd is what Watch returns when it stops: ctx's error, or ErrClosed.
func watchEnd(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// Refresh re-fetches now every versionless reference and every reference without a good
// value, publishes the result and notifies watchers: what Watch does on its schedule, now
// (an operator's "refresh" button, a signal). For a change Key Vault reported for one secret
// use Notify (or Enqueue), which fetches only that secret. It returns a *LoadError when
// references are failing (those keep their last good values). Before any Load, Refresh is
// Load.
func (p *Provider) Refresh(ctx context.Context) error {
	ctx, done, err := p.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	p.updateMu.Lock()
	cur := p.cur.Load()
	if cur == nil {
		p.updateMu.Unlock()
		return p.Load(ctx)
	}
	defer p.updateMu.Unlock()
	ctx, span := p.tel.span(ctx, "viperkv.Refresh", SourceRefresh)
	snap, err := p.update(ctx, SourceRefresh, cur.base, cur.scan, refreshable(cur))
	endSpan(span, snap, err)
	if err != nil {
		return fmt.Errorf("viperkv: Refresh: %w", err)
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

// pollLoop runs the refresh schedule until ctx ends. Between cycles it sleeps on a timer:
// nothing spins while idle. Anything that changes the schedule (Load, Refresh, a file
// reload) wakes it through p.wake.
func (p *Provider) pollLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		p.updateMu.Lock()
		select { // the schedule is read afresh below: a pending wake-up is served by it
		case <-p.wake:
		default:
		}
		now := time.Now()
		lists := p.reimport(ctx, now) // this cycle's lists of vaults, made by the vault sources
		cur := p.cur.Load()
		due, wait := p.sched.due(cur, now)
		if len(p.opts.vaultSources) > 0 {
			wait = min(wait, p.sources.next.Sub(now))
			// A vault source just listed its vault: check all its secrets against that list.
			for _, r := range refreshable(cur) {
				if _, listed := lists[r.Vault]; listed && !slices.Contains(due, r) {
					due = append(due, r)
				}
			}
		}
		if len(due) > 0 || wait <= 0 {
			sctx, span := p.tel.span(ctx, "viperkv.refresh", SourcePoll)
			fetch, confirmed, postponed := p.detect(sctx, cur, due, lists, now)
			p.sched.confirm(confirmed, time.Now())
			p.sched.postpone(postponed, time.Now())
			span.SetAttributes(attribute.Int("viperkv.fetched", len(fetch)), attribute.Int("viperkv.confirmed_by_list", len(confirmed)))
			snap, err := p.update(sctx, SourcePoll, cur.base, cur.scan, fetch)
			endSpan(span, snap, err)
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
		}
	}
}
