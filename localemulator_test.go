package viperkv_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/emuinfo"
	"github.com/viperkv/viperkv/internal/nettest"
	"github.com/viperkv/viperkv/kvtest"
)

// managedIdentityEnv are the variables MSAL reads to pick a managed identity source.
var managedIdentityEnv = []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"}

// unsetManagedIdentityEnv removes the managed identity variables for the test, as on a
// laptop (t.Setenv restores them afterwards and keeps the test off t.Parallel).
func unsetManagedIdentityEnv(t *testing.T) {
	t.Helper()
	for _, k := range managedIdentityEnv {
		t.Setenv(k, "")
		if err := os.Unsetenv(k); err != nil {
			t.Fatal(err)
		}
	}
}

// newLocalVault starts an emulator with a vault myvault the system-assigned identity may
// read, with the managed identity variables unset.
func newLocalVault(t *testing.T) (*kvtest.Server, *kvtest.Vault) {
	t.Helper()
	unsetManagedIdentityEnv(t)
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	return srv, kv
}

// writeEmulatorInfo writes srv's CA and info file into a temporary directory, as the
// standalone emulator does, and returns the info's path.
func writeEmulatorInfo(t *testing.T, srv *kvtest.Server, edit func(*emuinfo.Info)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "info.json")
	if err := srv.WriteInfo(path, ""); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		info, err := emuinfo.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		edit(info)
		if err := info.WriteFile(path); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestWithLocalEmulatorLoads: with nothing but WithEmulatorInfo (no transport, no
// variables), production URLs resolve against the emulator, the environment is left as it
// was, a user-assigned identity is chosen by WithManagedIdentity, a vault the emulator does
// not have is VaultNotFound, and every Load warns that it is not Azure.
func TestWithLocalEmulatorLoads(t *testing.T) {
	srv, kv := newLocalVault(t)
	value := "local-emulator-" + t.Name()
	kv.SetSecret("db-conn", value)
	user := newIdentity(t, srv)
	other := srv.AddVault("othervault")
	other.SetSecret("only-user", "user-"+value)
	other.Grant(user, kvtest.RoleSecretsUser)
	path := writeEmulatorInfo(t, srv, nil)
	environ := os.Environ()

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	v := yamlViper(t, `
db:
  conn: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)"
missing: "@KeyVault(VaultName=novault;SecretName=x)"
`)
	p, err := viperkv.New(v, viperkv.WithEmulatorInfo(path), viperkv.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		_ = p.Load(ctx) // "missing" fails by design
	}
	if got := p.GetString("db.conn"); got != value {
		t.Errorf("db.conn = %q, want the emulator's value", got)
	}
	if st := statusOf(t, p, "missing"); st.Status != viperkv.StatusVaultNotFound {
		t.Errorf("missing: %s: %s, want VaultNotFound", st.Status, st.Reason)
	}
	if got := os.Environ(); !slices.Equal(got, environ) {
		t.Errorf("the environment changed:\nbefore %q\nafter  %q", environ, got)
	}
	warned := strings.Count(logs.String(), "level=WARN msg=\"viperkv: NOT TALKING TO AZURE")
	if warned != 2 || !strings.Contains(logs.String(), "info="+path) {
		t.Errorf("%d warnings for 2 Loads, want 2 naming the info file:\n%s", warned, logs.String())
	}
	if strings.Contains(logs.String(), value) {
		t.Error("the logs show the secret value")
	}

	// A user-assigned identity, chosen as in production. Its token (none is in MSAL's
	// process-wide cache: the identity is new) comes from the emulator.
	tokens := srv.Count(kvtest.OpToken)
	v = yamlViper(t, `token: "@KeyVault(VaultName=othervault;SecretName=only-user)"`)
	p, err = viperkv.New(v, viperkv.WithEmulatorInfo(path), viperkv.WithLogger(log),
		viperkv.WithManagedIdentity(azidentity.ClientID(user.ClientID)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(ctx); err != nil || p.GetString("token") != "user-"+value {
		t.Errorf("user-assigned identity: %v", err)
	}
	if srv.Count(kvtest.OpToken) == tokens {
		t.Error("no token came from the emulator's identity endpoint")
	}
}

// TestWithLocalEmulatorWarnsToDefaultLogger: with the provider's logs discarded (no
// WithLogger), the warning still shows, on slog.Default.
func TestWithLocalEmulatorWarnsToDefaultLogger(t *testing.T) {
	srv, kv := newLocalVault(t)
	kv.SetSecret("s", "v")
	path := writeEmulatorInfo(t, srv, nil)
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	p, err := viperkv.New(yamlViper(t, `s: "@KeyVault(VaultName=myvault;SecretName=s)"`), viperkv.WithEmulatorInfo(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"viperkv: NOT TALKING TO AZURE") {
		t.Errorf("no warning on slog.Default:\n%s", logs.String())
	}
}

// TestWithLocalEmulatorRefusesNonLoopback: an info file naming any address but a loopback
// IP is an error from New that names it, and nothing is dialed: every other address of the
// file points at a loopback listener that must see no connection.
func TestWithLocalEmulatorRefusesNonLoopback(t *testing.T) {
	unsetManagedIdentityEnv(t)
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	srv.AddVault("myvault")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	standIn := ln.Addr().String()

	for _, tc := range []struct {
		name, bad string
		edit      func(in *emuinfo.Info, bad string)
	}{
		{"vault", "10.20.30.40:443", func(in *emuinfo.Info, bad string) { in.Vaults["myvault"] = "https://" + bad }},
		{"vault host", "[2001:db8::1]:443", func(in *emuinfo.Info, bad string) { in.VaultHosts["myvault.vault.azure.net"] = "https://" + bad }},
		{"real IMDS", "169.254.169.254:80", func(in *emuinfo.Info, bad string) {
			in.IMDSEndpoint = "http://" + bad + "/metadata/identity/oauth2/token"
		}},
		{"identity endpoint name", "localhost:8081", func(in *emuinfo.Info, bad string) { in.IdentityEndpoint = "http://" + bad + "/msi/token" }},
		{"entra", "login.microsoftonline.com:443", func(in *emuinfo.Info, bad string) { in.EntraEndpoint = "https://" + bad }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeEmulatorInfo(t, srv, func(in *emuinfo.Info) {
				in.IdentityEndpoint = "http://" + standIn + "/msi/token"
				in.IMDSEndpoint = "http://" + standIn + "/metadata/identity/oauth2/token"
				in.EntraEndpoint = "https://" + standIn
				in.Vaults = map[string]string{"myvault": "https://" + standIn}
				in.VaultHosts = map[string]string{"myvault.vault.azure.net": "https://" + standIn}
				tc.edit(in, tc.bad)
			})
			v := yamlViper(t, `s: "@KeyVault(VaultName=myvault;SecretName=s)"`)
			p, err := viperkv.New(v, viperkv.WithEmulatorInfo(path))
			if err == nil {
				_ = p.Load(context.Background())
				t.Fatalf("New accepted an info file naming %s", tc.bad)
			}
			if !strings.Contains(err.Error(), tc.bad+" is not a loopback address") || !strings.Contains(err.Error(), path) {
				t.Errorf("the error does not name %s and the file: %v", tc.bad, err)
			}
		})
	}
	if n := nettest.ConnectionsBefore(t, ln); n != 0 {
		t.Errorf("the loopback stand-in saw %d connection(s), want none", n)
	}
	if n := srv.Count(kvtest.OpToken) + srv.Count(kvtest.OpChallenge) + srv.Count(kvtest.OpGetSecret); n != 0 {
		t.Errorf("the emulator saw %d request(s), want none", n)
	}
}

// TestWithLocalEmulatorErrors: the mistakes New reports before any request.
func TestWithLocalEmulatorErrors(t *testing.T) {
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	srv.AddVault("myvault")
	good := writeEmulatorInfo(t, srv, nil)
	noCA := writeEmulatorInfo(t, srv, func(in *emuinfo.Info) { in.CAFile = filepath.Join(t.TempDir(), "absent.pem") })
	notJSON := filepath.Join(t.TempDir(), "info.json")
	if err := os.WriteFile(notJSON, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []viperkv.Option
		want string
	}{
		{"with transport", []viperkv.Option{viperkv.WithEmulatorInfo(good), viperkv.WithTransport(srv.Client())}, "WithTransport cannot be combined with it"},
		{"missing file", []viperkv.Option{viperkv.WithEmulatorInfo(good + ".gone")}, "no such file"},
		{"not json", []viperkv.Option{viperkv.WithEmulatorInfo(notJSON)}, "not an emulator info file"},
		{"no CA", []viperkv.Option{viperkv.WithEmulatorInfo(noCA)}, "the emulator's CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := viperkv.New(yamlViper(t, "a: b"), tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "viperkv: New: WithEmulatorInfo(") {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestRootDoesNotImportKvtest: a program using only the root package (WithEmulatorInfo
// included) does not link the emulator, nor the OIDC and JOSE libraries only the emulator
// and the webhook need.
func TestRootDoesNotImportKvtest(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	n := 0
	for dec.More() {
		var pkg struct{ ImportPath string }
		if err := dec.Decode(&pkg); err != nil {
			t.Fatal(err)
		}
		n++
		if strings.HasPrefix(pkg.ImportPath, "github.com/viperkv/viperkv/kvtest") || pkg.ImportPath == "net/http/httptest" ||
			strings.HasPrefix(pkg.ImportPath, "github.com/coreos/go-oidc") || strings.HasPrefix(pkg.ImportPath, "github.com/go-jose/") {
			t.Errorf("the root package depends on %s", pkg.ImportPath)
		}
	}
	if n < 10 {
		t.Fatalf("go list -deps listed %d packages; the check proves nothing", n)
	}
}

// TestRootStaysReadable: the root package, the one a newcomer reads, is at most 5,000
// lines besides its tests; mechanisms go under internal/ (docs/development.md).
func TestRootStaysReadable(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	lines, n := 0, 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines += bytes.Count(b, []byte("\n"))
		n++
	}
	t.Logf("root package: %d files, %d lines", n, lines)
	if n < 10 || lines > 5000 {
		t.Errorf("root package: %d files, %d lines; want at most 5,000 lines (move mechanisms under internal/)", n, lines)
	}
}

// TestWithLocalEmulatorNotRunning: an emulator that is gone (its info file left behind)
// is said at once by Load, naming the info file, instead of failing each reference after
// the SDK's retries and the fetch deadline.
func TestWithLocalEmulatorNotRunning(t *testing.T) {
	srv, kv := newLocalVault(t)
	kv.SetSecret("db-conn", "not-running-value")
	path := writeEmulatorInfo(t, srv, nil)
	info, err := emuinfo.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	srv.Close() // its ports now refuse connections; put back the files a crash would leave behind
	if err := os.WriteFile(info.CAFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := info.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	p, err := viperkv.New(yamlViper(t, `db: "@KeyVault(VaultName=myvault;SecretName=db-conn)"`), viperkv.WithEmulatorInfo(path))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = p.Load(ctx)
	if err == nil || !strings.Contains(err.Error(), "the emulator of "+path+" is not running (connection refused at 127.0.0.1:") {
		t.Fatalf("Load = %v, want it to say the emulator is not running", err)
	}
	if ctx.Err() != nil {
		t.Error("Load waited for its deadline instead of saying so at once")
	}
	if p.Status() != nil {
		t.Errorf("Status after a Load that did not start: %v", p.Status())
	}
}
