package viperkv

import (
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv/internal/driver"
	"github.com/viperkv/viperkv/internal/driver/memvault"
)

// fakeSource is the source of the logic tests: the in-memory vaults of memvault (which
// passes the driver's conformance suite, as the Azure source does), with helpers that
// speak the test's words: vault names, statuses. It waits only on channels and timers, so
// inside a testing/synctest bubble its latency and hangs take simulated time.
type fakeSource struct {
	*memvault.Vaults

	mu       sync.Mutex
	disabled map[string]bool            // secrets fail disabled, which heal enables again
	faults   map[string]*memvault.Fault // each secret's failure and latency, combined
}

// setFault changes the secret's fault with f and puts the result in place.
func (f *fakeSource) setFault(vault, name string, change func(*memvault.Fault)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.faults == nil {
		f.faults = map[string]*memvault.Fault{}
	}
	k := vault + "/" + strings.ToLower(name)
	cur := f.faults[k]
	if cur == nil {
		cur = &memvault.Fault{}
		f.faults[k] = cur
	}
	change(cur)
	f.FailGet(vaultHost(vault), name, *cur)
}

// fakeCall is one Get: the reference asked for (its name in lower case), when it started
// and ended.
type fakeCall struct {
	ref        Reference
	start, end time.Time
}

func newFakeSource() *fakeSource { return &fakeSource{Vaults: memvault.New()} }

// vaultHost is the host of a vault of the public cloud.
func vaultHost(vault string) string { return vault + ".vault.azure.net" }

// versionOption sets an attribute of a new version.
type versionOption = memvault.SecretOption

func expiresAt(t time.Time) versionOption   { return memvault.Expires(t) }
func notBeforeAt(t time.Time) versionOption { return memvault.NotBefore(t) }

// set makes value the latest version of the secret and returns the new version's id.
func (f *fakeSource) set(vault, name, value string, opts ...versionOption) string {
	return f.Set(vaultHost(vault), name, value, opts...)
}

// failure is how the vault, the network or the identity endpoint produce status: an HTTP
// answer where there is one, else the driver's kind.
func failure(status Status, reason string, transient bool) memvault.Fault {
	switch status {
	case StatusAccessToKeyVaultDenied:
		return memvault.Fault{Status: 403, Inner: "ForbiddenByRbac"}
	case StatusSecretDisabled:
		return memvault.Fault{Status: 403, Inner: "SecretDisabled"}
	case StatusSecretNotFound, StatusSecretVersionNotFound:
		return memvault.Fault{Status: 404, Code: "SecretNotFound"}
	case StatusUnauthorizedClient:
		if !transient {
			return memvault.Fault{Status: 401, Code: "Unauthorized"}
		}
	case StatusThrottled:
		return memvault.Fault{Err: &driver.Error{Kind: driver.KindThrottled, Reason: reason, Transient: true}}
	}
	kinds := map[Status]driver.Kind{StatusOtherReasons: driver.KindOther, StatusMSINotEnabled: driver.KindNoIdentity,
		StatusFetchTimedOut: driver.KindTimeout, StatusVaultNotFound: driver.KindVaultNotFound, StatusUnauthorizedClient: driver.KindUnauthorized}
	k, ok := kinds[status]
	if !ok {
		panic("fakeSource: no failure for status " + string(status))
	}
	return memvault.Fault{Err: &driver.Error{Kind: k, Reason: reason, Transient: transient}}
}

// fail makes every GET of the secret fail with status (and reason, where no HTTP answer
// gives one), as a failure that will not change soon, until heal. A disabled or deleted
// secret is made so in the vault, so that lists show it too.
func (f *fakeSource) fail(vault, name string, status Status, reason string) {
	switch status {
	case StatusSecretDisabled:
		if err := f.SetEnabled(vaultHost(vault), name, "", false); err != nil {
			panic(err)
		}
		f.mu.Lock()
		if f.disabled == nil {
			f.disabled = map[string]bool{}
		}
		f.disabled[vault+"/"+name] = true
		f.mu.Unlock()
	case StatusSecretNotFound:
		f.Delete(vaultHost(vault), name)
	default:
		f.setFault(vault, name, func(cur *memvault.Fault) { *cur = withLatency(failure(status, reason, false), cur.Latency) })
	}
}

// withLatency is f taking d.
func withLatency(f memvault.Fault, d time.Duration) memvault.Fault {
	f.Latency = d
	return f
}

// flaky makes the next n GETs of the secret (every one until heal, when n < 0) fail with
// status and reason as a transient failure, one that Load and Refresh retry.
func (f *fakeSource) flaky(vault, name string, status Status, reason string, n int) {
	fault := failure(status, reason, true)
	fault.Times = max(n, 0)
	f.setFault(vault, name, func(cur *memvault.Fault) { *cur = withLatency(fault, cur.Latency) })
}

// flakyUntil makes every GET of the secret that starts before until fail with status and
// reason as a transient failure, as while an identity endpoint is starting.
func (f *fakeSource) flakyUntil(vault, name string, status Status, reason string, until time.Time) {
	fault := failure(status, reason, true)
	fault.Until = until
	f.setFault(vault, name, func(cur *memvault.Fault) { *cur = withLatency(fault, cur.Latency) })
}

// hang makes every GET of the secret wait until its context ends, until heal.
func (f *fakeSource) hang(vault, name string) {
	f.setFault(vault, name, func(cur *memvault.Fault) { cur.Hang = true })
}

// delay makes every GET of the secret take d.
func (f *fakeSource) delay(vault, name string, d time.Duration) {
	f.setFault(vault, name, func(cur *memvault.Fault) { cur.Latency = d })
}

// heal ends the secret's failure, hang and latency, and brings it back if fail disabled
// or deleted it.
func (f *fakeSource) heal(vault, name string) {
	f.Clear(vaultHost(vault), name)
	f.Recover(vaultHost(vault), name)
	f.mu.Lock()
	disabled := f.disabled[vault+"/"+name]
	delete(f.disabled, vault+"/"+name)
	delete(f.faults, vault+"/"+strings.ToLower(name))
	f.mu.Unlock()
	if disabled {
		_ = f.SetEnabled(vaultHost(vault), name, "", true)
	}
}

// pages returns the list pages served for the vault.
func (f *fakeSource) pages(vault string) int { return f.Pages(vaultHost(vault)) }

// denyList makes the vault's list answer 403, as for an identity without list permission.
func (f *fakeSource) denyList(vault string) {
	f.FailList(vaultHost(vault), memvault.Fault{Status: 403, Inner: "ForbiddenByRbac"})
}

// grow adds n unreferenced secrets to the vault, for its size as listed.
func (f *fakeSource) grow(vault string, n int) { f.Grow(vaultHost(vault), n) }

// calls returns every Get, in the order they ended.
func (f *fakeSource) calls() []fakeCall {
	var out []fakeCall
	for _, c := range f.Calls() {
		out = append(out, fakeCall{ref: Reference{Vault: c.Vault, Name: c.Name, Version: c.Version}, start: c.Start, end: c.End})
	}
	return out
}

// callsOf returns the calls that asked for the secret (any version, or the one given),
// in the order they ended.
func (f *fakeSource) callsOf(vault, name string, version ...string) []fakeCall {
	var out []fakeCall
	for _, c := range f.calls() {
		if c.ref.Vault != vaultHost(vault) || c.ref.Name != strings.ToLower(name) || len(version) > 0 && c.ref.Version != version[0] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// count is len(callsOf(...)).
func (f *fakeSource) count(vault, name string, version ...string) int {
	return len(f.callsOf(vault, name, version...))
}

// inFlight returns the number of calls in progress.
func (f *fakeSource) inFlight() int { return f.InFlight() }

// callCount returns the number of calls per reference (versions kept apart).
func (f *fakeSource) callCount() map[Reference]int {
	out := map[Reference]int{}
	for _, c := range f.calls() {
		out[c.ref]++
	}
	return out
}

// newFakeProvider returns a Provider for v that fetches from src and watches no file.
func newFakeProvider(t *testing.T, src *fakeSource, v *viper.Viper, opts ...Option) *Provider {
	t.Helper()
	p, err := New(v, append([]Option{withSource(src.Vaults), WithoutFileWatch()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loadFake is newFakeProvider followed by a Load that must succeed.
func loadFake(t *testing.T, src *fakeSource, doc string, opts ...Option) *Provider {
	t.Helper()
	p := newFakeProvider(t, src, YAMLViper(t, doc), opts...)
	if err := p.Load(context.Background()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

// recorder keeps the events a provider announces.
type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func record(p *Provider) *recorder {
	r := &recorder{}
	p.OnChange(func(e Event) {
		r.mu.Lock()
		r.evs = append(r.evs, e)
		r.mu.Unlock()
	})
	return r
}

// all returns the events so far; of the given kinds only, when kinds are given.
func (r *recorder) all(kinds ...EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.evs {
		if len(kinds) == 0 || containsKind(kinds, e.Kind) {
			out = append(out, e)
		}
	}
	return out
}

func containsKind(kinds []EventKind, k EventKind) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

// only returns the one event of kind, failing the test when there is not exactly one.
func (r *recorder) only(t *testing.T, kind EventKind) Event {
	t.Helper()
	evs := r.all(kind)
	if len(evs) != 1 {
		t.Fatalf("%d %s events, want 1: %v", len(evs), kind, r.all())
	}
	return evs[0]
}

// startWatch runs p.Watch in the bubble until the test ends (or stop is called), then
// checks that Watch returned the context's error.
func startWatch(t *testing.T, p *Provider) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// within reports whether d lies in [lo, hi].
func within(d, lo, hi time.Duration) bool { return d >= lo && d <= hi }

// frac returns f x d.
func frac(d time.Duration, f float64) time.Duration { return time.Duration(float64(d) * f) }

var (
	bubbleRE    = regexp.MustCompile(`^goroutine (\d+) \[[^\]]*(synctest bubble \d+)\]`)
	packageDir  = func() string { _, file, _, _ := runtime.Caller(0); return filepath.Dir(file) }()
	coreFrameRE = regexp.MustCompile(`(?m)^\t` + regexp.QuoteMeta(packageDir) + `/[a-z]+\.go:\d+`)
)

// coreGoroutines returns the stacks of the goroutines of the caller's synctest bubble that
// run the package's own (non-test) code, other than the caller.
func coreGoroutines() []string {
	self := make([]byte, 1024)
	self = self[:runtime.Stack(self, false)]
	m := bubbleRE.FindSubmatch(self)
	if m == nil {
		panic("coreGoroutines: not in a synctest bubble")
	}
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		gm := bubbleRE.FindStringSubmatch(g)
		if gm == nil || gm[2] != string(m[2]) || gm[1] == string(m[1]) || !coreFrameRE.MatchString(g) {
			continue
		}
		out = append(out, g)
	}
	return out
}
