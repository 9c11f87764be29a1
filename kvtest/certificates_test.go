package kvtest_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/viperkv/viperkv/kvtest"
)

// Tests of the certificates data plane with the real azcertificates client, and of the
// linked secrets through the real azsecrets client.

func newCertsClient(t *testing.T, srv *kvtest.Server, vaultURL string, cred azcore.TokenCredential) *azcertificates.Client {
	t.Helper()
	c, err := azcertificates.NewClient(vaultURL, cred, &azcertificates.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// certClients makes an identity with roles on kv and its certificates and secrets clients.
func certClients(t *testing.T, srv *kvtest.Server, kv *kvtest.Vault, roles ...kvtest.Role) (*azcertificates.Client, *azsecrets.Client) {
	t.Helper()
	id := freshIdentity(t, srv)
	for _, r := range roles {
		kv.Grant(id, r)
	}
	cred := newCred(t, srv, azidentity.ClientID(id.ClientID))
	return newCertsClient(t, srv, kv.URL(), cred), newSecretsClient(t, srv, kv.URL(), cred)
}

// selfPolicy is a self-signed policy with the given key and content type.
func selfPolicy(subject string, key *azcertificates.KeyProperties, contentType string) *azcertificates.CertificatePolicy {
	return &azcertificates.CertificatePolicy{
		IssuerParameters:          &azcertificates.IssuerParameters{Name: to.Ptr("Self")},
		KeyProperties:             key,
		SecretProperties:          &azcertificates.SecretProperties{ContentType: to.Ptr(contentType)},
		X509CertificateProperties: &azcertificates.X509CertificateProperties{Subject: to.Ptr(subject)},
	}
}

// waitOperation polls GET /certificates/{name}/pending, as a caller of the Go SDK (which
// has no poller) does, until the operation is no longer in progress.
func waitOperation(t *testing.T, c *azcertificates.Client, name string) azcertificates.GetCertificateOperationResponse {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		op, err := c.GetCertificateOperation(ctx, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if *op.Status != "inProgress" {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("the operation of %s is still in progress", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// samePublicKey reports whether key's public key is cert's.
func samePublicKey(key any, cert *x509.Certificate) bool {
	s, ok := key.(crypto.Signer)
	if !ok {
		return false
	}
	pub, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// parsePEMSecret reads a PEM linked secret: the PKCS#8 key, then the certificates.
func parsePEMSecret(t *testing.T, value string) (any, []*x509.Certificate) {
	t.Helper()
	var key any
	var certs []*x509.Certificate
	rest := []byte(value)
	for i := 0; ; i++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case i == 0 && b.Type == "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			key = k
		case b.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, c)
		default:
			t.Fatalf("PEM block %d is %s", i, b.Type)
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("trailing data after the PEM blocks")
	}
	return key, certs
}

func TestCertificateCreateRSAPKCS12(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(300*time.Millisecond))
	kv := srv.AddVault("myvault")
	certs, secrets := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer, kvtest.RoleSecretsUser)
	ctx := ctxTimeout(t, 60*time.Second)

	policy := selfPolicy("CN=api.example.com, O=Contoso", &azcertificates.KeyProperties{
		KeyType: to.Ptr(azcertificates.KeyTypeRSA), KeySize: to.Ptr(int32(2048)), Exportable: to.Ptr(true), ReuseKey: to.Ptr(false),
	}, kvtest.ContentTypePKCS12)
	policy.X509CertificateProperties.SubjectAlternativeNames = &azcertificates.SubjectAlternativeNames{
		DNSNames:           []*string{to.Ptr("api.example.com"), to.Ptr("www.example.com")},
		Emails:             []*string{to.Ptr("admin@example.com")},
		UserPrincipalNames: []*string{to.Ptr("svc@example.com")},
	}
	policy.X509CertificateProperties.ValidityInMonths = to.Ptr(int32(6))
	created, err := certs.CreateCertificate(ctx, "api-tls", azcertificates.CreateCertificateParameters{
		CertificatePolicy: policy, Tags: map[string]*string{"env": to.Ptr("test")},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *created.Status != "inProgress" || *created.StatusDetails == "" || *created.RequestID == "" || *created.CancellationRequested ||
		string(*created.ID) != "https://myvault.vault.azure.net/certificates/api-tls/pending" || *created.IssuerParameters.Name != "Self" {
		t.Errorf("create answered %+v", created.CertificateOperation)
	}
	csr, err := x509.ParseCertificateRequest(created.CSR)
	if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "api.example.com" {
		t.Fatalf("CSR: %v %v", err, csr)
	}
	if _, err := certs.GetCertificate(ctx, "api-tls", "", nil); err == nil {
		t.Error("the certificate exists before its operation completed")
	}

	op := waitOperation(t, certs, "api-tls")
	if *op.Status != "completed" || *op.Target != "https://myvault.vault.azure.net/certificates/api-tls" || *op.RequestID != *created.RequestID {
		t.Errorf("completed operation = %+v", op.CertificateOperation)
	}
	if again := waitOperation(t, certs, "api-tls"); *again.Status != "completed" {
		t.Errorf("the completed operation is not readable again: %s", *again.Status)
	}

	got, err := certs.GetCertificate(ctx, "api-tls", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(got.CER)
	if err != nil {
		t.Fatal(err)
	}
	version := got.ID.Version()
	sum := sha1.Sum(got.CER)
	if !bytes.Equal(got.X509Thumbprint, sum[:]) || len(version) != 32 || got.ID.Name() != "api-tls" {
		t.Errorf("id %s, x5t %x, want %x", *got.ID, got.X509Thumbprint, sum)
	}
	if string(*got.KID) != "https://myvault.vault.azure.net/keys/api-tls/"+version ||
		string(*got.SID) != "https://myvault.vault.azure.net/secrets/api-tls/"+version {
		t.Errorf("kid %s sid %s", *got.KID, *got.SID)
	}
	a := got.Attributes
	if !a.NotBefore.Equal(leaf.NotBefore) || !a.Expires.Equal(leaf.NotAfter) || !*a.Enabled || *a.RecoveryLevel != "Recoverable+Purgeable" ||
		*a.RecoverableDays != 90 || a.Created == nil || a.Updated == nil {
		t.Errorf("attributes %+v for a certificate valid %v to %v", a, leaf.NotBefore, leaf.NotAfter)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 180*24*time.Hour || d > 186*24*time.Hour {
		t.Errorf("validity %v, want 6 months", d)
	}
	if *got.Tags["env"] != "test" {
		t.Errorf("tags %v", got.Tags)
	}
	if leaf.Subject.CommonName != "api.example.com" || !slices.Equal(leaf.Subject.Organization, []string{"Contoso"}) ||
		!slices.Equal(leaf.DNSNames, []string{"api.example.com", "www.example.com"}) || !slices.Equal(leaf.EmailAddresses, []string{"admin@example.com"}) ||
		!bytes.Contains(leaf.Raw, []byte("svc@example.com")) || leaf.IsCA || leaf.PublicKeyAlgorithm != x509.RSA ||
		leaf.PublicKey.(*rsa.PublicKey).N.BitLen() != 2048 || leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) != nil {
		t.Errorf("leaf: subject %v, dns %v, emails %v, key %v", leaf.Subject, leaf.DNSNames, leaf.EmailAddresses, leaf.PublicKeyAlgorithm)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) ||
		leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("usages %v %v", leaf.ExtKeyUsage, leaf.KeyUsage)
	}
	p := got.Policy
	if p == nil || *p.IssuerParameters.Name != "Self" || *p.KeyProperties.KeySize != 2048 || *p.SecretProperties.ContentType != kvtest.ContentTypePKCS12 ||
		*p.X509CertificateProperties.ValidityInMonths != 6 || len(p.LifetimeActions) != 1 ||
		*p.LifetimeActions[0].Action.ActionType != azcertificates.CertificatePolicyActionAutoRenew || *p.LifetimeActions[0].Trigger.LifetimePercentage != 80 ||
		*p.X509CertificateProperties.SubjectAlternativeNames.UserPrincipalNames[0] != "svc@example.com" {
		t.Errorf("policy %+v", p)
	}

	// The linked secret: managed, the key's ID, the PKCS#12 content without a password.
	s, err := secrets.GetSecret(ctx, "api-tls", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !*s.Managed || string(*s.KID) != string(*got.KID) || *s.ContentType != kvtest.ContentTypePKCS12 || s.ID.Version() != version ||
		!s.Attributes.Expires.Equal(leaf.NotAfter) || !s.Attributes.NotBefore.Equal(leaf.NotBefore) || s.PreviousVersion != nil {
		t.Errorf("linked secret %s managed %v kid %v ct %v prev %v", *s.ID, s.Managed, s.KID, s.ContentType, s.PreviousVersion)
	}
	pfx, err := base64.StdEncoding.DecodeString(*s.Value)
	if err != nil {
		t.Fatal(err)
	}
	key, pfxLeaf, chain, err := pkcs12.DecodeChain(pfx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pfxLeaf.Raw, got.CER) || len(chain) != 0 || !samePublicKey(key, leaf) {
		t.Error("the PKCS#12 secret does not hold the certificate and its key")
	}
	if v, err := secrets.GetSecret(ctx, "api-tls", version, nil); err != nil || *v.Value != *s.Value {
		t.Errorf("by version: %v", err)
	}
	// Listed among the secrets, as managed.
	pager := secrets.NewListSecretPropertiesPager(nil)
	found := false
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Value {
			if it.ID.Name() == "api-tls" {
				found = it.Managed != nil && *it.Managed
			}
		}
	}
	if !found {
		t.Error("the linked secret is not listed as managed")
	}
	if kv.Count(kvtest.OpCreateCertificate) != 1 || kv.Count(kvtest.OpGetCertificateOperation) < 2 {
		t.Errorf("counts: create %d, pending %d", kv.Count(kvtest.OpCreateCertificate), kv.Count(kvtest.OpGetCertificateOperation))
	}
}

func TestCertificateCreateECPEM(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(0))
	kv := srv.AddVault("myvault")
	certs, secrets := certClients(t, srv, kv, kvtest.RoleAdministrator)
	ctx := ctxTimeout(t, 60*time.Second)

	for _, tc := range []struct {
		curve azcertificates.CurveName
		bits  int
	}{{azcertificates.CurveNameP256, 256}, {azcertificates.CurveNameP384, 384}, {azcertificates.CurveNameP521, 521}} {
		name := "ec-" + strings.ToLower(strings.ReplaceAll(string(tc.curve), "-", ""))
		created, err := certs.CreateCertificate(ctx, name, azcertificates.CreateCertificateParameters{
			CertificatePolicy: selfPolicy("CN="+name, &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC), Curve: to.Ptr(tc.curve)},
				kvtest.ContentTypePEM),
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if *created.Status != "completed" { // WithCertificateIssueDelay(0)
			t.Errorf("%s: status %s", name, *created.Status)
		}
		got, err := certs.GetCertificate(ctx, name, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(got.CER)
		if err != nil {
			t.Fatal(err)
		}
		if pk, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve.Params().BitSize != tc.bits {
			t.Errorf("%s: key %T", name, leaf.PublicKey)
		}
		if kp := got.Policy.KeyProperties; *kp.KeyType != azcertificates.KeyTypeEC || *kp.Curve != tc.curve || *kp.KeySize != int32(tc.bits) {
			t.Errorf("%s: key props %+v", name, kp)
		}
		s, err := secrets.GetSecret(ctx, name, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if *s.ContentType != kvtest.ContentTypePEM || !strings.HasPrefix(*s.Value, "-----BEGIN PRIVATE KEY-----\n") {
			t.Errorf("%s: content type %s", name, *s.ContentType)
		}
		key, chain := parsePEMSecret(t, *s.Value)
		if len(chain) != 1 || !bytes.Equal(chain[0].Raw, got.CER) || !samePublicKey(key, leaf) {
			t.Errorf("%s: the PEM secret does not hold the key then the certificate", name)
		}
	}
}

// TestCertificateVersionsPolicyUpdate: versions, lists, the policy's GET and PATCH, and
// the update of a version's attributes and tags.
func TestCertificateVersionsPolicyUpdate(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(0))
	kv := srv.AddVault("myvault", kvtest.WithPageSize(1))
	certs, secrets := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer, kvtest.RoleSecretsUser)
	ctx := ctxTimeout(t, 60*time.Second)

	policy := selfPolicy("CN=svc", &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC), Curve: to.Ptr(azcertificates.CurveNameP256)},
		kvtest.ContentTypePKCS12)
	for i := range 2 {
		params := azcertificates.CreateCertificateParameters{}
		if i == 0 {
			params.CertificatePolicy = policy // the second create uses the certificate's policy
		}
		if _, err := certs.CreateCertificate(ctx, "svc", params, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := certs.CreateCertificate(ctx, "other", azcertificates.CreateCertificateParameters{CertificatePolicy: policy}, nil); err != nil {
		t.Fatal(err)
	}
	versions := kv.CertificateVersions("svc")
	if len(versions) != 2 {
		t.Fatalf("versions %v", versions)
	}

	var names []string
	for p := certs.NewListCertificatePropertiesPager(nil); p.More(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Value {
			if it.ID.Version() != "" || len(it.X509Thumbprint) != 20 || it.Attributes.Expires == nil {
				t.Errorf("list item %s %x %+v", *it.ID, it.X509Thumbprint, it.Attributes)
			}
			names = append(names, it.ID.Name())
		}
	}
	if !slices.Equal(names, []string{"other", "svc"}) {
		t.Errorf("listed %v", names)
	}
	var listed []string
	for p := certs.NewListCertificatePropertiesVersionsPager("svc", nil); p.More(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Value {
			listed = append(listed, it.ID.Version())
		}
	}
	if !sameSet(listed, versions) {
		t.Errorf("versions listed %v, want %v", listed, versions)
	}
	if _, err := certs.NewListCertificatePropertiesVersionsPager("nope", nil).NextPage(ctx); err == nil {
		t.Error("versions of a missing certificate listed")
	} else if st, code, _ := responseError(t, err); st != 404 || code != "CertificateNotFound" {
		t.Errorf("versions of a missing certificate: %d %s", st, code)
	}

	// Each version has its own linked secret version; the newer names the older.
	s2, err := secrets.GetSecret(ctx, "svc", versions[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if s2.PreviousVersion == nil || *s2.PreviousVersion != versions[0] {
		t.Errorf("previousVersion %v, want %s", s2.PreviousVersion, versions[0])
	}

	// The policy: GET, then PATCH of one section, which replaces that section only.
	pol, err := certs.GetCertificatePolicy(ctx, "svc", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(*pol.ID) != "https://myvault.vault.azure.net/certificates/svc/policy" || *pol.X509CertificateProperties.Subject != "CN=svc" ||
		*pol.KeyProperties.Curve != azcertificates.CurveNameP256 || !*pol.Attributes.Enabled {
		t.Errorf("policy %+v", pol.CertificatePolicy)
	}
	newKey := &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeRSA), KeySize: to.Ptr(int32(3072)),
		Exportable: to.Ptr(true), ReuseKey: to.Ptr(false)}
	upd, err := certs.UpdateCertificatePolicy(ctx, "svc", azcertificates.CertificatePolicy{KeyProperties: newKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *upd.KeyProperties.KeySize != 3072 || *upd.KeyProperties.KeyType != azcertificates.KeyTypeRSA || upd.KeyProperties.Curve != nil ||
		*upd.X509CertificateProperties.Subject != "CN=svc" || *upd.SecretProperties.ContentType != kvtest.ContentTypePKCS12 {
		t.Errorf("updated policy %+v %+v", upd.KeyProperties, upd.X509CertificateProperties)
	}
	if _, err := certs.UpdateCertificatePolicy(ctx, "svc", azcertificates.CertificatePolicy{KeyProperties: &azcertificates.KeyProperties{
		KeyType: to.Ptr(azcertificates.KeyTypeEC), Curve: to.Ptr(azcertificates.CurveNameP256K)}}, nil); err == nil {
		t.Error("P-256K accepted")
	} else if st, code, _ := responseError(t, err); st != 400 || code != "BadParameter" {
		t.Errorf("P-256K: %d %s", st, code)
	}

	// Disable the latest version: the certificate stays readable, its linked secret does
	// not (403 SecretDisabled).
	u, err := certs.UpdateCertificate(ctx, "svc", "", azcertificates.UpdateCertificateParameters{
		CertificateAttributes: &azcertificates.CertificateAttributes{Enabled: to.Ptr(false)},
		Tags:                  map[string]*string{"owner": to.Ptr("team-a")},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *u.Attributes.Enabled || *u.Tags["owner"] != "team-a" || u.ID.Version() != versions[1] {
		t.Errorf("updated %s %+v %v", *u.ID, u.Attributes, u.Tags)
	}
	if _, err := secrets.GetSecret(ctx, "svc", "", nil); err == nil {
		t.Error("the linked secret of a disabled version was read")
	} else if st, _, inner := responseError(t, err); st != 403 || inner != "SecretDisabled" {
		t.Errorf("disabled linked secret: %d %s", st, inner)
	}
	if g, err := certs.GetCertificate(ctx, "svc", versions[0], nil); err != nil || !*g.Attributes.Enabled || g.ID.Version() != versions[0] {
		t.Errorf("older version: %v", err)
	}
	if _, err := certs.GetCertificate(ctx, "svc", "0123456789abcdef0123456789abcdef", nil); err == nil {
		t.Error("a missing version was read")
	} else if st, code, _ := responseError(t, err); st != 404 || code != "CertificateNotFound" {
		t.Errorf("missing version: %d %s", st, code)
	}
	// The next create follows the updated policy: RSA 3072.
	if _, err := certs.CreateCertificate(ctx, "svc", azcertificates.CreateCertificateParameters{}, nil); err != nil {
		t.Fatal(err)
	}
	if leaf, ok := kv.Certificate("svc", ""); !ok || leaf.PublicKey.(*rsa.PublicKey).N.BitLen() != 3072 {
		t.Error("the new version does not follow the updated policy")
	}
}

// TestCertificateDeleteRecoverPurge: soft delete takes the linked secret along; recover
// brings both back; purge frees the name.
func TestCertificateDeleteRecoverPurge(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(0), kvtest.WithDeletionWindow(0), kvtest.WithRecoveryDelay(0))
	kv := srv.AddVault("myvault")
	certs, secrets := certClients(t, srv, kv, kvtest.RoleAdministrator)
	ctx := ctxTimeout(t, 60*time.Second)
	version := kv.CreateCertificate("web", kvtest.CertificatePolicy{KeyType: "EC"})

	del, err := certs.DeleteCertificate(ctx, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if del.ID.Version() != version || *del.RecoveryID != "https://myvault.vault.azure.net/deletedcertificates/web" || del.DeletedDate == nil ||
		!del.ScheduledPurgeDate.Equal(del.DeletedDate.AddDate(0, 0, 90)) || del.Policy == nil || len(del.CER) == 0 {
		t.Errorf("deleted %+v", del.DeletedCertificate)
	}
	if _, err := certs.GetCertificate(ctx, "web", "", nil); err == nil {
		t.Error("a deleted certificate was read")
	}
	if _, err := secrets.GetSecret(ctx, "web", "", nil); err == nil {
		t.Error("a deleted certificate's linked secret was read")
	} else if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("linked secret of a deleted certificate: %d %s", st, code)
	}
	if _, err := secrets.SetSecret(ctx, "web", azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err == nil {
		t.Error("a secret took a deleted certificate's name")
	}
	gd, err := certs.GetDeletedCertificate(ctx, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *gd.ID != *del.ID || !gd.DeletedDate.Equal(*del.DeletedDate) {
		t.Errorf("get deleted %s", *gd.ID)
	}
	var deleted []string
	for p := certs.NewListDeletedCertificatePropertiesPager(nil); p.More(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Value {
			deleted = append(deleted, it.ID.Name())
		}
	}
	if !slices.Equal(deleted, []string{"web"}) {
		t.Errorf("deleted list %v", deleted)
	}
	if _, err := certs.CreateCertificate(ctx, "web", azcertificates.CreateCertificateParameters{}, nil); err == nil {
		t.Error("a deleted certificate's name was reused")
	} else if st, _, inner := responseError(t, err); st != 409 || inner != "ObjectIsDeletedButRecoverable" {
		t.Errorf("create on a deleted name: %d %s", st, inner)
	}

	rec, err := certs.RecoverDeletedCertificate(ctx, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *rec.ID != *del.ID || *rec.Attributes.Enabled != *del.Attributes.Enabled || rec.Policy == nil {
		t.Errorf("recovered %+v", rec.Certificate)
	}
	if _, err := certs.GetCertificate(ctx, "web", "", nil); err != nil {
		t.Fatal(err)
	}
	if s, err := secrets.GetSecret(ctx, "web", "", nil); err != nil || !*s.Managed {
		t.Fatalf("linked secret after recovery: %v", err)
	}

	if _, err := certs.DeleteCertificate(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.PurgeDeletedCertificate(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.GetDeletedCertificate(ctx, "web", nil); err == nil {
		t.Error("a purged certificate is still deleted")
	}
	if _, err := secrets.SetSecret(ctx, "web", azsecrets.SetSecretParameters{Value: to.Ptr("plain")}, nil); err != nil {
		t.Errorf("the purged certificate's name is not free: %v", err)
	}
}

// TestCertificatePurgeProtection: a vault with purge protection refuses to purge a
// deleted certificate, as it does a secret.
func TestCertificatePurgeProtection(t *testing.T) {
	srv := newServer(t, kvtest.WithDeletionWindow(0))
	kv := srv.AddVault("myvault", kvtest.WithPurgeProtection())
	certs, _ := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer)
	ctx := ctxTimeout(t, 30*time.Second)
	kv.CreateCertificate("c", kvtest.CertificatePolicy{KeyType: "EC"})
	if err := kv.DeleteCertificate("c"); err != nil {
		t.Fatal(err)
	}
	_, err := certs.PurgeDeletedCertificate(ctx, "c", nil)
	if st, code, _ := responseError(t, err); st != 403 || code != "Forbidden" {
		t.Errorf("purge: %d %s", st, code)
	}
}

// TestCertificateOperationCancelDelete: the pending operation of a slow issuance: a
// second create conflicts, a cancellation is recorded, DELETE removes it.
func TestCertificateOperationCancelDelete(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(time.Hour))
	kv := srv.AddVault("myvault")
	certs, _ := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer)
	ctx := ctxTimeout(t, 30*time.Second)
	params := azcertificates.CreateCertificateParameters{CertificatePolicy: selfPolicy("CN=slow",
		&azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC)}, kvtest.ContentTypePKCS12)}
	if _, err := certs.CreateCertificate(ctx, "slow", params, nil); err != nil {
		t.Fatal(err)
	}
	_, err := certs.CreateCertificate(ctx, "slow", params, nil)
	if st, code, _ := responseError(t, err); st != 409 || code != "Forbidden" {
		t.Errorf("second create: %d %s", st, code)
	}
	up, err := certs.UpdateCertificateOperation(ctx, "slow", azcertificates.UpdateCertificateOperationParameter{CancellationRequested: to.Ptr(true)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !*up.CancellationRequested || *up.Status != "inProgress" {
		t.Errorf("cancel: %+v", up.CertificateOperation)
	}
	// Listed as pending only when asked.
	page, err := certs.NewListCertificatePropertiesPager(&azcertificates.ListCertificatePropertiesOptions{IncludePending: to.Ptr(true)}).NextPage(ctx)
	if err != nil || len(page.Value) != 1 {
		t.Errorf("includePending: %v %d", err, len(page.Value))
	}
	page, err = certs.NewListCertificatePropertiesPager(nil).NextPage(ctx)
	if err != nil || len(page.Value) != 0 {
		t.Errorf("without includePending: %v %d", err, len(page.Value))
	}
	del, err := certs.DeleteCertificateOperation(ctx, "slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *del.Status != "inProgress" {
		t.Errorf("deleted operation %s", *del.Status)
	}
	_, err = certs.GetCertificateOperation(ctx, "slow", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "PendingCertificateNotFound" {
		t.Errorf("pending after delete: %d %s", st, code)
	}
	if len(kv.CertificateNames()) != 0 {
		t.Errorf("certificates %v", kv.CertificateNames())
	}
}

// selfSigned makes a certificate and key outside the emulator, for imports.
func selfSigned(t *testing.T, cn string, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		DNSNames: []string{cn}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(t *testing.T, key any, certs ...*x509.Certificate) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	b.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return b.String()
}

func TestCertificateImport(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	certs, secrets := certClients(t, srv, kv, kvtest.RoleCertificatesOfficer, kvtest.RoleSecretsUser)
	ctx := ctxTimeout(t, 60*time.Second)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecCert := selfSigned(t, "imported.example.com", ecKey)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caCert := selfSigned(t, "Some CA", caKey)

	pfxPass, err := pkcs12.Modern.Encode(ecKey, ecCert, []*x509.Certificate{caCert}, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	pfxNone, err := pkcs12.Modern.Encode(ecKey, ecCert, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	pemText := pemOf(t, ecKey, caCert, ecCert) // chain first, key last: any order is read
	pemPolicy := &azcertificates.CertificatePolicy{SecretProperties: &azcertificates.SecretProperties{ContentType: to.Ptr(kvtest.ContentTypePEM)}}

	for _, tc := range []struct {
		name, value, password string
		policy                *azcertificates.CertificatePolicy
		wantCT                string
		wantChain             int
	}{
		{"pfx-password", base64.StdEncoding.EncodeToString(pfxPass), "s3cret", nil, kvtest.ContentTypePKCS12, 1},
		{"pfx-nopassword", base64.StdEncoding.EncodeToString(pfxNone), "", nil, kvtest.ContentTypePKCS12, 0},
		{"pem-text", pemText, "", pemPolicy, kvtest.ContentTypePEM, 1},                                              // as the JavaScript SDK sends it
		{"pem-base64", base64.StdEncoding.EncodeToString([]byte(pemText)), "", pemPolicy, kvtest.ContentTypePEM, 1}, // as the Python SDK does
	} {
		params := azcertificates.ImportCertificateParameters{Base64EncodedCertificate: to.Ptr(tc.value), CertificatePolicy: tc.policy,
			Tags: map[string]*string{"src": to.Ptr("import")}}
		if tc.password != "" {
			params.Password = to.Ptr(tc.password)
		}
		imp, err := certs.ImportCertificate(ctx, tc.name, params, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(imp.CER, ecCert.Raw) || imp.ID.Name() != tc.name || *imp.Tags["src"] != "import" ||
			*imp.Policy.IssuerParameters.Name != "Unknown" || *imp.Policy.SecretProperties.ContentType != tc.wantCT ||
			*imp.Policy.X509CertificateProperties.Subject != "CN=imported.example.com" || *imp.Policy.KeyProperties.KeyType != azcertificates.KeyTypeEC ||
			*imp.Policy.LifetimeActions[0].Action.ActionType != azcertificates.CertificatePolicyActionEmailContacts {
			t.Errorf("%s: imported %+v policy %+v", tc.name, imp.Certificate, imp.Policy)
		}
		s, err := secrets.GetSecret(ctx, tc.name, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if *s.ContentType != tc.wantCT || !*s.Managed {
			t.Errorf("%s: secret content type %s", tc.name, *s.ContentType)
		}
		var key any
		var leaf *x509.Certificate
		var chain []*x509.Certificate
		if tc.wantCT == kvtest.ContentTypePEM {
			var all []*x509.Certificate
			key, all = parsePEMSecret(t, *s.Value)
			leaf, chain = all[0], all[1:]
		} else {
			der, _ := base64.StdEncoding.DecodeString(*s.Value)
			if key, leaf, chain, err = pkcs12.DecodeChain(der, ""); err != nil {
				t.Fatalf("%s: the linked secret is not a PKCS#12 without password: %v", tc.name, err)
			}
		}
		if !leaf.Equal(ecCert) || len(chain) != tc.wantChain || !samePublicKey(key, ecCert) {
			t.Errorf("%s: the secret's leaf, chain (%d) or key is wrong", tc.name, len(chain))
		}
	}

	// Refusals: a wrong password, PEM under the default (PKCS#12) content type, a key
	// that is not the certificate's.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, params := range map[string]azcertificates.ImportCertificateParameters{
		"wrong-password": {Base64EncodedCertificate: to.Ptr(base64.StdEncoding.EncodeToString(pfxPass)), Password: to.Ptr("nope")},
		"pem-as-pfx":     {Base64EncodedCertificate: to.Ptr(pemText)},
		"wrong-key":      {Base64EncodedCertificate: to.Ptr(pemOf(t, otherKey, ecCert)), CertificatePolicy: pemPolicy},
		"no-key": {Base64EncodedCertificate: to.Ptr(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ecCert.Raw}))),
			CertificatePolicy: pemPolicy},
	} {
		_, err := certs.ImportCertificate(ctx, name, params, nil)
		if st, code, _ := responseError(t, err); st != 400 || code != "BadParameter" {
			t.Errorf("%s: %d %s", name, st, code)
		}
	}

	// The Go API imports the same.
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaCert := selfSigned(t, "rsa.example.com", rsaKey)
	v, err := kv.ImportCertificate("go-import", []byte(pemOf(t, rsaKey, rsaCert)), "", kvtest.CertificatePolicy{ContentType: kvtest.ContentTypePEM})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := kv.Certificate("go-import", v); !ok || !got.Equal(rsaCert) {
		t.Error("Go import")
	}
	if _, err := kv.ImportCertificate("go-bad", []byte("not a certificate"), "", kvtest.CertificatePolicy{}); err == nil {
		t.Error("garbage imported")
	}
}

// TestCertificateOutContentType: GET /secrets with outContentType (api-version
// 2025-07-01 and later) converts a PKCS#12 linked secret to PEM.
func TestCertificateOutContentType(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	_, secrets := certClients(t, srv, kv, kvtest.RoleCertificateUser)
	ctx := ctxTimeout(t, 30*time.Second)
	kv.CreateCertificate("conv", kvtest.CertificatePolicy{KeyType: "EC", Curve: "P-384"})
	kv.SetSecret("plain", "value")
	leaf, _ := kv.Certificate("conv", "")

	pemCT := azsecrets.ContentTypePEM
	s, err := secrets.GetSecret(ctx, "conv", "", &azsecrets.GetSecretOptions{OutContentType: &pemCT})
	if err != nil {
		t.Fatal(err)
	}
	if *s.ContentType != kvtest.ContentTypePEM {
		t.Errorf("content type %s", *s.ContentType)
	}
	key, chain := parsePEMSecret(t, *s.Value)
	if len(chain) != 1 || !chain[0].Equal(leaf) || !samePublicKey(key, leaf) {
		t.Error("the converted PEM is not the key then the certificate")
	}
	pfxCT := azsecrets.ContentTypePFX
	if s, err := secrets.GetSecret(ctx, "conv", "", &azsecrets.GetSecretOptions{OutContentType: &pfxCT}); err != nil || *s.ContentType != kvtest.ContentTypePKCS12 {
		t.Errorf("PKCS#12 to PKCS#12: %v", err)
	}
	if s, err := secrets.GetSecret(ctx, "plain", "", &azsecrets.GetSecretOptions{OutContentType: &pemCT}); err != nil || *s.Value != "value" {
		t.Errorf("a plain secret with outContentType: %v", err)
	}
	kv.CreateCertificate("pem", kvtest.CertificatePolicy{KeyType: "EC", ContentType: kvtest.ContentTypePEM})
	_, err = secrets.GetSecret(ctx, "pem", "", &azsecrets.GetSecretOptions{OutContentType: &pfxCT})
	if st, code, _ := responseError(t, err); st != 400 || code != "BadParameter" {
		t.Errorf("PEM to PKCS#12: %d %s", st, code)
	}
}

// TestCertificateRBAC: the built-in roles' certificate data actions. A Secrets User reads
// the linked secret but not the certificate; a Certificate User reads both; a
// Certificates Officer manages certificates but reads no secret; a Reader reads the
// certificate's public part.
func TestCertificateRBAC(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(0))
	kv := srv.AddVault("myvault")
	ctx := ctxTimeout(t, 60*time.Second)
	kv.CreateCertificate("tls", kvtest.CertificatePolicy{KeyType: "EC"})
	params := azcertificates.CreateCertificateParameters{CertificatePolicy: selfPolicy("CN=x",
		&azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC)}, kvtest.ContentTypePKCS12)}

	for _, tc := range []struct {
		role                       kvtest.Role
		getCert, getSecret, create bool
	}{
		{kvtest.RoleSecretsUser, false, true, false},
		{kvtest.RoleSecretsOfficer, false, true, false},
		{kvtest.RoleCertificateUser, true, true, false},
		{kvtest.RoleCertificatesOfficer, true, false, true},
		{kvtest.RoleReader, true, false, false},
		{kvtest.RoleAdministrator, true, true, true},
	} {
		certs, secrets := certClients(t, srv, kv, tc.role)
		_, err := certs.GetCertificate(ctx, "tls", "", nil)
		check := func(what string, want bool, err error) {
			t.Helper()
			if want && err != nil {
				t.Errorf("%s: %s: %v", tc.role, what, err)
			}
			if !want {
				if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" {
					t.Errorf("%s: %s: %d %s", tc.role, what, st, inner)
				}
			}
		}
		check("get certificate", tc.getCert, err)
		_, err = secrets.GetSecret(ctx, "tls", "", nil)
		check("get linked secret", tc.getSecret, err)
		_, err = certs.CreateCertificate(ctx, "new-"+strings.ReplaceAll(strings.ToLower(string(tc.role)), " ", "-"), params, nil)
		check("create", tc.create, err)
	}
	if r, err := kvtest.ParseRole("certificate-user"); err != nil || r != kvtest.RoleCertificateUser {
		t.Errorf("ParseRole: %v %v", r, err)
	}
	if r, err := kvtest.ParseRole("Key Vault Certificates Officer"); err != nil || r != kvtest.RoleCertificatesOfficer {
		t.Errorf("ParseRole: %v %v", r, err)
	}
}

// TestCertificateLinkedSecretProtected: the linked secret changes only through its
// certificate, and a certificate cannot take a plain secret's name.
func TestCertificateLinkedSecretProtected(t *testing.T) {
	srv := newServer(t, kvtest.WithCertificateIssueDelay(0))
	kv := srv.AddVault("myvault")
	certs, secrets := certClients(t, srv, kv, kvtest.RoleAdministrator)
	ctx := ctxTimeout(t, 30*time.Second)
	v := kv.CreateCertificate("cert", kvtest.CertificatePolicy{KeyType: "EC"})
	kv.SetSecret("plain", "x")

	conflict := func(what string, err error) {
		t.Helper()
		if st, code, _ := responseError(t, err); st != 409 || code != "Conflict" {
			t.Errorf("%s: %d %s", what, st, code)
		}
	}
	_, err := secrets.SetSecret(ctx, "cert", azsecrets.SetSecretParameters{Value: to.Ptr("overwrite")}, nil)
	conflict("PUT", err)
	_, err = secrets.UpdateSecretProperties(ctx, "cert", v, azsecrets.UpdateSecretPropertiesParameters{ContentType: to.Ptr("text/plain")}, nil)
	conflict("PATCH", err)
	_, err = secrets.DeleteSecret(ctx, "cert", nil)
	conflict("DELETE", err)
	_, err = secrets.BackupSecret(ctx, "cert", nil)
	conflict("backup", err)
	_, err = certs.CreateCertificate(ctx, "plain", azcertificates.CreateCertificateParameters{CertificatePolicy: selfPolicy("CN=p",
		&azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC)}, kvtest.ContentTypePKCS12)}, nil)
	conflict("create over a plain secret", err)
	if err := kv.DeleteSecret("cert"); err == nil {
		t.Error("Vault.DeleteSecret deleted a linked secret")
	}
	if s, err := secrets.GetSecret(ctx, "cert", "", nil); err != nil || s.ID.Version() != v {
		t.Errorf("linked secret after the refusals: %v", err)
	}
}
