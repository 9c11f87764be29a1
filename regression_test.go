package viperkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/viperkv/viperkv/internal/logtest"
)

// Regression tests for the defects of issue #11, each of which failed on the code before
// the redesign (9c5497b). Defect 1 (the source Viper written on a file reload) needs
// fsnotify and lives in filewatch_test.go.

// Defect 2: a second Load with a cancelled context panicked. It must return the context's
// error, keep every value held, and report a reference it could not fetch.
func TestLoadAgainWithCancelledContext(t *testing.T) {
	src := newFakeSource()
	src.set("myvault", "conn", "conn-v1")
	src.set("myvault", "extra", "extra-v1")
	v := YAMLViper(t, "db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\n")
	p := newFakeProvider(t, src, v)
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	v.Set("extra", "@KeyVault(VaultName=myvault;SecretName=extra)")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.Load(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Load with a cancelled context: %v, want an error wrapping context.Canceled", err)
	}
	var le *LoadError
	if !errors.As(err, &le) || len(le.Failed) != 1 || le.Failed[0].Key != "extra" || le.Failed[0].Status != StatusFetchTimedOut {
		t.Errorf("Load error %v, want a *LoadError naming only extra (FetchTimedOut)", err)
	}
	if st := StatusOf(t, p, "db.conn"); p.GetString("db.conn") != "conn-v1" || st.Status != StatusResolved {
		t.Errorf("after the cancelled Load: db.conn = %q, status %+v; want the value held", p.GetString("db.conn"), st)
	}
}

// Defect 3: a second Load dropped new settings when no secret changed. It must publish
// what it read: a changed plain value, and a new key naming a secret already fetched.
func TestLoadAgainPublishesNewSettings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		src.set("myvault", "conn", "conn-v1")
		v := YAMLViper(t, "plain: one\ndb:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\n")
		p := newFakeProvider(t, src, v)
		if err := p.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec := record(p)
		v.Set("plain", "two")
		v.Set("again", "@KeyVault(VaultName=myvault;SecretName=conn)")
		if err := p.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := p.GetString("plain"); got != "two" {
			t.Errorf("plain = %q after v.Set and Load, want two", got)
		}
		if got := p.GetString("again"); got != "conn-v1" {
			t.Errorf("again = %q, want the secret already fetched for db.conn", got)
		}
		if ev := rec.only(t, EventChanged); !slices.Equal(ev.Keys, []string{"again", "plain"}) || ev.Source != SourceRefresh {
			t.Errorf("changed event = %v, want keys again and plain", ev)
		}
	})
}

// Defect 4: Load never woke the poll loop, so a reference it added while Watch ran waited
// for the pending timer (24 h when nothing was scheduled). It must be polled on the interval.
func TestLoadWakesThePollLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 5 * time.Minute
		src := newFakeSource()
		v1 := src.set("myvault", "new", "new-v1")
		v := YAMLViper(t, "plain: one\n")
		p := newFakeProvider(t, src, v, WithRefreshInterval(interval))
		if err := p.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec := record(p)
		startWatch(t, p)
		time.Sleep(time.Minute) // the poll loop sleeps: nothing to poll

		v.Set("new", "@KeyVault(VaultName=myvault;SecretName=new)")
		if err := p.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		loaded := time.Now()
		v2 := src.set("myvault", "new", "new-v2")
		time.Sleep(2 * interval)
		synctest.Wait()
		var ch Event
		for _, e := range rec.all(EventChanged) {
			if e.Secret.Name == "new" {
				ch = e
			}
		}
		if ch.OldVersion != v1 || ch.NewVersion != v2 {
			t.Fatalf("no rotation of the reference Load added within two intervals; events %v", rec.all())
		}
		if d := ch.Time.Sub(loaded); !within(d, frac(interval, 0.9), frac(interval, 1.1)) {
			t.Errorf("the new reference was polled %v after Load, want the interval %v +/-10%%", d, interval)
		}
	})
}

// Defect 6: a file edit that made a reference malformed or disallowed was silent. Each such
// key must raise an Error event naming the key, the status and the reason, log it at Warn,
// keep its last good value, and show the reference as written in Status.
func TestFileEditMakingAReferenceMalformed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		src.set("myvault", "conn", "conn-v1")
		var logs logtest.Buffer
		good := "db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\nname: v1\n"
		p := loadFake(t, src, good, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		rec := record(p)

		const malformed = "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/)"
		const disallowed = "@KeyVault(SecretUri=https://evil.example.com/secrets/conn/)"
		edited := fmt.Sprintf("db:\n  conn: %q\nname: v1\nextra: \"x=%s;\"\n", malformed, disallowed)
		if err := p.loadFile(context.Background(), []byte(edited)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()

		want := map[string]struct {
			status  Status
			written string
		}{
			"db.conn": {StatusInvalidSyntax, malformed},
			"extra":   {StatusHostNotAllowed, disallowed},
		}
		errs := rec.all(EventError)
		if len(errs) != len(want) {
			t.Fatalf("error events %v, want one per key made malformed or disallowed (%d)", errs, len(want))
		}
		for _, ev := range errs {
			if len(ev.Keys) != 1 {
				t.Errorf("error event %v names keys %v, want one", ev, ev.Keys)
				continue
			}
			key := ev.Keys[0]
			w, ok := want[key]
			var re *ReferenceError
			if !ok || ev.Source != SourceFile || ev.Status != w.status || !errors.As(ev.Err, &re) || re.Status != w.status || re.Reason == "" {
				t.Errorf("error event %v (Err %#v), want for key %s status %s with a reason", ev, ev.Err, key, w.status)
				continue
			}
			if msg := ev.Err.Error(); !strings.Contains(msg, strconv.Quote(key)) || !strings.Contains(msg, string(w.status)) || !strings.Contains(msg, re.Reason) {
				t.Errorf("error %q does not name the key %s, the status and the reason", msg, key)
			}
			st := StatusOf(t, p, key)
			if st.Status != w.status || st.Written != w.written || st.Reason != re.Reason {
				t.Errorf("status of %s = %+v, want %s, written as %s", key, st, w.status, w.written)
			}
			logged := false
			for line := range strings.SplitSeq(logs.String(), "\n") {
				logged = logged || strings.Contains(line, "level=WARN") && strings.Contains(line, key) && strings.Contains(line, string(w.status))
			}
			if !logged {
				t.Errorf("no Warn log line names %s and %s:\n%s", key, w.status, logs.String())
			}
		}
		if got := p.GetString("db.conn"); got != "conn-v1" {
			t.Errorf("db.conn = %q after its reference was broken, want the last good value", got)
		}
		if p.Viper().IsSet("extra") {
			t.Errorf("extra = %q: a disallowed reference must not become a value", p.GetString("extra"))
		}

		// The same broken file again is not announced again; fixing it recovers the key.
		if err := p.loadFile(context.Background(), []byte(edited+"name2: v2\n")); err != nil {
			t.Fatal(err)
		}
		if err := p.loadFile(context.Background(), []byte(good)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := len(rec.all(EventError)); n != len(want) {
			t.Errorf("%d error events after the same breakage and a fix, want %d: %v", n, len(want), rec.all())
		}
		// Defect: restoring the file sent no event; a watcher that raised an alarm never
		// heard it cleared. Each key the fix cleared (db.conn fixed, extra gone) recovers.
		recovered := map[string]bool{}
		for _, e := range rec.all(EventRecovered) {
			if e.Source == SourceFile && len(e.Keys) == 1 && e.Status == StatusResolved {
				recovered[e.Keys[0]] = true
			}
		}
		if !recovered["db.conn"] || !recovered["extra"] || len(recovered) != 2 {
			t.Errorf("recovered events %v, want one for db.conn and one for extra", rec.all(EventRecovered))
		}
		if st := StatusOf(t, p, "db.conn"); st.Status != StatusResolved || p.GetString("db.conn") != "conn-v1" {
			t.Errorf("after the fix: db.conn = %q, status %+v", p.GetString("db.conn"), st)
		}
	})
}

// Defect 7: file error events were published without the update lock, so a watcher could
// see Current go backwards: an update published between the file error's read of the
// configuration and its publishing. Here a logger publishes a rotation at exactly that
// moment whenever the lock allows it, while rotations and file errors interleave: every
// watcher must see Current in version order.
func TestFileErrorEventsNeverGoBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { fileErrorEventsNeverGoBack(t) })
}

func fileErrorEventsNeverGoBack(t *testing.T) {
	const rounds = 50
	src := newFakeSource()
	src.set("myvault", "s", "gen-0")
	var p *Provider
	var gen atomic.Int64
	rotate := func() {
		src.set("myvault", "s", fmt.Sprintf("gen-%d", gen.Add(1)))
		if err := p.Refresh(context.Background()); err != nil {
			t.Error(err)
		}
	}
	var injected atomic.Int64
	logger := slog.New(handlerFunc(func(r slog.Record) {
		fileErr := false
		r.Attrs(func(a slog.Attr) bool {
			fileErr = fileErr || a.Key == "source" && a.Value.String() == string(SourceFile)
			return true
		})
		// A file error is being logged: if no update holds the lock, publish one now.
		if fileErr && p.updateMu.TryLock() {
			p.updateMu.Unlock()
			injected.Add(1)
			rotate()
		}
	}))
	p = loadFake(t, src, "s: \"@KeyVault(VaultName=myvault;SecretName=s)\"\n", WithLogger(logger))

	var mu sync.Mutex
	var seen int
	back := ""
	last := 0
	p.OnChange(func(e Event) {
		var g int
		if _, err := fmt.Sscanf(e.Current.GetString("s"), "gen-%d", &g); err != nil {
			t.Errorf("event %v: Current s = %q", e, e.Current.GetString("s"))
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		if g < last && back == "" {
			back = fmt.Sprintf("%v went back from generation %d to %d", e, last, g)
		}
		last = max(last, g)
	})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range rounds {
			p.fileError(&fileWatcher{path: "config.yaml"}, fmt.Errorf("config file config.yaml: edit %d does not parse", i))
		}
	})
	wg.Go(func() {
		for range rounds {
			rotate()
		}
	})
	wg.Wait()
	synctest.Wait() // every event delivered

	mu.Lock()
	defer mu.Unlock()
	if back != "" {
		t.Errorf("Current went backwards: %s (%d rotations published while a file error was being logged)", back, injected.Load())
	}
	if want := 2*rounds + int(injected.Load()); seen != want {
		t.Errorf("%d events, want %d (%d file errors, %d rotations)", seen, want, rounds, want-rounds)
	}
}

// handlerFunc is a slog.Handler that calls fn with every record.
type handlerFunc func(slog.Record)

func (h handlerFunc) Enabled(context.Context, slog.Level) bool { return true }
func (h handlerFunc) Handle(_ context.Context, r slog.Record) error {
	h(r)
	return nil
}
func (h handlerFunc) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h handlerFunc) WithGroup(string) slog.Handler      { return h }
