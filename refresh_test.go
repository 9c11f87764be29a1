package viperkv_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// The end-to-end tests of keeping values current: the real azidentity and azsecrets
// against the emulator, in real time, for what only real HTTP or a real file system shows.
// They assert outcomes, never timings; hangGuard only stops a test that would hang. The
// logic (schedule, back-off, expiry, merge, events) is tested under simulated time in
// logic_test.go.

// hangGuard bounds every wait of the end-to-end tests: far beyond what any of them needs,
// so a slow machine never fails them, and a hang still ends.
const hangGuard = 30 * time.Second

// events collects a provider's events for a test.
type events struct {
	mu  sync.Mutex
	evs []viperkv.Event
	ch  chan struct{}
}

func collect(p *viperkv.Provider) *events {
	e := &events{ch: make(chan struct{}, 1)}
	p.OnChange(func(ev viperkv.Event) {
		e.mu.Lock()
		e.evs = append(e.evs, ev)
		e.mu.Unlock()
		select {
		case e.ch <- struct{}{}:
		default:
		}
	})
	return e
}

func (e *events) all() []viperkv.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]viperkv.Event(nil), e.evs...)
}

// waitFor waits for an event at index from or later matching ok, and returns it with its
// index.
func (e *events) waitFor(t *testing.T, from int, what string, ok func(viperkv.Event) bool) (viperkv.Event, int) {
	t.Helper()
	deadline := time.After(hangGuard)
	for {
		all := e.all()
		for i := from; i < len(all); i++ {
			if ok(all[i]) {
				return all[i], i
			}
		}
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("no %s event within %v; got %v", what, hangGuard, all[min(from, len(all)):])
		}
	}
}

func count(evs []viperkv.Event, ok func(viperkv.Event) bool) int {
	n := 0
	for _, e := range evs {
		if ok(e) {
			n++
		}
	}
	return n
}

func kind(k viperkv.EventKind) func(viperkv.Event) bool {
	return func(e viperkv.Event) bool { return e.Kind == k }
}

// watch runs p.Watch until the test ends and checks that it returns the context's error.
func watch(t *testing.T, p *viperkv.Provider) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		case <-time.After(hangGuard):
			t.Error("Watch did not return after its context was cancelled")
		}
	})
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
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

// TestSentinelNeverLeaksDuringWatch sends a recognisable secret value through rotations,
// refresh failures and recoveries, file reloads, a parse error, a near-expiry warning and a
// watcher that panics with the value: it must never appear in an event's text or error, a
// status reason, a Refresh error, or a log line (at Debug level). Real time, because the
// failures must come from real vault answers through azsecrets and the file events from
// fsnotify; TestEventsCarryNoValues checks the same under simulated time.
func TestSentinelNeverLeaksDuringWatch(t *testing.T) {
	sentinel := "SENTINEL-" + randomSuffix()
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("pw", sentinel+"-1")
	kv.SetSecret("other", sentinel+"-other")
	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	doc := "db:\n  pw: \"@KeyVault(VaultName=myvault;SecretName=pw)\"\n  dsn: \"user=app password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/pw/) sslmode=require\"\n  pool: 5\n"
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, doc)
	p, err := load(t, srv, fileViper(t, path), viperkv.WithLogger(logger),
		viperkv.WithRefreshInterval(100*time.Millisecond), viperkv.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond),
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
	var leak viperkv.LeakCheck
	leak.Status(p)

	// Rotation, then one that expires within the warning window.
	kv.SetSecret("pw", sentinel+"-2")
	_, at := evs.waitFor(t, 0, "Changed", kind(viperkv.EventChanged))
	kv.SetSecret("pw", sentinel+"-3", kvtest.WithExpires(time.Now().Add(30*time.Minute)))
	_, at = evs.waitFor(t, at+1, "NearExpiry", kind(viperkv.EventNearExpiry))
	// A refresh failure and recovery.
	kv.Revoke(srv.SystemIdentity())
	_, at = evs.waitFor(t, at+1, "Error", kind(viperkv.EventError))
	leak.Status(p)
	err = p.Refresh(context.Background())
	if err == nil {
		t.Error("Refresh succeeded while access is revoked")
	}
	leak.Err(err)
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	_, at = evs.waitFor(t, at+1, "Recovered", kind(viperkv.EventRecovered))
	// File reloads: a new reference, then a file that does not parse.
	writeFile(t, path, doc+"other: \"@KeyVault(VaultName=myvault;SecretName=other)\"\n")
	_, at = evs.waitFor(t, at+1, "file Changed", func(e viperkv.Event) bool {
		return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventChanged
	})
	writeFile(t, path, "db: [\n  unclosed\n")
	evs.waitFor(t, at+1, "file Error", func(e viperkv.Event) bool {
		return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventError
	})
	leak.Status(p)
	if got := p.GetString("other"); got != sentinel+"-other" || p.GetString("db.pw") != sentinel+"-3" {
		t.Fatalf("values not resolved as expected: other=%q", got)
	}
	leak.Events(evs.all())
	leak.Check(t, p, sentinel, logs.String(), "db.pw", "panicked")
}
