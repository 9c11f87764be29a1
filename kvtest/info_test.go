package kvtest_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/internal/emuinfo"
	"github.com/viperkv/viperkv/kvtest"
)

const seedTenant = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

var smallSeed = []byte(`
tenant_id: ` + seedTenant + `
identities:
  - name: wl
    federated: true
vaults:
  - name: seeded
    secrets:
      - {name: db, value: from-the-seed}
    grants:
      - {identity: wl, role: secrets-user}
`)

// TestWithSeed: a seed fills the server when it starts; its tenant becomes the server's;
// a mistake fails Start naming the line, and a tenant WithTenantID contradicts fails too.
func TestWithSeed(t *testing.T) {
	srv := kvtest.NewServerT(t, kvtest.WithSeed(smallSeed))
	if srv.TenantID() != seedTenant {
		t.Errorf("tenant %s, want the seed's %s", srv.TenantID(), seedTenant)
	}
	if v, ok := srv.Vault("seeded").SecretValue("db", ""); !ok || v != "from-the-seed" {
		t.Errorf("seeded/db = %q, %v", v, ok)
	}
	if _, ok := srv.UserIdentity("wl"); !ok {
		t.Error("identity wl missing")
	}

	_, err := kvtest.Start(kvtest.WithSeed([]byte("vaults:\n  - name: v\n    secrets:\n      - {name: a, vlaue: x}\n")))
	if err == nil || !strings.Contains(err.Error(), `unknown field "vlaue"`) || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("Start with a typo in the seed: %v", err)
	}
	_, err = kvtest.Start(kvtest.WithSeed(smallSeed), kvtest.WithTenantID(kvtest.DefaultTenantID))
	if err == nil || !strings.Contains(err.Error(), "seed tenant") {
		t.Errorf("Start with a seed tenant WithTenantID contradicts: %v", err)
	}
	srv2, err := kvtest.Start(kvtest.WithSeed(smallSeed), kvtest.WithTenantID(strings.ToUpper(seedTenant)))
	if err != nil {
		t.Fatalf("Start with the same tenant twice: %v", err)
	}
	srv2.Close()
}

// TestWriteInfo: WriteInfo writes the info file, the CA and a federated token beside it;
// the SDK reaches the vault with nothing but those files (the proxy the info names, the
// CA it names, the workload identity's token file); Close removes every file WriteInfo
// wrote except one another process replaced.
func TestWriteInfo(t *testing.T) {
	srv, err := kvtest.Start(kvtest.WithSeed(smallSeed))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "sub") // created by WriteInfo
	path := filepath.Join(dir, "emu.json")
	if err := srv.WriteInfo(path, ""); err != nil {
		t.Fatal(err)
	}
	info, err := emuinfo.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	ca, token := filepath.Join(dir, "emu.ca.pem"), filepath.Join(dir, "emu.wl.token")
	if info.CAFile != ca || info.Identities["wl"].FederatedTokenFile != token || info.ProxyURL != srv.ProxyURL() || info.TenantID != seedTenant {
		t.Fatalf("info = %+v", info)
	}
	for file, perm := range map[string]os.FileMode{path: 0o600, ca: 0o644, token: 0o600} {
		if st, err := os.Stat(file); err != nil || st.Mode().Perm() != perm {
			t.Errorf("%s: %v, mode %v, want %v", file, err, st.Mode().Perm(), perm)
		}
	}
	if b, _ := os.ReadFile(ca); !bytes.Equal(b, srv.CACertPEM()) {
		t.Error("the CA file does not hold the server's CA")
	}

	// A process with only the files: the info's client and the workload identity's
	// variables, production URLs, challenge verification on.
	hc, err := info.Client("the emulator")
	if err != nil {
		t.Fatal(err)
	}
	env, err := info.WorkloadIdentityEnv("wl")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: hc},
		ClientID:      env["AZURE_CLIENT_ID"], TenantID: env["AZURE_TENANT_ID"], TokenFilePath: env["AZURE_FEDERATED_TOKEN_FILE"],
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient("https://seeded.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: policy.ClientOptions{Transport: hc}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetSecret(context.Background(), "db", "", nil)
	if err != nil || *got.Value != "from-the-seed" {
		t.Fatalf("GetSecret through the info file: %v", err)
	}

	// Someone else's CA at the same path survives Close; everything else goes.
	if err := os.WriteFile(ca, []byte("another emulator's CA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	for _, file := range []string{path, token} {
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Errorf("%s still there after Close: %v", file, err)
		}
	}
	if b, err := os.ReadFile(ca); err != nil || string(b) != "another emulator's CA\n" {
		t.Errorf("a replaced file was removed or changed: %q, %v", b, err)
	}
	if err := srv.WriteInfo(path, ""); err == nil {
		t.Error("WriteInfo after Close succeeded")
	}
}

// TestWriteInfoCAFile: an explicit CA path is honoured and recorded.
func TestWriteInfoCAFile(t *testing.T) {
	srv := kvtest.NewServerT(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "certs", "kv.pem")
	if err := srv.WriteInfo(filepath.Join(dir, "info.json"), ca); err != nil {
		t.Fatal(err)
	}
	info, err := emuinfo.Read(filepath.Join(dir, "info.json"))
	if err != nil || info.CAFile != ca {
		t.Fatalf("info %+v, %v", info, err)
	}
	if _, err := os.Stat(ca); err != nil {
		t.Fatal(err)
	}
}
