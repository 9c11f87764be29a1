package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/viperkv/viperkv/kvtest"
)

const (
	vaultName  = "mtlsvault"
	caSecret   = "mtls-ca"      // the CA bundle: the PEM certificate of the issuer's CA, no key
	serverName = "api.internal" // the name the server's certificate carries and the client checks

	// The vault's certificate issuer, which both certificates' policies name. On Azure it
	// is the vault's account with a CA Key Vault integrates with (provider DigiCert or
	// GlobalSign); on the emulator, a test CA stands in for that CA.
	issuerName     = "mtls-issuer"
	issuerProvider = "DigiCert"
	caSubject      = "CN=Contoso mTLS CA, O=Contoso"
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

// pki is the vault's side of the story: its certificate issuer, the CA bundle secret, and
// the server and client certificates, which the vault issues signed by the issuer's CA and
// auto-renews itself at cfg.RenewAt percent of their lifetime, as Key Vault does for a CA
// it integrates with. A renewal makes a new version of the certificate and of its linked
// secret and publishes CertificateNewVersionCreated, which is how the services learn of it.
//
// The CA's key is the CA's (here, the emulator's, which stands in for it): the vault holds
// only the CA's certificate, the bundle the services verify their peers with. Neither
// service could issue a certificate.
type pki struct {
	kv    *kvtest.Vault
	cfg   config
	ca    *x509.Certificate
	track *tracker
	first map[*certSpec]string // the version each certificate starts with
}

// setUpVault gives the vault its certificate issuer, stores the issuer's CA certificate as
// the bundle secret and creates the server and client certificates. On Azure, the same is
//
//	az keyvault certificate issuer create --vault-name mtlsvault --issuer-name mtls-issuer \
//	    --provider-name DigiCert --account-id ... --password ... --organization-id ...
//	az keyvault secret set --vault-name mtlsvault -n mtls-ca -f ca.pem --encoding utf-8
//	az keyvault certificate create --vault-name mtlsvault -n server-tls -p @server-policy.json
//
// with a policy whose issuer.name is mtls-issuer and whose lifetime action is AutoRenew.
func setUpVault(kv *kvtest.Vault, cfg config, track *tracker) (*pki, error) {
	// No CA given: the emulator generates the issuer's CA (on Azure, the CA is DigiCert's
	// own). IssuerCA reads its certificate back, as one downloads a CA's root to trust it.
	kv.AddIssuer(issuerName, nil, nil, kvtest.WithIssuerProvider(issuerProvider), kvtest.WithIssuerCASubject(caSubject))
	ca, ok := kv.IssuerCA(issuerName)
	if !ok {
		return nil, errors.New("the vault has no issuer " + issuerName)
	}
	kv.SetSecret(caSecret, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})),
		kvtest.WithContentType(kvtest.ContentTypePEM))
	pk := &pki{kv: kv, cfg: cfg, ca: ca, track: track, first: map[*certSpec]string{}}
	for _, spec := range []*certSpec{serverCert, clientCert} {
		pk.first[spec] = kv.CreateCertificate(spec.name, kvtest.CertificatePolicy{
			Issuer:      issuerName, // signed by the issuer's CA, and renewed signed by it
			Subject:     spec.subject(),
			DNSNames:    spec.dnsNames,
			KeyType:     "EC",
			ContentType: spec.contentType,
			Validity:    cfg.Validity,
			LifetimeActions: []kvtest.LifetimeAction{
				{Action: kvtest.ActionAutoRenew, LifetimePercentage: cfg.RenewAt},
			},
		})
	}
	return pk, nil
}

// renewalPoll is how often watchRenewals looks at the vault's versions.
const renewalPoll = 5 * time.Millisecond

// watchRenewals follows the vault's renewals of both certificates as it makes them,
// telling the tracker, until each certificate has been renewed cfg.Renewals times. Each
// renewal must come before the version it replaces expires, and be signed by the issuer's
// CA. The channel gets nil once every renewal has come, or the first error.
func (pk *pki) watchRenewals(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, spec := range []*certSpec{serverCert, clientCert} {
		wg.Go(func() { errs[i] = pk.watch(ctx, spec) })
	}
	go func() {
		wg.Wait()
		done <- errors.Join(errs...)
	}()
	return done
}

func (pk *pki) watch(ctx context.Context, spec *certSpec) error {
	cur, ok := pk.kv.Certificate(spec.name, pk.first[spec])
	if !ok {
		return fmt.Errorf("%s: no first version", spec.name)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pk.ca)
	tick := time.NewTicker(renewalPoll)
	defer tick.Stop()
	known := 1
	for n := 1; n <= pk.cfg.Renewals; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		versions := pk.kv.CertificateVersions(spec.name)
		if len(versions) <= known {
			if time.Now().After(cur.NotAfter) {
				return fmt.Errorf("renewal %d of %s: the vault did not renew it before version %d expired", n, spec.name, known)
			}
			continue
		}
		at := time.Now()
		for _, version := range versions[known:] {
			leaf, ok := pk.kv.Certificate(spec.name, version)
			if !ok {
				return fmt.Errorf("renewal %d of %s: version %s is gone", n, spec.name, version)
			}
			usage := x509.ExtKeyUsageServerAuth
			if spec == clientCert {
				usage = x509.ExtKeyUsageClientAuth
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage},
				CurrentTime: leaf.NotBefore}); err != nil {
				return fmt.Errorf("renewal %d of %s is not signed by the issuer's CA: %w", n, spec.name, err)
			}
			if n <= pk.cfg.Renewals {
				pk.track.issued(spec, n, version, serialOf(leaf), at)
			}
			cur = leaf
			n++
		}
		known = len(versions)
	}
	return nil
}

// serialOf is how the example names a certificate: its serial number, in hex.
func serialOf(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
