package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/certtest"
	"github.com/viperkv/viperkv/kvtest"
)

const (
	vaultName  = "mtlsvault"
	caSecret   = "mtls-ca"      // the CA bundle: PEM certificates, no key
	serverName = "api.internal" // the name the server's certificate carries and the client checks
)

// certSpec is one of the two certificates the vault keeps.
type certSpec struct {
	name        string // the Key Vault certificate, and its linked secret
	cn          string
	dnsNames    []string
	contentType string // the linked secret's: the whole certificate with its key
	owner, peer string // the service presenting it and the one verifying it
}

var (
	serverCert = &certSpec{name: "server-tls", cn: serverName, dnsNames: []string{serverName},
		contentType: kvtest.ContentTypePKCS12, owner: "server", peer: "client"}
	clientCert = &certSpec{name: "client-tls", cn: "orders-client",
		contentType: kvtest.ContentTypePEM, owner: "client", peer: "server"}
)

func (s *certSpec) subject() string { return "CN=" + s.cn }

// renewer is the organisation's internal CA and its renewal job. It issues the server and
// the client certificate and, at cfg.RenewAt percent of each one's lifetime, issues the next
// and imports it into the vault, as a job does for a CA Key Vault does not integrate with.
// (Key Vault auto-renews certificates of the issuer "Self", DigiCert and GlobalSign itself;
// the emulator renews "Self" only.) An import makes a new version of the certificate and of
// its linked secret and publishes CertificateNewVersionCreated, as an auto-renewal does, so
// the services cannot tell the two apart.
//
// The CA's key stays here: the vault holds only the CA's certificate, the bundle the services
// verify their peers with. Neither service could issue a certificate.
type renewer struct {
	kv    *kvtest.Vault
	cfg   config
	ca    *certtest.Issued
	track *tracker
	first map[*certSpec]*certtest.Issued
}

// newRenewer makes the CA, stores its certificate as the bundle secret and imports the first
// server and client certificates.
func newRenewer(kv *kvtest.Vault, cfg config, track *tracker) (*renewer, error) {
	ca := certtest.New(nil, certtest.Options{CommonName: "Contoso internal mTLS CA", IsCA: true, EC: true,
		NotAfter: time.Now().Add(24*time.Hour + time.Duration(cfg.Renewals+1)*cfg.Validity)})
	kv.SetSecret(caSecret, ca.CertsPEM(), kvtest.WithContentType(kvtest.ContentTypePEM))
	rn := &renewer{kv: kv, cfg: cfg, ca: ca, track: track, first: map[*certSpec]*certtest.Issued{}}
	for _, spec := range []*certSpec{serverCert, clientCert} {
		c, _, err := rn.issue(spec)
		if err != nil {
			return nil, err
		}
		rn.first[spec] = c
	}
	return rn, nil
}

// issue issues a certificate for spec, valid from now for cfg.Validity, and imports it as the
// certificate's next version. It returns the certificate and the version.
func (rn *renewer) issue(spec *certSpec) (*certtest.Issued, string, error) {
	nbf := time.Now().Truncate(time.Second) // X.509 times have whole seconds
	c := certtest.New(rn.ca, certtest.Options{CommonName: spec.cn, DNSNames: spec.dnsNames, EC: true,
		NotBefore: nbf, NotAfter: nbf.Add(rn.cfg.Validity)})
	policy := kvtest.CertificatePolicy{
		ContentType: spec.contentType,
		// For a CA Key Vault does not integrate with, the policy's lifetime action can only
		// remind the contacts at the renewal point; renewing is this job's.
		LifetimeActions: []kvtest.LifetimeAction{{Action: kvtest.ActionEmailContacts, LifetimePercentage: rn.cfg.RenewAt}},
	}
	version, err := rn.kv.ImportCertificate(spec.name, []byte(c.PEM()), "", policy)
	if err != nil {
		return nil, "", err
	}
	return c, version, nil
}

// start renews each certificate cfg.Renewals times, each when its predecessor reaches
// cfg.RenewAt percent of its lifetime, telling the tracker. The channel gets nil once every
// renewal is imported, or the first error.
func (rn *renewer) start(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, spec := range []*certSpec{serverCert, clientCert} {
		wg.Go(func() { errs[i] = rn.renewLoop(ctx, spec) })
	}
	go func() {
		wg.Wait()
		done <- errors.Join(errs...)
	}()
	return done
}

func (rn *renewer) renewLoop(ctx context.Context, spec *certSpec) error {
	cur := rn.first[spec]
	for n := 1; n <= rn.cfg.Renewals; n++ {
		due := time.NewTimer(time.Until(cur.Leaf().NotBefore.Add(rn.cfg.renewEvery())))
		select {
		case <-ctx.Done():
			due.Stop()
			return ctx.Err()
		case <-due.C:
		}
		at := time.Now()
		c, version, err := rn.issue(spec)
		if err != nil {
			return fmt.Errorf("renewal %d of %s: %w", n, spec.name, err)
		}
		rn.track.issued(spec, n, version, serialOf(c.Leaf()), at)
		cur = c
	}
	return nil
}

// serialOf is how the example names a certificate: its serial number, in hex.
func serialOf(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
