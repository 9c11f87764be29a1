package driver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// errThrottleWait marks a request that never went out because its context ended while it
// waited out the vault's throttling (its Retry-After pause or the pacing after it): the
// vault's throttling, not a slow answer, is why.
var errThrottleWait = errors.New("the vault is throttling; waiting out its Retry-After and pacing outlasted the deadline")

// calm is how long a vault must go without a 429 for pacing to stop: Key Vault counts
// requests over 10 s windows.
const calm = 10 * time.Second

// limiter throttles the requests to one vault in two ways. A concurrency window starts wide,
// halves when the vault answers 429 and widens again as requests succeed (additive increase,
// multiplicative decrease). And a 429 pauses every new request until the vault's Retry-After
// has passed, then paces their starts, because the vault limits a rate: with 10 ms requests
// even a window of 16 sends 1,600 a second, and each halving would cost another Retry-After.
//
// Pacing works like TCP's congestion control, in starts per second. It resumes at the rate
// the vault accepted over the throttled burst and the pause (a burst drawn from a full quota
// is no rate). Each success adds one start a second, as slow start adds a segment per
// acknowledgement: with requests waiting, the rate doubles about every 0.7 s. When a paced
// request is throttled, ssthresh becomes half the rate refused; above it the rate grows by a
// tenth of ssthresh a second, at least one start a second. A second without a 429 after the
// pause restarts slow start: by then the refusal is stale (the replicas the vault was shared
// with may have finished), and a replica left at a trickle would otherwise end a fleet's
// start-up seconds after the others. After calm without a 429, pacing stops. This keeps a
// fleet-sized burst from turning into a retry storm against the vault's 4,000 GETs / 10 s
// limit.
type limiter struct {
	mu       sync.Mutex
	max      int
	limit    int // the concurrency window
	inflight int
	okCount  int
	paused   time.Time // no new request starts before this
	waiters  []chan struct{}

	rate     float64   // paced starts per second; 0 when not paced
	ssthresh float64   // the rate above which pacing grows slowly
	next     time.Time // the earliest next paced start
	pacer    bool      // a request is waiting for next; the others queue behind it
	since    time.Time // when counting accepted began
	accepted int       // requests the vault did not throttle since then
	cut      bool      // a 429 came and no request has started since
}

func newLimiter(max int) *limiter {
	if max < 1 {
		max = 1
	}
	return &limiter{max: max, limit: max}
}

// acquire waits for a slot. It returns ctx.Err() if ctx ends first, wrapped in
// errThrottleWait if it ended during a throttling pause or pacing wait.
func (l *limiter) acquire(ctx context.Context) error {
	pacer := false
	for {
		l.mu.Lock()
		if pacer {
			l.pacer, pacer = false, false
		}
		now := time.Now()
		if now.Sub(l.paused) > calm {
			l.rate, l.cut = 0, false
		}
		var wait time.Duration
		switch {
		case now.Before(l.paused):
			wait = l.paused.Sub(now)
		case l.inflight >= l.limit || l.pacer:
			// Queue below.
		case l.rate > 0 && now.Before(l.next):
			wait, pacer, l.pacer = l.next.Sub(now), true, true
		default:
			l.startLocked(now)
			l.mu.Unlock()
			return nil
		}
		if wait > 0 {
			l.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				// Loop: the pause may have been extended or the pace lowered meanwhile.
				continue
			case <-ctx.Done():
				t.Stop()
				// Requests may be queued behind this one (as the pacer, or as the first to
				// leave a pause): pass the turn on.
				l.mu.Lock()
				if pacer {
					l.pacer = false
				}
				l.wakeLocked()
				l.mu.Unlock()
				return fmt.Errorf("%w: %w", errThrottleWait, ctx.Err())
			}
		}
		ch := make(chan struct{})
		l.waiters = append(l.waiters, ch)
		l.mu.Unlock()
		select {
		case <-ch:
			// Woken: loop to take the slot (the pause may have been extended meanwhile).
		case <-ctx.Done():
			l.mu.Lock()
			l.dropWaiter(ch)
			l.mu.Unlock()
			return ctx.Err()
		}
	}
}

// startLocked takes a slot for a request starting now.
func (l *limiter) startLocked(now time.Time) {
	if l.cut {
		// Resume at the rate the vault accepted over the burst and the pause after it.
		l.rate = float64(max(l.accepted, 1)) / max(now.Sub(l.since), time.Millisecond).Seconds()
		l.since, l.accepted, l.cut = now, 0, false
	} else if l.inflight == 0 && l.rate == 0 {
		l.since, l.accepted = now, 0 // a new burst: measure what the vault accepts of it
	}
	l.inflight++
	if l.rate > 0 {
		gap := time.Duration(float64(time.Second) / l.rate)
		// From the scheduled time, so that late timers do not lower the rate, but no
		// earlier than one gap ago, so that an idle spell does not bank starts.
		if floor := now.Add(-gap); l.next.Before(floor) {
			l.next = floor
		}
		l.next = l.next.Add(gap)
		l.wakeLocked() // the next in line becomes the pacer
	}
}

// dropWaiter removes ch; if it was already woken, the wake-up passes to the next waiter.
func (l *limiter) dropWaiter(ch chan struct{}) {
	for i, w := range l.waiters {
		if w == ch {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return
		}
	}
	l.wakeLocked()
}

// release frees a slot. throttled reports a 429 with the vault's requested delay.
func (l *limiter) release(throttled bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	now := time.Now()
	if throttled {
		// One cut per burst: the other 429s of requests started before the first one
		// describe the same overload.
		if !l.cut {
			l.cut = true
			l.limit = max(1, l.limit/2)
			l.okCount = 0
			// As TCP's: half the rate the vault refused, or none if it was not paced.
			l.ssthresh = math.Inf(1)
			if l.rate > 0 {
				l.ssthresh = l.rate / 2
			}
		}
		if until := now.Add(retryAfter); until.After(l.paused) {
			l.paused = until
		}
		l.next = l.paused // starts scheduled before this 429 are void
	} else {
		l.accepted++
		if l.rate > 0 && !l.cut {
			if now.Sub(l.paused) > time.Second {
				l.ssthresh = math.Inf(1)
			}
			if l.rate < l.ssthresh {
				l.rate++
			} else {
				l.rate += max(l.ssthresh, 10) / (10 * l.rate) // rate successes a second: ssthresh/10 a second, at least 1
			}
		}
		if l.limit < l.max {
			l.okCount++
			if l.okCount >= l.limit {
				l.limit = min(l.max, l.limit+max(1, l.limit/4))
				l.okCount = 0
			}
		}
	}
	l.wakeLocked()
}

// wakeLocked wakes as many waiters as there are free slots; when paced, only one, to
// become the pacer, and none while a pacer waits.
func (l *limiter) wakeLocked() {
	n := l.limit - l.inflight
	if l.pacer {
		n = 0
	} else if l.rate > 0 {
		n = min(n, 1)
	}
	for ; n > 0 && len(l.waiters) > 0; n-- {
		close(l.waiters[0])
		l.waiters = l.waiters[1:]
	}
}

// window returns the concurrency window.
func (l *limiter) window() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}
