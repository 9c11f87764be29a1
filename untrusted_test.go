package viperkv_test

import (
	"context"

	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
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
	logs := &logtest.Buffer{}
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

// List items whose id does not parse, names no secret, or names another vault are
// skipped with a count, in a vault source and in list version checks; the process
// does not crash and the well-formed items still count.
func TestMalformedListItemsAreSkipped(t *testing.T) {
	bad := []string{
		`"https://myvault.vault.azure.net/secrets/a%zz"`,
		`"https://myvault.vault.azure.net/secrets/a\u0000b"`,
		`"https://myvault.vault.azure.net/secrets"`,
		`"https://myvault.vault.azure.net/secrets/"`,
		`"https://myvault.vault.azure.net/keys/k1"`,
		`"https://other.vault.azure.net/secrets/elsewhere"`,
		`"http://myvault.vault.azure.net/secrets/plain"`,
		`"not a url"`,
		`""`,
		`null`,
		`"https://myvault.vault.azure.net/secrets/` + strings.Repeat("n", 128) + `"`,
		`"https://myvault.vault.azure.net/secrets/under_score"`,
	}
	items := func(good ...string) []string {
		out := append([]string(nil), bad...)
		for _, g := range good {
			out = append(out, listItem(`"https://myvault.vault.azure.net/secrets/`+g+`"`))
		}
		for i := range bad {
			out[i] = listItem(bad[i])
		}
		return out
	}

	t.Run("vault source", func(t *testing.T) {
		srv, kv := importVault(t)
		kv.SetSecret("good", "good-value")
		kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Body: listPage("null", items("good")...)})
		p, err := importProvider(t, srv, nil, &logtest.Buffer{}, viperkv.WithVaultSource("myvault"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got := p.GetString("good"); got != "good-value" {
			t.Errorf("good = %q", got)
		}
		if keys := p.Viper().AllKeys(); len(keys) != 1 {
			t.Errorf("keys %v, want only good", keys)
		}
		if st := p.VaultSources(); len(st) != 1 || st[0].Skipped["malformed"] != len(bad) {
			t.Errorf("VaultSources = %+v, want %d skipped as malformed", st, len(bad))
		}
	})

	t.Run("version checks", func(t *testing.T) {
		srv, kv := importVault(t)
		kv.SetSecret("a", "a-1")
		kv.SetSecret("b", "b-1")
		v := viper.New()
		v.Set("a", "@KeyVault(VaultName=myvault;SecretName=a)")
		v.Set("b", "@KeyVault(VaultName=myvault;SecretName=b)")
		p, err := importProvider(t, srv, v, &logtest.Buffer{}, viperkv.WithVersionCheck(viperkv.VersionCheckList),
			viperkv.WithRefreshInterval(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Body: listPage("null", items()...)})
		kv.SetSecret("a", "a-2")
		watch(t, p)
		// The forged list names neither a nor b: they are gone from a complete list, so
		// a GET checks each and finds a's rotation.
		waitFor(t, 10*time.Second, "a's rotation", func() bool { return p.GetString("a") == "a-2" })
	})
}

// A nextLink that loops (every page points at itself) or leads away from the vault's list
// is not followed: the list stops at once and fails, a vault source keeps its keys and
// says why, and list version checks falls back to a GET per secret, so a rotation is
// seen and the status does not claim a check that never happened.
func TestListNextLinkLoops(t *testing.T) {
	const self = `"https://myvault.vault.azure.net:443/secrets?api-version=2026-04-01&$skiptoken=loop&maxresults=25"`
	for _, tc := range []struct{ name, next string }{
		{"self", self},
		{"other host", `"https://other.vault.azure.net:443/secrets?api-version=2026-04-01&$skiptoken=x&maxresults=25"`},
		{"other path", `"https://myvault.vault.azure.net:443/secrets/good/versions?api-version=2026-04-01"`},
		{"not https", `"http://myvault.vault.azure.net/secrets?api-version=2026-04-01&$skiptoken=y"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, kv := importVault(t)
			kv.SetSecret("a", "a-1")
			kv.SetSecret("b", "b-1")
			v := viper.New()
			v.Set("a", "@KeyVault(VaultName=myvault;SecretName=a)")
			v.Set("b", "@KeyVault(VaultName=myvault;SecretName=b)")
			p, err := importProvider(t, srv, v, &logtest.Buffer{}, viperkv.WithVersionCheck(viperkv.VersionCheckList),
				viperkv.WithRefreshInterval(200*time.Millisecond), viperkv.WithFetchTimeout(30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			page := listPage(tc.next, listItem(`"https://myvault.vault.azure.net/secrets/a"`), listItem(`"https://myvault.vault.azure.net/secrets/b"`))
			kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Body: page})
			kv.ResetCounters()
			kv.SetSecret("a", "a-2")
			watch(t, p)
			waitFor(t, 10*time.Second, "a's rotation", func() bool { return p.GetString("a") == "a-2" })
			// Each cycle reads at most the forged page and its one repeat before it stops.
			lists, gets := kv.Count(kvtest.OpListSecrets), kv.Count(kvtest.OpGetSecret)
			if lists > 2*gets+4 {
				t.Errorf("%d list pages for %d GETs: the loop is followed", lists, gets)
			}
		})
	}

	t.Run("vault source", func(t *testing.T) {
		srv, kv := importVault(t)
		kv.SetSecret("good", "good-value")
		p, err := importProvider(t, srv, nil, &logtest.Buffer{}, viperkv.WithVaultSource("myvault"), viperkv.WithFetchTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Body: listPage(self, listItem(`"https://myvault.vault.azure.net/secrets/good"`))})
		kv.ResetCounters()
		start := time.Now()
		err = p.Load(context.Background())
		if err == nil || !strings.Contains(err.Error(), "nextLink") {
			t.Errorf("Load = %v, want the vault source's list to fail naming the nextLink", err)
		}
		if n := kv.Count(kvtest.OpListSecrets); n > 3 {
			t.Errorf("%d list pages: the loop was followed", n)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("Load took %v with a 30 s fetch timeout: the loop ran to the deadline", d)
		}
		if got := p.GetString("good"); got != "good-value" {
			t.Errorf("good = %q: a failed list must keep the source's keys", got)
		}
		st := p.VaultSources()
		if len(st) != 1 || st[0].Err == nil {
			t.Errorf("VaultSources = %+v, want the list's error", st)
		}
	})
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, d)
		}
	}
}
