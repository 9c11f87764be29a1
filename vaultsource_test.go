package viperkv_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// importFixture is a vault with secrets for the import tests and a provider reading it.
func importVault(t *testing.T, opts ...kvtest.Option) (*kvtest.Server, *kvtest.Vault) {
	t.Helper()
	srv := kvtest.NewServerT(t, opts...)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	return srv, kv
}

func importProvider(t *testing.T, srv *kvtest.Server, v *viper.Viper, logs *logtest.Buffer, opts ...viperkv.Option) (*viperkv.Provider, error) {
	t.Helper()
	if v == nil {
		v = viper.New()
	}
	p, err := viperkv.New(v, append([]viperkv.Option{viperkv.WithEmulator(srv),
		viperkv.WithoutFileWatch(), viperkv.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p, p.Load(context.Background())
}

// TestVaultSourceMapsAndFilters: "--" becomes the key delimiter, the prefix is stripped,
// tags filter, keys are case-insensitive; disabled and not-yet-valid secrets are skipped;
// an expired one is no value; paging with short and empty pages misses nothing.
func TestVaultSourceMapsAndFilters(t *testing.T) {
	srv, kv := importVault(t, kvtest.WithShortPages())
	prod := kvtest.WithTags(map[string]string{"env": "prod"})
	kv.SetSecret("orders--Db--Password", "db-secret", prod)
	kv.SetSecret("orders--Api--Key", "api-secret", prod)
	kv.SetSecret("orders--Cache", "cache-secret", kvtest.WithTags(map[string]string{"env": "dev"}))
	kv.SetSecret("billing--Db--Password", "billing-secret", prod)
	kv.SetSecret("orders--Off", "off", prod, kvtest.WithEnabled(false))
	kv.SetSecret("orders--Later", "later", prod, kvtest.WithNotBefore(time.Now().Add(time.Hour)))
	kv.SetSecret("orders--Old", "old", prod, kvtest.WithExpires(time.Now().Add(-time.Hour)))
	for i := range 40 { // more than a page, with short pages
		kv.SetSecret(fmt.Sprintf("orders--Bulk--S%02d", i), fmt.Sprintf("bulk-%02d", i), prod)
	}
	logs := &logtest.Buffer{}
	p, err := importProvider(t, srv, nil, logs, viperkv.WithVaultSource("https://myvault.vault.azure.net",
		viperkv.SecretPrefix("ORDERS--"), viperkv.SecretTags(map[string]string{"env": "prod"})))
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 1 || le.Failed[0].Key != "old" || le.Failed[0].Status != viperkv.StatusSecretExpired {
		t.Fatalf("Load = %v, want only the expired secret failing", err)
	}
	for key, want := range map[string]string{"db.password": "db-secret", "api.key": "api-secret", "DB.Password": "db-secret", "bulk.s07": "bulk-07", "bulk.s39": "bulk-39"} {
		if got := p.GetString(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	for _, absent := range []string{"cache", "off", "later", "old", "billing.db.password", "db.password.x"} {
		if p.Viper().IsSet(absent) {
			t.Errorf("%s is set", absent)
		}
	}
	if n := len(p.Status()); n != 43 {
		t.Errorf("%d statuses, want 43 (2 + 40 bulk + the expired one)", n)
	}
	if strings.Contains(logs.String(), "db-secret") || strings.Contains(fmt.Sprint(p.MaskedSettings()), "db-secret") {
		t.Error("a value appears in the logs or the masked settings")
	}
}

// TestVaultSourcePrecedence: the environment beats the vault, the vault beats the config
// file and defaults, a reference beats the vault (with a warning), and of two secrets
// mapping to one key the one updated last wins (with a warning naming both).
func TestVaultSourcePrecedence(t *testing.T) {
	srv, kv := importVault(t)
	kv.SetSecret("Db--Password", "vault-db")
	kv.SetSecret("Api--Key", "vault-api")
	kv.SetSecret("Token", "vault-token")
	kv.SetSecret("token-ref", "referenced-token")
	kv.SetSecret("Pool", "vault-pool")
	// "Name" and "Name-v2" map to one key. The one listed first ("Name": the list is in
	// name order) is the one updated last, so listing order alone would pick the other.
	kv.SetSecret("Name-v2", "older", kvtest.WithUpdated(time.Now().Add(-time.Minute)))
	kv.SetSecret("Name", "newer")

	v := yamlViper(t, "db:\n  password: from-file\n  host: db.internal\ntoken: \"@KeyVault(VaultName=myvault;SecretName=token-ref)\"\n")
	v.SetDefault("pool", "from-default")
	v.SetEnvPrefix("APP")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	t.Setenv("APP_API_KEY", "from-env")
	logs := &logtest.Buffer{}
	p, err := importProvider(t, srv, v, logs, viperkv.WithVaultSource("myvault",
		viperkv.SecretKeys(func(name string) (string, bool) {
			return strings.ReplaceAll(strings.TrimSuffix(strings.ToLower(name), "-v2"), "--", "."), true
		})))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"db.password": "vault-db", // the vault beats the file
		"db.host":     "db.internal",
		"api.key":     "from-env", // the environment beats the vault
		"token":       "referenced-token",
		"pool":        "vault-pool", // the vault beats a default
		"name":        "newer",
	} {
		if got := p.GetString(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	for _, want := range []string{"the reference wins", "key=token", "two secrets map to one key", "secret=Name other_secret=Name-v2"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	for _, value := range []string{"vault-db", "vault-token", "newer", "older"} {
		if strings.Contains(logs.String(), value) {
			t.Errorf("a value appears in the logs: %q", value)
		}
	}
}

// TestVaultSourceDuringWatch: a secret added to the vault appears (EventChanged naming its
// key), a rotation is picked up, a deleted one keeps its value with an EventError, and with
// a grace it disappears once the grace has passed.
func TestVaultSourceDuringWatch(t *testing.T) {
	srv, kv := importVault(t, kvtest.WithDeletionWindow(0))
	kv.SetSecret("App--Keep", "keep-1")
	kv.SetSecret("App--Doomed", "doomed")
	kv.SetSecret("Other--Gone", "gone")
	logs := &logtest.Buffer{}
	p, err := importProvider(t, srv, nil, logs, viperkv.WithRefreshInterval(100*time.Millisecond),
		viperkv.WithVaultSource("myvault", viperkv.SecretPrefix("app--")),
		viperkv.WithVaultSource("myvault", viperkv.SecretPrefix("other--"), viperkv.SecretGrace(300*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan viperkv.Event, 64)
	p.OnChange(func(e viperkv.Event) { events <- e })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	wait := func(what string, ok func(viperkv.Event) bool) viperkv.Event {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case e := <-events:
				if ok(e) {
					return e
				}
			case <-deadline:
				t.Fatalf("%s: no such event within 20 s; status %+v", what, p.Status())
			}
		}
	}

	kv.SetSecret("App--Fresh--Key", "fresh")
	e := wait("a new secret", func(e viperkv.Event) bool {
		return e.Kind == viperkv.EventChanged && strings.Contains(strings.Join(e.Keys, ","), "fresh.key")
	})
	if p.GetString("fresh.key") != "fresh" || e.Source != viperkv.SourcePoll {
		t.Errorf("fresh.key = %q after %v", p.GetString("fresh.key"), e)
	}
	v2 := kv.SetSecret("App--Keep", "keep-2")
	wait("a rotation", func(e viperkv.Event) bool { return e.Kind == viperkv.EventChanged && e.NewVersion == v2 })

	if err := kv.DeleteSecret("App--Doomed"); err != nil {
		t.Fatal(err)
	}
	if err := kv.DeleteSecret("Other--Gone"); err != nil {
		t.Fatal(err)
	}
	wait("the deleted secret's error", func(e viperkv.Event) bool {
		return e.Kind == viperkv.EventError && strings.EqualFold(e.Secret.Name, "App--Doomed") && e.Status == viperkv.StatusSecretNotFound
	})
	wait("the key past its grace removed", func(e viperkv.Event) bool {
		return e.Kind == viperkv.EventChanged && strings.Contains(strings.Join(e.Keys, ","), "gone") && !p.Viper().IsSet("gone")
	})
	if got := p.GetString("doomed"); got != "doomed" {
		t.Errorf("doomed = %q: a deleted secret without a grace must keep its last good value", got)
	}
	if got := p.GetString("keep"); got != "keep-2" {
		t.Errorf("keep = %q, want keep-2", got)
	}
}

// TestVaultSourceListForbidden: a vault source the identity may not list fails Load with
// an error naming the vault and the permission; references elsewhere still resolve.
func TestVaultSourceListForbidden(t *testing.T) {
	srv, kv := importVault(t)
	kv.SetSecret("Db--Password", "x")
	kv.SetSecret("plain", "plain-value")
	kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Status: 403})
	logs := &logtest.Buffer{}
	p, err := importProvider(t, srv, yamlViper(t, "plain: \"@KeyVault(VaultName=myvault;SecretName=plain)\"\n"), logs,
		viperkv.WithVaultSource("myvault"))
	var ve *viperkv.VaultSourceError
	if !errors.As(err, &ve) || ve.Vault != "myvault.vault.azure.net" || ve.Status != viperkv.StatusAccessToKeyVaultDenied ||
		!strings.Contains(err.Error(), "Key Vault Secrets User") || !strings.Contains(err.Error(), "List permission") {
		t.Fatalf("Load = %v, want a VaultSourceError naming the vault and the permission", err)
	}
	if p.GetString("plain") != "plain-value" || p.Viper().IsSet("db.password") {
		t.Errorf("plain = %q, db.password set: %v", p.GetString("plain"), p.Viper().IsSet("db.password"))
	}
	if _, err := viperkv.New(viper.New(), viperkv.WithVaultSource("https://evil.example.com")); err == nil {
		t.Error("New accepted a vault source outside the cloud")
	}
}

// TestVaultSourcesReport: VaultSources says what each source listed, imported and skipped.
func TestVaultSourcesReport(t *testing.T) {
	srv, kv := importVault(t)
	kv.SetSecret("App--A", "a")
	kv.SetSecret("App--B", "b", kvtest.WithEnabled(false))
	kv.SetSecret("App--C", "c", kvtest.WithNotBefore(time.Now().Add(time.Hour)))
	kv.SetSecret("Other", "o")
	logs := &logtest.Buffer{}
	p, err := importProvider(t, srv, nil, logs, viperkv.WithVaultSource("myvault", viperkv.SecretPrefix("app--")))
	if err != nil {
		t.Fatal(err)
	}
	got := p.VaultSources()
	if len(got) != 1 || got[0].Vault != "myvault.vault.azure.net" || got[0].Listed != 4 || got[0].Imported != 1 ||
		got[0].Skipped["filtered"] != 1 || got[0].Skipped["disabled"] != 1 || got[0].Skipped["not yet valid"] != 1 || got[0].Err != nil {
		t.Errorf("VaultSources() = %+v", got)
	}
}

// TestVaultSourceNewSecretByPush: a SecretNewVersionCreated for a secret a vault source
// does not hold yet makes Watch list the source at once, long before its interval.
func TestVaultSourceNewSecretByPush(t *testing.T) {
	srv, kv := importVault(t)
	kv.SetSecret("App--A", "a")
	logs := &logtest.Buffer{}
	p, err := importProvider(t, srv, nil, logs, viperkv.WithRefreshInterval(time.Hour), viperkv.WithVaultSource("myvault"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	v := kv.SetSecret("App--New", "new")
	if err := p.Notify(context.Background(), viperkv.Notice{Type: viperkv.NoticeNewVersion, Vault: "myvault", Name: "App--New", Version: v}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); p.GetString("app.new") != "new"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pushed new secret was not imported within 20 s (the interval is an hour)")
		}
	}
}

// Defect: a vault holding a section secret and a child secret (Database beside
// database--host; .NET's ConnectionStrings beside ConnectionStrings--Default) replaced the
// file's whole section: its other keys and the reference in it were gone. The rule: a
// section is made of its children, and the secret naming it is skipped ("section").
func TestVaultSourceSectionAndChildSecrets(t *testing.T) {
	srv, kv := importVault(t)
	kv.SetSecret("Database", `{"host":"whole"}`)
	kv.SetSecret("database--host", "db.internal")
	kv.SetSecret("db-conn", "conn-value")
	kv.SetSecret("ConnectionStrings", "section-value")
	kv.SetSecret("ConnectionStrings--Default", "default-conn")
	v := yamlViper(t, "database:\n  pool_size: 10\n  conn: \"@KeyVault(VaultName=myvault;SecretName=db-conn)\"\n")
	logs := &logtest.Buffer{}
	p, err := importProvider(t, srv, v, logs, viperkv.WithVaultSource("myvault"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for key, want := range map[string]string{"database.pool_size": "10", "database.conn": "conn-value",
		"database.host": "db.internal", "connectionstrings.default": "default-conn"} {
		if got := p.GetString(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if st := p.VaultSources(); len(st) != 1 || st[0].Skipped["section"] != 2 {
		t.Errorf("VaultSources = %+v, want the two section secrets skipped as sections", st)
	}
	if !strings.Contains(logs.String(), "names a section") {
		t.Errorf("no warning names the skipped section secret:\n%s", logs)
	}
}

// A vault source names a vault a reference could name, or New refuses it and says why; a
// bare vault name takes the cloud's suffix.
func TestVaultSourceHostChecked(t *testing.T) {
	for raw, status := range map[string]string{
		"https://evil.test":                         "HostNotAllowed",
		"https://myvault.vault.azure.net/secrets/x": "InvalidSyntax",
		"myvault.vault.azure.cn":                    "HostNotAllowed",
		"":                                          "InvalidSyntax",
	} {
		_, err := viperkv.New(viper.New(), viperkv.WithVaultSource(raw))
		if err == nil || !strings.Contains(err.Error(), "not a vault this provider may read ("+status+": ") {
			t.Errorf("WithVaultSource(%q): %v, want a refusal with %s", raw, err, status)
		}
	}
	for _, raw := range []string{"myvault", "https://MyVault.vault.azure.net/"} {
		p, err := viperkv.New(viper.New(), viperkv.WithVaultSource(raw))
		if err != nil {
			t.Errorf("WithVaultSource(%q): %v", raw, err)
			continue
		}
		_ = p.Close()
	}
}
