// Package resource holds a value built from a viperkv Provider's configuration keys (a
// database pool, a client that carries an API key) and rebuilds it when those keys change,
// so a rotated secret is put to use without a restart.
package resource

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/viperlayers"
)

// Resource holds a value built from configuration keys (a database pool, a client that
// carries an API key) and rebuilds it when those keys change, so a rotated secret is put
// to use without a restart:
//
//   - The new value is built, and checked if build checks it, before anything switches.
//   - Traffic moves to it in one atomic step: Acquire returns the new value from then on.
//   - The old value is released only when every lease on it has ended, so work in flight
//     on it finishes. Releasing runs on a goroutine of its own and delays nothing else.
//   - If build fails, the old value keeps serving and Err says why. The build is retried
//     with capped exponential back-off (1 s doubling to 5 minutes, jittered), so a
//     transient failure does not leave the old value in use for good, and a newer change of
//     the keys (a newer secret version, an edited file) is tried as soon as it arrives.
//
// Rebuilds run one at a time, on this Resource's own watcher goroutine (see
// [viperkv.Provider.OnChange]), and build from the provider's latest configuration. Its methods
// are safe for concurrent use.
type Resource[T any] struct {
	p       *viperkv.Provider
	keys    []string
	delim   string // the configuration's key delimiter
	build   func(context.Context, *viper.Viper) (T, error)
	release func(T)

	cur         atomic.Pointer[generation[T]]
	unsubscribe func()
	ctx         context.Context // rebuilds' context; Close cancels it
	cancel      context.CancelFunc
	drains      sync.WaitGroup // retire goroutines

	mu      sync.Mutex // serialises rebuilds and Close; guards the fields below
	from    []any      // the keys' values the current value was built from
	closed  bool
	failed  string         // the change whose build is failing, for Err when retrying
	retries int            // consecutive failed builds
	timer   *time.Timer    // the next retry, while builds fail
	pending sync.WaitGroup // retry callbacks scheduled or running

	errMu sync.Mutex // Err must not wait for a rebuild in progress
	err   error
}

// generation is one built value and its leases.
type generation[T any] struct {
	val     T
	mu      sync.RWMutex // read-held by each lease; write-locked to retire
	retired bool         // set under mu's write lock: the value may be released
}

// New builds the first value from p's current configuration (call it after
// [viperkv.Provider.Load]) and rebuilds it whenever a [viperkv.EventChanged] names one of
// keys or a key below one of them ("database" covers "database.conn", "hosts" covers
// "hosts[1]"). List every key build reads; a key the configuration does not have (a typo
// would never rebuild) is an error.
//
// build receives the configuration to read; it should check the value works (for a pool,
// connect and ping) and return an error if not. Its context ends when the Resource is
// closed; it should also bound its own work with a timeout. Errors from build are returned
// by New and Err: they should name what failed, never a secret value.
//
// release, which may be nil, frees a retired value (for a pool, Close it). It is called
// once per value, after the last lease on it has ended.
func New[T any](ctx context.Context, p *viperkv.Provider, keys []string,
	build func(ctx context.Context, c *viper.Viper) (T, error), release func(T)) (*Resource[T], error) {
	if p == nil || build == nil || len(keys) == 0 {
		return nil, errors.New("resource: New needs a provider, at least one key and a build func")
	}
	status := p.Status()
	if status == nil {
		return nil, errors.New("resource: New: call Load first: the resource is built from the loaded configuration")
	}
	c := p.Viper()
	r := &Resource[T]{p: p, build: build, release: release, delim: *viperlayers.Of(c).KeyDelim}
	for _, k := range keys {
		k = strings.ToLower(k) // Viper's keys are lower case
		if !hasKey(c, status, k, r.delim) {
			// A misspelt key would never match an event: the resource would never rebuild.
			return nil, fmt.Errorf("resource: New: key %q is not in the configuration", k)
		}
		r.keys = append(r.keys, k)
	}
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))

	r.mu.Lock() // events wait until the first value is in place
	defer r.mu.Unlock()
	r.unsubscribe = p.OnChange(r.onEvent)
	c = p.Viper()
	v, err := build(ctx, c)
	if err != nil {
		r.closed = true // an event already waiting on mu must not build
		r.unsubscribe()
		r.cancel()
		return nil, fmt.Errorf("resource: building the resource for %s: %w", strings.Join(r.keys, ", "), err)
	}
	r.from = r.values(c)
	r.cur.Store(&generation[T]{val: v})
	return r, nil
}

// Acquire returns the current value and a lease on it. Call done exactly once when
// finished with the value (extra calls do nothing): a retired value is released only after
// its last lease is done. Hold a lease for one unit of work (a query, a request), not for
// the life of a worker, or the old value can never be released. After Close, Acquire
// returns the zero value.
func (r *Resource[T]) Acquire() (v T, done func()) {
	for {
		g := r.cur.Load()
		if g == nil {
			return v, func() {}
		}
		// TryRLock fails only while g is being retired, which happens after its successor
		// was stored: load again rather than wait for g's leases to end.
		if g.mu.TryRLock() {
			if !g.retired {
				var once atomic.Bool
				return g.val, func() {
					if once.CompareAndSwap(false, true) {
						g.mu.RUnlock()
					}
				}
			}
			g.mu.RUnlock()
		}
	}
}

// Err returns why the last rebuild failed, or nil when the current value was built from
// the keys' latest values. While it is non-nil, the previous value keeps serving.
func (r *Resource[T]) Err() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

// Close stops rebuilding, cancels a build in progress, releases the current value once
// its leases end, and returns when every retired value has been released. Do not call it
// while holding a lease or from build or release: it would wait for itself.
func (r *Resource[T]) Close() {
	r.unsubscribe()
	r.cancel()
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		r.stopRetry()
		if g := r.cur.Swap(nil); g != nil {
			r.retire(g)
		}
	}
	r.mu.Unlock()
	r.pending.Wait() // a retry that fired is waiting for mu: it sees closed and returns
	r.drains.Wait()
}

// onEvent rebuilds the value when a change names one of the keys.
func (r *Resource[T]) onEvent(e viperkv.Event) {
	if e.Kind != viperkv.EventChanged || !r.names(e.Keys) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.retries = 0 // a new change: its retries start from the shortest wait
		r.rebuild(describeChange(e))
	}
}

// rebuild builds a new value from the latest configuration (e.Current of the event that
// called it, or a newer one whose event is still queued) if the keys' values moved, and
// swaps it in. On failure it schedules a retry. The caller holds mu.
func (r *Resource[T]) rebuild(change string) {
	r.stopRetry()
	c := r.p.Viper()
	vals := r.values(c)
	if reflect.DeepEqual(vals, r.from) {
		r.retries = 0
		r.setErr(nil) // already built from these values (a failed version was superseded by them)
		return
	}
	v, err := r.build(r.ctx, c)
	if err != nil {
		r.setErr(fmt.Errorf("resource: rebuilding the resource for %s after %s: %w; still serving the previous one",
			strings.Join(r.keys, ", "), change, err))
		r.failed = change
		r.retries++
		r.pending.Add(1)
		r.timer = time.AfterFunc(backoff(r.retries), r.retry)
		return
	}
	r.from, r.retries = vals, 0
	r.setErr(nil)
	r.retire(r.cur.Swap(&generation[T]{val: v}))
}

// retry runs a scheduled retry of a failed build.
func (r *Resource[T]) retry() {
	defer r.pending.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.rebuild(r.failed) // its stopRetry cancels a newer retry, if one was scheduled since
	}
}

// stopRetry cancels a scheduled retry. The caller holds mu.
func (r *Resource[T]) stopRetry() {
	if r.timer != nil && r.timer.Stop() {
		r.pending.Done() // it will not run
	}
	r.timer = nil
}

// retire waits, on a goroutine, for g's leases to end, then releases its value.
func (r *Resource[T]) retire(g *generation[T]) {
	r.drains.Add(1)
	go func() {
		defer r.drains.Done()
		g.mu.Lock() // new leases are refused from here on; this waits for the current ones
		g.retired = true
		g.mu.Unlock()
		if r.release != nil {
			r.release(g.val)
		}
	}()
}

func (r *Resource[T]) setErr(err error) {
	r.errMu.Lock()
	r.err = err
	r.errMu.Unlock()
}

// names reports whether a change to eventKeys touches one of the keys: the key itself, a
// key below it (a map's "database.conn", a list's "hosts[1]") or one above it.
func (r *Resource[T]) names(eventKeys []string) bool {
	for _, ek := range eventKeys {
		for _, k := range r.keys {
			if ek == k || under(ek, k, r.delim) || under(k, ek, r.delim) {
				return true
			}
		}
	}
	return false
}

// under reports whether key lies below parent: "parent.x" (with the configuration's
// delimiter) or "parent[1]".
func under(key, parent, delim string) bool {
	return strings.HasPrefix(key, parent+delim) || strings.HasPrefix(key, parent+"[")
}

// hasKey reports whether the configuration has key k, or keys below it: set in c, or
// holding a reference that has not resolved (yet).
func hasKey(c *viper.Viper, status []viperkv.ReferenceStatus, k, delim string) bool {
	if c.IsSet(k) {
		return true
	}
	for _, st := range status {
		if st.Status != viperkv.StatusEnvKeyNotNamed && (st.Key == k || under(st.Key, k, delim)) {
			return true
		}
	}
	return false
}

// backoff is the wait before retry n (n >= 1): 1 s doubling up to 5 minutes, with "equal
// jitter" (half fixed, half random).
func backoff(n int) time.Duration {
	d := 5 * time.Minute
	if n < 9 {
		d = min(time.Second<<(n-1), d)
	}
	return d/2 + rand.N(d/2+1)
}

func (r *Resource[T]) values(c *viper.Viper) []any {
	out := make([]any, len(r.keys))
	for i, k := range r.keys {
		out[i] = c.Get(k)
	}
	return out
}

// describeChange names a change without values: the secret and version, or the file.
func describeChange(e viperkv.Event) string {
	if e.Secret.Name != "" {
		v := e.NewVersion
		if v == "" {
			v = "-"
		}
		return fmt.Sprintf("secret %s/%s version %s", e.Secret.Vault, e.Secret.Name, v)
	}
	return "a change of " + string(e.Source)
}
