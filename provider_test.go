package viperkv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// newEmulator starts an emulator and points the managed-identity environment at it, the way
// App Service does for a real app.
func newEmulator(t *testing.T) *kvtest.Server {
	t.Helper()
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	return srv
}

// newVault starts an emulator (see newEmulator) with one vault the system-assigned
// identity may read.
func newVault(t *testing.T, name string) (*kvtest.Server, *kvtest.Vault) {
	t.Helper()
	srv := newEmulator(t)
	kv := srv.AddVault(name)
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	return srv, kv
}

// newIdentity adds a user-assigned identity with a fresh client ID, so no token for it sits
// in MSAL's process-wide cache and token requests can be counted exactly.
func newIdentity(t *testing.T, srv *kvtest.Server) kvtest.Identity {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return srv.AddUserIdentity("id-" + hex.EncodeToString(b))
}

// yamlViper and statusOf are shared with the package's internal tests (export_test.go).
func yamlViper(t *testing.T, doc string) *viper.Viper {
	t.Helper()
	return viperkv.YAMLViper(t, doc)
}

func load(t *testing.T, srv *kvtest.Server, v *viper.Viper, opts ...viperkv.Option) (*viperkv.Provider, error) {
	t.Helper()
	p, err := viperkv.New(v, append([]viperkv.Option{viperkv.WithTransport(srv.Client())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p, p.Load(ctx)
}

func statusOf(t *testing.T, p *viperkv.Provider, key string) viperkv.ReferenceStatus {
	t.Helper()
	return viperkv.StatusOf(t, p, key)
}

func TestLoadResolvesEveryPlaceViperGetsValues(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	other := srv.AddVault("othervault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	other.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db-conn", "postgres://old")
	connV2 := kv.SetSecret("db-conn", "postgres://app@db/prod")
	pwV1 := kv.SetSecret("db-password", "pw-one")
	kv.SetSecret("db-password", "pw-two")
	other.SetSecret("api-key", "key-123")
	other.SetSecret("token", "tok-env")
	other.SetSecret("only-env", "from-automatic-env")
	kv.SetSecret("default-secret", "dflt")
	kv.SetSecret("list-item", "item-secret")

	v := yamlViper(t, fmt.Sprintf(`
db:
  conn: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)"
  pool: 10
  dsn: "Server=db;Password=@Microsoft.KeyVault(VaultName=myvault;SecretName=db-password;SecretVersion=%s);Port=5432"
api:
  key: "@Microsoft.KeyVault(VaultName=othervault;SecretName=api-key)"
  email: "ops@@KeyVault(literal)"
hosts:
  - plain.example
  - "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/list-item)"
`, pwV1))
	v.SetDefault("fallback.secret", "@KeyVault(VaultName=myvault;SecretName=default-secret)")
	t.Setenv("APP_TOKEN", "@KeyVault(SecretUri=https://othervault.vault.azure.net/secrets/token/)")
	if err := v.BindEnv("app.token", "APP_TOKEN"); err != nil {
		t.Fatal(err)
	}
	v.SetEnvPrefix("APP")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	t.Setenv("APP_SOLO_SECRET", "@KeyVault(SecretUri=https://othervault.vault.azure.net/secrets/only-env)")

	p, err := load(t, srv, v, viperkv.WithEnvKeys("solo.secret"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	r := p.Viper()
	want := map[string]string{
		"db.conn":         "postgres://app@db/prod",
		"db.dsn":          "Server=db;Password=pw-one;Port=5432",
		"api.key":         "key-123",
		"api.email":       "ops@KeyVault(literal)",
		"fallback.secret": "dflt",
		"app.token":       "tok-env",
		"solo.secret":     "from-automatic-env",
	}
	for k, w := range want {
		if got := r.GetString(k); got != w {
			t.Errorf("%s = %q, want %q", k, got, w)
		}
	}
	if got := r.GetStringSlice("hosts"); len(got) != 2 || got[0] != "plain.example" || got[1] != "item-secret" {
		t.Errorf("hosts = %q", got)
	}
	// Viper issue #513: a sibling of a resolved key must survive.
	db, ok := r.Get("db").(map[string]any)
	if !ok || db["pool"] != 10 || db["conn"] != "postgres://app@db/prod" {
		t.Errorf(`Get("db") = %#v, want pool and conn`, r.Get("db"))
	}
	if r.GetInt("db.pool") != 10 {
		t.Errorf("db.pool = %v", r.Get("db.pool"))
	}
	if st := statusOf(t, p, "db.conn"); st.Status != viperkv.StatusResolved || st.Version != connV2 {
		t.Errorf("db.conn status = %+v, want Resolved at %s", st, connV2)
	}
	if st := statusOf(t, p, "db.dsn"); st.Version != pwV1 {
		t.Errorf("db.dsn version = %s, want pinned %s", st.Version, pwV1)
	}
	if n := len(p.Status()); n != 7 {
		t.Errorf("%d statuses, want 7: %+v", n, p.Status())
	}
	// The source Viper still holds the references: the provider never writes into it.
	if got := v.GetString("db.conn"); !strings.HasPrefix(got, "@KeyVault(") {
		t.Errorf("source viper changed: db.conn = %q", got)
	}
	masked := p.MaskedSettings()
	if got := masked["db"].(map[string]any)["dsn"]; got != "Server=db;Password="+viperkv.Mask+";Port=5432" {
		t.Errorf("masked dsn = %q", got)
	}
}

func TestLoadFetchesEachSecretOnceWithOneTokenRequest(t *testing.T) {
	srv := newEmulator(t)
	id := newIdentity(t, srv)
	var vaults []*kvtest.Vault
	var doc strings.Builder
	doc.WriteString("refs:\n")
	for i := range 3 {
		kv := srv.AddVault(fmt.Sprintf("vault%d", i))
		kv.Grant(id, kvtest.RoleSecretsUser)
		vaults = append(vaults, kv)
		for j := range 20 {
			kv.SetSecret(fmt.Sprintf("s%d", j), fmt.Sprintf("v%d-%d", i, j))
			// Each secret three times: twice the same, once with another letter case
			// (Key Vault secret names are case-insensitive) and in the VaultName form.
			fmt.Fprintf(&doc, "  a%d_%d: \"@KeyVault(SecretUri=https://vault%d.vault.azure.net/secrets/s%d/)\"\n", i, j, i, j)
			fmt.Fprintf(&doc, "  b%d_%d: \"x-@KeyVault(SecretUri=https://VAULT%d.vault.azure.net/secrets/S%d)\"\n", i, j, i, j)
			fmt.Fprintf(&doc, "  c%d_%d: \"@Microsoft.KeyVault(VaultName=vault%d;SecretName=s%d)\"\n", i, j, i, j)
		}
	}
	srv.ResetCounters()
	p, err := load(t, srv, yamlViper(t, doc.String()), viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID)))
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Count(kvtest.OpGetSecret); got != 60 {
		t.Errorf("vault GETs = %d, want 60 (one per distinct secret)", got)
	}
	for _, kv := range vaults {
		if got := kv.Count(kvtest.OpChallenge); got != 1 {
			t.Errorf("%s challenge round trips = %d, want 1", kv.Name(), got)
		}
	}
	if got := srv.Count(kvtest.OpToken); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	if got := p.Viper().GetString("refs.b2_7"); got != "x-v2-7" {
		t.Errorf("refs.b2_7 = %q", got)
	}
}

func TestLoadStatuses(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	denied := srv.AddVault("deniedvault") // no grant
	denied.SetSecret("s", "x")
	kv.SetSecret("good", "good-value")
	if err := kv.SetEnabled("disabled", kv.SetSecret("disabled", "x"), false); err != nil {
		t.Fatal(err)
	}
	kv.SetSecret("expired", "x", kvtest.WithExpires(time.Now().Add(-time.Hour)))
	kv.SetSecret("early", "x", kvtest.WithNotBefore(time.Now().Add(time.Hour)))
	// Faults apply to a whole vault, so each faulty secret lives in a vault of its own.
	flaky := srv.AddVault("flakyvault")
	flaky.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	flaky.SetSecret("broken", "x")
	flaky.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: 500, Code: "InternalServerError", Message: "boom"})
	hang := srv.AddVault("hangvault")
	hang.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	hang.SetSecret("slow", "x")
	hang.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Hang: true})

	v := yamlViper(t, `
good: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/good/)"
missing: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/nope/)"
missingversion: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/good/0123456789abcdef0123456789abcdef)"
disabled: "@KeyVault(VaultName=myvault;SecretName=disabled)"
denied: "@KeyVault(VaultName=deniedvault;SecretName=s)"
novault: "@KeyVault(VaultName=ghostvault;SecretName=s)"
broken: "@KeyVault(VaultName=flakyvault;SecretName=broken)"
slow: "@KeyVault(VaultName=hangvault;SecretName=slow)"
syntax: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/bad_name/)"
foreign: "@KeyVault(SecretUri=https://myvault.vault.azure.net.evil.test/secrets/x/)"
expired: "@KeyVault(VaultName=myvault;SecretName=expired)"
early: "@KeyVault(VaultName=myvault;SecretName=early)"
plain: keep-me
`)
	p, err := load(t, srv, v, viperkv.WithFetchTimeout(4*time.Second))
	var le *viperkv.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load error = %v, want *LoadError", err)
	}
	want := map[string]viperkv.Status{
		"good":           viperkv.StatusResolved,
		"missing":        viperkv.StatusSecretNotFound,
		"missingversion": viperkv.StatusSecretVersionNotFound,
		"disabled":       viperkv.StatusSecretDisabled,
		"denied":         viperkv.StatusAccessToKeyVaultDenied,
		"novault":        viperkv.StatusVaultNotFound,
		"broken":         viperkv.StatusOtherReasons,
		"slow":           viperkv.StatusFetchTimedOut,
		"syntax":         viperkv.StatusInvalidSyntax,
		"foreign":        viperkv.StatusHostNotAllowed,
		"expired":        viperkv.StatusSecretExpired,
		"early":          viperkv.StatusSecretNotYetValid,
	}
	for key, w := range want {
		st := statusOf(t, p, key)
		if st.Status != w {
			t.Errorf("%s: status %s (%s), want %s", key, st.Status, st.Reason, w)
		}
		if w != viperkv.StatusResolved {
			if st.Reason == "" {
				t.Errorf("%s: empty reason", key)
			}
			if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), string(w)) {
				t.Errorf("Load error does not name %s and %s:\n%v", key, w, err)
			}
			// A failed key is left out: never a placeholder, never an empty string.
			if p.Viper().IsSet(key) {
				t.Errorf("%s is set to %q after failing", key, p.Viper().GetString(key))
			}
		}
	}
	// A 500 is retried by azcore (three times), then by Load until the fetch deadline; a
	// missing vault name is not retried at all.
	if n := flaky.Count(kvtest.OpGetSecret); n <= 4 {
		t.Errorf("flakyvault saw %d GETs, want more than 4 (a try and azcore's three retries, then Load's retries)", n)
	}
	if len(le.Failed) != len(want)-1 {
		t.Errorf("LoadError lists %d failures, want %d", len(le.Failed), len(want)-1)
	}
	var re *viperkv.ReferenceError
	if !errors.As(err, &re) {
		t.Error("errors.As(*ReferenceError) fails on the Load error")
	}
	if p.Viper().GetString("good") != "good-value" || p.Viper().GetString("plain") != "keep-me" {
		t.Errorf("good keys lost: good=%q plain=%q", p.Viper().GetString("good"), p.Viper().GetString("plain"))
	}
}

func TestLoadWithoutManagedIdentity(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.SetSecret("s", "x")
	// A user-assigned identity the endpoint does not know: not assigned to this "app".
	p, err := load(t, srv, yamlViper(t, `k: "@KeyVault(VaultName=myvault;SecretName=s)"`),
		viperkv.WithManagedIdentity(azidentity.ClientID("00000000-0000-0000-0000-00000000beef")))
	if err == nil {
		t.Fatal("Load succeeded with an unassigned identity")
	}
	if st := statusOf(t, p, "k"); st.Status != viperkv.StatusMSINotEnabled {
		t.Errorf("status = %s (%s), want MSINotEnabled", st.Status, st.Reason)
	}
	if got := srv.Count(kvtest.OpGetSecret); got != 0 {
		t.Errorf("%d secret GETs served without a token", got)
	}
}

func TestLoadUserAssignedIdentities(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.SetSecret("s", "user-assigned-value")
	allowed := newIdentity(t, srv)
	kv.Grant(allowed, kvtest.RoleSecretsUser)
	stranger := newIdentity(t, srv)
	doc := `k: "@KeyVault(VaultName=myvault;SecretName=s)"`
	for _, tc := range []struct {
		name string
		id   azidentity.ManagedIDKind
		want viperkv.Status
	}{
		{"client id", azidentity.ClientID(allowed.ClientID), viperkv.StatusResolved},
		{"object id", azidentity.ObjectID(allowed.ObjectID), viperkv.StatusResolved},
		{"resource id", azidentity.ResourceID(allowed.ResourceID), viperkv.StatusResolved},
		{"no grant", azidentity.ClientID(stranger.ClientID), viperkv.StatusAccessToKeyVaultDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := load(t, srv, yamlViper(t, doc), viperkv.WithManagedIdentity(tc.id))
			if st := statusOf(t, p, "k"); st.Status != tc.want {
				t.Fatalf("status %s (%s), want %s", st.Status, st.Reason, tc.want)
			}
			if tc.want == viperkv.StatusResolved && p.GetString("k") != "user-assigned-value" {
				t.Errorf("k = %q", p.GetString("k"))
			}
		})
	}
}

func TestLoadThroughIMDS(t *testing.T) {
	srv := kvtest.NewServer()
	defer srv.Close()
	// No App Service variables: MSAL falls back to IMDS at 169.254.169.254, which the
	// emulator's transport reaches.
	for _, k := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "IMDS_ENDPOINT"} {
		t.Setenv(k, "")
	}
	id := newIdentity(t, srv)
	kv := srv.AddVault("myvault")
	kv.Grant(id, kvtest.RoleSecretsUser)
	kv.SetSecret("s", "via-imds")
	p, err := load(t, srv, yamlViper(t, `k: "@KeyVault(VaultName=myvault;SecretName=s)"`),
		viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID)))
	if err != nil {
		t.Fatal(err)
	}
	if p.GetString("k") != "via-imds" {
		t.Errorf("k = %q", p.GetString("k"))
	}
}

func TestLoadSovereignCloud(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("cnvault.vault.azure.cn")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "china-value")
	doc := `
a: "@KeyVault(VaultName=cnvault;SecretName=s)"
b: "@KeyVault(SecretUri=https://cnvault.vault.azure.cn/secrets/s/)"
`
	p, err := load(t, srv, yamlViper(t, doc), viperkv.WithCloud(viperkv.CloudChina))
	if err != nil {
		t.Fatal(err)
	}
	if p.GetString("a") != "china-value" || p.GetString("b") != "china-value" {
		t.Errorf("a=%q b=%q", p.GetString("a"), p.GetString("b"))
	}
	// The public cloud's provider refuses the China host: no token leaves for it.
	p, _ = load(t, srv, yamlViper(t, doc))
	if st := statusOf(t, p, "b"); st.Status != viperkv.StatusHostNotAllowed {
		t.Errorf("public cloud, China host: %s", st.Status)
	}
}

func TestLoadResolvesEverythingWhenThrottled(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	kv.SetThrottle(60, time.Second)
	var doc strings.Builder
	for i := range 150 {
		kv.SetSecret(fmt.Sprintf("s%d", i), fmt.Sprintf("v%d", i))
		fmt.Fprintf(&doc, "k%d: \"@KeyVault(VaultName=myvault;SecretName=s%d)\"\n", i, i)
	}
	srv.ResetCounters()
	p, err := load(t, srv, yamlViper(t, doc.String()))
	if err != nil {
		t.Fatalf("Load under throttling: %v", err)
	}
	if srv.Count(kvtest.OpThrottled) == 0 {
		t.Error("the vault never throttled: the test did not test throttling")
	}
	if got := srv.Count(kvtest.OpGetSecret); got != 150 {
		t.Errorf("successful GETs = %d, want 150", got)
	}
	if p.GetString("k149") != "v149" {
		t.Errorf("k149 = %q", p.GetString("k149"))
	}
}

// A secret value must never reach a log line, an error, a status or the masked view.
func TestSentinelValueNeverLeaks(t *testing.T) {
	const sentinel = "SENTINEL-7f3a9c-do-not-print"
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("pw", sentinel)
	// A secret whose value looks like a reference is not scanned again.
	kv.SetSecret("chain", "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/pw/)")
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v := yamlViper(t, `
db:
  dsn: "user=app password=@KeyVault(VaultName=myvault;SecretName=pw) sslmode=require"
  pw: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/pw/)"
chain: "@KeyVault(VaultName=myvault;SecretName=chain)"
bad: "@KeyVault(VaultName=myvault;SecretName=missing)"
`)
	p, err := load(t, srv, v, viperkv.WithLogger(logger))
	if err == nil {
		t.Fatal("want an error for the missing secret")
	}
	if p.GetString("db.pw") != sentinel {
		t.Fatalf("db.pw not resolved: %q", p.GetString("db.pw"))
	}
	if p.GetString("chain") != "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/pw/)" {
		t.Errorf("a secret's value was scanned for references: chain = %q", p.GetString("chain"))
	}
	places := map[string]string{
		"logs":   logs.String(),
		"error":  err.Error(),
		"status": fmt.Sprintf("%+v %v", p.Status(), p.Status()),
		"masked": fmt.Sprintf("%v", p.MaskedSettings()),
	}
	if !strings.Contains(places["logs"], "db.pw") {
		t.Fatalf("logs do not mention the resolved key; the check below would prove nothing:\n%s", places["logs"])
	}
	for where, text := range places {
		if strings.Contains(text, sentinel) {
			t.Errorf("the secret value appears in the %s:\n%s", where, text)
		}
	}
}

// Readers may read the resolved configuration while Load runs again; -race checks it.
func TestConcurrentReadersDuringLoad(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("s", "v0")
	v := yamlViper(t, "a:\n  s: \"@KeyVault(VaultName=myvault;SecretName=s)\"\n  n: 1\n")
	p, err := load(t, srv, v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if s := p.GetString("a.s"); !strings.HasPrefix(s, "v") {
					t.Errorf("read %q", s)
					return
				}
				_ = p.Viper().GetInt("a.n")
				_ = p.Viper().AllSettings()
				// Readers spin; yielding keeps 8 of them on 2 cores from starving Load.
				runtime.Gosched()
			}
		}()
	}
	for i := 1; i <= 5; i++ {
		kv.SetSecret("s", fmt.Sprintf("v%d", i))
		if err := p.Load(ctx); err != nil {
			t.Error(err)
		}
	}
	cancel()
	wg.Wait()
	if got := p.GetString("a.s"); got != "v5" {
		t.Errorf("a.s = %q, want v5", got)
	}
}
