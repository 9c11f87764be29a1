package viperkv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// errThrottleWait marks a request that never went out because its context ended while the
// vault's Retry-After pause lasted: the vault's throttling, not a slow answer, is why.
var errThrottleWait = errors.New("the vault is throttling; its Retry-After outlasted the deadline")

// limiter bounds the requests in flight to one vault. It starts wide, halves its window when
// the vault answers 429 and pauses everyone until the vault's Retry-After has passed, then
// widens again as requests succeed (additive increase, multiplicative decrease). This keeps a
// fleet-sized burst from turning into a retry storm against the vault's 4,000 GETs / 10 s limit.
type limiter struct {
	mu       sync.Mutex
	max      int
	limit    int
	inflight int
	okCount  int
	lastCut  time.Time
	paused   time.Time // no new request starts before this
	waiters  []chan struct{}
}

func newLimiter(max int) *limiter {
	if max < 1 {
		max = 1
	}
	return &limiter{max: max, limit: max}
}

// acquire waits for a slot. It returns ctx.Err() if ctx ends first, wrapped in
// errThrottleWait if it ended during a throttling pause.
func (l *limiter) acquire(ctx context.Context) error {
	for {
		l.mu.Lock()
		if wait := time.Until(l.paused); wait > 0 {
			l.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: %w", errThrottleWait, ctx.Err())
			}
		}
		if l.inflight < l.limit {
			l.inflight++
			l.mu.Unlock()
			return nil
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
		// One cut per pause: the other 429s of the same burst describe the same overload.
		if now.After(l.lastCut) {
			l.limit = max(1, l.limit/2)
			l.okCount = 0
		}
		until := now.Add(retryAfter)
		if until.After(l.paused) {
			l.paused = until
		}
		l.lastCut = l.paused
	} else if l.limit < l.max {
		l.okCount++
		if l.okCount >= l.limit {
			l.limit = min(l.max, l.limit+max(1, l.limit/4))
			l.okCount = 0
		}
	}
	l.wakeLocked()
}

// wakeLocked wakes as many waiters as there are free slots.
func (l *limiter) wakeLocked() {
	for n := l.limit - l.inflight; n > 0 && len(l.waiters) > 0; n-- {
		close(l.waiters[0])
		l.waiters = l.waiters[1:]
	}
}
