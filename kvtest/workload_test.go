package kvtest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv/kvtest"
)

// entraOptions are the client options of a credential that reaches the emulator's Entra ID
// at its production authority, https://login.microsoftonline.com/, through srv.Client().
func entraOptions(srv *kvtest.Server) azcore.ClientOptions {
	return azcore.ClientOptions{
		Transport: srv.Client(),
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: "https://login.microsoftonline.com/"},
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}
}

// freshName is an identity name no other test used, so that no token cache holds a token
// for its client ID and token requests can be counted.
func freshName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// vaultWithSecret adds myvault with secret s = "x", readable by id.
func vaultWithSecret(srv *kvtest.Server, id kvtest.Identity) *kvtest.Vault {
	kv := srv.AddVault("myvault")
	kv.Grant(id, kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	return kv
}

// authFailure returns the status and the body of the Entra response an azidentity error
// carries.
func authFailure(t *testing.T, err error) (int, string) {
	t.Helper()
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) || afe.RawResponse == nil {
		t.Fatalf("error is not an AuthenticationFailedError with a response: %v", err)
	}
	return afe.RawResponse.StatusCode, err.Error()
}

var vaultScope = policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}

// TestClientSecretCredential: azidentity's ClientSecretCredential gets a token from the
// emulator's Entra token endpoint (client credentials with a secret), azsecrets reads a
// secret with it, and a wrong secret or an unknown app gets Entra's errors.
func TestClientSecretCredential(t *testing.T) {
	srv := newServer(t)
	id := srv.AddUserIdentity(freshName("app"), kvtest.WithClientSecret("s3cret-value"))
	kv := vaultWithSecret(srv, id)
	ctx := ctxTimeout(t, 30*time.Second)
	opts := entraOptions(srv)

	cred, err := azidentity.NewClientSecretCredential(srv.TenantID(), id.ClientID, "s3cret-value",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	c := newSecretsClient(t, srv, kv.URL(), cred)
	srv.ResetCounters()
	for range 2 {
		if r, err := c.GetSecret(ctx, "s", "", nil); err != nil || *r.Value != "x" {
			t.Fatalf("GetSecret: %v", err)
		}
	}
	if got := srv.Count(kvtest.OpToken); got != 1 {
		t.Errorf("token requests = %d, want 1 (MSAL caches the app token)", got)
	}
	tok, err := cred.GetToken(ctx, vaultScope)
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(tok.ExpiresOn); life < 55*time.Minute || life > 61*time.Minute {
		t.Errorf("token lifetime %v, want about an hour (expires_in 3599)", life)
	}
	claims := decodeClaims(t, tok.Token)
	for k, want := range map[string]any{
		"aud": "https://vault.azure.net", "iss": "https://sts.windows.net/" + srv.TenantID() + "/",
		"tid": srv.TenantID(), "oid": id.ObjectID, "sub": id.ObjectID, "appid": id.ClientID,
		"appidacr": "1", "idtyp": "app", "ver": "1.0",
	} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}

	// A wrong secret: 401 invalid_client AADSTS7000215.
	bad, err := azidentity.NewClientSecretCredential(srv.TenantID(), id.ClientID, "wrong",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.GetToken(ctx, vaultScope)
	if st, msg := authFailure(t, err); st != 401 || !strings.Contains(msg, "invalid_client") || !strings.Contains(msg, "AADSTS7000215: Invalid client secret provided.") {
		t.Errorf("wrong secret: %d %s", st, msg)
	}
	if strings.Contains(err.Error(), "s3cret-value") {
		t.Error("the error shows the secret")
	}

	// An app the tenant does not have: 400 unauthorized_client AADSTS700016.
	ghost := "0b7c3a52-1111-4222-8333-444455556666"
	unknown, err := azidentity.NewClientSecretCredential(srv.TenantID(), ghost, "s3cret-value",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	_, err = unknown.GetToken(ctx, vaultScope)
	if st, msg := authFailure(t, err); st != 400 || !strings.Contains(msg, "unauthorized_client") ||
		!strings.Contains(msg, "AADSTS700016: Application with identifier '"+ghost+"' was not found in the directory") {
		t.Errorf("unknown app: %d %s", st, msg)
	}

	// A resource Entra does not know, and a scope without /.default.
	for scope, want := range map[string]string{
		"https://unknown.example.com/.default": "AADSTS500011: The resource principal named https://unknown.example.com was not found in the tenant",
		"https://vault.azure.net":              "AADSTS1002012",
	} {
		_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
		if st, msg := authFailure(t, err); st != 400 || !strings.Contains(msg, want) {
			t.Errorf("scope %s: %d %s", scope, st, msg)
		}
	}
	// Sovereign vault resources and the Key Vault app ID are known.
	for _, scope := range []string{"https://vault.azure.cn/.default", "https://vault.usgovcloudapi.net/.default", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093/.default"} {
		if _, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}}); err != nil {
			t.Errorf("scope %s: %v", scope, err)
		}
	}

	// An identity removed from the app is an unknown app, its secret gone with it.
	srv.RemoveUserIdentity(id.Name)
	gone, err := azidentity.NewClientSecretCredential(srv.TenantID(), id.ClientID, "s3cret-value",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	_, err = gone.GetToken(ctx, vaultScope)
	if st, msg := authFailure(t, err); st != 400 || !strings.Contains(msg, "AADSTS700016") {
		t.Errorf("removed identity: %d %s", st, msg)
	}
}

// TestWorkloadIdentityCredential: AKS workload identity end to end. The emulator signs the
// service account token the pod's AZURE_FEDERATED_TOKEN_FILE holds; azidentity's
// WorkloadIdentityCredential exchanges it at the Entra token endpoint for a vault token.
func TestWorkloadIdentityCredential(t *testing.T) {
	srv := newServer(t)
	id := srv.AddUserIdentity(freshName("wi"), kvtest.WithFederated())
	kv := vaultWithSecret(srv, id)
	ctx := ctxTimeout(t, 30*time.Second)
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(file, []byte(srv.FederatedToken(id)), 0o600); err != nil {
		t.Fatal(err)
	}

	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: entraOptions(srv),
		ClientID:      id.ClientID,
		TenantID:      srv.TenantID(),
		TokenFilePath: file,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := newSecretsClient(t, srv, kv.URL(), cred)
	if r, err := c.GetSecret(ctx, "s", "", nil); err != nil || *r.Value != "x" {
		t.Fatalf("GetSecret: %v", err)
	}
	tok, err := cred.GetToken(ctx, vaultScope)
	if err != nil {
		t.Fatal(err)
	}
	claims := decodeClaims(t, tok.Token)
	if claims["appid"] != id.ClientID || claims["oid"] != id.ObjectID || claims["appidacr"] != "2" {
		t.Errorf("claims %v", claims)
	}

	// The federated token looks like a Kubernetes service account token.
	fed := decodeClaims(t, srv.FederatedToken(id))
	if fed["sub"] != "system:serviceaccount:default:"+id.Name || !strings.HasPrefix(fed["iss"].(string), "https://") {
		t.Errorf("federated token claims %v", fed)
	}
	if aud, _ := fed["aud"].([]any); len(aud) != 1 || aud[0] != "api://AzureADTokenExchange" {
		t.Errorf("federated token aud %v", fed["aud"])
	}

	// With only the pod's variables, AZURE_AUTHORITY_HOST naming the emulator's own listener
	// and no Cloud in the options: MSAL asks instance discovery about that host first.
	id2 := srv.AddUserIdentity(freshName("wi"), kvtest.WithFederated())
	kv.Grant(id2, kvtest.RoleSecretsUser)
	file2 := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file2, []byte(srv.FederatedToken(id2)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AZURE_CLIENT_ID", id2.ClientID)
	t.Setenv("AZURE_TENANT_ID", srv.TenantID())
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", file2)
	t.Setenv("AZURE_AUTHORITY_HOST", kvtest.EntraURL(srv)+"/")
	envCred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := newSecretsClient(t, srv, kv.URL(), envCred).GetSecret(ctx, "s", "", nil); err != nil || *r.Value != "x" {
		t.Fatalf("GetSecret with the pod's variables: %v", err)
	}
}

// TestClientAssertionErrors: assertions Entra would refuse get its errors.
func TestClientAssertionErrors(t *testing.T) {
	srv := newServer(t)
	fed := srv.AddUserIdentity(freshName("fed"), kvtest.WithFederated())
	plain := srv.AddUserIdentity(freshName("plain"))
	ctx := ctxTimeout(t, 30*time.Second)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(id kvtest.Identity, change func(map[string]any)) map[string]any {
		c := kvtest.FederatedTokenClaims(srv, id)
		if change != nil {
			change(c)
		}
		return c
	}
	now := time.Now()
	for _, tc := range []struct {
		name      string
		id        kvtest.Identity
		assertion string
		status    int
		want      []string
	}{
		{"valid", fed, srv.FederatedToken(fed), 200, nil},
		{"expired", fed, kvtest.SignToken(srv, claims(fed, func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-3*time.Hour).Unix(), now.Add(-3*time.Hour).Unix(), now.Add(-2*time.Hour).Unix()
		})), 401, []string{"invalid_client", "AADSTS700024: Client assertion is not within its valid time range."}},
		{"wrong subject", fed, kvtest.SignToken(srv, claims(fed, func(c map[string]any) { c["sub"] = "system:serviceaccount:default:someone-else" })),
			400, []string{"invalid_request", "AADSTS70021: No matching federated identity record found for presented assertion.", "Assertion Subject: 'system:serviceaccount:default:someone-else'"}},
		{"wrong audience", fed, kvtest.SignToken(srv, claims(fed, func(c map[string]any) { c["aud"] = []string{"api://other"} })),
			400, []string{"AADSTS70021", "Assertion Audience: 'api://other'"}},
		{"wrong issuer", fed, kvtest.SignToken(srv, claims(fed, func(c map[string]any) { c["iss"] = "https://oidc.example.com/" })),
			400, []string{"AADSTS70021", "Assertion Issuer: 'https://oidc.example.com/'"}},
		{"no federated credential", plain, srv.FederatedToken(plain), 400, []string{"AADSTS70021"}},
		{"signed by another key", fed, signRS256(t, other, map[string]any{"typ": "JWT", "alg": "RS256", "kid": kvtest.KeyID(srv)}, claims(fed, nil)),
			401, []string{"invalid_client", "AADSTS50013: Assertion failed signature validation."}},
		{"not a JWT", fed, "opaque", 400, []string{"AADSTS50027: JWT token is invalid or malformed."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, err := azidentity.NewClientAssertionCredential(srv.TenantID(), tc.id.ClientID,
				func(context.Context) (string, error) { return tc.assertion, nil },
				&azidentity.ClientAssertionCredentialOptions{ClientOptions: entraOptions(srv)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = cred.GetToken(ctx, vaultScope)
			if tc.status == 200 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			st, msg := authFailure(t, err)
			if st != tc.status {
				t.Errorf("status %d, want %d: %s", st, tc.status, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
		})
	}
}

// TestEntraTokenEndpointWire: the token endpoint's bodies, v2 and v1, as Entra writes them.
func TestEntraTokenEndpointWire(t *testing.T) {
	srv := newServer(t)
	id := srv.AddUserIdentity(freshName("wire"), kvtest.WithClientSecret("pw"))
	kv := vaultWithSecret(srv, id)
	base := "https://login.microsoftonline.com/" + srv.TenantID()
	post := func(path string, form url.Values) (int, map[string]any) {
		t.Helper()
		resp, err := srv.Client().PostForm(base+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, b)
		}
		return resp.StatusCode, m
	}
	st, v2 := post("/oauth2/v2.0/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id.ClientID},
		"client_secret": {"pw"}, "scope": {"https://vault.azure.net/.default"}})
	if st != 200 || v2["token_type"] != "Bearer" || v2["expires_in"] != float64(3599) || v2["ext_expires_in"] != float64(3599) || v2["access_token"] == nil {
		t.Fatalf("v2: %d %v", st, v2)
	}
	// The vault accepts the token.
	if resp, e := rawGet(t, srv, kv.URL()+"/secrets/s/?api-version=2026-04-01", v2["access_token"].(string)); resp.StatusCode != 200 {
		t.Errorf("vault: %d %+v", resp.StatusCode, e)
	}
	st, v1 := post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id.ClientID},
		"client_secret": {"pw"}, "resource": {"https://vault.azure.net"}})
	if st != 200 || v1["expires_in"] != "3599" || v1["resource"] != "https://vault.azure.net" || v1["expires_on"] == nil || v1["access_token"] == nil {
		t.Fatalf("v1: %d %v", st, v1)
	}
	// Errors have Entra's body: error, error_description, error_codes, timestamp,
	// trace_id, correlation_id, error_uri.
	st, e := post("/oauth2/v2.0/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id.ClientID},
		"client_secret": {"nope"}, "scope": {"https://vault.azure.net/.default"}})
	codes, _ := e["error_codes"].([]any)
	if st != 401 || e["error"] != "invalid_client" || len(codes) != 1 || codes[0] != float64(7000215) ||
		e["trace_id"] == nil || e["correlation_id"] == nil || e["timestamp"] == nil || e["error_uri"] != "https://login.microsoftonline.com/error?code=7000215" {
		t.Errorf("bad secret: %d %v", st, e)
	}
	if st, e := post("/oauth2/v2.0/token", url.Values{"client_id": {id.ClientID}}); st != 400 || !strings.Contains(e["error_description"].(string), "'grant_type'") {
		t.Errorf("no grant_type: %d %v", st, e)
	}
	if st, e := post("/oauth2/v2.0/token", url.Values{"grant_type": {"password"}, "client_id": {id.ClientID}}); st != 400 || e["error"] != "unsupported_grant_type" {
		t.Errorf("password grant: %d %v", st, e)
	}
	if st, e := post("/oauth2/v2.0/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id.ClientID},
		"scope": {"https://vault.azure.net/.default"}}); st != 401 || !strings.Contains(e["error_description"].(string), "AADSTS7000218") {
		t.Errorf("no credential: %d %v", st, e)
	}
	if got := srv.Count(kvtest.OpToken); got != 2 {
		t.Errorf("tokens = %d, want 2", got)
	}

	// Instance discovery, as MSAL asks it about an authority host it does not know.
	q := url.Values{"api-version": {"1.1"}, "authorization_endpoint": {kvtest.EntraURL(srv) + "/" + srv.TenantID() + "/oauth2/v2.0/authorize"}}
	resp, err := srv.Client().Get("https://login.microsoftonline.com/common/discovery/instance?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	var disc struct {
		TenantDiscoveryEndpoint string `json:"tenant_discovery_endpoint"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&disc)
	resp.Body.Close()
	if resp.StatusCode != 200 || disc.TenantDiscoveryEndpoint != kvtest.AuthorityURL(srv)+"/v2.0/.well-known/openid-configuration" {
		t.Errorf("instance discovery: %d %+v", resp.StatusCode, disc)
	}
	q.Set("authorization_endpoint", "https://login.example.com/"+srv.TenantID()+"/oauth2/v2.0/authorize")
	resp, err = srv.Client().Get("https://login.microsoftonline.com/common/discovery/instance?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "invalid_instance") {
		t.Errorf("unknown instance: %d %s", resp.StatusCode, b)
	}
}
