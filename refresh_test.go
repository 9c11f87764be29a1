package viperkv_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

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

// waitFor waits until an event matching ok arrives and returns it.
func (e *events) waitFor(t *testing.T, what string, ok func(viperkv.Event) bool) viperkv.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, ev := range e.all() {
			if ok(ev) {
				return ev
			}
		}
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("no %s event; got %v", what, e.all())
		}
	}
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
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context was cancelled")
		}
	})
}

func TestWatchPicksUpRotation(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	v1 := kv.SetSecret("db-conn", "conn-v1")
	pinned := kv.SetSecret("pinned", "pinned-v1")
	kv.SetSecret("pinned", "pinned-v2")

	v := yamlViper(t, fmt.Sprintf(`
db:
  conn: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)"
  dsn: "host=db password=@KeyVault(VaultName=myvault;SecretName=db-conn)"
  pool: 10
old: "@KeyVault(VaultName=myvault;SecretName=pinned;SecretVersion=%s)"
`, pinned))
	p, err := load(t, srv, v, viperkv.WithRefreshInterval(150*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(p)
	kv.ResetCounters()
	watch(t, p)

	// A few idle cycles: one GET per versionless secret per cycle, never the pinned one.
	time.Sleep(500 * time.Millisecond)
	gets := kv.Count(kvtest.OpGetSecret)
	if gets < 2 || gets > 5 {
		t.Errorf("%d GETs in ~3 cycles of 150 ms, want one per cycle for db-conn only", gets)
	}
	if n := len(evs.all()); n != 0 {
		t.Errorf("%d events without a rotation: %v", n, evs.all())
	}

	v2 := kv.SetSecret("db-conn", "conn-v2")
	ev := evs.waitFor(t, "Changed", func(e viperkv.Event) bool { return e.Kind == viperkv.EventChanged })
	if ev.Source != viperkv.SourcePoll || ev.OldVersion != v1 || ev.NewVersion != v2 || ev.Secret.Name != "db-conn" {
		t.Errorf("event = %v, want poll db-conn %s -> %s", ev, v1, v2)
	}
	if got := strings.Join(ev.Keys, ","); got != "db.conn,db.dsn" {
		t.Errorf("event keys = %q, want db.conn,db.dsn", got)
	}
	if got := ev.Previous.GetString("db.conn"); got != "conn-v1" {
		t.Errorf("Previous db.conn = %q, want conn-v1", got)
	}
	if got := ev.Current.GetString("db.dsn"); got != "host=db password=conn-v2" {
		t.Errorf("Current db.dsn = %q", got)
	}
	if got := p.GetString("db.conn"); got != "conn-v2" {
		t.Errorf("db.conn = %q after rotation", got)
	}
	if p.Viper().GetInt("db.pool") != 10 || p.GetString("old") != "pinned-v1" {
		t.Error("siblings or the pinned value changed with the rotation")
	}
	if strings.Contains(ev.String(), "conn-v") {
		t.Errorf("event text shows a value: %s", ev)
	}
	// Further cycles send nothing more for the same version.
	time.Sleep(400 * time.Millisecond)
	n := 0
	for _, e := range evs.all() {
		if e.Kind == viperkv.EventChanged {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d Changed events for one rotation, want 1", n)
	}
}

// TestAtomicSwapUnderReaders rotates two secrets together 1,000 times while 32 readers read
// every key through the documented read path (p.Viper(), then reads). Each reader must see
// both secrets from the same generation, never go back a generation, and never see a
// sibling vanish; at the end the snapshot must equal the vault's latest versions.
func TestAtomicSwapUnderReaders(t *testing.T) {
	rotations := 1000
	if testing.Short() {
		rotations = 100
	}
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("user", "gen-0")
	kv.SetSecret("password", "gen-0")
	v := yamlViper(t, `
db:
  user: "@KeyVault(VaultName=myvault;SecretName=user)"
  password: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/password/)"
  dsn: "user=@KeyVault(VaultName=myvault;SecretName=user) password=@KeyVault(VaultName=myvault;SecretName=password)"
  pool: 10
name: app
`)
	p, err := load(t, srv, v)
	if err != nil {
		t.Fatal(err)
	}

	gen := func(s string) int {
		var n int
		if _, err := fmt.Sscanf(s, "gen-%d", &n); err != nil {
			return -1
		}
		return n
	}
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, 32)
	for range 32 {
		wg.Go(func() {
			last := 0
			for !stop.Load() {
				c := p.Viper()
				user, password, dsn := c.GetString("db.user"), c.GetString("db.password"), c.GetString("db.dsn")
				g := gen(user)
				switch {
				case g < 0 || gen(password) != g:
					errs <- fmt.Sprintf("torn read: user %q, password %q", user, password)
					return
				case dsn != "user="+user+" password="+password:
					errs <- fmt.Sprintf("dsn %q does not match user %q and password %q", dsn, user, password)
					return
				case g < last:
					errs <- fmt.Sprintf("went back from generation %d to %d", last, g)
					return
				case c.GetInt("db.pool") != 10 || c.GetString("name") != "app":
					errs <- "a sibling key vanished"
					return
				}
				last = g
				reads.Add(1)
				// Readers spin; yielding keeps 32 of them on 2 cores from starving the
				// refresh's network goroutines of time slices.
				runtime.Gosched()
			}
		})
	}
	ctx := context.Background()
	for i := 1; i <= rotations; i++ {
		kv.SetSecret("user", fmt.Sprintf("gen-%d", i))
		kv.SetSecret("password", fmt.Sprintf("gen-%d", i))
		if err := p.Refresh(ctx); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for _, name := range []string{"user", "password"} {
		want, _ := kv.SecretValue(name, "")
		if got := p.GetString("db." + name); got != want {
			t.Errorf("db.%s = %q, vault's latest is %q", name, got, want)
		}
		versions := kv.Versions(name)
		if st := statusOf(t, p, "db."+name); st.Version != versions[len(versions)-1] {
			t.Errorf("db.%s at version %s, vault's latest is %s", name, st.Version, versions[len(versions)-1])
		}
	}
	t.Logf("%d rotations, %d consistent reads", rotations, reads.Load())
}

// TestExpiryOfPinnedVersionIsNoticed: a pinned version is never fetched again, yet its
// expiry must still be announced on time, with no poll due for an hour.
func TestExpiryOfPinnedVersionIsNoticed(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	exp := time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	version := kv.SetSecret("cert", "pinned-value", kvtest.WithExpires(exp))
	v := yamlViper(t, fmt.Sprintf(`cert: "@KeyVault(VaultName=myvault;SecretName=cert;SecretVersion=%s)"`, version))
	p, err := load(t, srv, v, viperkv.WithRefreshInterval(time.Hour), viperkv.WithExpiryWarning(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(p)
	kv.ResetCounters()
	watch(t, p)

	near := evs.waitFor(t, "NearExpiry", func(e viperkv.Event) bool { return e.Kind == viperkv.EventNearExpiry })
	if !near.Expires.Equal(exp) || strings.Join(near.Keys, ",") != "cert" {
		t.Errorf("near-expiry event = %v (expires %v), want key cert expiring %v", near, near.Expires, exp)
	}
	expired := evs.waitFor(t, "SecretExpired", func(e viperkv.Event) bool { return e.Status == viperkv.StatusSecretExpired })
	if expired.Kind != viperkv.EventError || time.Now().Before(exp) {
		t.Errorf("expired event = %v at %v, expiry %v", expired, time.Now(), exp)
	}
	var re *viperkv.ReferenceError
	if !errors.As(expired.Err, &re) || re.Key != "cert" {
		t.Errorf("expired event error %v does not name config key cert", expired.Err)
	}
	if got := p.GetString("cert"); got != "pinned-value" {
		t.Errorf("cert = %q after expiry; the last value must stay", got)
	}
	if st := statusOf(t, p, "cert"); st.Status != viperkv.StatusSecretExpired {
		t.Errorf("status %s, want SecretExpired", st.Status)
	}
	if n := kv.Count(kvtest.OpGetSecret); n != 0 {
		t.Errorf("%d GETs for a pinned version", n)
	}
}
