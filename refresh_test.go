package viperkv_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
