package kvtest_test

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/kvtest"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jsonB64(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(b)
}

func signRS256(t *testing.T, key *rsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	input := jsonB64(t, header) + "." + jsonB64(t, claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64(sig)
}

func TestTokenValidation(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	id := srv.SystemIdentity()
	kv.Grant(id, kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	url := kv.URL() + "/secrets/s/?api-version=2026-04-01"
	const resource = "https://vault.azure.net"
	now := time.Now()

	claims := func(change func(map[string]any)) map[string]any {
		c := kvtest.TokenClaims(srv, id, resource)
		if change != nil {
			change(c)
		}
		return c
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := kvtest.IssueToken(srv, id, resource)
	parts := strings.Split(valid, ".")
	pubDER, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	hsInput := jsonB64(t, map[string]any{"typ": "JWT", "alg": "HS256", "kid": kvtest.KeyID(srv)}) + "." + parts[1]
	mac := hmac.New(sha256.New, pubDER)
	mac.Write([]byte(hsInput))

	for _, tc := range []struct {
		name, token, msg string
		ok               bool
	}{
		{name: "valid", token: valid, ok: true},
		{name: "valid with trailing slash audience", token: kvtest.SignToken(srv, claims(func(c map[string]any) { c["aud"] = resource + "/" })), ok: true},
		{name: "expired within clock skew", token: kvtest.SignToken(srv, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), ok: true},
		{name: "bad signature", msg: "signature validation failed",
			token: signRS256(t, other, map[string]any{"typ": "JWT", "alg": "RS256", "kid": kvtest.KeyID(srv)}, claims(nil))},
		{name: "unknown key", msg: "AKV10046",
			token: signRS256(t, other, map[string]any{"typ": "JWT", "alg": "RS256", "kid": "someone-else"}, claims(nil))},
		{name: "tampered payload", msg: "signature validation failed",
			token: parts[0] + "." + jsonB64(t, claims(func(c map[string]any) { c["oid"] = "00000000-0000-0000-0000-000000000001" })) + "." + parts[2]},
		{name: "alg none", msg: "'none' is not supported",
			token: jsonB64(t, map[string]any{"typ": "JWT", "alg": "none"}) + "." + parts[1] + "."},
		{name: "alg HS256", msg: "'HS256' is not supported", token: hsInput + "." + b64(mac.Sum(nil))},
		{name: "wrong audience", msg: "AKV10022: Invalid audience. Expected https://vault.azure.net",
			token: kvtest.SignToken(srv, claims(func(c map[string]any) { c["aud"] = "https://management.azure.com" }))},
		{name: "wrong issuer", msg: "AKV10032: Invalid issuer",
			token: kvtest.SignToken(srv, claims(func(c map[string]any) { c["iss"] = "https://sts.windows.net/00000000-0000-0000-0000-000000000000/" }))},
		// Key Vault accepts the tenant's v2 issuer too (TestVaultAcceptsV2IssuerAndAppIDAudience).
		{name: "v2 issuer", ok: true,
			token: kvtest.SignToken(srv, claims(func(c map[string]any) { c["iss"] = "https://login.microsoftonline.com/" + srv.TenantID() + "/v2.0" }))},
		{name: "v2 issuer of another tenant", msg: "AKV10032",
			token: kvtest.SignToken(srv, claims(func(c map[string]any) {
				c["iss"] = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"
			}))},
		{name: "expired", msg: "expired",
			token: kvtest.SignToken(srv, claims(func(c map[string]any) {
				c["exp"] = now.Add(-time.Hour).Unix()
				c["nbf"] = now.Add(-2 * time.Hour).Unix()
			}))},
		{name: "not yet valid", msg: "not valid before",
			token: kvtest.SignToken(srv, claims(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() }))},
		{name: "no expiry", msg: "no expiration",
			token: kvtest.SignToken(srv, claims(func(c map[string]any) { delete(c, "exp") }))},
		{name: "not a JWT", msg: "compact JWS", token: "opaque-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := kv.Count(kvtest.OpUnauthorized)
			resp, e := rawGet(t, srv, url, tc.token)
			if tc.ok {
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %+v", resp.StatusCode, e)
				}
				return
			}
			if resp.StatusCode != 401 || e.Error.Code != "Unauthorized" || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("got %d %+v, want 401 Unauthorized with %q", resp.StatusCode, e.Error, tc.msg)
			}
			// Every 401 carries the challenge, as Key Vault's do.
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer authorization="https://login.windows.net/`+srv.TenantID()+`"`) {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
			if kv.Count(kvtest.OpUnauthorized) != before+1 {
				t.Error("not counted as OpUnauthorized")
			}
		})
	}
	if got := kv.Count(kvtest.OpGetSecret); got != 4 {
		t.Errorf("GETs = %d, want 4 (only the accepted tokens)", got)
	}
}

func TestChallenge(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	resp, e := rawGet(t, srv, kv.URL()+"/secrets/anything/?api-version=2026-04-01", "")
	// As Key Vault's recorded challenges: the public cloud's older Entra ID host.
	want := `Bearer authorization="https://login.windows.net/` + srv.TenantID() + `", resource="https://vault.azure.net"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Errorf("%d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if e.Error.Code != "Unauthorized" || e.Error.Message != "AKV10000: Request is missing a Bearer or PoP token." {
		t.Errorf("body %+v", e.Error)
	}
	if kv.Count(kvtest.OpChallenge) != 1 || kv.Count(kvtest.OpGetSecret) != 0 || kv.Count(kvtest.OpUnauthorized) != 0 {
		t.Errorf("counters: challenge=%d get=%d unauthorized=%d", kv.Count(kvtest.OpChallenge), kv.Count(kvtest.OpGetSecret), kv.Count(kvtest.OpUnauthorized))
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
}

func TestTokensAreValidAcrossServersOfOneTenant(t *testing.T) {
	// MSAL's cache is process-wide, so a token from one Server reaches the next.
	a := newServer(t)
	b := newServer(t)
	kv := b.AddVault("myvault")
	kv.Grant(b.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	if a.SystemIdentity() != b.SystemIdentity() {
		t.Fatal("the system identity differs between servers of one tenant")
	}
	url := kv.URL() + "/secrets/s/?api-version=2026-04-01"
	if resp, e := rawGet(t, b, url, kvtest.IssueToken(a, a.SystemIdentity(), "https://vault.azure.net")); resp.StatusCode != 200 {
		t.Errorf("token from another server: %d %+v", resp.StatusCode, e)
	}
	other := kvtest.NewServer(kvtest.WithTenantID("11111111-2222-4333-8444-555555555555"))
	defer other.Close()
	if other.SystemIdentity() == a.SystemIdentity() {
		t.Error("another tenant has the same system identity")
	}
	resp, e := rawGet(t, b, url, kvtest.IssueToken(other, other.SystemIdentity(), "https://vault.azure.net"))
	if resp.StatusCode != 401 || !strings.Contains(e.Error.Message, "AKV10032") {
		t.Errorf("token from another tenant: %d %+v", resp.StatusCode, e)
	}
}

func decodeB64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
