package kvtest_test

import (
	"net/http"
	"testing"

	"github.com/viperkv/viperkv/kvtest"
)

// A fault with a Location answers with that redirect, from a vault and from both identity
// endpoints, so clients can be tested for not following it.
func TestRedirectFaults(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	token := kvtest.IssueToken(srv, srv.SystemIdentity(), "https://vault.azure.net")
	// A copy of the emulator's client that hands redirects back instead of following them.
	hc := *srv.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	get := func(url string, hdr map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
	const to = "https://attacker.test/x"
	secret := kv.URL() + "/secrets/s/?api-version=2026-04-01"
	bearer := map[string]string{"Authorization": "Bearer " + token}

	kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Location: to, Times: 1})
	if resp := get(secret, bearer); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != to {
		t.Errorf("vault: %d Location %q, want 302 to %s", resp.StatusCode, resp.Header.Get("Location"), to)
	}
	if resp := get(secret, bearer); resp.StatusCode != http.StatusOK {
		t.Errorf("after the fault's one use: %d", resp.StatusCode)
	}
	kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusTemporaryRedirect, Location: to, Times: 1})
	if resp := get(secret, bearer); resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != to {
		t.Errorf("vault: %d Location %q, want 307 to %s", resp.StatusCode, resp.Header.Get("Location"), to)
	}

	srv.InjectIdentityFault(kvtest.Fault{Location: to})
	defer srv.ClearIdentityFaults()
	for name, ep := range map[string]struct {
		url string
		hdr map[string]string
	}{
		"App Service": {kvtest.IdentityEndpoint(srv) + "?api-version=2019-08-01&resource=https://vault.azure.net",
			map[string]string{"X-IDENTITY-HEADER": kvtest.IdentityHeader(srv)}},
		"IMDS": {"http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
			map[string]string{"Metadata": "true"}},
	} {
		if resp := get(ep.url, ep.hdr); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != to {
			t.Errorf("%s: %d Location %q, want 302 to %s", name, resp.StatusCode, resp.Header.Get("Location"), to)
		}
	}
}
