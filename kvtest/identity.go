package kvtest

import (
	"crypto/sha1" // #nosec G505 -- name-based UUIDs (RFC 9562 version 5) are defined with SHA-1.
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/cloud"
)

// Identity is a managed identity: the system-assigned one of the emulated app, or a
// user-assigned one. The JSON names are the info file's.
type Identity struct {
	// Name is "system" for the system-assigned identity, else the user-assigned name.
	Name string `json:"name"`
	// ClientID is the identity's application (client) ID, the token's appid claim.
	ClientID string `json:"client_id"`
	// ObjectID is the service principal's object ID, the token's oid claim; RBAC keys on it.
	ObjectID string `json:"object_id"`
	// ResourceID is the Azure resource ID, the token's xms_mirid claim.
	ResourceID string `json:"resource_id"`
}

// SystemIdentityName is the Name of the system-assigned identity, and the identity name
// seeds use to grant it roles.
const SystemIdentityName = "system"

// IdentityOption configures [Server.AddUserIdentity].
type IdentityOption func(*identityConfig)

type identityConfig struct {
	clientID  string
	secrets   []string
	federated bool
}

// WithClientID fixes a user-assigned identity's client ID instead of deriving it.
func WithClientID(clientID string) IdentityOption {
	return func(c *identityConfig) { c.clientID = strings.ToLower(clientID) }
}

// WithClientSecret gives the identity a client secret, as an app registration has one:
// the Entra token endpoint (POST /<tenant>/oauth2/v2.0/token, grant_type
// client_credentials) then issues tokens for the identity's client ID and this secret, so
// azidentity.NewClientSecretCredential works against the emulator. A wrong secret gets
// 401 invalid_client AADSTS7000215. Options are additive: give it several times, or to
// an identity that exists already, for several valid secrets.
func WithClientSecret(secret string) IdentityOption {
	return func(c *identityConfig) { c.secrets = append(c.secrets, secret) }
}

// WithFederated gives the identity a federated identity credential trusting the tokens of
// [Server.FederatedToken], as an AKS workload identity's managed identity trusts its
// cluster's service account (issuer: the emulator's OIDC issuer, subject
// system:serviceaccount:default:<name>, audience api://AzureADTokenExchange). The Entra
// token endpoint then exchanges such a token (client_assertion) for an access token, so
// azidentity.NewWorkloadIdentityCredential and NewClientAssertionCredential work against
// the emulator.
func WithFederated() IdentityOption {
	return func(c *identityConfig) { c.federated = true }
}

// appCredentials are the credentials an identity can present at the Entra token endpoint.
type appCredentials struct {
	secrets   []string
	federated bool
}

// appCreds holds the client credentials of a Server's identities.
type appCreds struct {
	mu    sync.Mutex
	creds map[string]*appCredentials // lowercase identity name -> credentials

	system systemCredential // what [Server.Credential] returns, made on first use (testing.go)
}

// addCredentials records the client credentials cfg gives the identity name.
func (s *Server) addCredentials(name string, cfg identityConfig) {
	if len(cfg.secrets) == 0 && !cfg.federated {
		return
	}
	st := &s.appCreds
	st.mu.Lock()
	defer st.mu.Unlock()
	key := strings.ToLower(name)
	if st.creds == nil {
		st.creds = map[string]*appCredentials{}
	}
	c := st.creds[key]
	if c == nil {
		c = &appCredentials{}
		st.creds[key] = c
	}
	c.secrets = append(c.secrets, cfg.secrets...)
	c.federated = c.federated || cfg.federated
}

// credentials returns a copy of the identity's client credentials.
func (s *Server) credentials(name string) appCredentials {
	st := &s.appCreds
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.creds[strings.ToLower(name)]
	if c == nil {
		return appCredentials{}
	}
	return appCredentials{secrets: slices.Clone(c.secrets), federated: c.federated}
}

// IDs are derived from the tenant and the name, not random: MSAL's token cache is
// process-wide, so the same identity must have the same oid in every Server of the
// process (see processSigner), as a real identity does across requests.
func (s *Server) deriveIdentity(name string, user bool) Identity {
	sub := nameUUID(s.tenant, "subscription")
	if !user {
		return Identity{
			Name:       SystemIdentityName,
			ClientID:   nameUUID(s.tenant, "system", "client"),
			ObjectID:   nameUUID(s.tenant, "system", "object"),
			ResourceID: "/subscriptions/" + sub + "/resourcegroups/kvtest-rg/providers/Microsoft.Web/sites/kvtest-app",
		}
	}
	key := strings.ToLower(name)
	return Identity{
		Name:       name,
		ClientID:   nameUUID(s.tenant, "user", key, "client"),
		ObjectID:   nameUUID(s.tenant, "user", key, "object"),
		ResourceID: "/subscriptions/" + sub + "/resourcegroups/kvtest-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + name,
	}
}

// nameUUID is an RFC 9562 version 5 UUID of the joined parts.
func nameUUID(parts ...string) string {
	h := sha1.New() // #nosec G401 -- UUIDv5
	h.Write([]byte("kvtest\x00" + strings.Join(parts, "\x00")))
	b := h.Sum(nil)[:16]
	b[6] = (b[6] & 0x0f) | 0x50
	b[8] = (b[8] & 0x3f) | 0x80
	return formatUUID(b)
}

func formatUUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// identityName names the identity whose object ID is oid, for logs.
func (s *Server) identityName(oid string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if strings.EqualFold(s.system.ObjectID, oid) {
		return s.system.Name
	}
	for _, id := range s.users {
		if strings.EqualFold(id.ObjectID, oid) {
			return id.Name
		}
	}
	return oid
}

// SystemIdentity returns the app's system-assigned identity. It exists unless disabled
// with [WithoutSystemIdentity] or [Server.SetSystemIdentityEnabled].
func (s *Server) SystemIdentity() Identity { return s.system }

// SetSystemIdentityEnabled turns the system-assigned identity on or off. While it is off,
// token requests for it fail with 400 as on an app without a managed identity. Tokens
// already issued stay valid until they expire, as in Azure.
func (s *Server) SetSystemIdentityEnabled(enabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.systemEnabled = enabled
}

// AddUserIdentity assigns a user-assigned identity to the emulated app and returns it.
// Its IDs are derived from the tenant and name, so the same name gives the same identity
// in every Server of the process; adding an existing name returns the existing identity.
// Options given for an existing identity add to its credentials ([WithClientSecret],
// [WithFederated]). It panics if WithClientID names a client ID another identity has, or
// on an empty client secret.
func (s *Server) AddUserIdentity(name string, opts ...IdentityOption) Identity {
	id, err := s.addUserIdentity(name, opts...)
	if err != nil {
		panic(err)
	}
	return id
}

func (s *Server) addUserIdentity(name string, opts ...IdentityOption) (Identity, error) {
	var cfg identityConfig
	for _, o := range opts {
		o(&cfg)
	}
	if name == "" || strings.EqualFold(name, SystemIdentityName) {
		return Identity{}, fmt.Errorf("kvtest: invalid user-assigned identity name %q", name)
	}
	if slices.Contains(cfg.secrets, "") {
		return Identity{}, fmt.Errorf("kvtest: empty client secret for identity %q", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(name)
	if id, ok := s.users[key]; ok {
		if cfg.clientID != "" && cfg.clientID != id.ClientID {
			return Identity{}, fmt.Errorf("kvtest: identity %q already exists with client ID %s", name, id.ClientID)
		}
		s.addCredentials(name, cfg)
		return id, nil
	}
	id := s.deriveIdentity(name, true)
	if cfg.clientID != "" {
		id.ClientID = cfg.clientID
	}
	for _, other := range s.users {
		if other.ClientID == id.ClientID {
			return Identity{}, fmt.Errorf("kvtest: client ID %s is already used by identity %q", id.ClientID, other.Name)
		}
	}
	s.users[key] = id
	s.addCredentials(name, cfg)
	return id, nil
}

// UserIdentity returns the user-assigned identity of that name, if assigned.
func (s *Server) UserIdentity(name string) (Identity, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.users[strings.ToLower(name)]
	return id, ok
}

// UserIdentities returns the user-assigned identities.
func (s *Server) UserIdentities() []Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Identity, 0, len(s.users))
	for _, id := range s.users {
		out = append(out, id)
	}
	return out
}

// RemoveUserIdentity unassigns a user-assigned identity: token requests for it then fail
// as for an identity that was never assigned, at the Entra token endpoint too (its client
// secrets and federated credential go with it). Its role assignments stay.
func (s *Server) RemoveUserIdentity(name string) {
	s.mu.Lock()
	delete(s.users, strings.ToLower(name))
	s.mu.Unlock()
	st := &s.appCreds
	st.mu.Lock()
	delete(st.creds, strings.ToLower(name))
	st.mu.Unlock()
}

// identityByClientID returns the identity (system-assigned, while enabled, or
// user-assigned) whose client ID is clientID.
func (s *Server) identityByClientID(clientID string) (Identity, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.systemEnabled && strings.EqualFold(s.system.ClientID, clientID) {
		return s.system, true
	}
	for _, u := range s.users {
		if strings.EqualFold(u.ClientID, clientID) {
			return u, true
		}
	}
	return Identity{}, false
}

// keyVaultAppID is Key Vault's application ID in Entra ID, the same in every cloud. A
// token may name Key Vault by it (aud) instead of by its URI.
const keyVaultAppID = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"

// knownResource reports whether Entra ID knows the resource, as the emulator's tenant
// does: Key Vault of one of the clouds, by URI (with or without a trailing slash) or by
// its app ID. Scopes (".../.default") are not resources.
func knownResource(resource string) bool {
	if strings.EqualFold(resource, keyVaultAppID) {
		return true
	}
	r := strings.TrimSuffix(resource, "/")
	for _, c := range cloud.All() {
		if strings.EqualFold(r, c.Resource()) {
			return true
		}
	}
	return false
}

// resourceNotFound is Entra ID's AADSTS500011 description for an unknown resource.
func (s *Server) resourceNotFound(resource string) string {
	return fmt.Sprintf("AADSTS500011: The resource principal named %s was not found in the tenant named %s. "+
		"This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. "+
		"You might have sent your authentication request to the wrong tenant.", resource, s.tenant)
}

// InjectIdentityFault makes both managed identity endpoints fail as f describes.
// Note that azidentity retries: App Service style 3 times (0.8 s, 2.4 s, 5.6 s), IMDS style
// 6 times for 404, 410, 429 and 5xx (2 s growing to 25 s), so prefer f.Times or 4xx.
func (s *Server) InjectIdentityFault(f Fault) { s.identityFaults.set(OpToken, f) }

// ClearIdentityFaults removes the identity endpoint fault.
func (s *Server) ClearIdentityFaults() { s.identityFaults.clear() }

// lookupIdentity selects the identity named by the query: one of client_id, object_id
// (or principal_id), or a resource ID parameter; none means the system identity.
func (s *Server) lookupIdentity(q map[string][]string, resParams ...string) (id Identity, selector string, ok bool) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	type sel struct{ param, val string }
	var sels []sel
	for _, p := range append([]string{"client_id", "object_id", "principal_id"}, resParams...) {
		if v := get(p); v != "" {
			sels = append(sels, sel{p, v})
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch len(sels) {
	case 0:
		return s.system, "", s.systemEnabled
	case 1:
	default:
		return Identity{}, "multiple", false
	}
	for _, u := range s.users {
		var match bool
		switch sels[0].param {
		case "client_id":
			match = strings.EqualFold(u.ClientID, sels[0].val)
		case "object_id", "principal_id":
			match = strings.EqualFold(u.ObjectID, sels[0].val)
		default:
			match = strings.EqualFold(u.ResourceID, sels[0].val)
		}
		if match {
			return u, sels[0].param, true
		}
	}
	return Identity{}, sels[0].param, false
}

// tokenResponse is the JSON both managed identity endpoints return on success.
func (s *Server) tokenResponse(id Identity, resource string, imds bool) map[string]string {
	claims := s.tokenClaims(id, resource)
	endpoint := "App Service identity endpoint"
	if imds {
		endpoint = "IMDS"
	}
	s.cfg.logger.Info("token issued", "identity", id.Name, "client_id", id.ClientID, "resource", resource, "endpoint", endpoint)
	token := s.signer.sign(claims)
	exp := claims["exp"].(int64)
	nbf := claims["nbf"].(int64)
	out := map[string]string{
		"access_token": token,
		"expires_on":   strconv.FormatInt(exp, 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    id.ClientID,
	}
	if imds {
		// IMDS also reports relative lifetimes, as strings.
		life := strconv.FormatInt(exp-nbf, 10)
		out["expires_in"] = life
		out["ext_expires_in"] = life
		out["not_before"] = strconv.FormatInt(nbf, 10)
	}
	return out
}

// appServiceHandler is the App Service style endpoint (IDENTITY_ENDPOINT, api-version
// 2019-08-01, X-IDENTITY-HEADER, mi_res_id).
func (s *Server) appServiceHandler() http.Handler {
	fail := func(w http.ResponseWriter, status int, _, msg string) {
		writeJSON(w, status, map[string]any{"statusCode": status, "message": msg, "correlationId": newUUID()})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f, ok := s.identityFaults.take(OpToken); ok {
			s.serveFault(w, r, f, fail)
			return
		}
		if r.URL.Path != appServicePath {
			fail(w, http.StatusNotFound, "", "Not found.")
			return
		}
		if r.Method != http.MethodGet {
			fail(w, http.StatusMethodNotAllowed, "", "Only GET is supported.")
			return
		}
		h, present := r.Header["X-Identity-Header"]
		switch {
		case !present || len(h) == 0 || h[0] == "":
			fail(w, http.StatusBadRequest, "", "The X-IDENTITY-HEADER header is required.")
			return
		case h[0] != s.identityHeader:
			fail(w, http.StatusUnauthorized, "", "The X-IDENTITY-HEADER header is invalid.")
			return
		}
		q := r.URL.Query()
		if q.Get("api-version") == "" {
			fail(w, http.StatusBadRequest, "", "The api-version query parameter is required.")
			return
		}
		resource := q.Get("resource")
		if resource == "" {
			fail(w, http.StatusBadRequest, "", "The resource query parameter is required.")
			return
		}
		id, sel, ok := s.lookupIdentity(q, "mi_res_id")
		if !ok {
			msg := "Unable to load the proper Managed Identity."
			if sel == "" {
				msg = "No managed identity is enabled for this app (system-assigned identity is off)."
			}
			fail(w, http.StatusBadRequest, "", msg)
			return
		}
		if !knownResource(resource) {
			// Entra ID's answer, relayed by the endpoint (not retried by the SDKs).
			fail(w, http.StatusBadRequest, "invalid_resource", s.resourceNotFound(resource)+aadTrace(newUUID(), newUUID(), time.Now()))
			return
		}
		s.counters.add(OpToken)
		writeJSON(w, http.StatusOK, s.tokenResponse(id, resource, false))
	})
}

// imdsHandler is the IMDS style endpoint (Metadata: true, api-version 2018-02-01,
// msi_res_id), reached at 169.254.169.254:80 through the emulator's transport.
func (s *Server) imdsHandler() http.Handler {
	fail := func(w http.ResponseWriter, status int, code, msg string) {
		if code == "" {
			code = "invalid_request"
		}
		writeJSON(w, status, map[string]string{"error": code, "error_description": msg})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f, ok := s.identityFaults.take(OpToken); ok {
			s.serveFault(w, r, f, fail)
			return
		}
		// msal-node asks for the path with a trailing slash, which IMDS serves too.
		if r.URL.Path != imdsPath && r.URL.Path != imdsPath+"/" {
			fail(w, http.StatusNotFound, "not_found", "The requested path was not found.")
			return
		}
		if r.Header.Get("Metadata") != "true" {
			fail(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
			return
		}
		if r.Header.Get("X-Forwarded-For") != "" {
			fail(w, http.StatusBadRequest, "invalid_request", "Request contains X-Forwarded-For header")
			return
		}
		if r.Method != http.MethodGet {
			fail(w, http.StatusMethodNotAllowed, "invalid_request", "Only GET is supported")
			return
		}
		q := r.URL.Query()
		if q.Get("api-version") == "" {
			fail(w, http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
			return
		}
		resource := q.Get("resource")
		if resource == "" {
			fail(w, http.StatusBadRequest, "invalid_request", "Required query variable 'resource' is missing")
			return
		}
		id, _, ok := s.lookupIdentity(q, "msi_res_id", "mi_res_id")
		if !ok {
			fail(w, http.StatusBadRequest, "invalid_request", "Identity not found")
			return
		}
		if !knownResource(resource) {
			// IMDS relays Entra ID's error body.
			writeAADError(w, http.StatusBadRequest, "invalid_resource", s.resourceNotFound(resource))
			return
		}
		s.counters.add(OpToken)
		writeJSON(w, http.StatusOK, s.tokenResponse(id, resource, true))
	})
}

const (
	appServicePath = "/msi/token"
	imdsPath       = "/metadata/identity/oauth2/token"
)

// writeJSON writes v as the response body with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
