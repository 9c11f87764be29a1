package viperkv_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// Start-up resilience through the real SDK over real HTTP: Load rides out an identity
// endpoint that is not up yet and a vault's 5xx, and fails permanent answers at once. These
// tests take real time (a few seconds each); they assert generous bounds only.

// lateEndpoint is a reverse proxy to an identity endpoint that starts listening on its
// loopback port only after a delay: until then connecting is refused, as to App Service's
// or an AKS node's identity endpoint while it starts.
type lateEndpoint struct {
	url    string        // the endpoint's URL, for IDENTITY_ENDPOINT
	up     chan struct{} // closed once it listens
	upAt   time.Time     // when it began listening; read after up is closed
	err    error         // why it could not listen; read after up is closed
	served atomic.Int64  // token requests proxied
}

func startLateEndpoint(t *testing.T, target string, delay time.Duration) *lateEndpoint {
	t.Helper()
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	// Take a free port and let it go: nothing listens there until the delay has passed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	e := &lateEndpoint{url: "http://" + addr + to.Path, up: make(chan struct{})}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: to.Scheme, Host: to.Host})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.served.Add(1)
		proxy.ServeHTTP(w, r)
	})}
	timer := time.AfterFunc(delay, func() {
		defer close(e.up)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			e.err = err
			return
		}
		e.upAt = time.Now()
		go func() { _ = srv.Serve(l) }()
	})
	t.Cleanup(func() {
		timer.Stop()
		_ = srv.Close()
	})
	return e
}

// startupVaults adds two vaults holding the secrets of startupEmulatorDoc, readable by ids.
func startupVaults(srv *kvtest.Server, ids ...kvtest.Identity) map[string]string {
	want := map[string]string{}
	for _, vault := range []string{"startvault1", "startvault2"} {
		kv := srv.AddVault(vault)
		for _, id := range ids {
			kv.Grant(id, kvtest.RoleSecretsUser)
		}
		for _, name := range []string{"conn", "key"} {
			val := "sentinel-" + vault + "-" + name + "-" + randomSuffix()
			kv.SetSecret(name, val)
			want[vault+"."+name] = val
		}
	}
	return want
}

const startupEmulatorDoc = `
startvault1:
  conn: "@KeyVault(VaultName=startvault1;SecretName=conn)"
  key: "@KeyVault(SecretUri=https://startvault1.vault.azure.net/secrets/key/)"
startvault2:
  conn: "@KeyVault(VaultName=startvault2;SecretName=conn)"
  key: "@KeyVault(SecretUri=https://startvault2.vault.azure.net/secrets/key/)"
`

// retryLogLines returns the log lines announcing one of viperkv's retries.
func retryLogLines(logs string) []string {
	var out []string
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, `msg="viperkv: fetch failed; retrying"`) {
			out = append(out, line)
		}
	}
	return out
}

func debugLog(buf *logtest.Buffer) viperkv.Option {
	return viperkv.WithLogger(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// The App Service style identity endpoint comes up 3 s after Load starts. Two providers load
// at once: one with the managed identity credential New makes (azidentity retries a refused
// connection itself, and Load retries on top), and one with a managed identity credential
// that does not retry on its own, so only Load's retries can bridge the 3 s. Both return nil
// with every reference resolved. Not parallel: IDENTITY_ENDPOINT is the process's.
func TestLoadWaitsForLateIdentityEndpoint(t *testing.T) {
	const delay = 3 * time.Second
	srv := newEmulator(t)
	// Fresh user-assigned identities: MSAL's process-wide cache holds no token for them, so
	// both providers must reach the endpoint.
	withSDKRetries, withoutSDKRetries := newIdentity(t, srv), newIdentity(t, srv)
	want := startupVaults(srv, withSDKRetries, withoutSDKRetries)
	late := startLateEndpoint(t, srv.Env()["IDENTITY_ENDPOINT"], delay)
	t.Setenv("IDENTITY_ENDPOINT", late.url)

	noRetries, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client(), Retry: policy.RetryOptions{MaxRetries: -1}},
		ID:            azidentity.ClientID(withoutSDKRetries.ClientID),
	})
	if err != nil {
		t.Fatal(err)
	}
	var sdkLogs, ownLogs logtest.Buffer
	providers := map[string]*viperkv.Provider{}
	for name, opts := range map[string][]viperkv.Option{
		"default credential":         {viperkv.WithManagedIdentity(azidentity.ClientID(withSDKRetries.ClientID)), debugLog(&sdkLogs)},
		"credential without retries": {viperkv.WithCredential(noRetries), debugLog(&ownLogs)},
	} {
		p, err := viperkv.New(yamlViper(t, startupEmulatorDoc), append(opts, viperkv.WithTransport(srv.Client()))...)
		if err != nil {
			t.Fatal(err)
		}
		providers[name] = p
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs, took := map[string]error{}, map[string]time.Duration{}
	for name, p := range providers {
		wg.Go(func() {
			err := p.Load(ctx)
			mu.Lock()
			errs[name], took[name] = err, time.Since(start)
			mu.Unlock()
		})
	}
	wg.Wait()
	<-late.up
	if late.err != nil {
		t.Fatalf("the late identity endpoint could not listen on its port: %v", late.err)
	}
	up := late.upAt.Sub(start)
	t.Logf("identity endpoint up after %v; Load took %v", up, took)

	for name, p := range providers {
		if errs[name] != nil {
			t.Errorf("%s: Load = %v, want nil", name, errs[name])
			continue
		}
		// Nothing can resolve before the endpoint listens; once it does, the credential's
		// next try (azidentity's after at most 5.6 s, Load's within 3 s) gets the token.
		if took[name] < up || took[name] > up+20*time.Second {
			t.Errorf("%s: Load took %v with the endpoint up after %v", name, took[name], up)
		}
		for key, val := range want {
			if st := statusOf(t, p, key); st.Status != viperkv.StatusResolved || p.GetString(key) != val {
				t.Errorf("%s: %s: %s (%s)", name, key, st.Status, st.Reason)
			}
		}
	}
	if n := late.served.Load(); n < 2 {
		t.Errorf("the identity endpoint served %d token requests, want one per identity at least", n)
	}
	// Without the SDK's retries, Load's own bridged the gap: each secret's refused attempts
	// are logged at Debug, naming what failed and never a value.
	lines := retryLogLines(ownLogs.String())
	for key := range want {
		vault, name, _ := strings.Cut(key, ".")
		if !viperkv.ContainsLine(lines, "key="+key, "vault="+vault+".vault.azure.net", "secret="+name, "status=MSINotEnabled", "attempt=1 ", "connection refused") {
			t.Errorf("no retry logged for %s among:\n%s", key, strings.Join(lines, "\n"))
		}
	}
	for _, logs := range []string{sdkLogs.String(), ownLogs.String()} {
		for _, val := range want {
			if strings.Contains(logs, val) {
				t.Errorf("a secret value appears in the logs")
			}
		}
	}
}

// A 403 and a 404 fail at once, with one request each, while a vault answering 503 to more
// requests than azcore retries (a try and three retries) still resolves on Load's retry:
// Load returns long before its deadline.
func TestLoadFailsPermanentAtOnceAndRetriesTransient(t *testing.T) {
	t.Parallel()
	const fetchTimeout = 45 * time.Second
	srv := kvtest.NewServerT(t)
	good := srv.AddVault("permvault")
	good.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	good.SetSecret("present", "present-value")
	denied := srv.AddVault("deniedvault2") // no grant: 403
	denied.SetSecret("s", "x")
	flaky := srv.AddVault("flakyvault2")
	flaky.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	flaky.SetSecret("s", "flaky-value")
	flaky.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusServiceUnavailable, Times: 4})

	var logs logtest.Buffer
	p, err := viperkv.New(yamlViper(t, `
present: "@KeyVault(VaultName=permvault;SecretName=present)"
missing: "@KeyVault(VaultName=permvault;SecretName=absent)"
denied: "@KeyVault(VaultName=deniedvault2;SecretName=s)"
flaky: "@KeyVault(VaultName=flakyvault2;SecretName=s)"
`), viperkv.WithEmulator(srv),
		viperkv.WithFetchTimeout(fetchTimeout), debugLog(&logs))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.Load(context.Background())
	took := time.Since(start)
	t.Logf("Load took %v; denied took %v, missing %v, flaky %v", took,
		statusOf(t, p, "denied").Took, statusOf(t, p, "missing").Took, statusOf(t, p, "flaky").Took)

	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 2 {
		t.Fatalf("Load = %v, want a LoadError for denied and missing", err)
	}
	if took > fetchTimeout/3 {
		t.Errorf("Load took %v, want well within its %v deadline", took, fetchTimeout)
	}
	for key, want := range map[string]viperkv.Status{"denied": viperkv.StatusAccessToKeyVaultDenied, "missing": viperkv.StatusSecretNotFound} {
		st := statusOf(t, p, key)
		if st.Status != want || st.Reason == "" || strings.Contains(st.Reason, "tried") || st.Took > fetchTimeout/9 {
			t.Errorf("%s: %s after %v (%s), want %s at once", key, st.Status, st.Took, st.Reason, want)
		}
	}
	if n := denied.Count(kvtest.OpForbidden); n != 1 {
		t.Errorf("the 403 was asked %d times, want once", n)
	}
	if n := good.Count(kvtest.OpGetSecret); n != 2 {
		t.Errorf("permvault saw %d GETs, want 2 (present and absent, once each)", n)
	}
	if st := statusOf(t, p, "flaky"); st.Status != viperkv.StatusResolved || p.GetString("flaky") != "flaky-value" {
		t.Errorf("flaky: %s (%s), want it resolved on Load's retry", st.Status, st.Reason)
	}
	if n := flaky.Count(kvtest.OpGetSecret); n != 5 {
		t.Errorf("flakyvault2 saw %d GETs, want 5 (azcore's try and three retries, then Load's retry)", n)
	}
	lines := retryLogLines(logs.String())
	if len(lines) != 1 || !viperkv.ContainsLine(lines, "key=flaky", "secret=s", "status=OtherReasons", "attempt=1 ", "503") {
		t.Errorf("retry log lines:\n%s\nwant one, for flaky's 503", strings.Join(lines, "\n"))
	}
}

// A vault answering 500 for 2 s, then healing, resolves (azcore's three retries take at
// least 2.2 s, so they may well bridge it alone; Load's retries are the margin).
func TestLoadRidesOutVault500(t *testing.T) {
	t.Parallel()
	const outage = 2 * time.Second
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("outagevault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "outage-value")
	p, err := viperkv.New(yamlViper(t, `k: "@KeyVault(VaultName=outagevault;SecretName=s)"`),
		viperkv.WithEmulator(srv))
	if err != nil {
		t.Fatal(err)
	}
	// Get the token first, so the outage is the vault's alone.
	if _, err := srv.Credential().GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}); err != nil {
		t.Fatal(err)
	}
	kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusInternalServerError})
	start := time.Now()
	healed := time.AfterFunc(outage, kv.ClearFaults)
	defer healed.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = p.Load(ctx)
	took := time.Since(start)
	t.Logf("Load took %v over a %v outage; %d GETs", took, outage, kv.Count(kvtest.OpGetSecret))
	if err != nil {
		t.Fatalf("Load = %v, want nil", err)
	}
	if st := statusOf(t, p, "k"); st.Status != viperkv.StatusResolved || p.GetString("k") != "outage-value" {
		t.Errorf("k: %s (%s)", st.Status, st.Reason)
	}
	if took < outage || took > outage+20*time.Second {
		t.Errorf("Load took %v for a %v outage", took, outage)
	}
	if n := kv.Count(kvtest.OpGetSecret); n < 2 {
		t.Errorf("outagevault saw %d GETs: the outage was not met", n)
	}
}
