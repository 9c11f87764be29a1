package kvtest_test

import (
	"strings"
	"testing"

	"github.com/viperkv/viperkv/kvtest"
)

// TestVaultAcceptsV2IssuerAndAppIDAudience: Key Vault accepts tokens of Entra ID's v2
// issuer (https://login.microsoftonline.com/<tenant>/v2.0) and its own app ID as the
// audience, as the real service does; other issuers and audiences still get 401.
func TestVaultAcceptsV2IssuerAndAppIDAudience(t *testing.T) {
	srv := newServer(t)
	id := srv.SystemIdentity()
	kv := vaultWithSecret(srv, id)
	u := kv.URL() + "/secrets/s/?api-version=2026-04-01"
	const appID = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"
	token := func(change func(map[string]any)) string {
		c := kvtest.TokenClaims(srv, id, "https://vault.azure.net")
		change(c)
		return kvtest.SignToken(srv, c)
	}
	v2 := func(c map[string]any) {
		c["iss"] = "https://login.microsoftonline.com/" + srv.TenantID() + "/v2.0"
		c["ver"] = "2.0"
		c["azp"], c["azpacr"] = c["appid"], c["appidacr"]
		delete(c, "appid")
		delete(c, "appidacr")
	}
	for name, tc := range map[string]struct {
		change func(map[string]any)
		msg    string // "" when accepted
	}{
		"v2 issuer":                {change: v2},
		"app ID audience":          {change: func(c map[string]any) { c["aud"] = appID }},
		"v2 issuer, app ID":        {change: func(c map[string]any) { v2(c); c["aud"] = appID }},
		"audience list with appid": {change: func(c map[string]any) { c["aud"] = []string{"api://other", appID} }},
		"v2 issuer of another tenant": {msg: "AKV10032",
			change: func(c map[string]any) {
				c["iss"] = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"
			}},
		"v2 issuer of another cloud": {msg: "AKV10032",
			change: func(c map[string]any) { c["iss"] = "https://login.example.com/" + srv.TenantID() + "/v2.0" }},
		"v1 issuer without slash": {msg: "AKV10032",
			change: func(c map[string]any) { c["iss"] = "https://sts.windows.net/" + srv.TenantID() }},
		"another app ID": {msg: "AKV10022",
			change: func(c map[string]any) { c["aud"] = "cfa8b339-82a2-471a-a3c9-0fc0be7a4094" }},
	} {
		t.Run(name, func(t *testing.T) {
			resp, e := rawGet(t, srv, u, token(tc.change))
			if tc.msg == "" {
				if resp.StatusCode != 200 {
					t.Errorf("%d %+v", resp.StatusCode, e.Error)
				}
				return
			}
			if resp.StatusCode != 401 || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("%d %+v, want 401 %s", resp.StatusCode, e.Error, tc.msg)
			}
		})
	}
}
