//go:build !windows

package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/viperkv/viperkv/kvtest"
)

// forbiddenSeed has a vault for each reason Key Vault gives a 403, and one that answers.
const forbiddenSeed = `
vaults:
  - name: fwvault
    firewall: deny
    secrets: [{name: s, value: "FORBIDDEN-CLI-SENTINEL-1"}]
    grants: [{identity: system, role: Key Vault Secrets User}]
  - name: plvault
    public_network_access: disabled
    secrets: [{name: s, value: "FORBIDDEN-CLI-SENTINEL-2"}]
    grants: [{identity: system, role: Key Vault Secrets User}]
  - name: rbacvault
    secrets: [{name: s, value: "FORBIDDEN-CLI-SENTINEL-3"}]
  - name: apvault
    permission_model: access_policy
    secrets: [{name: s, value: "FORBIDDEN-CLI-SENTINEL-4"}]
  - name: okvault
    secrets: [{name: s, value: "FORBIDDEN-CLI-SENTINEL-5"}]
    grants: [{identity: system, role: Key Vault Secrets User}]
`

// viperkv check, the real binary against an emulator of its own (seeded with each 403)
// through its info file: each 403 has its status and its reason with the fix, in the
// table and in JSON; no value is shown, and no DNS warning, since the emulator routes the
// vault hosts itself.
func TestCheckTellsEvery403Apart(t *testing.T) {
	t.Parallel()
	srv, err := kvtest.Start(kvtest.WithSeed([]byte(forbiddenSeed)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	info := filepath.Join(t.TempDir(), "forbidden.json")
	if err := srv.WriteInfo(info, ""); err != nil {
		t.Fatal(err)
	}
	env := []string{emulatorInfoEnv + "=" + info} // after the shared emulator's: this one wins
	config := writeFile(t, "config.yaml", `
firewalled: "@KeyVault(VaultName=fwvault;SecretName=s)"
private: "@KeyVault(VaultName=plvault;SecretName=s)"
norole: "@KeyVault(VaultName=rbacvault;SecretName=s)"
nopolicy: "@KeyVault(VaultName=apvault;SecretName=s)"
fine: "@KeyVault(VaultName=okvault;SecretName=s)"
`)
	oid := srv.SystemIdentity().ObjectID
	want := map[string]struct{ status, reason string }{
		"firewalled": {"ForbiddenByFirewall", "GET https://fwvault.vault.azure.net/secrets/s: 403: the vault's firewall refuses this caller " +
			"(ForbiddenByFirewall): allow the app's outbound IP (the vault saw 127.0.0.1) or virtual network in the vault's networking " +
			"settings, or reach it through a private endpoint"},
		"private": {"ForbiddenByConnection", "GET https://plvault.vault.azure.net/secrets/s: 403: the vault's public network access is " +
			"disabled (ForbiddenByConnection): reach the vault through its private endpoint; check that plvault.vault.azure.net " +
			"resolves to a private address (privatelink.vaultcore.azure.net)"},
		"norole": {"AccessToKeyVaultDenied", "GET https://rbacvault.vault.azure.net/secrets/s: 403: no role assignment lets the identity " +
			"read secrets: grant the identity (object id " + oid + ") Key Vault Secrets User on the vault or secret (ForbiddenByRbac)"},
		"nopolicy": {"AccessToKeyVaultDenied", "GET https://apvault.vault.azure.net/secrets/s: 403: the vault's access policies do not " +
			"let the identity get secrets: add Get to the secret permissions of an access policy for this identity (object id " + oid +
			"; ForbiddenByPolicy)"},
	}

	code, out, errOut := cli(t, env, "check", "--config", config)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	for key, w := range want {
		if !regexp.MustCompile(`(?m)^` + key + `\s.*\s` + w.status + `\s`).MatchString(out) {
			t.Errorf("no row %s ... %s in:\n%s", key, w.status, out)
		}
		if line := "  " + key + ": " + w.status + ": " + w.reason + "\n"; !strings.Contains(out, line) {
			t.Errorf("no line %q in:\n%s", line, out)
		}
	}
	if !regexp.MustCompile(`(?m)^fine\s.*\sResolved\s`).MatchString(out) || !strings.Contains(out, "4 of 5 references failed:") {
		t.Errorf("fine should resolve, 4 of 5 fail:\n%s", out)
	}
	if strings.Contains(out+errOut, "DNS warning") {
		t.Errorf("a DNS warning against the emulator:\n%s", out)
	}
	if strings.Contains(out+errOut, "FORBIDDEN-CLI-SENTINEL") {
		t.Errorf("a secret value in the output:\n%s%s", out, errOut)
	}

	code, out, errOut = cli(t, env, "check", "--config", config, "-o", "json")
	if code != 1 {
		t.Fatalf("json: exit %d, want 1\n%s%s", code, out, errOut)
	}
	var doc map[string]json.RawMessage
	var rows struct{ References []checkRow }
	if json.Unmarshal([]byte(out), &doc) != nil || json.Unmarshal([]byte(out), &rows) != nil {
		t.Fatalf("not JSON:\n%s", out)
	}
	if _, ok := doc["dns_warnings"]; ok {
		t.Errorf("dns_warnings against the emulator:\n%s", out)
	}
	for _, r := range rows.References {
		if w, ok := want[r.Key]; ok && (r.Status != w.status || r.Reason != w.reason) {
			t.Errorf("%s: %s: %s\nwant %s: %s", r.Key, r.Status, r.Reason, w.status, w.reason)
		}
	}
	// Permanent: one request each, however many fetches check made.
	for _, v := range []string{"fwvault", "plvault"} {
		if n := srv.Vault(v).Count(kvtest.OpNetworkDenied); n != 2 { // once per check run
			t.Errorf("%s refused %d requests, want 2 (one per run)", v, n)
		}
	}
}
