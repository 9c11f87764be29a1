package kvtest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/viperkv/viperkv/internal/certtest"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// Certificate issuers (/certificates/issuers) and the certificates they sign: CRUD with
// the real azcertificates client, CA-signed certificates over the wire and from Go,
// their auto-renewal, RBAC and seeds.

// testCA makes a CA a test gives the emulator.
func testCA(cn string) *certtest.Issued {
	return certtest.New(nil, certtest.Options{CommonName: cn, IsCA: true, EC: true})
}

// verifies reports whether leaf chains to ca for TLS server authentication of dnsName,
// in the middle of its validity (a short-lived one may have expired by the time it is
// checked).
func verifies(leaf, ca *x509.Certificate, dnsName string) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: dnsName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		CurrentTime: leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)})
	return err
}

// TestCertificateIssuerCRUD: PUT, GET, list, PATCH and DELETE of issuers with the real
// client, in Key Vault's JSON (credentials without the password, org_details, attributes);
// 404 CertificateIssuerNotFound, reserved names and a missing provider; the password
// appears in no answer and no log line.
func TestCertificateIssuerCRUD(t *testing.T) {
	var logs logtest.Buffer
	srv := newServer(t, kvtest.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	kv := srv.AddVault("myvault")
	certs, _ := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer)
	ctx := ctxTimeout(t, 60*time.Second)
	const password = "Issuer-Passw0rd-1337"

	set, err := certs.SetIssuer(ctx, "digicert-ov", azcertificates.SetIssuerParameters{
		Provider:    to.Ptr("DigiCert"),
		Credentials: &azcertificates.IssuerCredentials{AccountID: to.Ptr("contoso-account"), Password: to.Ptr(password)},
		OrganizationDetails: &azcertificates.OrganizationDetails{ID: to.Ptr("org-42"), AdminContacts: []*azcertificates.AdministratorContact{
			{FirstName: to.Ptr("Ada"), LastName: to.Ptr("Lovelace"), Email: to.Ptr("ada@contoso.test"), Phone: to.Ptr("4255550100")}}},
		Attributes: &azcertificates.IssuerAttributes{Enabled: to.Ptr(true)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *set.ID != "https://myvault.vault.azure.net/certificates/issuers/digicert-ov" || *set.Provider != "DigiCert" ||
		*set.Credentials.AccountID != "contoso-account" || set.Credentials.Password != nil ||
		*set.OrganizationDetails.ID != "org-42" || len(set.OrganizationDetails.AdminContacts) != 1 ||
		*set.OrganizationDetails.AdminContacts[0].Email != "ada@contoso.test" ||
		!*set.Attributes.Enabled || set.Attributes.Created == nil || set.Attributes.Updated == nil {
		t.Fatalf("SetIssuer answered %+v", set.Issuer)
	}
	if _, err := certs.SetIssuer(ctx, "private", azcertificates.SetIssuerParameters{Provider: to.Ptr("OneCertV2-PrivateCA")}, nil); err != nil {
		t.Fatal(err)
	}

	got, err := certs.GetIssuer(ctx, "digicert-ov", nil)
	if err != nil || *got.Provider != "DigiCert" || *got.Credentials.AccountID != "contoso-account" || got.Credentials.Password != nil ||
		*got.OrganizationDetails.AdminContacts[0].FirstName != "Ada" {
		t.Fatalf("GetIssuer: %v %+v", err, got.Issuer)
	}
	var listed []string
	pager := certs.NewListIssuerPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Value {
			listed = append(listed, strings.TrimPrefix(*it.ID, "https://myvault.vault.azure.net/certificates/issuers/")+"="+*it.Provider)
		}
	}
	if !slices.Equal(listed, []string{"digicert-ov=DigiCert", "private=OneCertV2-PrivateCA"}) {
		t.Errorf("listed %v", listed)
	}

	upd, err := certs.UpdateIssuer(ctx, "digicert-ov", azcertificates.UpdateIssuerParameters{
		Provider: to.Ptr("GlobalSign"), Attributes: &azcertificates.IssuerAttributes{Enabled: to.Ptr(false)}}, nil)
	if err != nil || *upd.Provider != "GlobalSign" || *upd.Attributes.Enabled || *upd.Credentials.AccountID != "contoso-account" ||
		*upd.OrganizationDetails.ID != "org-42" {
		t.Fatalf("UpdateIssuer: %v %+v", err, upd.Issuer)
	}
	// A PUT replaces every section: the credentials and organisation are gone.
	put, err := certs.SetIssuer(ctx, "digicert-ov", azcertificates.SetIssuerParameters{Provider: to.Ptr("DigiCert")}, nil)
	if err != nil || put.Credentials != nil || put.OrganizationDetails != nil || !*put.Attributes.Enabled ||
		!put.Attributes.Created.Equal(*set.Attributes.Created) {
		t.Errorf("SetIssuer over an issuer: %v %+v", err, put.Issuer)
	}

	del, err := certs.DeleteIssuer(ctx, "digicert-ov", nil)
	if err != nil || *del.Provider != "DigiCert" {
		t.Fatalf("DeleteIssuer: %v", err)
	}
	for what, call := range map[string]func() error{
		"get": func() error { _, err := certs.GetIssuer(ctx, "digicert-ov", nil); return err },
		"update": func() error {
			_, err := certs.UpdateIssuer(ctx, "digicert-ov", azcertificates.UpdateIssuerParameters{}, nil)
			return err
		},
		"delete": func() error { _, err := certs.DeleteIssuer(ctx, "digicert-ov", nil); return err },
	} {
		if st, code, _ := responseError(t, call()); st != 404 || code != "CertificateIssuerNotFound" {
			t.Errorf("%s of a deleted issuer: %d %s", what, st, code)
		}
	}
	for name, params := range map[string]azcertificates.SetIssuerParameters{
		"Self":    {Provider: to.Ptr("DigiCert")},
		"unknown": {Provider: to.Ptr("DigiCert")},
		"no-prov": {},
	} {
		_, err := certs.SetIssuer(ctx, name, params, nil)
		if st, code, _ := responseError(t, err); st != 400 || code != "BadParameter" {
			t.Errorf("SetIssuer %s: %d %s", name, st, code)
		}
	}

	// The emulator generated a CA for the issuer created over the wire.
	if ca, ok := kv.IssuerCA("private"); !ok || ca.Subject.CommonName != "private" || !ca.IsCA {
		t.Errorf("IssuerCA(private): %v %v", ca, ok)
	}
	if got := kv.IssuerNames(); !slices.Equal(got, []string{"private"}) {
		t.Errorf("IssuerNames %v", got)
	}
	if kv.Count(kvtest.OpSetCertificateIssuer) != 6 || kv.Count(kvtest.OpListCertificateIssuers) != 1 {
		t.Errorf("counts: set %d, list %d", kv.Count(kvtest.OpSetCertificateIssuer), kv.Count(kvtest.OpListCertificateIssuers))
	}
	if !strings.Contains(logs.String(), "certificate issuer set") {
		t.Error("the log does not show the issuer being set")
	}
	if strings.Contains(logs.String(), password) {
		t.Error("the issuer's password was logged")
	}
}

// TestCertificateIssuerCreate: a certificate whose policy names an issuer, created over
// the wire, is signed by the issuer's CA: the subject, SANs and key type are the policy's,
// cer is the leaf, and the linked secret holds the key, the leaf and the CA (PEM and
// PKCS#12). The default lifetime action is AutoRenew at 80%. Creates naming an issuer the
// vault lacks, a disabled one or Unknown answer 400.
func TestCertificateIssuerCreate(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(200*time.Millisecond))
	kv := srv.AddVault("myvault")
	certs, secrets := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer, kvtest.RoleSecretsUser)
	ctx := ctxTimeout(t, 60*time.Second)

	// An issuer created over the wire: the emulator generates its CA.
	if _, err := certs.SetIssuer(ctx, "internal-ca", azcertificates.SetIssuerParameters{Provider: to.Ptr("OneCertV2-PrivateCA")}, nil); err != nil {
		t.Fatal(err)
	}
	generated, _ := kv.IssuerCA("internal-ca")
	// An issuer given a CA in Go.
	given := testCA("Contoso Test Root")
	kv.AddIssuer("contoso", given.Leaf(), given.Key, kvtest.WithIssuerProvider("GlobalSign"))

	policy := func(issuer, subject, dns, ct string, kty azcertificates.KeyType) *azcertificates.CertificatePolicy {
		return &azcertificates.CertificatePolicy{
			IssuerParameters: &azcertificates.IssuerParameters{Name: to.Ptr(issuer)},
			KeyProperties:    &azcertificates.KeyProperties{KeyType: to.Ptr(kty), Exportable: to.Ptr(true)},
			SecretProperties: &azcertificates.SecretProperties{ContentType: to.Ptr(ct)},
			X509CertificateProperties: &azcertificates.X509CertificateProperties{Subject: to.Ptr(subject),
				SubjectAlternativeNames: &azcertificates.SubjectAlternativeNames{DNSNames: []*string{to.Ptr(dns)}}},
		}
	}
	for _, tc := range []struct {
		cert, issuer, dns, ct string
		kty                   azcertificates.KeyType
		ca                    *x509.Certificate
	}{
		{"api-tls", "internal-ca", "api.internal", kvtest.ContentTypePEM, azcertificates.KeyTypeEC, generated},
		{"web-tls", "contoso", "web.contoso.test", kvtest.ContentTypePKCS12, azcertificates.KeyTypeRSA, given.Leaf()},
	} {
		created, err := certs.CreateCertificate(ctx, tc.cert, azcertificates.CreateCertificateParameters{
			CertificatePolicy: policy(tc.issuer, "CN="+tc.dns+", O=Contoso", tc.dns, tc.ct, tc.kty)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if *created.Status != "inProgress" || *created.IssuerParameters.Name != tc.issuer || len(created.CSR) == 0 {
			t.Errorf("%s: operation %+v", tc.cert, created.CertificateOperation)
		}
		if op := waitOperation(t, certs, tc.cert); *op.Status != "completed" || *op.IssuerParameters.Name != tc.issuer {
			t.Fatalf("%s: operation %s", tc.cert, *op.Status)
		}
		got, err := certs.GetCertificate(ctx, tc.cert, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(got.CER)
		if err != nil {
			t.Fatal(err)
		}
		if err := verifies(leaf, tc.ca, tc.dns); err != nil {
			t.Errorf("%s does not verify against its issuer's CA: %v", tc.cert, err)
		}
		if leaf.Subject.CommonName != tc.dns || !slices.Equal(leaf.DNSNames, []string{tc.dns}) || leaf.Issuer.String() != tc.ca.Subject.String() ||
			leaf.IsCA {
			t.Errorf("%s: subject %s, SANs %v, issuer %s", tc.cert, leaf.Subject, leaf.DNSNames, leaf.Issuer)
		}
		if _, ec := leaf.PublicKey.(*ecdsa.PublicKey); ec != (tc.kty == azcertificates.KeyTypeEC) {
			t.Errorf("%s: key %T, want %s", tc.cert, leaf.PublicKey, tc.kty)
		}
		p := got.Policy
		if *p.IssuerParameters.Name != tc.issuer || *p.LifetimeActions[0].Action.ActionType != azcertificates.CertificatePolicyActionAutoRenew ||
			*p.LifetimeActions[0].Trigger.LifetimePercentage != 80 {
			t.Errorf("%s: policy issuer %s, actions %+v", tc.cert, *p.IssuerParameters.Name, p.LifetimeActions[0])
		}

		s, err := secrets.GetSecret(ctx, tc.cert, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var key any
		var chain []*x509.Certificate
		if tc.ct == kvtest.ContentTypePEM {
			key, chain = parsePEMSecret(t, *s.Value)
		} else {
			der, err := base64.StdEncoding.DecodeString(*s.Value)
			if err != nil {
				t.Fatal(err)
			}
			k, l, cas, err := pkcs12.DecodeChain(der, "")
			if err != nil {
				t.Fatal(err)
			}
			key, chain = k, append([]*x509.Certificate{l}, cas...)
		}
		if len(chain) != 2 || !chain[0].Equal(leaf) || !chain[1].Equal(tc.ca) || !samePublicKey(key, leaf) {
			t.Errorf("%s: linked secret holds %d certificates, want the leaf with its key, then the CA", tc.cert, len(chain))
		}
	}

	// Issuers that cannot issue.
	kv.AddIssuer("off", nil, nil, kvtest.WithIssuerEnabled(false))
	for _, issuer := range []string{"nobody", "off", "Unknown"} {
		_, err := certs.CreateCertificate(ctx, "refused", azcertificates.CreateCertificateParameters{
			CertificatePolicy: policy(issuer, "CN=x", "x.test", kvtest.ContentTypePEM, azcertificates.KeyTypeEC)}, nil)
		if st, code, _ := responseError(t, err); st != 400 || code != "BadParameter" {
			t.Errorf("create with issuer %s: %d %s", issuer, st, code)
		}
	}
	if kv.CertificateVersions("refused") != nil {
		t.Error("a refused create made a certificate")
	}
}

// TestCertificateIssuerAutoRenew: a certificate of an issuer given in Go, valid 4 s and
// renewed at 50%, renews about every 2 s, each version signed by the CA with a new key,
// each publishing CertificateNewVersionCreated; RenewCertificate renews it too, until the
// issuer is deleted.
func TestCertificateIssuerAutoRenew(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	sub := kv.Subscribe(kvtest.EventSubscription{Name: "certs", Endpoint: hook.URL, Client: hook.Client(), EventTypes: certEventTypes})
	waitValidated(t, sub)
	ca := testCA("Renewals CA")
	kv.AddIssuer("renewals-ca", ca.Leaf(), ca.Key)
	if got, ok := kv.IssuerCA("renewals-ca"); !ok || !got.Equal(ca.Leaf()) {
		t.Fatal("IssuerCA is not the CA given")
	}

	start := time.Now()
	first := kv.CreateCertificate("short", kvtest.CertificatePolicy{Issuer: "renewals-ca", Subject: "CN=svc.internal",
		DNSNames: []string{"svc.internal"}, KeyType: "EC", ContentType: kvtest.ContentTypePEM, Validity: 4 * time.Second,
		LifetimeActions: []kvtest.LifetimeAction{{Action: kvtest.ActionAutoRenew, LifetimePercentage: 50}}})
	vs := waitVersions(t, kv, "short", 3, 20*time.Second)
	if vs[0] != first {
		t.Fatalf("versions %v do not start with %s", vs, first)
	}
	if el := time.Since(start); el < 3*time.Second {
		t.Errorf("two renewals within %v: renewing at 50%% of 4 s takes about 2 s each", el)
	}
	var prev *x509.Certificate
	for i, v := range vs[:3] {
		leaf, _ := kv.Certificate("short", v)
		if err := verifies(leaf, ca.Leaf(), "svc.internal"); err != nil {
			t.Errorf("version %d does not verify against the CA: %v", i, err)
		}
		if prev != nil && (!leaf.NotBefore.After(prev.NotBefore) || leaf.PublicKey.(*ecdsa.PublicKey).Equal(prev.PublicKey)) {
			t.Errorf("version %d: not newer, or the same key", i)
		}
		prev = leaf
	}
	evs := hook.waitEvents(t, "certs", 3)
	created := map[string]bool{}
	for _, e := range hook.eventsOf(t, "certs") {
		if e.Type == kvtest.EventCertificateNewVersionCreated {
			created[e.version()] = true
		}
	}
	for _, v := range vs[:3] {
		if !created[v] {
			t.Errorf("no CertificateNewVersionCreated for %s (events %d)", v, len(evs))
		}
	}

	// RenewCertificate renews with the CA now; without the issuer, it fails.
	v, err := kv.RenewCertificate("short")
	if err != nil {
		t.Fatal(err)
	}
	if leaf, _ := kv.Certificate("short", v); verifies(leaf, ca.Leaf(), "svc.internal") != nil {
		t.Error("RenewCertificate's version does not verify against the CA")
	}
	certs, _ := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer)
	if _, err := certs.DeleteIssuer(ctxTimeout(t, 30*time.Second), "renewals-ca", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.RenewCertificate("short"); err == nil || !strings.Contains(err.Error(), "no certificate issuer renewals-ca") {
		t.Errorf("renewal without the issuer: %v", err)
	}
}

// eventsOf returns every event the subscription's webhook has received so far.
func (h *webhook) eventsOf(t *testing.T, sub string) []tEvent {
	t.Helper()
	var out []tEvent
	for _, r := range h.notifications(sub) {
		out = append(out, parseEvents(t, r)...)
	}
	return out
}

// TestCertificateIssuerRBAC: managing issuers takes Key Vault Certificates Officer (or
// Administrator), certificatecas/write and delete; Key Vault Reader reads them; Key Vault
// Certificate User, which reads certificates, and the secrets roles do not.
func TestCertificateIssuerRBAC(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.AddIssuer("ca", nil, nil)
	ctx := ctxTimeout(t, 60*time.Second)
	for _, tc := range []struct {
		role              kvtest.Role
		read, set, delete bool
	}{
		{kvtest.RoleCertificatesOfficer, true, true, true},
		{kvtest.RoleAdministrator, true, true, true},
		{kvtest.RoleReader, true, false, false},
		{kvtest.RoleCertificateUser, false, false, false},
		{kvtest.RoleSecretsOfficer, false, false, false},
	} {
		certs, _ := certClients(t, srv, kv, tc.role)
		check := func(what string, want bool, action string, err error) {
			t.Helper()
			if want {
				if err != nil {
					t.Errorf("%s: %s: %v", tc.role, what, err)
				}
				return
			}
			if err == nil {
				t.Errorf("%s: %s: allowed, want 403", tc.role, what)
				return
			}
			msg := err.Error() // before responseError reads the body
			if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" {
				t.Errorf("%s: %s: %d %s, want 403 ForbiddenByRbac", tc.role, what, st, inner)
			}
			if !strings.Contains(msg, "Microsoft.KeyVault/vaults/certificatecas/"+action) {
				t.Errorf("%s: %s: the denial does not name certificatecas/%s: %s", tc.role, what, action, msg)
			}
		}
		_, err := certs.GetIssuer(ctx, "ca", nil)
		check("get", tc.read, "read", err)
		_, err = certs.NewListIssuerPropertiesPager(nil).NextPage(ctx)
		check("list", tc.read, "read", err)
		name := "by-" + strings.ReplaceAll(strings.ToLower(string(tc.role)), " ", "-")
		_, err = certs.SetIssuer(ctx, name, azcertificates.SetIssuerParameters{Provider: to.Ptr("DigiCert")}, nil)
		check("set", tc.set, "write", err)
		_, err = certs.UpdateIssuer(ctx, "ca", azcertificates.UpdateIssuerParameters{Provider: to.Ptr("DigiCert")}, nil)
		check("update", tc.set, "write", err)
		if tc.delete {
			_, err = certs.DeleteIssuer(ctx, name, nil)
		} else {
			_, err = certs.DeleteIssuer(ctx, "ca", nil)
		}
		check("delete", tc.delete, "delete", err)
	}
	if _, ok := kv.IssuerCA("ca"); !ok {
		t.Error("a denied delete deleted the issuer")
	}
}

// TestCertificateIssuerSeed: a seed's issuers (a generated CA with its subject, and a CA
// read from a PEM file) and certificates naming them, which renew signed by their CA; and
// the seed's errors.
func TestCertificateIssuerSeed(t *testing.T) {
	dir := t.TempDir()
	fileCA := testCA("File CA")
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, []byte(fileCA.PEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	seed := `
vaults:
  - name: myvault
    issuers:
      - name: internal-ca
        provider: OneCertV2-PrivateCA
        subject: "CN=Internal CA, O=Contoso"
      - name: file-ca
        ca_pem_file: ` + caPath + `
    certificates:
      - name: api-tls
        issuer: internal-ca
        subject: CN=api.internal
        dns_names: [api.internal]
        key_type: EC
        validity: 4s
        renew_at_percentage: 50
      - name: web-tls
        issuer: file-ca
        dns_names: [web.contoso.test]
      - name: plain
`
	srv := newServer(t, kvtest.WithSeed([]byte(seed)))
	kv := srv.Vault("myvault")
	internal, ok := kv.IssuerCA("internal-ca")
	if !ok || internal.Subject.String() != "CN=Internal CA,O=Contoso" {
		t.Fatalf("internal-ca: %v", internal)
	}
	if got, _ := kv.IssuerCA("file-ca"); !got.Equal(fileCA.Leaf()) {
		t.Error("file-ca is not the CA of the file")
	}
	for name, want := range map[string]*x509.Certificate{"api-tls": internal, "web-tls": fileCA.Leaf()} {
		leaf, _ := kv.Certificate(name, "")
		if err := verifies(leaf, want, leaf.DNSNames[0]); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if leaf, _ := kv.Certificate("plain", ""); leaf.Issuer.String() != leaf.Subject.String() {
		t.Error("plain is not self-signed")
	}
	vs := waitVersions(t, kv, "api-tls", 2, 20*time.Second)
	if leaf, _ := kv.Certificate("api-tls", vs[1]); verifies(leaf, internal, "api.internal") != nil {
		t.Error("the renewal of api-tls does not verify against internal-ca")
	}

	for _, bad := range []struct{ seed, want string }{
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    issuer: nobody\n", `issuer "nobody" is not Self`},
		{"vaults:\n- name: v\n  issuers:\n  - name: Self\n", "reserved"},
		{"vaults:\n- name: v\n  issuers:\n  - name: a\n  - name: A\n", "duplicate issuer"},
		{"vaults:\n- name: v\n  issuers:\n  - name: a\n    subject: CN=x\n    ca_pem_file: ca.pem\n", "excludes ca_pem_file"},
		{"vaults:\n- name: v\n  issuers:\n  - name: a\n    subject: not a name\n", "not an X.500"},
		{"vaults:\n- name: v\n  issuers:\n  - name: a\n    colour: blue\n", `unknown field "colour" in issuer "a"`},
		{"vaults:\n- name: v\n  issuers:\n  - name: a\n  certificates:\n  - name: c\n    issuer: a\n    import_pem_file: x.pem\n    auto_renew: false\n", "issuer applies to issued"},
	} {
		_, err := kvtest.ParseSeed(strings.NewReader(bad.seed))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("seed %q: error %v, want %q", bad.seed, err, bad.want)
		}
	}
	// A CA file whose certificate is not a CA fails the start.
	leafOnly := certtest.New(nil, certtest.Options{CommonName: "not a CA", EC: true})
	notCA := filepath.Join(dir, "leaf.pem")
	if err := os.WriteFile(notCA, []byte(leafOnly.PEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	sd, err := kvtest.ParseSeed(strings.NewReader("vaults:\n- name: v\n  issuers:\n  - name: a\n    ca_pem_file: " + notCA + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kvtest.ApplySeed(newServer(t), sd); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("a leaf as CA: %v", err)
	}
}

// TestAddIssuerPanics: AddIssuer refuses what cannot be a CA.
func TestAddIssuerPanics(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	ca := testCA("CA")
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := certtest.New(ca, certtest.Options{CommonName: "leaf", EC: true})
	for what, add := range map[string]func(){
		"reserved name": func() { kv.AddIssuer("Unknown", nil, nil) },
		"invalid name":  func() { kv.AddIssuer("a_b", nil, nil) },
		"not a CA":      func() { kv.AddIssuer("x", leaf.Leaf(), leaf.Key) },
		"another key":   func() { kv.AddIssuer("x", ca.Leaf(), other) },
		"key missing":   func() { kv.AddIssuer("x", ca.Leaf(), nil) },
		"subject given": func() { kv.AddIssuer("x", ca.Leaf(), ca.Key, kvtest.WithIssuerCASubject("CN=y")) },
		"bad subject":   func() { kv.AddIssuer("x", nil, nil, kvtest.WithIssuerCASubject("nonsense")) },
		"missing":       func() { kv.CreateCertificate("c", kvtest.CertificatePolicy{Issuer: "x"}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", what)
				}
			}()
			add()
		}()
	}
	if names := kv.IssuerNames(); len(names) != 0 {
		t.Errorf("issuers %v after refusals", names)
	}
}
