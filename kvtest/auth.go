package kvtest

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// clockSkew is the leeway on exp and nbf, Microsoft.IdentityModel's default.
const clockSkew = 5 * time.Minute

// keyRefreshInterval bounds how often an unknown kid triggers a new discovery fetch.
const keyRefreshInterval = 5 * time.Minute

// maxCachedTokens bounds the cache of tokens whose signature was already verified.
const maxCachedTokens = 10000

// tokenValidator is the vaults' resource-server side: it learns the issuer and signing
// keys from the Entra listener's discovery document and JWKS, over HTTPS, and caches them.
type tokenValidator struct {
	log          *slog.Logger
	discoveryURL string
	client       *http.Client

	mu      sync.RWMutex
	issuer  string
	keys    map[string]*rsa.PublicKey
	fetched time.Time

	cacheMu sync.Mutex
	cache   map[string]*verifiedToken // raw token -> claims, signature already checked
}

// verifiedToken holds the claims of a token whose signature verified.
type verifiedToken struct {
	iss, oid, appid string
	aud             []string
	exp, nbf        int64
	hasExp, hasNbf  bool
}

// authFailure is a rejected token: the message goes into the 401 body.
type authFailure struct{ msg string }

// Error returns the message for the 401 body.
func (e *authFailure) Error() string { return e.msg }

// errKeysUnavailable means the discovery document or JWKS could not be fetched.
var errKeysUnavailable = errors.New("kvtest: signing keys unavailable")

// validate checks a bearer token like a real resource server: algorithm, signature
// (key from the JWKS by kid), lifetime, audience, issuer. It returns the caller's claims.
func (tv *tokenValidator) validate(ctx context.Context, token string, audiences []string, now time.Time) (*verifiedToken, error) {
	vt, err := tv.verifySignature(ctx, token)
	if err != nil {
		return nil, err
	}
	if !vt.hasExp {
		return nil, &authFailure{"Invalid token: the token has no expiration."}
	}
	if now.Add(-clockSkew).Unix() >= vt.exp {
		return nil, &authFailure{fmt.Sprintf("Invalid token: the token expired at %s.", time.Unix(vt.exp, 0).UTC().Format(time.RFC3339))}
	}
	if vt.hasNbf && now.Add(clockSkew).Unix() < vt.nbf {
		return nil, &authFailure{fmt.Sprintf("Invalid token: the token is not valid before %s.", time.Unix(vt.nbf, 0).UTC().Format(time.RFC3339))}
	}
	// Key Vault also accepts its app ID as the audience.
	if !audienceMatches(vt.aud, append(slices.Clip(audiences), keyVaultAppID)) {
		return nil, &authFailure{fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", audiences[0], strings.Join(vt.aud, ", "))}
	}
	tv.mu.RLock()
	issuers := validIssuers(tv.issuer)
	tv.mu.RUnlock()
	if !slices.Contains(issuers, vt.iss) {
		return nil, &authFailure{fmt.Sprintf("AKV10032: Invalid issuer. Expected one of %s, found %s.", strings.Join(issuers, ", "), vt.iss)}
	}
	return vt, nil
}

// validIssuers are the issuers Key Vault accepts for the tenant whose v1 issuer
// (https://sts.windows.net/<tenant>/, from the discovery document) is given: that one and
// the tenant's v2 issuer, https://login.microsoftonline.com/<tenant>/v2.0. The v2 issuer
// is derived rather than fetched from the v2 discovery document, whose keys are the same,
// so the vault still makes one discovery request.
func validIssuers(v1 string) []string {
	tenant, ok := strings.CutPrefix(v1, "https://sts.windows.net/")
	tenant = strings.TrimSuffix(tenant, "/")
	if !ok || tenant == "" || strings.Contains(tenant, "/") {
		return []string{v1}
	}
	return []string{v1, "https://login.microsoftonline.com/" + tenant + "/v2.0"}
}

func audienceMatches(got, want []string) bool {
	for _, g := range got {
		g = strings.TrimSuffix(g, "/")
		for _, w := range want {
			if strings.EqualFold(g, strings.TrimSuffix(w, "/")) {
				return true
			}
		}
	}
	return false
}

func (tv *tokenValidator) verifySignature(ctx context.Context, token string) (*verifiedToken, error) {
	tv.cacheMu.Lock()
	vt := tv.cache[token]
	tv.cacheMu.Unlock()
	if vt != nil {
		return vt, nil
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, &authFailure{"Invalid token: the bearer token is not a compact JWS (header.payload.signature)."}
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		X5t string `json:"x5t"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return nil, &authFailure{"Invalid token: the JWT header is malformed."}
	}
	if header.Alg != "RS256" {
		return nil, &authFailure{fmt.Sprintf("Invalid token: signing algorithm '%s' is not supported.", header.Alg)}
	}
	kid := header.Kid
	if kid == "" {
		kid = header.X5t
	}
	key, err := tv.key(ctx, kid)
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, &authFailure{fmt.Sprintf("AKV10046: Unable to resolve the key used for signature validation. Key id: '%s'.", kid)}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, &authFailure{"Invalid token: the signature is not base64url."}
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
		return nil, &authFailure{"Invalid token: signature validation failed."}
	}
	var claims map[string]json.RawMessage
	if err := decodeSegment(parts[1], &claims); err != nil {
		return nil, &authFailure{"Invalid token: the JWT payload is malformed."}
	}
	vt = &verifiedToken{}
	_ = json.Unmarshal(claims["iss"], &vt.iss)
	_ = json.Unmarshal(claims["oid"], &vt.oid)
	_ = json.Unmarshal(claims["appid"], &vt.appid)
	var aud any
	_ = json.Unmarshal(claims["aud"], &aud)
	switch a := aud.(type) {
	case string:
		vt.aud = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				vt.aud = append(vt.aud, s)
			}
		}
	}
	vt.exp, vt.hasExp = numericDate(claims["exp"])
	vt.nbf, vt.hasNbf = numericDate(claims["nbf"])

	tv.cacheMu.Lock()
	if len(tv.cache) >= maxCachedTokens {
		clear(tv.cache)
	}
	tv.cache[token] = vt
	tv.cacheMu.Unlock()
	return vt, nil
}

func numericDate(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, false
	}
	return int64(f), true
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// key returns the public key for kid, fetching the discovery document and JWKS on first
// use and again (at most every keyRefreshInterval) when kid is unknown.
func (tv *tokenValidator) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	tv.mu.RLock()
	k, loaded, fetched := tv.keys[kid], tv.keys != nil, tv.fetched
	tv.mu.RUnlock()
	if k != nil || (loaded && time.Since(fetched) < keyRefreshInterval) {
		return k, nil
	}
	tv.mu.Lock()
	defer tv.mu.Unlock()
	// Another request may have refreshed while this one waited for the lock.
	if k := tv.keys[kid]; k != nil || (tv.keys != nil && time.Since(tv.fetched) < keyRefreshInterval) {
		return k, nil
	}
	if err := tv.refresh(ctx); err != nil {
		if tv.keys == nil {
			return nil, err
		}
	}
	return tv.keys[kid], nil
}

// refresh fetches the discovery document, then the JWKS it names. Callers hold tv.mu.
func (tv *tokenValidator) refresh(ctx context.Context) error {
	// The fetch serves every waiting request, so one client giving up must not cancel it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := tv.getJSON(ctx, tv.discoveryURL, &doc); err != nil {
		return err
	}
	if doc.Issuer == "" || doc.JWKSURI == "" {
		return fmt.Errorf("%w: discovery document lacks issuer or jwks_uri", errKeysUnavailable)
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := tv.getJSON(ctx, doc.JWKSURI, &set); err != nil {
		return err
	}
	keys := make(map[string]*rsa.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			continue
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	tv.issuer, tv.keys, tv.fetched = doc.Issuer, keys, time.Now()
	tv.log.Info("signing keys fetched via OIDC discovery", "discovery", tv.discoveryURL, "jwks_uri", doc.JWKSURI, "issuer", doc.Issuer, "keys", len(keys))
	return nil
}

func (tv *tokenValidator) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	resp, err := tv.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET %s: %s", errKeysUnavailable, url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	return nil
}
