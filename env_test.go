package viperkv_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
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
	if reveal.Secrets(p) != nil {
		t.Error("Secrets before Load is not nil")
	}
	_ = p.Load(t.Context())
	want := []reveal.Secret{{Vault: "myvault.vault.azure.net", Name: "a", Value: "value-a"}, {Vault: "myvault.vault.azure.net", Name: "b", Value: "value-b"}}
	if got := reveal.Secrets(p); !slices.Equal(got, want) {
		t.Errorf("Secrets = %d secrets, want the 2 resolved ones, named", len(got))
	}
}

// Forgetting WithEnvKeys used to be silent: with AutomaticEnv and a prefix, Viper lists no
// key for APP_API_KEY, so its reference went unresolved and api.key read as "". Load now
// warns, naming the variable and the fix, without failing; naming the key resolves it, and a
// variable bound to a key is not reported.
func TestUnnamedEnvReferenceIsReported(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("api-key", "k-123")
	kv.SetSecret("bound", "b-123")
	t.Setenv("APP_API_KEY", "@KeyVault(VaultName=myvault;SecretName=api-key)")
	t.Setenv("APP_BOUND_ONE", "@KeyVault(VaultName=myvault;SecretName=bound)")
	t.Setenv("OTHER_THING", "@KeyVault(VaultName=myvault;SecretName=api-key)") // not under the prefix
	appViper := func() *viper.Viper {
		v := yamlViper(t, "plain: x\n")
		v.SetEnvPrefix("APP")
		v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
		v.AutomaticEnv()
		if err := v.BindEnv("bound.one", "APP_BOUND_ONE"); err != nil {
			t.Fatal(err)
		}
		return v
	}

	var logs logtest.Buffer
	p, err := viperkv.New(appViper(), viperkv.WithTransport(srv.Client()),
		viperkv.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(t.Context()); err != nil {
		t.Fatalf("Load: %v (a warning must not fail Load)", err)
	}
	var warned []viperkv.ReferenceStatus
	for _, st := range p.Status() {
		if st.Status == viperkv.StatusEnvKeyNotNamed {
			warned = append(warned, st)
		}
	}
	if len(warned) != 1 || warned[0].Key != "api.key" || !strings.Contains(warned[0].Reason, "APP_API_KEY") ||
		!strings.Contains(warned[0].Reason, `WithEnvKeys("api.key")`) || warned[0].Reference.Name != "api-key" {
		t.Fatalf("EnvKeyNotNamed rows = %+v, want one for api.key naming APP_API_KEY and the fix", warned)
	}
	if got := p.GetString("bound.one"); got != "b-123" {
		t.Errorf("bound.one = %q, want the secret", got)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "APP_API_KEY") {
		t.Errorf("no Warn log line names APP_API_KEY:\n%s", logs.String())
	}

	p2, err := viperkv.New(appViper(), viperkv.WithTransport(srv.Client()), viperkv.WithEnvKeys("api.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, st := range p2.Status() {
		if st.Status != viperkv.StatusResolved {
			t.Errorf("with WithEnvKeys: %s is %s: %s", st.Key, st.Status, st.Reason)
		}
	}
	if got := p2.GetString("api.key"); got != "k-123" {
		t.Errorf("api.key = %q with WithEnvKeys, want the secret", got)
	}

	// Without a prefix no variable can be told to be this app's: none is reported.
	noPrefix := yamlViper(t, "plain: x\n")
	noPrefix.AutomaticEnv()
	p3, err := viperkv.New(noPrefix, viperkv.WithTransport(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if err := p3.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := p3.Status(); len(st) != 0 {
		t.Errorf("without a prefix: Status = %+v, want nothing", st)
	}
}
