package certificate_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/certificate"
	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/certtest"
	"github.com/viperkv/viperkv/kvtest"
)

const tlsConfig = `
server:
  tls: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/server-tls/)"
client:
  tls: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/client-tls/)"
ca: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/ca/)"
`

// tlsRig is an emulator holding a CA, a server and a client certificate, and a provider
// watching them.
type tlsRig struct {
	kv   *kvtest.Vault
	root *certtest.Issued
	p    *viperkv.Provider
}

func newTLSRig(t testing.TB, refresh time.Duration) *tlsRig {
	t.Helper()
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	r := &tlsRig{kv: kv, root: certtest.New(nil, certtest.Options{CommonName: "test root", IsCA: true, EC: true})}
	r.renew("server-tls", "localhost")
	r.renew("client-tls", "client")
	kv.SetSecret("ca", r.root.CertsPEM(), kvtest.WithContentType(certparse.ContentTypePEM))
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(tlsConfig)); err != nil {
		t.Fatal(err)
	}
	opts := []viperkv.Option{viperkv.WithEmulator(srv)}
	if refresh > 0 {
		opts = append(opts, viperkv.WithRefreshInterval(refresh))
	}
	p, err := viperkv.New(v, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.p = p
	return r
}

// renew stores a new certificate for name as Key Vault's renewal does (a new version of
// the certificate's secret) and returns it.
func (r *tlsRig) renew(name, cn string) *certtest.Issued {
	c := certtest.New(r.root, certtest.Options{CommonName: cn, DNSNames: []string{cn}, EC: true})
	r.kv.SetSecret(name, c.PKCS12(), kvtest.WithContentType(certparse.ContentTypePKCS12))
	return c
}

// TestTLSRenewalsUnderLoad: an mTLS server and client whose certificates and CA come from
// Key Vault keep working through 5 renewals of each certificate under load (new handshakes
// and keep-alive requests): no handshake and no request fails, each new handshake after a
// renewal reached the watcher presents the new serial, and the keep-alive connection is
// never cut.
func TestTLSRenewalsUnderLoad(t *testing.T) {
	const renewals = 5
	rig := newTLSRig(t, 100*time.Millisecond)
	serverCerts, err := certificate.New(rig.p, "server.tls")
	if err != nil {
		t.Fatal(err)
	}
	defer serverCerts.Close()
	clientCerts, err := certificate.New(rig.p, "client.tls")
	if err != nil {
		t.Fatal(err)
	}
	defer clientCerts.Close()
	cas, err := certificate.NewPool(rig.p, "ca")
	if err != nil {
		t.Fatal(err)
	}
	defer cas.Close()

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.TLS.PeerCertificates[0].SerialNumber.Text(16)) // the client certificate the server saw
	}))
	srv.TLS = &tls.Config{GetCertificate: serverCerts.GetCertificate, ClientAuth: tls.RequireAnyClientCert, VerifyConnection: cas.VerifyClient}
	srv.StartTLS()
	defer srv.Close()
	clientTLS := &tls.Config{GetClientCertificate: clientCerts.GetClientCertificate, InsecureSkipVerify: true,
		VerifyConnection: cas.VerifyServer, ServerName: "localhost"}

	// get makes one request; it reports the serials of the server's and of the client's
	// certificates on that connection.
	get := func(c *http.Client) (server, client string, err error) {
		resp, err := c.Get(srv.URL)
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", "", err
		}
		if resp.StatusCode != 200 {
			return "", "", fmt.Errorf("status %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Text(16), string(b), nil
	}

	var (
		handshakes, failedHandshakes, requests, failedRequests atomic.Int64
		latest                                                 sync.Map // "server"/"client" -> serial of the newest handshake
		stop                                                   = make(chan struct{})
		wg                                                     sync.WaitGroup
		firstErr                                               atomic.Value
	)
	fresh := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	}
	for range 2 { // new handshakes
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				handshakes.Add(1)
				s, c, err := get(fresh())
				if err != nil {
					failedHandshakes.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				latest.Store("server", s)
				latest.Store("client", c)
			}
		})
	}
	var newConns atomic.Int64
	keepAlive := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			newConns.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}, Timeout: 10 * time.Second}
	wg.Go(func() { // one connection, reused
		for {
			select {
			case <-stop:
				return
			default:
			}
			requests.Add(1)
			if _, _, err := get(keepAlive); err != nil {
				failedRequests.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}
	})

	changed := make(chan viperkv.Event, 16)
	defer rig.p.OnChange(func(e viperkv.Event) {
		if e.Kind == viperkv.EventChanged {
			changed <- e
		}
	})()
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); _ = rig.p.Watch(ctx) }()
	defer func() { cancel(); <-watched }()

	serial := func(c *certtest.Issued) string { return c.Leaf().SerialNumber.Text(16) }
	awaitSerial := func(side, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			// A handshake that starts after the watcher saw the renewal must show it: wait
			// for one that started afterwards.
			h := handshakes.Load()
			for handshakes.Load() < h+3 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got, _ := latest.Load(side); got == want {
				return
			}
		}
		got, _ := latest.Load(side)
		t.Fatalf("the %s certificate's handshakes show serial %v, want the renewed %s", side, got, want)
	}
	for i := range renewals {
		for _, side := range []struct{ name, secret, cn string }{{"server", "server-tls", "localhost"}, {"client", "client-tls", "client"}} {
			c := rig.renew(side.secret, side.cn)
			select {
			case <-changed:
			case <-time.After(10 * time.Second):
				t.Fatalf("renewal %d of the %s certificate never reached the watcher", i+1, side.name)
			}
			awaitSerial(side.name, serial(c))
		}
	}
	close(stop)
	wg.Wait()
	if testing.Verbose() {
		fmt.Printf("certificates: renewals=%d handshakes=%d failed_handshakes=%d failed_requests=%d\n",
			2*renewals, handshakes.Load(), failedHandshakes.Load(), failedRequests.Load())
	}
	if failedHandshakes.Load() != 0 || failedRequests.Load() != 0 {
		t.Errorf("%d of %d handshakes and %d of %d keep-alive requests failed; first: %v",
			failedHandshakes.Load(), handshakes.Load(), failedRequests.Load(), requests.Load(), firstErr.Load())
	}
	if n := newConns.Load(); n != 1 {
		t.Errorf("the keep-alive client dialed %d connections, want 1: a renewal must not cut open connections", n)
	}
	if serverCerts.Err() != nil || clientCerts.Err() != nil || cas.Err() != nil {
		t.Errorf("errors: %v %v %v", serverCerts.Err(), clientCerts.Err(), cas.Err())
	}
}
