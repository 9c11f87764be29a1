package viperkv_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

const (
	primaryHost   = "app-weu.vault.azure.net"
	secondaryHost = "app-neu.vault.azure.net"
)

// failoverRig is two vaults holding the same secrets (the rotation job writes both), the
// secondary's values marked so a test can tell which vault served.
type failoverRig struct {
	srv                *kvtest.Server
	primary, secondary *kvtest.Vault
	pinned             string // the primary's version of api
}

func newFailoverRig(t *testing.T) *failoverRig {
	srv := newEmulator(t)
	r := &failoverRig{srv: srv, primary: srv.AddVault("app-weu"), secondary: srv.AddVault("app-neu")}
	for _, kv := range []*kvtest.Vault{r.primary, r.secondary} {
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	}
	r.primary.SetSecret("db", "db-from-weu")
	r.secondary.SetSecret("db", "db-from-neu")
	r.pinned = r.primary.SetSecret("api", "api-key")
	r.secondary.SetSecret("api", "api-key")
	return r
}

const failoverConfig = `
db: "@KeyVault(SecretUri=https://app-weu.vault.azure.net/secrets/db/)"
api: "@KeyVault(VaultName=app-weu;SecretName=api;SecretVersion=%s)"
`

func (r *failoverRig) provider(t *testing.T, opts ...viperkv.Option) *viperkv.Provider {
	t.Helper()
	p, err := viperkv.New(yamlViper(t, strings.Replace(failoverConfig, "%s", r.pinned, 1)),
		append([]viperkv.Option{viperkv.WithEmulator(r.srv), viperkv.WithVaultFailover(primaryHost, secondaryHost),
			viperkv.WithFetchTimeout(2 * time.Second), viperkv.WithoutFileWatch()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// TestVaultFailover: while the primary vault cannot answer (connections refused, then
// 503, then a host name that does not resolve), its secondary serves every versionless
// reference, and a pinned version fails with the primary's reason, keeping its value. The
// next cycle after the primary recovers reads from it again, without announcing the same
// value as a change. A 403 on the primary is the truth: it never fails over.
func TestVaultFailover(t *testing.T) {
	rig := newFailoverRig(t)
	reader := sdkmetric.NewManualReader()
	p := rig.provider(t, viperkv.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	ctx := context.Background()
	if err := p.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, p, "db"); p.GetString("db") != "db-from-weu" || st.ServedBy != primaryHost {
		t.Fatalf("db = %q served by %q, want the primary's", p.GetString("db"), st.ServedBy)
	}
	changed := make(chan viperkv.Event, 16)
	defer p.OnChange(func(e viperkv.Event) {
		if e.Kind == viperkv.EventChanged {
			changed <- e
		}
	})()

	for _, outage := range []struct {
		name  string
		start func()
	}{
		{"connections refused", func() { rig.primary.SetOutage(kvtest.OutageRefused) }},
		{"503", func() { rig.primary.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: 503}) }},
		{"host does not resolve", func() { rig.primary.SetOutage(kvtest.OutageUnresolvable) }},
	} {
		outage.start()
		err := p.Refresh(ctx)
		db, api := statusOf(t, p, "db"), statusOf(t, p, "api")
		if p.GetString("db") != "db-from-neu" || db.Status != viperkv.StatusResolved || db.ServedBy != secondaryHost ||
			!strings.Contains(db.Reason, "served by "+secondaryHost) {
			t.Errorf("%s: db = %q, %s served by %q (%s); want the secondary's value", outage.name, p.GetString("db"), db.Status, db.ServedBy, db.Reason)
		}
		if err != nil {
			t.Errorf("%s: Refresh: %v", outage.name, err)
		}
		// A pinned version that resolved is never fetched again, so it keeps its value.
		if api.Status != viperkv.StatusResolved || api.ServedBy != primaryHost || p.GetString("api") != "api-key" {
			t.Errorf("%s: api %s served by %q", outage.name, api.Status, api.ServedBy)
		}
		// The primary recovers: the next cycle reads from it.
		rig.primary.SetOutage(kvtest.OutageNone)
		rig.primary.ClearFaults()
		if err := p.Refresh(ctx); err != nil {
			t.Fatalf("%s: after recovery: %v", outage.name, err)
		}
		if st := statusOf(t, p, "db"); p.GetString("db") != "db-from-weu" || st.ServedBy != primaryHost || st.Reason != "" {
			t.Errorf("%s: after recovery db = %q served by %q (%q)", outage.name, p.GetString("db"), st.ServedBy, st.Reason)
		}
	}
	// Each outage changed db twice (to the secondary's value and back), and said who served.
	var changes []viperkv.Event
	for len(changes) < 6 {
		select {
		case e := <-changed:
			changes = append(changes, e)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d change events, want 6", len(changes))
		}
	}
	for i, e := range changes {
		want := []string{secondaryHost, primaryHost}[i%2]
		if e.ServedBy != want {
			t.Errorf("change %d served by %q, want %q", i, e.ServedBy, want)
		}
	}
	m := metrics{reader: reader}
	points, _ := m.collect(t)
	if n := sum(points["viperkv.vault.failovers"], "viperkv.vault="+primaryHost, "viperkv.served_by="+secondaryHost); n != 3 {
		t.Errorf("viperkv.vault.failovers = %v, want 3", n)
	}

	// 403 is the truth: no failover, the last good value kept.
	before := rig.secondary.Count(kvtest.OpGetSecret)
	rig.primary.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: 403, Code: "Forbidden"})
	_ = p.Refresh(ctx)
	if st := statusOf(t, p, "db"); st.Status != viperkv.StatusAccessToKeyVaultDenied || p.GetString("db") != "db-from-weu" || st.ServedBy != primaryHost {
		t.Errorf("403: db %s served by %q = %q", st.Status, st.ServedBy, p.GetString("db"))
	}
	if n := rig.secondary.Count(kvtest.OpGetSecret) - before; n != 0 {
		t.Errorf("a 403 on the primary sent %d requests to the secondary", n)
	}
	rig.primary.ClearFaults()
}

// TestVaultFailoverColdStart: a service that starts while its primary vault is out of
// reach loads from the secondary.
func TestVaultFailoverColdStart(t *testing.T) {
	rig := newFailoverRig(t)
	rig.primary.SetOutage(kvtest.OutageRefused)
	p := rig.provider(t)
	err := p.Load(context.Background())
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 1 || le.Failed[0].Key != "api" {
		t.Fatalf("Load: %v, want the pinned reference alone to fail", err)
	}
	if p.GetString("db") != "db-from-neu" || statusOf(t, p, "db").ServedBy != secondaryHost {
		t.Errorf("db = %q", p.GetString("db"))
	}
	// A pinned version is never looked up elsewhere: it fails with the primary's reason.
	if st := statusOf(t, p, "api"); strings.Contains(st.Reason, secondaryHost) || p.Viper().IsSet("api") || !strings.Contains(st.Reason, primaryHost) {
		t.Errorf("api: %s %q", st.Status, st.Reason)
	}
	if n := rig.secondary.Count(kvtest.OpGetSecret); n != 1 {
		t.Errorf("the secondary served %d GETs, want 1 (db only)", n)
	}
}

func TestVaultFailoverOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		opts []viperkv.Option
		want string
	}{
		{[]viperkv.Option{viperkv.WithVaultFailover("evil.example.com", secondaryHost)}, "primary: not a vault"},
		{[]viperkv.Option{viperkv.WithVaultFailover(primaryHost)}, "no secondary vault"},
		{[]viperkv.Option{viperkv.WithVaultFailover(primaryHost, primaryHost)}, "listed twice"},
		{[]viperkv.Option{viperkv.WithVaultFailover(primaryHost, "https://app-neu.vault.azure.net/")}, "secondary"},
		{[]viperkv.Option{viperkv.WithVaultFailover(primaryHost, secondaryHost), viperkv.WithVaultFailover(primaryHost, "x.vault.azure.net")}, "already has failover vaults"},
	} {
		_, err := viperkv.New(yamlViper(t, "a: 1\n"), tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "WithVaultFailover") {
			t.Errorf("New: %v, want an error naming WithVaultFailover and %q", err, tc.want)
		}
	}
}

// TestVaultFailoverSameValueIsNoChange: replicated vaults hold the same value under
// different version ids; moving to the secondary and back changes who serves it, not the
// configuration, so watchers hear nothing.
func TestVaultFailoverSameValueIsNoChange(t *testing.T) {
	rig := newFailoverRig(t)
	rig.secondary.SetSecret("db", "db-from-weu") // replicated
	p := rig.provider(t)
	ctx := context.Background()
	if err := p.Load(ctx); err != nil {
		t.Fatal(err)
	}
	events := make(chan viperkv.Event, 16)
	defer p.OnChange(func(e viperkv.Event) { events <- e })()
	rig.primary.SetOutage(kvtest.OutageRefused)
	if err := p.Refresh(ctx); err != nil || statusOf(t, p, "db").ServedBy != secondaryHost {
		t.Fatalf("outage: %v, served by %q", err, statusOf(t, p, "db").ServedBy)
	}
	rig.primary.SetOutage(kvtest.OutageNone)
	if err := p.Refresh(ctx); err != nil || statusOf(t, p, "db").ServedBy != primaryHost {
		t.Fatalf("recovery: %v, served by %q", err, statusOf(t, p, "db").ServedBy)
	}
	// A change the test makes afterwards is the first event any watcher sees.
	rig.primary.SetSecret("db", "db-rotated")
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Kind != viperkv.EventChanged || e.NewVersion == "" || p.GetString("db") != "db-rotated" {
			t.Errorf("first event %v: the moves between vaults were announced", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for the rotation")
	}
}
