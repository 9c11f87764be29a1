package remote_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/viper"
	"go.uber.org/goleak"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
	"github.com/viperkv/viperkv/remote"
)

// newEmulator starts an emulator whose managed identity endpoint the process's variables
// point at, as App Service sets them.
func newEmulator(t *testing.T) *kvtest.Server {
	t.Helper()
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	return srv
}

// logRecorder keeps log lines, for waiting on what a goroutine the test cannot see did.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
	ch    chan struct{}
}

func newLogRecorder() *logRecorder { return &logRecorder{ch: make(chan struct{}, 1)} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
	default:
	}
	return nil
}

func (l *logRecorder) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// waitFor waits for the n-th line (counting from 1) that contains every one of parts.
func (l *logRecorder) waitFor(t *testing.T, n int, parts ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		found := 0
		for _, line := range l.lines {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
				found++
			}
		}
		l.mu.Unlock()
		if found >= n {
			return
		}
		select {
		case <-l.ch:
		case <-deadline:
			t.Fatalf("no log line %d with %q; log:\n%s", n, parts, l.all())
		}
	}
}

// fakeFactory stands for a remote factory registered before viperkv's (such as
// github.com/spf13/viper/remote's), serving every provider name.
type fakeFactory struct {
	mu   sync.Mutex
	gets []string
}

func (f *fakeFactory) Get(rp viper.RemoteProvider) (io.Reader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, rp.Provider()+" "+rp.Endpoint()+" "+rp.Path())
	return strings.NewReader(`{"from": "the previous factory"}`), nil
}

func (f *fakeFactory) Watch(rp viper.RemoteProvider) (io.Reader, error) { return f.Get(rp) }

func (f *fakeFactory) WatchChannel(viper.RemoteProvider) (<-chan *viper.RemoteResponse, chan bool) {
	return nil, nil
}

// registerRemote registers the provider over a fake previous factory and restores Viper's
// package state when the test ends.
func registerRemote(t *testing.T, opts ...viperkv.Option) *fakeFactory {
	t.Helper()
	prev, prevNames := viper.RemoteConfig, slices.Clone(viper.SupportedRemoteProviders)
	fake := &fakeFactory{}
	viper.RemoteConfig = fake
	t.Cleanup(func() {
		remote.Unregister()
		if viper.RemoteConfig != fake || !slices.Equal(viper.SupportedRemoteProviders, prevNames) {
			t.Errorf("Unregister left %T and %q", viper.RemoteConfig, viper.SupportedRemoteProviders)
		}
		viper.RemoteConfig, viper.SupportedRemoteProviders = prev, prevNames
	})
	// Registering twice replaces the options; it neither wraps itself nor adds the name twice.
	for range 2 {
		if err := remote.Register(opts...); err != nil {
			t.Fatal(err)
		}
	}
	if n := slices.Index(viper.SupportedRemoteProviders, remote.ProviderName); n < 0 ||
		slices.Contains(viper.SupportedRemoteProviders[n+1:], remote.ProviderName) {
		t.Fatalf("SupportedRemoteProviders = %q", viper.SupportedRemoteProviders)
	}
	return fake
}

func TestRemoteProviderThroughViper(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	conn1, conn2 := "SENTINEL-remote-conn-one", "SENTINEL-remote-conn-two"
	kv.SetSecret("db-conn", conn1)
	docV1 := kv.SetSecret("app-settings", `
app:
  name: remote
database:
  conn: "@KeyVault(VaultName=myvault;SecretName=db-conn)"
  dsn: "user=app password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/) host=db"
  pool: 5
`, kvtest.WithContentType("application/yaml"))
	kv.SetSecret("json-settings", `{"api": {"key": "@KeyVault(VaultName=myvault;SecretName=db-conn)"}}`) // no content type
	kv.SetSecret("plain-settings", "feature: on\nlimit: 3\n")

	log := newLogRecorder()
	fake := registerRemote(t, viperkv.WithTransport(srv.Client()), viperkv.WithRefreshInterval(100*time.Millisecond),
		viperkv.WithLogger(slog.New(log)))

	viperLog := newLogRecorder()
	newViper := func(format, provider, endpoint, path string) *viper.Viper {
		t.Helper()
		v := viper.NewWithOptions(viper.WithLogger(slog.New(viperLog)))
		v.SetConfigType(format)
		if err := v.AddRemoteProvider(provider, endpoint, path); err != nil {
			t.Fatal(err)
		}
		return v
	}

	// A YAML document whose references are resolved.
	v := newViper("yaml", "azurekeyvault", "https://myvault.vault.azure.net", "app-settings")
	if err := v.ReadRemoteConfig(); err != nil {
		t.Fatalf("ReadRemoteConfig: %v\n%s\n%s", err, log.all(), viperLog.all())
	}
	if v.GetString("database.conn") != conn1 || v.GetString("database.dsn") != "user=app password="+conn1+" host=db" ||
		v.GetInt("database.pool") != 5 || v.GetString("app.name") != "remote" {
		t.Errorf("settings after ReadRemoteConfig: %d keys", len(v.AllKeys()))
	}

	// A pinned version; a JSON document found by content; a document without references,
	// passed as it is.
	for _, tc := range []struct {
		format, path, key, want string
	}{
		{"yaml", "app-settings/" + docV1, "database.pool", "5"},
		{"json", "json-settings", "api.key", conn1},
		{"yaml", "/plain-settings/", "limit", "3"},
	} {
		v := newViper(tc.format, "azurekeyvault", "myvault.vault.azure.net", tc.path)
		if err := v.ReadRemoteConfig(); err != nil || v.GetString(tc.key) != tc.want {
			t.Errorf("%s: %v, %s holds the expected value: %v", tc.path, err, tc.key, v.GetString(tc.key) == tc.want)
		}
	}

	// Other provider names go to the factory registered before.
	other := newViper("json", "etcd3", "http://127.0.0.1:2379", "/config/app.json")
	if err := other.ReadRemoteConfig(); err != nil || other.GetString("from") != "the previous factory" {
		t.Errorf("etcd3 through the previous factory: %v, %v", err, other.AllSettings())
	}
	if !slices.Equal(fake.gets, []string{"etcd3 http://127.0.0.1:2379 /config/app.json"}) {
		t.Errorf("previous factory got %q", fake.gets)
	}

	// Refused before any request: a host that is not a vault, plain http, a path that is
	// not a secret's. And a secret that does not exist.
	seen := map[string]int{}
	for _, tc := range []struct{ endpoint, path, want string }{
		{"https://evil.test", "app-settings", "HostNotAllowed"},
		{"http://myvault.vault.azure.net", "app-settings", "HostNotAllowed"},
		{"https://myvault.vault.azure.net.evil.test", "app-settings", "HostNotAllowed"},
		{"https://myvault.vault.azure.net", "../keys/k", "InvalidSyntax"},
		{"https://myvault.vault.azure.net", "no-such-secret", "SecretNotFound"},
	} {
		before := srv.Count(kvtest.OpGetSecret)
		bad := newViper("yaml", "azurekeyvault", tc.endpoint, tc.path)
		if err := bad.ReadRemoteConfig(); err == nil {
			t.Errorf("%s %s: read", tc.endpoint, tc.path)
		}
		seen[tc.want]++
		viperLog.waitFor(t, seen[tc.want], "get remote config", tc.want)
		if tc.want != "SecretNotFound" && srv.Count(kvtest.OpGetSecret) != before {
			t.Errorf("%s %s: a request reached the vault", tc.endpoint, tc.path)
		}
	}

	// Watching: a referenced secret rotates, then the document itself.
	if err := v.WatchRemoteConfigOnChannel(); err != nil {
		t.Fatal(err)
	}
	kv.SetSecret("db-conn", conn2)
	log.waitFor(t, 1, "remote config handed to Viper", "version="+docV1)
	docV2 := kv.SetSecret("app-settings", `
database:
  conn: "@KeyVault(VaultName=myvault;SecretName=db-conn)"
  pool: 7
`, kvtest.WithContentType("application/yaml"))
	log.waitFor(t, 1, "remote config handed to Viper", "version="+docV2)
	// Viper's watch goroutine writes into v without a lock, and nothing tells when it is
	// done. A document Viper cannot parse is a barrier: Viper logs the failure after
	// finishing the previous document, and writes nothing for it.
	kv.SetSecret("app-settings", "database: [not yaml")
	viperLog.waitFor(t, 1, "failed to unmarshal remote config")
	if v.GetString("database.conn") != conn2 || v.GetInt("database.pool") != 7 {
		t.Errorf("after the rotations: database.conn is the new value: %v, pool %d", v.GetString("database.conn") == conn2, v.GetInt("database.pool"))
	}

	for _, s := range []string{conn1, conn2} {
		if strings.Contains(log.all()+viperLog.all(), s) {
			t.Errorf("a log line shows a secret value:\n%s\n%s", log.all(), viperLog.all())
		}
	}
}

func TestRemoteProviderRejectsIncompleteDocuments(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("missing-ref", "a: \"@KeyVault(VaultName=myvault;SecretName=nope)\"\nb: 1\n")
	kv.SetSecret("bad-ref", "a: \"@KeyVault(SecretUri=https://evil.test/secrets/x)\"\n")
	kv.SetSecret("unknown-format", "a = @KeyVault(VaultName=myvault;SecretName=nope) = b\n[")
	log := newLogRecorder()
	registerRemote(t, viperkv.WithTransport(srv.Client()), viperkv.WithLogger(slog.New(log)))

	for name, want := range map[string]string{
		"missing-ref":    "a (vault myvault.vault.azure.net, secret nope): SecretNotFound",
		"bad-ref":        "a (@KeyVault(SecretUri=https://evil.test/secrets/x)): HostNotAllowed",
		"unknown-format": "holds references but is not JSON, YAML or TOML",
	} {
		v := viper.New()
		v.SetConfigType("yaml")
		if err := v.AddRemoteProvider("azurekeyvault", "https://myvault.vault.azure.net", name); err != nil {
			t.Fatal(err)
		}
		if err := v.ReadRemoteConfig(); err == nil {
			t.Errorf("%s: read; a document with an unresolved reference must not be used", name)
		}
		if len(v.AllKeys()) != 0 {
			t.Errorf("%s: keys %q", name, v.AllKeys())
		}
		log.waitFor(t, 1, "remote config not read", want)
	}
	if err := remote.Register(viperkv.WithMaxInflight(0)); err == nil {
		t.Error("Register accepted an invalid option")
	}
}

// Each endpoint and path is read through Providers kept between reads; Unregister stops
// the polling goroutines and closes them, leaving no goroutine behind.
func TestRemoteProviderClosesWhatItKept(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db-conn", "c1")
	kv.SetSecret("app-settings", "db: \"@KeyVault(VaultName=myvault;SecretName=db-conn)\"\n", kvtest.WithContentType("application/yaml"))
	log := newLogRecorder()
	prev, prevNames := viper.RemoteConfig, slices.Clone(viper.SupportedRemoteProviders)
	defer func() { viper.RemoteConfig, viper.SupportedRemoteProviders = prev, prevNames }()
	if err := remote.Register(viperkv.WithEmulator(srv), viperkv.WithRefreshInterval(50*time.Millisecond), viperkv.WithLogger(slog.New(log))); err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.AddRemoteProvider(remote.ProviderName, kv.URL(), "app-settings"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := v.ReadRemoteConfig(); err != nil || v.GetString("db") != "c1" {
			t.Fatalf("ReadRemoteConfig: %v, db %q", err, v.GetString("db"))
		}
	}
	// The document's secret and the reference inside it: one challenge each, however many
	// reads, since each path keeps its Providers (and their clients).
	if n := kv.Count(kvtest.OpChallenge); n > 2 {
		t.Errorf("%d challenge round trips for 5 reads of one path, want at most 2", n)
	}
	out, _ := viper.RemoteConfig.WatchChannel(remoteProvider{kv.URL(), "app-settings"})
	kv.SetSecret("db-conn", "c2")
	if got := <-out; !strings.Contains(string(got.Value), "c2") {
		t.Error("the polling goroutine did not hand over the rotated value")
	}
	remote.Unregister()
	srv.Close()
}

// remoteProvider is a viper.RemoteProvider for calling the factory directly.
type remoteProvider struct{ endpoint, path string }

func (r remoteProvider) Provider() string      { return remote.ProviderName }
func (r remoteProvider) Endpoint() string      { return r.endpoint }
func (r remoteProvider) Path() string          { return r.path }
func (r remoteProvider) SecretKeyring() string { return "" }

// TestRemoteProviderShapedReferences: references inside a remote document take Property,
// Format, Decode and Optional as in a Provider's configuration: native types and subtrees
// reach the Viper, an optional reference to a missing secret is left out.
func TestRemoteProviderShapedReferences(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", `{"host":"db.internal","port":5432,"password":"SENTINEL-remote-shaped"}`)
	kv.SetSecret("settings", `
db: "@KeyVault(VaultName=myvault;SecretName=db;Format=json)"
password: "@KeyVault(VaultName=myvault;SecretName=db;Property=/password)"
port: "@KeyVault(VaultName=myvault;SecretName=db;Property=/port)"
legacy: "@KeyVault(VaultName=myvault;SecretName=gone;Optional=true)"
`, kvtest.WithContentType("application/yaml"))
	registerRemote(t, viperkv.WithTransport(srv.Client()))
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.AddRemoteProvider("azurekeyvault", "https://myvault.vault.azure.net", "settings"); err != nil {
		t.Fatal(err)
	}
	if err := v.ReadRemoteConfig(); err != nil {
		t.Fatal(err)
	}
	if v.GetString("db.host") != "db.internal" || v.GetInt("db.port") != 5432 || v.GetString("password") != "SENTINEL-remote-shaped" ||
		v.GetInt("port") != 5432 || v.IsSet("legacy") {
		t.Errorf("settings: %v", v.AllKeys())
	}
}
