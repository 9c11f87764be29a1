package kvtest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// Auto-renewal, certificate events, the seed's certificates, and the rule that private
// key material never reaches a log line or an error.

// certEventTypes are the certificate events, and the secrets' new version event, which a
// certificate's version does not publish.
var certEventTypes = []string{kvtest.EventCertificateNewVersionCreated, kvtest.EventCertificateNearExpiry,
	kvtest.EventCertificateExpired, kvtest.EventSecretNewVersionCreated}

// waitVersions polls until the certificate has n versions, within limit.
func waitVersions(t *testing.T, kv *kvtest.Vault, name string, n int, limit time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		vs := kv.CertificateVersions(name)
		if len(vs) >= n {
			return vs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d versions after %v, want %d", name, len(vs), limit, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCertificateAutoRenew: a certificate valid 4 seconds renewed at 50% gets a new
// version (a new key, a new linked secret version) about every 2 seconds, each
// publishing CertificateNewVersionCreated (and, as it is within 30 days of its expiry,
// CertificateNearExpiry at once), and no secret event.
func TestCertificateAutoRenew(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	sub := kv.Subscribe(kvtest.EventSubscription{Name: "certs", Endpoint: hook.URL, Client: hook.Client(), EventTypes: certEventTypes})
	waitValidated(t, sub)
	certs, secrets := certClients(t, srv, kv, kvtest.RoleCertificateUser)
	ctx := ctxTimeout(t, 60*time.Second)

	start := time.Now()
	first := kv.CreateCertificate("short", kvtest.CertificatePolicy{KeyType: "EC", Validity: 4 * time.Second,
		LifetimeActions: []kvtest.LifetimeAction{{Action: kvtest.ActionAutoRenew, LifetimePercentage: 50}}})
	vs := waitVersions(t, kv, "short", 3, 20*time.Second)
	if vs[0] != first {
		t.Fatalf("versions %v do not start with %s", vs, first)
	}
	if el := time.Since(start); el < 3*time.Second {
		t.Errorf("two renewals within %v: renewing at 50%% of 4 s takes about 2 s each", el)
	}
	var leaves []*x509.Certificate
	for _, v := range vs[:3] {
		leaf, ok := kv.Certificate("short", v)
		if !ok {
			t.Fatalf("version %s", v)
		}
		leaves = append(leaves, leaf)
	}
	for i := 1; i < 3; i++ {
		if !leaves[i].NotBefore.After(leaves[i-1].NotBefore) || leaves[i].PublicKey.(*ecdsa.PublicKey).Equal(leaves[i-1].PublicKey) {
			t.Errorf("version %d: not newer, or the same key (the policy does not reuse keys)", i)
		}
	}
	if got := kv.Versions("short"); !slices.Equal(got[:3], vs[:3]) {
		t.Errorf("linked secret versions %v, want %v", got, vs)
	}
	// The SDKs see the renewal.
	latest, err := certs.GetCertificate(ctx, "short", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(vs, latest.ID.Version()) || latest.ID.Version() == first {
		t.Errorf("latest %s", latest.ID.Version())
	}
	s, err := secrets.GetSecret(ctx, "short", vs[2], nil)
	if err != nil || s.PreviousVersion == nil || *s.PreviousVersion != vs[1] {
		t.Errorf("linked secret of the second renewal: %v %v", err, s.PreviousVersion)
	}

	evs := hook.waitEvents(t, "certs", 6)
	created := map[string]bool{}
	for _, e := range evs {
		if e.Type == kvtest.EventSecretNewVersionCreated {
			t.Errorf("a certificate version published %s", e.Type)
		}
		if e.Type != kvtest.EventCertificateNewVersionCreated {
			continue
		}
		created[e.version()] = true
		if e.Subject != "short" || str(e.Data["ObjectType"]) != "Certificate" || str(e.Data["ObjectName"]) != "short" ||
			str(e.Data["VaultName"]) != "myvault" || str(e.Data["Id"]) != "https://myvault.vault.azure.net/certificates/short/"+e.version() {
			t.Errorf("event %+v", e)
		}
	}
	for _, v := range vs[:3] {
		if !created[v] {
			t.Errorf("no CertificateNewVersionCreated for %s", v)
		}
	}
	if !slices.ContainsFunc(evs, func(e tEvent) bool { return e.Type == kvtest.EventCertificateNearExpiry }) {
		t.Error("no CertificateNearExpiry for a certificate expiring within 30 days")
	}
}

// TestCertificateExpiredAndReuseKey: a certificate without lifetime actions expires with
// CertificateExpired; a policy that reuses keys renews with the same key.
func TestCertificateExpiredAndReuseKey(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	sub := kv.Subscribe(kvtest.EventSubscription{Name: "certs", Endpoint: hook.URL, Client: hook.Client(), EventTypes: certEventTypes})
	waitValidated(t, sub)

	v := kv.CreateCertificate("dies", kvtest.CertificatePolicy{KeyType: "EC", Validity: 2 * time.Second, LifetimeActions: []kvtest.LifetimeAction{}})
	var expired *tEvent
	waitUntil(t, "CertificateExpired", func() bool {
		for _, r := range hook.notifications("certs") {
			for _, e := range parseEvents(t, r) {
				if e.Type == kvtest.EventCertificateExpired {
					expired = &e
				}
			}
		}
		return expired != nil
	})
	if expired.version() != v || len(kv.CertificateVersions("dies")) != 1 {
		t.Errorf("expired %s, versions %v", expired.version(), kv.CertificateVersions("dies"))
	}

	first := kv.CreateCertificate("same-key", kvtest.CertificatePolicy{KeyType: "EC", ReuseKey: true})
	second, err := kv.RenewCertificate("same-key")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := kv.Certificate("same-key", first)
	b, _ := kv.Certificate("same-key", second)
	if !a.PublicKey.(*ecdsa.PublicKey).Equal(b.PublicKey) || a.SerialNumber.Cmp(b.SerialNumber) == 0 {
		t.Error("a renewal reusing the key has another key, or the same serial")
	}
	if _, err := kv.RenewCertificate("nope"); err == nil {
		t.Error("renewed a missing certificate")
	}
}

// TestCertificateCloseStopsRenewals: Close stops the renewal timers.
func TestCertificateCloseStopsRenewals(t *testing.T) {
	srv := kvtest.NewServer()
	kv := srv.AddVault("myvault")
	kv.CreateCertificate("c", kvtest.CertificatePolicy{KeyType: "EC", Validity: 2 * time.Second,
		LifetimeActions: []kvtest.LifetimeAction{{Action: kvtest.ActionAutoRenew, LifetimePercentage: 50}}})
	srv.Close()
	time.Sleep(1500 * time.Millisecond)
	if n := len(kv.CertificateVersions("c")); n != 1 {
		t.Errorf("%d versions after Close", n)
	}
}

// TestCertificateKeyMaterialNeverLogged: no private key, PKCS#12 file or import password
// appears in the emulator's log or in an error answer, through every path that handles
// them: create, import (good and refused), the linked secret's reads and conversion.
func TestCertificateKeyMaterialNeverLogged(t *testing.T) {
	var logs logtest.Buffer
	srv := newServer(t, kvtest.WithCertificateIssueDelay(0), kvtest.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	kv := srv.AddVault("myvault")
	certs, secrets := certClients(t, srv, kv, kvtest.RoleAdministrator)
	ctx := ctxTimeout(t, 60*time.Second)

	var sentinels []string // what must never be logged
	addKey := func(key any) {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		b64 := base64.StdEncoding.EncodeToString(der)
		sentinels = append(sentinels, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), b64[len(b64)-48:])
	}

	if _, err := certs.CreateCertificate(ctx, "wire", azcertificates.CreateCertificateParameters{CertificatePolicy: selfPolicy("CN=wire",
		&azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC)}, kvtest.ContentTypePKCS12)}, nil); err != nil {
		t.Fatal(err)
	}
	kv.CreateCertificate("go", kvtest.CertificatePolicy{KeyType: "EC", ContentType: kvtest.ContentTypePEM})
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	addKey(ecKey)
	leaf := selfSigned(t, "imp.example.com", ecKey)
	const password = "Sentinel-Passw0rd-4711"
	sentinels = append(sentinels, password)
	pfx, err := pkcs12.Modern.Encode(ecKey, leaf, nil, password)
	if err != nil {
		t.Fatal(err)
	}
	pfxB64 := base64.StdEncoding.EncodeToString(pfx)
	sentinels = append(sentinels, pfxB64[100:160])
	if _, err := certs.ImportCertificate(ctx, "imp", azcertificates.ImportCertificateParameters{
		Base64EncodedCertificate: &pfxB64, Password: to.Ptr(password)}, nil); err != nil {
		t.Fatal(err)
	}
	// Refused imports: their answers and log lines must not echo what was sent.
	refused := []azcertificates.ImportCertificateParameters{
		{Base64EncodedCertificate: &pfxB64, Password: to.Ptr(password + "x")},
		{Base64EncodedCertificate: to.Ptr(pemOf(t, ecKey, leaf))}, // PEM under the PKCS#12 content type
		{Base64EncodedCertificate: to.Ptr(pemOf(t, ecKey)), CertificatePolicy: &azcertificates.CertificatePolicy{
			SecretProperties: &azcertificates.SecretProperties{ContentType: to.Ptr(kvtest.ContentTypePEM)}}}, // no certificate
	}
	var answers []string
	for _, p := range refused {
		_, err := certs.ImportCertificate(ctx, "refused", p, nil)
		if err == nil {
			t.Fatal("a bad import was accepted")
		}
		answers = append(answers, err.Error())
	}
	if _, err := kv.ImportCertificate("go-refused", []byte(pemOf(t, ecKey)), password, kvtest.CertificatePolicy{}); err == nil {
		t.Fatal("a key without certificate was imported")
	} else {
		answers = append(answers, err.Error())
	}

	// Read every linked secret, converted too, and collect their keys and values.
	pemCT := azsecrets.ContentTypePEM
	for _, name := range []string{"wire", "go", "imp"} {
		for _, opts := range []*azsecrets.GetSecretOptions{nil, {OutContentType: &pemCT}} {
			s, err := secrets.GetSecret(ctx, name, "", opts)
			if err != nil {
				t.Fatal(err)
			}
			sentinels = append(sentinels, (*s.Value)[len(*s.Value)/2:len(*s.Value)/2+48])
			if *s.ContentType == kvtest.ContentTypePEM {
				key, _ := parsePEMSecret(t, *s.Value)
				addKey(key)
			}
		}
	}

	out := logs.String() + strings.Join(answers, "\n")
	if !strings.Contains(logs.String(), "certificate imported") || !strings.Contains(logs.String(), "secret read") {
		t.Fatalf("the log does not show the flows:\n%s", logs.String())
	}
	for _, s := range sentinels {
		if strings.Contains(out, s) {
			t.Errorf("key material or a password %q... was logged or answered", s[:min(len(s), 16)])
		}
	}
}

// TestCertificateSeed: a seed's certificates: issued with a short validity that renews,
// imported from PEM and PKCS#12 files, and granted to the Certificate User role.
func TestCertificateSeed(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := selfSigned(t, "seeded.example.com", key)
	pemPath := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(pemPath, []byte(pemOf(t, key, leaf)), 0o600); err != nil {
		t.Fatal(err)
	}
	pfx, err := pkcs12.Modern.Encode(key, leaf, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	pfxPath := filepath.Join(dir, "cert.pfx")
	if err := os.WriteFile(pfxPath, pfx, 0o600); err != nil {
		t.Fatal(err)
	}
	seed := `
vaults:
  - name: myvault
    secrets:
      - name: plain
        value: x
    certificates:
      - name: short
        subject: CN=short.example.com
        dns_names: [short.example.com]
        key_type: EC
        curve: P-384
        content_type: pem
        validity: 4s
        renew_at_percentage: 50
        tags: {env: dev}
      - name: yearly
        key_type: RSA
        validity_months: 24
        renew_days_before_expiry: 30
      - name: from-pem
        import_pem_file: ` + pemPath + `
        content_type: pem
      - name: from-pfx
        import_pfx_file: ` + pfxPath + `
        password: pw
    grants:
      - identity: system
        role: certificate-user
`
	srv := newServer(t, kvtest.WithSeed([]byte(seed)))
	kv := srv.Vault("myvault")
	if got := kv.CertificateNames(); !slices.Equal(got, []string{"from-pem", "from-pfx", "short", "yearly"}) {
		t.Fatalf("certificates %v", got)
	}
	certs := newCertsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	secrets := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 60*time.Second)
	short, err := certs.GetCertificate(ctx, "short", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *short.Tags["env"] != "dev" || *short.Policy.KeyProperties.Curve != azcertificates.CurveNameP384 ||
		*short.Policy.SecretProperties.ContentType != kvtest.ContentTypePEM || *short.Policy.LifetimeActions[0].Trigger.LifetimePercentage != 50 {
		t.Errorf("short: %+v %+v", short.Tags, short.Policy)
	}
	yearly, err := certs.GetCertificatePolicy(ctx, "yearly", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *yearly.X509CertificateProperties.ValidityInMonths != 24 || *yearly.LifetimeActions[0].Trigger.DaysBeforeExpiry != 30 {
		t.Errorf("yearly policy %+v", yearly.CertificatePolicy)
	}
	for _, name := range []string{"from-pem", "from-pfx"} {
		c, err := certs.GetCertificate(ctx, name, "", nil)
		if err != nil || !bytes.Equal(c.CER, leaf.Raw) {
			t.Errorf("%s: %v", name, err)
		}
		if s, err := secrets.GetSecret(ctx, name, "", nil); err != nil || !*s.Managed {
			t.Errorf("%s: linked secret: %v", name, err)
		}
	}
	waitVersions(t, kv, "short", 2, 20*time.Second)

	for _, bad := range []struct{ seed, want string }{
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    colour: blue\n", `unknown field "colour" in certificate "c"`},
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    validity: soon\n", "validity"},
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    key_type: DSA\n", "key type"},
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    content_type: text/plain\n", "content_type"},
		{"vaults:\n- name: v\n  secrets:\n  - {name: c, value: x}\n  certificates:\n  - name: c\n", "secret's name too"},
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    import_pem_file: x.pem\n    key_type: EC\n", "from the file"},
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    import_pfx_file: x.pfx\n    renew_at_percentage: 50\n", "does not renew"},
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    validity: 1h\n    renew_days_before_expiry: 1\n", "validity"},
		{"vaults:\n- name: v\n  certificates:\n  - name: c\n    password: hunter2\n", "password applies"},
	} {
		_, err := kvtest.ParseSeed(strings.NewReader(bad.seed))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("seed %q: error %v, want %q", bad.seed, err, bad.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the seed's error quotes a password: %v", err)
		}
	}
}
