package viperkv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// maxThrottleRetries bounds how often one secret is retried after 429s. The limiter's pause
// makes each retry wait for the vault's Retry-After, so this is a budget of many seconds.
const maxThrottleRetries = 30

// secret is the outcome of fetching one distinct secret.
type secret struct {
	value       string
	version     string
	contentType string
	expires     *time.Time
	notBefore   *time.Time
	has         bool   // value and version hold a usable (last good) value
	status      Status // the latest outcome: a refresh failure keeps the last good value
	reason      string // why, when status is not Resolved; never contains the value
	took        time.Duration
}

// fetcher fetches secrets: one azsecrets client and one limiter per vault, one shared credential.
type fetcher struct {
	cred      azcore.TokenCredential
	transport policy.Transporter
	inflight  int
	log       *slog.Logger

	mu     sync.Mutex
	vaults map[string]*vaultClient
}

type vaultClient struct {
	client *azsecrets.Client
	lim    *limiter
	// warm serialises the vault's first request, so the challenge round trip (the SDK's first
	// request goes out without a token to learn the tenant and resource) happens once, not
	// once per concurrent request.
	warm   sync.Mutex
	warmed atomic.Bool
}

func newFetcher(cred azcore.TokenCredential, transport policy.Transporter, inflight int, log *slog.Logger) *fetcher {
	return &fetcher{
		cred:      &sharedCredential{cred: cred},
		transport: transport,
		inflight:  inflight,
		log:       log,
		vaults:    map[string]*vaultClient{},
	}
}

func (f *fetcher) vault(host string) (*vaultClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if vc, ok := f.vaults[host]; ok {
		return vc, nil
	}
	opts := &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport:        noRedirects(f.transport),
		PerRetryPolicies: guards(vaultGuard(host)),
		// Three retries after about 0.25, 0.75 and 1.75 s (azcore waits (2^n-1) x RetryDelay,
		// jittered): ride out a brief 5xx without spending azcore's default ~6 s on a broken vault.
		Retry: policy.RetryOptions{ShouldRetry: shouldRetry, RetryDelay: 250 * time.Millisecond, MaxRetryDelay: 4 * time.Second},
	}}
	c, err := azsecrets.NewClient("https://"+host, f.cred, opts)
	if err != nil {
		return nil, err
	}
	vc := &vaultClient{client: c, lim: newLimiter(f.inflight)}
	f.vaults[host] = vc
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

// fetchAll fetches each distinct reference once, concurrently, and returns the outcomes.
func (f *fetcher) fetchAll(ctx context.Context, refs []Reference) map[Reference]*secret {
	out := make(map[Reference]*secret, len(refs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := f.fetch(ctx, r)
			mu.Lock()
			out[r] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// fetch gets one secret, retrying 429s through the vault's limiter.
func (f *fetcher) fetch(ctx context.Context, r Reference) *secret {
	start := time.Now()
	vc, err := f.vault(r.Vault)
	if err != nil {
		return &secret{status: StatusOtherReasons, reason: err.Error(), took: time.Since(start)}
	}
	for attempt := 0; ; attempt++ {
		s, retryAfter, throttled := vc.get(ctx, r)
		if !throttled || attempt >= maxThrottleRetries || ctx.Err() != nil {
			s.took = time.Since(start)
			return s
		}
		f.log.Debug("viperkv: vault throttled the request; retrying",
			"vault", r.Vault, "secret", r.Name, "retry_after", retryAfter, "attempt", attempt+1)
	}
}

func (vc *vaultClient) get(ctx context.Context, r Reference) (s *secret, retryAfter time.Duration, throttled bool) {
	if err := vc.lim.acquire(ctx); err != nil {
		return classifyError(r, err), 0, false
	}
	if !vc.warmed.Load() {
		vc.warm.Lock()
		if vc.warmed.Load() {
			vc.warm.Unlock()
		} else {
			defer func() { vc.warmed.Store(true); vc.warm.Unlock() }()
		}
	}
	resp, err := vc.client.GetSecret(ctx, r.Name, r.Version, nil)
	if err != nil {
		var re *azcore.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests {
			retryAfter = retryAfterOf(re.RawResponse)
			vc.lim.release(true, retryAfter)
			s := classifyError(r, err)
			return s, retryAfter, true
		}
		vc.lim.release(false, 0)
		return classifyError(r, err), 0, false
	}
	vc.lim.release(false, 0)
	s = &secret{has: true, status: StatusResolved, contentType: deref(resp.ContentType)}
	if resp.Value != nil {
		s.value = *resp.Value
	}
	if resp.ID != nil {
		s.version = resp.ID.Version()
	}
	if a := resp.Attributes; a != nil {
		s.expires, s.notBefore = a.Expires, a.NotBefore
	}
	s.checkValidity(time.Now())
	return s, 0, false
}

// checkValidity withholds a value outside its exp/nbf window. Key Vault still returns such
// a value (for recovery and testing), but says it should not be used.
func (s *secret) checkValidity(now time.Time) {
	switch {
	case s.expires != nil && !now.Before(*s.expires):
		s.status, s.value, s.has = StatusSecretExpired, "", false
		s.reason = "version " + s.version + " expired at " + s.expires.UTC().Format(time.RFC3339)
	case s.notBefore != nil && now.Before(*s.notBefore):
		s.status, s.value, s.has = StatusSecretNotYetValid, "", false
		s.reason = "version " + s.version + " is not valid before " + s.notBefore.UTC().Format(time.RFC3339)
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
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

// classifyError maps a failed fetch to a status and a one-line reason without secret data.
func classifyError(r Reference, err error) *secret {
	s := &secret{status: StatusOtherReasons}
	var ce *credentialError
	var re *azcore.ResponseError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &ce):
		s.status, s.reason = classifyCredentialError(ce)
	case errors.As(err, &re):
		code, inner := errorCodes(re.RawResponse)
		s.reason = fmt.Sprintf("GET %s: %d %s", r.ID(), re.StatusCode, code)
		if inner != "" {
			s.reason += " (" + inner + ")"
		}
		switch re.StatusCode {
		case http.StatusNotFound:
			s.status = StatusSecretNotFound
			if r.Version != "" {
				s.status = StatusSecretVersionNotFound
			}
		case http.StatusForbidden:
			s.status = StatusAccessToKeyVaultDenied
			if inner == "SecretDisabled" {
				s.status = StatusSecretDisabled
			}
		case http.StatusUnauthorized:
			s.status = StatusUnauthorizedClient
		case http.StatusTooManyRequests:
			s.status = StatusThrottled
		}
	case errors.Is(err, errThrottleWait):
		s.status, s.reason = StatusThrottled, "GET "+r.ID()+": "+errThrottleWait.Error()
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		s.status, s.reason = StatusVaultNotFound, "vault host "+r.Vault+" does not resolve"
	case errors.Is(err, context.DeadlineExceeded):
		s.status, s.reason = StatusFetchTimedOut, "GET "+r.ID()+": timed out"
	case errors.Is(err, context.Canceled):
		s.status, s.reason = StatusFetchTimedOut, "GET "+r.ID()+": canceled"
	default:
		s.reason = "GET " + r.ID() + ": " + firstLine(err.Error())
	}
	return s
}

// errorCodes extracts error.code and error.innererror.code from a Key Vault error body. The
// inner code tells a disabled secret (SecretDisabled) from missing permission (ForbiddenByRbac).
func errorCodes(resp *http.Response) (code, inner string) {
	if resp == nil {
		return "", ""
	}
	body, err := runtime.Payload(resp)
	if err != nil {
		return "", ""
	}
	var e struct {
		Error struct {
			Code       string `json:"code"`
			InnerError struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	return e.Error.Code, e.Error.InnerError.Code
}
