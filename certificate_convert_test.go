package viperkv_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// TestCertificateConvertedByTheVault: a certificate's PKCS#12 that this side cannot decode
// (here a vault's answer forged to hold one) is asked for again as PEM, which Key Vault
// converts itself (outContentType); the PEM is judged and served. Certificates it can read
// cost no second request.
func TestCertificateConvertedByTheVault(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	version := kv.CreateCertificate("web-tls", kvtest.CertificatePolicy{Subject: "CN=web.example", KeyType: "EC"})
	kv.CreateCertificate("api-tls", kvtest.CertificatePolicy{Subject: "CN=api.example"})
	junk := make([]byte, 600)
	_, _ = rand.Read(junk)
	kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Times: 1, Body: fmt.Sprintf(
		`{"value":%q,"id":"https://myvault.vault.azure.net/secrets/web-tls/%s","contentType":"application/x-pkcs12","managed":true,
		"attributes":{"enabled":true,"created":1700000000,"updated":1700000000}}`, base64.StdEncoding.EncodeToString(junk), version)})
	p, err := load(t, srv, yamlViper(t, "web: \"@KeyVault(VaultName=myvault;SecretName=web-tls)\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	st := statusOf(t, p, "web")
	if st.Status != viperkv.StatusResolved || st.Version != version || st.Certificate == nil || st.Certificate.Subject != "CN=web.example" ||
		!strings.HasPrefix(p.GetString("web"), "-----BEGIN") {
		t.Fatalf("web: %s %q, version %s, certificate %v", st.Status, st.Reason, st.Version, st.Certificate)
	}
	if n := kv.Count(kvtest.OpGetSecret); n != 2 {
		t.Errorf("%d GETs, want 2 (the forged one, then outContentType)", n)
	}

	// A PKCS#12 this side reads: one GET, served as Key Vault stores it.
	before := kv.Count(kvtest.OpGetSecret)
	p2, err := load(t, srv, yamlViper(t, "api: \"@KeyVault(VaultName=myvault;SecretName=api-tls)\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if n := kv.Count(kvtest.OpGetSecret) - before; n != 1 || strings.HasPrefix(p2.GetString("api"), "-----BEGIN") || statusOf(t, p2, "api").ContentType != "application/x-pkcs12" {
		t.Errorf("a readable PKCS#12: %d GETs, content type %s", n, statusOf(t, p2, "api").ContentType)
	}
}
