// Package certificate serves TLS certificates kept in Key Vault, read through a viperkv
// Provider's configuration keys, to Go's TLS stack, and follows their renewals: a server's
// certificate (tls.Config.GetCertificate), an mTLS client's (GetClientCertificate), and a
// CA bundle to verify peers with (Pool), each always the newest good one.
//
// A configuration key names the secret Key Vault keeps with every certificate (PKCS#12 or
// PEM, with the private key, as the certificate's policy says):
//
//	server:
//	  tls: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/web-tls/)"
//
// The Provider never serves a certificate worse than the one it holds (one that does not
// parse, whose key is not its leaf's, that is not valid yet or any more, whose chain is
// broken): it keeps the last good one and reports StatusCertificateInvalid. This package
// swaps in each good renewal the Provider announces in one atomic step, so a handshake
// reads the current certificate without a lock, and connections already open keep theirs.
package certificate

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/certparse"
)

// Certificates serves the certificates of one or more configuration keys: the first key's
// to clients, and to servers the first whose certificate names the server name the client
// asked for (SNI). Its methods are safe for concurrent use.
type Certificates struct {
	f follower[certSet]
}

type certSet struct {
	certs []*tls.Certificate // in the order of the keys
}

// New reads the certificates of keys from p's current configuration (call it after
// [viperkv.Provider.Load]) and follows their renewals until Close. Each key must hold a
// certificate with its private key; otherwise New says which key and why.
func New(p *viperkv.Provider, keys ...string) (*Certificates, error) {
	c := &Certificates{}
	c.f = follower[certSet]{what: "certificate", keys: keys, describe: describeCerts,
		build: func(v *viper.Viper) (*certSet, error) { return buildCerts(v, keys) }}
	if err := c.f.start(p); err != nil {
		return nil, err
	}
	return c, nil
}

// buildCerts parses the certificate of each key in c: all of them, or an error naming the
// key that failed. The Provider already judged certificates whose content type says so;
// this also catches a key whose secret is stored without that content type.
func buildCerts(c *viper.Viper, keys []string) (*certSet, error) {
	s := &certSet{}
	now := time.Now()
	for _, key := range keys {
		v, err := value(c, "certificate", key)
		if err != nil {
			return nil, err
		}
		cert, err := certparse.Parse(v, "", now)
		if err != nil {
			return nil, fmt.Errorf("certificate %q: %w", key, err)
		}
		s.certs = append(s.certs, &cert.TLS)
	}
	return s, nil
}

// GetCertificate is tls.Config.GetCertificate: the certificate of the first key whose leaf
// names hello's server name, or the first key's.
func (c *Certificates) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := c.f.cur.Load()
	if len(s.certs) == 1 || hello == nil || hello.ServerName == "" {
		return s.certs[0], nil
	}
	for _, cert := range s.certs {
		if cert.Leaf.VerifyHostname(hello.ServerName) == nil {
			return cert, nil
		}
	}
	return s.certs[0], nil
}

// GetClientCertificate is tls.Config.GetClientCertificate: the first key's certificate.
func (c *Certificates) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.f.cur.Load().certs[0], nil
}

// Certificate returns key's current certificate, or nil if key is not one of New's.
func (c *Certificates) Certificate(key string) *tls.Certificate {
	s := c.f.cur.Load()
	for i, k := range c.f.keys {
		if strings.EqualFold(k, key) {
			return s.certs[i]
		}
	}
	return nil
}

// Err says why the latest renewal could not be used (the last good certificate keeps
// serving), or nil.
func (c *Certificates) Err() error { return c.f.lastErr() }

// Close stops following renewals; the current certificates keep serving.
func (c *Certificates) Close() { c.f.close() }

func describeCerts(s *certSet) string {
	var parts []string
	for _, c := range s.certs {
		parts = append(parts, describe(c.Leaf))
	}
	return strings.Join(parts, "; ")
}

// describe names a certificate in log lines: subject, serial, expiry and days left.
func describe(c *x509.Certificate) string {
	days := int(math.Floor(time.Until(c.NotAfter).Hours() / 24))
	return fmt.Sprintf("%s, %d days left", certparse.Describe(c), days)
}
