// Package certtest makes certificates for tests: a CA, leaves it issues (RSA or EC, valid
// when asked), and the encodings Key Vault stores a certificate's secret in (PEM with the
// private key, base64 PKCS#12 without a password).
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Issued is a certificate with its key and the chain above it, leaf first, the root
// included.
type Issued struct {
	Chain []*x509.Certificate // leaf first, then its issuers
	Key   crypto.Signer
}

// Leaf is the issued certificate.
func (c *Issued) Leaf() *x509.Certificate { return c.Chain[0] }

// Options says what to issue.
type Options struct {
	CommonName string
	DNSNames   []string
	NotBefore  time.Time // zero: an hour ago
	NotAfter   time.Time // zero: in a day
	EC         bool      // an ECDSA P-256 key instead of RSA 2048
	IsCA       bool
	Serial     int64 // zero: random
}

// New issues a certificate: self-signed when issuer is nil, signed by issuer otherwise.
func New(issuer *Issued, o Options) *Issued {
	var key crypto.Signer
	var err error
	if o.EC {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		panic(err)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	serial := big.NewInt(o.Serial)
	if o.Serial == 0 {
		serial, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.CommonName},
		DNSNames:     o.DNSNames,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if o.IsCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	parent, signer := tmpl, key
	var above []*x509.Certificate
	if issuer != nil {
		parent, signer, above = issuer.Leaf(), issuer.Key, issuer.Chain
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return &Issued{Chain: append([]*x509.Certificate{leaf}, above...), Key: key}
}

// PEM is the certificate as Key Vault stores it in PEM: the private key (PKCS#8), then
// the leaf and its chain.
func (c *Issued) PEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for _, cert := range c.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return string(out)
}

// CertsPEM is the chain alone in PEM, as a CA bundle.
func (c *Issued) CertsPEM() string {
	var out []byte
	for _, cert := range c.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return string(out)
}

// PKCS12 is the certificate as Key Vault stores it in PKCS#12: base64, no password.
func (c *Issued) PKCS12() string {
	der, err := pkcs12.Passwordless.Encode(c.Key, c.Leaf(), c.Chain[1:], "")
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// KeyPEM is the private key alone in PEM (PKCS#8): the sentinel tests look for.
func (c *Issued) KeyPEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
