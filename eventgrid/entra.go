package eventgrid

import (
	"context"
	"crypto"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// eventGridAppID is the application ID of Microsoft.EventGrid, the appid (v1 tokens) or
// azp (v2) of the tokens Event Grid presents to a Microsoft Entra protected webhook.
const eventGridAppID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"

// errAuthUnavailable means a token could not be checked because the tenant's signing keys
// could not be fetched: the webhook's problem, which Event Grid should retry (503).
var errAuthUnavailable = errors.New("the tenant's signing keys are unavailable")

// entraAuth checks Event Grid's bearer tokens against the tenant's OpenID Connect metadata
// and keys. Signatures, expiry and not-before are go-oidc's (go-jose's) work; the claims
// Event Grid's tokens must carry are checked here.
type entraAuth struct {
	tenant    string
	audiences []string
	role      string
	discovery string // the tenant's v2 OpenID Connect metadata document
	v1Issuer  string // v1 tokens' issuer; the v2 issuer comes from the metadata
	client    *http.Client
	now       func() time.Time

	mu       sync.Mutex
	keys     []crypto.PublicKey
	issuers  []string
	fetched  time.Time     // when the last fetch of the keys ended (whether it worked or not)
	inflight chan struct{} // while a fetch runs; closed when it ends
}

// keyFetchTimeout bounds one fetch of the tenant's metadata and keys.
const keyFetchTimeout = 10 * time.Second

// keyRefetchFloor bounds how often an unknown or bad signature makes the handler fetch the
// tenant's keys again: a stream of forged tokens must not turn into a stream of requests
// to Entra ID.
const keyRefetchFloor = 5 * time.Minute

// keyMaxAge is how long fetched keys are trusted before they are fetched again.
const keyMaxAge = 24 * time.Hour

// check authenticates r's bearer token. It reads no body.
func (a *entraAuth) check(ctx context.Context, r *http.Request) error {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(raw) == "" {
		return errors.New("no bearer token")
	}
	raw = strings.TrimSpace(raw)
	tok, err := a.verify(ctx, raw, false)
	if err != nil && !errors.Is(err, errAuthUnavailable) && a.mayRefetch() {
		// Entra ID may have rolled its keys since they were fetched.
		tok, err = a.verify(ctx, raw, true)
	}
	if err != nil {
		return err
	}
	var c struct {
		Tid   string   `json:"tid"`
		AppID string   `json:"appid"`
		Azp   string   `json:"azp"`
		Roles []string `json:"roles"`
	}
	if err := tok.Claims(&c); err != nil {
		return fmt.Errorf("token claims: %w", err)
	}
	a.mu.Lock()
	issuers := a.issuers
	a.mu.Unlock()
	switch {
	case !slices.Contains(issuers, tok.Issuer):
		return fmt.Errorf("token issuer %q is not tenant %s's", tok.Issuer, a.tenant)
	case !strings.EqualFold(c.Tid, a.tenant):
		return fmt.Errorf("token tenant %q is not %s", c.Tid, a.tenant)
	case !slices.ContainsFunc(tok.Audience, func(aud string) bool { return slices.Contains(a.audiences, aud) }):
		return fmt.Errorf("token audience %q is not %s", tok.Audience, strings.Join(a.audiences, " or "))
	case !strings.EqualFold(c.AppID, eventGridAppID) && !strings.EqualFold(c.Azp, eventGridAppID):
		return fmt.Errorf("token is app %q's, not Event Grid's (%s)", c.AppID+c.Azp, eventGridAppID)
	case !slices.Contains(c.Roles, a.role):
		return fmt.Errorf("token lacks the app role %s", a.role)
	}
	return nil
}

// verify checks raw's signature (with the keys fetched, fetched anew when refresh is set
// or none are held), expiry and not-before.
func (a *entraAuth) verify(ctx context.Context, raw string, refresh bool) (*oidc.IDToken, error) {
	keys, err := a.keySet(ctx, refresh)
	if err != nil {
		return nil, err
	}
	v := oidc.NewVerifier("", &oidc.StaticKeySet{PublicKeys: keys}, &oidc.Config{
		SkipClientIDCheck: true, // audiences and issuers are checked by check, against lists
		SkipIssuerCheck:   true,
		Now:               a.now,
	})
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return tok, nil
}

// mayRefetch reports whether a failed verification may fetch the keys again now.
func (a *entraAuth) mayRefetch() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.now().Sub(a.fetched) >= keyRefetchFloor
}

// keySet returns the tenant's signing keys, fetching the metadata and the keys when none
// are held, when they are old, or when refresh is set. One fetch runs at a time and no lock
// is held across it: callers that arrive meanwhile wait for its result, each for as long
// as its own context allows. The fetch runs detached from the request that started it,
// bounded by keyFetchTimeout: a caller that hangs up must not cancel the fetch every later
// delivery depends on (a forged token and a hang-up could otherwise keep the keys stale).
func (a *entraAuth) keySet(ctx context.Context, refresh bool) ([]crypto.PublicKey, error) {
	a.mu.Lock()
	now := a.now()
	if len(a.keys) > 0 && !refresh && now.Sub(a.fetched) < keyMaxAge {
		defer a.mu.Unlock()
		return a.keys, nil
	}
	if wait := a.inflight; wait != nil {
		a.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", errAuthUnavailable, ctx.Err())
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.keys) == 0 {
			return nil, errAuthUnavailable
		}
		return a.keys, nil
	}
	if len(a.keys) == 0 && !a.fetched.IsZero() && now.Sub(a.fetched) < time.Second {
		a.mu.Unlock()
		return nil, errAuthUnavailable // a failed fetch is not retried for every request
	}
	done := make(chan struct{})
	a.inflight = done
	a.mu.Unlock()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyFetchTimeout)
	keys, issuer, err := a.fetchKeys(fctx)
	cancel()

	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight, a.fetched = nil, a.now()
	close(done)
	if err != nil {
		if len(a.keys) > 0 {
			return a.keys, nil // keep what verified before
		}
		return nil, fmt.Errorf("%w: %v", errAuthUnavailable, err)
	}
	a.keys, a.issuers = keys, []string{a.v1Issuer, issuer}
	return keys, nil
}

// fetchKeys reads the tenant's metadata document and its JWKS.
func (a *entraAuth) fetchKeys(ctx context.Context) ([]crypto.PublicKey, string, error) {
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := a.getJSON(ctx, a.discovery, &meta); err != nil {
		return nil, "", err
	}
	if meta.JWKSURI == "" || !strings.HasPrefix(meta.JWKSURI, "https://") {
		return nil, "", fmt.Errorf("%s names no https jwks_uri", a.discovery)
	}
	var set jose.JSONWebKeySet
	if err := a.getJSON(ctx, meta.JWKSURI, &set); err != nil {
		return nil, "", err
	}
	var keys []crypto.PublicKey
	for _, k := range set.Keys {
		if k.Valid() && k.IsPublic() && (k.Use == "" || k.Use == "sig") {
			keys = append(keys, k.Key)
		}
	}
	if len(keys) == 0 {
		return nil, "", fmt.Errorf("%s holds no signing key", meta.JWKSURI)
	}
	return keys, strings.ReplaceAll(meta.Issuer, "{tenantid}", a.tenant), nil
}

func (a *entraAuth) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// headerAuth checks a shared secret in a delivery header (an Event Grid custom delivery
// property marked secret).
type headerAuth struct {
	name  string
	value []byte
}

func (h *headerAuth) check(r *http.Request) error {
	got := r.Header.Values(h.name)
	if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), h.value) != 1 {
		return fmt.Errorf("header %s missing or wrong", h.name)
	}
	return nil
}
