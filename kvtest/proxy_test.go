package kvtest_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/internal/emuinfo"
	"github.com/viperkv/viperkv/internal/nettest"
	"github.com/viperkv/viperkv/kvtest"
)

// proxyRoundTrip sends one raw request line (and headers) to the proxy and returns the
// response and its body.
func proxyRoundTrip(t *testing.T, proxyURL, request string) (*http.Response, string) {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// standIn is a loopback listener nothing should reach; accepted counts the connections
// made to it so far.
func standIn(t *testing.T) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	n := 0
	return ln.Addr().String(), func() int {
		n += nettest.ConnectionsBefore(t, ln)
		return n
	}
}

// TestProxyIsNotOpen: the proxy routes only the emulator's hosts; CONNECT or plain
// requests for anything else are refused with a body that says why, and the proxy never
// connects to the address a client names.
func TestProxyIsNotOpen(t *testing.T) {
	srv := kvtest.NewServer()
	defer srv.Close()
	srv.AddVault("myvault")
	proxyURL := srv.ProxyURL()
	if !strings.HasPrefix(proxyURL, "http://127.0.0.1:") || srv.ProxyURL() != proxyURL {
		t.Fatalf("ProxyURL() = %q, then %q", proxyURL, srv.ProxyURL())
	}
	addr, accepted := standIn(t)
	_, port, _ := net.SplitHostPort(addr)
	imds, _ := url.Parse(kvtest.IMDSEndpoint(srv))
	_, imdsPort, _ := net.SplitHostPort(imds.Host)

	for _, tc := range []struct {
		req    string
		status int
		body   string
	}{
		{"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 403, "not an open proxy"},
		{"CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\n", 403, "not one of the emulator's listeners"},
		{"CONNECT localhost:" + port + " HTTP/1.1\r\nHost: localhost:" + port + "\r\n\r\n", 403, "not one of the emulator's listeners"},
		{"CONNECT [::1]:" + port + " HTTP/1.1\r\nHost: [::1]:" + port + "\r\n\r\n", 403, "not an open proxy"},
		{"CONNECT myvault.vault.azure.net.example.com:443 HTTP/1.1\r\nHost: myvault.vault.azure.net.example.com:443\r\n\r\n", 403, "not an open proxy"},
		{"CONNECT myvault.vault.azure.net:" + port + " HTTP/1.1\r\nHost: myvault.vault.azure.net:" + port + "\r\n\r\n", 403, "port 443 only"},
		{"CONNECT login.microsoftonline.com:80 HTTP/1.1\r\nHost: login.microsoftonline.com:80\r\n\r\n", 403, "port 443 only"},
		{"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n", 403, "port 80 only"},
		{"CONNECT 127.0.0.1:" + imdsPort + "0 HTTP/1.1\r\nHost: 127.0.0.1:" + imdsPort + "0\r\n\r\n", 403, "not one of the emulator's listeners"},
		{"CONNECT nosuch.vault.azure.net:443 HTTP/1.1\r\nHost: nosuch.vault.azure.net:443\r\n\r\n", 502, "no vault nosuch.vault.azure.net (it has myvault.vault.azure.net)"},
		{"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", 403, "not an open proxy"},
		{"GET http://" + addr + "/ HTTP/1.1\r\nHost: " + addr + "\r\n\r\n", 403, "not one of the emulator's listeners"},
		{"GET http://myvault.vault.azure.net/secrets?api-version=7.4 HTTP/1.1\r\nHost: myvault.vault.azure.net\r\n\r\n", 403, "HTTPS only"},
		{"GET http://login.microsoftonline.com/common/discovery/instance HTTP/1.1\r\nHost: login.microsoftonline.com\r\n\r\n", 403, "HTTPS only"},
		{"GET http://169.254.169.254:8080/metadata/identity/oauth2/token HTTP/1.1\r\nHost: 169.254.169.254:8080\r\n\r\n", 403, "port 80 only"},
		{"GET / HTTP/1.1\r\nHost: " + strings.TrimPrefix(proxyURL, "http://") + "\r\n\r\n", 400, "HTTP proxy"},
	} {
		resp, body := proxyRoundTrip(t, proxyURL, tc.req)
		line, _, _ := strings.Cut(tc.req, "\r\n")
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: %d %q, want %d with %q", line, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	if n := accepted(); n != 0 {
		t.Errorf("the stand-in listener accepted %d connection(s) through the proxy", n)
	}

	// Go's own proxy support: a CONNECT refusal is an error, not a response from the host.
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, proxyURL))}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	if resp, err := hc.Get("https://example.com/"); err == nil {
		resp.Body.Close()
		t.Errorf("https://example.com through the proxy: %s", resp.Status)
	} else if !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("https://example.com through the proxy: %v", err)
	}
	if n := accepted(); n != 0 {
		t.Errorf("the stand-in listener accepted %d connection(s)", n)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestProxyRoutesEmulatorHosts: a client whose only emulator-specific settings are the
// proxy and the CA reaches the vaults (all three clouds), Entra ID and IMDS at their
// production URLs; TLS is end to end with the emulator's certificate for those names.
func TestProxyRoutesEmulatorHosts(t *testing.T) {
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", "through-the-proxy")
	cn := srv.AddVault("cnvault.vault.azure.cn")
	cn.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	cn.SetSecret("db", "china")

	tr := &http.Transport{
		Proxy:           http.ProxyURL(mustURL(t, srv.ProxyURL())),
		TLSClientConfig: &tls.Config{RootCAs: srv.CertPool(), MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}

	// TLS: the certificate presented through the tunnel is valid for each production name.
	for _, host := range []string{"myvault.vault.azure.net", "cnvault.vault.azure.cn", "login.microsoftonline.com"} {
		resp, err := hc.Get("https://" + host + "/")
		if err != nil {
			t.Errorf("https://%s/: %v", host, err)
			continue
		}
		resp.Body.Close()
		if resp.TLS == nil || resp.TLS.PeerCertificates[0].VerifyHostname(host) != nil {
			t.Errorf("https://%s/: certificate not valid for the host", host)
		}
	}
	// Plain HTTP to IMDS: forwarded with the client's headers and no X-Forwarded-For (IMDS
	// refuses requests that carry one).
	req, _ := http.NewRequest(http.MethodGet, "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net", nil)
	req.Header.Set("Metadata", "true")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"access_token"`) {
		t.Fatalf("IMDS through the proxy: %d %s", resp.StatusCode, b)
	}

	ctx := ctxTimeout(t, 30*time.Second)
	opts := azcore.ClientOptions{Transport: hc}
	for _, tc := range []struct {
		name  string
		setup func()
	}{
		{"IMDS", func() { useIMDS(t) }},
		// IDENTITY_ENDPOINT is http://127.0.0.1:PORT: the proxy forwards to its own
		// listeners, for clients that proxy loopback addresses too.
		{"App Service", func() {
			for k, v := range srv.Env() {
				t.Setenv(k, v)
			}
		}},
	} {
		tc.setup()
		// A fresh identity, so MSAL's process-wide cache holds no token for it.
		id := freshIdentity(t, srv)
		kv.Grant(id, kvtest.RoleSecretsUser)
		cn.Grant(id, kvtest.RoleSecretsUser)
		tokens := srv.Count(kvtest.OpToken)
		cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ClientOptions: opts, ID: azidentity.ClientID(id.ClientID),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []struct{ url, want string }{{kv.URL(), "through-the-proxy"}, {cn.URL(), "china"}} {
			c, err := azsecrets.NewClient(v.url, cred, &azsecrets.ClientOptions{ClientOptions: opts})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.GetSecret(ctx, "db", "", nil)
			if err != nil || *got.Value != v.want {
				t.Errorf("%s, %s: %v", tc.name, v.url, err)
			}
		}
		if srv.Count(kvtest.OpToken) == tokens {
			t.Errorf("%s: no token issued", tc.name)
		}
	}
}

// TestProxyClose: Close ends the proxy and its open tunnels.
func TestProxyClose(t *testing.T) {
	srv := kvtest.NewServer()
	srv.AddVault("myvault")
	u := mustURL(t, srv.ProxyURL())
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT myvault.vault.azure.net:443 HTTP/1.1\r\nHost: myvault.vault.azure.net:443\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	srv.Close()
	if _, err := br.ReadByte(); err == nil {
		t.Error("the tunnel is still open after Close")
	}
	if _, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		t.Error("the proxy still accepts connections after Close")
	}
	if got := srv.ProxyURL(); got != "http://"+u.Host {
		t.Errorf("ProxyURL after Close = %q", got)
	}
	closed := kvtest.NewServer()
	closed.Close()
	if got := closed.ProxyURL(); got != "" {
		t.Errorf("ProxyURL of a closed server that never started its proxy = %q", got)
	}
}

// proxyHelperEnv selects TestProxyHelperProcess's mode in a child test process.
const proxyHelperEnv = "KVTEST_PROXY_HELPER"

// TestProxyEnvironmentOnly: a program that configures nothing but environment variables
// (HTTPS_PROXY, HTTP_PROXY, SSL_CERT_FILE and a managed identity or workload identity's
// variables), with the SDK's default transport and production URLs, reads a secret from
// https://myvault.vault.azure.net through the proxy. Go reads the proxy variables once
// per process, so each case runs in a child process (this test binary, re-executed).
func TestProxyEnvironmentOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", "env-only")
	wl := srv.AddUserIdentity(freshName("workload"), kvtest.WithFederated())
	kv.Grant(wl, kvtest.RoleSecretsUser)

	dir := t.TempDir()
	if err := srv.WriteInfo(filepath.Join(dir, "info.json"), ""); err != nil {
		t.Fatal(err)
	}
	info, err := emuinfo.Read(filepath.Join(dir, "info.json"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "info.ca.pem")
	if tf := info.Identities[wl.Name].FederatedTokenFile; tf != filepath.Join(dir, "info."+wl.Name+".token") {
		t.Fatalf("federated token file %q", tf)
	}
	proxyEnv, err := info.ProxyEnv()
	if err != nil {
		t.Fatal(err)
	}
	if proxyEnv["HTTPS_PROXY"] != srv.ProxyURL() || proxyEnv["SSL_CERT_FILE"] != caFile {
		t.Fatalf("ProxyEnv() = %v", proxyEnv)
	}
	wlEnv, err := info.WorkloadIdentityEnv(wl.Name)
	if err != nil {
		t.Fatal(err)
	}
	production := map[string]string{}
	for k, v := range wlEnv {
		if k != "AZURE_AUTHORITY_HOST" { // default: https://login.microsoftonline.com/
			production[k] = v
		}
	}

	for _, tc := range []struct {
		name, mode string
		env        map[string]string
		tokens     string // the endpoint that must have issued a token
	}{
		{"AppService", "managed-identity", srv.Env(), "App Service"},
		{"IMDS", "managed-identity", nil, "IMDS"},
		{"WorkloadIdentity", "workload-identity", production, "Entra"},
		{"WorkloadIdentityLocalAuthority", "workload-identity", wlEnv, "Entra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gets := kv.Count(kvtest.OpGetSecret)
			env := cleanEnv()
			for k, v := range proxyEnv {
				env = append(env, k+"="+v)
			}
			for k, v := range tc.env {
				env = append(env, k+"="+v)
			}
			// With -race, the child would sleep a second at exit.
			env = append(env, proxyHelperEnv+"="+tc.mode, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestProxyHelperProcess$", "-test.v", "-test.count=1")
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "helper: db=env-only") {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if kv.Count(kvtest.OpGetSecret) <= gets {
				t.Error("the vault served no GET: the child did not reach the emulator")
			}
		})
	}
}

// cleanEnv is the test's environment without proxy, CA, managed identity and Azure
// variables, so a child sees only what a test gives it.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch u := strings.ToUpper(k); {
		case u == "HTTPS_PROXY", u == "HTTP_PROXY", u == "NO_PROXY", u == "ALL_PROXY", u == "REQUEST_METHOD",
			u == "SSL_CERT_FILE", u == "SSL_CERT_DIR", u == proxyHelperEnv,
			strings.HasPrefix(u, "IDENTITY_"), strings.HasPrefix(u, "MSI_"), u == "IMDS_ENDPOINT",
			strings.HasPrefix(u, "AZURE_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

// TestProxyHelperProcess is the child of TestProxyEnvironmentOnly: the SDK with default
// options, configured by the environment alone.
func TestProxyHelperProcess(t *testing.T) {
	mode := os.Getenv(proxyHelperEnv)
	if mode == "" {
		t.Skip("the child process of TestProxyEnvironmentOnly")
	}
	var (
		cred azcore.TokenCredential
		err  error
	)
	switch mode {
	case "managed-identity":
		cred, err = azidentity.NewManagedIdentityCredential(nil)
	case "workload-identity":
		cred, err = azidentity.NewWorkloadIdentityCredential(nil)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	if err != nil {
		t.Fatal(err)
	}
	// No transport, no DisableChallengeResourceVerification: the production URL.
	c, err := azsecrets.NewClient("https://myvault.vault.azure.net", cred, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, err := c.GetSecret(ctx, "db", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("helper: db=%s\n", *got.Value)
}
