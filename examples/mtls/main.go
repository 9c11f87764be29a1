// Command mtls runs an HTTPS service that requires mutual TLS, and a client of it, with every
// certificate and CA bundle from Key Vault, through several renewals under load, with no
// failed handshake and no restart.
//
//	go run ./examples/mtls                           # 2 renewals of each certificate, about 2 minutes
//	go run ./examples/mtls -validity 10s -renew-at 30  # the same in about 7 s: renewed every 3 s
//	go run ./examples/mtls -v                        # and the providers' and the emulator's logs on stderr
//
// It runs on the built-in emulator (package kvtest), which stands in for Entra ID, Key Vault
// and Event Grid. The vault holds:
//
//   - mtls-issuer, a certificate issuer (provider DigiCert): on Azure, the vault's account
//     with a CA Key Vault integrates with; on the emulator, a test CA the emulator generated;
//   - mtls-ca, a secret: the PEM certificate of that CA, the bundle both sides verify their
//     peer against;
//   - server-tls and client-tls, two Key Vault certificates whose policies name mtls-issuer,
//     so the vault issues them signed by its CA and auto-renews them (their linked secrets
//     hold the certificate, its chain and its private key; PKCS#12 for the server, PEM for
//     the client, to show both).
//
// Two services read them through a viperkv Provider each, as two deployments would:
//
//	server:                                      # the API (services.go)
//	  tls: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/server-tls/)"
//	  client_ca: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/mtls-ca/)"
//	client:                                      # a caller of the API (services.go)
//	  tls: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/client-tls/)"
//	  server_ca: "@KeyVault(SecretUri=https://mtlsvault.vault.azure.net/secrets/mtls-ca/)"
//
// Package certificate turns those keys into tls.Config callbacks (GetCertificate,
// GetClientCertificate, and VerifyClient / VerifyServer against the current bundle) that follow
// each renewal. Renewals reach each service by Event Grid push (the emulator delivers the
// vault's CertificateNewVersionCreated to each service's webhook, Entra-authenticated, as on
// Azure), with polling every quarter of the validity as the safety net.
//
// Each certificate is valid for -validity (default 2m) and renewed by the vault's AutoRenew
// at -renew-at percent of it (default 50: every minute). Meanwhile -conns goroutines make a
// new connection, so a new handshake, for every request, and -keepalive goroutines send
// requests over one connection each. After -renewals renewals of each certificate the
// program checks that each renewal was signed by the issuer's CA, that no handshake and no
// request failed, and that every renewed certificate was presented in new handshakes: the
// server saw each new client serial, the client each new server serial. The last line is
//
//	mtls: renewals=<n> handshakes=<n> requests=<n> failed_handshakes=<n> failed_requests=<n>
//
// (handshakes: requests on a new connection; requests: requests on kept-alive connections;
// renewals: of each certificate) and the program exits with status 1 if a check failed. It
// prints subjects, serials and versions, never key material.
//
// # Why a CA, and who renews
//
// Each side verifies its peer against a CA bundle, not against the peer's own certificate.
// With self-signed certificates the bundle would have to be the peer's certificate, and a
// renewal would then be a race between two services: the presenter switching to its new
// certificate and the verifier trusting it. The verifier cannot trust a certificate before it
// exists, and the presenter switches as soon as its provider sees the renewal, so handshakes
// fail in between (tried on the emulator: with both certificates self-signed, auto-renewed and
// polled every 200 ms, about 4% of new handshakes failed). With a CA, a renewed leaf is trusted
// the moment it is issued, whichever service sees it first.
//
// Key Vault auto-renews a certificate itself when its issuer is "Self" or a CA it integrates
// with (DigiCert, GlobalSign): the vault has a certificate issuer for the CA, and each
// certificate's policy names it, with the lifetime action AutoRenew at -renew-at percent.
// That is what the vault does here (ca.go): the emulator issues both certificates signed by
// the issuer's CA and renews them itself, each renewal a new version that publishes
// CertificateNewVersionCreated. No job of the example issues or imports a certificate; it
// only watches the vault's versions, to tell each renewal's story and check that the CA
// signed it. (For a CA Key Vault does not integrate with, a job would issue the next
// certificate and import it, which makes the same new version and event.)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/viperkv/viperkv/kvtest"
)

func main() {
	cfg := defaultConfig()
	flag.IntVar(&cfg.Renewals, "renewals", cfg.Renewals, "renewals of each certificate to run through")
	flag.DurationVar(&cfg.Validity, "validity", cfg.Validity, "each certificate's validity (at least 2s)")
	flag.IntVar(&cfg.RenewAt, "renew-at", cfg.RenewAt, "renew each certificate at this percentage of its validity (1-99)")
	flag.IntVar(&cfg.Conns, "conns", cfg.Conns, "goroutines making a new connection (a new handshake) for each request")
	flag.IntVar(&cfg.KeepAlive, "keepalive", cfg.KeepAlive, "goroutines sending requests over one kept-alive connection each")
	verbose := flag.Bool("v", false, "log what the providers and the emulator do, to stderr (never a value)")
	flag.Parse()
	if *verbose {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := run(ctx, cfg, os.Stdout)
	if errors.Is(err, errChecks) {
		os.Exit(1) // run printed what failed, then the summary line
	}
	if err != nil {
		fmt.Println("mtls: FAILED:", err)
		os.Exit(1)
	}
}

// config is what a run does; main fills it from the flags.
type config struct {
	Renewals  int           // renewals of each certificate to run through
	Validity  time.Duration // each certificate's validity
	RenewAt   int           // renewal at this percentage of the validity
	Conns     int           // goroutines making a new connection for each request
	KeepAlive int           // goroutines sending requests over one kept-alive connection each
	Log       *slog.Logger  // the providers' and the emulator's logs; nil discards them

	after func(*kvtest.Vault) // tests: look at the vault before it is closed
}

func defaultConfig() config {
	return config{Renewals: 2, Validity: 2 * time.Minute, RenewAt: 50, Conns: 4, KeepAlive: 2}
}

// renewEvery is how long after it becomes valid a certificate is renewed.
func (c config) renewEvery() time.Duration {
	return c.Validity * time.Duration(c.RenewAt) / 100
}

// pollInterval is the providers' refresh interval, the safety net behind Event Grid: a
// quarter of the validity, so that a renewal whose event was lost still reaches the
// services long before the certificate it replaces expires (with the default 50%, it has
// half of its validity left when it is renewed).
func (c config) pollInterval() time.Duration { return c.Validity / 4 }

// expiryWarning is when the providers warn that a certificate in use expires soon (the
// default, 7 days, would warn of every version of a 2-minute certificate): halfway between
// its renewal point and its expiry, where a certificate that missed its renewal is.
func (c config) expiryWarning() time.Duration { return (c.Validity - c.renewEvery()) / 2 }

func (c config) validate() error {
	switch {
	case c.Renewals < 1:
		return errors.New("-renewals must be at least 1")
	case c.Validity < 2*time.Second:
		return errors.New("-validity must be at least 2s")
	case c.RenewAt < 1 || c.RenewAt > 99:
		return errors.New("-renew-at must be between 1 and 99")
	case c.renewEvery() < time.Second:
		return errors.New("-validity and -renew-at renew more than once a second")
	case c.Conns < 1 || c.KeepAlive < 0:
		return errors.New("-conns must be at least 1 and -keepalive at least 0")
	}
	return nil
}

// errChecks is run's error when the load ran but a check failed; run has printed why.
var errChecks = errors.New("mtls: a check failed")

// run sets up the vault, the server and the client, runs the load through cfg.Renewals
// renewals of each certificate, and writes the story to w, the summary line last.
func run(ctx context.Context, cfg config, w io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	out := &syncWriter{w: w}
	say := func(format string, args ...any) { fmt.Fprintf(out, "mtls: "+format+"\n", args...) }

	// 1. The emulator, standing in for Entra ID, Key Vault and Event Grid. Both services
	// authenticate as the app's managed identity, which may read secrets.
	emu, err := kvtest.Start(kvtest.WithLogger(cfg.Log))
	if err != nil {
		return err
	}
	defer emu.Close()
	kv := emu.AddVault(vaultName)
	kv.Grant(emu.SystemIdentity(), kvtest.RoleSecretsUser)
	if cfg.after != nil {
		defer cfg.after(kv)
	}

	// 2. The certificate issuer and its CA, the CA bundle, and the server and client
	// certificates, which the vault issues signed by the CA and auto-renews.
	track := newTracker()
	pk, err := setUpVault(kv, cfg, track)
	if err != nil {
		return err
	}
	say("vault %s: issuer %s (provider %s, CA %s), the CA's certificate the bundle %s; certificates %s (%s, %s) and %s (%s, %s) issued by it, valid %s, auto-renewed by the vault at %d%% (every %s)",
		kv.Host(), issuerName, issuerProvider, pk.ca.Subject, caSecret, serverCert.name, serverCert.subject(), serverCert.contentType,
		clientCert.name, clientCert.subject(), clientCert.contentType, cfg.Validity, cfg.RenewAt, cfg.renewEvery())

	// 3. The server and the client, each with its own provider, as two services would have.
	srv, err := startServer(ctx, emu, kv, cfg, track)
	if err != nil {
		return err
	}
	defer srv.close()
	say("server: https://%s, client certificate required; its certificate and the CA it verifies clients with come from %s and %s",
		srv.addr, serverTLSKey, clientCAKey)
	cli, err := newClient(ctx, emu, kv, cfg, srv.addr, track)
	if err != nil {
		return err
	}
	defer cli.close()
	say("client: its certificate and the CA it verifies the server with come from %s and %s; it expects the server name %s",
		clientTLSKey, serverCAKey, serverName)
	say("renewals reach both by Event Grid push (webhooks %s and %s), polling every %s as the safety net",
		srv.svc.webhook.URL, cli.svc.webhook.URL, cfg.pollInterval())

	// 4. Load, while the vault renews each certificate cfg.Renewals times.
	l := startLoad(cli, cfg)
	say("load: %d goroutines making a new connection for each request, %d sending requests over a kept-alive connection; waiting for %d renewal(s) of each certificate",
		cfg.Conns, cfg.KeepAlive, cfg.Renewals)
	renewed := pk.watchRenewals(ctx)
	waitErr := waitRenewals(ctx, cfg, pk, renewed, track, say)
	res := l.finish()

	// 5. The checks and the summary line.
	var failures []string
	if waitErr != nil {
		failures = append(failures, waitErr.Error())
	}
	res.serverHandshakeErrors, res.firstServerError = srv.handshakeErrors()
	if res.failedHandshakes > 0 || res.serverHandshakeErrors > 0 {
		failures = append(failures, fmt.Sprintf("%d new connections failed at the client, %d handshakes at the server; first: %v / %v",
			res.failedHandshakes, res.serverHandshakeErrors, res.firstError, res.firstServerError))
	}
	if res.failedRequests > 0 {
		failures = append(failures, fmt.Sprintf("%d keep-alive requests failed; first: %v", res.failedRequests, res.firstKeepAliveError))
	}
	for _, f := range []interface{ Err() error }{srv.certs, srv.clientCAs, cli.certs, cli.serverCAs} {
		if err := f.Err(); err != nil {
			failures = append(failures, "a renewal was refused: "+err.Error())
		}
	}
	switch {
	case cfg.KeepAlive > 0 && res.keepAliveDials == int64(cfg.KeepAlive):
		say("keep-alive: %d requests over %d connections, each dialed once: renewals leave open connections alone",
			res.requests, cfg.KeepAlive)
	case cfg.KeepAlive > 0:
		say("keep-alive: %d requests; %d goroutines dialed %d connections", res.requests, cfg.KeepAlive, res.keepAliveDials)
	}
	for _, f := range failures {
		say("FAILED: %s", f)
	}
	fmt.Fprintf(out, "mtls: renewals=%d handshakes=%d requests=%d failed_handshakes=%d failed_requests=%d\n",
		track.completeRenewals(), res.handshakes, res.requests, res.failedHandshakes+res.serverHandshakeErrors, res.failedRequests)
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(failures) > 0 {
		return errChecks
	}
	return nil
}

// waitRenewals waits until the vault has renewed each certificate cfg.Renewals times and
// each renewed certificate has been seen in a new handshake, printing each renewal as it
// completes. A renewal not seen within the rest of the old certificate's validity (at
// least 15 s) is an error: by then handshakes would have failed on the expired one.
func waitRenewals(ctx context.Context, cfg config, pk *pki, renewed <-chan error, track *tracker, say func(string, ...any)) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	slack := max(cfg.Validity-cfg.renewEvery(), 15*time.Second)
	var deadline <-chan time.Time
	var renewErr error
	for {
		for _, r := range track.newlySeen() {
			say("renewal %d of %s: serial %s (version %s) issued by the vault's AutoRenew, signed by %s; the %s took it %s later (%s); the %s's first handshake with it %s later",
				r.n, r.cert.name, short(r.serial), short(r.version), pk.ca.Subject.CommonName, r.cert.owner, ms(r.pickedUp.Sub(r.issued)), r.source,
				r.cert.peer, ms(r.seen.Sub(r.issued)))
		}
		if renewed == nil && track.allSeen() {
			return renewErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-renewed:
			renewed, renewErr = nil, err
			if err != nil {
				return err
			}
			deadline = time.After(slack)
		case <-deadline:
			return fmt.Errorf("not seen in a new handshake within %s of being issued: %s", slack, track.unseen())
		case <-tick.C:
		}
	}
}

// ms rounds d for printing.
func ms(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(time.Millisecond).String()
}

// short abbreviates a serial or a version (hex) for printing.
func short(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// syncWriter serialises the lines of several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
