package viperkv_test

import (
	"strings"
	"testing"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// What a vault lists is untrusted data: these tests forge list pages (kvtest.Fault.Body)
// that no real vault would send and check that nothing they say is obeyed.

// listItem renders one list item whose id is id (raw JSON, already quoted or null).
func listItem(id string) string {
	return `{"id":` + id + `,"attributes":{"enabled":true,"created":1700000000,"updated":1700000000}}`
}

// listPage renders a list page of items with nextLink (raw JSON, null to end).
func listPage(nextLink string, items ...string) string {
	return `{"value":[` + strings.Join(items, ",") + `],"nextLink":` + nextLink + `}`
}

// A listed name that holds a reference is a name, not a reference: it neither reads
// another vault nor becomes a key, and the sentinel stored there appears nowhere.
func TestVaultSourceListedNameIsNotAReference(t *testing.T) {
	srv, kv := importVault(t)
	other := srv.AddVault("other")
	other.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	const sentinel = "SENTINEL-other-admin-5b0d"
	other.SetSecret("admin", sentinel)
	kv.SetSecret("good", "good-value")
	forged := listPage("null",
		listItem(`"https://myvault.vault.azure.net/secrets/x)@KeyVault(VaultName=other;SecretName=admin"`),
		listItem(`"https://myvault.vault.azure.net/secrets/good"`))
	kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Body: forged})
	logs := &redirLog{}
	p, err := importProvider(t, srv, nil, logs, viperkv.WithVaultSource("myvault"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if n := other.Count(kvtest.OpGetSecret) + other.Count(kvtest.OpChallenge); n != 0 {
		t.Fatalf("%d requests reached vault other, which no configuration names", n)
	}
	if got := p.GetString("good"); got != "good-value" {
		t.Errorf("good = %q: the well-formed item of the same page must still import", got)
	}
	for _, k := range p.Viper().AllKeys() {
		if k != "good" {
			t.Errorf("key %q imported from a forged name", k)
		}
	}
	st := p.VaultSources()
	if len(st) != 1 || st[0].Skipped["malformed"] != 1 {
		t.Errorf("VaultSources = %+v, want 1 skipped as malformed", st)
	}
	var lc viperkv.LeakCheck
	lc.Status(p)
	lc.Err(err)
	lc.Check(t, p, sentinel, logs.String())
}
