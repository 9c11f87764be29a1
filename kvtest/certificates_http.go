package kvtest

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The certificates data plane: /certificates and /deletedcertificates, in the wire
// format of Key Vault's REST API as the azcertificates SDK reads it.

// Operations on certificates, counted by [Vault.Count] and targets of
// [Vault.InjectFault], each an authenticated request that passed RBAC and throttling.
const (
	// OpCreateCertificate counts POST /certificates/{name}/create.
	OpCreateCertificate Op = "createCertificate"
	// OpImportCertificate counts POST /certificates/{name}/import.
	OpImportCertificate Op = "importCertificate"
	// OpGetCertificate counts GET /certificates/{name}[/{version}].
	OpGetCertificate Op = "getCertificate"
	// OpUpdateCertificate counts PATCH /certificates/{name}[/{version}].
	OpUpdateCertificate Op = "updateCertificate"
	// OpDeleteCertificate counts DELETE /certificates/{name}.
	OpDeleteCertificate Op = "deleteCertificate"
	// OpListCertificates counts GET /certificates pages.
	OpListCertificates Op = "listCertificates"
	// OpListCertificateVersions counts GET /certificates/{name}/versions pages.
	OpListCertificateVersions Op = "listCertificateVersions"
	// OpGetCertificatePolicy counts GET /certificates/{name}/policy.
	OpGetCertificatePolicy Op = "getCertificatePolicy"
	// OpUpdateCertificatePolicy counts PATCH /certificates/{name}/policy.
	OpUpdateCertificatePolicy Op = "updateCertificatePolicy"
	// OpGetCertificateOperation counts GET /certificates/{name}/pending.
	OpGetCertificateOperation Op = "getCertificateOperation"
	// OpUpdateCertificateOperation counts PATCH /certificates/{name}/pending (cancel).
	OpUpdateCertificateOperation Op = "updateCertificateOperation"
	// OpDeleteCertificateOperation counts DELETE /certificates/{name}/pending.
	OpDeleteCertificateOperation Op = "deleteCertificateOperation"
	// OpGetDeletedCertificate counts GET /deletedcertificates/{name}.
	OpGetDeletedCertificate Op = "getDeletedCertificate"
	// OpListDeletedCertificates counts GET /deletedcertificates pages.
	OpListDeletedCertificates Op = "listDeletedCertificates"
	// OpRecoverDeletedCertificate counts POST /deletedcertificates/{name}/recover.
	OpRecoverDeletedCertificate Op = "recoverDeletedCertificate"
	// OpPurgeDeletedCertificate counts DELETE /deletedcertificates/{name}.
	OpPurgeDeletedCertificate Op = "purgeDeletedCertificate"
	// OpSetCertificateIssuer counts PUT /certificates/issuers/{name}.
	OpSetCertificateIssuer Op = "setCertificateIssuer"
	// OpUpdateCertificateIssuer counts PATCH /certificates/issuers/{name}.
	OpUpdateCertificateIssuer Op = "updateCertificateIssuer"
	// OpGetCertificateIssuer counts GET /certificates/issuers/{name}.
	OpGetCertificateIssuer Op = "getCertificateIssuer"
	// OpListCertificateIssuers counts GET /certificates/issuers pages.
	OpListCertificateIssuers Op = "listCertificateIssuers"
	// OpDeleteCertificateIssuer counts DELETE /certificates/issuers/{name}.
	OpDeleteCertificateIssuer Op = "deleteCertificateIssuer"
)

// certificateOps are the certificate operations, for the counters.
func certificateOps() []Op {
	return []Op{OpCreateCertificate, OpImportCertificate, OpGetCertificate, OpUpdateCertificate, OpDeleteCertificate,
		OpListCertificates, OpListCertificateVersions, OpGetCertificatePolicy, OpUpdateCertificatePolicy,
		OpGetCertificateOperation, OpUpdateCertificateOperation, OpDeleteCertificateOperation, OpGetDeletedCertificate,
		OpListDeletedCertificates, OpRecoverDeletedCertificate, OpPurgeDeletedCertificate,
		OpSetCertificateIssuer, OpUpdateCertificateIssuer, OpGetCertificateIssuer, OpListCertificateIssuers,
		OpDeleteCertificateIssuer}
}

// certDataAction is the RBAC data action of a certificate operation and the roles that
// grant it, from Azure's built-in role definitions: Key Vault Reader has
// Microsoft.KeyVault/vaults/*/read, Key Vault Certificate User certificates/read,
// Key Vault Certificates Officer certificates/*, Key Vault Administrator everything. Reads
// of deleted certificates, the policy and the pending operation are certificates/read, as
// Key Vault has no separate data action for them. Issuers have their own data actions,
// Microsoft.KeyVault/vaults/certificatecas/read, write and delete: Key Vault Certificates
// Officer has certificatecas/*, Key Vault Reader reads them (vaults/*/read), and Key Vault
// Certificate User, which has certificates/read only, has none.
func certDataAction(op Op) (string, []Role, bool) {
	read := []Role{RoleReader, RoleCertificateUser, RoleCertificatesOfficer, RoleAdministrator}
	write := []Role{RoleCertificatesOfficer, RoleAdministrator}
	const pre = "Microsoft.KeyVault/vaults/certificates/"
	const cas = "Microsoft.KeyVault/vaults/certificatecas/"
	switch op {
	case OpGetCertificateIssuer, OpListCertificateIssuers:
		return cas + "read", []Role{RoleReader, RoleCertificatesOfficer, RoleAdministrator}, true
	case OpSetCertificateIssuer, OpUpdateCertificateIssuer:
		return cas + "write", write, true
	case OpDeleteCertificateIssuer:
		return cas + "delete", write, true
	case OpGetCertificate, OpListCertificates, OpListCertificateVersions, OpGetCertificatePolicy,
		OpGetCertificateOperation, OpGetDeletedCertificate, OpListDeletedCertificates:
		return pre + "read", read, true
	case OpCreateCertificate:
		return pre + "create/action", write, true
	case OpImportCertificate:
		return pre + "import/action", write, true
	case OpUpdateCertificate, OpUpdateCertificatePolicy, OpUpdateCertificateOperation:
		return pre + "update/action", write, true
	case OpDeleteCertificate, OpDeleteCertificateOperation:
		return pre + "delete", write, true
	case OpRecoverDeletedCertificate:
		return pre + "recover/action", write, true
	case OpPurgeDeletedCertificate:
		return pre + "purge/action", write, true
	}
	return "", nil, false
}

// certRoute parses a request under /certificates or /deletedcertificates.
func (v *Vault) certRoute(r *http.Request, segs []string) (route, *kvError) {
	m := r.Method
	notFound := &kvError{http.StatusNotFound, "NotFound", "The requested path was not found: " + r.URL.Path}
	badMethod := &kvError{http.StatusMethodNotAllowed, "MethodNotAllowed", "The method " + m + " is not allowed on " + r.URL.Path}
	notEmulated := &kvError{http.StatusNotImplemented, "NotImplemented",
		"The emulator does not implement " + m + " " + r.URL.Path + ": certificate backup, restore, merge and contacts are not emulated."}
	if len(segs) > 2 && segs[len(segs)-1] == "" {
		segs = segs[:len(segs)-1] // /certificates/{name}/ and /certificates/{name}/{version}/
	}
	if len(segs) == 1 || (len(segs) == 2 && segs[1] == "") {
		if m != http.MethodGet {
			return route{}, badMethod
		}
		if segs[0] == "deletedcertificates" {
			return route{op: OpListDeletedCertificates, serve: v.listDeletedCerts}, nil
		}
		return route{op: OpListCertificates, serve: v.listCerts}, nil
	}
	name := segs[1]
	if segs[0] == "certificates" && name == "issuers" {
		return v.issuerRoute(r, segs[2:]) // certificates_issuers.go
	}
	if segs[0] == "certificates" && (name == "contacts" || name == "restore") {
		return route{}, notEmulated
	}
	if !secretNameRE.MatchString(name) {
		return route{}, &kvError{http.StatusBadRequest, "BadParameter", "The request URI contains an invalid name: " + name}
	}
	rt := func(op Op, version string, serve func(http.ResponseWriter, *http.Request, route)) (route, *kvError) {
		return route{op: op, name: name, version: strings.ToLower(version), serve: serve, res: "/certificates/" + name}, nil
	}
	rest := segs[2:]
	if segs[0] == "deletedcertificates" {
		switch {
		case len(rest) == 0 && m == http.MethodGet:
			return rt(OpGetDeletedCertificate, "", v.getDeletedCert)
		case len(rest) == 0 && m == http.MethodDelete:
			return rt(OpPurgeDeletedCertificate, "", v.purgeDeletedCert)
		case len(rest) == 0:
			return route{}, badMethod
		case len(rest) == 1 && rest[0] == "recover":
			if m != http.MethodPost {
				return route{}, badMethod
			}
			return rt(OpRecoverDeletedCertificate, "", v.recoverDeletedCert)
		}
		return route{}, notFound
	}
	if len(rest) == 0 {
		switch m {
		case http.MethodGet:
			return rt(OpGetCertificate, "", v.getCert)
		case http.MethodPatch:
			return rt(OpUpdateCertificate, "", v.updateCert)
		case http.MethodDelete:
			return rt(OpDeleteCertificate, "", v.deleteCert)
		}
		return route{}, badMethod
	}
	method := func(want string, op Op, serve func(http.ResponseWriter, *http.Request, route)) (route, *kvError) {
		if m != want {
			return route{}, badMethod
		}
		return rt(op, "", serve)
	}
	switch {
	case len(rest) == 1 && rest[0] == "create":
		return method(http.MethodPost, OpCreateCertificate, v.createCert)
	case len(rest) == 1 && rest[0] == "import":
		return method(http.MethodPost, OpImportCertificate, v.importCert)
	case len(rest) == 1 && rest[0] == "versions":
		return method(http.MethodGet, OpListCertificateVersions, v.listCertVersions)
	case len(rest) == 1 && rest[0] == "backup":
		return route{}, notEmulated
	case len(rest) == 1 && rest[0] == "policy":
		switch m {
		case http.MethodGet:
			return rt(OpGetCertificatePolicy, "", v.getCertPolicy)
		case http.MethodPatch:
			return rt(OpUpdateCertificatePolicy, "", v.updateCertPolicy)
		}
		return route{}, badMethod
	case len(rest) == 1 && rest[0] == "pending":
		switch m {
		case http.MethodGet:
			return rt(OpGetCertificateOperation, "", v.getCertOp)
		case http.MethodPatch:
			return rt(OpUpdateCertificateOperation, "", v.updateCertOp)
		case http.MethodDelete:
			return rt(OpDeleteCertificateOperation, "", v.deleteCertOp)
		}
		return route{}, badMethod
	case len(rest) == 2 && rest[0] == "pending" && rest[1] == "merge":
		return route{}, notEmulated
	case len(rest) == 1:
		switch m {
		case http.MethodGet:
			return rt(OpGetCertificate, rest[0], v.getCert)
		case http.MethodPatch:
			return rt(OpUpdateCertificate, rest[0], v.updateCert)
		}
		return route{}, badMethod
	}
	return route{}, notFound
}

// Wire types: Key Vault's JSON names, as azcertificates' models_serde.go reads them.

type policyJSON struct {
	ID              string                `json:"id,omitempty"`
	KeyProps        *keyPropsJSON         `json:"key_props,omitempty"`
	SecretProps     *secretPropsJSON      `json:"secret_props,omitempty"`
	X509Props       *x509PropsJSON        `json:"x509_props,omitempty"`
	LifetimeActions *[]lifetimeActionJSON `json:"lifetime_actions,omitempty"`
	Issuer          *issuerJSON           `json:"issuer,omitempty"`
	Attributes      *policyAttrsJSON      `json:"attributes,omitempty"`
}

// fillFrom completes an update with base's members where the update leaves them out: an
// update "sets the specified members and leaves the others" (UpdateCertificatePolicy), and
// SDKs send a section with no members for one they do not change (the JavaScript SDK sends
// "key_props":{}), which must change nothing. A key type of the other family takes none of
// base's key size or curve.
func (pj *policyJSON) fillFrom(base *certPolicy) {
	if kp := pj.KeyProps; kp != nil {
		sameFamily := kp.KTY == "" || strings.HasPrefix(strings.ToUpper(kp.KTY), "EC") == base.isEC()
		if kp.KTY == "" && (kp.Curve == "" || base.isEC()) {
			kp.KTY = base.kty
		}
		if sameFamily && kp.Curve == "" && kp.KeySize == nil {
			kp.Curve = base.curve
			ks := base.keySize
			kp.KeySize = &ks
		}
		if kp.Exportable == nil {
			e := base.exportable
			kp.Exportable = &e
		}
		if kp.ReuseKey == nil {
			r := base.reuseKey
			kp.ReuseKey = &r
		}
	}
	if sp := pj.SecretProps; sp != nil && sp.ContentType == "" {
		sp.ContentType = base.contentType
	}
	if xp := pj.X509Props; xp != nil {
		if xp.Subject == "" {
			xp.Subject = base.subject
		}
		if xp.SANs == nil || (len(xp.SANs.Emails) == 0 && len(xp.SANs.DNSNames) == 0 && len(xp.SANs.UPNs) == 0 &&
			len(xp.SANs.IPAddresses) == 0 && len(xp.SANs.URIs) == 0) {
			if base.sansGiven || xp.SANs == nil {
				s := base.sans
				xp.SANs = &s
			}
		}
		if xp.EKUs == nil {
			xp.EKUs = base.ekus
		}
		famChange := pj.KeyProps != nil && strings.HasPrefix(strings.ToUpper(pj.KeyProps.KTY), "EC") != base.isEC()
		if xp.KeyUsage == nil && !famChange { // the default key usage follows the key type
			xp.KeyUsage = base.keyUsage
		}
		if xp.ValidityMonths == nil {
			m := base.validityMonths
			xp.ValidityMonths = &m
			xp.keepValidity = base.validity
		}
	}
}

type keyPropsJSON struct {
	Exportable *bool  `json:"exportable,omitempty"`
	KTY        string `json:"kty,omitempty"`
	KeySize    *int   `json:"key_size,omitempty"`
	Curve      string `json:"crv,omitempty"`
	ReuseKey   *bool  `json:"reuse_key,omitempty"`
}

type secretPropsJSON struct {
	ContentType string `json:"contentType,omitempty"`
}

type x509PropsJSON struct {
	Subject          string                `json:"subject,omitempty"`
	SANs             *sansJSON             `json:"sans,omitempty"`
	EKUs             []string              `json:"ekus,omitempty"`
	KeyUsage         []string              `json:"key_usage,omitempty"`
	ValidityMonths   *int                  `json:"validity_months,omitempty"`
	BasicConstraints *basicConstraintsJSON `json:"basic_constraints,omitempty"`

	keepValidity time.Duration // an update's: the Go-only validity base had (fillFrom)
}

type basicConstraintsJSON struct {
	CA bool `json:"ca"`
}

type sansJSON struct {
	Emails      []string `json:"emails,omitempty"`
	DNSNames    []string `json:"dns_names,omitempty"`
	UPNs        []string `json:"upns,omitempty"`
	IPAddresses []string `json:"ipAddresses,omitempty"`
	URIs        []string `json:"uris,omitempty"`
}

type lifetimeActionJSON struct {
	Trigger *triggerJSON `json:"trigger,omitempty"`
	Action  *actionJSON  `json:"action,omitempty"`
}

type triggerJSON struct {
	LifetimePercentage *int `json:"lifetime_percentage,omitempty"`
	DaysBeforeExpiry   *int `json:"days_before_expiry,omitempty"`
}

type actionJSON struct {
	ActionType string `json:"action_type,omitempty"`
}

type issuerJSON struct {
	Name             string `json:"name,omitempty"`
	CertType         string `json:"cty,omitempty"`
	CertTransparency *bool  `json:"cert_transparency,omitempty"`
}

type policyAttrsJSON struct {
	Enabled *bool  `json:"enabled,omitempty"`
	Created *int64 `json:"created,omitempty"`
	Updated *int64 `json:"updated,omitempty"`
}

type certAttributesJSON struct {
	Enabled         bool   `json:"enabled"`
	NotBefore       int64  `json:"nbf"`
	Expires         int64  `json:"exp"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
}

type idJSON struct {
	ID string `json:"id"`
}

// certBundle is a certificate (full) or a list item (id, x5t, attributes, tags), deleted
// or not.
type certBundle struct {
	RecoveryID         string              `json:"recoveryId,omitempty"`
	DeletedDate        int64               `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64               `json:"scheduledPurgeDate,omitempty"`
	ID                 string              `json:"id"`
	KID                string              `json:"kid,omitempty"`
	SID                string              `json:"sid,omitempty"`
	X5T                string              `json:"x5t,omitempty"`
	CER                string              `json:"cer,omitempty"`
	Attributes         *certAttributesJSON `json:"attributes,omitempty"`
	Tags               map[string]string   `json:"tags,omitempty"`
	Policy             *policyJSON         `json:"policy,omitempty"`
	Pending            *idJSON             `json:"pending,omitempty"`
	PreserveCertOrder  *bool               `json:"preserveCertOrder,omitempty"`
}

type certOpJSON struct {
	ID                    string      `json:"id"`
	Issuer                *issuerJSON `json:"issuer,omitempty"`
	CSR                   string      `json:"csr,omitempty"`
	CancellationRequested bool        `json:"cancellation_requested"`
	Status                string      `json:"status"`
	StatusDetails         string      `json:"status_details,omitempty"`
	Target                string      `json:"target,omitempty"`
	RequestID             string      `json:"request_id"`
	PreserveCertOrder     *bool       `json:"preserveCertOrder,omitempty"`
}

type createCertBody struct {
	Policy            *policyJSON        `json:"policy"`
	Attributes        *attributesBody    `json:"attributes"`
	Tags              *map[string]string `json:"tags"`
	PreserveCertOrder *bool              `json:"preserveCertOrder"`
}

type importCertBody struct {
	Value             *string            `json:"value"`
	Password          string             `json:"pwd"`
	Policy            *policyJSON        `json:"policy"`
	Attributes        *attributesBody    `json:"attributes"`
	Tags              *map[string]string `json:"tags"`
	PreserveCertOrder *bool              `json:"preserveCertOrder"`
}

type updateCertBody struct {
	Policy     *policyJSON        `json:"policy"`
	Attributes *attributesBody    `json:"attributes"`
	Tags       *map[string]string `json:"tags"`
}

func badParameter(msg string) *kvError { return &kvError{http.StatusBadRequest, "BadParameter", msg} }

// readJSON reads a request body of at most 1 MB into into. The error never quotes the
// body (it may hold a private key or a password).
func readJSON(r *http.Request, into any) *kvError {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return badParameter("The request body could not be read.")
	}
	if err := json.Unmarshal(b, into); err != nil {
		return badParameter("The request body is not valid JSON.")
	}
	return nil
}

// checkTags enforces Key Vault's limits on tags.
func checkTags(tags *map[string]string) *kvError {
	if tags == nil {
		return nil
	}
	if len(*tags) > maxTags {
		return badParameter(invalidProperty)
	}
	for k, val := range *tags {
		if utf8.RuneCountInString(k) > maxTagLength || utf8.RuneCountInString(val) > maxTagLength {
			return badParameter(invalidProperty)
		}
	}
	return nil
}

// resolve makes the stored policy from a request's: sections given replace base's
// (a new policy's defaults when base is nil), and the result is checked.
func (pj *policyJSON) resolve(base *certPolicy, now time.Time) (*certPolicy, *kvError) {
	if base != nil {
		pj.fillFrom(base)
	}
	var p *certPolicy
	if base != nil {
		p = base.clone()
		p.updated = now
	} else {
		p = &certPolicy{issuer: "Unknown", kty: "RSA", keySize: 2048, exportable: true, contentType: ContentTypePKCS12,
			validityMonths: defaultValidityMonths, enabled: true, created: now, updated: now}
	}
	if is := pj.Issuer; is != nil {
		p.issuer, p.certType, p.certTransparency = is.Name, is.CertType, is.CertTransparency
		if p.issuer == "" {
			p.issuer = "Unknown"
		}
	}
	if kp := pj.KeyProps; kp != nil {
		p.kty, p.curve, p.exportable, p.reuseKey = kp.KTY, kp.Curve, true, false
		if p.kty == "" {
			p.kty = "RSA"
			if kp.Curve != "" {
				p.kty = "EC"
			}
		}
		if kp.Exportable != nil {
			p.exportable = *kp.Exportable
		}
		if kp.ReuseKey != nil {
			p.reuseKey = *kp.ReuseKey
		}
		switch strings.ToUpper(p.kty) {
		case "RSA", "RSA-HSM":
			p.keySize = 2048
			if kp.KeySize != nil {
				p.keySize = *kp.KeySize
			}
			if p.keySize != 2048 && p.keySize != 3072 && p.keySize != 4096 {
				return nil, badParameter("The key size " + strconv.Itoa(p.keySize) + " is not supported: RSA keys are 2048, 3072 or 4096 bits.")
			}
			p.curve = ""
		case "EC", "EC-HSM":
			if p.curve == "" {
				p.curve = "P-256"
				if kp.KeySize != nil {
					p.curve = map[int]string{256: "P-256", 384: "P-384", 521: "P-521"}[*kp.KeySize]
				}
			}
			sizes := map[string]int{"P-256": 256, "P-384": 384, "P-521": 521}
			size, ok := sizes[p.curve]
			if !ok {
				return nil, badParameter("The curve " + p.curve + " is not supported by the emulator: use P-256, P-384 or P-521.")
			}
			if kp.KeySize != nil && *kp.KeySize != size {
				return nil, badParameter("The key size " + strconv.Itoa(*kp.KeySize) + " does not match the curve " + p.curve + ".")
			}
			p.keySize = size
		default:
			return nil, badParameter("The key type " + p.kty + " is not supported for certificates: use RSA, RSA-HSM, EC or EC-HSM.")
		}
		if base != nil && !p.isEC() != !base.isEC() && pj.X509Props == nil {
			p.keyUsage = nil // the default key usage follows the key type
		}
	}
	if sp := pj.SecretProps; sp != nil {
		p.contentType = sp.ContentType
		if p.contentType == "" {
			p.contentType = ContentTypePKCS12
		}
	}
	if p.contentType != ContentTypePKCS12 && p.contentType != ContentTypePEM {
		return nil, badParameter("The secret content type " + p.contentType + " is not supported: use " + ContentTypePKCS12 + " or " + ContentTypePEM + ".")
	}
	if xp := pj.X509Props; xp != nil {
		p.subject, p.ekus, p.keyUsage, p.validityMonths = xp.Subject, xp.EKUs, xp.KeyUsage, defaultValidityMonths
		p.validity = xp.keepValidity
		p.sans, p.sansGiven = sansJSON{}, xp.SANs != nil
		if xp.SANs != nil {
			p.sans = *xp.SANs
		}
		if xp.ValidityMonths != nil {
			p.validityMonths = *xp.ValidityMonths
		}
	}
	if p.ekus == nil {
		p.ekus = []string{oidServerAuth, oidClientAuth}
	}
	if p.keyUsage == nil {
		p.keyUsage = []string{"digitalSignature", "keyEncipherment"}
		if p.isEC() {
			p.keyUsage = []string{"digitalSignature"}
		}
	}
	if e := p.checkX509(); e != nil {
		return nil, e
	}
	if pj.LifetimeActions != nil || base == nil || pj.Issuer != nil || pj.X509Props != nil {
		las := pj.LifetimeActions
		if las == nil && base != nil {
			las = actionsJSON(base.actions)
		}
		actions, e := resolveActions(las, p)
		if e != nil {
			return nil, e
		}
		p.actions = actions
	}
	if pj.Attributes != nil && pj.Attributes.Enabled != nil {
		p.enabled = *pj.Attributes.Enabled
	}
	return p, nil
}

// checkX509 checks the policy's X.509 properties.
func (p *certPolicy) checkX509() *kvError {
	if p.subject == "" && p.sans.empty() {
		return badParameter("The policy's x509_props need a subject or subject alternative names.")
	}
	if p.subject != "" {
		if _, err := parseSubject(p.subject); err != nil {
			return badParameter("The subject " + p.subject + " is not a valid X.500 distinguished name.")
		}
	}
	for _, ip := range p.sans.IPAddresses {
		if _, err := sanExtension(sansJSON{IPAddresses: []string{ip}}, false); err != nil {
			return badParameter("The subject alternative name " + ip + " is not an IP address.")
		}
	}
	for _, u := range p.sans.URIs {
		if !uriValid(u) {
			return badParameter("The subject alternative name " + u + " is not an absolute URI.")
		}
	}
	for _, e := range p.ekus {
		if _, err := parseOID(e); err != nil {
			return badParameter("The enhanced key usage " + e + " is not an OID.")
		}
	}
	for _, u := range p.keyUsage {
		if _, ok := keyUsageBits[u]; !ok {
			return badParameter("The key usage " + u + " is not one of Key Vault's.")
		}
	}
	if p.validityMonths < 1 || p.validityMonths > maxValidityMonths {
		return badParameter("validity_months must be between 1 and " + strconv.Itoa(maxValidityMonths) + ".")
	}
	return nil
}

// actionsJSON renders stored lifetime actions in the request's form.
func actionsJSON(actions []lifetimeAction) *[]lifetimeActionJSON {
	out := make([]lifetimeActionJSON, len(actions))
	for i, a := range actions {
		la := lifetimeActionJSON{Action: &actionJSON{ActionType: a.action}, Trigger: &triggerJSON{}}
		if a.pct > 0 {
			pct := a.pct
			la.Trigger.LifetimePercentage = &pct
		} else {
			days := a.days
			la.Trigger.DaysBeforeExpiry = &days
		}
		out[i] = la
	}
	return &out
}

// resolveActions checks lifetime actions; nil means Key Vault's default for the issuer:
// EmailContacts at 80% for Unknown, AutoRenew at 80% for an issuer that issues (Self or a
// certificate issuer).
func resolveActions(las *[]lifetimeActionJSON, p *certPolicy) ([]lifetimeAction, *kvError) {
	if las == nil {
		action := ActionAutoRenew
		if p.unknownIssuer() {
			action = ActionEmailContacts
		}
		return []lifetimeAction{{action: action, pct: defaultRenewPercent}}, nil
	}
	out := []lifetimeAction{}
	for _, la := range *las {
		if la.Action == nil || la.Trigger == nil {
			return nil, badParameter("A lifetime action needs a trigger and an action.")
		}
		var a lifetimeAction
		switch strings.ToLower(la.Action.ActionType) {
		case "autorenew":
			a.action = ActionAutoRenew
		case "emailcontacts":
			a.action = ActionEmailContacts
		default:
			return nil, badParameter("The lifetime action type " + la.Action.ActionType + " is not supported: use AutoRenew or EmailContacts.")
		}
		t := la.Trigger
		switch {
		case (t.LifetimePercentage == nil) == (t.DaysBeforeExpiry == nil):
			return nil, badParameter("A lifetime action's trigger needs exactly one of lifetime_percentage and days_before_expiry.")
		case t.LifetimePercentage != nil:
			if *t.LifetimePercentage < 1 || *t.LifetimePercentage > 99 {
				return nil, badParameter("lifetime_percentage must be between 1 and 99.")
			}
			a.pct = *t.LifetimePercentage
		default:
			if maxDays := p.validityMonths * 27; *t.DaysBeforeExpiry < 1 || *t.DaysBeforeExpiry > maxDays {
				return nil, badParameter("days_before_expiry must be between 1 and " + strconv.Itoa(maxDays) + " (27 times validity_months).")
			}
			a.days = *t.DaysBeforeExpiry
		}
		if a.action == ActionAutoRenew && p.unknownIssuer() {
			return nil, badParameter("AutoRenew needs an issuer that issues certificates (Self or a certificate issuer of the vault): a certificate of the issuer Unknown is not renewed by Key Vault.")
		}
		out = append(out, a)
	}
	return out, nil
}

// policyJSONOf renders a stored policy.
func (v *Vault) policyJSONOf(name string, p *certPolicy) *policyJSON {
	enabled, created, updated := p.enabled, p.created.Unix(), p.updated.Unix()
	exportable, reuse, size := p.exportable, p.reuseKey, p.keySize
	months := p.validityMonths
	pj := &policyJSON{
		ID:          "https://" + v.host + "/certificates/" + name + "/policy",
		KeyProps:    &keyPropsJSON{Exportable: &exportable, KTY: p.kty, KeySize: &size, Curve: p.curve, ReuseKey: &reuse},
		SecretProps: &secretPropsJSON{ContentType: p.contentType},
		X509Props: &x509PropsJSON{Subject: p.subject, EKUs: slices.Clone(p.ekus), KeyUsage: slices.Clone(p.keyUsage),
			ValidityMonths: &months, BasicConstraints: &basicConstraintsJSON{}},
		LifetimeActions: actionsJSON(p.actions),
		Issuer:          &issuerJSON{Name: p.issuer, CertType: p.certType, CertTransparency: p.certTransparency},
		Attributes:      &policyAttrsJSON{Enabled: &enabled, Created: &created, Updated: &updated},
	}
	if len(p.actions) == 0 {
		pj.LifetimeActions = nil
	}
	if p.sansGiven {
		s := p.sans
		pj.X509Props.SANs = &s
	}
	return pj
}

// certAttrsLocked renders a version's attributes. The caller holds v.mu.
func (v *Vault) certAttrsLocked(cv *certVersion) *certAttributesJSON {
	level, days := v.recoveryLevelLocked()
	return &certAttributesJSON{Enabled: cv.enabled, NotBefore: cv.leaf.NotBefore.Unix(), Expires: cv.leaf.NotAfter.Unix(),
		Created: cv.created.Unix(), Updated: cv.updated.Unix(), RecoveryLevel: level, RecoverableDays: days}
}

// certBundleLocked renders a certificate version: in full (kid, sid, cer, policy) or as a
// list item (id, x5t, attributes, tags), with or without the version in its id. A
// certificate without a version yet (its first still pending) renders as a list item
// with its policy's attributes. The caller holds v.mu.
func (v *Vault) certBundleLocked(c *certificate, cv *certVersion, full, withVersion bool) certBundle {
	b := certBundle{ID: "https://" + v.host + "/certificates/" + c.name}
	if cv == nil {
		level, days := v.recoveryLevelLocked()
		b.Attributes = &certAttributesJSON{Enabled: c.policy.enabled, Created: c.policy.created.Unix(),
			Updated: c.policy.updated.Unix(), RecoveryLevel: level, RecoverableDays: days}
		if full {
			b.Policy = v.policyJSONOf(c.name, c.policy)
		}
		return b
	}
	if withVersion {
		b.ID += "/" + cv.version
	}
	b.X5T, b.Attributes, b.Tags = cv.thumbprint(), v.certAttrsLocked(cv), maps.Clone(cv.tags)
	if full {
		b.KID = "https://" + v.host + "/keys/" + c.name + "/" + cv.version
		b.SID = "https://" + v.host + "/secrets/" + c.name + "/" + cv.version
		b.CER = base64.StdEncoding.EncodeToString(cv.leaf.Raw)
		b.Policy = v.policyJSONOf(c.name, c.policy)
		b.PreserveCertOrder = c.preserveOrder
		if c.op != nil {
			b.Pending = &idJSON{ID: "https://" + v.host + "/certificates/" + c.name + "/pending"}
		}
	}
	return b
}

// deletedCertBundleLocked renders a deleted certificate. The caller holds v.mu.
func (v *Vault) deletedCertBundleLocked(d *deletedCert, full bool) certBundle {
	b := v.certBundleLocked(d.cert, d.cert.latest(), full, full)
	b.RecoveryID = "https://" + v.host + "/deletedcertificates/" + d.cert.name
	b.DeletedDate = d.deletedAt.Unix()
	b.ScheduledPurgeDate = d.deletedAt.AddDate(0, 0, b.Attributes.RecoverableDays).Unix()
	return b
}

// certOpJSONLocked renders a pending operation. The caller holds v.mu.
func (v *Vault) certOpJSONLocked(c *certificate, op *certOperation) certOpJSON {
	o := certOpJSON{
		ID:                    "https://" + v.host + "/certificates/" + c.name + "/pending",
		Issuer:                &issuerJSON{Name: op.issuer},
		CSR:                   base64.StdEncoding.EncodeToString(op.csr),
		CancellationRequested: op.cancelRequested,
		Status:                op.status,
		RequestID:             op.requestID,
		PreserveCertOrder:     op.preserveOrder,
	}
	switch op.status {
	case "inProgress":
		o.StatusDetails = "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later."
	case "completed":
		o.Target = "https://" + v.host + "/certificates/" + c.name
	}
	return o
}

func certNotFound(id string) *kvError {
	return &kvError{http.StatusNotFound, "CertificateNotFound",
		"A certificate with (name/id) " + id + " was not found in this key vault." + strings.Replace(notFoundHelp, "secret", "certificate", 1)}
}

func (v *Vault) writeKVError(w http.ResponseWriter, e *kvError) {
	v.writeError(w, e.status, e.code, e.msg)
}

// certConflict answers a create or import the certificate's state forbids.
func (v *Vault) certConflict(w http.ResponseWriter, name, why string) {
	inner := "ObjectIsDeletedButRecoverable"
	switch {
	case strings.Contains(why, "being deleted"), strings.Contains(why, "being purged"):
		inner = "ObjectIsBeingDeleted"
	case strings.Contains(why, "being recovered"):
		inner = "ObjectIsBeingRecovered"
	case strings.Contains(why, "secret"):
		inner = ""
	}
	v.writeErrorInner(w, http.StatusConflict, "Conflict", "Certificate "+name+" cannot be created or imported: "+why+".", inner)
}

// managedSecretConflict answers a change to a certificate's linked secret through the
// secrets API (PUT, PATCH, DELETE, backup) and a PUT or restore of a secret whose name
// a certificate has. Key Vault refuses these, as the certificate manages its secret; its
// exact status is not documented, so the emulator answers 409 Conflict (the status Key
// Vault gives other operations on a name in use) with its own message.
func (v *Vault) managedSecretConflict(w http.ResponseWriter, name string) {
	v.writeError(w, http.StatusConflict, "Conflict", "Secret "+name+" is managed by the certificate "+name+
		": it changes only through the certificate's operations (create, import, update, delete).")
}

// getCertLocked finds a live certificate's version ("" = the latest). The caller holds
// v.mu.
func (v *Vault) getCertLocked(name, version string) (*certificate, *certVersion, *kvError) {
	c := v.certs.live[strings.ToLower(name)]
	if c == nil || len(c.versions) == 0 {
		return nil, nil, certNotFound(name)
	}
	if version == "" {
		return c, c.latest(), nil
	}
	cv := c.find(version)
	if cv == nil {
		return nil, nil, certNotFound(name + "/" + version)
	}
	return c, cv, nil
}

func (v *Vault) getCert(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	c, cv, e := v.getCertLocked(rt.name, rt.version)
	var b certBundle
	if e == nil {
		b = v.certBundleLocked(c, cv, true, true)
	}
	v.mu.RUnlock()
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) createCert(w http.ResponseWriter, r *http.Request, rt route) {
	var body createCertBody
	if e := readJSON(r, &body); e != nil {
		v.writeKVError(w, e)
		return
	}
	if e := checkTags(body.Tags); e != nil {
		v.writeKVError(w, e)
		return
	}
	key := strings.ToLower(rt.name)
	now := time.Now().Truncate(time.Second)
	v.mu.RLock()
	if why := v.certConflictLocked(key, time.Now()); why != "" {
		v.mu.RUnlock()
		v.certConflict(w, rt.name, why)
		return
	}
	existing := v.certs.live[key]
	var base *certPolicy
	var reuse crypto.Signer
	if existing != nil {
		base = existing.policy
		if cv := existing.latest(); cv != nil {
			reuse, _ = cv.key.(crypto.Signer)
		}
	}
	var p *certPolicy
	var e *kvError
	switch {
	case body.Policy != nil:
		p, e = body.Policy.resolve(nil, now)
	case base != nil:
		p = base.clone()
	default:
		e = badParameter("Property 'policy' is required to create the first version of a certificate.")
	}
	var ca *issuerCA
	if e == nil {
		var err error
		if ca, err = v.issuerCALocked(p); err != nil {
			e = badParameter("The certificate cannot be issued: " + err.Error() + ".")
		}
	}
	v.mu.RUnlock()
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	if !p.reuseKey {
		reuse = nil
	}
	signer := reuse
	if signer == nil {
		k, err := generateKey(p)
		if err != nil {
			v.writeError(w, http.StatusInternalServerError, "InternalServerError", "The key could not be generated.")
			return
		}
		signer = k
	}
	cv, err := issueCertificate(p, signer, now, ca)
	if err != nil {
		v.writeKVError(w, badParameter("The certificate could not be issued under its policy."))
		return
	}
	if body.Tags != nil {
		cv.tags = maps.Clone(*body.Tags)
	}
	if body.Attributes != nil && body.Attributes.Enabled != nil {
		cv.enabled = *body.Attributes.Enabled // the version's; the policy's stays
	}
	op := &certOperation{requestID: randomHex(16), issuer: p.issuer, csr: csrFor(p, signer), status: "inProgress",
		preserveOrder: body.PreserveCertOrder, issued: cv}
	c := v.lockForNewVersion(w, rt, key, p)
	if c == nil {
		return
	}
	c.policy, c.op, c.preserveOrder = p, op, body.PreserveCertOrder
	delay := v.srv.certIssueDelay()
	if delay <= 0 || v.certs.closed {
		v.completeCertOpLocked(c, op)
	} else {
		op.timer = time.AfterFunc(delay, func() {
			v.mu.Lock()
			defer v.mu.Unlock()
			if !v.certs.closed && v.certs.live[key] == c && c.op == op && op.status == "inProgress" {
				v.completeCertOpLocked(c, op)
			}
		})
	}
	out := v.certOpJSONLocked(c, op)
	v.mu.Unlock()
	v.srv.cfg.logger.Info("certificate requested", "vault", v.host, "certificate", c.name, "request", op.requestID)
	h := w.Header()
	h.Set("Location", "https://"+v.host+"/certificates/"+url.PathEscape(c.name)+"/pending?api-version="+
		url.QueryEscape(r.URL.Query().Get("api-version"))+"&request_id="+op.requestID)
	h.Set("Retry-After", retryAfterSeconds(delay))
	writeJSON(w, http.StatusAccepted, out)
}

// lockForNewVersion takes v.mu for a new version of the certificate rt names (key: its
// name lowercased) and returns the certificate, its policy's creation time carried over to
// p. If a version may not be added now it answers w, releases v.mu and returns nil: as
// documented for Key Vault ("Monitor and manage certificate creation"), 409 Forbidden while
// an operation is in progress; and 409 while the name is held otherwise (certConflictLocked).
func (v *Vault) lockForNewVersion(w http.ResponseWriter, rt route, key string, p *certPolicy) *certificate {
	v.mu.Lock()
	if c := v.certs.live[key]; c != nil && c.op != nil && c.op.status == "inProgress" {
		v.mu.Unlock()
		v.writeError(w, http.StatusConflict, "Forbidden",
			"A new key vault certificate can not be created or imported while a pending key vault certificate's status is inProgress.")
		return nil
	}
	if why := v.certConflictLocked(key, time.Now()); why != "" {
		v.mu.Unlock()
		v.certConflict(w, rt.name, why)
		return nil
	}
	c := v.certOrNewLocked(rt.name)
	if c.policy != nil {
		p.created = c.policy.created
	}
	return c
}

// completeCertOpLocked ends a pending operation: the version it issued is added, or, if a
// cancellation was requested, it is cancelled. The caller holds v.mu for writing.
func (v *Vault) completeCertOpLocked(c *certificate, op *certOperation) {
	op.timer = nil
	if op.cancelRequested {
		op.status, op.issued = "cancelled", nil
		return
	}
	cv := op.issued
	op.status, op.issued = "completed", nil
	v.addCertVersionLocked(c, cv)
	v.srv.cfg.logger.Info("certificate created", "vault", v.host, "certificate", c.name, "version", cv.version)
}

func (v *Vault) importCert(w http.ResponseWriter, r *http.Request, rt route) {
	var body importCertBody
	if e := readJSON(r, &body); e != nil {
		v.writeKVError(w, e)
		return
	}
	if body.Value == nil || *body.Value == "" {
		v.writeKVError(w, badParameter("Property 'value' is required."))
		return
	}
	if e := checkTags(body.Tags); e != nil {
		v.writeKVError(w, e)
		return
	}
	ct := ContentTypePKCS12
	if body.Policy != nil && body.Policy.SecretProps != nil && body.Policy.SecretProps.ContentType != "" {
		ct = body.Policy.SecretProps.ContentType
	}
	privKey, leaf, chain, e := decodeImport(*body.Value, body.Password, ct)
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	now := time.Now().Truncate(time.Second)
	p, e := importPolicy(body.Policy, leaf, privKey, now)
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	cv := &certVersion{version: randomHex(16), leaf: leaf, chain: chain, key: privKey, exportable: true,
		contentType: p.contentType, enabled: true, created: now, updated: now}
	if body.Attributes != nil && body.Attributes.Enabled != nil {
		cv.enabled = *body.Attributes.Enabled
	}
	if body.Tags != nil {
		cv.tags = maps.Clone(*body.Tags)
	}
	key := strings.ToLower(rt.name)
	c := v.lockForNewVersion(w, rt, key, p)
	if c == nil {
		return
	}
	c.policy, c.preserveOrder = p, body.PreserveCertOrder
	v.addCertVersionLocked(c, cv)
	b := v.certBundleLocked(c, cv, true, true)
	v.mu.Unlock()
	v.srv.cfg.logger.Info("certificate imported", "vault", v.host, "certificate", c.name, "version", cv.version)
	writeJSON(w, http.StatusOK, b)
}

// decodeImport reads an import's value in the policy's content type: base64 PKCS#12
// (with the password, if any), or PEM text, which the JavaScript SDK sends as is and the
// Python SDK base64-encodes (both are accepted). Errors never quote the value or the
// password.
func decodeImport(value, password, ct string) (crypto.PrivateKey, *x509.Certificate, []*x509.Certificate, *kvError) {
	switch ct {
	case ContentTypePEM:
		text := []byte(value)
		if !strings.Contains(value, "-----BEGIN") {
			if b, ok := decodeLenientBase64(value); ok && strings.Contains(string(b), "-----BEGIN") {
				text = b
			}
		}
		key, leaf, chain, err := parsePEMBundle(text)
		if err != nil {
			return nil, nil, nil, badParameter("The specified PEM X.509 certificate content is in an unexpected format: " + err.Error() + ".")
		}
		return key, leaf, chain, nil
	case ContentTypePKCS12:
		if strings.Contains(value, "-----BEGIN") {
			return nil, nil, nil, badParameter("The specified PKCS#12 X.509 certificate content is PEM: import PEM with the policy's secret_props.contentType " + ContentTypePEM + ".")
		}
		der, ok := decodeLenientBase64(value)
		if !ok {
			return nil, nil, nil, badParameter("The specified PKCS#12 X.509 certificate content is not base64.")
		}
		key, leaf, chain, err := parsePFX(der, password)
		if err != nil {
			return nil, nil, nil, badParameter("The specified PKCS#12 X.509 certificate content can not be read: " + err.Error() + ".")
		}
		return key, leaf, chain, nil
	}
	return nil, nil, nil, badParameter("The secret content type " + ct + " is not supported: use " + ContentTypePKCS12 + " or " + ContentTypePEM + ".")
}

func (v *Vault) updateCert(w http.ResponseWriter, r *http.Request, rt route) {
	var body updateCertBody
	if e := readJSON(r, &body); e != nil {
		v.writeKVError(w, e)
		return
	}
	if e := checkTags(body.Tags); e != nil {
		v.writeKVError(w, e)
		return
	}
	now := time.Now().Truncate(time.Second)
	v.mu.Lock()
	c, cv, e := v.getCertLocked(rt.name, rt.version)
	if e == nil && body.Policy != nil {
		var p *certPolicy
		if p, e = body.Policy.resolve(c.policy, now); e == nil {
			c.policy = p
		}
	}
	if e != nil {
		v.mu.Unlock()
		v.writeKVError(w, e)
		return
	}
	if a := body.Attributes; a != nil && a.Enabled != nil {
		// nbf and exp are the certificate's own: Key Vault keeps them.
		cv.enabled = *a.Enabled
		cv.secret.enabled = cv.enabled
	}
	if body.Tags != nil {
		cv.tags = maps.Clone(*body.Tags)
	}
	cv.updated, cv.secret.updated = now, now
	v.scheduleRenewLocked(strings.ToLower(c.name), c)
	b := v.certBundleLocked(c, cv, true, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) deleteCert(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	c := v.certs.live[key]
	if c == nil {
		v.mu.Unlock()
		v.writeKVError(w, certNotFound(rt.name))
		return
	}
	d := v.deleteCertLocked(key, c)
	b := v.deletedCertBundleLocked(d, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) getCertPolicy(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	c := v.certs.live[strings.ToLower(rt.name)]
	var pj *policyJSON
	if c != nil {
		pj = v.policyJSONOf(c.name, c.policy)
	}
	v.mu.RUnlock()
	if c == nil {
		v.writeKVError(w, certNotFound(rt.name))
		return
	}
	writeJSON(w, http.StatusOK, pj)
}

func (v *Vault) updateCertPolicy(w http.ResponseWriter, r *http.Request, rt route) {
	var body policyJSON
	if e := readJSON(r, &body); e != nil {
		v.writeKVError(w, e)
		return
	}
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	c := v.certs.live[key]
	if c == nil {
		v.mu.Unlock()
		v.writeKVError(w, certNotFound(rt.name))
		return
	}
	p, e := body.resolve(c.policy, time.Now().Truncate(time.Second))
	if e != nil {
		v.mu.Unlock()
		v.writeKVError(w, e)
		return
	}
	c.policy = p
	v.scheduleRenewLocked(key, c)
	pj := v.policyJSONOf(c.name, c.policy)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, pj)
}

// pendingLocked finds the certificate's pending operation, filtered by request_id.
func (v *Vault) pendingLocked(r *http.Request, name string) (*certificate, *kvError) {
	c := v.certs.live[strings.ToLower(name)]
	if c == nil || c.op == nil || (r.URL.Query().Get("request_id") != "" && r.URL.Query().Get("request_id") != c.op.requestID) {
		return nil, &kvError{http.StatusNotFound, "PendingCertificateNotFound", "Pending certificate not found: " + name}
	}
	return c, nil
}

func (v *Vault) getCertOp(w http.ResponseWriter, r *http.Request, rt route) {
	v.mu.RLock()
	c, e := v.pendingLocked(r, rt.name)
	var o certOpJSON
	if e == nil {
		o = v.certOpJSONLocked(c, c.op)
	}
	v.mu.RUnlock()
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// updateCertOp answers PATCH /certificates/{name}/pending {"cancellation_requested":
// true}: the request is marked, and the operation ends "cancelled" instead of completing.
// An operation not in progress answers 400, as documented.
func (v *Vault) updateCertOp(w http.ResponseWriter, r *http.Request, rt route) {
	var body struct {
		CancellationRequested *bool `json:"cancellation_requested"`
	}
	if e := readJSON(r, &body); e != nil {
		v.writeKVError(w, e)
		return
	}
	if body.CancellationRequested == nil {
		v.writeKVError(w, badParameter("Property 'cancellation_requested' is required."))
		return
	}
	v.mu.Lock()
	c, e := v.pendingLocked(r, rt.name)
	if e == nil && c.op.status != "inProgress" {
		e = badParameter("The pending certificate's status is " + c.op.status + ": only a request in progress can be cancelled.")
	}
	if e != nil {
		v.mu.Unlock()
		v.writeKVError(w, e)
		return
	}
	c.op.cancelRequested = c.op.cancelRequested || *body.CancellationRequested
	o := v.certOpJSONLocked(c, c.op)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, o)
}

// deleteCertOp answers DELETE /certificates/{name}/pending: the operation is gone (an
// issuance in progress with it); a certificate whose first version it was issuing is
// gone too.
func (v *Vault) deleteCertOp(w http.ResponseWriter, r *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	c, e := v.pendingLocked(r, rt.name)
	if e != nil {
		v.mu.Unlock()
		v.writeKVError(w, e)
		return
	}
	op := c.op
	if op.timer != nil {
		op.timer.Stop()
	}
	o := v.certOpJSONLocked(c, op)
	c.op = nil
	if len(c.versions) == 0 {
		delete(v.certs.live, key)
	}
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, o)
}

func (v *Vault) listCerts(w http.ResponseWriter, r *http.Request, _ route) {
	p, e := v.page(r)
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	pending := strings.EqualFold(r.URL.Query().Get("includePending"), "true")
	v.mu.RLock()
	keys := slices.Sorted(maps.Keys(v.certs.live))
	items := make([]certBundle, 0, len(keys))
	for _, k := range keys {
		c := v.certs.live[k]
		if cv := c.latest(); cv != nil || (pending && c.op != nil) {
			items = append(items, v.certBundleLocked(c, cv, false, false))
		}
	}
	v.mu.RUnlock()
	writePage(v, w, r, items, p)
}

// listCertVersions lists a certificate's versions by version ID, as the secrets' are.
func (v *Vault) listCertVersions(w http.ResponseWriter, r *http.Request, rt route) {
	p, e := v.page(r)
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	v.mu.RLock()
	c, _, e := v.getCertLocked(rt.name, "")
	var items []certBundle
	if e == nil {
		vs := slices.SortedFunc(slices.Values(c.versions), func(a, b *certVersion) int { return strings.Compare(a.version, b.version) })
		for _, cv := range vs {
			items = append(items, v.certBundleLocked(c, cv, false, true))
		}
	}
	v.mu.RUnlock()
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	writePage(v, w, r, items, p)
}

func (v *Vault) deletedCertNotFound(w http.ResponseWriter, name string) {
	v.writeError(w, http.StatusNotFound, "CertificateNotFound", "Deleted Certificate not found: "+name)
}

// getDeletedCert answers GET /deletedcertificates/{name}: 404 until the deletion has
// completed.
func (v *Vault) getDeletedCert(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	d := v.certs.deleted[strings.ToLower(rt.name)]
	if d != nil && d.deleting(time.Now()) {
		d = nil
	}
	var b certBundle
	if d != nil {
		b = v.deletedCertBundleLocked(d, true)
	}
	v.mu.RUnlock()
	if d == nil {
		v.deletedCertNotFound(w, rt.name)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) listDeletedCerts(w http.ResponseWriter, r *http.Request, _ route) {
	p, e := v.page(r)
	if e != nil {
		v.writeKVError(w, e)
		return
	}
	now := time.Now()
	v.mu.RLock()
	var keys []string
	for k, d := range v.certs.deleted {
		if !d.deleting(now) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	items := make([]certBundle, len(keys))
	for i, k := range keys {
		items[i] = v.deletedCertBundleLocked(v.certs.deleted[k], false)
	}
	v.mu.RUnlock()
	writePage(v, w, r, items, p)
}

// purgeDeletedCert answers DELETE /deletedcertificates/{name}, as a secret's purge: it
// completes after the deletion window, and a vault with purge protection refuses it.
func (v *Vault) purgeDeletedCert(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	now := time.Now()
	v.mu.Lock()
	v.certs.init()
	d, r := v.certs.deleted[key], v.certs.recovering[key]
	purging := v.certs.purgingLocked(key, now)
	switch {
	case r != nil:
		v.mu.Unlock()
		v.writeError(w, http.StatusConflict, "Conflict", "There was a conflict while purging the soft-deleted certificate '"+
			"https://"+v.host+"/deletedcertificates/"+r.d.cert.name+"'. This can happen when multiple operations are performed in parallel against the soft-deleted certificate. "+
			"To avoid this error, perform operations against the soft-deleted certificate in a sequential manner.")
		return
	case d != nil && d.deleting(now), d == nil && purging:
		v.mu.Unlock()
		v.writeErrorInner(w, http.StatusConflict, "Conflict", "Certificate is currently being deleted.", "ObjectIsBeingDeleted")
		return
	case d == nil:
		v.mu.Unlock()
		v.deletedCertNotFound(w, rt.name)
		return
	case v.purgeProtection:
		v.mu.Unlock()
		v.purgeProtected(w)
		return
	}
	delete(v.certs.deleted, key)
	if win := v.srv.cfg.deletionWindow; win > 0 {
		v.certs.purging[key] = purge{name: d.cert.name, until: now.Add(win)}
	}
	v.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// recoverDeletedCert answers POST /deletedcertificates/{name}/recover at once; the
// certificate and its linked secret are back after the recovery delay.
func (v *Vault) recoverDeletedCert(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	now := time.Now()
	v.mu.Lock()
	v.certs.init()
	d := v.certs.deleted[key]
	if r := v.certs.recovering[key]; r != nil {
		v.mu.Unlock()
		v.writeError(w, http.StatusConflict, "Conflict", "There was a conflict while recovering the soft-deleted certificate '"+
			"https://"+v.host+"/deletedcertificates/"+r.d.cert.name+"'. This can happen when multiple operations are performed in parallel against the soft-deleted certificate. "+
			"To avoid this error, perform operations against the soft-deleted certificate in a sequential manner.")
		return
	}
	if (d != nil && d.deleting(now)) || (d == nil && v.certs.purgingLocked(key, now)) {
		v.mu.Unlock()
		v.writeErrorInner(w, http.StatusConflict, "Conflict", "Certificate is currently being deleted.", "ObjectIsBeingDeleted")
		return
	}
	if d == nil {
		v.mu.Unlock()
		v.deletedCertNotFound(w, rt.name)
		return
	}
	delete(v.certs.deleted, key)
	v.recoverCertLocked(key, d)
	b := v.certBundleLocked(d.cert, d.cert.latest(), true, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

// Linked secrets through the secrets API.

// apiVersionAtLeast reports whether the api-version av is date-named and not older than
// min (both YYYY-MM-DD, optionally with a suffix); the 7.x versions are older than every
// date-named one but 2015-06-01 and 2016-10-01.
func apiVersionAtLeast(av, minimum string) bool {
	if len(av) < 10 || av[4] != '-' {
		return false
	}
	return av[:10] >= minimum
}

// linkedSecretLocked finishes a GET /secrets answer b for version sv of s: a linked
// secret's kid, managed and (api-version 2025-07-01 and later) previousVersion, and the
// outContentType conversion, which converts a PKCS#12 certificate to PEM, as Key Vault
// does; it is the only conversion Key Vault supports, others answer 400. The caller holds
// v.mu.
func (v *Vault) linkedSecretLocked(r *http.Request, s *secret, sv *secretVersion, b *secretBundle) *kvError {
	q := r.URL.Query()
	av := strings.ToLower(q.Get("api-version"))
	out := ""
	if apiVersionAtLeast(av, "2025-07-01") {
		out = q.Get("outContentType")
	}
	if out != "" && out != ContentTypePEM && out != ContentTypePKCS12 {
		return badParameter("The outContentType " + out + " is not supported: use " + ContentTypePEM + ".")
	}
	cv := sv.cert
	if cv == nil {
		return nil
	}
	managed := true
	b.Managed = &managed
	b.KID = "https://" + v.host + "/keys/" + s.name + "/" + sv.version
	if apiVersionAtLeast(av, "2025-07-01") {
		for i, x := range s.versions {
			if x == sv && i > 0 {
				b.PreviousVersion = s.versions[i-1].version
			}
		}
	}
	switch {
	case out == "" || out == sv.contentType:
	case out == ContentTypePEM:
		val, err := cv.secretValue(ContentTypePEM)
		if err != nil {
			return &kvError{http.StatusInternalServerError, "InternalServerError", "The certificate could not be converted."}
		}
		b.Value, b.ContentType = &val, ContentTypePEM
	default:
		return badParameter("Only the conversion of a PKCS#12 certificate to " + ContentTypePEM + " is supported.")
	}
	return nil
}
