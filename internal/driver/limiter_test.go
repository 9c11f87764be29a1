package driver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The limiter's tests run under testing/synctest: time is simulated, so the vault's token
// bucket, the latency and every Retry-After below are exact, and no test waits on the
// wall clock.

// simVault is one vault's data plane as Key Vault limits it, in simulated time: a token
// bucket of capacity burst refilled at rate a second; a request reaches it after latency; a
// refused request is answered 429 with Retry-After in whole seconds, rounded up, as Key
// Vault and kvtest send it. 429s take no token.
type simVault struct {
	mu              sync.Mutex
	burst, rate     float64
	tokens          float64
	last            time.Time
	latency, jitter time.Duration // each request takes latency plus up to jitter to reach the bucket
	rng             *rand.Rand
	ok, refused     int
	lastRefused     map[string]time.Time     // name: when its last 429 was answered
	retryAfter      map[string]time.Duration // name: what that 429 asked for
	early           int                      // requests that came back before their Retry-After
	lastRefusal     time.Time                // when the last 429 was answered
	changeAt        time.Time                // when rate becomes newRate (zero: never)
	newRate         float64
	acceptedAt      []time.Time
}

func newSimVault(burst, rate float64, latency time.Duration) *simVault {
	return &simVault{burst: burst, rate: rate, tokens: burst, last: time.Now(), latency: latency,
		lastRefused: map[string]time.Time{}, retryAfter: map[string]time.Duration{}}
}

// take spends a token for the request for name, or says how long until there is one.
func (v *simVault) take(name string) (bool, time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	if !v.changeAt.IsZero() && !now.Before(v.changeAt) {
		v.tokens = min(v.burst, v.tokens+now.Sub(v.last).Seconds()*v.rate)
		v.last, v.rate, v.changeAt = now, v.newRate, time.Time{}
	}
	v.tokens = min(v.burst, v.tokens+now.Sub(v.last).Seconds()*v.rate)
	v.last = now
	if at, ok := v.lastRefused[name]; ok && now.Sub(at) < v.retryAfter[name] {
		v.early++
	}
	if v.tokens >= 1 {
		v.tokens--
		v.ok++
		v.acceptedAt = append(v.acceptedAt, now)
		delete(v.lastRefused, name)
		return true, 0
	}
	v.refused++
	v.lastRefusal = now
	wait := time.Duration((1 - v.tokens) / v.rate * float64(time.Second))
	ra := time.Duration(math.Ceil(wait.Seconds())) * time.Second
	ra = max(ra, time.Second)
	v.lastRefused[name], v.retryAfter[name] = now, ra
	return false, ra
}

type simSource struct{ vaults map[string]*simVault }

// readerOf returns a Reader of the one vault v, kv.vault.azure.net, closed when t ends.
func readerOf(t *testing.T, v *simVault) *Reader {
	r := NewReader(simSource{vaults: map[string]*simVault{"kv.vault.azure.net": v}}, 256, nil)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// delay is how long the next request takes to reach the bucket.
func (v *simVault) delay() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.jitter <= 0 {
		return v.latency
	}
	if v.rng == nil {
		v.rng = rand.New(rand.NewPCG(1, 2))
	}
	return v.latency + time.Duration(v.rng.Int64N(int64(v.jitter)))
}

func (s simSource) Get(ctx context.Context, vault, name, version string) (Bundle, error) {
	v := s.vaults[vault]
	select {
	case <-time.After(v.delay()):
	case <-ctx.Done():
		return Bundle{}, &Error{Kind: KindTimeout, Reason: "timed out", Transient: true}
	}
	if ok, ra := v.take(name); !ok {
		return Bundle{}, &Error{Kind: KindThrottled, Reason: "429 Throttled", Transient: true, RetryAfter: ra}
	}
	value := "v"
	return Bundle{ID: "https://" + vault + "/secrets/" + name + "/" + strings.Repeat("a", 32), Value: &value}, nil
}

func (s simSource) List(vault string) Pager { return &simPager{v: s.vaults[vault], vault: vault} }
func (s simSource) Close() error            { return nil }

// simPager lists two pages of one secret each, each page a transaction.
type simPager struct {
	v     *simVault
	vault string
	n     int
}

func (p *simPager) NextPage(ctx context.Context) (Page, error) {
	time.Sleep(p.v.latency)
	if ok, ra := p.v.take("(list)"); !ok {
		return Page{}, &Error{Kind: KindThrottled, Reason: "429 Throttled", Transient: true, RetryAfter: ra}
	}
	p.n++
	pg := Page{Items: []Item{{ID: fmt.Sprintf("https://%s/secrets/s%d", p.vault, p.n)}}}
	if p.n == 1 {
		pg.NextLink = "https://" + p.vault + "/secrets?page=2"
	}
	return pg, nil
}

// getAll fetches n secrets of each vault at once through r and returns when the last one
// of each vault was served, counted from the start, and the number that failed.
func getAll(t *testing.T, r *Reader, vaults map[string]int) (map[string]time.Duration, int) {
	return getAllNamed(t, r, vaults, "s")
}

// getAllNamed is getAll with the secrets' names starting with prefix.
func getAllNamed(t *testing.T, r *Reader, vaults map[string]int, prefix string) (map[string]time.Duration, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	var mu sync.Mutex
	last := map[string]time.Duration{}
	failed := 0
	var wg sync.WaitGroup
	for vault, n := range vaults {
		for i := range n {
			wg.Go(func() {
				name := fmt.Sprintf("%s%04d", prefix, i)
				_, err := r.Get(ctx, vault, name, "")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
					t.Errorf("%s/%s: %v", vault, name, err)
					return
				}
				last[vault] = max(last[vault], time.Since(start))
			})
		}
	}
	wg.Wait()
	return last, failed
}

// floor is the best any client can do for n GETs at once against a bucket of burst
// refilled at rate: the burst, the rest at the rate, and one round trip.
func floor(n int, burst, rate float64, latency time.Duration) time.Duration {
	return time.Duration(max(0, float64(n)-burst)/rate*float64(time.Second)) + latency
}

// nearTheFloor runs the bench's workload shape against perVault GETs to each of 4 vaults,
// each a bucket of burst refilled at rate, with jitter on each request's 10 ms, and checks
// the limiter finishes within 1.3x the floor with nothing failed, at most max429 429s a
// vault and no request sent again before its Retry-After.
func nearTheFloor(t *testing.T, perVault int, burst, rate float64, jitter time.Duration, max429 int) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		src := simSource{vaults: map[string]*simVault{}}
		want := map[string]int{}
		for i := range 4 {
			host := fmt.Sprintf("kv%d.vault.azure.net", i)
			v := newSimVault(burst, rate, latency)
			v.jitter, v.rng = jitter, rand.New(rand.NewPCG(uint64(i), 7))
			src.vaults[host], want[host] = v, perVault
		}
		r := NewReader(src, 256, nil)
		defer r.Close()
		last, failed := getAll(t, r, want)
		fl := floor(perVault, burst, rate, latency)
		for host, v := range src.vaults {
			ratio := last[host].Seconds() / fl.Seconds()
			t.Logf("%s: %v for %d GETs (floor %v, %.2fx), %d 429s, pace %.0f/s",
				host, last[host].Round(time.Millisecond), v.ok, fl, ratio, v.refused, r.vaults[host].paceNow())
			if ratio > 1.3 {
				t.Errorf("%s: %v, %.2fx the floor (%v), want at most 1.3x", host, last[host], ratio, fl)
			}
			if v.ok != perVault {
				t.Errorf("%s: %d GETs accepted, want %d", host, v.ok, perVault)
			}
			if v.refused > max429 {
				t.Errorf("%s: %d 429s for %d GETs, want at most %d", host, v.refused, perVault, max429)
			}
			if v.early != 0 {
				t.Errorf("%s: %d requests sent again before their Retry-After", host, v.early)
			}
		}
		if failed != 0 {
			t.Errorf("%d failed", failed)
		}
	})
}

// The bench's workload (bench/resolve): 800 secrets over 4 vaults, each vault a bucket of
// 20 refilled at 200 a second with whole-second Retry-After, 10 ms per request. The floor
// is 0.91 s a vault; a sequential loop takes 8 s (800 x 10 ms) and the previous limiter
// (window and whole-vault pause) took 3.35 s with 180 429s a vault. The limiter must
// finish within 1.3x the floor with nothing failed and no request sent again before its
// Retry-After; with the arrivals jittering by up to 10 ms too.
func TestLimiterNearTheFloorOfATokenBucket(t *testing.T) {
	t.Run("exact", func(t *testing.T) { nearTheFloor(t, 200, 20, 200, 0, 40) })
	t.Run("jitter", func(t *testing.T) { nearTheFloor(t, 200, 20, 200, 10*time.Millisecond, 40) })
	// A slower vault, alone: the search must not take it for a crowded one.
	t.Run("slow", func(t *testing.T) { nearTheFloor(t, 200, 20, 50, 0, 60) })
}

// Starting from Key Vault's documented limit, an unthrottled start never waits for the
// bucket: 1,000 GETs to a vault at Key Vault's limit take a few round trips (the window's
// slow start), with no 429. And 5,000 GETs, more than the documented burst, take the
// documented floor (4,000 at once, then 400 a second) without a single 429: the model is
// the vault's.
func TestLimiterStartsFromTheDocumentedLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		v := newSimVault(documentedBurst, documentedRate, latency)
		r := readerOf(t, v)
		last, _ := getAll(t, r, map[string]int{"kv.vault.azure.net": 1000})
		t.Logf("1,000 GETs: %v, %d 429s", last["kv.vault.azure.net"], v.refused)
		if d := last["kv.vault.azure.net"]; d > 10*latency {
			t.Errorf("1,000 unthrottled GETs took %v, want at most 10 round trips", d)
		}
		if v.refused != 0 || r.vaults["kv.vault.azure.net"].paceNow() != 0 {
			t.Errorf("%d 429s, pace %v: want none, unpaced", v.refused, r.vaults["kv.vault.azure.net"].paceNow())
		}
	})
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		v := newSimVault(documentedBurst, documentedRate, latency)
		r := readerOf(t, v)
		last, _ := getAll(t, r, map[string]int{"kv.vault.azure.net": 5000})
		fl := floor(5000, documentedBurst, documentedRate, latency)
		t.Logf("5,000 GETs: %v (floor %v), %d 429s", last["kv.vault.azure.net"], fl, v.refused)
		if v.refused != 0 {
			t.Errorf("%d 429s, want none: the documented limit is the vault's", v.refused)
		}
		if d := last["kv.vault.azure.net"]; d > fl+100*time.Millisecond {
			t.Errorf("5,000 GETs took %v, floor %v", d, fl)
		}
	})
}

// Each vault has a limiter of its own: a throttled vault does not slow another.
func TestLimiterVaultsAreIndependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		slow := newSimVault(5, 10, latency)
		fast := newSimVault(documentedBurst, documentedRate, latency)
		r := NewReader(simSource{vaults: map[string]*simVault{"slow.vault.azure.net": slow, "fast.vault.azure.net": fast}}, 256, nil)
		defer r.Close()
		last, failed := getAll(t, r, map[string]int{"slow.vault.azure.net": 40, "fast.vault.azure.net": 200})
		t.Logf("slow: %v (%d 429s); fast: %v (%d 429s)", last["slow.vault.azure.net"], slow.refused, last["fast.vault.azure.net"], fast.refused)
		if d := last["fast.vault.azure.net"]; d > 6*latency {
			t.Errorf("the unthrottled vault took %v beside a throttled one", d)
		}
		if failed != 0 || slow.ok != 40 {
			t.Errorf("%d failed, %d accepted of the throttled vault's 40", failed, slow.ok)
		}
		if r.vaults["fast.vault.azure.net"].paceNow() != 0 {
			t.Error("the unthrottled vault is paced")
		}
	})
}

// A fleet: 200 replicas, each its own Reader, share one vault (Key Vault's limit scaled
// down: a bucket of 800 refilled at 80 a second, so that each replica's share is 0.4 a
// second) and start at once with 20 secrets each. Each limiter's search soon sees the vault
// accept next to nothing of its requests and paces as one of many; together they finish
// near the vault's floor (40 s) with nothing failed and no request sent again before its
// Retry-After.
func TestLimiterFleetSharesAVault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const replicas, each, latency = 200, 20, 10 * time.Millisecond
		v := newSimVault(800, 80, latency)
		v.jitter = 5 * time.Millisecond
		src := simSource{vaults: map[string]*simVault{"kv.vault.azure.net": v}}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var end time.Duration
		failed := 0
		for i := range replicas {
			wg.Go(func() {
				r := NewReader(src, 256, nil)
				defer r.Close()
				// Each replica's requests are told apart by name, for the Retry-After check.
				last, f := getAllNamed(t, r, map[string]int{"kv.vault.azure.net": each}, fmt.Sprintf("r%03d-s", i))
				mu.Lock()
				end, failed = max(end, last["kv.vault.azure.net"]), failed+f
				mu.Unlock()
			})
		}
		wg.Wait()
		fl := floor(replicas*each, 800, 80, latency)
		t.Logf("fleet: %v (floor %v, %.2fx), %d 429s", end.Round(time.Millisecond), fl, end.Seconds()/fl.Seconds(), v.refused)
		if v.ok != replicas*each || failed != 0 {
			t.Errorf("%d accepted, %d failed; want %d, 0", v.ok, failed, replicas*each)
		}
		if end > fl*13/10 {
			t.Errorf("the fleet took %v, more than 1.3x the floor (%v)", end, fl)
		}
		if v.early != 0 {
			t.Errorf("%d requests sent again before their Retry-After", v.early)
		}
	})
}

// A vault whose rate rises (a neighbour that shared it has finished) is used again: after a
// measurement the pace grows slowly, then faster, and a 429 measures anew.
func TestLimiterFindsARisingRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		v := newSimVault(10, 20, latency)
		v.changeAt, v.newRate = time.Now().Add(3*time.Second), 200
		r := readerOf(t, v)
		// 20/s for 3 s is about 70 GETs; the other 930 at 200/s take 4.7 s at best.
		last, failed := getAll(t, r, map[string]int{"kv.vault.azure.net": 1000})
		t.Logf("1,000 GETs: %v, %d 429s", last["kv.vault.azure.net"], v.refused)
		if failed != 0 {
			t.Errorf("%d failed", failed)
		}
		if d := last["kv.vault.azure.net"]; d > 11*time.Second {
			t.Errorf("took %v: the pace did not follow the vault's rate up (at best 7.7 s)", d)
		}
	})
}

// Only the refused request waits out Retry-After; the others are paced and go on. A vault
// throttling a burst costs a second to what it refused, not a second to everything after.
func TestLimiterRetryAfterHoldsOnlyTheRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		v := newSimVault(20, 200, latency)
		r := readerOf(t, v)
		getAll(t, r, map[string]int{"kv.vault.azure.net": 100})
		// The accepted GETs: within the first second the vault takes its 20 and 200 a second;
		// a limiter that held everything for the Retry-After would take almost none there.
		n := 0
		for _, at := range v.acceptedAt {
			if at.Sub(v.acceptedAt[0]) < time.Second {
				n++
			}
		}
		t.Logf("%d of 100 accepted within the first second, %d 429s", n, v.refused)
		if n < 100-v.refused-5 {
			t.Errorf("%d accepted in the first second with %d refused: the others were held", n, v.refused)
		}
		if v.early != 0 {
			t.Errorf("%d requests sent again before their Retry-After", v.early)
		}
	})
}

// A list throttled restarts after its Retry-After.
func TestLimiterListWaitsOutRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newSimVault(1, 0.5, time.Millisecond) // one page now, the next in 2 s
		r := readerOf(t, v)
		l, err := r.List(context.Background(), "kv.vault.azure.net", 0)
		if err != nil || !l.Complete {
			t.Fatalf("list: %+v, %v", l, err)
		}
		if v.early != 0 || v.refused == 0 {
			t.Errorf("%d 429s, %d pages sent before their Retry-After", v.refused, v.early)
		}
	})
}

// A request whose context ends while it waits for its paced start, or for its Retry-After,
// fails as throttled and hands the turn on.
func TestLimiterWaitsEndWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(256)
		now := time.Now()
		l.phase, l.base, l.tokens, l.burst, l.stamp, l.mark = search, 2, 0, 1, now, now
		short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		first := make(chan error)
		go func() { _, err := l.acquire(short); first <- err }()
		time.Sleep(10 * time.Millisecond)
		if _, err := l.acquire(context.Background()); err != nil { // queued behind the first, which gives up
			t.Fatalf("the request behind a cancelled one: %v", err)
		}
		if d := time.Since(now); d < 500*time.Millisecond {
			t.Errorf("started after %v, before its paced start", d)
		}
		if err := <-first; !errors.Is(err, errThrottleWait) {
			t.Errorf("the cancelled request: %v, want errThrottleWait", err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		v := newSimVault(1, 0.1, time.Millisecond)
		v.tokens = 0
		r := readerOf(t, v)
		ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
		defer cancel()
		_, err := r.Get(ctx, "kv.vault.azure.net", "s", "")
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindThrottled || !e.Transient {
			t.Errorf("throttled past the deadline: %v, want a transient KindThrottled", err)
		}
	})
}

// A vault that answers at once (no round trip to time) and refuses everything: the Reader
// gives up at the deadline, and the pace stays a number.
func TestLimiterInstantRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newSimVault(1, 0.01, 0)
		v.tokens = 0
		r := readerOf(t, v)
		for _, ra := range []bool{true, false} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := r.Get(ctx, "kv.vault.azure.net", fmt.Sprint("s", ra), "")
			cancel()
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindThrottled {
				t.Errorf("refused throughout: %v, want KindThrottled", err)
			}
		}
		if p := r.vaults["kv.vault.azure.net"].paceNow(); math.IsNaN(p) || math.IsInf(p, 0) || p < 0 {
			t.Errorf("pace %v", p)
		}
	})
}

// After calm without a 429 the limiter returns to the documented limit: no pacing.
func TestLimiterReturnsToTheDocumentedLimitWhenCalm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		v := newSimVault(20, 200, latency)
		r := readerOf(t, v)
		getAll(t, r, map[string]int{"kv.vault.azure.net": 100})
		if r.vaults["kv.vault.azure.net"].paceNow() == 0 {
			t.Fatal("not paced after 429s")
		}
		time.Sleep(calm + time.Second)
		if p := r.vaults["kv.vault.azure.net"].paceNow(); p != 0 {
			t.Errorf("paced at %.0f/s after %v without a 429", p, calm)
		}
	})
}

// Across token buckets unlike the bench's, small and large against their rate, alone and
// jittered, the limiter stays within 1.4x the floor wherever the floor is over a second (below
// it, one whole-second Retry-After is already most of the floor): no request is refused a
// second time because the held ones were sent faster than the vault had saved for them,
// none is sent again before its Retry-After, and none fails.
func TestLimiterAcrossBuckets(t *testing.T) {
	for _, jitter := range []time.Duration{0, 10 * time.Millisecond} {
		for _, burst := range []float64{5, 20, 80} {
			for _, rate := range []float64{50, 100, 200, 400} {
				for _, n := range []int{200, 600} {
					fl := floor(n, burst, rate, 10*time.Millisecond)
					if fl < time.Second {
						continue
					}
					name := fmt.Sprintf("jitter=%v/burst=%v/rate=%v/n=%d", jitter, burst, rate, n)
					t.Run(name, func(t *testing.T) {
						synctest.Test(t, func(t *testing.T) {
							src := simSource{vaults: map[string]*simVault{}}
							want := map[string]int{}
							for i := range 2 {
								host := fmt.Sprintf("kv%d.vault.azure.net", i)
								v := newSimVault(burst, rate, 10*time.Millisecond)
								v.jitter, v.rng = jitter, rand.New(rand.NewPCG(uint64(i), 11))
								src.vaults[host], want[host] = v, n
							}
							r := NewReader(src, 256, nil)
							defer r.Close()
							last, failed := getAll(t, r, want)
							for host, v := range src.vaults {
								if ratio := last[host].Seconds() / fl.Seconds(); ratio > 1.4 {
									t.Errorf("%s: %v, %.2fx the floor (%v), want at most 1.4x (%d 429s)", host, last[host], ratio, fl, v.refused)
								}
								if v.early != 0 {
									t.Errorf("%s: %d requests sent again before their Retry-After", host, v.early)
								}
							}
							if failed != 0 {
								t.Errorf("%d failed", failed)
							}
						})
					})
				}
			}
		}
	}
}

// While the requests the first burst overran wait out their second, the others are spread
// over it: they finish early, the vault saves up meanwhile, and the refused ones go together
// when due, from what it saved. So the first burst's 429s are the only ones, and the batch
// ends within a round trip or so of their Retry-After.
func TestLimiterSpreadsWhileTheRefusedWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 10 * time.Millisecond
		v := newSimVault(20, 200, latency)
		r := readerOf(t, v)
		start := time.Now()
		last, failed := getAll(t, r, map[string]int{"kv.vault.azure.net": 200})
		d, lastRefusal := last["kv.vault.azure.net"], v.lastRefusal.Sub(start)
		t.Logf("200 GETs: %v, %d 429s, the last at %v", d, v.refused, lastRefusal)
		if failed != 0 {
			t.Errorf("%d failed", failed)
		}
		if lastRefusal > 5*latency {
			t.Errorf("a 429 at %v: only the first burst's should be refused", lastRefusal)
		}
		if bound := lastRefusal + time.Second + 5*latency; d > bound {
			t.Errorf("took %v, want within %v (the last 429's Retry-After and a few round trips)", d, bound)
		}
	})
}
