package viperkv_test

import (
	"slices"
	"testing"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/reveal"
	"github.com/viperkv/viperkv/kvtest"
)

func TestHasReference(t *testing.T) {
	for s, want := range map[string]bool{
		"":                          false,
		"plain":                     false,
		"ops@example.com":           false,
		"@KeyVault(":                true,
		"x=@keyvault(VaultName=v)":  true,
		"@@KeyVault(literal)":       true, // an escape: rendering turns it into "@KeyVault(literal)"
		"a@b@Microsoft.KeyVault(":   true,
		"@Microsoft.KeyVaul(x)":     false,
		"@KeyVault":                 false,
		"user@host @ @KeyVault (x)": false,
	} {
		if got := viperkv.HasReference(s); got != want {
			t.Errorf("HasReference(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestSecretValues(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("a", "value-a")
	kv.SetSecret("b", "value-b")
	p, err := viperkv.New(yamlViper(t, `
x: "@KeyVault(VaultName=myvault;SecretName=a)"
y: "pre @KeyVault(VaultName=myvault;SecretName=a) @KeyVault(VaultName=myvault;SecretName=b)"
z: "@KeyVault(VaultName=myvault;SecretName=missing)"
`), viperkv.WithTransport(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if reveal.SecretValues(p) != nil {
		t.Error("SecretValues before Load is not nil")
	}
	_ = p.Load(t.Context())
	if got := reveal.SecretValues(p); !slices.Equal(got, []string{"value-a", "value-b"}) {
		t.Errorf("SecretValues = %d values, want the 2 resolved ones", len(got))
	}
}
