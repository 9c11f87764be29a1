// Package azvault is the Azure source of secrets: Key Vault's data plane through azsecrets,
// with a shared credential (the managed identity by default), a transport that refuses
// redirects and tokens bound for another host, and the classification of every failure
// into the driver's kinds.
package azvault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/tracing"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/internal/driver"
)

// Config configures a Source.
type Config struct {
	// Credential gets tokens; nil: the managed identity Identity names (system-assigned
	// when nil), through Transport.
	Credential azcore.TokenCredential
	Identity   azidentity.ManagedIDKind
	// Vaults gives vaults credentials of their own, by host as requests name them
	// (lowercase: "other.vault.azure.net"); every other vault uses Credential. Each is
	// shared and bounded as Credential is, on its own.
	Vaults map[string]VaultCredential
	// Transport carries every request; nil: one like azcore's default. Redirects are never
	// followed.
	Transport policy.Transporter
	// Tracing makes the SDK's spans; zero: none.
	Tracing tracing.Provider
	// OnRequest, when set, is told of every request to a vault: its operation ("get" or
	// "list"), its status code (0 when no answer came) and whether the vault throttled it.
	OnRequest func(ctx context.Context, vault, op string, status int)
	Log       *slog.Logger
}

// Source reads Key Vault: one azsecrets client per vault, one shared credential for all
// but the vaults Config.Vaults gives their own.
type Source struct {
	cred      *sharedCredential
	byVault   map[string]*sharedCredential // Config.Vaults' credentials, by vault host
	transport policy.Transporter
	owned     *http.Transport // the transport this source made, whose connections Close drops
	cfg       Config

	mu     sync.Mutex
	vaults map[string]*vaultClient
}

type vaultClient struct {
	client *azsecrets.Client
	cred   *sharedCredential // the credential that serves this vault, named in its failures
	// warm holds the vault's first request, so the challenge round trip (the SDK's first
	// request goes out without a token to learn the tenant and resource) happens once, not
	// once per concurrent request. A token in it is the turn to go first; warmed is closed
	// once a request has been answered. Waiters give up when their own context ends.
	warm   chan struct{}
	warmed chan struct{}
	once   sync.Once
}

// New returns a Source. It makes no request.
func New(cfg Config) (*Source, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, vaults: map[string]*vaultClient{}}
	tr := cfg.Transport
	if tr == nil {
		s.owned = defaultTransport()
		tr = &http.Client{Transport: s.owned}
	}
	s.transport = noRedirects(tr) // one connection pool for the identity endpoint and the vaults
	cred := cfg.Credential
	if cred == nil {
		mi, err := newManagedIdentity(s.transport, cfg.Identity)
		if err != nil {
			return nil, err
		}
		cred = mi
	}
	s.cred = &sharedCredential{cred: cred}
	if len(cfg.Vaults) > 0 {
		s.cred.label = "the default (" + credentialKind(cfg.Credential, cfg.Identity) + ")"
		var err error
		if s.byVault, err = s.vaultCredentials(cfg); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Credential returns the source's default credential, shared with its token requests.
func (s *Source) Credential() azcore.TokenCredential { return s.cred }

// Transport returns the transport the source sends through, which refuses redirects.
func (s *Source) Transport() policy.Transporter { return s.transport }

// Close drops the idle connections of the transport the source made (one passed in
// Config is the caller's to manage).
func (s *Source) Close() error {
	if s.owned != nil {
		s.owned.CloseIdleConnections()
	}
	return nil
}

func (s *Source) vault(host string) (*vaultClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vc, ok := s.vaults[host]; ok {
		return vc, nil
	}
	vc := &vaultClient{warm: make(chan struct{}, 1), warmed: make(chan struct{})}
	vc.warm <- struct{}{}
	per := []policy.Policy{vaultGuard(host), warmPolicy{vc}}
	if s.cfg.OnRequest != nil {
		per = append(per, requestCounter{host: host, on: s.cfg.OnRequest})
	}
	opts := &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport:        s.transport,
		PerRetryPolicies: per,
		TracingProvider:  s.cfg.Tracing,
		// Three retries after about 0.25, 0.75 and 1.75 s (azcore waits (2^n-1) x RetryDelay,
		// jittered): ride out a brief 5xx without spending azcore's default ~6 s on a broken vault.
		Retry: policy.RetryOptions{ShouldRetry: shouldRetry, RetryDelay: 250 * time.Millisecond, MaxRetryDelay: 4 * time.Second},
	}}
	cred := s.cred
	if own := s.byVault[host]; own != nil {
		cred = own
	}
	// The client's challenge policy learns the vault's tenant from its 401 and asks cred
	// for a token of that tenant, so a vault of another tenant works with a credential
	// that may get tokens there.
	c, err := azsecrets.NewClient("https://"+host, cred, opts)
	if err != nil {
		return nil, err
	}
	vc.client, vc.cred = c, cred
	s.vaults[host] = vc
	return vc, nil
}

// shouldRetry decides which failures azcore retries on its own. 429 is left out on purpose:
// the limiter must see throttling to narrow the window and pause the whole vault. A vault
// name that does not resolve is left out too: DNS will not change its answer in seconds.
func shouldRetry(resp *http.Response, err error) bool {
	if err != nil {
		var dns *net.DNSError
		return !(errors.As(err, &dns) && dns.IsNotFound)
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// open lets every waiting request go: the vault's challenge is learned.
func (vc *vaultClient) open() { vc.once.Do(func() { close(vc.warmed) }) }

// warmPolicy opens the vault's turn as soon as a request goes out with a token: by then
// the client's challenge policy has learned the vault's tenant and holds a token for it,
// so the requests waiting need not wait for this one's answer too (a round trip).
type warmPolicy struct{ vc *vaultClient }

func (w warmPolicy) Do(req *policy.Request) (*http.Response, error) {
	if req.Raw().Header.Get("Authorization") != "" {
		w.vc.open()
	}
	return req.Next()
}

// awaitTurn returns once the vault has answered a request, or this caller may send the
// first one, or ctx ends. The caller calls done when its request is over, saying whether
// the vault answered: then every waiter goes; if not, the next one takes the turn.
func (vc *vaultClient) awaitTurn(ctx context.Context) (done func(answered bool), err error) {
	select {
	case <-vc.warmed:
		return func(bool) {}, nil
	default:
	}
	select {
	case <-vc.warmed:
		return func(bool) {}, nil
	case <-vc.warm:
		return func(answered bool) {
			if answered {
				vc.open()
			}
			vc.warm <- struct{}{}
		}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Get asks the vault for a version of a secret.
func (s *Source) Get(ctx context.Context, vault, name, version string) (driver.Bundle, error) {
	what := "GET " + driver.SecretURL(vault, name, version)
	vc, err := s.vault(vault)
	if err != nil {
		return driver.Bundle{}, &driver.Error{Kind: driver.KindOther, Reason: what + ": " + err.Error()}
	}
	done, err := vc.awaitTurn(ctx)
	if err != nil {
		return driver.Bundle{}, classify(what, version != "", vault, err)
	}
	var raw *http.Response
	var opts *azsecrets.GetSecretOptions
	if driver.WantsPEM(ctx) {
		pem := azsecrets.ContentTypePEM
		opts = &azsecrets.GetSecretOptions{OutContentType: &pem}
	}
	resp, err := vc.client.GetSecret(policy.WithCaptureResponse(ctx, &raw), name, version, opts)
	done(err == nil || raw != nil) // an answer means the challenge is learned
	if err != nil {
		return driver.Bundle{}, vc.cred.blame(err, classify(what, version != "", vault, err))
	}
	b := driver.Bundle{Value: resp.Value, ContentType: deref(resp.ContentType), Tags: tags(resp.Tags), Attributes: attributes(resp.Attributes)}
	if resp.ID != nil {
		b.ID = string(*resp.ID)
	}
	if raw != nil {
		if t, err := http.ParseTime(raw.Header.Get("Date")); err == nil {
			b.Date = &t
		}
	}
	return b, nil
}

// List starts a list of the vault's secrets.
func (s *Source) List(vault string) driver.Pager {
	vc, err := s.vault(vault)
	if err != nil {
		return failedPager{&driver.Error{Kind: driver.KindOther, Reason: "GET https://" + vault + "/secrets (list): " + err.Error()}}
	}
	return &pager{vault: vault, p: vc.client.NewListSecretPropertiesPager(nil), cred: vc.cred}
}

type pager struct {
	vault string
	p     *runtime.Pager[azsecrets.ListSecretPropertiesResponse]
	cred  *sharedCredential
}

func (p *pager) NextPage(ctx context.Context) (driver.Page, error) {
	resp, err := p.p.NextPage(ctx)
	if err != nil {
		return driver.Page{}, p.cred.blame(err, classify("GET https://"+p.vault+"/secrets (list)", false, p.vault, err))
	}
	out := driver.Page{Items: make([]driver.Item, 0, len(resp.Value))}
	for _, item := range resp.Value {
		if item == nil {
			continue
		}
		it := driver.Item{ContentType: deref(item.ContentType), Tags: tags(item.Tags), Attributes: attributes(item.Attributes)}
		if item.ID != nil {
			it.ID = string(*item.ID)
		}
		out.Items = append(out.Items, it)
	}
	if resp.NextLink != nil {
		out.NextLink = *resp.NextLink
	}
	return out, nil
}

type failedPager struct{ err error }

func (f failedPager) NextPage(context.Context) (driver.Page, error) { return driver.Page{}, f.err }

func attributes(a *azsecrets.SecretAttributes) driver.Attributes {
	if a == nil {
		return driver.Attributes{}
	}
	return driver.Attributes{Enabled: a.Enabled, Created: a.Created, Updated: a.Updated, Expires: a.Expires, NotBefore: a.NotBefore}
}

func tags(in map[string]*string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if v != nil {
			if out == nil {
				out = make(map[string]string, len(in))
			}
			out[k] = *v
		}
	}
	return out
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// requestCounter is the per-retry policy that tells Config.OnRequest of each request.
type requestCounter struct {
	host string
	on   func(ctx context.Context, vault, op string, status int)
}

// Do implements policy.Policy.
func (c requestCounter) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	op := "get"
	if p := req.Raw().URL.Path; p == "/secrets" || p == "/secrets/" {
		op = "list"
	}
	c.on(req.Raw().Context(), c.host, op, status)
	return resp, err
}

// retryAfterOf reads the delay a throttled response asks for, in azcore's order of preference.
func retryAfterOf(resp *http.Response) time.Duration {
	const fallback = time.Second
	if resp == nil {
		return fallback
	}
	for _, h := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if ms, err := strconv.Atoi(resp.Header.Get(h)); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := resp.Header.Get("Retry-After")
	if sec, err := strconv.Atoi(v); err == nil && sec > 0 {
		return time.Duration(sec) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return fallback
}

// classify maps a failed request to an *driver.Error without secret data. It decides by the
// error's structure: the credential's failure, the vault's status code, the network error.
// what names the request; pinned says it asked for a version.
func classify(what string, pinned bool, vault string, err error) *driver.Error {
	var ce *credentialError
	var re *azcore.ResponseError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &ce):
		kind, reason, transient := classifyCredentialError(ce)
		return &driver.Error{Kind: kind, Reason: reason, Transient: transient}
	case errors.As(err, &re):
		return answerOf(re).Classify(what, vault, pinned)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return &driver.Error{Kind: driver.KindVaultNotFound, Reason: "vault host " + vault + " does not resolve"}
	case errors.Is(err, context.DeadlineExceeded):
		// The fetch's deadline (then nothing retries) or a deadline of its own, such as a token
		// request's: another try may be quicker.
		return &driver.Error{Kind: driver.KindTimeout, Reason: what + ": timed out", Transient: true}
	case errors.Is(err, context.Canceled):
		return &driver.Error{Kind: driver.KindTimeout, Reason: what + ": canceled"}
	}
	return &driver.Error{Kind: driver.KindOther, Reason: what + ": " + firstLine(err.Error()), Transient: transientError(err)}
}

// answerOf reads a vault's error answer: its status, and the codes and message of its body.
// The inner code tells a disabled secret (SecretDisabled) from each reason for a 403
// (ForbiddenByRbac, ForbiddenByPolicy, ForbiddenByFirewall, ForbiddenByConnection); the
// body is untrusted, and driver.Answer.Classify reads it as such.
func answerOf(re *azcore.ResponseError) driver.Answer {
	var after time.Duration
	if re.StatusCode == http.StatusTooManyRequests {
		after = retryAfterOf(re.RawResponse)
	}
	if re.RawResponse == nil {
		return driver.Answer{Status: re.StatusCode, RetryAfter: after}
	}
	body, err := runtime.Payload(re.RawResponse)
	if err != nil {
		return driver.Answer{Status: re.StatusCode, RetryAfter: after}
	}
	return driver.ParseAnswer(re.StatusCode, body, after)
}

// transientError reports whether err is a failure of the exchange rather than an answer: a
// connection refused, reset or closed mid-response, a timeout, a name server not answering.
// A certificate the client does not trust, TLS spoken to a plain server, a vault name that
// does not exist, or an error azcore was told not to retry are not: none of them changes
// within a Load.
func transientError(err error) bool {
	var (
		final interface{ NonRetriable() }
		cv    *tls.CertificateVerificationError
		ua    x509.UnknownAuthorityError
		hn    x509.HostnameError
		ci    x509.CertificateInvalidError
		rh    tls.RecordHeaderError
		dns   *net.DNSError
		ne    net.Error
	)
	switch {
	case errors.As(err, &final), errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn),
		errors.As(err, &ci), errors.As(err, &rh):
		return false
	case errors.As(err, &dns):
		return !dns.IsNotFound
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true
	}
	// *url.Error (the HTTP client's exchange failed), *net.OpError, a timeout.
	return errors.As(err, &ne)
}
