package kvtest_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

func loadSeed(t *testing.T) *kvtest.Seed {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "emulator-seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sd, err := kvtest.ParseSeed(f)
	if err != nil {
		t.Fatal(err)
	}
	return sd
}

func TestApplySeed(t *testing.T) {
	srv := newServer(t)
	if err := srv.ApplySeed(loadSeed(t)); err != nil {
		t.Fatal(err)
	}
	kv := srv.Vault("myvault")
	if kv == nil || srv.Vault("othervault") == nil {
		t.Fatal("vaults missing")
	}
	noaccess, ok := srv.UserIdentity("noaccess")
	if !ok {
		t.Fatal("identity noaccess missing")
	}
	ctx := ctxTimeout(t, 30*time.Second)
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	for _, name := range []string{"db-conn", "api-key", "db-password"} {
		if _, err := c.GetSecret(ctx, name, "", nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	r, err := c.GetSecret(ctx, "db-conn", "", nil)
	if err != nil || *r.ContentType != "text/plain" || *r.Tags["env"] != "local" {
		t.Errorf("db-conn properties: %v", err)
	}
	denied := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(noaccess.ClientID)))
	_, err = denied.GetSecret(ctx, "db-conn", "", nil)
	if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" {
		t.Errorf("noaccess: %d %s", st, inner)
	}
}

func TestParseSeedErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":    "vaults:\n  - name: v\n    secret: []\n",
		"bad secret name":  "vaults:\n  - name: v\n    secrets:\n      - {name: bad_name, value: x}\n",
		"bad vault name":   "vaults:\n  - name: -v-\n",
		"unknown identity": "vaults:\n  - name: v\n    grants:\n      - {identity: ghost, role: reader}\n",
		"unknown role":     "vaults:\n  - name: v\n    grants:\n      - {identity: system, role: owner}\n",
		"reserved name":    "identities:\n  - name: system\n",
		"bad client id":    "identities:\n  - {name: a, client_id: nope}\n",
		"bad tenant":       "tenant_id: contoso\n",
		"duplicate vault":  "vaults:\n  - name: v\n  - name: V.vault.azure.net\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := kvtest.ParseSeed(strings.NewReader(doc)); err == nil {
				t.Errorf("accepted:\n%s", doc)
			}
		})
	}
	sd, err := kvtest.ParseSeed(strings.NewReader(`
tenant_id: 11111111-2222-4333-8444-555555555555
disable_system_identity: true
identities:
  - {name: app, client_id: 6A1F0C3E-0000-4000-8000-000000000001}
vaults:
  - name: v.vault.usgovcloudapi.net
    secrets:
      - {name: s, value: one, enabled: false, expires: 2030-01-02T03:04:05Z}
      - {name: s, value: two}
    grants:
      - {identity: APP, role: secrets-officer}
`))
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t)
	if err := srv.ApplySeed(sd); err == nil {
		t.Error("applied a seed of another tenant")
	}
	srv2 := kvtest.NewServer(kvtest.WithTenantID(sd.TenantID))
	defer srv2.Close()
	if err := srv2.ApplySeed(sd); err != nil {
		t.Fatal(err)
	}
	app, _ := srv2.UserIdentity("app")
	if app.ClientID != "6a1f0c3e-0000-4000-8000-000000000001" {
		t.Errorf("client id %s", app.ClientID)
	}
	v := srv2.Vault("v.vault.usgovcloudapi.net")
	if v == nil || len(v.Versions("s")) != 2 || srv2.Info("").SystemIdentity != nil {
		t.Fatalf("seed not applied: %v", v)
	}
	if val, _ := v.SecretValue("s", ""); val != "two" {
		t.Errorf("latest = %q", val)
	}
}

func TestInfoClient(t *testing.T) {
	srv := newServer(t)
	if err := srv.ApplySeed(loadSeed(t)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), srv.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	in := srv.Info("ca.pem") // relative to the info file's directory
	if err := in.WriteFile(filepath.Join(dir, "info.json")); err != nil {
		t.Fatal(err)
	}
	info, err := kvtest.ReadInfo(filepath.Join(dir, "info.json"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Vaults["myvault"] != srv.Vault("myvault").DirectURL() || info.TenantID != srv.TenantID() ||
		info.Identities["noaccess"].ClientID == "" || info.SystemIdentity == nil || info.CAFile != filepath.Join(dir, "ca.pem") {
		t.Fatalf("info = %+v", info)
	}
	hc, err := info.Client()
	if err != nil {
		t.Fatal(err)
	}
	// Only the info: the environment and the transport come from the file.
	for k, v := range info.Env() {
		t.Setenv(k, v)
	}
	opts := azcore.ClientOptions{Transport: hc}
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	c, err := azsecrets.NewClient("https://myvault.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSecret(ctx, "api-key", "", nil); err != nil {
		t.Fatal(err)
	}
	opts.Retry = policy.RetryOptions{MaxRetries: -1}
	missing, _ := azsecrets.NewClient("https://missing.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: opts})
	var dns *net.DNSError
	if _, err := missing.GetSecret(ctx, "s", "", nil); !errors.As(err, &dns) || !dns.IsNotFound {
		t.Errorf("unknown vault: %v", err)
	}
	// IMDS through the info client.
	useIMDS(t)
	imdsCred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts,
		ID: azidentity.ClientID(info.Identities["noaccess"].ClientID)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imdsCred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}); err != nil {
		t.Errorf("IMDS via info client: %v", err)
	}
}
