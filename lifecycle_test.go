package viperkv_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/viper"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/kvtest"
)

// Close stops everything the provider started, after a Load, a Watch, pushes, a webhook
// delivery, a health scrape and watchers: no goroutine survives it (checked with goleak
// once the emulator, whose goroutines are its own, is closed too). Afterwards calls that
// do I/O fail with ErrClosed, Watch has returned ErrClosed, and the configuration stays
// readable.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := kvtest.NewServer()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", "db-v1")
	kv.SetSecret("api", "api-v1")
	p, err := viperkv.New(yamlViper(t, "db: \"@KeyVault(VaultName=myvault;SecretName=db)\"\napi: \"@KeyVault(VaultName=myvault;SecretName=api)\"\n"),
		viperkv.WithEmulator(srv), viperkv.WithoutFileWatch(),
		viperkv.WithRefreshInterval(50*time.Millisecond), viperkv.WithMeterProvider(metric.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int32
	p.OnChange(func(viperkv.Event) { seen.Add(1) })
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	watched := make(chan error, 1)
	go func() { watched <- p.Watch(context.Background()) }()

	v2 := kv.SetSecret("db", "db-v2")
	if err := p.Notify(context.Background(), viperkv.Notice{Type: viperkv.NoticeNewVersion, Vault: "myvault", Name: "db", Version: v2}); err != nil {
		t.Fatal(err)
	}
	h, err := eventgrid.NewHandler(p, eventgrid.Header("X-Secret", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	v3 := kv.SetSecret("api", "api-v2")
	body := `[{"id":"e1","topic":"t","subject":"api","eventType":"Microsoft.KeyVault.SecretNewVersionCreated","eventTime":"2026-01-01T00:00:00Z",` +
		`"data":{"Id":"https://myvault.vault.azure.net/secrets/api/` + v3 + `","VaultName":"myvault","ObjectType":"Secret","ObjectName":"api","Version":"` + v3 + `"},"dataVersion":"1","metadataVersion":"1"}]`
	req := httptest.NewRequest(http.MethodPost, "/events", strings.NewReader(body))
	req.Header.Set("X-Secret", "s3cret")
	req.Header.Set("aeg-event-type", "Notification")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("delivery answered %d %s", rec.Code, rec.Body)
	}
	scrape := httptest.NewRecorder()
	p.HealthHandler().ServeHTTP(scrape, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	_, _ = io.Copy(io.Discard, scrape.Body)
	for deadline := time.Now().Add(10 * time.Second); p.GetString("api") != "api-v2" || seen.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the push and the delivery were not applied: api = %q, %d events", p.GetString("api"), seen.Load())
		}
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-watched:
		if !errors.Is(err, viperkv.ErrClosed) {
			t.Errorf("Watch returned %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	for name, call := range map[string]func() error{
		"Load":    func() error { return p.Load(context.Background()) },
		"Refresh": func() error { return p.Refresh(context.Background()) },
		"Watch":   func() error { return p.Watch(context.Background()) },
		"Notify": func() error {
			return p.Notify(context.Background(), viperkv.Notice{Type: viperkv.NoticeNewVersion, Vault: "myvault", Name: "db", Version: v2})
		},
	} {
		if err := call(); !errors.Is(err, viperkv.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if got := p.GetString("db"); got != "db-v2" {
		t.Errorf("db = %q after Close: the configuration must stay readable", got)
	}
	srv.Close()
}

// Close cuts short a Load whose vault hangs, and returns once it has returned.
func TestCloseCutsShortALoad(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", "v")
	kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Hang: true})
	p, err := viperkv.New(yamlViper(t, "db: \"@KeyVault(VaultName=myvault;SecretName=db)\"\n"),
		viperkv.WithEmulator(srv))
	if err != nil {
		t.Fatal(err)
	}
	loaded := make(chan error, 1)
	go func() { loaded <- p.Load(context.Background()) }()
	for kv.Count(kvtest.OpGetSecret) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { _ = p.Close(); close(closed) }()
	select {
	case err := <-loaded:
		if err == nil {
			t.Error("a Load cut short by Close returned nil")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Load did not return after Close (its fetch deadline is 60 s)")
	}
	<-closed
}

// Defect: every New registered a meter callback that pinned the Provider (and the secret
// values it holds) for as long as the meter provider lived. Providers dropped without
// Close are collected; a closed one's gauges stop.
func TestProvidersAreNotPinnedByTheirMeter(t *testing.T) {
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	var collected atomic.Int32
	const n = 20
	for range n {
		p, err := viperkv.New(viper.New(), viperkv.WithMeterProvider(mp))
		if err != nil {
			t.Fatal(err)
		}
		runtime.AddCleanup(p, func(c *atomic.Int32) { c.Add(1) }, &collected)
	}
	for i := 0; i < 100 && collected.Load() < n; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := collected.Load(); got < n {
		t.Errorf("%d of %d dropped providers collected: the meter pins them", got, n)
	}

	m := metrics{reader: reader}
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", "v")
	p, err := viperkv.New(yamlViper(t, "db: \"@KeyVault(VaultName=myvault;SecretName=db)\"\n"),
		viperkv.WithEmulator(srv), viperkv.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, all := m.collect(t); len(got["viperkv.references"]) == 0 {
		t.Fatalf("no references gauge before Close: the check below would prove nothing\n%s", all)
	}
	_ = p.Close()
	if got, _ := m.collect(t); len(got["viperkv.references"]) != 0 {
		t.Errorf("the references gauge is still observed after Close: %v", got["viperkv.references"])
	}
}
