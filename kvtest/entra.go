package kvtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // #nosec G505 -- x5t is defined as the SHA-1 thumbprint; not a security use.
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/emuinfo"
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

// issuer returns the issuer of the tokens the emulator signs:
// https://sts.windows.net/<tenant>/ (Entra ID v1 tokens, which managed identities get).
func (s *Server) issuer() string { return "https://sts.windows.net/" + s.tenant + "/" }

// authorityURL returns the Entra listener's authority for the tenant,
// https://127.0.0.1:PORT/<tenant>. Through [Server.Client] the production authority
// https://login.microsoftonline.com/<tenant> reaches the same listener.
func (s *Server) authorityURL() string { return "https://" + s.entra.addr + "/" + s.tenant }

// oidcDiscoveryURL returns the v1 OpenID Connect discovery document's URL on the Entra
// listener (issuer https://sts.windows.net/<tenant>/).
func (s *Server) oidcDiscoveryURL() string {
	return s.authorityURL() + "/.well-known/openid-configuration"
}

// keyID returns the kid of the emulator's token signing key.
func (s *Server) keyID() string { return s.signer.kid }

// issueToken returns a token for id and resource (for example https://vault.azure.net)
// exactly as the managed identity endpoints issue it. Use it for raw HTTP requests.
func (s *Server) issueToken(id Identity, resource string) string {
	return s.signer.sign(s.tokenClaims(id, resource))
}

// tokenClaims returns the claims issueToken would sign, so a test can alter one
// (audience, issuer, expiry...) and sign the result with signToken.
func (s *Server) tokenClaims(id Identity, resource string) map[string]any {
	now := time.Now()
	return map[string]any{
		"aud":       resource,
		"iss":       s.issuer(),
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(s.cfg.tokenLifetime).Unix(),
		"aio":       randomHex(16),
		"appid":     id.ClientID,
		"appidacr":  "2",
		"idp":       s.issuer(),
		"idtyp":     "app",
		"oid":       id.ObjectID,
		"sub":       id.ObjectID,
		"tid":       s.tenant,
		"uti":       randomHex(11),
		"ver":       "1.0",
		"xms_mirid": id.ResourceID,
	}
}

// signToken signs arbitrary claims with the emulator's RS256 key (header kid and x5t set).
func (s *Server) signToken(claims map[string]any) string { return s.signer.sign(claims) }

// entraHandler serves OpenID Connect discovery (v1 and v2), the JWKS, instance discovery
// and the token endpoints (v2 and v1) for client credentials; requests for
// [emuinfo.EventGridHost] go to Event Grid's validation URLs instead.
func (s *Server) entraHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requestHostname(r) == emuinfo.EventGridHost {
			s.serveManualValidation(w, r)
			return
		}
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		if len(parts) < 2 {
			http.NotFound(w, r)
			return
		}
		tenant := parts[0]
		switch rest := strings.Join(parts[1:], "/"); {
		case rest == "oauth2/v2.0/token" || rest == "oauth2/token":
			s.serveToken(w, r, tenant, rest == "oauth2/token")
			return
		case tenant == "common" && rest == "discovery/instance":
			s.serveInstanceDiscovery(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeAADError(w, http.StatusMethodNotAllowed, "invalid_request", "AADSTS900561: The endpoint only accepts GET requests.")
			return
		}
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

// requestHostname is the request's Host without its port or a trailing dot, lowercase.
func requestHostname(r *http.Request) string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

func (s *Server) knownTenant(t string) bool {
	return strings.EqualFold(t, s.tenant) || t == "common" || t == "organizations"
}

func (s *Server) discoveryV1(base, tenant string) map[string]any {
	issuer := s.issuer()
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

// writeAADError writes Entra ID's error body: error, error_description (with the trace,
// correlation and timestamp lines Entra appends), error_codes (the AADSTS number of the
// description), timestamp, trace_id, correlation_id and error_uri.
func writeAADError(w http.ResponseWriter, status int, code, desc string) {
	trace, corr, now := newUUID(), newUUID(), time.Now()
	body := map[string]any{
		"error":             code,
		"error_description": desc + aadTrace(trace, corr, now),
		"error_codes":       []int{},
		"timestamp":         now.UTC().Format("2006-01-02 15:04:05Z"),
		"trace_id":          trace,
		"correlation_id":    corr,
	}
	if n := aadCode(desc); n != 0 {
		body["error_codes"] = []int{n}
		body["error_uri"] = "https://login.microsoftonline.com/error?code=" + strconv.Itoa(n)
	}
	writeJSON(w, status, body)
}

// aadTrace is what Entra ID appends to an error description.
func aadTrace(trace, corr string, now time.Time) string {
	return "\r\nTrace ID: " + trace + "\r\nCorrelation ID: " + corr + "\r\nTimestamp: " + now.UTC().Format("2006-01-02 15:04:05Z")
}

// aadCode is the number of the description's leading AADSTS code, or 0.
func aadCode(desc string) int {
	rest, ok := strings.CutPrefix(desc, "AADSTS")
	if !ok {
		return 0
	}
	digits, _, _ := strings.Cut(rest, ":")
	n, err := strconv.Atoi(digits)
	if err != nil {
		return 0
	}
	return n
}

// The Entra token endpoint for the client credentials grant (azidentity's
// ClientSecretCredential, ClientAssertionCredential and WorkloadIdentityCredential).

const (
	jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// tokenExchangeAudience is the audience of federated tokens Entra ID accepts.
	tokenExchangeAudience = "api://AzureADTokenExchange"
	// appTokenLifetime is the lifetime of app tokens from the token endpoint (expires_in
	// 3599) unless WithTokenLifetime sets another.
	appTokenLifetime = 3599 * time.Second
	// federatedTokenLifetime is the lifetime of [Server.FederatedToken]'s tokens, a
	// projected service account token's default.
	federatedTokenLifetime = time.Hour
)

// oidcScopes are the scopes MSAL adds to every request, which the client credentials
// grant ignores.
var oidcScopes = map[string]bool{"openid": true, "profile": true, "offline_access": true, "email": true}

// aadFailure is an Entra ID error answer.
type aadFailure struct {
	status     int
	code, desc string
}

func aadFail(status int, code, desc string) *aadFailure {
	return &aadFailure{status: status, code: code, desc: desc}
}

// federatedIssuer is the issuer of the emulator's service account tokens, standing for an
// AKS cluster's OIDC issuer. The .invalid name never resolves: Entra ID (the emulator)
// verifies these tokens with its own key.
func (s *Server) federatedIssuer() string { return "https://oidc.kvtest.invalid/" + s.tenant + "/" }

func federatedSubject(id Identity) string { return "system:serviceaccount:default:" + id.Name }

// FederatedToken returns a Kubernetes service account token for id, valid for an hour:
// what AKS workload identity projects into a pod and names in AZURE_FEDERATED_TOKEN_FILE.
// Write it to a file for azidentity.NewWorkloadIdentityCredential (TokenFilePath, or the
// AZURE_FEDERATED_TOKEN_FILE variable), or return it from a ClientAssertionCredential's
// callback. The Entra token endpoint accepts it for an identity added
// [WithFederated]; for others it answers AADSTS70021 (no matching federated identity
// record), as Entra ID does.
func (s *Server) FederatedToken(id Identity) string {
	return s.signer.sign(s.federatedTokenClaims(id))
}

// federatedTokenClaims returns the claims [Server.FederatedToken] signs, so a test can
// alter one (exp, sub, aud, iss...) and sign the result with signToken: iss is
// the emulator's OIDC issuer (https://oidc.kvtest.invalid/<tenant>/), sub
// system:serviceaccount:default:<identity name>, aud ["api://AzureADTokenExchange"].
func (s *Server) federatedTokenClaims(id Identity) map[string]any {
	now := time.Now()
	return map[string]any{
		"aud": []string{tokenExchangeAudience},
		"exp": now.Add(federatedTokenLifetime).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"iss": s.federatedIssuer(),
		"jti": newUUID(),
		"kubernetes.io": map[string]any{
			"namespace": "default",
			"serviceaccount": map[string]any{
				"name": id.Name,
				"uid":  nameUUID(s.tenant, "serviceaccount", strings.ToLower(id.Name)),
			},
		},
		"sub": federatedSubject(id),
	}
}

// serveToken is POST /<tenant>/oauth2/v2.0/token (v1: /oauth2/token) for
// grant_type=client_credentials with a client secret or a federated client assertion.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tenant string, v1 bool) {
	if r.Method != http.MethodPost {
		writeAADError(w, http.StatusMethodNotAllowed, "invalid_request",
			fmt.Sprintf("AADSTS900561: The endpoint only accepts POST, OPTIONS requests. Received a %s request.", r.Method))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	resp, f := s.clientCredentials(r, tenant, v1)
	if f != nil {
		writeAADError(w, f.status, f.code, f.desc)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func missingParam(name string) *aadFailure {
	return aadFail(http.StatusBadRequest, "invalid_request",
		fmt.Sprintf("AADSTS900144: The request body must contain the following parameter: '%s'.", name))
}

// clientCredentials checks a client credentials request and returns the response body.
func (s *Server) clientCredentials(r *http.Request, tenant string, v1 bool) (any, *aadFailure) {
	switch {
	case strings.EqualFold(tenant, s.tenant):
	case tenant == "common" || tenant == "organizations":
		return nil, aadFail(http.StatusBadRequest, "invalid_request",
			"AADSTS50059: No tenant-identifying information found in either the request or implied by any provided credentials.")
	default:
		return nil, aadFail(http.StatusBadRequest, "invalid_tenant",
			fmt.Sprintf("AADSTS90002: Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
	}
	if err := r.ParseForm(); err != nil {
		return nil, missingParam("grant_type")
	}
	form := r.PostForm
	grant := form.Get("grant_type")
	switch grant {
	case "":
		return nil, missingParam("grant_type")
	case "client_credentials":
	default:
		return nil, aadFail(http.StatusBadRequest, "unsupported_grant_type",
			fmt.Sprintf("AADSTS70003: The app requested an unsupported grant type '%s'.", grant))
	}
	clientID, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok { // client_secret_basic: form-encoded, RFC 6749 section 2.3.1
		if uu, err := url.QueryUnescape(u); err == nil {
			u = uu
		}
		if pp, err := url.QueryUnescape(p); err == nil {
			p = pp
		}
		clientID, secret = u, p
	}
	if clientID == "" {
		return nil, missingParam("client_id")
	}
	id, ok := s.identityByClientID(clientID)
	if !ok {
		return nil, aadFail(http.StatusBadRequest, "unauthorized_client", fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory '%s'. "+
			"This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. "+
			"You may have sent your authentication request to the wrong tenant.", clientID, s.tenant))
	}

	var acr, how string // appidacr: 1 for a secret, 2 for an assertion
	switch assertion := form.Get("client_assertion"); {
	case assertion != "":
		switch typ := form.Get("client_assertion_type"); typ {
		case jwtBearer:
		case "":
			return nil, missingParam("client_assertion_type")
		default:
			return nil, aadFail(http.StatusBadRequest, "invalid_request",
				fmt.Sprintf("AADSTS70002: Error validating credentials. The client_assertion_type '%s' is not supported.", typ))
		}
		if f := s.checkAssertion(id, assertion, time.Now()); f != nil {
			return nil, f
		}
		acr, how = "2", "federated token"
	case secret != "":
		if !slices.ContainsFunc(s.credentials(id.Name).secrets, func(k string) bool {
			return subtle.ConstantTimeCompare([]byte(k), []byte(secret)) == 1
		}) {
			return nil, aadFail(http.StatusUnauthorized, "invalid_client", fmt.Sprintf("AADSTS7000215: Invalid client secret provided. "+
				"Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", id.ClientID))
		}
		acr, how = "1", "client secret"
	default:
		return nil, aadFail(http.StatusUnauthorized, "invalid_client",
			"AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
	}

	var resource string
	if v1 {
		if resource = form.Get("resource"); resource == "" {
			return nil, missingParam("resource")
		}
	} else {
		var f *aadFailure
		if resource, f = parseScope(form.Get("scope")); f != nil {
			return nil, f
		}
	}
	if !knownResource(resource) {
		return nil, aadFail(http.StatusBadRequest, "invalid_resource", s.resourceNotFound(resource))
	}

	claims := s.tokenClaims(id, resource)
	claims["appidacr"] = acr
	if acr == "1" {
		delete(claims, "xms_mirid") // an app registration's token, not a managed identity's
	}
	life := appTokenLifetime
	if s.cfg.tokenLifetime != DefaultTokenLifetime {
		life = s.cfg.tokenLifetime
	}
	iat := claims["iat"].(int64)
	exp := time.Unix(iat, 0).Add(life).Unix()
	claims["exp"] = exp
	token := s.signer.sign(claims)
	s.counters.add(OpToken)
	s.cfg.logger.Info("token issued", "identity", id.Name, "client_id", id.ClientID, "resource", resource,
		"endpoint", "Entra ID token endpoint", "credential", how)
	secs := exp - iat
	if v1 {
		return map[string]string{
			"token_type":     "Bearer",
			"expires_in":     strconv.FormatInt(secs, 10),
			"ext_expires_in": strconv.FormatInt(secs, 10),
			"expires_on":     strconv.FormatInt(exp, 10),
			"not_before":     strconv.FormatInt(iat, 10),
			"resource":       resource,
			"access_token":   token,
		}, nil
	}
	return map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": token}, nil
}

// parseScope returns the resource of a client credentials scope: one "<resource>/.default"
// besides the OpenID scopes MSAL adds.
func parseScope(scope string) (string, *aadFailure) {
	var scopes []string
	for _, sc := range strings.Fields(scope) {
		if !oidcScopes[sc] {
			scopes = append(scopes, sc)
		}
	}
	switch len(scopes) {
	case 0:
		return "", missingParam("scope")
	case 1:
	default:
		return "", aadFail(http.StatusBadRequest, "invalid_scope",
			fmt.Sprintf("AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope '%s' is not valid.", strings.Join(scopes, " ")))
	}
	resource, ok := strings.CutSuffix(scopes[0], "/.default")
	if !ok || resource == "" {
		return "", aadFail(http.StatusBadRequest, "invalid_scope", fmt.Sprintf("AADSTS1002012: The provided value for scope %s is not valid. "+
			"Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scopes[0]))
	}
	return resource, nil
}

// checkAssertion checks a federated client assertion as Entra ID does: a JWT matching a
// federated identity credential of the app (issuer, subject, audience), signed by the
// issuer's key, within its lifetime.
func (s *Server) checkAssertion(id Identity, assertion string, now time.Time) *aadFailure {
	malformed := aadFail(http.StatusBadRequest, "invalid_request", "AADSTS50027: JWT token is invalid or malformed.")
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return malformed
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var c struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
	}
	if decodeSegment(parts[0], &header) != nil || decodeSegment(parts[1], &c) != nil {
		return malformed
	}
	var aud []string
	if json.Unmarshal(c.Aud, &aud) != nil {
		var one string
		_ = json.Unmarshal(c.Aud, &one)
		aud = []string{one}
	}
	if !s.credentials(id.Name).federated || c.Iss != s.federatedIssuer() || c.Sub != federatedSubject(id) || !slices.Contains(aud, tokenExchangeAudience) {
		return aadFail(http.StatusBadRequest, "invalid_request", fmt.Sprintf("AADSTS70021: No matching federated identity record found for presented assertion. "+
			"Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
			c.Iss, c.Sub, strings.Join(aud, ",")))
	}
	if header.Alg != "RS256" || header.Kid != s.signer.kid {
		return aadFail(http.StatusUnauthorized, "invalid_client", fmt.Sprintf("AADSTS50013: Assertion failed signature validation. "+
			"[Reason - The key was not found., Thumbprint of key used by client: '%s']", header.Kid))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || rsa.VerifyPKCS1v15(&s.signer.key.PublicKey, crypto.SHA256, digest[:], sig) != nil {
		return aadFail(http.StatusUnauthorized, "invalid_client",
			"AADSTS50013: Assertion failed signature validation. [Reason - Key was found, but use of the key to verify the signature failed.]")
	}
	exp, hasExp := numericDate(c.Exp)
	nbf, _ := numericDate(c.Nbf)
	if !hasExp || now.Add(-clockSkew).Unix() >= exp || now.Add(clockSkew).Unix() < nbf {
		const layout = "2006-01-02T15:04:05.0000000Z"
		return aadFail(http.StatusUnauthorized, "invalid_client", fmt.Sprintf("AADSTS700024: Client assertion is not within its valid time range. "+
			"Current time: %s, assertion valid from %s, expiry time of assertion %s. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
			now.UTC().Format(layout), time.Unix(nbf, 0).UTC().Format(layout), time.Unix(exp, 0).UTC().Format(layout)))
	}
	return nil
}

// entraInstances are the Entra ID hosts instance discovery knows, by cloud.
var entraInstances = []struct {
	preferredNetwork, preferredCache string
	aliases                          []string
}{
	{"login.microsoftonline.com", "login.windows.net", []string{"login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"}},
	{"login.partner.microsoftonline.cn", "login.partner.microsoftonline.cn", []string{"login.partner.microsoftonline.cn", "login.chinacloudapi.cn"}},
	{"login.microsoftonline.de", "login.microsoftonline.de", []string{"login.microsoftonline.de"}},
	{"login.microsoftonline.us", "login.microsoftonline.us", []string{"login.microsoftonline.us", "login.usgovcloudapi.net"}},
	{"login-us.microsoftonline.com", "login-us.microsoftonline.com", []string{"login-us.microsoftonline.com"}},
}

// serveInstanceDiscovery is GET /common/discovery/instance, which MSAL asks about an
// authority host it does not know (AZURE_AUTHORITY_HOST naming the emulator's own
// listener, https://127.0.0.1:PORT/): it answers for the Entra ID hosts and for the
// emulator's listener, and 400 invalid_instance for any other host.
func (s *Server) serveInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeAADError(w, http.StatusMethodNotAllowed, "invalid_request", "AADSTS900561: The endpoint only accepts GET requests.")
		return
	}
	invalid := func() {
		writeAADError(w, http.StatusBadRequest, "invalid_instance", "AADSTS50049: Unknown or invalid instance.")
	}
	u, err := url.Parse(r.URL.Query().Get("authorization_endpoint"))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		invalid()
		return
	}
	host := strings.ToLower(u.Host)
	metadata := make([]map[string]any, 0, len(entraInstances)+1)
	known := false
	for _, in := range entraInstances {
		known = known || slices.Contains(in.aliases, host)
		metadata = append(metadata, map[string]any{"preferred_network": in.preferredNetwork, "preferred_cache": in.preferredCache, "aliases": in.aliases})
	}
	_, port, _ := strings.Cut(s.entra.addr, ":")
	if own := []string{s.entra.addr, "localhost:" + port}; slices.Contains(own, host) {
		known = true
		metadata = append(metadata, map[string]any{"preferred_network": host, "preferred_cache": host, "aliases": own})
	}
	if !known {
		invalid()
		return
	}
	tenant, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if tenant == "" {
		tenant = "common"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": "https://" + host + "/" + tenant + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata":                  metadata,
	})
}
