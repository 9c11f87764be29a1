package viperkv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// These tests run the real azidentity and azsecrets clients against kvtest, with a vault or
// identity endpoint that answers with a redirect to a loopback listener standing in for an
// attacker. The listener answers like a vault, so a followed redirect shows up as Resolved.

const (
	redirVault    = "myvault.vault.azure.net"
	redirAttacker = "attacker.test"
	redirRef      = `k: "@KeyVault(SecretUri=https://` + redirVault + `/secrets/s/)"`
)

// redirRecorder is a host that must never be reached. It keeps each request's headers.
type redirRecorder struct {
	mu   sync.Mutex
	seen []http.Header
}

func (r *redirRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.seen = append(r.seen, req.Header.Clone())
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"value":"attacker-value","id":"https://` + redirVault +
		`/secrets/s/0123456789abcdef0123456789abcdef","attributes":{"enabled":true}}`))
}

func (r *redirRecorder) requests() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.seen...)
}

// authorizations counts the requests that carried an Authorization header.
func (r *redirRecorder) authorizations() int {
	n := 0
	for _, h := range r.requests() {
		if h.Get("Authorization") != "" {
			n++
		}
	}
	return n
}

// redirAttackerTLS starts a TLS listener with a certificate for attacker.test and returns
// the certificate, so a client can be made to trust it: a redirect target the client would
// accept if it followed the redirect.
func redirAttackerTLS(t *testing.T, h http.Handler) (*httptest.Server, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: redirAttacker},
		DNSNames:              []string{redirAttacker},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts, cert
}

// redirClient is srv.Client() that also trusts roots and dials each "host:port" of routes to
// a loopback address, the way kvtest's own client maps vault host names to the emulator.
func redirClient(t *testing.T, srv *kvtest.Server, routes map[string]string, roots ...*x509.Certificate) *http.Client {
	t.Helper()
	base, ok := srv.Client().Transport.(*http.Transport)
	if !ok {
		t.Fatalf("kvtest client transport is %T, want *http.Transport", srv.Client().Transport)
	}
	tr := base.Clone()
	pool := srv.CertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	tr.TLSClientConfig.RootCAs = pool
	next := tr.DialContext
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := routes[addr]; ok {
			return d.DialContext(ctx, network, to)
		}
		return next(ctx, network, addr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// followingTransport is a caller's Transporter that is not an *http.Client, so viperkv cannot
// stop it from following redirects.
type followingTransport struct{ c *http.Client }

func (f followingTransport) Do(req *http.Request) (*http.Response, error) { return f.c.Do(req) }

// redirLoad runs New and Load and returns the status of key "k" and everything the provider
// said: the Load error, every status reason and the log.
func redirLoad(t *testing.T, opts ...viperkv.Option) (viperkv.ReferenceStatus, string) {
	t.Helper()
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(redirRef)); err != nil {
		t.Fatal(err)
	}
	var log logtest.Buffer
	opts = append(opts, viperkv.WithLogger(slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	p, err := viperkv.New(v, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lerr := p.Load(ctx)
	said := []string{log.String()}
	if lerr != nil {
		said = append(said, lerr.Error())
	}
	var st viperkv.ReferenceStatus
	found := false
	for _, s := range p.Status() {
		said = append(said, s.Reason)
		if s.Key == "k" {
			st, found = s, true
		}
	}
	if !found {
		t.Fatalf("no status for k in %+v", p.Status())
	}
	t.Logf("k: %s: %s", st.Status, st.Reason)
	if got := p.GetString("k"); got == "attacker-value" {
		t.Errorf("k holds the attacker's value")
	}
	return st, strings.Join(said, "\n")
}

func redirEmulator(t *testing.T) (*kvtest.Server, *kvtest.Vault) {
	t.Helper()
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	kv := srv.AddVault(redirVault)
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "vault-value")
	return srv, kv
}

// wantRefusedRedirect checks that a reference whose vault redirected is not resolved and
// that its reason says why.
func wantRefusedRedirect(t *testing.T, st viperkv.ReferenceStatus) {
	t.Helper()
	if st.Status == viperkv.StatusResolved {
		t.Errorf("status Resolved: a redirect was followed")
	}
	if !strings.Contains(st.Reason, "redirect") || !strings.Contains(st.Reason, "never redirect") {
		t.Errorf("reason %q does not say the redirect was refused", st.Reason)
	}
}

// A vault answering the authorized GET with a redirect to another host must not make the
// client ask that host: its answer would be accepted as the secret.
func TestVaultRedirectToAnotherHostIsRefused(t *testing.T) {
	srv, kv := redirEmulator(t)
	var attacker redirRecorder
	ts, cert := redirAttackerTLS(t, &attacker)
	kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{
		Status:   http.StatusFound,
		Location: "https://" + redirAttacker + "/secrets/s/?api-version=2026-04-01",
	})
	client := redirClient(t, srv, map[string]string{redirAttacker + ":443": ts.Listener.Addr().String()}, cert)

	t.Run("http.Client", func(t *testing.T) {
		st, said := redirLoad(t, viperkv.WithTransport(client))
		wantRefusedRedirect(t, st)
		if !strings.Contains(st.Reason, "302") || !strings.Contains(st.Reason, redirAttacker) {
			t.Errorf("reason %q does not name the status and target", st.Reason)
		}
		if n := len(attacker.requests()); n != 0 {
			t.Errorf("attacker received %d request(s)", n)
		}
		if client.CheckRedirect != nil {
			t.Errorf("the caller's *http.Client was modified")
		}
		if strings.Contains(said, "attacker-value") {
			t.Errorf("the attacker's answer was used: %s", said)
		}
	})
	// A Transporter viperkv cannot configure follows the redirect itself; its answer must
	// still be refused, and Go drops Authorization for another host.
	t.Run("other Transporter", func(t *testing.T) {
		st, said := redirLoad(t, viperkv.WithTransport(followingTransport{c: client}))
		wantRefusedRedirect(t, st)
		if n := attacker.authorizations(); n != 0 {
			t.Errorf("attacker received %d Authorization header(s)", n)
		}
		if strings.Contains(said, "attacker-value") {
			t.Errorf("the attacker's answer was used: %s", said)
		}
	})
}

// A 307 to http on the vault's own host name would carry the bearer token in cleartext on
// port 80: Go copies Authorization to a redirect on the same host name.
func TestVaultRedirectToHTTPIsRefused(t *testing.T) {
	srv, kv := redirEmulator(t)
	var port80 redirRecorder
	plain := httptest.NewServer(&port80)
	t.Cleanup(plain.Close)
	kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{
		Status:   http.StatusTemporaryRedirect,
		Location: "http://" + redirVault + "/secrets/s/?api-version=2026-04-01",
	})
	client := redirClient(t, srv, map[string]string{redirVault + ":80": plain.Listener.Addr().String()})

	st, said := redirLoad(t, viperkv.WithTransport(client))
	wantRefusedRedirect(t, st)
	if !strings.Contains(st.Reason, "307") {
		t.Errorf("reason %q does not name the status", st.Reason)
	}
	if n := len(port80.requests()); n != 0 {
		t.Errorf("port 80 received %d request(s), %d with Authorization", n, port80.authorizations())
	}
	if strings.Contains(said, "attacker-value") {
		t.Errorf("the answer from port 80 was used: %s", said)
	}
}

// The App Service identity endpoint's X-IDENTITY-HEADER and IMDS's Metadata header are not
// sensitive to Go's redirect rules: a followed redirect sends them to any host.
func TestIdentityRedirectIsRefused(t *testing.T) {
	for _, style := range []string{"App Service", "IMDS"} {
		t.Run(style, func(t *testing.T) {
			srv, kv := redirEmulator(t)
			if style == "IMDS" {
				for _, k := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "IMDS_ENDPOINT"} {
					t.Setenv(k, "")
				}
			}
			// A fresh identity: MSAL's process-wide cache must not answer for the endpoint.
			b := make([]byte, 6)
			_, _ = rand.Read(b)
			id := srv.AddUserIdentity("redir-" + hex.EncodeToString(b))
			kv.Grant(id, kvtest.RoleSecretsUser)

			var attacker redirRecorder
			ts := httptest.NewServer(&attacker)
			t.Cleanup(ts.Close)
			srv.InjectIdentityFault(kvtest.Fault{Status: http.StatusFound, Location: ts.URL + "/msi/token"})

			st, said := redirLoad(t, viperkv.WithTransport(srv.Client()),
				viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID)))
			if st.Status == viperkv.StatusResolved {
				t.Fatalf("status Resolved")
			}
			if n := len(attacker.requests()); n != 0 {
				t.Errorf("attacker received %d request(s): %v", n, attacker.requests())
			}
			if strings.Contains(said, srv.Env()["IDENTITY_HEADER"]) {
				t.Errorf("the identity header appears in what the provider said: %s", said)
			}
			if n := kv.Count(kvtest.OpGetSecret); n != 0 {
				t.Errorf("vault served %d authorized GET(s)", n)
			}
		})
	}
}
