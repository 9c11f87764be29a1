package certificate

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/certparse"
)

// Pool is a CA bundle read from configuration keys (PEM certificates, or a certificate's
// PKCS#12 whose chain is the bundle), following their renewals. An *x509.CertPool cannot
// change in place, so verify peers with VerifyServer or VerifyClient, which read the
// current pool on each handshake:
//
//	// An mTLS server: client certificates verified against the CA bundle in Key Vault.
//	srv.TLSConfig = &tls.Config{
//		GetCertificate:   certs.GetCertificate,
//		ClientAuth:       tls.RequireAnyClientCert, // verified by VerifyClient, against the current pool
//		VerifyConnection: clientCAs.VerifyClient,
//	}
//
//	// A client: the server verified against the CA bundle in Key Vault.
//	cfg := &tls.Config{
//		GetClientCertificate: certs.GetClientCertificate,
//		InsecureSkipVerify:   true, // Go's own check would use a fixed RootCAs; VerifyServer does it
//		VerifyConnection:     rootCAs.VerifyServer,
//	}
//
// Its methods are safe for concurrent use.
type Pool struct {
	f follower[poolSet]
}

type poolSet struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// NewPool reads the CA bundle of keys from p's current configuration (call it after
// [viperkv.Provider.Load]) and follows their renewals until Close.
func NewPool(p *viperkv.Provider, keys ...string) (*Pool, error) {
	cp := &Pool{}
	cp.f = follower[poolSet]{what: "CA bundle", keys: keys, describe: describePool,
		build: func(v *viper.Viper) (*poolSet, error) { return buildPool(v, keys) }}
	if err := cp.f.start(p); err != nil {
		return nil, err
	}
	return cp, nil
}

func buildPool(c *viper.Viper, keys []string) (*poolSet, error) {
	s := &poolSet{pool: x509.NewCertPool()}
	for _, key := range keys {
		v, err := value(c, "CA bundle", key)
		if err != nil {
			return nil, err
		}
		_, certs, err := certparse.ParsePool(v)
		if err != nil {
			return nil, fmt.Errorf("CA bundle %q: %w", key, err)
		}
		for _, cert := range certs {
			s.pool.AddCert(cert)
		}
		s.certs = append(s.certs, certs...)
	}
	return s, nil
}

// CertPool returns the current pool. It is a snapshot: a renewal makes a new one.
func (p *Pool) CertPool() *x509.CertPool { return p.f.cur.Load().pool }

// VerifyServer is tls.Config.VerifyConnection for a client (with InsecureSkipVerify set, so
// that only this check applies): the server's chain must lead to the current pool and name
// the server the client dialed.
func (p *Pool) VerifyServer(cs tls.ConnectionState) error {
	return p.verify(cs, cs.ServerName, x509.ExtKeyUsageServerAuth)
}

// VerifyClient is tls.Config.VerifyConnection for a server (with ClientAuth
// RequireAnyClientCert): the client's chain must lead to the current pool.
func (p *Pool) VerifyClient(cs tls.ConnectionState) error {
	return p.verify(cs, "", x509.ExtKeyUsageClientAuth)
}

func (p *Pool) verify(cs tls.ConnectionState, name string, usage x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("certificate: the peer sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: p.CertPool(), DNSName: name, Intermediates: x509.NewCertPool(),
		KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

// Err says why the latest renewal could not be used (the last good bundle keeps serving),
// or nil.
func (p *Pool) Err() error { return p.f.lastErr() }

// Close stops following renewals; the current pool keeps serving.
func (p *Pool) Close() { p.f.close() }

func describePool(s *poolSet) string {
	var parts []string
	for _, c := range s.certs {
		parts = append(parts, describe(c))
	}
	return strings.Join(parts, "; ")
}
