package kvtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Key Vault certificates: a certificate is an X.509 certificate with its private key, a
// management policy and versions. Every version has a linked secret of the same name and
// version (the "addressable secret"), marked managed, holding the certificate and its key
// in the policy's content type; GET /secrets/{name} reads it, which is how applications
// get a certificate's private key. The emulator issues self-signed certificates (the issuer
// "Self") and certificates signed by a certificate issuer of the vault, a test CA standing
// in for the certificate authorities Key Vault integrates with (certificates_issuers.go).

// The linked secret's content types, a certificate policy's secret_props.contentType.
const (
	// ContentTypePKCS12 makes the linked secret a base64 PKCS#12 (PFX) file without a
	// password: the private key, the certificate and its chain. It is Key Vault's default.
	ContentTypePKCS12 = "application/x-pkcs12"
	// ContentTypePEM makes the linked secret PEM text: the private key (PKCS#8, "PRIVATE
	// KEY"), then the certificate, then its chain.
	ContentTypePEM = "application/x-pem-file"
)

// The actions of a certificate policy's lifetime action (action_type).
const (
	// ActionAutoRenew makes Key Vault renew the certificate when the trigger is reached: a
	// new version, with a new key unless the policy reuses keys.
	ActionAutoRenew = "AutoRenew"
	// ActionEmailContacts makes Key Vault email the vault's certificate contacts. The
	// emulator has no contacts: the action is accepted and does nothing.
	ActionEmailContacts = "EmailContacts"
)

// Key Vault's certificate event types, published like the secret events (see
// [Vault.Subscribe]) to subscriptions that list them in [EventSubscription.EventTypes].
const (
	// EventCertificateNewVersionCreated is published for every new version of a
	// certificate: created, imported or renewed.
	EventCertificateNewVersionCreated = "Microsoft.KeyVault.CertificateNewVersionCreated"
	// EventCertificateNearExpiry is published 30 days before the current version expires
	// (at once when that moment has passed but the expiry has not).
	EventCertificateNearExpiry = "Microsoft.KeyVault.CertificateNearExpiry"
	// EventCertificateExpired is published when the current version expires.
	EventCertificateExpired = "Microsoft.KeyVault.CertificateExpired"
)

// certificateEventTypes are the certificate events the vaults publish.
func certificateEventTypes() []string {
	return []string{EventCertificateNewVersionCreated, EventCertificateNearExpiry, EventCertificateExpired}
}

// DefaultCertificateIssueDelay is how long a certificate created over the wire (POST
// /certificates/{name}/create) stays "inProgress" before its pending operation completes,
// unless [WithCertificateIssueDelay] says otherwise.
const DefaultCertificateIssueDelay = time.Second

// WithCertificateIssueDelay sets how long POST /certificates/{name}/create takes to issue
// the certificate (default [DefaultCertificateIssueDelay]): the request answers 202 with
// the pending operation "inProgress" at once, and GET /certificates/{name}/pending shows
// "completed" once d has passed. 0 completes the operation within the request (the 202
// then says "completed"). [Vault.CreateCertificate] issues at once whatever the delay.
func WithCertificateIssueDelay(d time.Duration) Option {
	return func(c *config) { c.certIssueDelay, c.certIssueDelaySet = max(d, 0), true }
}

// certIssueDelay is the server's issuance delay.
func (s *Server) certIssueDelay() time.Duration {
	if s.cfg.certIssueDelaySet {
		return s.cfg.certIssueDelay
	}
	return DefaultCertificateIssueDelay
}

// CertificatePolicy is a certificate's management policy for [Vault.CreateCertificate]
// and [Vault.ImportCertificate], the fields of Key Vault's policy (x509_props, key_props,
// secret_props, lifetime_actions, issuer). Zero fields take Key Vault's defaults.
type CertificatePolicy struct {
	// Issuer is the policy's issuer.name: "" or "Self" (default) for a self-signed
	// certificate, or the name of a certificate issuer of the vault ([Vault.AddIssuer], or
	// PUT /certificates/issuers/{name}), whose CA signs the certificate and its renewals.
	// [Vault.ImportCertificate] ignores it: an imported certificate's issuer is "Unknown".
	Issuer string
	// Subject is the X.500 distinguished name, for example "CN=api.example.com, O=Contoso"
	// (default "CN=<certificate name>"). Attributes: CN, O, OU, L, S or ST, C, STREET,
	// POSTALCODE, SERIALNUMBER, DC, E, UID, G, SN, T.
	Subject string
	// DNSNames, Emails and UPNs are the subject alternative names (x509_props.sans).
	DNSNames, Emails, UPNs []string
	// KeyType is "RSA" (default) or "EC".
	KeyType string
	// KeySize is the RSA key size: 2048 (default), 3072 or 4096.
	KeySize int
	// Curve is the EC curve: "P-256" (default), "P-384" or "P-521".
	Curve string
	// ReuseKey makes renewals keep the key pair (key_props.reuse_key).
	ReuseKey bool
	// NotExportable makes the key not exportable (key_props.exportable false): the linked
	// secret then holds the certificate without its private key.
	NotExportable bool
	// ContentType is the linked secret's: [ContentTypePKCS12] (default) or
	// [ContentTypePEM].
	ContentType string
	// ValidityMonths is the certificate's validity in months, 1-1200 (default 12). As on
	// Key Vault, a certificate is valid from 10 minutes before it was issued.
	ValidityMonths int
	// Validity, when positive, overrides ValidityMonths with a validity Key Vault cannot
	// express, for tests of renewals and expiry: at least 2 seconds, from the moment the
	// certificate is issued (not backdated). The policy then reports validity_months as
	// the whole months it covers, at least 1.
	Validity time.Duration
	// LifetimeActions are the lifetime actions. nil means Key Vault's default, AutoRenew at
	// 80% of the lifetime; an empty, non-nil slice means none.
	LifetimeActions []LifetimeAction
}

// LifetimeAction is one of a certificate policy's lifetime actions: Action when the
// certificate reaches LifetimePercentage of its lifetime (1-99) or DaysBeforeExpiry days
// before it expires; exactly one of the two is set.
type LifetimeAction struct {
	// Action is [ActionAutoRenew] or [ActionEmailContacts].
	Action string
	// LifetimePercentage is the trigger as a percentage of the lifetime, 1-99.
	LifetimePercentage int
	// DaysBeforeExpiry is the trigger in days before expiry, at least 1 and at most 27
	// days per month of validity (less than the validity with a [CertificatePolicy.Validity]).
	DaysBeforeExpiry int
}

// CertificateOption sets a property of a certificate version made by
// [Vault.CreateCertificate] or [Vault.ImportCertificate].
type CertificateOption func(*certOptions)

type certOptions struct {
	tags     map[string]string
	disabled bool
}

// WithCertificateTags sets the version's tags.
func WithCertificateTags(tags map[string]string) CertificateOption {
	return func(o *certOptions) { o.tags = maps.Clone(tags) }
}

// WithCertificateEnabled sets whether the version is enabled (default true). The linked
// secret of a disabled version answers 403 SecretDisabled, as a disabled secret does.
func WithCertificateEnabled(enabled bool) CertificateOption {
	return func(o *certOptions) { o.disabled = !enabled }
}

// certPolicy is a certificate's policy as stored: what the client gave, with defaults.
type certPolicy struct {
	issuer           string // "Self", "Unknown" or a certificate issuer's name, as given
	certType         string // issuer.cty
	certTransparency *bool  // issuer.cert_transparency

	kty        string // RSA, RSA-HSM, EC or EC-HSM
	keySize    int    // RSA bits, or the curve's size for EC
	curve      string // EC only
	exportable bool
	reuseKey   bool

	contentType string

	subject        string
	sans           sansJSON
	sansGiven      bool // x509_props.sans was given: echo it even when empty
	ekus           []string
	keyUsage       []string
	validityMonths int
	validity       time.Duration // Go API and seed only; 0 = validityMonths

	actions []lifetimeAction

	enabled          bool
	created, updated time.Time
}

type lifetimeAction struct {
	action string
	pct    int
	days   int
}

// clone copies p, so a renewal issues with the policy of its moment.
func (p *certPolicy) clone() *certPolicy {
	c := *p
	c.sans = sansJSON{DNSNames: slices.Clone(p.sans.DNSNames), Emails: slices.Clone(p.sans.Emails),
		UPNs: slices.Clone(p.sans.UPNs), IPAddresses: slices.Clone(p.sans.IPAddresses), URIs: slices.Clone(p.sans.URIs)}
	c.ekus, c.keyUsage, c.actions = slices.Clone(p.ekus), slices.Clone(p.keyUsage), slices.Clone(p.actions)
	return &c
}

// selfIssued reports whether the policy's certificates are self-signed.
func (p *certPolicy) selfIssued() bool { return strings.EqualFold(p.issuer, "Self") }

// unknownIssuer reports whether the policy's issuer is "Unknown": its certificates are
// imported (or merged), never issued by Key Vault.
func (p *certPolicy) unknownIssuer() bool { return strings.EqualFold(p.issuer, "Unknown") }

// isEC reports whether the policy's keys are elliptic curve keys.
func (p *certPolicy) isEC() bool { return strings.HasPrefix(strings.ToUpper(p.kty), "EC") }

// autoRenewAt returns when the policy renews a version valid from nbf to exp, if it
// renews at all.
func (p *certPolicy) autoRenewAt(nbf, exp time.Time) (time.Time, bool) {
	if p.unknownIssuer() {
		return time.Time{}, false
	}
	for _, a := range p.actions {
		if a.action != ActionAutoRenew {
			continue
		}
		if a.pct > 0 {
			return nbf.Add(time.Duration(float64(exp.Sub(nbf)) * float64(a.pct) / 100)), true
		}
		return exp.Add(-time.Duration(a.days) * 24 * time.Hour), true
	}
	return time.Time{}, false
}

// Defaults of Key Vault's self-signed policy.
const (
	defaultValidityMonths = 12
	defaultRenewPercent   = 80
	maxValidityMonths     = 1200
	// certBackdate is how long before issuance Key Vault's certificates become valid.
	certBackdate = 10 * time.Minute
	// minValidity is the shortest Validity a policy may set.
	minValidity = 2 * time.Second
)

var (
	oidServerAuth = "1.3.6.1.5.5.7.3.1"
	oidClientAuth = "1.3.6.1.5.5.7.3.2"
)

// keyUsageBits maps Key Vault's key_usage names to x509's bits.
var keyUsageBits = map[string]x509.KeyUsage{
	"digitalSignature": x509.KeyUsageDigitalSignature,
	"nonRepudiation":   x509.KeyUsageContentCommitment,
	"keyEncipherment":  x509.KeyUsageKeyEncipherment,
	"dataEncipherment": x509.KeyUsageDataEncipherment,
	"keyAgreement":     x509.KeyUsageKeyAgreement,
	"keyCertSign":      x509.KeyUsageCertSign,
	"cRLSign":          x509.KeyUsageCRLSign,
	"encipherOnly":     x509.KeyUsageEncipherOnly,
	"decipherOnly":     x509.KeyUsageDecipherOnly,
}

// extKeyUsages maps well-known EKU OIDs to x509's constants.
var extKeyUsages = map[string]x509.ExtKeyUsage{
	oidServerAuth:            x509.ExtKeyUsageServerAuth,
	oidClientAuth:            x509.ExtKeyUsageClientAuth,
	"1.3.6.1.5.5.7.3.3":      x509.ExtKeyUsageCodeSigning,
	"1.3.6.1.5.5.7.3.4":      x509.ExtKeyUsageEmailProtection,
	"1.3.6.1.5.5.7.3.8":      x509.ExtKeyUsageTimeStamping,
	"1.3.6.1.5.5.7.3.9":      x509.ExtKeyUsageOCSPSigning,
	"2.5.29.37.0":            x509.ExtKeyUsageAny,
	"1.3.6.1.4.1.311.10.3.3": x509.ExtKeyUsageMicrosoftServerGatedCrypto,
	"2.16.840.1.113730.4.1":  x509.ExtKeyUsageNetscapeServerGatedCrypto,
	"1.3.6.1.4.1.311.2.1.22": x509.ExtKeyUsageMicrosoftCommercialCodeSigning,
	"1.3.6.1.4.1.311.61.1.1": x509.ExtKeyUsageMicrosoftKernelCodeSigning,
	"1.3.6.1.5.5.7.3.5":      x509.ExtKeyUsageIPSECEndSystem,
	"1.3.6.1.5.5.7.3.6":      x509.ExtKeyUsageIPSECTunnel,
	"1.3.6.1.5.5.7.3.7":      x509.ExtKeyUsageIPSECUser,
}

// dnAttributes are the attribute types a subject may name, by their short names.
var dnAttributes = map[string]asn1.ObjectIdentifier{
	"CN": {2, 5, 4, 3}, "SN": {2, 5, 4, 4}, "SERIALNUMBER": {2, 5, 4, 5}, "C": {2, 5, 4, 6},
	"L": {2, 5, 4, 7}, "S": {2, 5, 4, 8}, "ST": {2, 5, 4, 8}, "STREET": {2, 5, 4, 9},
	"O": {2, 5, 4, 10}, "OU": {2, 5, 4, 11}, "T": {2, 5, 4, 12}, "TITLE": {2, 5, 4, 12},
	"POSTALCODE": {2, 5, 4, 17}, "G": {2, 5, 4, 42}, "GIVENNAME": {2, 5, 4, 42},
	"DC": {0, 9, 2342, 19200300, 100, 1, 25}, "UID": {0, 9, 2342, 19200300, 100, 1, 1},
	"E": {1, 2, 840, 113549, 1, 9, 1}, "EMAIL": {1, 2, 840, 113549, 1, 9, 1},
	"EMAILADDRESS": {1, 2, 840, 113549, 1, 9, 1},
}

// dnShortNames name attribute types when a subject is written out (imports).
var dnShortNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "SERIALNUMBER", "2.5.4.6": "C", "2.5.4.7": "L",
	"2.5.4.8": "S", "2.5.4.9": "STREET", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "T",
	"2.5.4.17": "POSTALCODE", "2.5.4.42": "G", "0.9.2342.19200300.100.1.25": "DC",
	"0.9.2342.19200300.100.1.1": "UID", "1.2.840.113549.1.9.1": "E",
}

// parseSubject turns "CN=a, O=b" (commas, semicolons or plus signs between attributes,
// values optionally quoted, backslash escapes) into a DER RDN sequence, in the order
// given.
func parseSubject(s string) ([]byte, error) {
	var rdns pkix.RDNSequence
	var cur strings.Builder
	var parts []string
	quoted, escaped := false, false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			quoted = !quoted
		case !quoted && (r == ',' || r == ';' || r == '+'):
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if quoted || escaped {
		return nil, errors.New("unbalanced quote or escape")
	}
	parts = append(parts, cur.String())
	for _, p := range parts {
		k, val, ok := strings.Cut(p, "=")
		k, val = strings.ToUpper(strings.TrimSpace(k)), strings.TrimSpace(val)
		oid, known := dnAttributes[k]
		if !ok || !known || val == "" {
			return nil, errors.New("not an X.500 distinguished name")
		}
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: val}})
	}
	if len(rdns) == 0 {
		return nil, errors.New("empty subject")
	}
	return asn1.Marshal(rdns)
}

// formatSubject writes a certificate's subject in the order it holds its attributes, as
// Key Vault reports an imported certificate's subject.
func formatSubject(raw []byte) string {
	var rdns pkix.RDNSequence
	if _, err := asn1.Unmarshal(raw, &rdns); err != nil {
		return ""
	}
	var out []string
	for _, set := range rdns {
		for _, atv := range set {
			name := dnShortNames[atv.Type.String()]
			if name == "" {
				name = atv.Type.String()
			}
			out = append(out, name+"="+fmt.Sprint(atv.Value))
		}
	}
	return strings.Join(out, ", ")
}

// oidUPN is the otherName type of a user principal name SAN.
var oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}

// oidSAN is the subject alternative name extension.
var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// sanExtension builds the subjectAltName extension: DNS names, emails, UPNs (otherName),
// IP addresses and URIs. Go's x509 cannot write UPNs, so the extension is built here.
func sanExtension(sans sansJSON, critical bool) (pkix.Extension, error) {
	var names []asn1.RawValue
	ctx := func(tag int, b []byte) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, Bytes: b}
	}
	for _, e := range sans.Emails {
		names = append(names, ctx(1, []byte(e)))
	}
	for _, d := range sans.DNSNames {
		names = append(names, ctx(2, []byte(d)))
	}
	for _, u := range sans.URIs {
		names = append(names, ctx(6, []byte(u)))
	}
	for _, s := range sans.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return pkix.Extension{}, fmt.Errorf("invalid IP address SAN")
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		names = append(names, ctx(7, ip))
	}
	for _, upn := range sans.UPNs {
		oid, err := asn1.Marshal(oidUPN)
		if err != nil {
			return pkix.Extension{}, err
		}
		val, err := asn1.MarshalWithParams(upn, "utf8")
		if err != nil {
			return pkix.Extension{}, err
		}
		inner, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: val})
		if err != nil {
			return pkix.Extension{}, err
		}
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, inner...)})
	}
	b, err := asn1.Marshal(names)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidSAN, Critical: critical, Value: b}, nil
}

func (s sansJSON) empty() bool {
	return len(s.DNSNames)+len(s.Emails)+len(s.UPNs)+len(s.IPAddresses)+len(s.URIs) == 0
}

// generateKey makes a key pair for the policy.
func generateKey(p *certPolicy) (crypto.Signer, error) {
	if p.isEC() {
		switch p.curve {
		case "P-256":
			return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case "P-384":
			return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		case "P-521":
			return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		}
		return nil, fmt.Errorf("curve %s is not supported", p.curve)
	}
	return rsa.GenerateKey(rand.Reader, p.keySize)
}

// subjectKeyID is the SHA-1 of the public key's bits (RFC 5280 method 1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, err
	}
	h := sha1.Sum(info.PublicKey.Bytes)
	return h[:], nil
}

// certTemplate is the policy's X.509 content for a key, valid from nbf to exp.
func certTemplate(p *certPolicy, pub crypto.PublicKey, nbf, exp time.Time) (*x509.Certificate, error) {
	serial := make([]byte, 16)
	if _, err := rand.Read(serial); err != nil {
		return nil, err
	}
	serial[0] &= 0x7f
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		NotBefore:             nbf,
		NotAfter:              exp,
		BasicConstraintsValid: true,
	}
	if p.subject != "" {
		raw, err := parseSubject(p.subject)
		if err != nil {
			return nil, err
		}
		tmpl.RawSubject = raw
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	tmpl.SubjectKeyId = ski
	for _, u := range p.keyUsage {
		tmpl.KeyUsage |= keyUsageBits[u]
	}
	for _, e := range p.ekus {
		if k, ok := extKeyUsages[e]; ok {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, k)
			continue
		}
		oid, err := parseOID(e)
		if err != nil {
			return nil, err
		}
		tmpl.UnknownExtKeyUsage = append(tmpl.UnknownExtKeyUsage, oid)
	}
	if !p.sans.empty() {
		ext, err := sanExtension(p.sans, p.subject == "")
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
	}
	return tmpl, nil
}

// parseOID reads a dotted OID.
func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("invalid OID")
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid OID")
		}
		oid[i] = n
	}
	return oid, nil
}

// validityOf returns when a certificate issued at now under p is valid: from 10 minutes
// before now, for validity_months months, as Key Vault issues; or from now for the
// policy's Validity.
func validityOf(p *certPolicy, now time.Time) (nbf, exp time.Time) {
	if p.validity > 0 {
		return now, now.Add(p.validity)
	}
	return now.Add(-certBackdate), now.AddDate(0, p.validityMonths, 0)
}

// certVersion is one version of a certificate with its key.
type certVersion struct {
	version          string
	leaf             *x509.Certificate
	chain            []*x509.Certificate
	key              crypto.PrivateKey // never logged, never in an error
	exportable       bool
	contentType      string // the linked secret's
	enabled          bool
	tags             map[string]string
	created, updated time.Time
	secret           *secretVersion // the linked secret's version
}

// issueCertificate issues a version under p with key (a new key when nil): self-signed
// when ca is nil, else signed by the CA, with its chain. A CA-signed certificate expires
// no later than its CA.
func issueCertificate(p *certPolicy, key crypto.Signer, now time.Time, ca *issuerCA) (*certVersion, error) {
	if key == nil {
		var err error
		if key, err = generateKey(p); err != nil {
			return nil, err
		}
	}
	nbf, exp := validityOf(p, now)
	if ca != nil && exp.After(ca.cert.NotAfter) {
		exp = ca.cert.NotAfter
	}
	if !exp.After(nbf) {
		return nil, errors.New("the issuer's CA certificate has expired")
	}
	tmpl, err := certTemplate(p, key.Public(), nbf, exp)
	if err != nil {
		return nil, err
	}
	parent, signer := tmpl, key
	var chain []*x509.Certificate
	if ca != nil {
		parent, signer, chain = ca.cert, ca.key, ca.chain()
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &certVersion{version: randomHex(16), leaf: leaf, chain: chain, key: key, exportable: p.exportable,
		contentType: p.contentType, enabled: p.enabled, created: now, updated: now}, nil
}

// csrFor is the certificate signing request of a pending operation.
func csrFor(p *certPolicy, key crypto.Signer) []byte {
	req := &x509.CertificateRequest{}
	if raw, err := parseSubject(p.subject); err == nil {
		req.RawSubject = raw
	}
	if !p.sans.empty() {
		if ext, err := sanExtension(p.sans, false); err == nil {
			req.ExtraExtensions = []pkix.Extension{ext}
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, req, key)
	if err != nil {
		return nil
	}
	return der
}

// thumbprint is the certificate's x5t: base64url of its SHA-1, without padding.
func (cv *certVersion) thumbprint() string {
	h := sha1.Sum(cv.leaf.Raw)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// secretValue renders the version as its linked secret's value in content type ct.
func (cv *certVersion) secretValue(ct string) (string, error) {
	if ct == ContentTypePEM {
		var b strings.Builder
		if cv.exportable && cv.key != nil {
			der, err := x509.MarshalPKCS8PrivateKey(cv.key)
			if err != nil {
				return "", err
			}
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		}
		for _, c := range append([]*x509.Certificate{cv.leaf}, cv.chain...) {
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		}
		return b.String(), nil
	}
	var pfx []byte
	var err error
	if cv.exportable && cv.key != nil {
		pfx, err = pkcs12.LegacyDES.Encode(cv.key, cv.leaf, cv.chain, "")
	} else {
		pfx, err = pkcs12.LegacyDES.EncodeTrustStore(append([]*x509.Certificate{cv.leaf}, cv.chain...), "")
	}
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(pfx), nil
}

// certOperation is a certificate's pending operation (GET /certificates/{name}/pending):
// the create request in progress, or the last one, which stays readable once it has
// completed, as on Azure, until the next create or a DELETE of it.
type certOperation struct {
	requestID       string
	issuer          string
	csr             []byte
	status          string // inProgress, completed, cancelled
	cancelRequested bool
	preserveOrder   *bool
	timer           *time.Timer
	issued          *certVersion // the version the operation completes with
}

// certificate is a certificate with its versions, oldest first.
type certificate struct {
	name          string
	policy        *certPolicy
	versions      []*certVersion
	op            *certOperation
	preserveOrder *bool
	renew         *time.Timer // the next AutoRenew
}

func (c *certificate) latest() *certVersion {
	if len(c.versions) == 0 {
		return nil
	}
	return c.versions[len(c.versions)-1]
}

func (c *certificate) find(version string) *certVersion {
	for _, cv := range c.versions {
		if cv.version == version {
			return cv
		}
	}
	return nil
}

// stopTimers stops the certificate's renewal and its pending issuance.
func (c *certificate) stopTimers() {
	if c.renew != nil {
		c.renew.Stop()
		c.renew = nil
	}
	if c.op != nil && c.op.timer != nil {
		c.op.timer.Stop()
	}
}

// deletedCert is a deleted certificate, holding its linked secret.
type deletedCert struct {
	cert      *certificate
	secret    *secret // the linked secret, nil for a certificate without versions
	deletedAt time.Time
	readyAt   time.Time
}

func (d *deletedCert) deleting(now time.Time) bool { return now.Before(d.readyAt) }

// certRecovery is a recovered certificate whose recovery has not completed yet.
type certRecovery struct {
	d     *deletedCert
	timer *time.Timer
}

// certStore holds a vault's certificates. It is guarded by the vault's mu; its maps are
// made on first use.
type certStore struct {
	live       map[string]*certificate // lowercase name -> certificate
	deleted    map[string]*deletedCert
	purging    map[string]purge
	recovering map[string]*certRecovery
	issuers    map[string]*certIssuer // lowercase name -> issuer (certificates_issuers.go)
	closed     bool                   // Close stopped the timers: nothing is scheduled any more
}

func (cs *certStore) init() {
	if cs.live == nil {
		cs.live, cs.deleted = map[string]*certificate{}, map[string]*deletedCert{}
		cs.purging, cs.recovering = map[string]purge{}, map[string]*certRecovery{}
		cs.issuers = map[string]*certIssuer{}
	}
}

// purgingLocked reports whether the certificate name's purge is still completing.
func (cs *certStore) purgingLocked(key string, now time.Time) bool {
	p, ok := cs.purging[key]
	if ok && !now.Before(p.until) {
		delete(cs.purging, key)
		ok = false
	}
	return ok
}

// certNameLocked reports whether key names a certificate in any state: live (or pending
// its first version), deleted, being recovered or being purged. Such a name belongs to the
// certificate: its secret is the linked one. The caller holds v.mu.
func (v *Vault) certNameLocked(key string) bool {
	cs := &v.certs
	if cs.live == nil {
		return false
	}
	p, purging := cs.purging[key]
	return cs.live[key] != nil || cs.deleted[key] != nil || cs.recovering[key] != nil || (purging && time.Now().Before(p.until))
}

// managed reports whether the secret is a certificate's linked secret.
func (s *secret) managed() bool { return len(s.versions) > 0 && s.versions[0].cert != nil }

// policyFromGo validates a Go API policy and fills Key Vault's defaults.
func policyFromGo(name string, gp CertificatePolicy) (*certPolicy, error) {
	pj := policyJSON{
		KeyProps: &keyPropsJSON{KTY: gp.KeyType, Curve: gp.Curve, ReuseKey: &gp.ReuseKey},
		X509Props: &x509PropsJSON{Subject: gp.Subject,
			SANs: &sansJSON{DNSNames: gp.DNSNames, Emails: gp.Emails, UPNs: gp.UPNs}},
		Issuer: &issuerJSON{Name: "Self"},
	}
	if gp.Issuer != "" {
		pj.Issuer.Name = gp.Issuer
	}
	if gp.KeySize != 0 {
		pj.KeyProps.KeySize = &gp.KeySize
	}
	exportable := !gp.NotExportable
	pj.KeyProps.Exportable = &exportable
	if gp.ContentType != "" {
		pj.SecretProps = &secretPropsJSON{ContentType: gp.ContentType}
	}
	if pj.X509Props.Subject == "" {
		pj.X509Props.Subject = "CN=" + name
	}
	if gp.ValidityMonths != 0 {
		pj.X509Props.ValidityMonths = &gp.ValidityMonths
	}
	pj.LifetimeActions = lifetimeActionsJSON(gp.LifetimeActions)
	if gp.Validity != 0 {
		if gp.Validity < minValidity {
			return nil, fmt.Errorf("validity %v is shorter than %v", gp.Validity, minValidity)
		}
		months := max(1, int((gp.Validity+30*24*time.Hour-1)/(30*24*time.Hour)))
		pj.X509Props.ValidityMonths = &months
	}
	p, e := pj.resolve(nil, time.Now())
	if e != nil {
		return nil, errors.New(e.msg)
	}
	p.validity = gp.Validity
	if p.validity > 0 {
		for _, a := range p.actions {
			if a.days > 0 && time.Duration(a.days)*24*time.Hour >= p.validity {
				return nil, fmt.Errorf("lifetime action at %d days before expiry: the validity is only %v", a.days, p.validity)
			}
		}
	}
	return p, nil
}

// CreateCertificate issues a new version of a certificate under policy, which becomes the
// certificate's policy, and returns the version (32 lowercase hex): self-signed, or signed
// by the CA of the policy's Issuer. It creates the linked secret's version of the same name
// and version, publishes CertificateNewVersionCreated, and schedules the policy's
// AutoRenew. Unlike the wire's create, it issues at once. It panics on an invalid name or
// policy, an issuer the vault does not have (or a disabled one), or a name a plain secret,
// or a deleted certificate, has: like [Vault.SetSecret], it is for setting up a test.
func (v *Vault) CreateCertificate(name string, policy CertificatePolicy, opts ...CertificateOption) (version string) {
	if !secretNameRE.MatchString(name) {
		panic(fmt.Sprintf("kvtest: invalid certificate name %q", name))
	}
	p, err := policyFromGo(name, policy)
	if err != nil {
		panic(fmt.Sprintf("kvtest: certificate %s: invalid policy: %v", name, err))
	}
	var o certOptions
	for _, opt := range opts {
		opt(&o)
	}
	p.enabled = !o.disabled
	now := time.Now().Truncate(time.Second)
	p.created, p.updated = now, now
	v.mu.RLock()
	var reuse crypto.Signer
	if c := v.certs.live[strings.ToLower(name)]; c != nil && p.reuseKey && c.latest() != nil {
		reuse, _ = c.latest().key.(crypto.Signer)
	}
	ca, err := v.issuerCALocked(p)
	v.mu.RUnlock()
	if err != nil {
		panic(fmt.Sprintf("kvtest: certificate %s: %v", name, err))
	}
	cv, err := issueCertificate(p, reuse, now, ca)
	if err != nil {
		panic(fmt.Sprintf("kvtest: certificate %s: %v", name, err))
	}
	cv.tags = o.tags
	v.mu.Lock()
	defer v.mu.Unlock()
	if why := v.certConflictLocked(strings.ToLower(name), time.Now()); why != "" {
		panic("kvtest: certificate " + name + ": " + why)
	}
	c := v.certOrNewLocked(name)
	c.policy = p
	v.addCertVersionLocked(c, cv)
	v.srv.cfg.logger.Info("certificate created", "vault", v.host, "certificate", c.name, "version", cv.version)
	return cv.version
}

// ImportCertificate imports a certificate with its private key as a new version, as
// POST /certificates/{name}/import does, and returns the version. data is PEM (the
// certificate, its chain and the private key, in any order; PKCS#8, PKCS#1 or SEC 1
// keys) or a PKCS#12 (PFX) file, protected by password or not. Of policy, only
// ContentType (the linked secret's) and LifetimeActions apply (default: EmailContacts at
// 80%, Key Vault's default for an issuer it does not know); the key and X.509 properties
// come from the certificate, the issuer is "Unknown". Errors never quote data or
// password.
func (v *Vault) ImportCertificate(name string, data []byte, password string, policy CertificatePolicy, opts ...CertificateOption) (version string, err error) {
	if !secretNameRE.MatchString(name) {
		return "", fmt.Errorf("kvtest: invalid certificate name %q", name)
	}
	var o certOptions
	for _, opt := range opts {
		opt(&o)
	}
	ct := policy.ContentType
	if ct == "" {
		ct = ContentTypePKCS12
	}
	var key crypto.PrivateKey
	var leaf *x509.Certificate
	var chain []*x509.Certificate
	var perr error
	if block, _ := pem.Decode(data); block != nil {
		key, leaf, chain, perr = parsePEMBundle(data)
	} else {
		key, leaf, chain, perr = parsePFX(data, password)
	}
	if perr != nil {
		return "", fmt.Errorf("kvtest: certificate %s: %w", name, perr)
	}
	pj := policyJSON{SecretProps: &secretPropsJSON{ContentType: ct}}
	pj.LifetimeActions = lifetimeActionsJSON(policy.LifetimeActions)
	now := time.Now().Truncate(time.Second)
	p, e := importPolicy(&pj, leaf, key, now)
	if e != nil {
		return "", fmt.Errorf("kvtest: certificate %s: %s", name, e.msg)
	}
	cv := &certVersion{version: randomHex(16), leaf: leaf, chain: chain, key: key, exportable: true,
		contentType: p.contentType, enabled: !o.disabled, tags: o.tags, created: now, updated: now}
	v.mu.Lock()
	defer v.mu.Unlock()
	if why := v.certConflictLocked(strings.ToLower(name), time.Now()); why != "" {
		return "", errors.New("kvtest: certificate " + name + ": " + why)
	}
	c := v.certOrNewLocked(name)
	c.policy = p
	v.addCertVersionLocked(c, cv)
	v.srv.cfg.logger.Info("certificate imported", "vault", v.host, "certificate", c.name, "version", cv.version)
	return cv.version, nil
}

// RenewCertificate issues a new version of a certificate under its current policy now, as
// its AutoRenew would (a new key unless the policy reuses keys; self-signed, or signed by
// the policy's issuer), and returns the version. It fails for an imported certificate
// (issuer "Unknown") and for an issuer the vault no longer has or has disabled.
func (v *Vault) RenewCertificate(name string) (version string, err error) {
	key := strings.ToLower(name)
	v.mu.RLock()
	c := v.certs.live[key]
	v.mu.RUnlock()
	if c == nil {
		return "", fmt.Errorf("kvtest: no such certificate: %s", name)
	}
	cv, err := v.renew(key, c, "")
	if err != nil {
		return "", err
	}
	return cv.version, nil
}

// DeleteCertificate deletes the certificate, every version and its linked secret, as
// DELETE /certificates/{name} does: it becomes a deleted, recoverable certificate once
// the deletion window has passed (see [WithDeletionWindow]).
func (v *Vault) DeleteCertificate(name string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := strings.ToLower(name)
	c := v.certs.live[key]
	if c == nil {
		return fmt.Errorf("kvtest: no such certificate: %s", name)
	}
	v.deleteCertLocked(key, c)
	return nil
}

// Certificate returns a version of a certificate ("" = the latest), for assertions.
func (v *Vault) Certificate(name, version string) (*x509.Certificate, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c := v.certs.live[strings.ToLower(name)]
	if c == nil {
		return nil, false
	}
	cv := c.latest()
	if version != "" {
		cv = c.find(strings.ToLower(version))
	}
	if cv == nil {
		return nil, false
	}
	return cv.leaf, true
}

// CertificateNames returns the names of the vault's certificates that have a version (not
// deleted ones), sorted.
func (v *Vault) CertificateNames() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for _, c := range v.certs.live {
		if len(c.versions) > 0 {
			out = append(out, c.name)
		}
	}
	sort.Strings(out)
	return out
}

// CertificateVersions returns the versions of a certificate, oldest first.
func (v *Vault) CertificateVersions(name string) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	c := v.certs.live[strings.ToLower(name)]
	if c == nil {
		return nil
	}
	out := make([]string, len(c.versions))
	for i, cv := range c.versions {
		out[i] = cv.version
	}
	return out
}

// certConflictLocked says why a new version of the certificate key cannot be made now:
// the name is a plain secret's, or the certificate is deleted, being deleted, recovered
// or purged. "" means it can. The caller holds v.mu.
func (v *Vault) certConflictLocked(key string, now time.Time) string {
	cs := &v.certs
	if s := v.secrets[key]; s != nil && !s.managed() {
		return "a secret of this name exists that is not a certificate's"
	}
	if d := v.deleted[key]; d != nil {
		return "a deleted secret of this name exists"
	}
	if v.recovering[key] != nil {
		return "a secret of this name is being recovered"
	}
	if p, ok := v.purging[key]; ok && now.Before(p.until) {
		return "a secret of this name is being purged"
	}
	if d := cs.deleted[key]; d != nil {
		if d.deleting(now) {
			return "the certificate is currently being deleted"
		}
		return "the certificate is in a deleted but recoverable state; it can only be recovered or purged"
	}
	if cs.recovering[key] != nil {
		return "the certificate is currently being recovered"
	}
	if p, ok := cs.purging[key]; ok && now.Before(p.until) {
		return "the certificate is currently being purged"
	}
	return ""
}

// certOrNewLocked returns the live certificate of that name, made if needed. The caller
// holds v.mu for writing and has checked certConflictLocked.
func (v *Vault) certOrNewLocked(name string) *certificate {
	v.certs.init()
	key := strings.ToLower(name)
	c := v.certs.live[key]
	if c == nil {
		c = &certificate{name: name}
		v.certs.live[key] = c
	}
	return c
}

// addCertVersionLocked adds a version: the linked secret's version, the event, the
// expiry events and the next AutoRenew. The caller holds v.mu for writing.
func (v *Vault) addCertVersionLocked(c *certificate, cv *certVersion) {
	c.versions = append(c.versions, cv)
	key := strings.ToLower(c.name)
	val, err := cv.secretValue(cv.contentType)
	if err != nil {
		// Encoding a key Go made or parsed does not fail; keep the secret readable anyway.
		v.srv.cfg.logger.Info("linked secret not encoded", "vault", v.host, "certificate", c.name, "version", cv.version)
	}
	nbf, exp := cv.leaf.NotBefore, cv.leaf.NotAfter
	sv := &secretVersion{version: cv.version, value: val, contentType: cv.contentType, enabled: cv.enabled,
		nbf: &nbf, exp: &exp, created: cv.created, updated: cv.updated, cert: cv}
	cv.secret = sv
	s := v.secrets[key]
	if s == nil {
		s = &secret{name: c.name}
		v.secrets[key] = s
	}
	// The linked secret publishes no SecretNewVersionCreated: Key Vault's documentation
	// does not say that a certificate's new version publishes a secret event, so the
	// emulator publishes only the certificate's.
	s.versions = append(s.versions, sv)
	v.publishCertLocked(EventCertificateNewVersionCreated, c, cv)
	v.scheduleCertExpiryLocked(c, cv)
	v.scheduleRenewLocked(key, c)
}

// scheduleRenewLocked (re)schedules the certificate's AutoRenew for its latest version.
// The caller holds v.mu for writing.
func (v *Vault) scheduleRenewLocked(key string, c *certificate) {
	if c.renew != nil {
		c.renew.Stop()
		c.renew = nil
	}
	cv := c.latest()
	if v.certs.closed || cv == nil || c.policy == nil {
		return
	}
	at, ok := c.policy.autoRenewAt(cv.leaf.NotBefore, cv.leaf.NotAfter)
	if !ok {
		return
	}
	// Never sooner than a second after the version was made, so that a trigger already
	// past (an imported certificate near its end) cannot renew in a loop.
	at = later(at, cv.created.Add(time.Second))
	version := cv.version
	c.renew = time.AfterFunc(time.Until(at), func() {
		if _, err := v.renew(key, c, version); err != nil && !errors.Is(err, errRenewStale) {
			v.srv.cfg.logger.Info("certificate renewal failed", "vault", v.host, "certificate", c.name, "error", err.Error())
		}
	})
}

// errRenewStale is a renewal that no longer applies: the certificate changed meanwhile.
var errRenewStale = errors.New("kvtest: the certificate changed before its renewal")

// renew issues a new version of the certificate under its policy: self-signed, or signed
// by the CA of the policy's issuer, as it is when the renewal starts. With
// due != "", it is the AutoRenew of version due and does nothing unless that is still
// the latest version of the live certificate. The key is made without the lock.
func (v *Vault) renew(key string, c *certificate, due string) (*certVersion, error) {
	v.mu.RLock()
	stale := v.certs.closed || v.certs.live[key] != c || c.latest() == nil || (due != "" && c.latest().version != due)
	var p *certPolicy
	var reuse crypto.Signer
	var ca *issuerCA
	var caErr error
	if !stale {
		p = c.policy.clone()
		if p.reuseKey {
			reuse, _ = c.latest().key.(crypto.Signer)
		}
		ca, caErr = v.issuerCALocked(p)
	}
	v.mu.RUnlock()
	if stale {
		return nil, errRenewStale
	}
	if caErr != nil {
		return nil, fmt.Errorf("kvtest: certificate %s: %w", c.name, caErr)
	}
	now := time.Now().Truncate(time.Second)
	cv, err := issueCertificate(p, reuse, now, ca)
	if err != nil {
		return nil, fmt.Errorf("kvtest: certificate %s: %w", c.name, err)
	}
	cv.enabled = true
	cv.tags = maps.Clone(c.latest().tags)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.certs.closed || v.certs.live[key] != c || c.latest() == nil || (due != "" && c.latest().version != due) {
		return nil, errRenewStale
	}
	v.addCertVersionLocked(c, cv)
	v.srv.cfg.logger.Info("certificate renewed", "vault", v.host, "certificate", c.name, "version", cv.version)
	return cv, nil
}

// deleteCertLocked turns the certificate into a deleted one, its linked secret with it.
// The caller holds v.mu for writing.
func (v *Vault) deleteCertLocked(key string, c *certificate) *deletedCert {
	now := time.Now()
	c.stopTimers()
	if c.op != nil && c.op.status == "inProgress" {
		c.op = nil // a deleted certificate's request is dropped
	}
	d := &deletedCert{cert: c, deletedAt: now.Truncate(time.Second), readyAt: now.Add(v.srv.cfg.deletionWindow)}
	if s := v.secrets[key]; s != nil && s.managed() {
		d.secret = s
		delete(v.secrets, key)
	}
	delete(v.certs.live, key)
	v.certs.deleted[key] = d
	return d
}

// recoverCertLocked starts the recovery of the deleted certificate d, which the caller has
// removed from the deleted ones; it is back after the server's recovery delay. The caller
// holds v.mu for writing.
func (v *Vault) recoverCertLocked(key string, d *deletedCert) {
	delay := v.srv.cfg.recoveryDelay
	if delay <= 0 || v.certs.closed {
		v.restoreCertLocked(key, d)
		return
	}
	r := &certRecovery{d: d}
	r.timer = time.AfterFunc(delay, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.certs.recovering[key] == r {
			delete(v.certs.recovering, key)
			v.restoreCertLocked(key, d)
		}
	})
	v.certs.recovering[key] = r
}

// restoreCertLocked makes a recovered certificate live again, with its linked secret and
// its AutoRenew. The caller holds v.mu for writing.
func (v *Vault) restoreCertLocked(key string, d *deletedCert) {
	v.certs.live[key] = d.cert
	if d.secret != nil {
		v.secrets[key] = d.secret
	}
	v.scheduleRenewLocked(key, d.cert)
}

// closeCertificates stops every certificate timer: renewals, issuances, recoveries.
// [Server.Close] calls it.
func (v *Vault) closeCertificates() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.certs.closed = true
	for _, c := range v.certs.live {
		c.stopTimers()
	}
	for _, r := range v.certs.recovering {
		r.timer.Stop()
	}
}

// Publishing certificate events and scheduling their expiry events, beside the secrets'
// (eventgrid.go).

// publishCertLocked publishes a certificate event about the version to every
// subscription that takes it. The caller holds v.mu.
func (v *Vault) publishCertLocked(typ string, c *certificate, cv *certVersion) {
	if v.events.closed {
		return
	}
	nbf, exp := cv.leaf.NotBefore.Unix(), cv.leaf.NotAfter.Unix()
	e := &kvEvent{
		id:      newUUID(),
		typ:     typ,
		topic:   v.topic(),
		subject: c.name,
		time:    time.Now(),
		data: eventData{
			ID: "https://" + v.host + "/certificates/" + c.name + "/" + cv.version, VaultName: v.name,
			ObjectType: "Certificate", ObjectName: c.name, Version: cv.version, NBF: &nbf, EXP: &exp,
		},
	}
	v.srv.cfg.logger.Info("event published", "vault", v.host, "type", typ, "certificate", c.name, "version", cv.version)
	for _, sub := range v.events.subs {
		if sub.takes(typ) {
			sub.enqueue(e)
		}
	}
}

// certTimerKey keys a certificate version's expiry timers in v.events.timers; the colon
// keeps them apart from the secrets' (no name has one).
func certTimerKey(key, version string) string { return "certificate:" + key + "/" + version }

// scheduleCertExpiryLocked schedules the version's CertificateNearExpiry and
// CertificateExpired. The caller holds v.mu for writing.
func (v *Vault) scheduleCertExpiryLocked(c *certificate, cv *certVersion) {
	exp := cv.leaf.NotAfter
	if v.events.closed || !time.Now().Before(exp) {
		return
	}
	if v.events.timers == nil {
		v.events.timers = map[string]*expiryTimers{}
	}
	key, version := strings.ToLower(c.name), cv.version
	tkey := certTimerKey(key, version)
	if old := v.events.timers[tkey]; old != nil {
		old.stop()
	}
	et := &expiryTimers{exp: exp}
	et.near = time.AfterFunc(max(time.Until(exp.Add(-nearExpiryLead)), 0), func() {
		v.fireCertExpiry(key, version, EventCertificateNearExpiry, exp)
	})
	et.expired = time.AfterFunc(time.Until(exp), func() { v.fireCertExpiry(key, version, EventCertificateExpired, exp) })
	v.events.timers[tkey] = et
}

// fireCertExpiry publishes a certificate expiry event when its timer fires, if the
// version is still the live certificate's current, enabled one.
func (v *Vault) fireCertExpiry(key, version, typ string, exp time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	tkey := certTimerKey(key, version)
	et := v.events.timers[tkey]
	if v.events.closed || et == nil || !et.exp.Equal(exp) {
		return
	}
	if typ == EventCertificateNearExpiry {
		et.near = nil
	} else {
		et.expired = nil
	}
	if et.near == nil && et.expired == nil {
		delete(v.events.timers, tkey)
	}
	c := v.certs.live[key]
	if c == nil {
		return
	}
	cv := c.latest()
	if cv == nil || cv.version != version || !cv.enabled {
		return
	}
	v.publishCertLocked(typ, c, cv)
}

// Imports.

// parsePFX reads a PKCS#12 file. Errors never quote it or the password.
func parsePFX(der []byte, password string) (crypto.PrivateKey, *x509.Certificate, []*x509.Certificate, error) {
	key, leaf, chain, err := pkcs12.DecodeChain(der, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) {
			return nil, nil, nil, errors.New("the PKCS#12 password is incorrect")
		}
		return nil, nil, nil, errors.New("the PKCS#12 content cannot be read")
	}
	if err := checkKeyPair(key, leaf); err != nil {
		return nil, nil, nil, err
	}
	return key, leaf, chain, nil
}

// parsePEMBundle reads PEM text: certificates and one private key. The certificate whose
// public key is the key's is the leaf; the others, in their order, the chain. Errors never
// quote the text.
func parsePEMBundle(text []byte) (crypto.PrivateKey, *x509.Certificate, []*x509.Certificate, error) {
	var key crypto.PrivateKey
	var certs []*x509.Certificate
	rest := text
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, nil, errors.New("a PEM certificate cannot be parsed")
			}
			certs = append(certs, c)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if key != nil {
				return nil, nil, nil, errors.New("the PEM content holds more than one private key")
			}
			k, err := parsePrivateKey(block)
			if err != nil {
				return nil, nil, nil, err
			}
			key = k
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, nil, errors.New("an encrypted PEM private key is not supported by the emulator; import it as PKCS#12 with a password")
		}
	}
	if len(certs) == 0 {
		return nil, nil, nil, errors.New("the PEM content holds no certificate")
	}
	if key == nil {
		return nil, nil, nil, errors.New("private key is not specified in the PEM content")
	}
	for i, c := range certs {
		if checkKeyPair(key, c) == nil {
			chain := slices.Delete(slices.Clone(certs), i, i+1)
			return key, c, chain, nil
		}
	}
	return nil, nil, nil, errors.New("the private key matches none of the certificates")
}

func parsePrivateKey(block *pem.Block) (crypto.PrivateKey, error) {
	var k any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, errors.New("the PEM private key cannot be parsed")
	}
	return k, nil
}

// checkKeyPair checks that key is an RSA or EC (P-256, P-384, P-521) key whose public
// key is the certificate's.
func checkKeyPair(key crypto.PrivateKey, leaf *x509.Certificate) error {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if !k.PublicKey.Equal(leaf.PublicKey) {
			return errors.New("the private key does not match the certificate")
		}
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return errors.New("the key's curve is not supported")
		}
		if !k.PublicKey.Equal(leaf.PublicKey) {
			return errors.New("the private key does not match the certificate")
		}
	default:
		return errors.New("only RSA and EC keys are supported")
	}
	return nil
}

// importPolicy is the policy of an imported certificate: the key and X.509 properties
// from the certificate, the secret content type and lifetime actions from the request's
// policy (pj, may be nil), the issuer "Unknown" unless the request names one.
func importPolicy(pj *policyJSON, leaf *x509.Certificate, key crypto.PrivateKey, now time.Time) (*certPolicy, *kvError) {
	p := &certPolicy{issuer: "Unknown", exportable: true, contentType: ContentTypePKCS12, enabled: true,
		created: now, updated: now}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		p.kty, p.keySize = "RSA", k.N.BitLen()
	case *ecdsa.PrivateKey:
		p.kty, p.curve, p.keySize = "EC", k.Curve.Params().Name, k.Curve.Params().BitSize
	}
	p.subject = formatSubject(leaf.RawSubject)
	for _, ip := range leaf.IPAddresses {
		p.sans.IPAddresses = append(p.sans.IPAddresses, ip.String())
	}
	for _, u := range leaf.URIs {
		p.sans.URIs = append(p.sans.URIs, u.String())
	}
	p.sans.DNSNames, p.sans.Emails = slices.Clone(leaf.DNSNames), slices.Clone(leaf.EmailAddresses)
	p.sansGiven = !p.sans.empty()
	for _, e := range leaf.ExtKeyUsage {
		for oid, k := range extKeyUsages {
			if k == e {
				p.ekus = append(p.ekus, oid)
				break
			}
		}
	}
	for _, oid := range leaf.UnknownExtKeyUsage {
		p.ekus = append(p.ekus, oid.String())
	}
	sort.Strings(p.ekus)
	for _, name := range slices.Sorted(maps.Keys(keyUsageBits)) {
		if leaf.KeyUsage&keyUsageBits[name] != 0 {
			p.keyUsage = append(p.keyUsage, name)
		}
	}
	months := 0
	for leaf.NotBefore.AddDate(0, months+1, 0).Compare(leaf.NotAfter) <= 0 {
		months++
	}
	p.validityMonths = max(months, 1)
	if pj != nil {
		if pj.SecretProps != nil && pj.SecretProps.ContentType != "" {
			p.contentType = pj.SecretProps.ContentType
		}
		if pj.Issuer != nil && pj.Issuer.Name != "" {
			p.issuer, p.certType, p.certTransparency = pj.Issuer.Name, pj.Issuer.CertType, pj.Issuer.CertTransparency
		}
		if pj.Attributes != nil && pj.Attributes.Enabled != nil {
			p.enabled = *pj.Attributes.Enabled
		}
	}
	if p.contentType != ContentTypePKCS12 && p.contentType != ContentTypePEM {
		return nil, badParameter("The secret content type " + p.contentType + " is not supported: use " + ContentTypePKCS12 + " or " + ContentTypePEM + ".")
	}
	var las *[]lifetimeActionJSON
	if pj != nil {
		las = pj.LifetimeActions
	}
	actions, e := resolveActions(las, p)
	if e != nil {
		return nil, e
	}
	p.actions = actions
	return p, nil
}

// decodeLenientBase64 decodes standard or URL base64, padded or not, ignoring
// whitespace.
func decodeLenientBase64(s string) ([]byte, bool) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

// uriValid reports whether s is an absolute URI, for a URI SAN.
func uriValid(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme != ""
}

// lifetimeActionsJSON is a policy's lifetime actions as the wire has them, nil for none.
func lifetimeActionsJSON(as []LifetimeAction) *[]lifetimeActionJSON {
	if as == nil {
		return nil
	}
	las := make([]lifetimeActionJSON, len(as))
	for i, a := range as {
		la := lifetimeActionJSON{Action: &actionJSON{ActionType: a.Action}, Trigger: &triggerJSON{}}
		if a.LifetimePercentage != 0 {
			la.Trigger.LifetimePercentage = &a.LifetimePercentage
		}
		if a.DaysBeforeExpiry != 0 {
			la.Trigger.DaysBeforeExpiry = &a.DaysBeforeExpiry
		}
		las[i] = la
	}
	return &las
}
