package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/certificate"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/kvtest"
)

// The configuration keys, and each service's configuration. Each service references only
// what it needs: the server never sees the client's private key, nor the client the
// server's.
const (
	serverTLSKey = "server.tls"
	clientCAKey  = "server.client_ca"
	clientTLSKey = "client.tls"
	serverCAKey  = "client.server_ca"

	serverConfig = `
server:
  tls: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/server-tls/)"
  client_ca: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/mtls-ca/)"
`
	clientConfig = `
client:
  tls: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/client-tls/)"
  server_ca: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/mtls-ca/)"
`
)

// service is what each side runs: a provider that resolves its configuration and keeps it
// current by polling (Watch) and by Event Grid push (a webhook the vault's events reach).
type service struct {
	p       *viperkv.Provider
	webhook *httptest.Server
	sub     *kvtest.Subscription
	stop    context.CancelFunc
	watched chan struct{}
}

// startService resolves yamlConfig and starts keeping it current. It tells track when the
// service takes a new version of own, the certificate it presents.
func startService(ctx context.Context, emu *kvtest.Server, kv *kvtest.Vault, name, yamlConfig string,
	own *certSpec, cfg config, track *tracker) (*service, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(yamlConfig)); err != nil {
		return nil, err
	}
	// WithEmulator reaches the emulator with production vault URLs; on Azure, leave it out
	// and the provider authenticates with the managed identity.
	p, err := viperkv.New(v, viperkv.WithEmulator(emu), viperkv.WithRefreshInterval(cfg.pollInterval()),
		viperkv.WithExpiryWarning(cfg.expiryWarning()), viperkv.WithLogger(cfg.Log.With("service", name)))
	if err != nil {
		return nil, err
	}
	s := &service{p: p}
	if err := p.Load(ctx); err != nil {
		_ = p.Close()
		return nil, err
	}
	p.OnChange(func(e viperkv.Event) {
		if e.Kind == viperkv.EventChanged && strings.EqualFold(e.Secret.Name, own.name) {
			track.pickedUp(e.NewVersion, e.Source, e.Time)
		}
	})

	// Push: the webhook, Entra-authenticated, subscribed to the vault's certificate events
	// (a renewal is CertificateNewVersionCreated, which the handler takes as a new version of
	// the certificate's secret) and secret events (the CA bundle is a plain secret).
	audience := "api://mtls-" + name + "-webhook"
	h, err := eventgrid.NewHandler(p, eventgrid.Entra(emu.TenantID(), audience))
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	s.webhook = httptest.NewServer(h)
	s.sub = kv.Subscribe(kvtest.EventSubscription{Name: name + "-events", Endpoint: s.webhook.URL, Audience: audience,
		Schema: kvtest.CloudEventSchema, EventTypes: []string{
			kvtest.EventCertificateNewVersionCreated, kvtest.EventCertificateNearExpiry, kvtest.EventCertificateExpired,
			kvtest.EventSecretNewVersionCreated, kvtest.EventSecretNearExpiry, kvtest.EventSecretExpired}})
	if err := s.sub.WaitValidated(ctx); err != nil {
		s.sub.Close()
		s.webhook.Close()
		_ = p.Close()
		return nil, fmt.Errorf("%s: the Event Grid subscription: %w", name, err)
	}

	wctx, stop := context.WithCancel(ctx)
	s.stop, s.watched = stop, make(chan struct{})
	go func() {
		defer close(s.watched)
		_ = p.Watch(wctx) // until close
	}()
	return s, nil
}

func (s *service) close() {
	s.stop()
	<-s.watched
	s.sub.Close()
	s.webhook.Close()
	_ = s.p.Close()
}

// server is the API: HTTPS, a client certificate required.
type server struct {
	svc       *service
	certs     *certificate.Certificates // its own certificate, following renewals
	clientCAs *certificate.Pool         // the bundle client certificates must chain to
	hs        *http.Server
	addr      string
	errs      handshakeLog
}

func startServer(ctx context.Context, emu *kvtest.Server, kv *kvtest.Vault, cfg config, track *tracker) (*server, error) {
	svc, err := startService(ctx, emu, kv, "server", serverConfig, serverCert, cfg, track)
	if err != nil {
		return nil, err
	}
	s := &server{svc: svc}
	if s.certs, err = certificate.New(svc.p, serverTLSKey); err != nil {
		svc.close()
		return nil, err
	}
	if s.clientCAs, err = certificate.NewPool(svc.p, clientCAKey); err != nil {
		s.certs.Close()
		svc.close()
		return nil, err
	}
	s.hs = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello, %s\n", r.TLS.PeerCertificates[0].Subject.CommonName) // who called, verified
		}),
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// Each handshake takes the current certificate (an atomic load): a renewal
			// reaches the next handshake, and open connections keep theirs.
			GetCertificate: s.certs.GetCertificate,
			// The client certificate is required but verified in VerifyConnection, against
			// the bundle as it is now: ClientCAs would be a pool fixed at start.
			ClientAuth: tls.RequireAnyClientCert,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if err := s.clientCAs.VerifyClient(cs); err != nil {
					return err
				}
				track.saw(serialOf(cs.PeerCertificates[0]))
				return nil
			},
		},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(&s.errs, "", 0), // where net/http reports failed handshakes
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.close()
		return nil, err
	}
	s.addr = ln.Addr().String()
	go func() { _ = s.hs.ServeTLS(ln, "", "") }() // the certificate comes from GetCertificate
	return s, nil
}

// handshakeErrors returns how many handshakes failed on the server's side, and the first.
func (s *server) handshakeErrors() (int64, string) { return s.errs.counts() }

func (s *server) close() {
	if s.hs != nil {
		_ = s.hs.Close()
	}
	s.clientCAs.Close()
	s.certs.Close()
	s.svc.close()
}

// client is a caller of the API.
type client struct {
	svc       *service
	certs     *certificate.Certificates // its own certificate, following renewals
	serverCAs *certificate.Pool         // the bundle the server's certificate must chain to
	tls       *tls.Config
	url       string
}

func newClient(ctx context.Context, emu *kvtest.Server, kv *kvtest.Vault, cfg config, addr string, track *tracker) (*client, error) {
	svc, err := startService(ctx, emu, kv, "client", clientConfig, clientCert, cfg, track)
	if err != nil {
		return nil, err
	}
	c := &client{svc: svc, url: "https://" + addr + "/"}
	if c.certs, err = certificate.New(svc.p, clientTLSKey); err != nil {
		svc.close()
		return nil, err
	}
	if c.serverCAs, err = certificate.NewPool(svc.p, serverCAKey); err != nil {
		c.certs.Close()
		svc.close()
		return nil, err
	}
	// No ClientSessionCache: every new connection is a full handshake, with certificates.
	c.tls = &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: c.certs.GetClientCertificate,
		ServerName:           serverName, // the name the server's certificate must carry; we dial a loopback port
		// Go's own verification would use RootCAs, a pool fixed at start; VerifyServer
		// checks the chain against the bundle as it is now, and the name above.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := c.serverCAs.VerifyServer(cs); err != nil {
				return err
			}
			track.saw(serialOf(cs.PeerCertificates[0]))
			return nil
		},
	}
	return c, nil
}

func (c *client) close() {
	c.serverCAs.Close()
	c.certs.Close()
	c.svc.close()
}

// handshakeLog counts the handshakes net/http reports as failed on its error log.
type handshakeLog struct {
	mu    sync.Mutex
	n     int64
	first string
}

func (l *handshakeLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := strings.TrimSpace(string(b))
	if strings.Contains(line, "TLS handshake error") {
		if l.n == 0 {
			l.first = line
		}
		l.n++
	}
	return len(b), nil
}

func (l *handshakeLog) counts() (int64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.first
}
