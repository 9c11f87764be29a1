package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/viperkv/viperkv"
)

// The load's pace. A goroutine making new connections pauses between them so that the
// sockets a closed connection leaves in TIME_WAIT (a minute on Linux) stay far below the
// ephemeral port range over a two-minute run, and so that the services keep CPU to spare on a
// small machine: the point is many handshakes around each renewal, not a benchmark.
const (
	newConnPause   = 20 * time.Millisecond
	keepAlivePause = 5 * time.Millisecond
	requestTimeout = 10 * time.Second
)

// load is the client's traffic: goroutines that make a new connection for each request
// (each one a full handshake), and goroutines that reuse one connection each.
type load struct {
	url  string
	stop chan struct{}
	wg   sync.WaitGroup

	handshakes, failedHandshakes atomic.Int64 // requests on a new connection
	requests, failedRequests     atomic.Int64 // requests on a kept-alive connection
	keepAliveDials               atomic.Int64
	firstErr, firstKeepAliveErr  atomic.Value // error

	transports []*http.Transport
}

// result is what the load saw, and what the server saw of it.
type result struct {
	handshakes, failedHandshakes, requests, failedRequests, keepAliveDials int64
	firstError, firstKeepAliveError                                        any
	serverHandshakeErrors                                                  int64
	firstServerError                                                       string
}

func startLoad(c *client, cfg config) *load {
	l := &load{url: c.url, stop: make(chan struct{})}
	for range cfg.Conns {
		tr := &http.Transport{TLSClientConfig: c.tls, DisableKeepAlives: true}
		l.transports = append(l.transports, tr)
		hc := &http.Client{Transport: tr, Timeout: requestTimeout}
		l.wg.Go(func() { l.loop(hc, &l.handshakes, &l.failedHandshakes, &l.firstErr, newConnPause) })
	}
	for range cfg.KeepAlive {
		tr := &http.Transport{TLSClientConfig: c.tls, MaxIdleConnsPerHost: 1,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				l.keepAliveDials.Add(1) // once per goroutine, unless a connection is lost
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
		l.transports = append(l.transports, tr)
		hc := &http.Client{Transport: tr, Timeout: requestTimeout}
		l.wg.Go(func() { l.loop(hc, &l.requests, &l.failedRequests, &l.firstKeepAliveErr, keepAlivePause) })
	}
	return l
}

// loop sends requests until stop, counting them and their failures.
func (l *load) loop(hc *http.Client, n, failed *atomic.Int64, firstErr *atomic.Value, pause time.Duration) {
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		n.Add(1)
		if err := get(hc, l.url); err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}
		time.Sleep(pause)
	}
}

// get makes one request and reads the whole answer, so that a kept-alive connection goes
// back to its pool.
func get(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "hello, ") {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// finish ends the load and returns what it saw.
func (l *load) finish() result {
	close(l.stop)
	l.wg.Wait()
	for _, tr := range l.transports {
		tr.CloseIdleConnections()
	}
	return result{
		handshakes: l.handshakes.Load(), failedHandshakes: l.failedHandshakes.Load(),
		requests: l.requests.Load(), failedRequests: l.failedRequests.Load(), keepAliveDials: l.keepAliveDials.Load(),
		firstError: l.firstErr.Load(), firstKeepAliveError: l.firstKeepAliveErr.Load(),
	}
}

// renewal is one renewal of one certificate, as the tracker follows it.
type renewal struct {
	cert           *certSpec
	n              int    // 1 for the first renewal
	version        string // the certificate's (and its linked secret's) new version
	serial         string
	issued         time.Time      // when the example saw the vault's new version
	pickedUp, seen time.Time      // when the owner's provider took it; the peer's first handshake with it
	source         viperkv.Source // how the owner's provider learnt of it
	reported       bool
}

// pickup is when and how a service's provider took a new version of its own certificate.
type pickup struct {
	at     time.Time
	source viperkv.Source
}

// tracker follows each renewal from the vault to the peer's handshakes. Pickups and
// handshakes are recorded by version and serial as they come, since either may come before
// the example has seen the vault's new version.
type tracker struct {
	mu       sync.Mutex
	renewals []*renewal
	pickups  map[string]pickup    // version -> the owner's provider took it
	seen     map[string]time.Time // serial -> first verified in a new handshake
}

func newTracker() *tracker {
	return &tracker{pickups: map[string]pickup{}, seen: map[string]time.Time{}}
}

func (t *tracker) issued(cert *certSpec, n int, version, serial string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.renewals = append(t.renewals, &renewal{cert: cert, n: n, version: version, serial: serial, issued: at})
}

func (t *tracker) pickedUp(version string, source viperkv.Source, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.pickups[version]; !ok {
		t.pickups[version] = pickup{at: at, source: source}
	}
}

// saw records a certificate a handshake verified; it runs in every handshake.
func (t *tracker) saw(serial string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.seen[serial]; !ok {
		t.seen[serial] = now
	}
}

// newlySeen returns the renewals now known end to end (taken by their owner, seen by their
// peer) that it has not returned before, in the order the vault made them.
func (t *tracker) newlySeen() []*renewal {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*renewal
	for _, r := range t.renewals {
		if r.reported {
			continue
		}
		p, picked := t.pickups[r.version]
		seen, ok := t.seen[r.serial]
		if !picked || !ok {
			continue
		}
		r.pickedUp, r.source, r.seen, r.reported = p.at, p.source, seen, true
		out = append(out, r)
	}
	return out
}

// allSeen reports whether every renewal recorded so far has been returned by newlySeen.
func (t *tracker) allSeen() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.renewals {
		if !r.reported {
			return false
		}
	}
	return true
}

// unseen describes the renewals not known end to end.
func (t *tracker) unseen() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for _, r := range t.renewals {
		if r.reported {
			continue
		}
		_, picked := t.pickups[r.version]
		parts = append(parts, fmt.Sprintf("renewal %d of %s (serial %s, taken by the %s: %t)", r.n, r.cert.name, short(r.serial), r.cert.owner, picked))
	}
	return strings.Join(parts, "; ")
}

// completeRenewals is how many renewals of each certificate went end to end: the fewest of
// the two certificates' unbroken runs from renewal 1.
func (t *tracker) completeRenewals() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	counts := map[*certSpec]int{serverCert: 0, clientCert: 0}
	for _, cert := range []*certSpec{serverCert, clientCert} {
		var done []int
		for _, r := range t.renewals {
			if r.cert == cert && r.reported {
				done = append(done, r.n)
			}
		}
		slices.Sort(done)
		for i, n := range done {
			if n != i+1 {
				break
			}
			counts[cert] = n
		}
	}
	return min(counts[serverCert], counts[clientCert])
}
