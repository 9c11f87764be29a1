package kvtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Certificate issuers: /certificates/issuers/{name}, a vault's accounts with the
// certificate authorities Key Vault integrates with (DigiCert, GlobalSign), which a
// certificate policy names in issuer.name. On Azure, Key Vault requests a certificate of
// such a policy from the CA, and renews it by the policy's AutoRenew. The emulator has no
// CA to call: each issuer has a test CA that signs its certificates, the one given with
// [Vault.AddIssuer], or one the emulator generates (for an issuer created over the wire or
// in a seed). The provider, credentials and organisation details are stored and echoed
// (never the password) and change nothing: every issuer signs with its CA.

// DefaultIssuerProvider is the provider of an issuer added with [Vault.AddIssuer] without
// [WithIssuerProvider].
const DefaultIssuerProvider = "DigiCert"

// IssuerOption sets a property of an issuer added with [Vault.AddIssuer].
type IssuerOption func(*issuerOptions)

type issuerOptions struct {
	provider string
	subject  string
	disabled bool
}

// WithIssuerProvider sets the issuer's provider, as PUT /certificates/issuers/{name}
// names it: "DigiCert" (default), "GlobalSign", "OneCertV2-PrivateCA" or any other. It
// is echoed and changes nothing: the issuer signs with its CA.
func WithIssuerProvider(provider string) IssuerOption {
	return func(o *issuerOptions) { o.provider = provider }
}

// WithIssuerCASubject sets the subject of the CA the emulator generates for the issuer
// (default "CN=<issuer name>"), when [Vault.AddIssuer] is given no CA.
func WithIssuerCASubject(subject string) IssuerOption {
	return func(o *issuerOptions) { o.subject = subject }
}

// WithIssuerEnabled sets whether the issuer is enabled (attributes.enabled, default
// true). A disabled issuer issues nothing: a create answers 400 and a renewal fails.
func WithIssuerEnabled(enabled bool) IssuerOption {
	return func(o *issuerOptions) { o.disabled = !enabled }
}

// issuerCA is what a certificate issuer signs with: its CA certificate and key, and the
// CA's own chain above it (none for a root).
type issuerCA struct {
	cert  *x509.Certificate
	key   crypto.Signer // never logged, never in an error
	above []*x509.Certificate
}

// chain is the chain an issued certificate carries after itself: the CA, then above it.
func (ca *issuerCA) chain() []*x509.Certificate {
	return append([]*x509.Certificate{ca.cert}, ca.above...)
}

// certIssuer is a certificate issuer of a vault.
type certIssuer struct {
	name      string
	provider  string
	hasCreds  bool   // credentials were given
	accountID string // credentials.account_id; the password is never kept
	org       *orgDetailsJSON
	enabled   bool
	created   time.Time
	updated   time.Time
	ca        *issuerCA
}

// AddIssuer adds a certificate issuer to the vault, or replaces the one of that name, as
// PUT /certificates/issuers/{name} does: certificates whose policy names it in issuer.name
// ([CertificatePolicy].Issuer, or over the wire) are issued and auto-renewed signed by ca
// with key, and carry ca in their chain (the linked secret holds the key, the certificate
// and the CA). With ca and key nil, the emulator generates a CA for the issuer: an ECDSA
// P-256 root valid for 10 years, subject "CN=<name>" unless [WithIssuerCASubject]; read
// it with [Vault.IssuerCA]. The provider defaults to [DefaultIssuerProvider].
//
// A certificate signed by the issuer expires no later than its CA. AddIssuer panics on an
// invalid name (1-127 letters, digits and dashes; "Self" and "Unknown" are reserved), a
// certificate that is not a CA (basic constraints CA, key usage certificate signing, if
// any) or a key that is not the certificate's: it is for setting up a test.
func (v *Vault) AddIssuer(name string, ca *x509.Certificate, key crypto.Signer, opts ...IssuerOption) {
	if err := v.addIssuer(name, ca, key, nil, opts...); err != nil {
		panic(err.Error())
	}
}

// addIssuer is AddIssuer returning its error; above is the CA's own chain.
func (v *Vault) addIssuer(name string, ca *x509.Certificate, key crypto.Signer, above []*x509.Certificate, opts ...IssuerOption) error {
	if err := checkIssuerName(name); err != nil {
		return fmt.Errorf("kvtest: issuer %q: %w", name, err)
	}
	o := issuerOptions{provider: DefaultIssuerProvider}
	for _, opt := range opts {
		opt(&o)
	}
	if o.provider == "" {
		return fmt.Errorf("kvtest: issuer %s: the provider is empty", name)
	}
	var signer *issuerCA
	switch {
	case ca == nil && key == nil:
		subject := o.subject
		if subject == "" {
			subject = "CN=" + name
		}
		var err error
		if signer, err = generateIssuerCA(subject); err != nil {
			return fmt.Errorf("kvtest: issuer %s: %w", name, err)
		}
	case o.subject != "":
		return fmt.Errorf("kvtest: issuer %s: WithIssuerCASubject applies to a CA the emulator generates, not to a given one", name)
	default:
		if err := checkIssuerCA(ca, key); err != nil {
			return fmt.Errorf("kvtest: issuer %s: %w", name, err)
		}
		signer = &issuerCA{cert: ca, key: key, above: slices.Clone(above)}
	}
	now := time.Now().Truncate(time.Second)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.certs.init()
	k := strings.ToLower(name)
	iss := &certIssuer{name: name, created: now}
	if old := v.certs.issuers[k]; old != nil {
		iss.name, iss.created = old.name, old.created
	}
	iss.provider, iss.enabled, iss.updated, iss.ca = o.provider, !o.disabled, now, signer
	v.certs.issuers[k] = iss
	v.srv.cfg.logger.Info("certificate issuer set", "vault", v.host, "issuer", iss.name, "provider", iss.provider)
	return nil
}

// IssuerCA returns the CA certificate the vault's issuer of that name signs with: the one
// given to [Vault.AddIssuer], or the one the emulator generated for an issuer added without
// a CA, created over the wire or in a seed. It is how a test gets the trust anchor of the
// certificates the issuer signs (they also carry it in their chain). There is no such
// call over the wire: Key Vault has none.
func (v *Vault) IssuerCA(name string) (*x509.Certificate, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	iss := v.certs.issuers[strings.ToLower(name)]
	if iss == nil {
		return nil, false
	}
	return iss.ca.cert, true
}

// IssuerNames returns the names of the vault's certificate issuers, sorted.
func (v *Vault) IssuerNames() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]string, 0, len(v.certs.issuers))
	for _, iss := range v.certs.issuers {
		out = append(out, iss.name)
	}
	slices.Sort(out)
	return out
}

// checkIssuerName checks an issuer's name: a Key Vault object name that is not one of the
// reserved issuer names.
func checkIssuerName(name string) error {
	if !secretNameRE.MatchString(name) {
		return errors.New("an issuer name is 1-127 letters, digits and dashes")
	}
	if strings.EqualFold(name, "Self") || strings.EqualFold(name, "Unknown") {
		return fmt.Errorf("%s is a reserved issuer name", name)
	}
	return nil
}

// checkIssuerCA checks that ca is a CA certificate and key its private key.
func checkIssuerCA(ca *x509.Certificate, key crypto.Signer) error {
	switch {
	case ca == nil || key == nil:
		return errors.New("give both the CA certificate and its key, or neither")
	case !ca.BasicConstraintsValid || !ca.IsCA:
		return errors.New("the certificate is not a CA: its basic constraints do not say CA")
	case ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("the CA certificate's key usage does not allow certificate signing")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return errors.New("the key is not the CA certificate's")
	}
	return nil
}

// generateIssuerCA makes a CA for an issuer: an ECDSA P-256 root with the subject, valid
// from 10 minutes ago for 10 years.
func generateIssuerCA(subject string) (*issuerCA, error) {
	raw, err := parseSubject(subject)
	if err != nil {
		return nil, fmt.Errorf("the CA subject %q is not an X.500 distinguished name", subject)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial := make([]byte, 16)
	if _, err := rand.Read(serial); err != nil {
		return nil, err
	}
	serial[0] &= 0x7f
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		RawSubject:            raw,
		NotBefore:             now.Add(-certBackdate),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &issuerCA{cert: cert, key: key}, nil
}

// issuerCALocked returns what a certificate under p is signed with: nil for a self-signed
// one, the CA of the vault's issuer the policy names otherwise. An issuer the vault does
// not have, a disabled one and "Unknown" are errors, which never quote a key. The caller
// holds v.mu.
func (v *Vault) issuerCALocked(p *certPolicy) (*issuerCA, error) {
	switch {
	case p.selfIssued():
		return nil, nil
	case p.unknownIssuer():
		return nil, errors.New("the issuer Unknown issues no certificate: its certificates are imported")
	}
	iss := v.certs.issuers[strings.ToLower(p.issuer)]
	if iss == nil {
		return nil, fmt.Errorf("the vault has no certificate issuer %s (PUT /certificates/issuers/%s)", p.issuer, p.issuer)
	}
	if !iss.enabled {
		return nil, fmt.Errorf("the certificate issuer %s is disabled", iss.name)
	}
	return iss.ca, nil
}

// The wire: Key Vault's JSON names, as azcertificates' models_serde.go reads them.

// issuerBody is a PUT or PATCH of an issuer (SetIssuerParameters, UpdateIssuerParameters).
type issuerBody struct {
	Provider    *string          `json:"provider"`
	Credentials *issuerCredsJSON `json:"credentials"`
	OrgDetails  *orgDetailsJSON  `json:"org_details"`
	Attributes  *struct {
		Enabled *bool `json:"enabled"`
	} `json:"attributes"`
}

type issuerCredsJSON struct {
	AccountID string `json:"account_id,omitempty"`
	Password  string `json:"pwd,omitempty"` // in requests only: never kept, never answered
}

type orgDetailsJSON struct {
	ID     string      `json:"id,omitempty"`
	Admins []adminJSON `json:"admin_details,omitempty"`
}

type adminJSON struct {
	FirstName string `json:"first_name,omitempty"`
	LastName  string `json:"last_name,omitempty"`
	Email     string `json:"email,omitempty"`
	Phone     string `json:"phone,omitempty"`
}

// issuerBundle is an issuer as Key Vault answers it. Its org_details carry "zip": 0, as
// Key Vault's recorded answers do.
type issuerBundle struct {
	ID          string `json:"id"`
	Provider    string `json:"provider"`
	Credentials *struct {
		AccountID string `json:"account_id,omitempty"`
	} `json:"credentials,omitempty"`
	OrgDetails *struct {
		ID     string      `json:"id,omitempty"`
		Zip    int         `json:"zip"`
		Admins []adminJSON `json:"admin_details,omitempty"`
	} `json:"org_details,omitempty"`
	Attributes issuerAttrsJSON `json:"attributes"`
}

type issuerAttrsJSON struct {
	Enabled bool  `json:"enabled"`
	Created int64 `json:"created"`
	Updated int64 `json:"updated"`
}

// issuerItem is an issuer in a list.
type issuerItem struct {
	ID       string `json:"id"`
	Provider string `json:"provider"`
}

// issuerRoute parses a request under /certificates/issuers; rest is the path after it.
func (v *Vault) issuerRoute(r *http.Request, rest []string) (route, *kvError) {
	m := r.Method
	badMethod := &kvError{http.StatusMethodNotAllowed, "MethodNotAllowed", "The method " + m + " is not allowed on " + r.URL.Path}
	switch len(rest) {
	case 0:
		if m != http.MethodGet {
			return route{}, badMethod
		}
		return route{op: OpListCertificateIssuers, serve: v.listIssuers, res: "/certificatecas"}, nil
	case 1:
		name := rest[0]
		if !secretNameRE.MatchString(name) {
			return route{}, &kvError{http.StatusBadRequest, "BadParameter", "The request URI contains an invalid name: " + name}
		}
		rt := func(op Op, serve func(http.ResponseWriter, *http.Request, route)) (route, *kvError) {
			return route{op: op, name: name, serve: serve, res: "/certificatecas/" + name}, nil
		}
		switch m {
		case http.MethodGet:
			return rt(OpGetCertificateIssuer, v.getIssuer)
		case http.MethodPut:
			return rt(OpSetCertificateIssuer, v.setIssuer)
		case http.MethodPatch:
			return rt(OpUpdateCertificateIssuer, v.updateIssuer)
		case http.MethodDelete:
			return rt(OpDeleteCertificateIssuer, v.deleteIssuer)
		}
		return route{}, badMethod
	}
	return route{}, &kvError{http.StatusNotFound, "NotFound", "The requested path was not found: " + r.URL.Path}
}

// issuerNotFound is Key Vault's answer for a missing issuer.
var issuerNotFound = &kvError{http.StatusNotFound, "CertificateIssuerNotFound", "Issuer not found"}

// issuerBundleLocked renders an issuer. The caller holds v.mu.
func (v *Vault) issuerBundleLocked(iss *certIssuer) issuerBundle {
	b := issuerBundle{ID: "https://" + v.host + "/certificates/issuers/" + iss.name, Provider: iss.provider,
		Attributes: issuerAttrsJSON{Enabled: iss.enabled, Created: iss.created.Unix(), Updated: iss.updated.Unix()}}
	if iss.hasCreds {
		b.Credentials = &struct {
			AccountID string `json:"account_id,omitempty"`
		}{AccountID: iss.accountID}
	}
	if o := iss.org; o != nil {
		b.OrgDetails = &struct {
			ID     string      `json:"id,omitempty"`
			Zip    int         `json:"zip"`
			Admins []adminJSON `json:"admin_details,omitempty"`
		}{ID: o.ID, Admins: slices.Clone(o.Admins)}
	}
	return b
}

// apply sets the sections of body that are given: provider, credentials (without the
// password), org_details, attributes.enabled.
func (body *issuerBody) apply(iss *certIssuer) {
	if body.Provider != nil && *body.Provider != "" {
		iss.provider = *body.Provider
	}
	if c := body.Credentials; c != nil {
		iss.hasCreds, iss.accountID = true, c.AccountID
	}
	if o := body.OrgDetails; o != nil {
		iss.org = &orgDetailsJSON{ID: o.ID, Admins: slices.Clone(o.Admins)}
	}
	if a := body.Attributes; a != nil && a.Enabled != nil {
		iss.enabled = *a.Enabled
	}
}

// setIssuer answers PUT /certificates/issuers/{name}: it creates the issuer, with a CA the
// emulator generates (subject CN=<name>), or replaces an existing one's provider,
// credentials, organisation details and attributes, keeping its CA.
func (v *Vault) setIssuer(w http.ResponseWriter, r *http.Request, rt route) {
	var body issuerBody
	if e := readJSON(r, &body); e != nil {
		v.writeKVError(w, e)
		return
	}
	if body.Provider == nil || *body.Provider == "" {
		v.writeKVError(w, badParameter("Property 'provider' is required."))
		return
	}
	if err := checkIssuerName(rt.name); err != nil {
		v.writeKVError(w, badParameter("The issuer name "+rt.name+" is not valid: "+err.Error()+"."))
		return
	}
	key := strings.ToLower(rt.name)
	v.mu.RLock()
	exists := v.certs.issuers[key] != nil
	v.mu.RUnlock()
	var gen *issuerCA
	if !exists { // made without the lock
		var err error
		if gen, err = generateIssuerCA("CN=" + rt.name); err != nil {
			v.writeError(w, http.StatusInternalServerError, "InternalServerError", "The issuer's CA could not be generated.")
			return
		}
	}
	now := time.Now().Truncate(time.Second)
	v.mu.Lock()
	v.certs.init()
	iss := v.certs.issuers[key]
	if iss == nil {
		if gen == nil { // deleted since: rare, and fast enough under the lock
			var err error
			if gen, err = generateIssuerCA("CN=" + rt.name); err != nil {
				v.mu.Unlock()
				v.writeError(w, http.StatusInternalServerError, "InternalServerError", "The issuer's CA could not be generated.")
				return
			}
		}
		iss = &certIssuer{name: rt.name, created: now, ca: gen}
		v.certs.issuers[key] = iss
	}
	// A PUT replaces every section: those not sent are cleared.
	iss.hasCreds, iss.accountID, iss.org, iss.enabled, iss.updated = false, "", nil, true, now
	body.apply(iss)
	b, name := v.issuerBundleLocked(iss), iss.name
	v.mu.Unlock()
	v.srv.cfg.logger.Info("certificate issuer set", "vault", v.host, "issuer", name, "provider", b.Provider)
	writeJSON(w, http.StatusOK, b)
}

// updateIssuer answers PATCH /certificates/issuers/{name}: the sections sent replace the
// issuer's.
func (v *Vault) updateIssuer(w http.ResponseWriter, r *http.Request, rt route) {
	var body issuerBody
	if e := readJSON(r, &body); e != nil {
		v.writeKVError(w, e)
		return
	}
	v.mu.Lock()
	iss := v.certs.issuers[strings.ToLower(rt.name)]
	if iss == nil {
		v.mu.Unlock()
		v.writeKVError(w, issuerNotFound)
		return
	}
	body.apply(iss)
	iss.updated = time.Now().Truncate(time.Second)
	b := v.issuerBundleLocked(iss)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) getIssuer(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	iss := v.certs.issuers[strings.ToLower(rt.name)]
	var b issuerBundle
	if iss != nil {
		b = v.issuerBundleLocked(iss)
	}
	v.mu.RUnlock()
	if iss == nil {
		v.writeKVError(w, issuerNotFound)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// deleteIssuer answers DELETE /certificates/issuers/{name} with the issuer, which is gone
// at once (issuers have no soft delete). Certificates naming it stay; their next issuance
// or renewal fails until an issuer of that name exists again.
func (v *Vault) deleteIssuer(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	iss := v.certs.issuers[key]
	var b issuerBundle
	if iss != nil {
		b = v.issuerBundleLocked(iss)
		delete(v.certs.issuers, key)
	}
	v.mu.Unlock()
	if iss == nil {
		v.writeKVError(w, issuerNotFound)
		return
	}
	v.srv.cfg.logger.Info("certificate issuer deleted", "vault", v.host, "issuer", iss.name)
	writeJSON(w, http.StatusOK, b)
}

// listIssuers answers GET /certificates/issuers: id and provider of each issuer, by name,
// in pages as the other lists.
func (v *Vault) listIssuers(w http.ResponseWriter, r *http.Request, _ route) {
	p, e := v.page(r)
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	v.mu.RLock()
	keys := slices.Sorted(maps.Keys(v.certs.issuers))
	items := make([]issuerItem, len(keys))
	for i, k := range keys {
		iss := v.certs.issuers[k]
		items[i] = issuerItem{ID: "https://" + v.host + "/certificates/issuers/" + iss.name, Provider: iss.provider}
	}
	v.mu.RUnlock()
	writePage(v, w, r, items, p)
}
