package viperkv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

// keyVault is the secretSource of production: one azsecrets client and one limiter per
// vault, one shared credential for all of them.
type keyVault struct {
	cred      azcore.TokenCredential
	transport policy.Transporter
	inflight  int
	log       *slog.Logger
	tel       *telemetry

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

func newKeyVault(cred azcore.TokenCredential, transport policy.Transporter, inflight int, log *slog.Logger, tel *telemetry) *keyVault {
	return &keyVault{
		tel:       tel,
		cred:      &sharedCredential{cred: cred},
		transport: transport,
		inflight:  inflight,
		log:       log,
		vaults:    map[string]*vaultClient{},
	}
}

func (f *keyVault) vault(host string) (*vaultClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if vc, ok := f.vaults[host]; ok {
		return vc, nil
	}
	opts := &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport:        noRedirects(f.transport),
		PerRetryPolicies: append(guards(vaultGuard(host)), requestMetrics{host: host, requests: f.tel.requests}),
		TracingProvider:  f.tel.sdk,
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

// getSecret gets one secret, retrying 429s through the vault's limiter.
func (f *keyVault) getSecret(ctx context.Context, r Reference) (secretVersion, error) {
	vc, err := f.vault(r.Vault)
	if err != nil {
		return secretVersion{}, &fetchError{status: StatusOtherReasons, reason: err.Error()}
	}
	for attempt := 0; ; attempt++ {
		sv, retryAfter, err := vc.get(ctx, r)
		if retryAfter == 0 || attempt >= maxThrottleRetries || ctx.Err() != nil {
			return sv, err
		}
		f.log.Debug("viperkv: vault throttled the request; retrying",
			"vault", r.Vault, "secret", r.Name, "retry_after", retryAfter, "attempt", attempt+1)
	}
}

// get makes one request. retryAfter is non-zero when the vault throttled it.
func (vc *vaultClient) get(ctx context.Context, r Reference) (sv secretVersion, retryAfter time.Duration, err error) {
	if err := vc.lim.acquire(ctx); err != nil {
		return sv, 0, classifyError(r, err)
	}
	if !vc.warmed.Load() {
		vc.warm.Lock()
		if vc.warmed.Load() {
			vc.warm.Unlock()
		} else {
			defer func() { vc.warmed.Store(true); vc.warm.Unlock() }()
		}
	}
	var raw *http.Response
	resp, err := vc.client.GetSecret(policy.WithCaptureResponse(ctx, &raw), r.Name, r.Version, nil)
	if err != nil {
		var re *azcore.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests {
			retryAfter = retryAfterOf(re.RawResponse)
			vc.lim.release(true, retryAfter)
			return sv, retryAfter, classifyError(r, err)
		}
		vc.lim.release(false, 0)
		return sv, 0, classifyError(r, err)
	}
	vc.lim.release(false, 0)
	sv.contentType = deref(resp.ContentType)
	if resp.Value != nil {
		sv.value = *resp.Value
	}
	if resp.ID != nil {
		sv.version = resp.ID.Version()
	}
	if a := resp.Attributes; a != nil {
		sv.expires, sv.notBefore, sv.updated = a.Expires, a.NotBefore, a.Updated
	}
	for k, v := range resp.Tags {
		if v != nil {
			if sv.tags == nil {
				sv.tags = map[string]string{}
			}
			sv.tags[k] = *v
		}
	}
	if raw != nil {
		if t, err := http.ParseTime(raw.Header.Get("Date")); err == nil {
			sv.served = &t
		}
	}
	return sv, 0, nil
}

// listSecrets lists the vault's secrets page by page through the vault's limiter. A
// throttled page restarts the list (azcore's pager cannot retry a page), after the
// limiter's pause.
func (f *keyVault) listSecrets(ctx context.Context, vault string, maxPages int) (vaultListing, error) {
	vc, err := f.vault(vault)
	if err != nil {
		return vaultListing{}, &fetchError{status: StatusOtherReasons, reason: err.Error()}
	}
	for attempt := 0; ; attempt++ {
		l, retryAfter, err := vc.list(ctx, vault, maxPages)
		if retryAfter == 0 || attempt >= maxThrottleRetries || ctx.Err() != nil {
			return l, err
		}
		f.log.Debug("viperkv: vault throttled a list; retrying", "vault", vault, "retry_after", retryAfter, "attempt", attempt+1)
	}
}

// maxListPages bounds one list of a vault: 25,000 pages hold 625,000 secrets, far more than
// a vault holds, so only a vault whose nextLinks never end (each one new) reaches it.
const maxListPages = 25_000

func (vc *vaultClient) list(ctx context.Context, vault string, maxPages int) (out vaultListing, retryAfter time.Duration, err error) {
	pager := vc.client.NewListSecretPropertiesPager(nil)
	seen := map[string]bool{}
	for pages := 0; pager.More(); pages++ {
		if maxPages > 0 && pages == maxPages {
			return out, 0, nil
		}
		if pages == maxListPages {
			return vaultListing{}, 0, listBroken(vault, fmt.Sprintf("the list did not end after %d pages", maxListPages))
		}
		if err := vc.lim.acquire(ctx); err != nil {
			return vaultListing{}, 0, listError(vault, err)
		}
		page, err := pager.NextPage(ctx)
		if err != nil {
			var re *azcore.ResponseError
			if errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests {
				retryAfter = retryAfterOf(re.RawResponse)
				vc.lim.release(true, retryAfter)
				return vaultListing{}, retryAfter, listError(vault, err)
			}
			vc.lim.release(false, 0)
			return vaultListing{}, 0, listError(vault, err)
		}
		vc.lim.release(false, 0)
		for _, item := range page.Value {
			p, ok := listedSecret(vault, item)
			if !ok {
				out.malformed++
				continue
			}
			out.props = append(out.props, p)
		}
		// The pager follows nextLink as given: check it before it does. A link that was
		// followed already would loop for ever; one that leaves the vault's list would send
		// the token elsewhere or read something that is not this list.
		if page.NextLink != nil && *page.NextLink != "" {
			next := *page.NextLink
			if reason := nextLinkProblem(vault, next); reason != "" {
				return vaultListing{}, 0, listBroken(vault, reason)
			}
			if seen[next] {
				return vaultListing{}, 0, listBroken(vault, "a nextLink repeats: the pages loop")
			}
			seen[next] = true
		}
	}
	out.complete = true
	return out, 0, nil
}

// listedSecret validates one list item: its id must be https://<vault>/secrets/<name> with
// a name of Key Vault's grammar. A list is data from the network: an id that does not
// parse, names another vault or no secret, or a name no secret can have is left out.
func listedSecret(vault string, item *azsecrets.SecretProperties) (secretProps, bool) {
	if item == nil || item.ID == nil {
		return secretProps{}, false
	}
	name, ok := secretIDName(vault, string(*item.ID))
	if !ok {
		return secretProps{}, false
	}
	p := secretProps{name: name, enabled: true}
	if a := item.Attributes; a != nil {
		if a.Enabled != nil {
			p.enabled = *a.Enabled
		}
		p.updated, p.expires, p.notBefore = a.Updated, a.Expires, a.NotBefore
	}
	for k, v := range item.Tags {
		if v != nil {
			if p.tags == nil {
				p.tags = map[string]string{}
			}
			p.tags[k] = *v
		}
	}
	return p, true
}

// secretIDName returns the secret name of a versionless secret id of vault, or false.
func secretIDName(vault, id string) (string, bool) {
	if strings.ContainsAny(id, "%\\") {
		return "", false // Key Vault never escapes a name
	}
	u, err := url.Parse(id)
	if err != nil || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !sameOrigin(u, &url.URL{Scheme: "https", Host: vault}) {
		return "", false
	}
	name, ok := strings.CutPrefix(u.Path, "/secrets/")
	if !ok || secretNameProblem(name) != "" {
		return "", false
	}
	return name, true
}

// nextLinkProblem says why a list page's nextLink must not be followed: it must continue
// the vault's own list, https://<vault>/secrets?..., and nothing else.
func nextLinkProblem(vault, next string) string {
	u, err := url.Parse(next)
	switch {
	case err != nil:
		return "a nextLink does not parse"
	case u.User != nil || !sameOrigin(u, &url.URL{Scheme: "https", Host: vault}):
		return "a nextLink leads away from https://" + vault + " (to " + redacted(u) + ")"
	case strings.TrimSuffix(u.Path, "/") != "/secrets":
		return "a nextLink leads away from the list of secrets (to " + redacted(u) + ")"
	}
	return ""
}

// listBroken is the failure of a list that cannot finish: not transient, since the same
// pages would come back.
func listBroken(vault, reason string) *fetchError {
	return &fetchError{status: StatusOtherReasons, reason: "GET https://" + vault + "/secrets (list): " + reason}
}

// listError is classifyError for a list request.
func listError(vault string, err error) *fetchError {
	r := Reference{Vault: vault}
	fe := classifyError(r, err)
	fe.reason = strings.Replace(fe.reason, r.ID(), r.VaultURL()+"/secrets (list)", 1)
	return fe
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

// classifyError maps a failed request to a status and a one-line reason without secret data,
// and says whether the failure is transient (see fetchError). It decides by the error's
// structure: the credential's failure, the vault's status code, the network error.
func classifyError(r Reference, err error) *fetchError {
	s := &fetchError{status: StatusOtherReasons}
	var ce *credentialError
	var re *azcore.ResponseError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &ce):
		s.status, s.reason, s.transient = classifyCredentialError(ce)
	case errors.As(err, &re):
		code, inner := errorCodes(re.RawResponse)
		s.reason = fmt.Sprintf("GET %s: %d %s", r.ID(), re.StatusCode, code)
		if inner != "" {
			s.reason += " (" + inner + ")"
		}
		s.transient = transientStatus(re.StatusCode)
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
				s.reason = fmt.Sprintf("GET %s: %d: the secret version is disabled", r.ID(), re.StatusCode)
			}
		case http.StatusUnauthorized:
			s.status = StatusUnauthorizedClient
		case http.StatusTooManyRequests:
			s.status = StatusThrottled
		}
	case errors.Is(err, errThrottleWait):
		s.status, s.reason, s.transient = StatusThrottled, "GET "+r.ID()+": "+errThrottleWait.Error(), true
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		s.status, s.reason = StatusVaultNotFound, "vault host "+r.Vault+" does not resolve"
	case errors.Is(err, context.DeadlineExceeded):
		// The fetch's deadline (then nothing retries) or a deadline of its own, such as a token
		// request's: another try may be quicker.
		s.status, s.reason, s.transient = StatusFetchTimedOut, "GET "+r.ID()+": timed out", true
	case errors.Is(err, context.Canceled):
		s.status, s.reason = StatusFetchTimedOut, "GET "+r.ID()+": canceled"
	default:
		s.reason = "GET " + r.ID() + ": " + firstLine(err.Error())
		s.transient = transientError(err)
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
