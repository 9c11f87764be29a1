package viperkv

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// ErrBusy is returned by Enqueue when its queue is full: the sender should retry later
// (the Event Grid handler answers 503, and Event Grid retries with back-off).
var ErrBusy = errors.New("viperkv: too many notices queued")

// ErrNotLoaded is returned by Notify and Enqueue before the first Load: the Load fetches
// the latest versions anyway.
var ErrNotLoaded = errors.New("viperkv: no configuration loaded yet")

// Bounds of the push queue: a burst of deliveries waits in it, handled by a few workers
// the provider owns, and a flood beyond it is refused rather than held.
const (
	maxQueuedNotices = 256
	maxPushWorkers   = 4
)

// pushQueue holds the notices Enqueue accepted and not yet handled.
type pushQueue struct {
	mu       sync.Mutex
	queue    []Notice
	workers  int
	handling int // notices a worker took and has not finished
}

// Pending returns how many notices Enqueue accepted that are not handled yet (queued, or
// being refreshed): 0 when the provider's push work is done, for example before Close.
func (p *Provider) Pending() int {
	q := &p.pushes
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue) + q.handling
}

// Enqueue hands n to the provider's own workers, which Notify it in the background, and
// returns at once: the way for a receiver that must answer quickly (the Event Grid handler)
// to pass notices on. It reports whether n was queued: false (and nil) when n concerns no
// secret the configuration references or a vault source imports. It returns an error
// naming a missing field, ErrNotLoaded before the first Load, ErrBusy when 256 notices
// wait already, and ErrClosed after Close; queued notices are dropped by Close. A notice
// that fails to refresh is logged at Warn; Watch retries it.
func (p *Provider) Enqueue(n Notice) (bool, error) {
	n, err := p.normalizeChange(n)
	if err != nil {
		return false, err
	}
	cur := p.cur.Load()
	if cur == nil {
		return false, ErrNotLoaded
	}
	if len(versionless(cur, pushKey{vault: n.Vault, name: strings.ToLower(n.Name)})) == 0 && !p.importsFrom(n.Vault) {
		return false, nil
	}
	q := &p.pushes
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) >= maxQueuedNotices {
		return false, ErrBusy
	}
	if q.workers < maxPushWorkers {
		ctx, done, err := p.enter(context.Background())
		if err != nil {
			return false, err
		}
		q.workers++
		go p.pushWorker(ctx, done)
	}
	q.queue = append(q.queue, n)
	return true, nil
}

// pushWorker Notifies queued notices until none is left or the provider closes.
func (p *Provider) pushWorker(ctx context.Context, done func()) {
	defer done()
	q := &p.pushes
	for {
		q.mu.Lock()
		if len(q.queue) == 0 || ctx.Err() != nil {
			q.queue = nil
			q.workers--
			q.mu.Unlock()
			return
		}
		n := q.queue[0]
		q.queue = q.queue[1:]
		q.handling++
		q.mu.Unlock()
		nctx, cancel := context.WithTimeout(ctx, p.opts.pushDelay+p.opts.fetchTimeout)
		err := p.Notify(nctx, n)
		cancel()
		q.mu.Lock()
		q.handling--
		q.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			p.opts.logger.Warn("viperkv: refresh after a notice failed; Watch retries it",
				"id", n.ID, "vault", n.Vault, "secret", n.Name, "err", err.Error())
		}
	}
}

// Logger returns the logger the provider logs to (WithLogger), for packages built on it.
func (p *Provider) Logger() *slog.Logger { return p.opts.logger }

// RefreshInterval returns how often Watch re-checks versionless references
// (WithRefreshInterval).
func (p *Provider) RefreshInterval() time.Duration { return p.opts.refreshInterval }

// Cloud returns the Azure cloud the provider reads (WithCloud).
func (p *Provider) Cloud() Cloud { return p.opts.cloud }

// MeterProvider returns the meter provider the provider records to (WithMeterProvider); a
// no-op one when none was given.
func (p *Provider) MeterProvider() metric.MeterProvider {
	if p.opts.meterProvider == nil {
		return metricnoop.NewMeterProvider()
	}
	return p.opts.meterProvider
}

// HTTPClient returns a client that sends through the provider's transport (WithTransport,
// WithEmulator, or one like azcore's default) and never follows a redirect, for packages
// that must reach Azure as the provider does, such as the Event Grid handler fetching Entra
// ID's signing keys.
func (p *Provider) HTTPClient() *http.Client {
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	switch t := p.transport.(type) {
	case *http.Client:
		c := *t
		c.CheckRedirect = noRedirect
		return &c
	case nil:
		return &http.Client{CheckRedirect: noRedirect}
	default:
		return &http.Client{Transport: roundTripFunc(t.Do), CheckRedirect: noRedirect}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip implements http.RoundTripper.
func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
