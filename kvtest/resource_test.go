package kvtest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv/kvtest"
)

// TestIdentityEndpointsKnownResources: both managed identity endpoints issue tokens only
// for resources Entra ID knows (Key Vault in the three clouds); any other resource gets
// 400 invalid_resource AADSTS500011, which azidentity does not retry.
func TestIdentityEndpointsKnownResources(t *testing.T) {
	srv := newServer(t)
	get := func(u string, h map[string]string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %d %q", u, resp.StatusCode, b)
		}
		return resp.StatusCode, m
	}
	appService := func(resource string) (int, map[string]any) {
		return get(kvtest.IdentityEndpoint(srv)+"?api-version=2019-08-01&resource="+url.QueryEscape(resource),
			map[string]string{"X-IDENTITY-HEADER": kvtest.IdentityHeader(srv)})
	}
	const imdsURL = "http://169.254.169.254/metadata/identity/oauth2/token"
	imds := func(path, resource string) (int, map[string]any) {
		return get(path+"?api-version=2018-02-01&resource="+url.QueryEscape(resource), map[string]string{"Metadata": "true"})
	}
	for _, r := range []string{"https://vault.azure.net", "https://vault.azure.net/", "https://vault.azure.cn",
		"https://vault.usgovcloudapi.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"} {
		if st, body := appService(r); st != 200 || body["resource"] != r {
			t.Errorf("App Service %s: %d %v", r, st, body)
		}
		if st, body := imds(imdsURL, r); st != 200 || body["resource"] != r {
			t.Errorf("IMDS %s: %d %v", r, st, body)
		}
	}
	srv.ResetCounters()
	for _, r := range []string{"https://management.azure.com", "https://myvault.vault.azure.net", "https://vault.azure.net/.default", "r"} {
		want := "AADSTS500011: The resource principal named " + r + " was not found in the tenant named " + srv.TenantID() + "."
		st, body := appService(r)
		if msg, _ := body["message"].(string); st != 400 || body["statusCode"] != float64(400) || !strings.HasPrefix(msg, want) {
			t.Errorf("App Service %s: %d %v", r, st, body)
		}
		st, body = imds(imdsURL, r)
		desc, _ := body["error_description"].(string)
		codes, _ := body["error_codes"].([]any)
		if st != 400 || body["error"] != "invalid_resource" || !strings.HasPrefix(desc, want) || len(codes) != 1 || codes[0] != float64(500011) {
			t.Errorf("IMDS %s: %d %v", r, st, body)
		}
	}
	if got := srv.Count(kvtest.OpToken); got != 0 {
		t.Errorf("tokens issued for unknown resources: %d", got)
	}

	// msal-node asks IMDS with a trailing slash.
	if st, body := imds(imdsURL+"/", "https://vault.azure.net"); st != 200 || body["access_token"] == nil {
		t.Errorf("IMDS with a trailing slash: %d %v", st, body)
	}

	// Through azidentity: an error at once, not after retries.
	ctx := ctxTimeout(t, 30*time.Second)
	cred := newCred(t, srv, azidentity.ClientID(freshIdentity(t, srv).ClientID))
	start := time.Now()
	_, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://management.azure.com/.default"}})
	if err == nil || !strings.Contains(err.Error(), "AADSTS500011") {
		t.Errorf("GetToken for an unknown resource: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: retried a 400", d)
	}
}
