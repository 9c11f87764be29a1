package kvtest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// ntSecrets is an azsecrets client for the vault host (a production name, routed by
// srv.Client()) authenticating with srv.Credential().
func ntSecrets(t *testing.T, srv *kvtest.Server, vault string) *azsecrets.Client {
	t.Helper()
	c, err := azsecrets.NewClient("https://"+vault+".vault.azure.net", srv.Credential(), &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ntVault adds the vault with the secret s = value, readable by the system identity.
func ntVault(srv *kvtest.Server, name, value string) *kvtest.Vault {
	kv := srv.AddVault(name)
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", value)
	return kv
}

func ntContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ntGet reads secret s and checks its value.
func ntGet(t *testing.T, ctx context.Context, c *azsecrets.Client, want string) {
	t.Helper()
	r, err := c.GetSecret(ctx, "s", "", nil)
	if err != nil {
		t.Fatalf("GetSecret: %v", err)
	}
	if *r.Value != want {
		t.Fatalf("GetSecret = %q, want %q", *r.Value, want)
	}
}

// TestNewServerTCleanup: the server serves during the test and is closed when the test
// ends, by the cleanup NewServerT registered: its listeners then refuse connections.
func TestNewServerTCleanup(t *testing.T) {
	var srv *kvtest.Server
	discovery := func() string {
		return "https://login.microsoftonline.com/" + srv.TenantID() + "/v2.0/.well-known/openid-configuration"
	}
	const secretURL = "https://myvault.vault.azure.net/secrets/s/?api-version=2026-04-01"
	t.Run("test", func(t *testing.T) {
		srv = kvtest.NewServerT(t)
		ntVault(srv, "myvault", "x")
		ntGet(t, ntContext(t), ntSecrets(t, srv, "myvault"), "x")
		for _, u := range []string{discovery(), secretURL} {
			resp, err := srv.Client().Get(u)
			if err != nil {
				t.Fatalf("during the test: %v", err)
			}
			_ = resp.Body.Close()
		}
		t.Run("subtest", func(t *testing.T) {
			// Still up while a subtest runs: cleanup waits for the whole test.
			ntGet(t, ntContext(t), ntSecrets(t, srv, "myvault"), "x")
		})
	})
	for _, u := range []string{discovery(), secretURL} {
		resp, err := srv.Client().Get(u)
		if err == nil {
			_ = resp.Body.Close()
			t.Fatalf("GET %s after the test: %s, want connection refused", u, resp.Status)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("GET %s after the test: %v, want connection refused", u, err)
		}
	}
}

// fakeTB records what NewServerT does with its testing.TB.
type fakeTB struct {
	testing.TB // nil: any other method panics
	fatal      string
	cleanups   []func()
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Fatal(args ...any) { f.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (f *fakeTB) FailNow()          { f.fatal = "FailNow"; runtime.Goexit() }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runTB runs fn on its own goroutine, as the testing package runs a test, so that
// Goexit (t.Fatal) ends only fn.
func runTB(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

// TestNewServerTFatal: a server that cannot start fails the test with t.Fatal and
// registers nothing; one that starts registers exactly its Close.
func TestNewServerTFatal(t *testing.T) {
	t.Parallel()
	bad := &fakeTB{}
	returned := false
	runTB(func() {
		kvtest.NewServerT(bad, kvtest.WithTenantID(" "))
		returned = true
	})
	if returned || !strings.Contains(bad.fatal, "kvtest: NewServerT: kvtest: empty tenant ID") {
		t.Errorf("NewServerT with an empty tenant: returned %v, Fatal %q", returned, bad.fatal)
	}
	if len(bad.cleanups) != 0 {
		t.Errorf("%d cleanups registered for a server that did not start", len(bad.cleanups))
	}

	good := &fakeTB{}
	var srv *kvtest.Server
	runTB(func() { srv = kvtest.NewServerT(good) })
	if srv == nil || good.fatal != "" || len(good.cleanups) != 1 {
		t.Fatalf("NewServerT: server %v, Fatal %q, %d cleanups", srv, good.fatal, len(good.cleanups))
	}
	u := "https://login.microsoftonline.com/" + srv.TenantID() + "/.well-known/openid-configuration"
	resp, err := srv.Client().Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	good.cleanups[0]()
	if resp, err := srv.Client().Get(u); err == nil {
		_ = resp.Body.Close()
		t.Error("the registered cleanup did not close the server")
	}
}

// TestNewServerTParallel: parallel tests each get their own server, with the same vault
// name and no environment variables, and each reads its own secret. Token requests are
// exact: the credential's cache is its own, not MSAL's process-wide managed identity one.
func TestNewServerTParallel(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			srv := kvtest.NewServerT(t)
			want := fmt.Sprintf("secret of server %d", i)
			kv := ntVault(srv, "myvault", want)

			// Credential is made once, even when first asked for concurrently.
			creds := make([]azcore.TokenCredential, 8)
			var wg sync.WaitGroup
			for j := range creds {
				wg.Go(func() { creds[j] = srv.Credential() })
			}
			wg.Wait()
			for _, c := range creds {
				if c != srv.Credential() {
					t.Fatal("Credential returned different credentials")
				}
			}

			ctx := ntContext(t)
			c := ntSecrets(t, srv, "myvault")
			for range 3 {
				ntGet(t, ctx, c, want)
			}
			if got := srv.Count(kvtest.OpToken); got != 1 {
				t.Errorf("token requests = %d, want 1", got)
			}
			if got := kv.Count(kvtest.OpGetSecret); got != 3 {
				t.Errorf("secret GETs = %d, want 3", got)
			}
		})
	}
}

// TestCredentialRBAC: the credential is the system identity: its grants apply (and only
// its), a vault without a grant answers 403 ForbiddenByRbac, and its tokens carry the
// identity's oid and appid.
func TestCredentialRBAC(t *testing.T) {
	t.Parallel()
	srv := kvtest.NewServerT(t)
	ctx := ntContext(t)
	ntVault(srv, "granted", "yes")
	other := srv.AddVault("other")
	other.SetSecret("s", "no")
	other.Grant(srv.AddUserIdentity("someone-else"), kvtest.RoleSecretsOfficer)

	ntGet(t, ctx, ntSecrets(t, srv, "granted"), "yes")

	_, err := ntSecrets(t, srv, "other").GetSecret(ctx, "s", "", nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden || re.ErrorCode != "Forbidden" ||
		!strings.Contains(err.Error(), "ForbiddenByRbac") {
		t.Fatalf("GetSecret without a grant: %v, want 403 Forbidden (ForbiddenByRbac)", err)
	}

	// A grant made now applies to the next request.
	other.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	ntGet(t, ctx, ntSecrets(t, srv, "other"), "no")

	tok, err := srv.Credential().GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	sys := srv.SystemIdentity()
	for k, want := range map[string]string{
		"oid": sys.ObjectID, "sub": sys.ObjectID, "appid": sys.ClientID, "tid": srv.TenantID(),
		"aud": "https://vault.azure.net", "iss": "https://sts.windows.net/" + srv.TenantID() + "/",
	} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %s", k, claims[k], want)
		}
	}
}

// TestCredentialWithoutSystemIdentity: an app without a system-assigned identity gets no
// token, with Entra ID's answer for an unknown application.
func TestCredentialWithoutSystemIdentity(t *testing.T) {
	t.Parallel()
	srv := kvtest.NewServerT(t, kvtest.WithoutSystemIdentity())
	_, err := srv.Credential().GetToken(ntContext(t), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) || afe.RawResponse == nil || afe.RawResponse.StatusCode != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "AADSTS700016") {
		t.Fatalf("GetToken: %v, want 400 AADSTS700016", err)
	}
}

// credentialEnv are the variables that choose or steer a credential: managed identity
// sources, azidentity's environment and workload identity variables, and proxies.
var credentialEnv = []string{
	"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET",
	"IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_AUTHORITY_HOST", "AZURE_CLIENT_ID",
	"AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_REGIONAL_AUTHORITY_NAME",
	"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
}

// TestCredentialNeedsNoEnvironment: with every such variable unset, and with every one
// set to something wrong, NewServerT and Credential read secrets all the same.
func TestCredentialNeedsNoEnvironment(t *testing.T) {
	run := func(t *testing.T) {
		srv := kvtest.NewServerT(t)
		kv := ntVault(srv, "myvault", "x")
		ctx := ntContext(t)
		c := ntSecrets(t, srv, "myvault")
		ntGet(t, ctx, c, "x")
		ntGet(t, ctx, c, "x")
		if got := srv.Count(kvtest.OpToken); got != 1 {
			t.Errorf("token requests = %d, want 1", got)
		}
		if got := kv.Count(kvtest.OpGetSecret); got != 2 {
			t.Errorf("secret GETs = %d, want 2", got)
		}
	}
	t.Run("unset", func(t *testing.T) {
		for _, k := range credentialEnv {
			t.Setenv(k, "") // restores the variable after the test
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
		run(t)
	})
	t.Run("wrong", func(t *testing.T) {
		bad := map[string]string{
			"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token", "IDENTITY_HEADER": "wrong",
			"MSI_ENDPOINT": "http://127.0.0.1:1/msi", "MSI_SECRET": "wrong", "IMDS_ENDPOINT": "http://127.0.0.1:1",
			"IDENTITY_SERVER_THUMBPRINT": "00", "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:1",
			"AZURE_AUTHORITY_HOST": "https://authority.invalid/", "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
			"AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000000", "AZURE_CLIENT_SECRET": "wrong",
			"AZURE_FEDERATED_TOKEN_FILE": filepath.Join(t.TempDir(), "missing"),
			// azidentity sends the credential to westus2.login.microsoft.com: still the emulator.
			"AZURE_REGIONAL_AUTHORITY_NAME": "westus2",
			"HTTPS_PROXY":                   "http://127.0.0.1:1", "https_proxy": "http://127.0.0.1:1",
			"HTTP_PROXY": "http://127.0.0.1:1", "http_proxy": "http://127.0.0.1:1",
		}
		for _, k := range credentialEnv {
			t.Setenv(k, bad[k])
		}
		run(t)
	})
}
