package driver

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The limiter's pauses and pacing run under testing/synctest: time is simulated, so the
// start times below are exact and no test waits on the wall clock.

// throttle has l start n requests at once: the vault accepts ok of them and throttles the
// rest, asking for retryAfter. It returns when the last 429 arrived.
func throttle(t *testing.T, l *limiter, n, ok int, retryAfter time.Duration) time.Time {
	t.Helper()
	for range n {
		if err := l.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for range ok {
		l.release(false, 0)
	}
	for range n - ok {
		l.release(true, retryAfter)
	}
	return time.Now()
}

// startAll starts n requests concurrently, each succeeding at once, and returns their
// start times in order.
func startAll(t *testing.T, l *limiter, n int) []time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var starts []time.Time
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := l.acquire(ctx); err != nil {
				t.Error(err)
				return
			}
			now := time.Now()
			l.release(false, 0)
			mu.Lock()
			starts = append(starts, now)
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
	return starts
}

// After a 429 the limiter waits out Retry-After, then paces the starts from the rate the
// vault accepted instead of letting everyone go at once, and speeds up as requests succeed.
func TestLimiterPacesAfterThrottling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(256)
		const retryAfter = 200 * time.Millisecond
		// 5 accepted over the burst and the 200 ms pause: resume at about 25 a second.
		at := throttle(t, l, 20, 5, retryAfter)
		starts := startAll(t, l, 30)
		if len(starts) != 30 {
			t.Fatalf("%d of 30 requests started", len(starts))
		}
		resume := at.Add(retryAfter)
		if starts[0].Before(resume) {
			t.Fatalf("a request started %v before Retry-After had passed", resume.Sub(starts[0]))
		}
		// Unpaced, all 30 would start at once. Paced from 25 a second, growing by one a second
		// per success, about 6 start in the first 200 ms.
		n := 0
		for _, s := range starts {
			if s.Sub(resume) < 200*time.Millisecond {
				n++
			}
		}
		if n > 10 {
			t.Errorf("%d requests started within 200 ms of the pause's end, want at most 10", n)
		}
		if d := starts[len(starts)-1].Sub(resume); d > 5*time.Second {
			t.Errorf("the 30 paced requests took %v to start", d)
		}
	})
}

// A replica the vault throttled at a low paced rate (one of a fleet that shared the vault
// and left it) speeds up again once the vault stops refusing: a second without a 429
// restarts slow start, so 50 requests start in seconds, not at the trickle the last cut
// left (about one a second, growing by a twentieth of that a second).
func TestLimiterRecoversFromALowRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(256)
		throttle(t, l, 20, 1, time.Second) // 1 accepted over the burst and the pause: ~1 a second
		if err := l.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		l.release(true, time.Second) // throttled while paced: ssthresh about half a start a second
		resume := time.Now().Add(time.Second)
		starts := startAll(t, l, 50)
		if len(starts) != 50 {
			t.Fatalf("%d of 50 requests started", len(starts))
		}
		if starts[0].Before(resume) {
			t.Fatalf("a request started %v before Retry-After had passed", resume.Sub(starts[0]))
		}
		if d := starts[49].Sub(resume); d > 6*time.Second {
			t.Errorf("50 requests took %v to start after the vault stopped throttling, want under 6 s", d)
		}
		// Still paced, not a burst: the first second after the pause starts only a few.
		n := 0
		for _, s := range starts {
			if s.Sub(resume) < time.Second {
				n++
			}
		}
		if n > 5 {
			t.Errorf("%d requests started in the first second after the pause, want a paced few", n)
		}
	})
}

// A 429 during pacing pauses the request waiting for its paced start too.
func TestLimiterPacedRequestWaitsOutRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(256)
		throttle(t, l, 2, 1, 50*time.Millisecond)
		time.Sleep(60 * time.Millisecond)
		ctx := context.Background()
		if err := l.acquire(ctx); err != nil { // resumes at about 10 a second
			t.Fatal(err)
		}
		done := make(chan time.Time)
		go func() {
			if err := l.acquire(ctx); err != nil { // waits about 100 ms for its paced start
				t.Error(err)
			}
			done <- time.Now()
		}()
		time.Sleep(20 * time.Millisecond)
		const retryAfter = 300 * time.Millisecond
		throttledAt := time.Now()
		l.release(true, retryAfter)
		if started := <-done; started.Sub(throttledAt) < retryAfter {
			t.Errorf("the paced request started %v after a 429 asking for %v", started.Sub(throttledAt), retryAfter)
		}
	})
}

// A request whose context ends while it waits for its paced start hands the turn on.
func TestLimiterPacerCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(256)
		now := time.Now()
		l.rate, l.paused, l.next = 5, now, now.Add(300*time.Millisecond)
		short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		first := make(chan error)
		go func() { first <- l.acquire(short) }()
		time.Sleep(10 * time.Millisecond)
		ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		if err := l.acquire(ctx); err != nil { // queued behind the first, which gives up
			t.Fatalf("the request behind a cancelled one: %v", err)
		}
		if d := time.Since(now); d < 300*time.Millisecond {
			t.Errorf("started after %v, before its paced start", d)
		}
		if err := <-first; !errors.Is(err, errThrottleWait) {
			t.Errorf("the cancelled request: %v, want errThrottleWait", err)
		}
	})
}

// Pacing stops once the vault has not throttled for calm.
func TestLimiterPacingStopsWhenCalm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(256)
		throttle(t, l, 2, 1, 50*time.Millisecond)
		l.mu.Lock()
		l.paused = time.Now().Add(-calm - time.Millisecond)
		l.next = l.paused
		l.mu.Unlock()
		start := time.Now()
		for range 100 {
			if err := l.acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("100 starts took %v after a calm spell, want no pacing", d)
		}
	})
}
