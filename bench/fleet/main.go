// Command fleet simulates a fleet of replicas of one service sharing one vault on the
// kvtest emulator, and prints a table. Run it with "go run ./bench/fleet" (about four
// minutes on two cores).
//
// R replicas (default 1,000), each its own Provider with its own SDK clients and limiter
// (file watching off; one HTTP connection pool for all, as the emulator's loopback
// listeners are the same host), reference S = 20 versionless secrets of one vault with Key
// Vault's limit (4,000 secret transactions per 10 s, burst 4,000) and 10 ms latency. In one
// run it measures:
//
//   - cold start: every replica Loads at once; fleet wall time against the vault's floor,
//     (R*S - burst) / rate + one round trip; failed references; 429s;
//   - steady state for 60 s at a 5 s refresh interval, one secret rotated every 10 s, with
//     version checks by listing and again by a GET per secret (the anchors' way, on a
//     second vault loaded without a limit so the run need not wait for a second cold
//     start): peak secret transactions in any 10 s window, against the floor for listing,
//     failed refreshes (EventError), and the time from each rotation until the last
//     replica holds it, p50 and p99. Each replica's Watch starts at a random moment within
//     the first interval, as replicas loaded at different moments poll; -lockstep starts
//     them all at once;
//   - push: the same rotations delivered to every replica by the emulator's Event Grid (a
//     subscription per replica, as a Service Bus subscription each would), WithPushDelay of
//     5 s, polling off: the same figures (it runs beside the GET-per-secret run, which has
//     a vault and a limit of its own);
//   - memory per replica: heap in use after the cold start, divided by R.
//
// The last line sums it up as key=value pairs. With -check, a missed target exits 1; with
// -list, only the cold start and the steady state by listing run (about two minutes).
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/bench/internal/stats"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/kvtest"
)

const (
	secrets  = 20
	latency  = 10 * time.Millisecond
	interval = 5 * time.Second
	rotateEv = 10 * time.Second
	audience = "api://fleet-webhook"
)

func main() {
	replicas := flag.Int("replicas", 1000, "replicas in the fleet")
	steady := flag.Duration("steady", 60*time.Second, "length of each steady-state run")
	check := flag.Bool("check", false, "exit 1 when a target is missed")
	coldOnly := flag.Bool("cold", false, "measure the cold start only")
	listOnly := flag.Bool("list", false, "measure the cold start and the steady state by listing only")
	flag.BoolVar(&lockstep, "lockstep", false, "start every replica's Watch at once rather than spread over an interval")
	flag.Parse()
	if *coldOnly {
		*steady = 0
	}
	ok, err := run(*replicas, *steady, *listOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
	if *check && !ok {
		os.Exit(1)
	}
}

// replica is one instance of the service.
type replica struct {
	p      *viperkv.Provider
	errors atomic.Int64 // EventError count
	mu     sync.Mutex
	held   map[string]time.Time // version -> when this replica got it
}

func (r *replica) got(version string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.held[version]
	return t, ok
}

// fleet is R replicas of one configuration.
type fleet struct {
	reps []*replica
}

func newFleet(srv *kvtest.Server, hc *http.Client, vault string, n int, opts ...viperkv.Option) (*fleet, error) {
	var doc strings.Builder
	doc.WriteString("app:\n")
	for i := range secrets {
		fmt.Fprintf(&doc, "  k%02d: \"@KeyVault(VaultName=%s;SecretName=s%02d)\"\n", i, vault, i)
	}
	f := &fleet{}
	for range n {
		v := viper.New()
		v.SetConfigType("yaml")
		if err := v.ReadConfig(strings.NewReader(doc.String())); err != nil {
			return nil, err
		}
		p, err := viperkv.New(v, append([]viperkv.Option{viperkv.WithCredential(srv.Credential()), viperkv.WithTransport(hc),
			viperkv.WithoutFileWatch(), viperkv.WithRefreshInterval(interval)}, opts...)...)
		if err != nil {
			return nil, err
		}
		r := &replica{p: p, held: map[string]time.Time{}}
		p.OnChange(func(e viperkv.Event) {
			switch e.Kind {
			case viperkv.EventError:
				r.errors.Add(1)
			case viperkv.EventChanged:
				r.mu.Lock()
				r.held[e.NewVersion] = time.Now()
				r.mu.Unlock()
			}
		})
		f.reps = append(f.reps, r)
	}
	return f, nil
}

// load runs every replica's Load at once and returns the fleet's wall time and the
// references that failed.
func (f *fleet) load() (time.Duration, int) {
	start := time.Now()
	var failed atomic.Int64
	var wg sync.WaitGroup
	for _, r := range f.reps {
		wg.Go(func() {
			if err := r.p.Load(context.Background()); err != nil {
				for _, st := range r.p.Status() {
					if st.Status != viperkv.StatusResolved {
						failed.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), int(failed.Load())
}

// lockstep starts every replica's Watch at once (-lockstep).
var lockstep bool

// watch runs every replica's Watch until the returned stop is called. Each starts at a
// random moment within one interval: a fleet whose replicas loaded at different moments
// (a cold start spreads them over tens of seconds) polls out of step. Started at once,
// long after their Loads, every replica's first check is due at the same moment, and the
// fleet polls in step for minutes (each wait is jittered by only 10%).
func (f *fleet) watch() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range f.reps {
		var delay time.Duration
		if !lockstep {
			delay = rand.N(interval)
		}
		wg.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			_ = r.p.Watch(ctx)
		})
	}
	return func() { cancel(); wg.Wait() }
}

func (f *fleet) errorCount() int64 {
	var n int64
	for _, r := range f.reps {
		n += r.errors.Load()
	}
	return n
}

// sampler records a vault's served secret transactions over time.
type sampler struct {
	mu      sync.Mutex
	at      []time.Time
	lists   []int64 // list pages served so far
	gets    []int64 // GETs served so far
	stopped chan struct{}
	done    chan struct{}
}

func sample(kv *kvtest.Vault) *sampler {
	s := &sampler{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			l, g := kv.Count(kvtest.OpListSecrets), kv.Count(kvtest.OpGetSecret)
			s.mu.Lock()
			s.at, s.lists, s.gets = append(s.at, time.Now()), append(s.lists, l), append(s.gets, g)
			s.mu.Unlock()
			select {
			case <-s.stopped:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// window is what a vault served in one 10 s window.
type window struct {
	lists, gets int64
}

func (w window) total() int64 { return w.lists + w.gets }

// peak stops the sampler and returns the 10 s window with the most transactions served.
func (s *sampler) peak() window {
	close(s.stopped)
	<-s.done
	var best window
	j := 0
	for i := range s.at {
		for s.at[i].Sub(s.at[j]) > 10*time.Second {
			j++
		}
		if w := (window{s.lists[i] - s.lists[j], s.gets[i] - s.gets[j]}); w.total() > best.total() {
			best = w
		}
	}
	return best
}

type steadyResult struct {
	lists, gets, throttled int64 // totals over the run
	peak                   int64
	peakLists, peakGets    int64 // the peak window's list pages and GETs
	failed                 int64
	p50, p99               time.Duration
	missing                int // replica-rotations not held by the end
	rotations              int
}

// rotate rotates one secret every rotateEv for d, then waits for the stragglers, and
// measures how long each rotation took to reach the last replica.
func rotate(kv *kvtest.Vault, f *fleet, d time.Duration) (spreads []time.Duration, missing, rotations int) {
	type rot struct {
		version string
		at      time.Time
	}
	var rots []rot
	end := time.Now().Add(d)
	for i := 0; time.Now().Add(rotateEv).Before(end) || i == 0; i++ {
		time.Sleep(rotateEv / 2)
		name := fmt.Sprintf("s%02d", i%secrets)
		at := time.Now()
		v := kv.SetSecret(name, fmt.Sprintf("rotated-%d-%d", i, at.UnixNano()))
		rots = append(rots, rot{v, at})
		time.Sleep(rotateEv / 2)
	}
	time.Sleep(max(0, time.Until(end)))
	time.Sleep(7 * time.Second) // a rotation at the end gets one more interval (or push delay)
	for _, ro := range rots {
		last := time.Duration(0)
		for _, r := range f.reps {
			t, ok := r.got(ro.version)
			if !ok {
				missing++
				continue
			}
			last = max(last, t.Sub(ro.at))
		}
		spreads = append(spreads, last)
	}
	return spreads, missing, len(rots)
}

// newVault adds a vault with the fleet's secrets, each a version a minute old: past the
// one-second-timestamp window within which a replica checks a fetch again by GET, so that
// the steady state measures rotations, not the re-checks of the cold start.
func newVault(srv *kvtest.Server, name string) *kvtest.Vault {
	kv := srv.AddVault(name)
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	settled := kvtest.WithUpdated(time.Now().Add(-time.Minute))
	for i := range secrets {
		kv.SetSecret(fmt.Sprintf("s%02d", i), fmt.Sprintf("value-%02d", i), settled)
	}
	kv.SetLatency(latency)
	return kv
}

func run(n int, steady time.Duration, listOnly bool) (bool, error) {
	srv, err := kvtest.Start(kvtest.WithTokenLifetime(time.Hour))
	if err != nil {
		return false, err
	}
	defer srv.Close()
	hc := srv.NewClient()
	began := time.Now()

	// Cold start, by the replicas that then list and take pushes.
	kv := newVault(srv, "fleetvault")
	fl, err := newFleet(srv, hc, "fleetvault", n, viperkv.WithVersionCheck(viperkv.VersionCheckList),
		viperkv.WithPushDelay(5*time.Second), viperkv.WithFetchTimeout(90*time.Second))
	if err != nil {
		return false, err
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	kv.ResetCounters()
	coldWall, coldFailed := fl.load()
	cold429 := kv.Count(kvtest.OpThrottled)
	burst, rate := float64(kvtest.DefaultThrottleLimit), float64(kvtest.DefaultThrottleLimit)/kvtest.DefaultThrottlePeriod.Seconds()
	floor := time.Duration((math.Max(0, float64(n*secrets)-burst)/rate)*float64(time.Second)) + latency
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heapKB := float64(after.HeapInuse-min(before.HeapInuse, after.HeapInuse)) / 1024 / float64(n)
	fmt.Fprintf(os.Stderr, "fleet: cold start of %d replicas: %v (floor %v, %.2fx), %d failed, %d 429s\n", n, coldWall.Round(time.Millisecond), floor.Round(time.Millisecond),
		float64(coldWall)/float64(floor), coldFailed, cold429)
	if steady == 0 {
		return coldFailed == 0 && float64(coldWall) <= 1.3*float64(floor), nil
	}
	time.Sleep(5 * time.Second) // let the vault's bucket refill

	// Steady state by listing.
	list := steadyRun(kv, fl, steady, fl.watch)
	fmt.Fprintf(os.Stderr, "fleet: steady state by listing: peak %d / 10 s (%d list pages, %d GETs), %d failed, p99 %v; %d list pages, %d GETs, %d 429s in all, %d rotations\n",
		list.peak, list.peakLists, list.peakGets, list.failed, list.p99, list.lists, list.gets, list.throttled, list.rotations)
	var push, get steadyResult
	if !listOnly {
		var err error
		if push, get, err = pushAndGet(srv, hc, kv, fl, n, steady); err != nil {
			return false, err
		}
	}

	allOK := true
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MEASURE\tVALUE\tTARGET\tVERDICT\n")
	row := func(name, value, target string, ok bool) {
		verdict := "ok"
		switch {
		case target == "":
			verdict = ""
		case !ok:
			verdict, allOK = "MISSED", false
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, value, target, verdict)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
	row(fmt.Sprintf("cold start: %d replicas x %d secrets", n, secrets), ms(coldWall), fmt.Sprintf("<= 1.3 x floor (%s)", ms(floor)), float64(coldWall) <= 1.3*float64(floor))
	row("cold start: failed references", fmt.Sprint(coldFailed), "0", coldFailed == 0)
	row("cold start: 429s", fmt.Sprint(cold429), "", true)
	steadyRows := func(label string, r steadyResult, peakMax int64, p99Max time.Duration) {
		target := func(s string) string {
			if peakMax == 0 {
				return ""
			}
			return s
		}
		row(label+": peak transactions / 10 s", fmt.Sprint(r.peak), target(fmt.Sprintf("<= %d", peakMax)), r.peak <= peakMax)
		row(label+": failed refreshes", fmt.Sprint(r.failed), target("0"), r.failed == 0)
		row(label+": rotation to last replica, p50", ms(r.p50), "", true)
		row(label+": rotation to last replica, p99", ms(r.p99), target("<= "+ms(p99Max)), r.p99 <= p99Max && r.missing == 0)
		if r.missing > 0 {
			row(label+": replica-rotations never held", fmt.Sprint(r.missing), target("0"), false)
		}
	}
	// What no per-replica scheme can go below: every replica lists once an interval, and a
	// rotation costs each replica a GET (push, which does not poll, is that GET alone).
	listFloor := int64(n)*int64(rotateEv/interval)*int64((secrets+24)/25) + int64(n)
	steadyRows("listing, 5 s", list, listFloor*115/100, 6500*time.Millisecond)
	row("listing, 5 s: floor / 10 s (2 pages + 1 GET a replica)", fmt.Sprint(listFloor), "", true)
	row("listing, 5 s: peak / floor", fmt.Sprintf("%.2fx", float64(list.peak)/float64(listFloor)), "<= 1.15x", list.peak*100 <= listFloor*115)
	row("listing, 5 s: peak window, list pages + GETs", fmt.Sprintf("%d + %d", list.peakLists, list.peakGets), "", true)
	if !listOnly {
		steadyRows("push, delay <= 5 s", push, 2000, 6000*time.Millisecond)
		steadyRows("GET per secret, 5 s (the anchors)", get, 0, 0)
	}
	row("heap per replica", fmt.Sprintf("%.0f KB", heapKB), "", true)
	row("run", time.Since(began).Round(time.Second).String(), "", true)
	tw.Flush()
	fmt.Printf("fleet: replicas=%d secrets=%d cold_ms=%d cold_floor_ms=%d cold_failed=%d get_peak_10s=%d get_failed=%d get_p99_ms=%d list_peak_10s=%d list_floor_10s=%d list_failed=%d list_p99_ms=%d push_peak_10s=%d push_failed=%d push_p99_ms=%d heap_kb_per_replica=%.0f\n",
		n, secrets, coldWall.Milliseconds(), floor.Milliseconds(), coldFailed, get.peak, get.failed, get.p99.Milliseconds(),
		list.peak, listFloor, list.failed, list.p99.Milliseconds(), push.peak, push.failed, push.p99.Milliseconds(), heapKB)
	return allOK, nil
}

// pushAndGet measures push on the listing fleet's vault (its polling stopped) and, beside
// it, a second fleet checking by a GET per secret on a vault of its own.
func pushAndGet(srv *kvtest.Server, hc *http.Client, kv *kvtest.Vault, fl *fleet, n int, steady time.Duration) (push, get steadyResult, err error) {
	time.Sleep(10 * time.Second)

	// Push: the same replicas, polling off, a subscription each.
	mux := http.NewServeMux()
	for i, r := range fl.reps {
		h, err := eventgrid.NewHandler(r.p, eventgrid.Entra(srv.TenantID(), audience))
		if err != nil {
			return steadyResult{}, steadyResult{}, err
		}
		mux.Handle(fmt.Sprintf("/r/%d", i), h)
	}
	webhook := httptest.NewServer(mux)
	defer webhook.Close()
	subs := make([]*kvtest.Subscription, n)
	for i := range fl.reps {
		subs[i] = kv.Subscribe(kvtest.EventSubscription{Name: fmt.Sprintf("replica-%d", i), Endpoint: fmt.Sprintf("%s/r/%d", webhook.URL, i),
			Audience: audience, EventTypes: []string{kvtest.EventSecretNewVersionCreated}, RetryDelays: []time.Duration{time.Second}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	for _, s := range subs {
		if err := s.WaitValidated(ctx); err != nil {
			cancel()
			return steadyResult{}, steadyResult{}, fmt.Errorf("subscription %s: %w", s.Name(), err)
		}
	}
	cancel()

	// A GET per secret, on a second vault loaded without a limit, then limited. It runs
	// beside the push run: another vault, another limit, and the machine has cores to spare.
	gkv := newVault(srv, "getvault")
	gkv.SetThrottle(1<<30, time.Second)
	gfl, err := newFleet(srv, hc, "getvault", n, viperkv.WithVersionCheck(viperkv.VersionCheckGet))
	if err != nil {
		return steadyResult{}, steadyResult{}, err
	}
	if _, failed := gfl.load(); failed > 0 {
		return steadyResult{}, steadyResult{}, fmt.Errorf("the GET fleet's unthrottled load failed %d references", failed)
	}
	gkv.SetThrottle(kvtest.DefaultThrottleLimit, kvtest.DefaultThrottlePeriod)
	time.Sleep(time.Second)

	var both sync.WaitGroup
	both.Go(func() { push = steadyRun(kv, fl, steady, func() func() { return func() {} }) })
	both.Go(func() { get = steadyRun(gkv, gfl, steady, gfl.watch) })
	both.Wait()
	for _, s := range subs {
		s.Close()
	}
	fmt.Fprintf(os.Stderr, "fleet: push: peak %d / 10 s, %d failed, p99 %v; %d GETs, %d 429s\n", push.peak, push.failed, push.p99, push.gets, push.throttled)
	fmt.Fprintf(os.Stderr, "fleet: steady state by GET: peak %d / 10 s, %d failed, p99 %v; %d GETs, %d 429s\n", get.peak, get.failed, get.p99, get.gets, get.throttled)
	return push, get, nil
}

// steadyRun starts the fleet (start returns its stop), rotates for d and measures.
func steadyRun(kv *kvtest.Vault, f *fleet, d time.Duration, start func() (stop func())) steadyResult {
	errsBefore := f.errorCount()
	l0, g0, t0 := kv.Count(kvtest.OpListSecrets), kv.Count(kvtest.OpGetSecret), kv.Count(kvtest.OpThrottled)
	s := sample(kv)
	stop := start()
	spreads, missing, rotations := rotate(kv, f, d)
	peak := s.peak()
	stop()
	return steadyResult{lists: kv.Count(kvtest.OpListSecrets) - l0, gets: kv.Count(kvtest.OpGetSecret) - g0,
		throttled: kv.Count(kvtest.OpThrottled) - t0, peak: peak.total(), peakLists: peak.lists, peakGets: peak.gets, failed: f.errorCount() - errsBefore, p50: stats.Percentile(spreads, 50), p99: stats.Percentile(spreads, 99),
		missing: missing, rotations: rotations}
}
