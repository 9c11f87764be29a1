package viperkv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// Timing used by the tests in this file: short enough to run many cycles in a second or
// two, long enough that a 2-core CI machine under -race keeps up.
const (
	faultInterval = 150 * time.Millisecond
	faultRetryMin = 20 * time.Millisecond
	faultRetryMax = 200 * time.Millisecond
	eventDeadline = 10 * time.Second
)

// newEmulatorWith is newEmulator with server options.
func newEmulatorWith(t *testing.T, opts ...kvtest.Option) *kvtest.Server {
	t.Helper()
	srv := kvtest.NewServer(opts...)
	t.Cleanup(srv.Close)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	return srv
}

// sentRequest is one request the provider sent, as its transport saw it.
type sentRequest struct {
	at   time.Time
	ctx  context.Context // the fetch's context: every azcore retry of one fetch shares it
	host string
	path string
	auth bool // carries a bearer token (not the challenge round trip)
}

// recordingTransport records every request the provider sends (identity endpoint and
// vaults) before passing it on to the emulator.
type recordingTransport struct {
	next     policy.Transporter
	mu       sync.Mutex
	reqs     []sentRequest
	inflight map[*http.Request]sentRequest
}

func (rt *recordingTransport) Do(req *http.Request) (*http.Response, error) {
	r := sentRequest{
		at:   time.Now(),
		ctx:  req.Context(),
		host: req.URL.Hostname(),
		path: req.URL.Path,
		auth: req.Header.Get("Authorization") != "",
	}
	rt.mu.Lock()
	rt.reqs = append(rt.reqs, r)
	if rt.inflight == nil {
		rt.inflight = map[*http.Request]sentRequest{}
	}
	rt.inflight[req] = r
	rt.mu.Unlock()
	defer func() {
		rt.mu.Lock()
		delete(rt.inflight, req)
		rt.mu.Unlock()
	}()
	return rt.next.Do(req)
}

// pending reports whether a matching request has been waiting for its answer for at least d.
func (rt *recordingTransport) pending(d time.Duration, match func(sentRequest) bool) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, r := range rt.inflight {
		if match(r) && time.Since(r.at) >= d {
			return true
		}
	}
	return false
}

// attempts returns the start times of the refresh attempts since t that match: requests
// sharing one context (a fetch and azcore's retries of it) count as one attempt.
func (rt *recordingTransport) attempts(since time.Time, match func(sentRequest) bool) []time.Time {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var out []time.Time
	var last context.Context
	for _, r := range rt.reqs {
		if r.at.Before(since) || !match(r) {
			continue
		}
		if last == nil || r.ctx != last {
			out = append(out, r.at)
		}
		last = r.ctx
	}
	return out
}

// waitEventFrom waits for an event at index from or later matching ok, and returns it with
// its index.
func waitEventFrom(t *testing.T, e *events, from int, what string, ok func(viperkv.Event) bool) (viperkv.Event, int) {
	t.Helper()
	deadline := time.After(eventDeadline)
	for {
		all := e.all()
		for i := from; i < len(all); i++ {
			if ok(all[i]) {
				return all[i], i
			}
		}
		select {
		case <-e.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %s event within %v; got %v", what, eventDeadline, all[min(from, len(all)):])
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// faultEnv is what a fault table row acts on.
type faultEnv struct {
	srv *kvtest.Server
	kv  *kvtest.Vault
	id  kvtest.Identity
}

type faultCase struct {
	name string
	// ownServer runs the row on a server of its own whose tokens live 2 s, authenticating
	// as a fresh user-assigned identity: MSAL then caches nothing (a token needs 5 minutes
	// left) and azcore's bearer policy must fetch a new token once each one expires, so
	// identity endpoint faults reach the refresh.
	ownServer bool
	opts      []viperkv.Option
	inject    func(*faultEnv)
	want      viperkv.Status
	// identityAttempts counts token requests as the refresh attempts (the identity rows);
	// otherwise they are the authenticated GETs of the secret.
	identityAttempts bool
	// fast rows fail at once (no azcore retries, no waiting): the provider's back-off alone
	// spaces the attempts, so it can be measured, cap included.
	fast bool
	// minGap is a row-specific lower bound on the time between attempts (Retry-After, a
	// fetch timeout spent hanging).
	minGap time.Duration
	// heal ends the fault. It returns the new version and value when it rotated the secret.
	heal func(*faultEnv) (version, value string)
}

// TestRefreshFaultTable runs every refresh fault of the issue through the real SDK against
// the emulator: the last good value stays, the status says why, one error event is sent,
// retries back off exponentially (capped), and the value recovers once the fault clears.
func TestRefreshFaultTable(t *testing.T) {
	rotate := func(e *faultEnv) (string, string) {
		val := "good-v2-" + randomSuffix()
		return e.kv.SetSecret("conn", val), val
	}
	cases := []faultCase{
		{
			name: "identity endpoint 403", ownServer: true, identityAttempts: true, fast: true,
			inject: func(e *faultEnv) { e.srv.InjectIdentityFault(kvtest.Fault{Status: http.StatusForbidden}) },
			want:   viperkv.StatusUnauthorizedClient,
			heal:   func(e *faultEnv) (string, string) { e.srv.ClearIdentityFaults(); return rotate(e) },
		},
		{
			// A hung token request must not pin token acquisition after its callers gave up.
			name: "identity endpoint hangs", ownServer: true, identityAttempts: true,
			opts:   []viperkv.Option{viperkv.WithFetchTimeout(500 * time.Millisecond)},
			inject: func(e *faultEnv) { e.srv.InjectIdentityFault(kvtest.Fault{Hang: true}) },
			want:   viperkv.StatusFetchTimedOut, minGap: 450 * time.Millisecond,
			heal: func(e *faultEnv) (string, string) { e.srv.ClearIdentityFaults(); return "", "" },
		},
		{
			// azcore retries a 500 three times within one fetch; then the status says what the
			// vault answered.
			name: "vault 500",
			inject: func(e *faultEnv) {
				e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusInternalServerError})
			},
			want: viperkv.StatusOtherReasons,
			heal: func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return rotate(e) },
		},
		{
			name: "vault 503",
			inject: func(e *faultEnv) {
				e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusServiceUnavailable})
			},
			want: viperkv.StatusOtherReasons,
			heal: func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return "", "" },
		},
		{
			// The fetcher waits out Retry-After through the vault's limiter; a fetch deadline
			// shorter than Retry-After ends the wait, and the status still says the vault
			// throttled (not that it was slow). No request goes out before Retry-After.
			name: "vault 429 with Retry-After",
			opts: []viperkv.Option{viperkv.WithFetchTimeout(500 * time.Millisecond)},
			inject: func(e *faultEnv) {
				e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusTooManyRequests, RetryAfter: time.Second})
			},
			want: viperkv.StatusThrottled, minGap: time.Second,
			heal: func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return "", "" },
		},
		{
			name:   "vault hangs",
			opts:   []viperkv.Option{viperkv.WithFetchTimeout(500 * time.Millisecond)},
			inject: func(e *faultEnv) { e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Hang: true}) },
			want:   viperkv.StatusFetchTimedOut, minGap: 450 * time.Millisecond,
			heal: func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return rotate(e) },
		},
		{
			name:   "connection reset",
			inject: func(e *faultEnv) { e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Reset: true}) },
			want:   viperkv.StatusOtherReasons,
			heal:   func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return "", "" },
		},
		{
			name: "secret disabled", fast: true,
			inject: func(e *faultEnv) {
				if err := e.kv.SetEnabled("conn", "", false); err != nil {
					panic(err)
				}
			},
			want: viperkv.StatusSecretDisabled,
			heal: func(e *faultEnv) (string, string) {
				if err := e.kv.SetEnabled("conn", "", true); err != nil {
					panic(err)
				}
				return "", ""
			},
		},
		{
			name: "secret deleted", fast: true,
			inject: func(e *faultEnv) {
				if err := e.kv.DeleteSecret("conn"); err != nil {
					panic(err)
				}
			},
			want: viperkv.StatusSecretNotFound,
			heal: rotate, // re-created: a new version
		},
		{
			name: "access revoked", fast: true,
			inject: func(e *faultEnv) { e.kv.Revoke(e.id) },
			want:   viperkv.StatusAccessToKeyVaultDenied,
			heal:   func(e *faultEnv) (string, string) { e.kv.Grant(e.id, kvtest.RoleSecretsUser); return "", "" },
		},
	}

	// Rows on their own server change the process environment: they run first, one at a
	// time. The others share one server (faults are per vault) and run at the same time:
	// they mostly wait on timers, and -parallel (GOMAXPROCS, 2 on CI) would serialise them.
	for _, tc := range cases {
		if tc.ownServer {
			t.Run(tc.name, func(t *testing.T) {
				srv := newEmulatorWith(t, kvtest.WithTokenLifetime(2*time.Second))
				runFaultCase(t, srv, newIdentity(t, srv), "faultvault", tc)
			})
		}
	}
	srv := newEmulator(t)
	var wg sync.WaitGroup
	for i, tc := range cases {
		if !tc.ownServer {
			wg.Go(func() {
				t.Run(tc.name, func(t *testing.T) {
					runFaultCase(t, srv, srv.SystemIdentity(), fmt.Sprintf("faultvault%d", i), tc)
				})
			})
		}
	}
	wg.Wait()
}

func runFaultCase(t *testing.T, srv *kvtest.Server, id kvtest.Identity, vault string, tc faultCase) {
	kv := srv.AddVault(vault)
	kv.Grant(id, kvtest.RoleSecretsUser)
	goodValue := "good-v1-" + randomSuffix()
	v1 := kv.SetSecret("conn", goodValue)
	env := &faultEnv{srv: srv, kv: kv, id: id}

	rec := &recordingTransport{next: srv.Client()}
	opts := append([]viperkv.Option{
		viperkv.WithTransport(rec),
		viperkv.WithRefreshInterval(faultInterval),
		viperkv.WithRetryBackoff(faultRetryMin, faultRetryMax),
	}, tc.opts...)
	if id.Name != kvtest.SystemIdentityName {
		opts = append(opts, viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID)))
	}
	p, err := load(t, srv, yamlViper(t, fmt.Sprintf(`
db:
  conn: "@KeyVault(SecretUri=https://%s.vault.azure.net/secrets/conn/)"
  pool: 10
`, vault)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.GetString("db.conn"); got != goodValue {
		t.Fatalf("db.conn = %q after Load", got)
	}
	evs := collect(p)
	watch(t, p)

	isConn := func(e viperkv.Event) bool { return e.Secret.Name == "conn" }
	isAttempt := func(r sentRequest) bool {
		if tc.identityAttempts {
			return strings.HasSuffix(r.path, "/msi/token")
		}
		return r.auth && strings.HasPrefix(r.host, vault+".") && strings.HasPrefix(r.path, "/secrets/conn")
	}

	injected := time.Now()
	tc.inject(env)
	errEv, errAt := waitEventFrom(t, evs, 0, "Error "+string(tc.want), func(e viperkv.Event) bool {
		return isConn(e) && e.Kind == viperkv.EventError
	})
	if errEv.Status != tc.want {
		t.Fatalf("error event status %s, want %s: %v", errEv.Status, tc.want, errEv)
	}
	var re *viperkv.ReferenceError
	if !errors.As(errEv.Err, &re) || re.Status != tc.want || re.Reason == "" {
		t.Errorf("error event Err = %#v, want a *ReferenceError with status %s and a reason", errEv.Err, tc.want)
	}
	if errEv.Source != viperkv.SourcePoll || errEv.OldVersion != v1 || !slices.Equal(errEv.Keys, []string{"db.conn"}) {
		t.Errorf("error event = %v, want source poll, old version %s, keys [db.conn]", errEv, v1)
	}
	if errEv.Current == nil || errEv.Current.GetString("db.conn") != goodValue {
		t.Error("the error event's Current does not hold the last good value")
	}

	// The last good value stays; the status says why.
	checkKept := func(when string) {
		t.Helper()
		c := p.Viper()
		if got := c.GetString("db.conn"); got != goodValue {
			t.Errorf("%s: db.conn = %q, want the last good value", when, got)
		}
		if c.GetInt("db.pool") != 10 {
			t.Errorf("%s: sibling db.pool lost: %v", when, c.Get("db.pool"))
		}
		st := statusOf(t, p, "db.conn")
		if st.Status != tc.want || st.Reason == "" || st.Version != v1 {
			t.Errorf("%s: status = %+v, want %s with a reason, serving version %s", when, st, tc.want, v1)
		}
	}
	checkKept("after the error event")

	// Retries keep coming, spaced by (at least) the back-off. A slow row's attempt lasts
	// seconds (azcore's own retries within it), so one retry is enough to see.
	need := 2
	if tc.fast {
		// With the cap (200 ms) ten attempts take at most ~1.5 s; uncapped doubling from
		// 20 ms would need more than 10 s.
		need = 10
	}
	var tries []time.Time
	eventually(t, eventDeadline, fmt.Sprintf("%d refresh attempts during the fault", need), func() bool {
		tries = rec.attempts(injected, isAttempt)
		return len(tries) >= need
	})
	if tc.fast {
		if span := tries[need-1].Sub(tries[0]); span > 5*time.Second {
			t.Errorf("%d attempts took %v: the back-off is not capped at %v", need, span, faultRetryMax)
		}
	}
	for i := 1; i < len(tries); i++ {
		// Attempt i (counting from 1) is at least the i-th consecutive failure, and the wait
		// after failure n is at least half of min(min<<(n-1), max) (equal jitter).
		lower := min(faultRetryMin<<(i-1), faultRetryMax) / 2
		lower = max(lower, tc.minGap)
		if gap := tries[i].Sub(tries[i-1]); gap < lower {
			t.Errorf("attempt %d came %v after the previous one, want at least %v (gaps: %v)", i+1, gap, lower, gaps(tries))
		}
	}
	checkKept("after the retries")

	newVersion, newValue := tc.heal(env)
	recEv, recAt := waitEventFrom(t, evs, errAt+1, "Recovered", func(e viperkv.Event) bool {
		return isConn(e) && e.Kind == viperkv.EventRecovered
	})
	if recEv.Status != viperkv.StatusResolved || recEv.Err != nil || !slices.Equal(recEv.Keys, []string{"db.conn"}) {
		t.Errorf("recovered event = %v", recEv)
	}
	want, wantVersion := goodValue, v1
	if newVersion != "" {
		want, wantVersion = newValue, newVersion
		ch, chAt := waitEventFrom(t, evs, errAt+1, "Changed", func(e viperkv.Event) bool {
			return isConn(e) && e.Kind == viperkv.EventChanged
		})
		if ch.OldVersion != v1 || ch.NewVersion != newVersion {
			t.Errorf("changed event = %v, want %s -> %s", ch, v1, newVersion)
		}
		if chAt < recAt {
			t.Errorf("Changed (#%d) came before Recovered (#%d)", chAt, recAt)
		}
		if ch.Previous.GetString("db.conn") != goodValue || ch.Current.GetString("db.conn") != newValue {
			t.Error("changed event's Previous/Current do not hold the old and new values")
		}
	}
	if got := p.GetString("db.conn"); got != want {
		t.Errorf("db.conn = %q after recovery, want %q", got, want)
	}
	if st := statusOf(t, p, "db.conn"); st.Status != viperkv.StatusResolved || st.Reason != "" || st.Version != wantVersion {
		t.Errorf("status after recovery = %+v, want Resolved at %s", st, wantVersion)
	}

	// One error event for the whole fault: status transitions only.
	n := 0
	for _, e := range evs.all() {
		if isConn(e) && e.Kind == viperkv.EventError {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d error events for one fault, want 1: %v", n, evs.all())
	}
	t.Logf("%d attempts during the fault, gaps %v", len(tries), gaps(tries))
}

func gaps(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]).Round(time.Millisecond))
	}
	return out
}

// configFile is a config file laid out one way, with the way it gets replaced.
type configFile struct {
	name  string
	setup func(t *testing.T, dir, content string) (path string, update func(content string))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// configFileWays are the ways a config file gets changed in place or replaced.
var configFileWays = []configFile{
	{"in-place write", func(t *testing.T, dir, content string) (string, func(string)) {
		path := filepath.Join(dir, "config.yaml")
		writeFile(t, path, content)
		return path, func(c string) { writeFile(t, path, c) }
	}},
	{"rename and replace", func(t *testing.T, dir, content string) (string, func(string)) {
		path := filepath.Join(dir, "config.yaml")
		writeFile(t, path, content)
		return path, func(c string) {
			tmp := filepath.Join(dir, ".config.yaml.swp")
			writeFile(t, tmp, c)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"remove and create", func(t *testing.T, dir, content string) (string, func(string)) {
		path := filepath.Join(dir, "config.yaml")
		writeFile(t, path, content)
		return path, func(c string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, c)
		}
	}},
	{"configmap symlink swap", func(t *testing.T, dir, content string) (string, func(string)) {
		// What the kubelet does: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>;
		// an update writes a new timestamped dir, points ..data_tmp at it, renames it over
		// ..data (atomic) and removes the old dir.
		gen := 0
		current := ""
		publish := func(c string) {
			gen++
			next := fmt.Sprintf("..2024_%02d", gen)
			if err := os.Mkdir(filepath.Join(dir, next), 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, next, "config.yaml"), c)
			if err := os.Symlink(next, filepath.Join(dir, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if current != "" {
				if err := os.RemoveAll(filepath.Join(dir, current)); err != nil {
					t.Fatal(err)
				}
			}
			current = next
		}
		publish(content)
		path := filepath.Join(dir, "config.yaml")
		if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
			t.Fatal(err)
		}
		return path, publish
	}},
}

// isFileChange tells the file's own Changed event.
func isFileChange(e viperkv.Event) bool {
	return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventChanged && e.Secret.Name == ""
}

// fileViper reads a config file the way an app does.
func fileViper(t *testing.T, path string) *viper.Viper {
	t.Helper()
	v := viper.New()
	v.SetConfigFile(path)
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConfigFileReload edits the config file every way it gets changed in practice. Each
// edit changes a plain value and adds a reference while keeping an existing one: the
// provider publishes the new configuration with one file event naming the changed keys,
// fetches only the new secret, and leaves the rest intact.
func TestConfigFileReload(t *testing.T) {
	srv := newEmulator(t)
	for i, way := range configFileWays {
		t.Run(way.name, func(t *testing.T) {
			vault := fmt.Sprintf("cfgvault%d", i)
			kv := srv.AddVault(vault)
			kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
			kv.SetSecret("conn", "conn-value")
			kv.SetSecret("api-key", "api-key-value")
			kv.SetSecret("extra", "extra-value")
			base := fmt.Sprintf(`
app:
  name: %%s
  pool: 10
db:
  conn: "@KeyVault(VaultName=%s;SecretName=conn)"
`, vault)
			apiKey := fmt.Sprintf("api:\n  key: \"@KeyVault(SecretUri=https://%s.vault.azure.net/secrets/api-key/)\"\n", vault)
			extra := fmt.Sprintf("extra: \"prefix-@KeyVault(VaultName=%s;SecretName=extra)\"\n", vault)

			path, update := way.setup(t, t.TempDir(), fmt.Sprintf(base, "v1"))
			p, err := load(t, srv, fileViper(t, path), viperkv.WithRefreshInterval(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			evs := collect(p)
			watch(t, p)
			kv.ResetCounters()

			steps := []struct {
				content  string
				keys     []string
				name     string
				newValue map[string]string
			}{
				{fmt.Sprintf(base, "v2") + apiKey, []string{"api.key", "app.name"}, "v2", map[string]string{"api.key": "api-key-value"}},
				{fmt.Sprintf(base, "v3") + apiKey + extra, []string{"app.name", "extra"}, "v3", map[string]string{"extra": "prefix-extra-value"}},
				// A reference removed: nothing to fetch.
				{fmt.Sprintf(base, "v4") + apiKey, []string{"app.name", "extra"}, "v4", nil},
			}
			wantGets := []int64{1, 2, 2}
			from := 0
			for n, step := range steps {
				update(step.content)
				// The file's event (Secret zero); a new secret's first version has one of its own.
				ev, at := waitEventFrom(t, evs, from, "file Changed", isFileChange)
				from = at + 1
				if !slices.Equal(ev.Keys, step.keys) {
					t.Errorf("edit %d: event keys %v, want %v", n+1, ev.Keys, step.keys)
				}
				if ev.Previous.GetString("app.name") == step.name || ev.Current.GetString("app.name") != step.name {
					t.Errorf("edit %d: Previous/Current app.name = %q/%q", n+1, ev.Previous.GetString("app.name"), ev.Current.GetString("app.name"))
				}
				c := p.Viper()
				if got := c.GetString("app.name"); got != step.name {
					t.Errorf("edit %d: app.name = %q, want %q", n+1, got, step.name)
				}
				for k, want := range step.newValue {
					if got := c.GetString(k); got != want {
						t.Errorf("edit %d: %s = %q, want %q", n+1, k, got, want)
					}
					if st := statusOf(t, p, k); st.Status != viperkv.StatusResolved {
						t.Errorf("edit %d: %s status %+v", n+1, k, st)
					}
				}
				if c.GetString("db.conn") != "conn-value" || c.GetInt("app.pool") != 10 {
					t.Errorf("edit %d: siblings changed: db.conn=%q app.pool=%v", n+1, c.GetString("db.conn"), c.Get("app.pool"))
				}
				// Only new secrets were fetched; db.conn (and earlier ones) were reused.
				if got := kv.Count(kvtest.OpGetSecret); got != wantGets[n] {
					t.Errorf("edit %d: %d secret GETs in all, want %d (one per new secret)", n+1, got, wantGets[n])
				}
			}
			if p.GetString("api.key") != "api-key-value" || p.Viper().IsSet("extra") {
				t.Errorf("after the last edit: api.key = %q, extra set: %v", p.GetString("api.key"), p.Viper().IsSet("extra"))
			}
			for _, e := range evs.all() {
				// A removed file may be seen (and reported) between remove and create.
				if e.Kind == viperkv.EventError && way.name != "remove and create" {
					t.Errorf("unexpected error event: %v", e)
				}
			}
		})
	}

	t.Run("unparsable file", func(t *testing.T) {
		kv := srv.AddVault("cfgvaultbad")
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
		kv.SetSecret("conn", "conn-value")
		kv.SetSecret("fixed", "fixed-value")
		good := "app:\n  name: v1\n  pool: 10\ndb:\n  conn: \"@KeyVault(VaultName=cfgvaultbad;SecretName=conn)\"\n"
		path := filepath.Join(t.TempDir(), "config.yaml")
		writeFile(t, path, good)
		p, err := load(t, srv, fileViper(t, path), viperkv.WithRefreshInterval(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		evs := collect(p)
		watch(t, p)

		writeFile(t, path, "app:\n  name: [v2\n  pool: 10\n") // unclosed flow sequence
		ev, at := waitEventFrom(t, evs, 0, "file Error", func(e viperkv.Event) bool {
			return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventError
		})
		if ev.Err == nil || !strings.Contains(ev.Err.Error(), "config.yaml") {
			t.Errorf("error event Err = %v, want it to name the file", ev.Err)
		}
		c := p.Viper()
		if c.GetString("app.name") != "v1" || c.GetInt("app.pool") != 10 || c.GetString("db.conn") != "conn-value" {
			t.Errorf("last good configuration not kept: %v", p.MaskedSettings())
		}
		if st := statusOf(t, p, "db.conn"); st.Status != viperkv.StatusResolved {
			t.Errorf("db.conn status %+v after a parse error", st)
		}

		// Watching goes on: the fixed file is picked up.
		writeFile(t, path, good+"fixed: \"@KeyVault(VaultName=cfgvaultbad;SecretName=fixed)\"\n")
		ch, _ := waitEventFrom(t, evs, at+1, "file Changed", isFileChange)
		if !slices.Equal(ch.Keys, []string{"fixed"}) {
			t.Errorf("changed keys after the fix = %v, want [fixed]", ch.Keys)
		}
		if p.GetString("fixed") != "fixed-value" || p.GetString("app.name") != "v1" {
			t.Errorf("after the fix: fixed=%q app.name=%q", p.GetString("fixed"), p.GetString("app.name"))
		}
		n := 0
		for _, e := range evs.all() {
			if e.Kind == viperkv.EventError {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d error events for one bad file, want 1: %v", n, evs.all())
		}
	})
}

func countEvents(evs []viperkv.Event, ok func(viperkv.Event) bool) int {
	n := 0
	for _, e := range evs {
		if ok(e) {
			n++
		}
	}
	return n
}

// TestExpiry covers exp and nbf: one near-expiry warning per version, a status (and the
// value kept) once the version in use expires, and a not-yet-valid version applied only
// when its nbf passes.
func TestExpiry(t *testing.T) {
	// One server, a vault per subtest, run at the same time: they mostly wait for the
	// clock, and t.Parallel is not allowed next to newEmulator's t.Setenv.
	srv := newEmulator(t)
	var wg sync.WaitGroup
	defer wg.Wait()
	run := func(name string, f func(t *testing.T)) { wg.Go(func() { t.Run(name, f) }) }

	run("near expiry announced once per version", func(t *testing.T) {
		kv := srv.AddVault("expvault1")
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
		exp := time.Now().Add(time.Hour).Truncate(time.Second)
		v1 := kv.SetSecret("soon", "soon-v1", kvtest.WithExpires(exp))
		kv.SetSecret("later", "later-v1", kvtest.WithExpires(time.Now().Add(30*24*time.Hour)))
		kv.SetSecret("never", "never-v1")
		p, err := load(t, srv, yamlViper(t, `
near: "@KeyVault(VaultName=expvault1;SecretName=soon)"
far: "@KeyVault(VaultName=expvault1;SecretName=later)"
none: "@KeyVault(VaultName=expvault1;SecretName=never)"
`), viperkv.WithRefreshInterval(100*time.Millisecond), viperkv.WithExpiryWarning(2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		evs := collect(p)
		kv.ResetCounters()
		watch(t, p)

		isNear := func(e viperkv.Event) bool { return e.Kind == viperkv.EventNearExpiry }
		ev, _ := waitEventFrom(t, evs, 0, "NearExpiry", isNear)
		if ev.Secret.Name != "soon" || ev.NewVersion != v1 || !ev.Expires.Equal(exp) || !slices.Equal(ev.Keys, []string{"near"}) {
			t.Errorf("near-expiry event = %v (expires %v), want soon %s expiring %v for key near", ev, ev.Expires, v1, exp)
		}
		// Several more cycles (three secrets a cycle) bring no second warning.
		eventually(t, eventDeadline, "6 refresh cycles", func() bool { return kv.Count(kvtest.OpGetSecret) >= 18 })
		if n := countEvents(evs.all(), isNear); n != 1 {
			t.Errorf("%d near-expiry events over several cycles, want 1: %v", n, evs.all())
		}
		if p.GetString("near") != "soon-v1" || statusOf(t, p, "near").Status != viperkv.StatusResolved {
			t.Errorf("a near-expiry secret must keep resolving: near=%q %+v", p.GetString("near"), statusOf(t, p, "near"))
		}

		// A new version that also expires soon is announced once more.
		exp2 := time.Now().Add(90 * time.Minute).Truncate(time.Second)
		v2 := kv.SetSecret("soon", "soon-v2", kvtest.WithExpires(exp2))
		ev2, _ := waitEventFrom(t, evs, 0, "NearExpiry for v2", func(e viperkv.Event) bool { return isNear(e) && e.NewVersion == v2 })
		if !ev2.Expires.Equal(exp2) {
			t.Errorf("second near-expiry event expires %v, want %v", ev2.Expires, exp2)
		}
		base := kv.Count(kvtest.OpGetSecret)
		eventually(t, eventDeadline, "6 more refresh cycles", func() bool { return kv.Count(kvtest.OpGetSecret) >= base+18 })
		if n := countEvents(evs.all(), isNear); n != 2 {
			t.Errorf("%d near-expiry events for two versions, want 2: %v", n, evs.all())
		}
	})

	run("version in use expires", func(t *testing.T) {
		kv := srv.AddVault("expvault2")
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
		exp := time.Now().Add(3 * time.Second).Truncate(time.Second)
		v1 := kv.SetSecret("ttl", "ttl-v1", kvtest.WithExpires(exp))
		p, err := load(t, srv, yamlViper(t, "a:\n  ttl: \"@KeyVault(VaultName=expvault2;SecretName=ttl)\"\n  n: 1\n"),
			viperkv.WithRefreshInterval(100*time.Millisecond), viperkv.WithRetryBackoff(faultRetryMin, faultRetryMax))
		if err != nil {
			t.Fatal(err)
		}
		evs := collect(p)
		watch(t, p)

		isExpired := func(e viperkv.Event) bool {
			return e.Kind == viperkv.EventError && e.Status == viperkv.StatusSecretExpired
		}
		ev, at := waitEventFrom(t, evs, 0, "Error SecretExpired", isExpired)
		if time.Now().Before(exp) {
			t.Errorf("expired event before exp %v", exp)
		}
		if ev.Secret.Name != "ttl" || ev.OldVersion != v1 || !ev.Expires.Equal(exp) || !slices.Equal(ev.Keys, []string{"a.ttl"}) {
			t.Errorf("expired event = %v (expires %v), want ttl %s expiring %v, keys [a.ttl]", ev, ev.Expires, v1, exp)
		}
		var re *viperkv.ReferenceError
		if !errors.As(ev.Err, &re) || re.Status != viperkv.StatusSecretExpired {
			t.Errorf("expired event Err = %v", ev.Err)
		}
		if got := p.GetString("a.ttl"); got != "ttl-v1" {
			t.Errorf("a.ttl = %q after expiry, want the value kept", got)
		}
		if st := statusOf(t, p, "a.ttl"); st.Status != viperkv.StatusSecretExpired || st.Reason == "" || st.Version != v1 {
			t.Errorf("status after expiry = %+v", st)
		}
		// Later cycles do not repeat the event.
		kv.ResetCounters()
		eventually(t, eventDeadline, "several more fetches", func() bool { return kv.Count(kvtest.OpGetSecret) >= 4 })
		if n := countEvents(evs.all(), isExpired); n != 1 {
			t.Errorf("%d SecretExpired events, want 1: %v", n, evs.all())
		}

		// A new version without exp ends it.
		v2 := kv.SetSecret("ttl", "ttl-v2")
		waitEventFrom(t, evs, at+1, "Recovered", func(e viperkv.Event) bool { return e.Kind == viperkv.EventRecovered })
		ch, _ := waitEventFrom(t, evs, at+1, "Changed", func(e viperkv.Event) bool { return e.Kind == viperkv.EventChanged })
		if ch.OldVersion != v1 || ch.NewVersion != v2 {
			t.Errorf("changed event = %v", ch)
		}
		if st := statusOf(t, p, "a.ttl"); p.GetString("a.ttl") != "ttl-v2" || st.Status != viperkv.StatusResolved || st.Version != v2 {
			t.Errorf("after rotation: a.ttl=%q %+v", p.GetString("a.ttl"), st)
		}
	})

	// A version whose nbf is in the future is not served until nbf; then it is, found by
	// polling or, with a long interval, by a poll scheduled for its nbf.
	for i, tc := range []struct {
		name     string
		interval time.Duration
		refresh  bool // discover the new version with Refresh rather than a poll
	}{
		{"not before, polled", 100 * time.Millisecond, false},
		{"not before, found by Refresh, long interval", time.Hour, true},
	} {
		run(tc.name, func(t *testing.T) {
			vault := fmt.Sprintf("expvault-nbf%d", i)
			kv := srv.AddVault(vault)
			kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
			v1 := kv.SetSecret("act", "act-v1")
			p, err := load(t, srv, yamlViper(t, fmt.Sprintf("act: \"@KeyVault(VaultName=%s;SecretName=act)\"\nplain: x\n", vault)),
				viperkv.WithRefreshInterval(tc.interval))
			if err != nil {
				t.Fatal(err)
			}
			evs := collect(p)
			watch(t, p)

			nbf := time.Now().Add(3 * time.Second).Truncate(time.Second)
			v2 := kv.SetSecret("act", "act-v2", kvtest.WithNotBefore(nbf))
			kv.ResetCounters()
			if tc.refresh {
				// Let the poll loop go to sleep for its interval first: the nbf-timed poll
				// must come from Refresh re-planning it.
				time.Sleep(300 * time.Millisecond)
				if err := p.Refresh(context.Background()); err != nil {
					t.Fatalf("Refresh with a not-yet-valid newest version: %v", err)
				}
			} else {
				eventually(t, eventDeadline, "two polls", func() bool { return kv.Count(kvtest.OpGetSecret) >= 2 })
			}
			if time.Now().Before(nbf) {
				st := statusOf(t, p, "act")
				if got := p.GetString("act"); got != "act-v1" || st.Status != viperkv.StatusResolved || st.Version != v1 {
					t.Errorf("before nbf: act=%q %+v, want act-v1 still served and Resolved", got, st)
				}
				if n := len(evs.all()); n != 0 {
					t.Errorf("events before nbf: %v", evs.all())
				}
			} else {
				t.Log("nbf passed before the check (slow machine)")
			}
			ev, _ := waitEventFrom(t, evs, 0, "Changed", func(e viperkv.Event) bool { return e.Kind == viperkv.EventChanged })
			if ev.OldVersion != v1 || ev.NewVersion != v2 {
				t.Errorf("changed event = %v, want %s -> %s", ev, v1, v2)
			}
			if ev.Time.Before(nbf) {
				t.Errorf("version applied at %v, before its nbf %v", ev.Time, nbf)
			}
			if late := ev.Time.Sub(nbf); late > 2*time.Second {
				t.Errorf("version applied %v after its nbf", late)
			}
			if p.GetString("act") != "act-v2" || p.GetString("plain") != "x" {
				t.Errorf("after nbf: act=%q plain=%q", p.GetString("act"), p.GetString("plain"))
			}
			if n := countEvents(evs.all(), func(e viperkv.Event) bool { return e.Kind == viperkv.EventError }); n != 0 {
				t.Errorf("error events for a not-yet-valid version: %v", evs.all())
			}
		})
	}
}

// TestWatcherIsolation registers a watcher that never returns and one that panics on every
// event: a third still gets every event, in order and promptly, and refresh goes on.
func TestWatcherIsolation(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	v0 := kv.SetSecret("rot", "rot-0")
	p, err := load(t, srv, yamlViper(t, "rot: \"@KeyVault(VaultName=myvault;SecretName=rot)\"\nplain: x\n"),
		viperkv.WithRefreshInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	var blocked atomic.Int64
	p.OnChange(func(viperkv.Event) {
		blocked.Add(1)
		<-release
	})
	t.Cleanup(func() { close(release) }) // runs after Watch has stopped (cleanups run last-in first-out)
	var panics atomic.Int64
	p.OnChange(func(viperkv.Event) {
		panics.Add(1)
		panic("watcher bug")
	})
	type received struct {
		ev viperkv.Event
		at time.Time
	}
	var mu sync.Mutex
	var got []received
	notify := make(chan struct{}, 1)
	p.OnChange(func(e viperkv.Event) {
		mu.Lock()
		got = append(got, received{e, time.Now()})
		mu.Unlock()
		select {
		case notify <- struct{}{}:
		default:
		}
	})
	watch(t, p)

	waitVersion := func(version string) received {
		t.Helper()
		deadline := time.After(eventDeadline)
		for {
			mu.Lock()
			for _, r := range got {
				if r.ev.Kind == viperkv.EventChanged && r.ev.NewVersion == version {
					mu.Unlock()
					return r
				}
			}
			mu.Unlock()
			select {
			case <-notify:
			case <-deadline:
				t.Fatalf("no Changed event for version %s", version)
			}
		}
	}

	// Rotations found by polling: each is delivered promptly (within the interval plus
	// jitter and one request, with room for a loaded CI machine).
	versions := []string{v0}
	for i := 1; i <= 4; i++ {
		set := time.Now()
		v := kv.SetSecret("rot", fmt.Sprintf("rot-%d", i))
		versions = append(versions, v)
		r := waitVersion(v)
		if lat := r.at.Sub(set); lat > 2*time.Second {
			t.Errorf("rotation %d delivered after %v", i, lat)
		}
		if p.GetString("rot") != fmt.Sprintf("rot-%d", i) {
			t.Errorf("rotation %d: rot = %q", i, p.GetString("rot"))
		}
	}
	// A burst of rotations applied by Refresh, faster than any watcher reacts.
	for i := 5; i <= 24; i++ {
		versions = append(versions, kv.SetSecret("rot", fmt.Sprintf("rot-%d", i)))
		if err := p.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	waitVersion(versions[len(versions)-1])
	if p.GetString("rot") != "rot-24" || p.GetString("plain") != "x" {
		t.Errorf("after the burst: rot=%q plain=%q", p.GetString("rot"), p.GetString("plain"))
	}

	mu.Lock()
	delivered := slices.Clone(got)
	mu.Unlock()
	var seen []string
	for _, r := range delivered {
		if r.ev.Kind != viperkv.EventChanged {
			t.Errorf("unexpected event %v", r.ev)
			continue
		}
		if len(seen) > 0 && r.ev.OldVersion != seen[len(seen)-1] {
			t.Errorf("event %v does not follow version %s", r.ev, seen[len(seen)-1])
		}
		seen = append(seen, r.ev.NewVersion)
	}
	if !slices.Equal(seen, versions[1:]) {
		t.Errorf("versions delivered in this order:\n%v\nwant every rotation once, in order:\n%v", seen, versions[1:])
	}
	// Each watcher drains its own queue: the panicking one may still be catching up.
	eventually(t, eventDeadline, "the panicking watcher to be called once per event", func() bool {
		return panics.Load() >= int64(len(versions)-1)
	})
	if n := panics.Load(); n != int64(len(versions)-1) {
		t.Errorf("the panicking watcher was called %d times, want %d (once per event despite panicking)", n, len(versions)-1)
	}
	if n := blocked.Load(); n != 1 {
		t.Errorf("the blocked watcher was called %d times, want 1 (it never returned)", n)
	}
}

// goroutineRE splits a runtime.Stack dump into goroutines.
var goroutineRE = regexp.MustCompile(`(?m)^goroutine (\d+) \[`)

// providerGoroutines returns the stacks of goroutines running code of package viperkv or
// fsnotify, by goroutine id.
func providerGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	locs := goroutineRE.FindAllSubmatchIndex(buf, -1)
	for i, loc := range locs {
		end := len(buf)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		stack := string(buf[loc[0]:end])
		// "github.com/viperkv/viperkv." is the package itself, not viperkv_test or kvtest.
		if strings.Contains(stack, "github.com/viperkv/viperkv.") || strings.Contains(stack, "github.com/fsnotify/fsnotify") {
			out[string(buf[loc[2]:loc[3]])] = stack
		}
	}
	return out
}

// TestWatchStopsEveryGoroutine runs Watch with everything it starts busy (a config file
// watcher, a watcher with events, a fetch in flight against a hanging endpoint), cancels
// it, and checks that no goroutine of the provider is left.
func TestWatchStopsEveryGoroutine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		identity bool
	}{
		{"vault request in flight", false},
		{"token request in flight", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := providerGoroutines()
			var srv *kvtest.Server
			opts := []viperkv.Option{
				viperkv.WithRefreshInterval(100 * time.Millisecond),
				viperkv.WithRetryBackoff(faultRetryMin, faultRetryMax),
				viperkv.WithFetchTimeout(time.Minute), // the hanging fetch is still in flight at cancel
			}
			id := kvtest.Identity{}
			if tc.identity {
				srv = newEmulatorWith(t, kvtest.WithTokenLifetime(2*time.Second))
				id = newIdentity(t, srv)
				opts = append(opts, viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID)))
			} else {
				srv = newEmulator(t)
				id = srv.SystemIdentity()
			}
			kv := srv.AddVault("myvault")
			kv.Grant(id, kvtest.RoleSecretsUser)
			kv.SetSecret("s", "s-1")
			rec := &recordingTransport{next: srv.Client()}
			opts = append(opts, viperkv.WithTransport(rec))

			path := filepath.Join(t.TempDir(), "config.yaml")
			writeFile(t, path, "s: \"@KeyVault(VaultName=myvault;SecretName=s)\"\nname: a\n")
			p, err := load(t, srv, fileViper(t, path), opts...)
			if err != nil {
				t.Fatal(err)
			}
			evs := collect(p)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Watch(ctx) }()

			kv.SetSecret("s", "s-2")
			waitEventFrom(t, evs, 0, "Changed (poll)", func(e viperkv.Event) bool { return e.Source == viperkv.SourcePoll })
			writeFile(t, path, "s: \"@KeyVault(VaultName=myvault;SecretName=s)\"\nname: b\n")
			waitEventFrom(t, evs, 0, "Changed (file)", func(e viperkv.Event) bool { return e.Source == viperkv.SourceFile })

			if tc.identity {
				srv.InjectIdentityFault(kvtest.Fault{Hang: true})
			} else {
				kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Hang: true})
			}
			eventually(t, eventDeadline, "a request to hang", func() bool {
				return rec.pending(200*time.Millisecond, func(r sentRequest) bool {
					if tc.identity {
						return strings.HasSuffix(r.path, "/msi/token")
					}
					return r.auth && strings.HasPrefix(r.path, "/secrets/s")
				})
			})

			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Watch returned %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not return within 5 s of cancel")
			}

			var left map[string]string
			deadline := time.Now().Add(3 * time.Second)
			for {
				left = providerGoroutines()
				for id := range before {
					delete(left, id)
				}
				if len(left) == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, stack := range left {
				t.Errorf("goroutine left after Watch returned:\n%s", stack)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger writing from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSentinelNeverLeaksDuringWatch sends a recognisable secret value through rotations,
// refresh failures and recoveries, file reloads, a parse error, a near-expiry warning and a
// watcher that panics with the value: it must never appear in an event's text or error, a
// status reason, a Refresh error, or a log line (at Debug level).
func TestSentinelNeverLeaksDuringWatch(t *testing.T) {
	sentinel := "SENTINEL-" + randomSuffix()
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("pw", sentinel+"-1")
	kv.SetSecret("other", sentinel+"-other")
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	doc := "db:\n  pw: \"@KeyVault(VaultName=myvault;SecretName=pw)\"\n  dsn: \"user=app password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/pw/) sslmode=require\"\n  pool: 5\n"
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, doc)
	p, err := load(t, srv, fileViper(t, path), viperkv.WithLogger(logger),
		viperkv.WithRefreshInterval(100*time.Millisecond), viperkv.WithRetryBackoff(faultRetryMin, faultRetryMax),
		viperkv.WithExpiryWarning(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(p)
	p.OnChange(func(e viperkv.Event) {
		if e.Current != nil {
			panic("watcher bug with value " + e.Current.GetString("db.pw"))
		}
	})
	watch(t, p)
	var texts []string
	addStatus := func() {
		for _, st := range p.Status() {
			texts = append(texts, fmt.Sprintf("%+v", st))
		}
	}
	addStatus()

	kind := func(k viperkv.EventKind) func(viperkv.Event) bool {
		return func(e viperkv.Event) bool { return e.Kind == k }
	}
	// Rotation, then one that expires within the warning window.
	kv.SetSecret("pw", sentinel+"-2")
	_, at := waitEventFrom(t, evs, 0, "Changed", kind(viperkv.EventChanged))
	kv.SetSecret("pw", sentinel+"-3", kvtest.WithExpires(time.Now().Add(30*time.Minute)))
	_, at = waitEventFrom(t, evs, at+1, "NearExpiry", kind(viperkv.EventNearExpiry))
	// A refresh failure and recovery.
	kv.Revoke(srv.SystemIdentity())
	_, at = waitEventFrom(t, evs, at+1, "Error", kind(viperkv.EventError))
	addStatus()
	if err := p.Refresh(context.Background()); err == nil {
		t.Error("Refresh succeeded while access is revoked")
	} else {
		texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))
	}
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	_, at = waitEventFrom(t, evs, at+1, "Recovered", kind(viperkv.EventRecovered))
	// File reloads: a new reference, then a file that does not parse.
	writeFile(t, path, doc+"other: \"@KeyVault(VaultName=myvault;SecretName=other)\"\n")
	_, at = waitEventFrom(t, evs, at+1, "file Changed", func(e viperkv.Event) bool {
		return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventChanged
	})
	writeFile(t, path, "db: [\n  unclosed\n")
	waitEventFrom(t, evs, at+1, "file Error", func(e viperkv.Event) bool {
		return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventError
	})
	addStatus()
	if got := p.GetString("other"); got != sentinel+"-other" || p.GetString("db.pw") != sentinel+"-3" {
		t.Fatalf("values not resolved as expected: other=%q", got)
	}

	all := evs.all()
	if len(all) < 6 {
		t.Fatalf("only %d events: the check below would prove little", len(all))
	}
	for _, e := range all {
		texts = append(texts, e.String(), strings.Join(e.Keys, ","), e.Secret.String(), e.OldVersion, e.NewVersion)
		if e.Err != nil {
			texts = append(texts, e.Err.Error(), fmt.Sprintf("%+v", e.Err))
		}
	}
	texts = append(texts, fmt.Sprint(p.MaskedSettings()))
	logText := logs.String()
	if !strings.Contains(logText, "db.pw") || !strings.Contains(logText, "panicked") {
		t.Fatalf("the logs do not mention db.pw and the watcher's panic; the check would prove nothing:\n%s", logText)
	}
	for _, text := range append(texts, strings.Split(logText, "\n")...) {
		if strings.Contains(text, sentinel) {
			t.Errorf("the secret value leaks: %s", text)
		}
	}
}
