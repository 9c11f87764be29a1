package viperkv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

const snapSentinel = "SENTINEL-snapshot-8c1e2f"

const snapConfig = `
db: "@KeyVault(VaultName=myvault;SecretName=db)"
api: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/api/)"
`

// snapRig is an emulator whose vault holds two secrets, a snapshot key and path, and a
// snapshot written by a provider that loaded them.
type snapRig struct {
	srv  *kvtest.Server
	kv   *kvtest.Vault
	path string
	key  []byte
}

func newSnapRig(t *testing.T) *snapRig {
	t.Helper()
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("db", snapSentinel)
	kv.SetSecret("api", "api-value")
	r := &snapRig{srv: srv, kv: kv, path: filepath.Join(t.TempDir(), "viperkv.snap"), key: make([]byte, 32)}
	_, _ = rand.Read(r.key)
	p, err := r.provider(t, snapConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	return r
}

func (r *snapRig) provider(t *testing.T, doc string, opts ...viperkv.Option) (*viperkv.Provider, error) {
	t.Helper()
	return viperkv.New(yamlViper(t, doc), append([]viperkv.Option{viperkv.WithEmulator(r.srv), viperkv.WithoutFileWatch(),
		viperkv.WithFetchTimeout(2 * time.Second), viperkv.WithSnapshot(r.path, r.key, time.Hour)}, opts...)...)
}

// refusingTransport refuses connections to host until healed, as a network that cannot
// reach it.
type refusingTransport struct {
	host   string
	healed atomic.Bool
	next   http.RoundTripper
}

func (rt *refusingTransport) Do(req *http.Request) (*http.Response, error) {
	if !rt.healed.Load() && req.URL.Hostname() == rt.host {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	return rt.next.RoundTrip(req)
}

var _ policy.Transporter = (*refusingTransport)(nil)

// TestSnapshotColdStart: a service that restarts while the vault, the identity endpoint or
// Microsoft Entra ID cannot be reached starts with the snapshot's values, each with the
// status ServedFromSnapshot, an event, a log line and a metric, and the first fetch that
// succeeds replaces them.
func TestSnapshotColdStart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		outage func(r *snapRig) (opts []viperkv.Option, heal func())
	}{
		{"vault unreachable", func(r *snapRig) ([]viperkv.Option, func()) {
			r.kv.SetOutage(kvtest.OutageRefused)
			return nil, func() { r.kv.SetOutage(kvtest.OutageNone) }
		}},
		{"identity endpoint unreachable", func(r *snapRig) ([]viperkv.Option, func()) {
			r.srv.InjectIdentityFault(kvtest.Fault{Reset: true})
			// A fresh identity: no token for it sits in the process's cache.
			id := newIdentity(t, r.srv)
			r.kv.Grant(id, kvtest.RoleSecretsUser)
			// The managed identity credential itself (WithEmulator's is a ready-made one).
			return []viperkv.Option{viperkv.WithCredential(nil), viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID))}, r.srv.ClearIdentityFaults
		}},
		{"Entra ID unreachable", func(r *snapRig) ([]viperkv.Option, func()) {
			id := r.srv.AddUserIdentity("app-"+hex.EncodeToString(r.key[:4]), kvtest.WithClientSecret("s3cret"))
			r.kv.Grant(id, kvtest.RoleSecretsUser)
			block := &refusingTransport{host: "login.microsoftonline.com", next: r.srv.Client().Transport}
			cred, err := azidentity.NewClientSecretCredential(r.srv.TenantID(), id.ClientID, "s3cret",
				&azidentity.ClientSecretCredentialOptions{ClientOptions: azcore.ClientOptions{Transport: block}})
			if err != nil {
				t.Fatal(err)
			}
			return []viperkv.Option{viperkv.WithCredential(cred)}, func() { block.healed.Store(true) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSnapRig(t)
			opts, heal := tc.outage(r)
			reader := sdkmetric.NewManualReader()
			opts = append(opts, viperkv.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
			events := make(chan viperkv.Event, 16)
			p, err := r.provider(t, snapConfig, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			defer p.OnChange(func(e viperkv.Event) { events <- e })()
			if err := p.Load(context.Background()); err != nil {
				t.Fatalf("Load: %v, want it to start from the snapshot", err)
			}
			for _, k := range []string{"db", "api"} {
				st := statusOf(t, p, k)
				if st.Status != viperkv.StatusServedFromSnapshot || !strings.Contains(st.Reason, "served from the snapshot") || !st.HasValue {
					t.Errorf("%s: %s %q", k, st.Status, st.Reason)
				}
			}
			if p.GetString("db") != snapSentinel || p.GetString("api") != "api-value" {
				t.Errorf("values not served from the snapshot")
			}
			for range 2 {
				select {
				case e := <-events:
					if e.Kind != viperkv.EventError || e.Status != viperkv.StatusServedFromSnapshot || len(e.Keys) != 1 {
						t.Errorf("event %v", e)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no event for a value served from the snapshot")
				}
			}
			points, _ := metrics{reader: reader}.collect(t)
			if n := sum(points["viperkv.snapshot.served"], "viperkv.vault=myvault.vault.azure.net"); n != 2 {
				t.Errorf("viperkv.snapshot.served = %v, want 2", n)
			}
			// The first fetch that succeeds replaces them.
			heal()
			r.kv.SetSecret("api", "api-rotated")
			if err := p.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st := statusOf(t, p, "db"); st.Status != viperkv.StatusResolved || p.GetString("api") != "api-rotated" {
				t.Errorf("after the vault answers: db %s, api %q", st.Status, p.GetString("api"))
			}
		})
	}
}

// TestSnapshotNotServed: an answer from the vault is the truth (a 403 is never answered
// from disk), and a snapshot that is tampered with, truncated, of another key, older than
// maxAge or of another configuration is refused with its reason: Load fails as it would
// without one, and nothing of it is served.
func TestSnapshotNotServed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, r *snapRig) []viperkv.Option
		doc    string
		log    string
	}{
		{"403", func(t *testing.T, r *snapRig) []viperkv.Option {
			r.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: 403, Code: "Forbidden"})
			return nil
		}, snapConfig, ""},
		{"tampered", func(t *testing.T, r *snapRig) []viperkv.Option {
			r.kv.SetOutage(kvtest.OutageRefused)
			b, _ := os.ReadFile(r.path)
			b[len(b)-20] ^= 1
			_ = os.WriteFile(r.path, b, 0o600)
			return nil
		}, snapConfig, "refused"},
		{"truncated", func(t *testing.T, r *snapRig) []viperkv.Option {
			r.kv.SetOutage(kvtest.OutageRefused)
			b, _ := os.ReadFile(r.path)
			_ = os.WriteFile(r.path, b[:len(b)/2], 0o600)
			return nil
		}, snapConfig, "truncated"},
		{"another key", func(t *testing.T, r *snapRig) []viperkv.Option {
			r.kv.SetOutage(kvtest.OutageRefused)
			r.key = bytes.Repeat([]byte{7}, 32)
			return nil
		}, snapConfig, "refused"},
		{"older than maxAge", func(t *testing.T, r *snapRig) []viperkv.Option {
			r.kv.SetOutage(kvtest.OutageRefused)
			// Written a moment ago: older than a nanosecond, with no sleep.
			return []viperkv.Option{viperkv.WithSnapshot(r.path, r.key, time.Nanosecond)}
		}, snapConfig, "old"},
		{"another configuration", func(t *testing.T, r *snapRig) []viperkv.Option {
			r.kv.SetOutage(kvtest.OutageRefused)
			return nil
		}, snapConfig + "extra: \"@KeyVault(VaultName=myvault;SecretName=extra)\"\n", "another configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSnapRig(t)
			opts := tc.break_(t, r)
			var logs logtest.Buffer
			p, err := r.provider(t, tc.doc, append([]viperkv.Option{
				viperkv.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			err = p.Load(context.Background())
			var le *viperkv.LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Load: %v, want a LoadError", err)
			}
			if p.Viper().IsSet("db") || statusOf(t, p, "db").Status == viperkv.StatusServedFromSnapshot {
				t.Errorf("db served: %s", statusOf(t, p, "db").Status)
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("the log does not say why (%q):\n%s", tc.log, logs.String())
			}
			if strings.Contains(logs.String()+err.Error(), snapSentinel) {
				t.Error("the secret shows in the log or the error")
			}
		})
	}
}

// TestSnapshotFileHoldsNoValueInClear: the file holds the secret in no readable form, and
// is readable by its owner alone.
func TestSnapshotFileHoldsNoValueInClear(t *testing.T) {
	r := newSnapRig(t)
	b, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{snapSentinel, hex.EncodeToString([]byte(snapSentinel)), base64.StdEncoding.EncodeToString([]byte(snapSentinel)),
		base64.StdEncoding.EncodeToString([]byte(snapSentinel))[4:20], "api-value", "myvault"} {
		if bytes.Contains(b, []byte(form)) {
			t.Errorf("the snapshot holds %q in clear", form)
		}
	}
	if fi, err := os.Stat(r.path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	if _, err := viperkv.ParseSnapshotKey(base64.StdEncoding.EncodeToString(r.key)); err != nil {
		t.Error(err)
	}
	if _, err := viperkv.ParseSnapshotKey("c2hvcnQ="); err == nil || strings.Contains(err.Error(), "c2hvcnQ") {
		t.Errorf("a short key: %v", err)
	}
	if _, err := viperkv.New(yamlViper(t, "a: 1\n"), viperkv.WithSnapshot(r.path, []byte("short"), time.Hour)); err == nil {
		t.Error("New accepted a 5-byte key")
	}
}
