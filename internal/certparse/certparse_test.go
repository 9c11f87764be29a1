package certparse_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/certtest"
)

func TestParseGoodCertificates(t *testing.T) {
	root := certtest.New(nil, certtest.Options{CommonName: "root", IsCA: true})
	inter := certtest.New(root, certtest.Options{CommonName: "intermediate", IsCA: true})
	for _, ec := range []bool{false, true} {
		leaf := certtest.New(inter, certtest.Options{CommonName: "server", DNSNames: []string{"a.example"}, EC: ec})
		for name, tc := range map[string]struct{ value, ct string }{
			"PEM":                  {leaf.PEM(), certparse.ContentTypePEM},
			"PEM without its type": {leaf.PEM(), ""},
			"PKCS#12":              {leaf.PKCS12(), certparse.ContentTypePKCS12},
			"PKCS#12 without type": {leaf.PKCS12(), ""},
			"PEM, chain first":     {inter.CertsPEM() + leaf.PEM(), certparse.ContentTypePEM},
		} {
			c, err := certparse.Parse(tc.value, tc.ct, time.Now())
			if err != nil {
				t.Errorf("%s (EC %v): %v", name, ec, err)
				continue
			}
			if c.Leaf.Subject.CommonName != "server" || len(c.TLS.Certificate) != 3 || c.TLS.Leaf != c.Leaf || c.TLS.PrivateKey == nil {
				t.Errorf("%s (EC %v): leaf %q, chain of %d", name, ec, c.Leaf.Subject.CommonName, len(c.TLS.Certificate))
			}
		}
	}
}

// TestParseRefusals: each way a certificate can be worse than none is refused, with a
// reason that names the certificate and never holds the key.
func TestParseRefusals(t *testing.T) {
	root := certtest.New(nil, certtest.Options{CommonName: "root", IsCA: true})
	good := certtest.New(root, certtest.Options{CommonName: "good"})
	other := certtest.New(root, certtest.Options{CommonName: "other"})
	stranger := certtest.New(nil, certtest.Options{CommonName: "stranger", IsCA: true})
	future := certtest.New(root, certtest.Options{CommonName: "future", NotBefore: time.Now().Add(time.Hour)})
	expired := certtest.New(root, certtest.Options{CommonName: "expired", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	mismatch := &certtest.Issued{Chain: good.Chain, Key: other.Key}
	broken := &certtest.Issued{Chain: []*x509.Certificate{good.Leaf(), stranger.Leaf()}, Key: good.Key}
	for name, tc := range map[string]struct {
		value, ct, want string
		keys            []string
	}{
		"garbage":            {"not a certificate at all", certparse.ContentTypePKCS12, "not base64 PKCS#12", nil},
		"base64 of garbage":  {"aGVsbG8=", certparse.ContentTypePKCS12, "PKCS#12 does not decode", nil},
		"PEM without a key":  {good.CertsPEM(), certparse.ContentTypePEM, `no private key for "CN=good"`, nil},
		"PEM without a cert": {good.KeyPEM(), certparse.ContentTypePEM, "no PEM certificate", []string{good.KeyPEM()}},
		"key of another":     {mismatch.PEM(), certparse.ContentTypePEM, `the private key does not match the certificate "CN=good"`, []string{other.KeyPEM()}},
		"not yet valid":      {future.PEM(), certparse.ContentTypePEM, `the certificate "CN=future"`, []string{future.KeyPEM()}},
		"expired":            {expired.PKCS12(), certparse.ContentTypePKCS12, `the certificate "CN=expired"`, []string{expired.KeyPEM()}},
		"broken chain":       {broken.PEM(), certparse.ContentTypePEM, `broken chain: "CN=good"`, []string{good.KeyPEM()}},
		"two keys":           {good.PEM() + other.KeyPEM(), certparse.ContentTypePEM, "more than one private key", []string{good.KeyPEM(), other.KeyPEM()}},
	} {
		_, err := certparse.Parse(tc.value, tc.ct, time.Now())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
			continue
		}
		for _, k := range tc.keys {
			body := strings.Join(strings.Split(k, "\n")[1:3], "")
			if strings.Contains(err.Error(), body) {
				t.Errorf("%s: the error shows key material", name)
			}
		}
	}
}

func TestParsePool(t *testing.T) {
	root := certtest.New(nil, certtest.Options{CommonName: "root", IsCA: true})
	other := certtest.New(nil, certtest.Options{CommonName: "other root", IsCA: true})
	for name, value := range map[string]string{"PEM": root.CertsPEM() + other.CertsPEM(), "PEM with a key": root.PEM(), "PKCS#12": root.PKCS12()} {
		pool, certs, err := certparse.ParsePool(value)
		if err != nil || pool == nil || len(certs) == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, err := certparse.ParsePool("-----BEGIN NOTHING-----\n-----END NOTHING-----\n"); err == nil {
		t.Error("a bundle without certificates parsed")
	}
}
