package kvtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // #nosec G505 -- x5t is defined as the SHA-1 thumbprint; not a security use.
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"
)

// signer is an RS256 signing key with its certificate (for the JWKS x5c) and key id.
type signer struct {
	key     *rsa.PrivateKey
	kid     string
	certDER []byte
}

// processSigner is created on first use and never changes afterwards. Every Server in a
// process shares it (unless WithSigningKey is given) because MSAL Go keeps managed
// identity tokens in one process-wide cache keyed only by identity and resource: a token
// a test got from one Server is handed to the next test's Server and must verify there,
// as it would with one real tenant.
var processSigner = sync.OnceValues(func() (*signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("kvtest: signing key: %w", err)
	}
	return newSigner(key)
})

func newSigner(key *rsa.PrivateKey) (*signer, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "accounts.accesscontrol.windows.net (kvtest)"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("kvtest: signing certificate: %w", err)
	}
	// Entra ID's v1 key id is the certificate's x5t thumbprint.
	sum := sha1.Sum(der) // #nosec G401 -- thumbprint, as Entra ID computes it
	return &signer{key: key, kid: b64(sum[:]), certDER: der}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// sign makes a compact RS256 JWS of claims.
func (sg *signer) sign(claims map[string]any) string {
	header := map[string]any{"typ": "JWT", "alg": "RS256", "x5t": sg.kid, "kid": sg.kid}
	hb, err := json.Marshal(header)
	if err != nil {
		panic(err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("kvtest: claims are not JSON: %v", err))
	}
	input := b64(hb) + "." + b64(cb)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, sg.key, crypto.SHA256, digest[:])
	if err != nil {
		panic(fmt.Sprintf("kvtest: signing: %v", err))
	}
	return input + "." + b64(sig)
}

func (sg *signer) jwk() map[string]any {
	pub := sg.key.PublicKey
	return map[string]any{
		"kty":    "RSA",
		"use":    "sig",
		"kid":    sg.kid,
		"x5t":    sg.kid,
		"n":      b64(pub.N.Bytes()),
		"e":      b64(big.NewInt(int64(pub.E)).Bytes()),
		"x5c":    []string{base64.StdEncoding.EncodeToString(sg.certDER)},
		"issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
	}
}

// Issuer returns the issuer of the tokens the emulator signs:
// https://sts.windows.net/<tenant>/ (Entra ID v1 tokens, which managed identities get).
func (s *Server) Issuer() string { return "https://sts.windows.net/" + s.tenant + "/" }

// AuthorityURL returns the Entra listener's authority for the tenant,
// https://127.0.0.1:PORT/<tenant>. Through [Server.Client] the production authority
// https://login.microsoftonline.com/<tenant> reaches the same listener.
func (s *Server) AuthorityURL() string { return "https://" + s.entra.addr + "/" + s.tenant }

// OIDCDiscoveryURL returns the v1 OpenID Connect discovery document's URL on the Entra
// listener (issuer https://sts.windows.net/<tenant>/).
func (s *Server) OIDCDiscoveryURL() string {
	return s.AuthorityURL() + "/.well-known/openid-configuration"
}

// KeyID returns the kid of the emulator's token signing key.
func (s *Server) KeyID() string { return s.signer.kid }

// IssueToken returns a token for id and resource (for example https://vault.azure.net)
// exactly as the managed identity endpoints issue it. Use it for raw HTTP requests.
func (s *Server) IssueToken(id Identity, resource string) string {
	return s.signer.sign(s.TokenClaims(id, resource))
}

// TokenClaims returns the claims [Server.IssueToken] would sign, so a test can alter one
// (audience, issuer, expiry...) and sign the result with [Server.SignToken].
func (s *Server) TokenClaims(id Identity, resource string) map[string]any {
	now := time.Now()
	return map[string]any{
		"aud":       resource,
		"iss":       s.Issuer(),
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(s.cfg.tokenLifetime).Unix(),
		"aio":       randomHex(16),
		"appid":     id.ClientID,
		"appidacr":  "2",
		"idp":       s.Issuer(),
		"idtyp":     "app",
		"oid":       id.ObjectID,
		"sub":       id.ObjectID,
		"tid":       s.tenant,
		"uti":       randomHex(11),
		"ver":       "1.0",
		"xms_mirid": id.ResourceID,
	}
}

// SignToken signs arbitrary claims with the emulator's RS256 key (header kid and x5t set).
func (s *Server) SignToken(claims map[string]any) string { return s.signer.sign(claims) }

// entraHandler serves OpenID Connect discovery (v1 and v2) and the JWKS.
func (s *Server) entraHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeAADError(w, http.StatusMethodNotAllowed, "invalid_request", "AADSTS900561: The endpoint only accepts GET requests.")
			return
		}
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		if len(parts) < 2 {
			http.NotFound(w, r)
			return
		}
		tenant := parts[0]
		if !s.knownTenant(tenant) {
			writeAADError(w, http.StatusBadRequest, "invalid_tenant",
				fmt.Sprintf("AADSTS90002: Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
			return
		}
		base := "https://" + r.Host
		switch rest := strings.Join(parts[1:], "/"); rest {
		case ".well-known/openid-configuration":
			s.counters.add(OpDiscovery)
			writeJSON(w, http.StatusOK, s.discoveryV1(base, tenant))
		case "v2.0/.well-known/openid-configuration":
			s.counters.add(OpDiscovery)
			writeJSON(w, http.StatusOK, s.discoveryV2(base, tenant))
		case "discovery/keys", "discovery/v2.0/keys":
			s.counters.add(OpJWKS)
			writeJSON(w, http.StatusOK, map[string]any{"keys": []any{s.signer.jwk()}})
		default:
			http.NotFound(w, r)
		}
	})
}

func (s *Server) knownTenant(t string) bool {
	return strings.EqualFold(t, s.tenant) || t == "common" || t == "organizations"
}

func (s *Server) discoveryV1(base, tenant string) map[string]any {
	issuer := s.Issuer()
	if !strings.EqualFold(tenant, s.tenant) {
		issuer = "https://sts.windows.net/{tenantid}/"
	}
	return map[string]any{
		"token_endpoint":                        base + "/" + tenant + "/oauth2/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/common/discovery/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "token id_token", "token"},
		"scopes_supported":                      []string{"openid"},
		"issuer":                                issuer,
		"microsoft_multi_refresh_token":         true,
		"authorization_endpoint":                base + "/" + tenant + "/oauth2/authorize",
		"device_authorization_endpoint":         base + "/" + tenant + "/oauth2/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  base + "/" + tenant + "/oauth2/logout",
		"claims_supported":                      []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "given_name", "family_name", "nickname"},
		"check_session_iframe":                  base + "/" + tenant + "/oauth2/checksession",
		"userinfo_endpoint":                     base + "/" + tenant + "/openid/userinfo",
		"tenant_region_scope":                   "NA",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	}
}

func (s *Server) discoveryV2(base, tenant string) map[string]any {
	issuer := "https://login.microsoftonline.com/" + s.tenant + "/v2.0"
	if !strings.EqualFold(tenant, s.tenant) {
		issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
	}
	return map[string]any{
		"token_endpoint":                        base + "/" + tenant + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/" + tenant + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                issuer,
		"request_uri_parameter_supported":       false,
		"userinfo_endpoint":                     "https://graph.microsoft.com/oidc/userinfo",
		"authorization_endpoint":                base + "/" + tenant + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/" + tenant + "/oauth2/v2.0/devicecode",
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"end_session_endpoint":                  base + "/" + tenant + "/oauth2/v2.0/logout",
		"claims_supported":                      []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"},
		"kerberos_endpoint":                     base + "/" + tenant + "/kerberos",
		"tenant_region_scope":                   "NA",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	}
}

func writeAADError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": desc,
		"error_codes":       []int{},
		"timestamp":         time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		"trace_id":          newUUID(),
		"correlation_id":    newUUID(),
	})
}
