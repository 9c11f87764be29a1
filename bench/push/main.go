// Command push measures rotations delivered by push (Key Vault's Event Grid events to
// viperkv's handler) against the same rotations found by polling, on the kvtest emulator
// with 10 ms of vault latency, and prints a table. Run it with "go run ./bench/push".
//
// Push: the emulator publishes each new version to an Event Grid subscription (Entra
// authentication, each delivery sent twice as at-least-once delivery may) whose webhook is
// viperkv.NewEventGridHandler with no delay. It measures, for each rotation, the time from
// the PUT to the watcher's EventChanged, the vault GETs it cost and the duplicate
// deliveries that cost nothing (targets: p99 <= 100 ms, exactly 1 GET per rotation, every
// duplicate ignored).
//
// Poll: the same number of rotations found by Watch at a 1 s refresh interval, four
// secrets rotating side by side.
//
// The last line sums it up as key=value pairs. With -check, a missed target exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/bench/internal/stats"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/kvtest"
)

const (
	latency  = 10 * time.Millisecond
	audience = "api://viperkv-bench-webhook"
	lanes    = 4 // secrets rotating side by side in the poll run
)

func main() {
	check := flag.Bool("check", false, "exit 1 when a target is missed")
	rotations := flag.Int("rotations", 100, "rotations measured by push, and again by polling")
	flag.Parse()
	ok, err := run(*rotations)
	if err != nil {
		fmt.Fprintln(os.Stderr, "push:", err)
		os.Exit(1)
	}
	if *check && !ok {
		os.Exit(1)
	}
}

// watcher collects the times at which versions reached OnChange.
type watcher struct {
	mu   sync.Mutex
	seen map[string]time.Time // version -> when its EventChanged arrived
	cond chan struct{}        // closed and replaced on every event
}

func newWatcher(p *viperkv.Provider) *watcher {
	w := &watcher{seen: map[string]time.Time{}, cond: make(chan struct{})}
	p.OnChange(func(e viperkv.Event) {
		if e.Kind != viperkv.EventChanged {
			return
		}
		w.mu.Lock()
		w.seen[e.NewVersion] = time.Now()
		close(w.cond)
		w.cond = make(chan struct{})
		w.mu.Unlock()
	})
	return w
}

// wait returns when version reached the watcher.
func (w *watcher) wait(version string, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		at, ok := w.seen[version]
		cond := w.cond
		w.mu.Unlock()
		if ok {
			return at, nil
		}
		select {
		case <-cond:
		case <-deadline:
			return time.Time{}, fmt.Errorf("version %s did not reach the watcher within %v", version, timeout)
		}
	}
}

func newProvider(srv *kvtest.Server, doc string, opts ...viperkv.Option) (*viperkv.Provider, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		return nil, err
	}
	p, err := viperkv.New(v, append([]viperkv.Option{viperkv.WithCredential(srv.Credential()),
		viperkv.WithTransport(srv.NewClient()), viperkv.WithoutFileWatch()}, opts...)...)
	if err != nil {
		return nil, err
	}
	return p, p.Load(context.Background())
}

type result struct {
	latencies  []time.Duration
	gets       int64
	duplicates int // deliveries beyond the first of each event
}

func run(n int) (bool, error) {
	srv, err := kvtest.Start()
	if err != nil {
		return false, err
	}
	defer srv.Close()

	push, err := measurePush(srv, n)
	if err != nil {
		return false, err
	}
	poll, err := measurePoll(srv, n)
	if err != nil {
		return false, err
	}

	pp50, pp99 := stats.Percentile(push.latencies, 50), stats.Percentile(push.latencies, 99)
	lp50, lp99 := stats.Percentile(poll.latencies, 50), stats.Percentile(poll.latencies, 99)
	getsPer := float64(push.gets) / float64(n)
	// A duplicate that cost a GET was not ignored.
	ignored := push.duplicates - max(0, int(push.gets)-n)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "MEASURE\tVALUE\tTARGET\tVERDICT\n")
	allOK := true
	row := func(name, value, target string, ok bool) {
		verdict := "ok"
		if !ok {
			verdict, allOK = "MISSED", false
		}
		if target == "" {
			verdict = ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, value, target, verdict)
	}
	row("push: PUT to watcher, p50", ms(pp50), "", true)
	row("push: PUT to watcher, p99", ms(pp99), "<= 100 ms", pp99 <= 100*time.Millisecond)
	row("push: vault GETs per rotation", fmt.Sprintf("%.2f", getsPer), "exactly 1", push.gets == int64(n))
	row("push: duplicate deliveries ignored", fmt.Sprintf("%d of %d", ignored, push.duplicates), "all", ignored == push.duplicates && push.duplicates > 0)
	row("poll (1 s interval): PUT to watcher, p50", ms(lp50), "", true)
	row("poll (1 s interval): PUT to watcher, p99", ms(lp99), "", true)
	row("poll: vault GETs per rotation", fmt.Sprintf("%.2f", float64(poll.gets)/float64(n)), "", true)
	row("push p50 speed-up over polling", fmt.Sprintf("%.0fx", float64(lp50)/float64(max(pp50, time.Microsecond))), "", true)
	tw.Flush()
	fmt.Printf("push: rotations=%d push_p50_ms=%.1f push_p99_ms=%.1f poll_p50_ms=%.1f poll_p99_ms=%.1f gets_per_rotation=%.2f duplicates_ignored=%d\n",
		n, msf(pp50), msf(pp99), msf(lp50), msf(lp99), getsPer, ignored)
	return allOK, nil
}

// measurePush rotates a secret n times, one after the other, each delivered by the
// emulator's Event Grid subscription (twice) to the handler.
func measurePush(srv *kvtest.Server, n int) (result, error) {
	kv := srv.AddVault("pushvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("rotating", "v0")
	kv.SetLatency(latency)
	p, err := newProvider(srv, "api:\n  key: \"@KeyVault(VaultName=pushvault;SecretName=rotating)\"\n",
		viperkv.WithRefreshInterval(time.Hour)) // polling is the safety net only
	if err != nil {
		return result{}, err
	}
	w := newWatcher(p)
	h, err := eventgrid.NewHandler(p, eventgrid.Entra(srv.TenantID(), audience))
	if err != nil {
		return result{}, err
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: ts.URL, Audience: audience, Duplicate: true,
		EventTypes: []string{kvtest.EventSecretNewVersionCreated}})
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.WaitValidated(ctx); err != nil {
		return result{}, fmt.Errorf("subscription not validated: %w", err)
	}
	// Warm up: the first delivery fetches the tenant's signing keys.
	v := kv.SetSecret("rotating", "warm-up")
	if _, err := w.wait(v, 10*time.Second); err != nil {
		return result{}, err
	}
	waitDeliveries(sub, 2)
	kv.ResetCounters()
	before := len(sub.Deliveries())

	var res result
	for i := range n {
		start := time.Now()
		v := kv.SetSecret("rotating", fmt.Sprintf("value-%d", i))
		at, err := w.wait(v, 10*time.Second)
		if err != nil {
			return result{}, err
		}
		res.latencies = append(res.latencies, at.Sub(start))
	}
	waitDeliveries(sub, before+2*n)
	res.gets = kv.Count(kvtest.OpGetSecret)
	ok := 0
	for _, d := range sub.Deliveries()[before:] {
		if d.Kind == "notification" && d.Status == 200 {
			ok++
		}
	}
	res.duplicates = ok - n
	return res, nil
}

// waitDeliveries waits (a few seconds at most) until sub has made n attempts.
func waitDeliveries(sub *kvtest.Subscription, n int) {
	for deadline := time.Now().Add(5 * time.Second); len(sub.Deliveries()) < n && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

// measurePoll rotates lanes secrets side by side, n rotations in all, found by Watch at a
// 1 s interval.
func measurePoll(srv *kvtest.Server, n int) (result, error) {
	kv := srv.AddVault("pollvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	doc := "lanes:\n"
	for i := range lanes {
		kv.SetSecret(fmt.Sprintf("lane-%d", i), "v0")
		doc += fmt.Sprintf("  l%d: \"@KeyVault(VaultName=pollvault;SecretName=lane-%d)\"\n", i, i)
	}
	kv.SetLatency(latency)
	p, err := newProvider(srv, doc, viperkv.WithRefreshInterval(time.Second))
	if err != nil {
		return result{}, err
	}
	w := newWatcher(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	kv.ResetCounters()

	var (
		mu  sync.Mutex
		res result
		wg  sync.WaitGroup
		bad error
	)
	for lane := range lanes {
		wg.Go(func() {
			for i := lane; i < n; i += lanes {
				// Rotate at a random point of the cycle, as a real rotation is.
				time.Sleep(time.Duration(i%7) * 137 * time.Millisecond)
				start := time.Now()
				v := kv.SetSecret(fmt.Sprintf("lane-%d", lane), fmt.Sprintf("value-%d", i))
				at, err := w.wait(v, 10*time.Second)
				mu.Lock()
				if err != nil {
					bad = err
				} else {
					res.latencies = append(res.latencies, at.Sub(start))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	res.gets = kv.Count(kvtest.OpGetSecret)
	return res, bad
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", msf(d)) }
func msf(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}
