package viperkv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// fakeSource is the secretSource of the logic tests: secret versions per (vault, name) in
// memory, per-secret failures, latency and hangs, and a record of every call. It waits only
// on channels and timers, so inside a testing/synctest bubble its latency and hangs take
// simulated time.
type fakeSource struct {
	mu      sync.Mutex
	secrets map[fakeKey]*fakeSecret
	calls   []fakeCall
	busy    int // calls in progress
	made    int // versions made, for unique version ids

	listPages  map[string]int  // list pages served, per vault host
	listDenied map[string]bool // vault hosts whose list answers 403
	listErr    *fetchError     // every list fails with this, when set
	extra      map[string]int  // unreferenced secrets a vault holds besides these, for its size

	// vaultBehind is how far the vault's clock runs behind this machine's (negative: ahead):
	// it stamps versions' updated and answers' Date.
	vaultBehind time.Duration
}

// vaultNow is the vault's clock, to the second as Key Vault's timestamps and Date headers
// are. The caller holds f.mu.
func (f *fakeSource) vaultNow() time.Time {
	return time.Now().Add(-f.vaultBehind).Truncate(time.Second)
}

// fakeKey names a secret: the vault's host and the name in lower case (Key Vault compares
// names case-insensitively).
type fakeKey struct{ vault, name string }

type fakeSecret struct {
	versions []secretVersion // oldest first: the last is the latest
	fail     *fetchError     // every GET fails with this
	hang     bool            // every GET waits until its context ends
	latency  time.Duration   // every GET takes this long

	// A transient failure (flaky, flakyUntil): GETs fail with flake while flakes > 0 (each
	// counts one down; < 0: until heal) or until flakeUntil.
	flake      *fetchError
	flakes     int
	flakeUntil time.Time
}

// fakeCall is one getSecret call: the reference asked for, when it started and ended.
type fakeCall struct {
	ref        Reference
	start, end time.Time
}

func newFakeSource() *fakeSource { return &fakeSource{secrets: map[fakeKey]*fakeSecret{}} }

// vaultHost is the host of a vault of the public cloud.
func vaultHost(vault string) string { return vault + ".vault.azure.net" }

func keyOf(vault, name string) fakeKey { return fakeKey{vaultHost(vault), strings.ToLower(name)} }

// secret returns the state of a secret, creating it. The caller holds f.mu.
func (f *fakeSource) secret(vault, name string) *fakeSecret {
	k := keyOf(vault, name)
	s := f.secrets[k]
	if s == nil {
		s = &fakeSecret{}
		f.secrets[k] = s
	}
	return s
}

// versionOption sets an attribute of a new version.
type versionOption func(*secretVersion)

func expiresAt(t time.Time) versionOption   { return func(v *secretVersion) { v.expires = &t } }
func notBeforeAt(t time.Time) versionOption { return func(v *secretVersion) { v.notBefore = &t } }

// set makes value the latest version of the secret and returns the new version's id.
func (f *fakeSource) set(vault, name, value string, opts ...versionOption) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.made++
	updated := f.vaultNow()
	sv := secretVersion{value: value, version: fmt.Sprintf("%032x", f.made), updated: &updated}
	for _, o := range opts {
		o(&sv)
	}
	s := f.secret(vault, name)
	s.versions = append(s.versions, sv)
	return sv.version
}

// fail makes every GET of the secret fail with status and reason, as keyVault reports a
// failure, until heal.
func (f *fakeSource) fail(vault, name string, status Status, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secret(vault, name).fail = &fetchError{status: status, reason: reason}
}

// flaky makes the next n GETs of the secret (every one until heal, when n < 0) fail with
// status and reason as a transient failure, one that Load and Refresh retry.
func (f *fakeSource) flaky(vault, name string, status Status, reason string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.secret(vault, name)
	s.flake, s.flakes, s.flakeUntil = &fetchError{status: status, reason: reason, transient: true}, n, time.Time{}
}

// flakyUntil makes every GET of the secret that starts before until fail with status and
// reason as a transient failure, as while an identity endpoint is starting.
func (f *fakeSource) flakyUntil(vault, name string, status Status, reason string, until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.secret(vault, name)
	s.flake, s.flakes, s.flakeUntil = &fetchError{status: status, reason: reason, transient: true}, 0, until
}

// hang makes every GET of the secret wait until its context ends, until heal.
func (f *fakeSource) hang(vault, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secret(vault, name).hang = true
}

// delay makes every GET of the secret take d.
func (f *fakeSource) delay(vault, name string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secret(vault, name).latency = d
}

// heal ends the secret's failure, hang and latency.
func (f *fakeSource) heal(vault, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.secret(vault, name)
	s.fail, s.hang, s.latency = nil, false, 0
	s.flake, s.flakes, s.flakeUntil = nil, 0, time.Time{}
}

func (f *fakeSource) getSecret(ctx context.Context, r Reference) (secretVersion, error) {
	call := fakeCall{ref: r.key(), start: time.Now()}
	f.mu.Lock()
	f.busy++
	f.mu.Unlock()
	defer func() {
		call.end = time.Now()
		f.mu.Lock()
		f.busy--
		f.calls = append(f.calls, call)
		f.mu.Unlock()
	}()
	timedOut := func() error {
		// What keyVault reports for a fetch its context ended.
		reason := "GET " + r.ID() + ": timed out"
		if errors.Is(ctx.Err(), context.Canceled) {
			reason = "GET " + r.ID() + ": canceled"
		}
		return &fetchError{status: StatusFetchTimedOut, reason: reason, transient: true}
	}
	if ctx.Err() != nil {
		return secretVersion{}, timedOut()
	}
	f.mu.Lock()
	s := f.secrets[fakeKey{r.Vault, strings.ToLower(r.Name)}]
	var hang bool
	var latency time.Duration
	if s != nil {
		hang, latency = s.hang, s.latency
	}
	f.mu.Unlock()
	switch {
	case hang:
		<-ctx.Done()
		return secretVersion{}, timedOut()
	case latency > 0:
		timer := time.NewTimer(latency)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return secretVersion{}, timedOut()
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if s != nil && s.flake != nil && (s.flakes != 0 || call.start.Before(s.flakeUntil)) {
		if s.flakes > 0 {
			s.flakes--
		}
		return secretVersion{}, &fetchError{status: s.flake.status, reason: s.flake.reason, transient: true}
	}
	switch {
	case s == nil || len(s.versions) == 0:
		return secretVersion{}, &fetchError{status: StatusSecretNotFound, reason: "GET " + r.ID() + ": 404 SecretNotFound"}
	case s.fail != nil:
		return secretVersion{}, &fetchError{status: s.fail.status, reason: s.fail.reason}
	}
	served := f.vaultNow()
	if r.Version == "" {
		sv := s.versions[len(s.versions)-1]
		sv.served = &served
		return sv, nil
	}
	for _, sv := range s.versions {
		if sv.version == r.Version {
			sv.served = &served
			return sv, nil
		}
	}
	return secretVersion{}, &fetchError{status: StatusSecretVersionNotFound, reason: "GET " + r.ID() + ": 404 SecretNotFound"}
}

// listSecrets lists a vault as Key Vault does, 25 items a page: the current version's
// attributes of every secret with a version (a failing secret shows as disabled when it
// fails with SecretDisabled, and is absent when it fails with SecretNotFound), then the
// extra secrets that make the vault bigger.
func (f *fakeSource) listSecrets(ctx context.Context, vault string, maxPages int) (vaultListing, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listPages == nil {
		f.listPages = map[string]int{}
	}
	if f.listErr != nil {
		f.listPages[vault]++
		return vaultListing{}, f.listErr
	}
	if f.listDenied[vault] {
		f.listPages[vault]++
		return vaultListing{}, &fetchError{status: StatusAccessToKeyVaultDenied,
			reason: "GET https://" + vault + "/secrets (list): 403 Forbidden (ForbiddenByRbac)"}
	}
	var all []secretProps
	for _, k := range slices.SortedFunc(maps.Keys(f.secrets), func(a, b fakeKey) int { return strings.Compare(a.name, b.name) }) {
		s := f.secrets[k]
		if k.vault != vault || len(s.versions) == 0 || (s.fail != nil && s.fail.status == StatusSecretNotFound) {
			continue
		}
		cur := s.versions[len(s.versions)-1]
		all = append(all, secretProps{name: k.name, enabled: s.fail == nil || s.fail.status != StatusSecretDisabled,
			updated: cur.updated, expires: cur.expires, notBefore: cur.notBefore})
	}
	for i := range f.extra[vault] {
		all = append(all, secretProps{name: fmt.Sprintf("zz-extra-%d", i), enabled: true})
	}
	pages := max(1, (len(all)+24)/25)
	if maxPages > 0 && pages > maxPages {
		f.listPages[vault] += maxPages
		return vaultListing{props: all[:maxPages*25]}, nil
	}
	f.listPages[vault] += pages
	return vaultListing{props: all, complete: true}, nil
}

// pages returns the list pages served for the vault.
func (f *fakeSource) pages(vault string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listPages[vaultHost(vault)]
}

// denyList makes the vault's list answer 403, as for an identity without list permission.
func (f *fakeSource) denyList(vault string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listDenied == nil {
		f.listDenied = map[string]bool{}
	}
	f.listDenied[vaultHost(vault)] = true
}

// grow adds n unreferenced secrets to the vault, for its size as listed.
func (f *fakeSource) grow(vault string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.extra == nil {
		f.extra = map[string]int{}
	}
	f.extra[vaultHost(vault)] += n
}

// callsOf returns the calls that asked for the secret (any version, or the one given),
// in the order they ended.
func (f *fakeSource) callsOf(vault, name string, version ...string) []fakeCall {
	k := keyOf(vault, name)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeCall
	for _, c := range f.calls {
		if c.ref.Vault != k.vault || c.ref.Name != k.name || len(version) > 0 && c.ref.Version != version[0] {
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
func (f *fakeSource) inFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.busy
}

// callCount returns the number of calls per reference (versions kept apart).
func (f *fakeSource) callCount() map[Reference]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[Reference]int{}
	for _, c := range f.calls {
		out[c.ref]++
	}
	return out
}

// newFakeProvider returns a Provider for v that fetches from src and watches no file.
func newFakeProvider(t *testing.T, src *fakeSource, v *viper.Viper, opts ...Option) *Provider {
	t.Helper()
	p, err := New(v, append([]Option{withSource(src), WithoutFileWatch()}, opts...)...)
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

// logSink collects log output written from any goroutine.
type logSink struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
