package kvtest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// DefaultTenantID is the tenant every Server emulates unless [WithTenantID] says otherwise.
// It is fixed so tokens cached by MSAL in one test stay valid at the next test's Server.
const DefaultTenantID = "8f5c6a3e-2b1d-4e7a-9c0f-6d4b2a1e3f57"

// DefaultTokenLifetime is the lifetime of issued tokens, as managed identity tokens have.
const DefaultTokenLifetime = 24 * time.Hour

// Option configures a Server.
type Option func(*config)

type config struct {
	tenant         string
	tokenLifetime  time.Duration
	noSystem       bool
	signingKey     *rsa.PrivateKey
	errorLog       *log.Logger
	logger         *slog.Logger
	deletionWindow time.Duration
	recoveryDelay  time.Duration
	rbacDelay      time.Duration
	shortPages     bool
	noRetryAfter   bool
	tenantSet      bool   // WithTenantID was given
	seed           []byte // WithSeed's YAML

	// certIssueDelay is WithCertificateIssueDelay's (certificates.go); unset means
	// DefaultCertificateIssueDelay.
	certIssueDelay    time.Duration
	certIssueDelaySet bool
}

// DefaultDeletionWindow is how long a DELETE or a purge takes to complete unless
// [WithDeletionWindow] says otherwise. Key Vault deletes asynchronously: a purge or a
// re-create right after DELETE answers 409 ObjectIsBeingDeleted for a second or a few
// (longer for secrets with many versions); the other SDKs' delete pollers check every 2 s.
const DefaultDeletionWindow = 2 * time.Second

// WithDeletionWindow sets how long DELETE /secrets/{name} and a purge take to complete
// (default [DefaultDeletionWindow]); 0 makes both instant, for tests that need speed.
// While a secret is being deleted it is neither a secret (GET answers 404) nor yet a
// deleted secret (GET /deletedsecrets/{name} answers 404, lists leave it out); re-creating
// (PUT), purging or recovering it answers 409 Conflict, innererror ObjectIsBeingDeleted.
// While a purge completes, the name cannot be reused: PUT answers the same 409 and a
// restore answers 409 Conflict. [Vault.DeleteSecret] follows the window too;
// [Vault.SetSecret] purges at once.
func WithDeletionWindow(d time.Duration) Option {
	return func(c *config) { c.deletionWindow = max(d, 0) }
}

// DefaultRecoveryDelay is how long a recovery of a deleted secret takes to complete unless
// [WithRecoveryDelay] says otherwise. Key Vault recovers asynchronously: right after POST
// /deletedsecrets/{name}/recover, GET /secrets/{name} still answers 404 for a second or a
// few; the other SDKs' recover pollers check every 2 s.
const DefaultRecoveryDelay = 2 * time.Second

// WithRecoveryDelay sets how long POST /deletedsecrets/{name}/recover takes to complete
// (default [DefaultRecoveryDelay]); 0 makes it instant. The recover request itself answers
// 200 at once. Until the recovery completes the secret is neither a secret (GET, PATCH,
// DELETE, backup and the versions list answer 404 SecretNotFound, lists leave it out) nor a
// deleted secret any more (GET /deletedsecrets/{name} answers 404, the deleted list leaves
// it out); a second recover or a purge answers 409 Conflict, re-creating it (PUT) 409
// Conflict with innererror ObjectIsBeingRecovered, and a restore of the name 409 Conflict.
// [Vault.SetSecret] completes a recovery in progress at once.
func WithRecoveryDelay(d time.Duration) Option {
	return func(c *config) { c.recoveryDelay = max(d, 0) }
}

// WithRBACPropagationDelay makes role assignments take d to apply (default 0: at once), as
// Azure RBAC changes take minutes to reach Key Vault: after [Vault.Grant] the identity
// keeps getting 403 ForbiddenByRbac, and after [Vault.Revoke] keeps its access, until d
// has passed. Changes apply in the order they were made. Seed grants ([WithSeed]) apply at
// once, as assignments made long before the app started.
func WithRBACPropagationDelay(d time.Duration) Option {
	return func(c *config) { c.rbacDelay = max(d, 0) }
}

// WithShortPages makes every vault's lists (secrets, versions, deleted secrets) page as
// the real service may: the first page is empty with a nextLink, pages then alternate
// between a short one (at most half of maxresults) and an empty one, and the last page is
// empty with no nextLink. A client must follow nextLink until there is none, whatever the
// pages hold, to see everything.
func WithShortPages() Option {
	return func(c *config) { c.shortPages = true }
}

// WithoutThrottleRetryAfter makes the vaults' 429 Throttled answers carry no Retry-After
// header, as Key Vault's sometimes do, so clients fall back to their own back-off (azcore
// retries with exponential delays from 800 ms). By default they carry Retry-After: the
// seconds until the token bucket has a token again.
func WithoutThrottleRetryAfter() Option {
	return func(c *config) { c.noRetryAfter = true }
}

// WithTenantID sets the emulated tenant (default [DefaultTenantID]). Tokens from another
// tenant, including ones MSAL cached from another Server, are rejected (wrong issuer).
func WithTenantID(id string) Option {
	return func(c *config) { c.tenant, c.tenantSet = strings.ToLower(strings.TrimSpace(id)), true }
}

// WithTokenLifetime sets the lifetime of issued tokens (default 24 h). MSAL only reuses a
// cached token with more than 5 minutes left, so a lifetime of 5 minutes or less makes
// every GetToken reach the identity endpoint; a negative one issues expired tokens.
func WithTokenLifetime(d time.Duration) Option {
	return func(c *config) {
		if d != 0 {
			c.tokenLifetime = d
		}
	}
}

// WithoutSystemIdentity starts the Server with its system-assigned identity disabled,
// like an app with no managed identity ("MSI not enabled").
func WithoutSystemIdentity() Option {
	return func(c *config) { c.noSystem = true }
}

// WithSigningKey makes the Server sign tokens with key instead of the key shared by all
// Servers of the process. Tokens MSAL cached from other Servers then fail validation.
func WithSigningKey(key *rsa.PrivateKey) Option {
	return func(c *config) { c.signingKey = key }
}

// WithErrorLog sets the logger for the listeners' internal errors (TLS handshake
// failures and the like), which are discarded by default.
func WithErrorLog(l *log.Logger) Option {
	return func(c *config) { c.errorLog = l }
}

// WithLogger makes the Server log each step of the flows it serves at Info level: tokens
// issued, challenges, signing keys fetched through OIDC discovery, tokens validated, RBAC
// decisions and secrets read (names and versions, never values). Logs are discarded by
// default. The quickstart uses this to show the managed identity flow.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// Server is a running emulator of Entra ID, the managed identity endpoints and Key Vault.
// All its methods are safe for concurrent use.
type Server struct {
	cfg            config
	tenant         string
	pki            *pki
	signer         *signer
	identityHeader string

	entra, appService, imds *listener

	validator      *tokenValidator
	router         *emuinfo.Router
	client         *http.Client
	counters       counters
	identityFaults faultSet

	closed    chan struct{}
	closeOnce sync.Once
	files     ownedFiles // what WriteInfo wrote, removed by Close

	mu            sync.RWMutex
	system        Identity
	systemEnabled bool
	users         map[string]Identity // lowercase name -> identity
	vaults        map[string]*Vault   // lowercase host -> vault

	appCreds appCreds // client secrets and federated credentials, for the Entra token endpoint

	proxyMu sync.Mutex
	proxy   *proxy // started by the first ProxyURL call
}

// NewServer starts an emulator on 127.0.0.1: the Entra listener (TLS), the App Service
// and IMDS style identity endpoints (HTTP) and, as vaults are added, one TLS listener per
// vault. Like httptest.NewServer it panics if it cannot start; see [Start].
// Call Close when done.
func NewServer(opts ...Option) *Server {
	s, err := Start(opts...)
	if err != nil {
		panic(err)
	}
	return s
}

// Start is [NewServer] returning an error instead of panicking.
func Start(opts ...Option) (*Server, error) {
	cfg := config{tenant: DefaultTenantID, tokenLifetime: DefaultTokenLifetime, deletionWindow: DefaultDeletionWindow,
		recoveryDelay: DefaultRecoveryDelay}
	for _, o := range opts {
		o(&cfg)
	}
	var sd *seedSpec
	if cfg.seed != nil {
		var err error
		if sd, err = parseSeed(bytes.NewReader(cfg.seed)); err != nil {
			return nil, &emuinfo.SeedError{Err: err}
		}
		if t := strings.ToLower(sd.TenantID); t != "" && !cfg.tenantSet {
			cfg.tenant = t
		}
	}
	if cfg.tenant == "" {
		return nil, errors.New("kvtest: empty tenant ID")
	}
	if cfg.errorLog == nil {
		cfg.errorLog = log.New(io.Discard, "", 0)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:            cfg,
		tenant:         cfg.tenant,
		identityHeader: randomHex(16),
		counters:       newCounters(),
		closed:         make(chan struct{}),
		users:          map[string]Identity{},
		vaults:         map[string]*Vault{},
		systemEnabled:  !cfg.noSystem,
	}
	var err error
	if cfg.signingKey != nil {
		s.signer, err = newSigner(cfg.signingKey)
	} else {
		s.signer, err = processSigner()
	}
	if err != nil {
		return nil, err
	}
	if s.pki, err = newPKI(); err != nil {
		return nil, err
	}
	s.system = s.deriveIdentity(SystemIdentityName, false)
	if s.entra, err = s.listen(s.entraHandler(), true); err != nil {
		s.Close()
		return nil, err
	}
	if s.appService, err = s.listen(s.appServiceHandler(), false); err != nil {
		s.Close()
		return nil, err
	}
	if s.imds, err = s.listen(s.imdsHandler(), false); err != nil {
		s.Close()
		return nil, err
	}
	// The vaults reach the Entra listener directly, as Key Vault reaches Entra ID.
	s.validator = &tokenValidator{
		discoveryURL: s.oidcDiscoveryURL(),
		client:       &http.Client{Transport: s.newTransport(nil), Timeout: 10 * time.Second},
		cache:        map[string]*verifiedToken{},
		log:          cfg.logger,
	}
	s.router = &emuinfo.Router{Vault: s.vaultAddr, IMDS: s.imds.addr, Entra: s.entra.addr, Direct: emuinfo.Loopback, Name: "this kvtest.Server"}
	s.client = &http.Client{Transport: s.newTransport(s.router)}
	if err := s.applySeed(sd); err != nil {
		s.Close()
		return nil, &emuinfo.SeedError{Err: err}
	}
	return s, nil
}

// newTransport returns a transport trusting the emulator's CA; rt, when non-nil, routes
// production host names to the emulator's listeners.
func (s *Server) newTransport(rt *emuinfo.Router) *http.Transport {
	return emuinfo.Transport(s.pki.pool, rt)
}

// Close shuts down every listener and ends hanging requests. It is safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.mu.Lock()
		vaults := make([]*Vault, 0, len(s.vaults))
		for _, v := range s.vaults {
			vaults = append(vaults, v)
		}
		s.mu.Unlock()
		for _, l := range []*listener{s.entra, s.appService, s.imds} {
			if l != nil {
				l.close()
			}
		}
		for _, v := range vaults {
			v.closeEvents()       // Event Grid: subscriptions and expiry timers
			v.closeRecoveries()   // recoveries still completing
			v.closeCertificates() // renewals, issuances and recoveries of certificates
			v.ln.close()
		}
		s.closeProxy()
		if s.client != nil {
			s.client.CloseIdleConnections()
		}
		if s.validator != nil {
			s.validator.client.CloseIdleConnections()
		}
		s.files.removeAll()
	})
}

// TenantID returns the emulated tenant's ID.
func (s *Server) TenantID() string { return s.tenant }

// Client returns an *http.Client for the SDK's ClientOptions.Transport. It trusts the
// emulator's CA and dials "<vault>.vault.azure.net:443" (and the .cn and
// .usgovcloudapi.net suffixes) to that vault's listener, unknown vault hosts to a
// *net.DNSError with IsNotFound, "169.254.169.254:80" to the IMDS style endpoint and the
// Entra ID hosts to the Entra listener, and loopback addresses (a test's own servers) as
// they are; anything else is refused, so a test can never reach Azure. URLs keep their
// production hosts, so the SDK's challenge resource verification stays on.
// Every call returns the same client.
func (s *Server) Client() *http.Client { return s.client }

// NewClient returns a client routed like [Server.Client] but with a connection pool of
// its own, for comparisons that must not share warm connections.
func (s *Server) NewClient() *http.Client {
	return &http.Client{Transport: s.newTransport(s.router)}
}

// CACertPEM returns the emulator CA's certificate, PEM encoded.
func (s *Server) CACertPEM() []byte { return append([]byte(nil), s.pki.caPEM...) }

// CertPool returns a pool holding only the emulator's CA.
func (s *Server) CertPool() *x509.CertPool { return s.pki.pool.Clone() }

// identityEndpoint returns the App Service style endpoint, http://127.0.0.1:PORT/msi/token.
func (s *Server) identityEndpoint() string { return "http://" + s.appService.addr + appServicePath }

// imdsEndpoint returns the IMDS style endpoint's direct URL,
// http://127.0.0.1:PORT/metadata/identity/oauth2/token. Clients using [Server.Client]
// reach it at the real address, http://169.254.169.254/metadata/identity/oauth2/token.
func (s *Server) imdsEndpoint() string { return "http://" + s.imds.addr + imdsPath }

// entraURL returns the Entra listener's base URL, https://127.0.0.1:PORT.
func (s *Server) entraURL() string { return "https://" + s.entra.addr }

// Env returns the environment variables App Service sets for managed identity:
// IDENTITY_ENDPOINT and IDENTITY_HEADER. MSAL reads them when a credential is created
// (to pick the source) and again on every token request (for the URL and header).
func (s *Server) Env() map[string]string {
	return map[string]string{
		"IDENTITY_ENDPOINT": s.identityEndpoint(),
		"IDENTITY_HEADER":   s.identityHeader,
	}
}

// Count returns how many times op happened: the server's own counters (OpToken,
// OpDiscovery, OpJWKS) plus the sum over all vaults. See [Vault.Count].
func (s *Server) Count(op Op) int64 {
	n := s.counters.get(op)
	for _, v := range s.Vaults() {
		n += v.Count(op)
	}
	return n
}

// ResetCounters sets every counter of the server and its vaults to zero.
func (s *Server) ResetCounters() {
	s.counters.reset()
	for _, v := range s.Vaults() {
		v.ResetCounters()
	}
}

// Vaults returns the server's vaults.
func (s *Server) Vaults() []*Vault {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Vault, 0, len(s.vaults))
	for _, v := range s.vaults {
		out = append(out, v)
	}
	return out
}

// vaultAddr returns the listener address for a vault host.
func (s *Server) vaultAddr(host string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if v := s.vaults[host]; v != nil {
		switch Outage(v.outage.Load()) {
		case OutageUnresolvable:
			return "", false
		case OutageRefused:
			return refusingAddr, true
		}
		return v.ln.addr, true
	}
	return "", false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return formatUUID(b)
}

// errClosed is returned by operations on a closed Server.
var errClosed = errors.New("kvtest: server closed")

func (s *Server) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// String describes the server for debugging.
func (s *Server) String() string {
	return fmt.Sprintf("kvtest.Server{tenant: %s, entra: %s}", s.tenant, s.entra.addr)
}
