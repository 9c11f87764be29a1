package viperkv_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// tokenLog counts the tokens an emulator issues, by identity name, from its "token issued"
// log records: Server.Count(OpToken) counts them all together.
type tokenLog struct {
	mu     sync.Mutex
	issued map[string]int
}

func (l *tokenLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *tokenLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *tokenLog) WithGroup(string) slog.Handler            { return l }
func (l *tokenLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "token issued" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "identity" {
			l.mu.Lock()
			if l.issued == nil {
				l.issued = map[string]int{}
			}
			l.issued[a.Value.String()]++
			l.mu.Unlock()
			return false
		}
		return true
	})
	return nil
}

// count returns how many tokens id was issued.
func (l *tokenLog) count(id kvtest.Identity) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.issued[id.Name]
}

// newCountingEmulator is newEmulator with tokens counted per identity.
func newCountingEmulator(t *testing.T, opts ...kvtest.Option) (*kvtest.Server, *tokenLog) {
	t.Helper()
	tl := &tokenLog{}
	srv := kvtest.NewServer(append(opts, kvtest.WithLogger(slog.New(tl)))...)
	t.Cleanup(srv.Close)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	return srv, tl
}

// managedIdentity returns azidentity's managed identity credential for id, reaching the
// emulator's identity endpoint (IDENTITY_ENDPOINT, set by newCountingEmulator).
func managedIdentity(t *testing.T, srv *kvtest.Server, id kvtest.Identity) azcore.TokenCredential {
	t.Helper()
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client()},
		ID:            azidentity.ClientID(id.ClientID),
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// refreshOnce runs p.Refresh with a deadline.
func refreshOnce(t *testing.T, p *viperkv.Provider) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Refresh(ctx)
}

// Two vaults, each readable by a different user-assigned identity only: the default
// identity reads the first, WithVaultCredential gives the second its own. One Load reads
// both; each identity's token is requested exactly once, and neither a second Load nor a
// Refresh requests another.
func TestVaultCredentialReadsEachVaultWithItsIdentity(t *testing.T) {
	srv, tokens := newCountingEmulator(t)
	idA, idB := newIdentity(t, srv), newIdentity(t, srv)
	alpha, beta := srv.AddVault("alpha"), srv.AddVault("beta")
	alpha.Grant(idA, kvtest.RoleSecretsUser)
	beta.Grant(idB, kvtest.RoleSecretsUser)
	alpha.SetSecret("a", "alpha-value")
	beta.SetSecret("b", "beta-value")
	v := yamlViper(t, `
a: "@KeyVault(VaultName=alpha;SecretName=a)"
b: "@KeyVault(SecretUri=https://beta.vault.azure.net/secrets/b)"
`)
	srv.ResetCounters()
	p, err := load(t, srv, v, viperkv.WithManagedIdentity(azidentity.ClientID(idA.ClientID)),
		viperkv.WithVaultCredential("beta.vault.azure.net", managedIdentity(t, srv, idB)))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if a, b := p.GetString("a"), p.GetString("b"); a != "alpha-value" || b != "beta-value" {
		t.Errorf("a, b = %q, %q", a, b)
	}
	for _, id := range []kvtest.Identity{idA, idB} {
		if n := tokens.count(id); n != 1 {
			t.Errorf("tokens for %s = %d, want 1", id.Name, n)
		}
	}
	if n := srv.Count(kvtest.OpToken); n != 2 {
		t.Errorf("token requests = %d, want 2 (one per identity)", n)
	}
	for _, kv := range []*kvtest.Vault{alpha, beta} {
		if n := kv.Count(kvtest.OpChallenge); n != 1 {
			t.Errorf("%s challenges = %d, want 1", kv.Name(), n)
		}
	}

	if err := refreshOnce(t, p); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Load(ctx); err != nil {
		t.Fatalf("second Load: %v", err)
	}
	if n := srv.Count(kvtest.OpToken); n != 2 {
		t.Errorf("token requests after a Refresh and a second Load = %d, want still 2", n)
	}
	if n := srv.Count(kvtest.OpGetSecret); n != 6 {
		t.Errorf("GETs = %d, want 6 (two per Load and Refresh)", n)
	}
}

// A vault with no credential of its own uses the default one: where only another identity
// has a role, it fails with AccessToKeyVaultDenied, naming the credential that served it,
// while the vault with its own credential resolves.
func TestVaultWithoutOwnCredentialUsesTheDefault(t *testing.T) {
	srv, _ := newCountingEmulator(t)
	idA, idB := newIdentity(t, srv), newIdentity(t, srv)
	beta, gamma := srv.AddVault("beta"), srv.AddVault("gamma")
	beta.Grant(idB, kvtest.RoleSecretsUser)
	gamma.Grant(idB, kvtest.RoleSecretsUser) // but gamma is not given idB's credential
	beta.SetSecret("b", "beta-value")
	gamma.SetSecret("g", "gamma-value")
	v := yamlViper(t, `
b: "@KeyVault(VaultName=beta;SecretName=b)"
g: "@KeyVault(VaultName=gamma;SecretName=g)"
`)
	p, err := load(t, srv, v, viperkv.WithManagedIdentity(azidentity.ClientID(idA.ClientID)),
		viperkv.WithVaultCredential("beta.vault.azure.net", managedIdentity(t, srv, idB)))
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 1 || le.Failed[0].Key != "g" {
		t.Fatalf("Load = %v, want a LoadError for g only", err)
	}
	if got := p.GetString("b"); got != "beta-value" {
		t.Errorf("b = %q", got)
	}
	st := statusOf(t, p, "g")
	want := "credential: the default (managed identity, client ID " + idA.ClientID + ")"
	if st.Status != viperkv.StatusAccessToKeyVaultDenied || !strings.Contains(st.Reason, want) {
		t.Errorf("g: %s: %s; want AccessToKeyVaultDenied naming %q", st.Status, st.Reason, want)
	}
}

// WithVaultManagedIdentity makes the managed identity itself; vaults given the same
// identity share its token, even when their first requests go out together.
func TestVaultManagedIdentitySharedByVaults(t *testing.T) {
	srv, tokens := newCountingEmulator(t)
	idA, idB := newIdentity(t, srv), newIdentity(t, srv)
	var doc strings.Builder
	opts := []viperkv.Option{viperkv.WithManagedIdentity(azidentity.ClientID(idA.ClientID))}
	for i := range 4 {
		kv := srv.AddVault(fmt.Sprintf("shared%d", i))
		kv.Grant(idB, kvtest.RoleSecretsUser)
		kv.SetSecret("s", fmt.Sprintf("v%d", i))
		fmt.Fprintf(&doc, "k%d: \"@KeyVault(VaultName=shared%d;SecretName=s)\"\n", i, i)
		opts = append(opts, viperkv.WithVaultManagedIdentity(kv.Host(), azidentity.ClientID(idB.ClientID)))
	}
	srv.ResetCounters()
	p, err := load(t, srv, yamlViper(t, doc.String()), opts...)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for i := range 4 {
		if got := p.GetString(fmt.Sprintf("k%d", i)); got != fmt.Sprintf("v%d", i) {
			t.Errorf("k%d = %q", i, got)
		}
	}
	if n, a := tokens.count(idB), tokens.count(idA); n != 1 || a != 0 {
		t.Errorf("tokens: %s %d, %s %d; want 1 and 0 (the default identity serves no vault here)", idB.Name, n, idA.Name, a)
	}
}

// A vault's own credential that cannot get a token fails that vault only, and says which
// credential it was (its type, not what it holds).
func TestVaultCredentialFailureNamesTheCredential(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("s", "v")
	other := srv.AddVault("othervault")
	other.SetSecret("s", "v")
	v := yamlViper(t, `
good: "@KeyVault(VaultName=myvault;SecretName=s)"
bad: "@KeyVault(VaultName=othervault;SecretName=s)"
`)
	p, err := load(t, srv, v, viperkv.WithVaultCredential("othervault.vault.azure.net", failingCredential{}))
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 1 {
		t.Fatalf("Load = %v, want one failure", err)
	}
	st := statusOf(t, p, "bad")
	if !strings.Contains(st.Reason, "AzureCLICredential: executable not found on path") ||
		!strings.Contains(st.Reason, "credential: this vault's own (viperkv_test.failingCredential)") {
		t.Errorf("bad: %s: %s; want the credential's reason and its kind", st.Status, st.Reason)
	}
	if st := statusOf(t, p, "good"); st.Status != viperkv.StatusResolved {
		t.Errorf("good: %s: %s", st.Status, st.Reason)
	}
}

// tenantRouter sends the requests of a second emulator's tenant (its vaults, and Entra ID
// requests naming its tenant) to that emulator, and everything else to the first: the two
// emulators then stand for two tenants of one cloud, reached at production host names.
type tenantRouter struct {
	home, other *kvtest.Server
	otherVaults map[string]bool
}

func (r tenantRouter) Do(req *http.Request) (*http.Response, error) {
	srv := r.home
	if r.otherVaults[strings.ToLower(req.URL.Hostname())] ||
		strings.Contains(req.URL.Path+"?"+req.URL.RawQuery, r.other.TenantID()) {
		srv = r.other
	}
	return srv.Client().Do(req)
}

// A vault of another tenant, with an app of that tenant (client secret) as its credential:
// the vault's 401 challenge names its tenant, the credential gets that tenant's token, and
// the vault accepts it, while the home vault keeps the home tenant's managed identity.
// Without the vault's own credential the home identity's token is refused there (wrong
// issuer).
func TestVaultCredentialOfAnotherTenant(t *testing.T) {
	home, homeTokens := newCountingEmulator(t)
	otherTenant := "5d2c1b0a-9e8f-4a7b-8c6d-0f1e2d3c4b5a"
	otherTokens := &tokenLog{}
	other := kvtest.NewServer(kvtest.WithTenantID(otherTenant), kvtest.WithLogger(slog.New(otherTokens)))
	t.Cleanup(other.Close)

	id := newIdentity(t, home)
	homeVault := home.AddVault("homevault")
	homeVault.Grant(id, kvtest.RoleSecretsUser)
	homeVault.SetSecret("s", "home-value")

	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	app := other.AddUserIdentity("partner-app-"+hex.EncodeToString(secret[:4]), kvtest.WithClientSecret(hex.EncodeToString(secret)))
	partner := other.AddVault("partnervault")
	partner.Grant(app, kvtest.RoleSecretsUser)
	partner.SetSecret("s", "partner-value")

	router := tenantRouter{home: home, other: other, otherVaults: map[string]bool{partner.Host(): true}}
	appCred, err := azidentity.NewClientSecretCredential(otherTenant, app.ClientID, hex.EncodeToString(secret),
		&azidentity.ClientSecretCredentialOptions{ClientOptions: azcore.ClientOptions{Transport: router}})
	if err != nil {
		t.Fatal(err)
	}
	v := yamlViper(t, `
home: "@KeyVault(VaultName=homevault;SecretName=s)"
partner: "@KeyVault(VaultName=partnervault;SecretName=s)"
`)
	newProvider := func(opts ...viperkv.Option) (*viperkv.Provider, error) {
		p, err := viperkv.New(v, append([]viperkv.Option{viperkv.WithTransport(router),
			viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID))}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return p, p.Load(ctx)
	}

	p, err := newProvider(viperkv.WithVaultCredential(partner.Host(), appCred))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if h, o := p.GetString("home"), p.GetString("partner"); h != "home-value" || o != "partner-value" {
		t.Errorf("home, partner = %q, %q", h, o)
	}
	if n, m := homeTokens.count(id), otherTokens.count(app); n != 1 || m != 1 {
		t.Errorf("tokens: home identity %d, partner app %d; want 1 each", n, m)
	}
	if err := refreshOnce(t, p); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if n, m := home.Count(kvtest.OpToken), other.Count(kvtest.OpToken); n != 1 || m != 1 {
		t.Errorf("token requests after Refresh: home %d, other tenant %d; want still 1 each", n, m)
	}

	p2, err := newProvider()
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 1 || le.Failed[0].Key != "partner" {
		t.Fatalf("Load without the partner's credential = %v, want the partner vault to fail", err)
	}
	if st := statusOf(t, p2, "partner"); st.Status != viperkv.StatusUnauthorizedClient {
		t.Errorf("partner without its credential: %s: %s; want UnauthorizedClient", st.Status, st.Reason)
	}
}

// A host that is not a vault host references may name, one given a credential twice, or a
// nil credential is an error from New naming the option; New makes no request.
func TestWithVaultCredentialChecksItsHost(t *testing.T) {
	cred := failingCredential{}
	cases := []struct {
		name string
		opts []viperkv.Option
		want string // in the error; "" for none
	}{
		{"host", []viperkv.Option{viperkv.WithVaultCredential("other.vault.azure.net", cred)}, ""},
		{"upper case", []viperkv.Option{viperkv.WithVaultCredential("Other.Vault.Azure.Net", cred)}, ""},
		{"allowed host", []viperkv.Option{viperkv.WithAllowedHosts("kv.internal.example"),
			viperkv.WithVaultCredential("kv.internal.example", cred)}, ""},
		{"china", []viperkv.Option{viperkv.WithCloud(viperkv.CloudChina),
			viperkv.WithVaultManagedIdentity("other.vault.azure.cn", nil)}, ""},
		{"empty", []viperkv.Option{viperkv.WithVaultCredential("", cred)}, `WithVaultCredential(""): empty vault host`},
		{"bare name", []viperkv.Option{viperkv.WithVaultCredential("other", cred)}, `WithVaultCredential("other"): not a vault this provider may send tokens to`},
		{"url", []viperkv.Option{viperkv.WithVaultCredential("https://other.vault.azure.net/", cred)}, `WithVaultCredential("https://other.vault.azure.net/"): not a vault host`},
		{"other cloud", []viperkv.Option{viperkv.WithVaultCredential("other.vault.azure.cn", cred)}, "select that cloud"},
		{"foreign", []viperkv.Option{viperkv.WithVaultManagedIdentity("evil.example", nil)}, `WithVaultManagedIdentity("evil.example"): not a vault this provider may send tokens to`},
		{"ip", []viperkv.Option{viperkv.WithVaultCredential("127.0.0.1", cred)}, "IP address"},
		{"bad vault name", []viperkv.Option{viperkv.WithVaultCredential("a--b.vault.azure.net", cred)}, `WithVaultCredential("a--b.vault.azure.net")`},
		{"port", []viperkv.Option{viperkv.WithVaultCredential("other.vault.azure.net:8443", cred)}, "port"},
		{"nil credential", []viperkv.Option{viperkv.WithVaultCredential("other.vault.azure.net", nil)}, "nil credential"},
		{"twice", []viperkv.Option{viperkv.WithVaultCredential("other.vault.azure.net", cred),
			viperkv.WithVaultManagedIdentity("OTHER.vault.azure.net", nil)},
			`WithVaultManagedIdentity("OTHER.vault.azure.net"): vault other.vault.azure.net already has a credential (WithVaultCredential("other.vault.azure.net"))`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := viperkv.New(viper.New(), c.opts...)
			if c.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = p.Close()
				return
			}
			if err == nil {
				_ = p.Close()
				t.Fatalf("New succeeded, want an error containing %q", c.want)
			}
			if !strings.HasPrefix(err.Error(), "viperkv: New: WithVault") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v\nwant an error naming the option and containing %q", err, c.want)
			}
		})
	}
}
