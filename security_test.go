package viperkv_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
)

// staticCredential hands out a fixed token, so that if any request were made, the attacker
// would receive a bearer token: exactly what the host check must prevent.
type staticCredential struct{}

func (staticCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "bearer-token-for-the-vault", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// References to hosts outside the cloud's vault domain are refused before any request. The
// transport sends every connection, whatever the host, to a loopback "attacker": so a
// request that slipped past the check would be counted there.
func TestDisallowedHostsReceiveNothing(t *testing.T) {
	var hits atomic.Int64
	attacker := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer attacker.Close()
	addr := attacker.Listener.Addr().String()
	everythingToAttacker := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}

	refs := map[string]viperkv.Status{
		"https://" + addr + "/secrets/x/":                          viperkv.StatusHostNotAllowed,
		"https://127.0.0.1/secrets/x/":                             viperkv.StatusHostNotAllowed,
		"https://[::1]/secrets/x/":                                 viperkv.StatusHostNotAllowed,
		"https://2130706433/secrets/x/":                            viperkv.StatusHostNotAllowed,
		"https://localhost/secrets/x/":                             viperkv.StatusHostNotAllowed,
		"https://evil.test/secrets/x/":                             viperkv.StatusHostNotAllowed,
		"https://myvault.vault.azure.net.evil.test/secrets/x/":     viperkv.StatusHostNotAllowed,
		"https://myvaultvault.azure.net/secrets/x/":                viperkv.StatusHostNotAllowed,
		"https://vault.azure.net/secrets/x/":                       viperkv.StatusHostNotAllowed,
		"https://a.b.vault.azure.net/secrets/x/":                   viperkv.StatusHostNotAllowed,
		"https://myvault.vault.azure.net:8443/secrets/x/":          viperkv.StatusHostNotAllowed,
		"https://myvault.vault.azure.net@evil.test/secrets/x/":     viperkv.StatusHostNotAllowed,
		"https://user@myvault.vault.azure.net/secrets/x/":          viperkv.StatusHostNotAllowed,
		"http://myvault.vault.azure.net/secrets/x/":                viperkv.StatusHostNotAllowed,
		"https://myvault.vault.azure.net/secrets/x/?api-version=1": viperkv.StatusInvalidSyntax,
		"https://myvault.vault.azure.net/secrets/x/#frag":          viperkv.StatusInvalidSyntax,
		"https://myvault.vault.azure.net/secrets/../keys/x":        viperkv.StatusInvalidSyntax,
		"https://myvault.vault.azure.net/secrets/x/../../evil":     viperkv.StatusInvalidSyntax,
		"https://myvault.vault.azure.net/secrets/%2e%2e/x":         viperkv.StatusInvalidSyntax,
		"https://myvault.vault.azure.net.:443/secrets/x/":          viperkv.StatusHostNotAllowed,
	}
	v := viper.New()
	keys := map[string]string{}
	i := 0
	for uri := range refs {
		key := "ref" + string(rune('a'+i))
		keys[key] = uri
		v.Set(key, "@KeyVault(SecretUri="+uri+")")
		i++
	}
	p, err := viperkv.New(v, viperkv.WithCredential(staticCredential{}), viperkv.WithTransport(everythingToAttacker))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(context.Background()); err == nil {
		t.Fatal("Load accepted references to foreign hosts")
	}
	got := map[string]viperkv.Status{}
	for _, st := range p.Status() {
		got[st.Key] = st.Status
	}
	for key, uri := range keys {
		if got[key] != refs[uri] {
			t.Errorf("%s: status %q, want %q", uri, got[key], refs[uri])
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the attacker received %d requests", n)
	}

	// Control: the same transport does reach the attacker for an allowed host, so a zero
	// above means the check held, not that the transport was broken.
	v = viper.New()
	v.Set("k", "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/x/)")
	p, _ = viperkv.New(v, viperkv.WithCredential(staticCredential{}), viperkv.WithTransport(everythingToAttacker),
		viperkv.WithFetchTimeout(5*time.Second))
	_ = p.Load(context.Background())
	if hits.Load() == 0 {
		t.Fatal("control request did not reach the loopback server")
	}
}
