package kvtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv/kvtest"
)

func TestThrottling(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	token := kvtest.IssueToken(srv, srv.SystemIdentity(), "https://vault.azure.net")
	url := kv.URL() + "/secrets/s/?api-version=2026-04-01"

	kv.SetThrottle(2, 10*time.Second) // one token every 5 s
	for i := range 2 {
		if resp, _ := rawGet(t, srv, url, token); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	resp, e := rawGet(t, srv, url, token)
	if resp.StatusCode != 429 || e.Error.Code != "Throttled" || resp.Header.Get("Retry-After") != "5" {
		t.Errorf("third request: %d %+v Retry-After=%q", resp.StatusCode, e.Error, resp.Header.Get("Retry-After"))
	}
	if kv.Count(kvtest.OpThrottled) != 1 || kv.Count(kvtest.OpGetSecret) != 2 {
		t.Errorf("throttled=%d gets=%d", kv.Count(kvtest.OpThrottled), kv.Count(kvtest.OpGetSecret))
	}

	// The SDK honours Retry-After and succeeds once a token is back.
	kv.SetThrottle(1, time.Second)
	kv.ResetCounters()
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)
	start := time.Now()
	for range 2 {
		if _, err := c.GetSecret(ctx, "s", "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if kv.Count(kvtest.OpThrottled) == 0 || kv.Count(kvtest.OpGetSecret) != 2 {
		t.Errorf("throttled=%d gets=%d", kv.Count(kvtest.OpThrottled), kv.Count(kvtest.OpGetSecret))
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("retried after %v, before Retry-After", el)
	}

	kv.SetThrottle(0, 0) // off
	for range 5 {
		if resp, _ := rawGet(t, srv, url, token); resp.StatusCode != 200 {
			t.Fatalf("unthrottled: %d", resp.StatusCode)
		}
	}
}

func TestFaults(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 60*time.Second)
	token := kvtest.IssueToken(srv, srv.SystemIdentity(), "https://vault.azure.net")
	url := kv.URL() + "/secrets/s/?api-version=2026-04-01"

	t.Run("status once then success", func(t *testing.T) {
		kv.ResetCounters()
		kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: 503, Times: 1})
		if _, err := c.GetSecret(ctx, "s", "", nil); err != nil {
			t.Fatal(err)
		}
		if got := kv.Count(kvtest.OpGetSecret); got != 2 {
			t.Errorf("GETs = %d, want 2 (fault + retry)", got)
		}
	})
	t.Run("custom error until cleared", func(t *testing.T) {
		kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: 404, Code: "SecretNotFound", Message: "injected"})
		for range 2 {
			_, err := c.GetSecret(ctx, "s", "", nil)
			if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" || !strings.Contains(err.Error(), "injected") {
				t.Errorf("%d %s %v", st, code, err)
			}
		}
		kv.ClearFaults()
		if _, err := c.GetSecret(ctx, "s", "", nil); err != nil {
			t.Errorf("after ClearFaults: %v", err)
		}
	})
	t.Run("retry-after", func(t *testing.T) {
		kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: 503, RetryAfter: 1500 * time.Millisecond, Times: 1})
		resp, e := rawGet(t, srv, url, token)
		if resp.StatusCode != 503 || e.Error.Code != "ServiceUnavailable" || resp.Header.Get("Retry-After") != "2" {
			t.Errorf("%d %+v %q", resp.StatusCode, e.Error, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("hang until the client gives up", func(t *testing.T) {
		kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Hang: true})
		defer kv.ClearFaults()
		hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := c.GetSecret(hctx, "s", "", nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("reset once then success", func(t *testing.T) {
		kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Reset: true, Times: 1})
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := srv.Client().Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("reset answered %d", resp.StatusCode)
		}
		kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Reset: true, Times: 1})
		if _, err := c.GetSecret(ctx, "s", "", nil); err != nil {
			t.Errorf("SDK did not recover from a reset: %v", err)
		}
	})
	t.Run("forged body", func(t *testing.T) {
		kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Body: `{"value":[{"id":"https://other.vault.azure.net/secrets/forged"}],"nextLink":null}`, Times: 1})
		pager := c.NewListSecretPropertiesPager(nil)
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Value) != 1 || page.Value[0].ID == nil || page.Value[0].ID.Name() != "forged" || pager.More() {
			t.Errorf("forged page = %+v, more %v", page.Value, pager.More())
		}
		real := c.NewListSecretPropertiesPager(nil) // Times: 1 -- the next list is the vault's own
		if page, err := real.NextPage(ctx); err != nil || len(page.Value) != 1 || page.Value[0].ID.Name() != "s" {
			t.Errorf("after the forged page: %v %+v", err, page.Value)
		}
	})
	t.Run("challenge fault", func(t *testing.T) {
		kv.InjectFault(kvtest.OpChallenge, kvtest.Fault{Status: 500, Times: 1})
		fresh := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil)) // a new client starts with a challenge
		if _, err := fresh.GetSecret(ctx, "s", "", nil); err != nil {
			t.Errorf("err = %v", err)
		}
	})
}

func TestHangEndsOnClose(t *testing.T) {
	srv := kvtest.NewServer()
	kv := srv.AddVault("myvault")
	kv.InjectFault(kvtest.OpChallenge, kvtest.Fault{Hang: true})
	done := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Get(kv.URL() + "/secrets/s/?api-version=2026-04-01")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	srv.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a hanging request got a response")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left the request hanging")
	}
}

func TestIdentityFaults(t *testing.T) {
	srv := newServer(t)
	scope := policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}
	ctx := ctxTimeout(t, 30*time.Second)

	id := freshIdentity(t, srv)
	srv.InjectIdentityFault(kvtest.Fault{Status: 500, Times: 1})
	if _, err := newCred(t, srv, azidentity.ClientID(id.ClientID)).GetToken(ctx, scope); err != nil {
		t.Fatalf("azidentity did not retry the 500: %v", err)
	}
	if got := srv.Count(kvtest.OpToken); got != 1 {
		t.Errorf("tokens = %d", got)
	}

	id = freshIdentity(t, srv)
	srv.InjectIdentityFault(kvtest.Fault{Status: 403, Message: "injected identity failure"})
	_, err := newCred(t, srv, azidentity.ClientID(id.ClientID)).GetToken(ctx, scope)
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) || afe.RawResponse.StatusCode != 403 || !strings.Contains(err.Error(), "injected identity failure") {
		t.Errorf("err = %v", err)
	}
	srv.ClearIdentityFaults()
	if _, err := newCred(t, srv, azidentity.ClientID(id.ClientID)).GetToken(ctx, scope); err != nil {
		t.Errorf("after clearing: %v", err)
	}
}

func TestLatency(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.SetLatency(150 * time.Millisecond)
	start := time.Now()
	resp, _ := rawGet(t, srv, kv.URL()+"/secrets/s/?api-version=2026-04-01", "")
	if resp.StatusCode != 401 || time.Since(start) < 150*time.Millisecond {
		t.Errorf("challenge after %v (%d), want >= 150ms", time.Since(start), resp.StatusCode)
	}
	kv.SetLatency(0)
	start = time.Now()
	rawGet(t, srv, kv.URL()+"/secrets/s/?api-version=2026-04-01", "")
	if time.Since(start) > 2*time.Second {
		t.Error("latency not removed")
	}
}

func TestConcurrentRequests(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	other := srv.AddVault("othervault")
	id := freshIdentity(t, srv)
	kv.Grant(id, kvtest.RoleSecretsUser)
	other.Grant(id, kvtest.RoleSecretsUser)
	for i := range 20 {
		kv.SetSecret(fmt.Sprintf("s%d", i), fmt.Sprintf("v%d", i))
		other.SetSecret(fmt.Sprintf("s%d", i), fmt.Sprintf("o%d", i))
	}
	cred := newCred(t, srv, azidentity.ClientID(id.ClientID))
	kc := newSecretsClient(t, srv, kv.URL(), cred)
	oc := newSecretsClient(t, srv, other.URL(), cred)
	ctx := ctxTimeout(t, 60*time.Second)

	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, want := kc, fmt.Sprintf("v%d", i%20)
			if i%2 == 1 {
				c, want = oc, fmt.Sprintf("o%d", i%20)
			}
			r, err := c.GetSecret(ctx, fmt.Sprintf("s%d", i%20), "", nil)
			switch {
			case err != nil:
				errs <- err
			case *r.Value != want:
				errs <- fmt.Errorf("got %q, want %q", *r.Value, want)
			}
		})
	}
	// Mutations and controls concurrently with the traffic, for the race detector.
	wg.Go(func() {
		for i := range 50 {
			kv.SetSecret("churn", fmt.Sprint(i))
			kv.SetLatency(0)
			_ = srv.Count(kvtest.OpGetSecret)
			kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Status: 500})
			kv.ClearFaults()
			other.Grant(id, kvtest.RoleSecretsUser)
			_ = kvtest.Info(srv, "")
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := srv.Count(kvtest.OpGetSecret); got != n {
		t.Errorf("GETs = %d, want %d", got, n)
	}
	// Concurrent first requests each get their own challenge: the SDK has no auth
	// parameters until one challenge comes back.
	if ch := srv.Count(kvtest.OpChallenge); ch < 2 || ch > n {
		t.Errorf("challenges = %d", ch)
	}
	// Each client's bearer policy fetches once; MSAL does not merge concurrent misses.
	if got := srv.Count(kvtest.OpToken); got < 1 || got > 2 {
		t.Errorf("token requests = %d, want 1 or 2 (one per client at most)", got)
	}
}

func TestIdentityEndpointsRaw(t *testing.T) {
	srv := newServer(t, kvtest.WithTokenLifetime(2*time.Hour))
	hc := srv.Client()
	get := func(url string, hdr map[string]string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	as := kvtest.IdentityEndpoint(srv) + "?api-version=2019-08-01&resource=https://vault.azure.net"
	good := map[string]string{"X-IDENTITY-HEADER": kvtest.IdentityHeader(srv)}
	if st, _ := get(as, nil); st != 400 {
		t.Errorf("no header: %d", st)
	}
	if st, _ := get(as, map[string]string{"X-IDENTITY-HEADER": "wrong"}); st != 401 {
		t.Errorf("wrong header: %d", st)
	}
	if st, _ := get(kvtest.IdentityEndpoint(srv)+"?api-version=2019-08-01", good); st != 400 {
		t.Errorf("no resource: %d", st)
	}
	st, body := get(as, good)
	if st != 200 || body["token_type"] != "Bearer" || body["resource"] != "https://vault.azure.net" || body["client_id"] != srv.SystemIdentity().ClientID {
		t.Fatalf("%d %v", st, body)
	}
	exp, ok := body["expires_on"].(string)
	if !ok || exp == "" {
		t.Errorf("expires_on = %#v, want a string of unix seconds", body["expires_on"])
	}
	claims := decodeClaims(t, body["access_token"].(string))
	sys := srv.SystemIdentity()
	for k, want := range map[string]any{
		"aud": "https://vault.azure.net", "iss": "https://sts.windows.net/" + srv.TenantID() + "/",
		"tid": srv.TenantID(), "oid": sys.ObjectID, "sub": sys.ObjectID, "appid": sys.ClientID,
		"idtyp": "app", "ver": "1.0", "xms_mirid": sys.ResourceID,
	} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}
	if life := claims["exp"].(float64) - claims["iat"].(float64); life != 7200 || claims["nbf"] == nil {
		t.Errorf("lifetime %v", life)
	}
	if fmt.Sprint(int64(claims["exp"].(float64))) != exp {
		t.Errorf("expires_on %s != exp %v", exp, claims["exp"])
	}

	imds := "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
	if st, body := get(imds, nil); st != 400 || body["error_description"] != "Required metadata header not specified" {
		t.Errorf("IMDS without Metadata: %d %v", st, body)
	}
	id := srv.AddUserIdentity("raw")
	st, body = get(imds+"&msi_res_id="+id.ResourceID, map[string]string{"Metadata": "true"})
	if st != 200 || body["client_id"] != id.ClientID || body["expires_in"] != "7200" || body["not_before"] == nil {
		t.Errorf("IMDS: %d %v", st, body)
	}
	if st, body := get(imds+"&client_id=00000000-0000-0000-0000-000000000000", map[string]string{"Metadata": "true"}); st != 400 || body["error_description"] != "Identity not found" {
		t.Errorf("IMDS unknown identity: %d %v", st, body)
	}
	if st, body := get(kvtest.IdentityEndpoint(srv)+"?api-version=2019-08-01&resource=r&mi_res_id=/nope", good); st != 400 || body["message"] != "Unable to load the proper Managed Identity." {
		t.Errorf("App Service unknown identity: %d %v", st, body)
	}
	if got := srv.Count(kvtest.OpToken); got != 2 {
		t.Errorf("tokens = %d, want 2", got)
	}
}

func decodeClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var header, claims map[string]any
	for i, v := range []*map[string]any{&header, &claims} {
		b, err := decodeB64(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if header["alg"] != "RS256" || header["kid"] == "" {
		t.Errorf("header %v", header)
	}
	return claims
}

func TestOIDCDiscovery(t *testing.T) {
	srv := newServer(t)
	hc := srv.Client()
	getJSON := func(url string) (int, map[string]any) {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	tenant := srv.TenantID()
	st, v1 := getJSON("https://login.microsoftonline.com/" + tenant + "/.well-known/openid-configuration")
	if st != 200 || v1["issuer"] != "https://sts.windows.net/"+tenant+"/" || v1["jwks_uri"] != "https://login.microsoftonline.com/common/discovery/keys" {
		t.Errorf("v1: %d %v %v", st, v1["issuer"], v1["jwks_uri"])
	}
	st, v2 := getJSON("https://login.microsoftonline.com/" + tenant + "/v2.0/.well-known/openid-configuration")
	if st != 200 || v2["issuer"] != "https://login.microsoftonline.com/"+tenant+"/v2.0" || v2["jwks_uri"] == nil {
		t.Errorf("v2: %d %v", st, v2["issuer"])
	}
	// Reached directly, the documents name the direct host.
	if _, d := getJSON(kvtest.OIDCDiscoveryURL(srv)); d["jwks_uri"] != kvtest.EntraURL(srv)+"/common/discovery/keys" {
		t.Errorf("direct jwks_uri = %v", d["jwks_uri"])
	}
	for _, u := range []string{v1["jwks_uri"].(string), v2["jwks_uri"].(string)} {
		_, jwks := getJSON(u)
		keys, _ := jwks["keys"].([]any)
		if len(keys) != 1 || keys[0].(map[string]any)["kid"] != kvtest.KeyID(srv) || keys[0].(map[string]any)["kty"] != "RSA" {
			t.Errorf("%s: %v", u, jwks)
		}
	}
	if st, _ := getJSON("https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/.well-known/openid-configuration"); st != 400 {
		t.Errorf("unknown tenant: %d", st)
	}
	if srv.Count(kvtest.OpDiscovery) != 3 || srv.Count(kvtest.OpJWKS) != 2 {
		t.Errorf("discovery=%d jwks=%d", srv.Count(kvtest.OpDiscovery), srv.Count(kvtest.OpJWKS))
	}

	// The vault fetches the documents once and caches them.
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	srv.ResetCounters()
	token := kvtest.IssueToken(srv, srv.SystemIdentity(), "https://vault.azure.net")
	for range 3 {
		rawGet(t, srv, kv.URL()+"/secrets/s/?api-version=2026-04-01", token)
	}
	if srv.Count(kvtest.OpDiscovery) != 1 || srv.Count(kvtest.OpJWKS) != 1 {
		t.Errorf("vault fetches: discovery=%d jwks=%d, want 1 and 1", srv.Count(kvtest.OpDiscovery), srv.Count(kvtest.OpJWKS))
	}
}
