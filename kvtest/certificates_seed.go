package kvtest

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// seedIssuer is a certificate issuer of a [seedVault] ([Vault.AddIssuer]), with a CA the
// emulator generates or one read from a PEM file.
type seedIssuer struct {
	// Name is the issuer name, which certificates name in issuer: 1-127 letters, digits
	// and dashes, not Self or Unknown.
	Name string `yaml:"name"`
	// Provider is the issuer's provider (default DigiCert): echoed, changes nothing.
	Provider string `yaml:"provider,omitempty"`
	// Subject is the subject of the CA the emulator generates (default CN=<name>).
	Subject string `yaml:"subject,omitempty"`
	// CAPEMFile is a PEM file holding the CA certificate and its private key (and,
	// optionally, the CA's own chain), used instead of a generated CA.
	CAPEMFile string `yaml:"ca_pem_file,omitempty"`
	// Enabled defaults to true.
	Enabled *bool `yaml:"enabled,omitempty"`
}

// seedCertificate is a certificate of a [seedVault]: issued from a policy (self-signed, or
// signed by one of the vault's issuers), or imported from a PEM or PKCS#12 file. Listing a
// name twice makes two versions.
type seedCertificate struct {
	// Name is the certificate name: 1-127 letters, digits and dashes.
	Name string `yaml:"name"`
	// Issuer is Self (default) or the name of an issuer in the vault's issuers.
	Issuer string `yaml:"issuer,omitempty"`
	// Subject is the X.500 distinguished name (default "CN=<name>").
	Subject string `yaml:"subject,omitempty"`
	// DNSNames, Emails and UPNs are the subject alternative names.
	DNSNames []string `yaml:"dns_names,omitempty"`
	Emails   []string `yaml:"emails,omitempty"`
	UPNs     []string `yaml:"upns,omitempty"`
	// KeyType is RSA (default) or EC.
	KeyType string `yaml:"key_type,omitempty"`
	// KeySize is the RSA key size: 2048 (default), 3072 or 4096.
	KeySize int `yaml:"key_size,omitempty"`
	// Curve is the EC curve: P-256 (default), P-384 or P-521.
	Curve string `yaml:"curve,omitempty"`
	// ReuseKey keeps the key pair across renewals.
	ReuseKey bool `yaml:"reuse_key,omitempty"`
	// Exportable defaults to true; false leaves the private key out of the linked secret.
	Exportable *bool `yaml:"exportable,omitempty"`
	// ContentType is the linked secret's: application/x-pkcs12 (default, or pkcs12) or
	// application/x-pem-file (or pem).
	ContentType string `yaml:"content_type,omitempty"`
	// ValidityMonths is the validity in months, 1-1200 (default 12).
	ValidityMonths int `yaml:"validity_months,omitempty"`
	// Validity is a validity Key Vault cannot express, a Go duration such as 2m, at least
	// 2s, for trying renewals and expiry; it overrides ValidityMonths.
	Validity string `yaml:"validity,omitempty"`
	// RenewAtPercentage is when AutoRenew renews, in percent of the lifetime (1-99;
	// default 80).
	RenewAtPercentage int `yaml:"renew_at_percentage,omitempty"`
	// RenewDaysBeforeExpiry is when AutoRenew renews, in days before expiry.
	RenewDaysBeforeExpiry int `yaml:"renew_days_before_expiry,omitempty"`
	// AutoRenew defaults to true; false makes the lifetime action EmailContacts, which
	// renews nothing.
	AutoRenew *bool `yaml:"auto_renew,omitempty"`
	// Enabled defaults to true.
	Enabled *bool `yaml:"enabled,omitempty"`
	// Tags are optional.
	Tags map[string]string `yaml:"tags,omitempty"`
	// ImportPEMFile imports the certificate, its chain and its private key from a PEM file
	// instead of issuing one (a path relative to the working directory).
	ImportPEMFile string `yaml:"import_pem_file,omitempty"`
	// ImportPFXFile imports a PKCS#12 file instead of issuing a certificate.
	ImportPFXFile string `yaml:"import_pfx_file,omitempty"`
	// Password is the PKCS#12 file's password, if it has one.
	Password string `yaml:"password,omitempty"`
}

// seedContentType reads a seed's content type.
func seedContentType(s string) (string, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "pkcs12", "pfx", ContentTypePKCS12:
		return ContentTypePKCS12, true
	case "pem", ContentTypePEM:
		return ContentTypePEM, true
	}
	return "", false
}

// imported reports whether the entry imports a file.
func (sc *seedCertificate) imported() bool { return sc.ImportPEMFile != "" || sc.ImportPFXFile != "" }

// policy is the entry's policy for [Vault.CreateCertificate] or [Vault.ImportCertificate].
func (sc *seedCertificate) policy() (CertificatePolicy, error) {
	ct, ok := seedContentType(sc.ContentType)
	if !ok {
		return CertificatePolicy{}, fmt.Errorf("content_type %q is not application/x-pkcs12 or application/x-pem-file", sc.ContentType)
	}
	p := CertificatePolicy{Issuer: sc.Issuer, Subject: sc.Subject, DNSNames: sc.DNSNames, Emails: sc.Emails, UPNs: sc.UPNs, KeyType: sc.KeyType,
		KeySize: sc.KeySize, Curve: sc.Curve, ReuseKey: sc.ReuseKey, ContentType: ct, ValidityMonths: sc.ValidityMonths}
	if sc.Exportable != nil {
		p.NotExportable = !*sc.Exportable
	}
	if sc.Validity != "" {
		d, err := time.ParseDuration(sc.Validity)
		if err != nil {
			return p, fmt.Errorf("validity %q is not a duration such as 2m or 720h", sc.Validity)
		}
		p.Validity = d
	}
	if sc.RenewAtPercentage != 0 && sc.RenewDaysBeforeExpiry != 0 {
		return p, errors.New("renew_at_percentage and renew_days_before_expiry exclude each other")
	}
	action := ActionAutoRenew
	if sc.AutoRenew != nil && !*sc.AutoRenew {
		action = ActionEmailContacts
	}
	if sc.RenewAtPercentage != 0 || sc.RenewDaysBeforeExpiry != 0 || action != ActionAutoRenew {
		a := LifetimeAction{Action: action, LifetimePercentage: sc.RenewAtPercentage, DaysBeforeExpiry: sc.RenewDaysBeforeExpiry}
		if a.LifetimePercentage == 0 && a.DaysBeforeExpiry == 0 {
			a.LifetimePercentage = defaultRenewPercent
		}
		p.LifetimeActions = []LifetimeAction{a}
	}
	return p, nil
}

// validateSeedIssuers checks the issuers of vaults[i] and returns their names, lowercase.
func validateSeedIssuers(i int, issuers []seedIssuer) (map[string]bool, []error) {
	var errs []error
	names := map[string]bool{}
	for j, si := range issuers {
		at := fmt.Sprintf("vaults[%d].issuers[%d]", i, j)
		key := strings.ToLower(si.Name)
		switch err := checkIssuerName(si.Name); {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: invalid issuer name %q: %w", at, si.Name, err))
		case names[key]:
			errs = append(errs, fmt.Errorf("%s: duplicate issuer %q", at, si.Name))
		default:
			names[key] = true
		}
		if si.CAPEMFile != "" && si.Subject != "" {
			errs = append(errs, fmt.Errorf("%s: subject is the generated CA's: it excludes ca_pem_file", at))
		}
		if si.Subject != "" {
			if _, err := parseSubject(si.Subject); err != nil {
				errs = append(errs, fmt.Errorf("%s: subject %q is not an X.500 distinguished name", at, si.Subject))
			}
		}
	}
	return names, errs
}

// validateSeedCertificates checks the issuers and certificates of vaults[i]. Errors never
// quote a password.
func validateSeedCertificates(i int, issuers []seedIssuer, certs []seedCertificate, secretNames map[string]bool) []error {
	issuerNames, errs := validateSeedIssuers(i, issuers)
	for j, sc := range certs {
		at := fmt.Sprintf("vaults[%d].certificates[%d]", i, j)
		if !secretNameRE.MatchString(sc.Name) {
			errs = append(errs, fmt.Errorf("%s: invalid certificate name %q (1-127 letters, digits, dashes)", at, sc.Name))
		} else if secretNames[strings.ToLower(sc.Name)] {
			errs = append(errs, fmt.Errorf("%s: %q is a secret's name too: a certificate's name is its linked secret's", at, sc.Name))
		}
		if sc.ImportPEMFile != "" && sc.ImportPFXFile != "" {
			errs = append(errs, fmt.Errorf("%s: import_pem_file and import_pfx_file exclude each other", at))
		}
		if sc.Password != "" && sc.ImportPFXFile == "" {
			errs = append(errs, fmt.Errorf("%s: password applies to import_pfx_file only", at))
		}
		switch {
		case sc.Issuer == "" || strings.EqualFold(sc.Issuer, "Self"):
		case sc.imported():
			errs = append(errs, fmt.Errorf("%s: an imported certificate's issuer is Unknown: issuer applies to issued certificates", at))
		case !issuerNames[strings.ToLower(sc.Issuer)]:
			errs = append(errs, fmt.Errorf("%s: issuer %q is not Self nor one of the vault's issuers", at, sc.Issuer))
		}
		p, err := sc.policy()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
			continue
		}
		if sc.imported() {
			issued := sc.Subject != "" || len(sc.DNSNames)+len(sc.Emails)+len(sc.UPNs) > 0 || sc.KeyType != "" || sc.KeySize != 0 ||
				sc.Curve != "" || sc.ReuseKey || sc.Exportable != nil || sc.ValidityMonths != 0 || sc.Validity != ""
			if issued {
				errs = append(errs, fmt.Errorf("%s: an imported certificate takes its subject, names, key and validity from the file", at))
			}
			for _, a := range p.LifetimeActions {
				if a.Action == ActionAutoRenew {
					errs = append(errs, fmt.Errorf("%s: an imported certificate does not renew: set auto_renew: false", at))
				}
			}
			continue
		}
		if _, err := policyFromGo(sc.Name, p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
	}
	return errs
}

// applySeedIssuers adds the vault's seed issuers, generating their CAs or reading them.
func (v *Vault) applySeedIssuers(issuers []seedIssuer) error {
	for _, si := range issuers {
		var opts []IssuerOption
		if si.Provider != "" {
			opts = append(opts, WithIssuerProvider(si.Provider))
		}
		if si.Enabled != nil {
			opts = append(opts, WithIssuerEnabled(*si.Enabled))
		}
		if si.CAPEMFile == "" {
			if si.Subject != "" {
				opts = append(opts, WithIssuerCASubject(si.Subject))
			}
			if err := v.addIssuer(si.Name, nil, nil, nil, opts...); err != nil {
				return err
			}
			continue
		}
		data, err := os.ReadFile(si.CAPEMFile)
		if err != nil {
			return fmt.Errorf("kvtest: seed issuer %s: %w", si.Name, err)
		}
		key, ca, above, err := parsePEMBundle(data)
		if err != nil {
			return fmt.Errorf("kvtest: seed issuer %s: %s: %w", si.Name, si.CAPEMFile, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return fmt.Errorf("kvtest: seed issuer %s: %s: the key cannot sign", si.Name, si.CAPEMFile)
		}
		if err := v.addIssuer(si.Name, ca, signer, above, opts...); err != nil {
			return fmt.Errorf("%w (%s)", err, si.CAPEMFile)
		}
	}
	return nil
}

// applySeedCertificates adds the vault's seed issuers, then issues or imports its seed
// certificates, in order.
func (v *Vault) applySeedCertificates(issuers []seedIssuer, certs []seedCertificate) error {
	if err := v.applySeedIssuers(issuers); err != nil {
		return err
	}
	for _, sc := range certs {
		p, err := sc.policy() // validated
		if err != nil {
			return err
		}
		opts := []CertificateOption{WithCertificateTags(sc.Tags)}
		if sc.Enabled != nil {
			opts = append(opts, WithCertificateEnabled(*sc.Enabled))
		}
		if !sc.imported() {
			v.CreateCertificate(sc.Name, p, opts...)
			continue
		}
		path := sc.ImportPEMFile + sc.ImportPFXFile
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("kvtest: seed certificate %s: %w", sc.Name, err)
		}
		if p.LifetimeActions == nil {
			p.LifetimeActions = []LifetimeAction{{Action: ActionEmailContacts, LifetimePercentage: defaultRenewPercent}}
		}
		if _, err := v.ImportCertificate(sc.Name, data, sc.Password, p, opts...); err != nil {
			return fmt.Errorf("kvtest: seed certificate %s from %s: %w", sc.Name, path, err)
		}
	}
	return nil
}
