package viperkv_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// Every 403 is told apart (issue #25): through the real azsecrets client over HTTPS to
// the emulator, a vault whose firewall refuses the caller, one whose public network
// access is disabled, one without a role for the identity and an access policy vault
// without a policy for it each give their own status and a reason naming the fix. None is
// retried (a 403 is the vault's answer, not a blip), and no reason or log shows a value.
func TestLoadTellsEvery403Apart(t *testing.T) {
	t.Parallel()
	srv := kvtest.NewServerT(t)
	id := srv.SystemIdentity()
	const value = "FORBIDDEN-SENTINEL-5e1d"
	vault := func(name string) *kvtest.Vault {
		kv := srv.AddVault(name)
		kv.SetSecret("s", value)
		return kv
	}
	fw := vault("fwvault")
	fw.Grant(id, kvtest.RoleSecretsUser) // the role is not what refuses
	fw.SetNetworkAccess(kvtest.NetworkAccess{FirewallDeny: true})
	pl := vault("plvault")
	pl.Grant(id, kvtest.RoleSecretsUser)
	pl.SetNetworkAccess(kvtest.NetworkAccess{PublicAccessDisabled: true})
	rbac := vault("rbacvault") // no role
	ap := vault("apvault")     // an access policy vault without a policy for the identity
	ap.SetPermissionModel(kvtest.PermissionAccessPolicy)
	ok := vault("okvault")
	ok.Grant(id, kvtest.RoleSecretsUser)

	var logs logtest.Buffer
	p, err := viperkv.New(yamlViper(t, `
firewalled: "@KeyVault(VaultName=fwvault;SecretName=s)"
private: "@KeyVault(SecretUri=https://plvault.vault.azure.net/secrets/s/)"
norole: "@KeyVault(VaultName=rbacvault;SecretName=s)"
nopolicy: "@KeyVault(VaultName=apvault;SecretName=s)"
fine: "@KeyVault(VaultName=okvault;SecretName=s)"
`), viperkv.WithEmulator(srv), viperkv.WithFetchTimeout(30*time.Second), debugLog(&logs))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Load(context.Background())
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 4 {
		t.Fatalf("Load = %v, want a LoadError for the four denied references", err)
	}
	oid := id.ObjectID
	for _, tc := range []struct {
		key    string
		status viperkv.Status
		reason string
	}{
		{"firewalled", viperkv.StatusForbiddenByFirewall, "GET https://fwvault.vault.azure.net/secrets/s: 403: the vault's firewall refuses this caller " +
			"(ForbiddenByFirewall): allow the app's outbound IP (the vault saw 127.0.0.1) or virtual network in the vault's networking settings, " +
			"or reach it through a private endpoint"},
		{"private", viperkv.StatusForbiddenByConnection, "GET https://plvault.vault.azure.net/secrets/s: 403: the vault's public network access " +
			"is disabled (ForbiddenByConnection): reach the vault through its private endpoint; check that plvault.vault.azure.net resolves to " +
			"a private address (privatelink.vaultcore.azure.net)"},
		{"norole", viperkv.StatusAccessToKeyVaultDenied, "GET https://rbacvault.vault.azure.net/secrets/s: 403: no role assignment lets the " +
			"identity read secrets: grant the identity (object id " + oid + ") Key Vault Secrets User on the vault or secret (ForbiddenByRbac)"},
		{"nopolicy", viperkv.StatusAccessToKeyVaultDenied, "GET https://apvault.vault.azure.net/secrets/s: 403: the vault's access policies do " +
			"not let the identity get secrets: add Get to the secret permissions of an access policy for this identity (object id " + oid +
			"; ForbiddenByPolicy)"},
	} {
		st := statusOf(t, p, tc.key)
		if st.Status != tc.status || st.Reason != tc.reason {
			t.Errorf("%s: %s: %s\nwant %s: %s", tc.key, st.Status, st.Reason, tc.status, tc.reason)
		}
		// The error names the key, the status and the reason.
		if !strings.Contains(err.Error(), tc.key+" (vault ") || !strings.Contains(err.Error(), string(tc.status)+": "+tc.reason) {
			t.Errorf("the LoadError does not name %s with its status and reason:\n%v", tc.key, err)
		}
	}
	if st := statusOf(t, p, "fine"); st.Status != viperkv.StatusResolved || p.GetString("fine") != value {
		t.Errorf("fine: %s (%s)", st.Status, st.Reason)
	}
	// Permanent: one request each, no retry.
	for name, n := range map[string]int64{
		"fwvault": fw.Count(kvtest.OpNetworkDenied), "plvault": pl.Count(kvtest.OpNetworkDenied),
		"rbacvault": rbac.Count(kvtest.OpForbidden), "apvault": ap.Count(kvtest.OpForbidden),
	} {
		if n != 1 {
			t.Errorf("%s was asked %d times, want once", name, n)
		}
	}
	for _, s := range append([]string{err.Error(), logs.String()}, reasons(p)...) {
		if strings.Contains(s, value) {
			t.Errorf("a secret value appears in an error, a reason or the logs")
		}
	}
	if l := logs.String(); strings.Contains(l, "trusted service") || strings.Contains(l, "does not have secrets") {
		t.Errorf("the logs repeat the vault's message:\n%s", l)
	}
}

// A vault source whose vault refuses the list for its network says so with the status
// and the fix, as a reference does.
func TestVaultSourceForbiddenByNetwork(t *testing.T) {
	t.Parallel()
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("walledvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("Db--Password", "WALLED-SENTINEL-77aa")
	kv.SetNetworkAccess(kvtest.NetworkAccess{PublicAccessDisabled: true})
	p, err := viperkv.New(yamlViper(t, "app: x\n"), viperkv.WithEmulator(srv), viperkv.WithVaultSource("walledvault"),
		viperkv.WithFetchTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Load(context.Background())
	var ve *viperkv.VaultSourceError
	if !errors.As(err, &ve) || ve.Status != viperkv.StatusForbiddenByConnection ||
		!strings.Contains(ve.Reason, "(list): 403: the vault's public network access is disabled (ForbiddenByConnection): reach the vault through its private endpoint") {
		t.Fatalf("Load = %v, want a VaultSourceError with ForbiddenByConnection", err)
	}
	if strings.Contains(err.Error(), "WALLED-SENTINEL") {
		t.Error("a secret value appears in the error")
	}
}

// reasons returns the reason of every reference of p.
func reasons(p *viperkv.Provider) []string {
	var out []string
	for _, st := range p.Status() {
		out = append(out, st.Reason)
	}
	return out
}
