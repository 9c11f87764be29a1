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
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/internal/emuinfo"
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
	if err := kvtest.ApplySeed(srv, loadSeed(t)); err != nil {
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
	if err := kvtest.ApplySeed(srv, sd); err == nil {
		t.Error("applied a seed of another tenant")
	}
	srv2 := kvtest.NewServer(kvtest.WithTenantID(sd.TenantID))
	defer srv2.Close()
	if err := kvtest.ApplySeed(srv2, sd); err != nil {
		t.Fatal(err)
	}
	app, _ := srv2.UserIdentity("app")
	if app.ClientID != "6a1f0c3e-0000-4000-8000-000000000001" {
		t.Errorf("client id %s", app.ClientID)
	}
	v := srv2.Vault("v.vault.usgovcloudapi.net")
	if v == nil || len(v.Versions("s")) != 2 || kvtest.Info(srv2, "").SystemIdentity != nil {
		t.Fatalf("seed not applied: %v", v)
	}
	if val, _ := v.SecretValue("s", ""); val != "two" {
		t.Errorf("latest = %q", val)
	}
}

// TestParseSeedMessages: a typo or a wrong type in a seed is named by the seed's own
// words (field, secret, line), never by Go type names, and a value is never quoted.
func TestParseSeedMessages(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown secret field": {
			"vaults:\n  - name: myvault\n    secrets:\n      - name: db-conn\n        vlaue: hunter2-sentinel\n",
			`unknown field "vlaue" in secret "db-conn" (line 5)`},
		"unknown top-level field": {"tenant: x\n", `unknown field "tenant" in the seed (line 1)`},
		"unknown vault field":     {"vaults:\n  - name: myvault\n    secret: []\n", `unknown field "secret" in vault "myvault" (line 3)`},
		"unknown identity field":  {"identities:\n  - {name: batch, clientid: x}\n", `unknown field "clientid" in identity "batch" (line 2)`},
		"unknown grant field": {
			"vaults:\n  - name: v\n    grants:\n      - identity: system\n        rol: reader\n",
			`unknown field "rol" in grant 1 of vault "v" (line 5)`},
		"unnamed secret": {
			"vaults:\n  - name: v\n    secrets:\n      - {name: a, value: x}\n      - {valu: hunter2-sentinel}\n",
			`unknown field "valu" in secret 2 of vault "v" (line 5)`},
		"not a boolean": {
			"vaults:\n  - name: v\n    secrets:\n      - name: s\n        value: x\n        enabled: hunter2-sentinel\n",
			`field "enabled" in secret "s" (line 6): want true or false`},
		"not a time": {
			"vaults:\n  - name: v\n    secrets:\n      - {name: s, value: x, expires: hunter2-sentinel}\n",
			`field "expires" in secret "s" (line 4): want a time such as 2030-01-01T00:00:00Z`},
		"not a string": {
			"vaults:\n  - name: v\n    secrets:\n      - name: s\n        value: [hunter2-sentinel]\n",
			`field "value" in secret "s" (line 5): want a string`},
		"not a list":    {"vaults: {name: v}\n", `field "vaults" in the seed (line 1): want a list`},
		"not a mapping": {"- name: v\n", `the seed (line 1): want a mapping`},
		"duplicate field": {
			"vaults:\n  - name: v\n    secrets:\n      - name: s\n        value: x\n        value: y\n",
			`field "value" appears twice in secret "s" (lines 5 and 6)`},
		"not a mapping item": {"vaults:\n  - name: v\n    secrets: [hunter2-sentinel]\n", `secret 1 of vault "v" (line 3): want a mapping`},
		"tags": {
			"vaults:\n  - name: v\n    secrets:\n      - {name: s, value: x, tags: [hunter2-sentinel]}\n",
			`field "tags" in secret "s" (line 4): want a mapping of strings`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := kvtest.ParseSeed(strings.NewReader(tc.doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q\nwant it to say %q", msg, tc.want)
			}
			for _, bad := range []string{"kvtest.Seed", "type ", "!!", "hunter2-sentinel", "time.Time", "map["} {
				if strings.Contains(msg, bad) {
					t.Errorf("error %q shows %q", msg, bad)
				}
			}
		})
	}
	// Every problem is reported, not only the first.
	_, err := kvtest.ParseSeed(strings.NewReader("vaults:\n  - name: v\n    secrets:\n      - {name: a, vlaue: x}\n      - {name: b, vaule: y}\n"))
	if err == nil || !strings.Contains(err.Error(), `"vlaue" in secret "a" (line 4)`) || !strings.Contains(err.Error(), `"vaule" in secret "b" (line 5)`) {
		t.Errorf("two typos: %v", err)
	}
	// Empty and comment-only seeds are empty seeds.
	for _, doc := range []string{"", "# nothing\n"} {
		if sd, err := kvtest.ParseSeed(strings.NewReader(doc)); err != nil || len(sd.Vaults) != 0 {
			t.Errorf("seed %q: %v, %v", doc, sd, err)
		}
	}
}

func TestInfoClient(t *testing.T) {
	srv := newServer(t)
	if err := kvtest.ApplySeed(srv, loadSeed(t)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), srv.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	in := kvtest.Info(srv, "ca.pem") // relative to the info file's directory
	if err := in.WriteFile(filepath.Join(dir, "info.json")); err != nil {
		t.Fatal(err)
	}
	info, err := emuinfo.Read(filepath.Join(dir, "info.json"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Vaults["myvault"] != srv.Vault("myvault").DirectURL() || info.TenantID != srv.TenantID() ||
		info.Identities["noaccess"].ClientID == "" || info.SystemIdentity == nil || info.CAFile != filepath.Join(dir, "ca.pem") {
		t.Fatalf("info = %+v", info)
	}
	hc, err := info.Client("the emulator")
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

// TestSeedWorkloadAndRotator: the example seed has a federated identity "workload" that
// reads myvault only (through workload identity, with a token the emulator signs) and an
// identity "rotator" that is Key Vault Secrets Officer on both vaults.
func TestSeedWorkloadAndRotator(t *testing.T) {
	sd := loadSeed(t)
	federated := map[string]bool{}
	for _, id := range sd.Identities {
		federated[id.Name] = id.Federated
	}
	if !federated["workload"] || federated["rotator"] || federated["noaccess"] {
		t.Errorf("federated identities of the seed: %v", federated)
	}
	srv := newServer(t)
	if err := kvtest.ApplySeed(srv, sd); err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	workload, ok := srv.UserIdentity("workload")
	if !ok {
		t.Fatal("identity workload missing")
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(srv.FederatedToken(workload)), 0o600); err != nil {
		t.Fatal(err)
	}
	wi, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: entraOptions(srv), ClientID: workload.ClientID, TenantID: srv.TenantID(), TokenFilePath: file,
	})
	if err != nil {
		t.Fatal(err)
	}
	my := newSecretsClient(t, srv, srv.Vault("myvault").URL(), wi)
	if _, err := my.GetSecret(ctx, "db-conn", "", nil); err != nil {
		t.Errorf("workload reads myvault: %v", err)
	}
	if _, err := my.SetSecret(ctx, "db-conn", azsecrets.SetSecretParameters{Value: to.Ptr("v")}, nil); err == nil {
		t.Error("workload (Secrets User) could write")
	}
	_, err = newSecretsClient(t, srv, srv.Vault("othervault").URL(), wi).GetSecret(ctx, "feature-flags", "", nil)
	if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" {
		t.Errorf("workload on othervault: %d %s", st, inner)
	}

	rotator, ok := srv.UserIdentity("rotator")
	if !ok {
		t.Fatal("identity rotator missing")
	}
	cred := newCred(t, srv, azidentity.ClientID(rotator.ClientID))
	for vault, secret := range map[string]string{"myvault": "api-key", "othervault": "feature-flags"} {
		c := newSecretsClient(t, srv, srv.Vault(vault).URL(), cred)
		if _, err := c.GetSecret(ctx, secret, "", nil); err != nil {
			t.Errorf("rotator reads %s: %v", vault, err)
		}
		if _, err := c.SetSecret(ctx, "rotated", azsecrets.SetSecretParameters{Value: to.Ptr("new")}, nil); err != nil {
			t.Errorf("rotator writes %s: %v", vault, err)
		}
	}

	// federated is a boolean, reported in the seed's own words.
	_, err = kvtest.ParseSeed(strings.NewReader("identities:\n  - name: wi\n    federated: sure\n"))
	if err == nil || !strings.Contains(err.Error(), `field "federated" in identity "wi" (line 3): want true or false`) {
		t.Errorf("federated: sure: %v", err)
	}
}
