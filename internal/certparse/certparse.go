// Package certparse reads a certificate kept in Key Vault, as the secret linked to a Key
// Vault certificate holds it (PKCS#12 in base64, or PEM with the private key), and judges
// whether it may be served: its key matches its leaf, it is valid now, and its chain holds
// together. Errors name what is wrong, never key material.
package certparse

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// The content types Key Vault gives the secret of a certificate (its policy's
// secret_props.contentType).
const (
	ContentTypePKCS12 = "application/x-pkcs12"
	ContentTypePEM    = "application/x-pem-file"
)

// IsCertificate reports whether contentType is one Key Vault gives a certificate's secret.
func IsCertificate(contentType string) bool {
	ct := strings.ToLower(strings.TrimSpace(contentType))
	return ct == ContentTypePKCS12 || ct == ContentTypePEM
}

// ErrNoKey is the error (wrapped) for a certificate without a private key: a CA bundle
// rather than a certificate to serve.
var ErrNoKey = errors.New("no private key")

// ErrPKCS12 is the error (wrapped) for base64 that is not a PKCS#12 file this decoder reads
// (an algorithm it does not know, a password): Key Vault can convert it to PEM itself.
var ErrPKCS12 = errors.New("PKCS#12 does not decode")

// Certificate is a parsed certificate with its private key.
type Certificate struct {
	TLS  tls.Certificate   // ready for tls.Config: the chain (leaf first), the key, Leaf set
	Leaf *x509.Certificate // TLS.Leaf
}

// Parse reads value as contentType says (PEM when it is application/x-pem-file or the
// value starts as PEM does; base64 PKCS#12 otherwise) and checks it at now: see Check.
func Parse(value, contentType string, now time.Time) (*Certificate, error) {
	var (
		chain []*x509.Certificate
		key   crypto.PrivateKey
		err   error
	)
	if strings.EqualFold(strings.TrimSpace(contentType), ContentTypePEM) || strings.HasPrefix(strings.TrimSpace(value), "-----BEGIN") {
		chain, key, err = parsePEM([]byte(value))
	} else {
		chain, key, err = parsePKCS12(value)
	}
	if err != nil {
		return nil, err
	}
	if err := Check(chain, key, now); err != nil {
		return nil, err
	}
	c := &Certificate{Leaf: chain[0]}
	for _, cert := range chain {
		c.TLS.Certificate = append(c.TLS.Certificate, cert.Raw)
	}
	c.TLS.PrivateKey, c.TLS.Leaf = key, chain[0]
	return c, nil
}

// Check judges a chain (leaf first) and its key at now: the key must be the leaf's, the
// leaf valid at now, and each certificate signed by the next one. Its errors describe the
// certificates by subject and serial, never the key.
func Check(chain []*x509.Certificate, key crypto.PrivateKey, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	leaf := chain[0]
	if key == nil {
		return fmt.Errorf("%w for %s", ErrNoKey, Describe(leaf))
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return fmt.Errorf("the private key of %s is of an unsupported type", Describe(leaf))
	}
	if !samePublicKey(signer.Public(), leaf.PublicKey) {
		return fmt.Errorf("the private key does not match the certificate %s", Describe(leaf))
	}
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("the certificate %s is not valid before %s", Describe(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(leaf.NotAfter) {
		return fmt.Errorf("the certificate %s expired at %s", Describe(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("broken chain: %s is not signed by the next certificate, %s: %v", Describe(chain[i]), Describe(chain[i+1]), err)
		}
	}
	return nil
}

// Describe names a certificate by subject, serial and expiry, as events and errors do.
func Describe(c *x509.Certificate) string {
	return fmt.Sprintf("%q (serial %s, not after %s)", c.Subject.String(), c.SerialNumber.Text(16), c.NotAfter.UTC().Format(time.RFC3339))
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch a := a.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return a.(equaler).Equal(b)
	}
	return false
}

// parsePEM reads the certificates (leaf first, as Key Vault writes them) and the one
// private key of a PEM bundle. Blocks of other types are ignored.
func parsePEM(b []byte) ([]*x509.Certificate, crypto.PrivateKey, error) {
	var (
		chain []*x509.Certificate
		key   crypto.PrivateKey
	)
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM block %d: not a certificate: %v", n, err)
			}
			chain = append(chain, c)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if key != nil {
				return nil, nil, errors.New("more than one private key")
			}
			k, err := parseKey(block)
			if err != nil {
				// The parser's message describes the structure, not the key's bytes.
				return nil, nil, fmt.Errorf("PEM block %d: the private key does not parse", n)
			}
			key = k
		}
	}
	if len(chain) == 0 {
		return nil, nil, errors.New("no PEM certificate")
	}
	chain = leafFirst(chain)
	return chain, key, nil
}

func parseKey(block *pem.Block) (crypto.PrivateKey, error) {
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	}
	return x509.ParsePKCS8PrivateKey(block.Bytes)
}

// parsePKCS12 reads base64 PKCS#12 without a password, as Key Vault stores it.
func parsePKCS12(value string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
	if err != nil {
		return nil, nil, errors.New("not base64 PKCS#12 (nor PEM)")
	}
	key, leaf, cas, err := pkcs12.DecodeChain(der, "")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrPKCS12, sanitize(err))
	}
	if leaf == nil {
		return nil, nil, errors.New("PKCS#12 holds no certificate")
	}
	return leafFirst(append([]*x509.Certificate{leaf}, cas...)), key, nil
}

// sanitize keeps the kind of a PKCS#12 error, nothing of the data.
func sanitize(err error) string {
	msg := err.Error()
	if i := strings.IndexAny(msg, "\n"); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

// leafFirst orders a bundle so that each certificate is followed by its issuer when the
// issuer is in the bundle, starting from the one that issued nothing else (the leaf).
// Key Vault writes the leaf first; PKCS#12 files written elsewhere may not.
func leafFirst(certs []*x509.Certificate) []*x509.Certificate {
	var unique []*x509.Certificate // a bundle may repeat a certificate (a chain file appended to a full one)
	for _, c := range certs {
		if !slices.ContainsFunc(unique, func(u *x509.Certificate) bool { return u.Equal(c) }) {
			unique = append(unique, c)
		}
	}
	certs = unique
	if len(certs) < 2 {
		return certs
	}
	issuedSomething := make([]bool, len(certs))
	for i, c := range certs {
		for j, d := range certs {
			if i != j && bytes.Equal(d.RawIssuer, c.RawSubject) && !bytes.Equal(d.RawSubject, d.RawIssuer) {
				issuedSomething[i] = true
			}
		}
	}
	leaf := 0
	for i := range certs {
		if !issuedSomething[i] {
			leaf = i
			break
		}
	}
	out := []*x509.Certificate{certs[leaf]}
	used := map[int]bool{leaf: true}
	for len(out) < len(certs) {
		last, next := out[len(out)-1], -1
		if bytes.Equal(last.RawIssuer, last.RawSubject) {
			break // a root: nothing comes after it
		}
		for j, c := range certs {
			if !used[j] && bytes.Equal(last.RawIssuer, c.RawSubject) {
				next = j
				break
			}
		}
		if next < 0 {
			break
		}
		out = append(out, certs[next])
		used[next] = true
	}
	for j, c := range certs { // certificates that chain to nothing keep their place at the end
		if !used[j] {
			out = append(out, c)
		}
	}
	return out
}

// ParsePool reads a CA bundle: PEM certificates (any private key is ignored), or base64
// PKCS#12 of certificates. It fails when the bundle holds no certificate.
func ParsePool(value string) (*x509.CertPool, []*x509.Certificate, error) {
	var certs []*x509.Certificate
	if strings.HasPrefix(strings.TrimSpace(value), "-----BEGIN") {
		b := []byte(value)
		for {
			var block *pem.Block
			block, b = pem.Decode(b)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("not a certificate: %v", err)
			}
			certs = append(certs, c)
		}
	} else {
		der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			return nil, nil, errors.New("neither PEM nor base64 PKCS#12")
		}
		certs, err = pkcs12.DecodeTrustStore(der, "")
		if err != nil {
			// A certificate with its key, as Key Vault stores one: its chain is the pool.
			_, leaf, cas, err2 := pkcs12.DecodeChain(der, "")
			if err2 != nil {
				return nil, nil, fmt.Errorf("PKCS#12 does not decode: %v", sanitize(err2))
			}
			certs = append([]*x509.Certificate{leaf}, cas...)
		}
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no certificate")
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}
