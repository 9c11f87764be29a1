//go:build !windows

package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/viperkv/viperkv/internal/certtest"
)

// jsConformanceDir holds the JavaScript conformance script, its package.json and
// package-lock.json; `npm ci --prefix testdata/conformance/js` installs its node_modules
// (.ci/run does).
var jsConformanceDir = filepath.Join("..", "..", "testdata", "conformance", "js")

// requireNodeConformance returns node's path and the script's directory, and skips the
// test where node or the script's node_modules is missing (or not what package.json pins),
// except in CI (CI=true), where they must be there: .ci/run installs them.
func requireNodeConformance(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs(jsConformanceDir)
	if err != nil {
		t.Fatal(err)
	}
	unavailable := func(msg string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s", msg)
		}
		t.Skipf("skipping: %s", msg)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		unavailable("node is not installed (apt-get install nodejs npm)")
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil || len(pkg.Dependencies) == 0 {
		t.Fatalf("%s/package.json: %v (no dependencies?)", dir, err)
	}
	for name, want := range pkg.Dependencies {
		var got struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if err == nil {
			err = json.Unmarshal(b, &got)
		}
		if err != nil || got.Version != want {
			unavailable("the Azure SDK for JavaScript is not installed as package.json pins it (" + name + " " + want +
				", found " + strconv.Quote(got.Version) + "): npm ci --prefix testdata/conformance/js")
		}
	}
	return node, dir
}

// jsConformanceSeed is the seed of TestConformanceJS: certificatesSeed (the Python
// certificates check's, and docs/emulator.md's example) with, for the secrets and
// identity checks, an identity "rotator" (Key Vault Secrets Officer on myvault), a
// federated identity "workload" (Key Vault Secrets User on myvault) and a vault "myvault"
// with the secret "db-conn", which the system-assigned identity reads.
func jsConformanceSeed(t *testing.T) string {
	t.Helper()
	const identities = `
  - name: rotator       # writes secrets in myvault
  - name: workload      # AKS workload identity: reads myvault
    federated: true
vaults:
`
	const myvault = `  - name: myvault       # https://myvault.vault.azure.net
    secrets:
      - name: db-conn
        value: "Server=localhost;Database=app;User Id=app;Password=local-dev-only"
        content_type: text/plain
        tags: {env: local}
    grants:
      - identity: system
        role: Key Vault Secrets User
      - identity: workload
        role: Key Vault Secrets User
      - identity: rotator
        role: Key Vault Secrets Officer
`
	if strings.Count(certificatesSeed, "\nvaults:\n") != 1 || !strings.HasSuffix(certificatesSeed, "Officer\n") {
		t.Fatal("certificatesSeed changed shape: adjust jsConformanceSeed")
	}
	return strings.Replace(certificatesSeed, "\nvaults:\n", identities, 1) + myvault
}

// jsPFXPassword is the fixtures' PFX password, PFX_PASSWORD in certificates.mjs.
const jsPFXPassword = "conformance-pw"

// writeImportFixtures writes into dir the files certificates.mjs imports, which node
// cannot make: import.pem (an EC P-256 key, its leaf "CN=pem.conformance.test" and the
// CA), mismatched.pem (another key with that leaf), and aes.pfx and 3des.pfx (an RSA 2048
// key, its leaf and the CA, with jsPFXPassword; AES-256 with PBKDF2, and 3DES with SHA-1)
// with their leaves in aes.crt and 3des.crt.
func writeImportFixtures(t *testing.T, dir string) {
	t.Helper()
	ca := certtest.New(nil, certtest.Options{CommonName: "Conformance Test CA", IsCA: true, EC: true})
	pemLeaf := certtest.New(ca, certtest.Options{CommonName: "pem.conformance.test", DNSNames: []string{"pem.conformance.test"}, EC: true})
	other := certtest.New(nil, certtest.Options{CommonName: "other.conformance.test"})
	files := map[string][]byte{
		"import.pem":     []byte(pemLeaf.PEM()),
		"mismatched.pem": []byte(other.KeyPEM() + pemLeaf.CertsPEM()),
	}
	for name, enc := range map[string]*pkcs12.Encoder{"aes": pkcs12.Modern2023, "3des": pkcs12.LegacyDES} {
		leaf := certtest.New(ca, certtest.Options{CommonName: "pfx.conformance.test", DNSNames: []string{"pfx.conformance.test"}})
		der, err := enc.Encode(leaf.Key, leaf.Leaf(), []*x509.Certificate{ca.Leaf()}, jsPFXPassword)
		if err != nil {
			t.Fatal(err)
		}
		files[name+".pfx"] = der
		files[name+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Leaf().Raw})
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConformanceJS runs the Azure SDK for JavaScript (@azure/identity,
// @azure/keyvault-certificates and @azure/keyvault-secrets, pinned in
// testdata/conformance/js/package.json) with node against the standalone emulator through
// its proxy, as TestConformancePython does with Python: production URLs, challenge
// resource verification on, and no option but the variables the emulator prints
// (HTTPS_PROXY and HTTP_PROXY, which core-rest-pipeline's proxyPolicy reads, and
// NODE_EXTRA_CA_CERTS). testdata/conformance/js/certificates.mjs checks managed identity
// (App Service and IMDS styles, DefaultAzureCredential), workload identity, certificates
// (create RSA and EC with the poller, get, versions, lists, the policy, the pending
// operation, import of PEM and PFX, the linked secret, delete, recover, purge, RBAC and
// the errors) and secrets (versions, paging, disable, delete, recover, purge, backup and
// restore); the test fails if any check fails. A known gap of the emulator prints a GAP
// line, which the test logs without failing.
func TestConformanceJS(t *testing.T) {
	node, dir := requireNodeConformance(t)
	tmp := t.TempDir()
	seed := filepath.Join(tmp, "js-seed.yaml")
	if err := os.WriteFile(seed, []byte(jsConformanceSeed(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	fixtures := filepath.Join(tmp, "fixtures")
	if err := os.Mkdir(fixtures, 0o700); err != nil {
		t.Fatal(err)
	}
	writeImportFixtures(t, fixtures)
	// A later --seed replaces startEmulator's example seed.
	info, infoPath, stdout := startEmulator(t, "--seed", seed)
	for _, n := range []string{"certadmin", "rotator", "workload"} {
		if _, ok := info.Identities[n]; !ok {
			t.Fatalf("the emulator did not load %s: identities %v", seed, info.Identities)
		}
	}

	// What the emulator told the user to export for Node.js, checked against the info file.
	printed := map[string]string{}
	for _, m := range exportRE.FindAllStringSubmatch(stdout.String(), -1) {
		printed[m[1]] = m[2]
	}
	want, err := info.ProxyEnv()
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range conformanceEnv() {
		// Nothing of node's own may steer the run (NODE_OPTIONS, NODE_TLS_REJECT_UNAUTHORIZED).
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(strings.ToUpper(k), "NODE_") {
			env = append(env, kv)
		}
	}
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "NODE_EXTRA_CA_CERTS"} {
		if printed[k] == "" || printed[k] != want[k] {
			t.Fatalf("the emulator printed export %s=%q, want %q (info file)", k, printed[k], want[k])
		}
		env = append(env, k+"="+printed[k])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "certificates.mjs"), "--info", infoPath, "--fixtures", fixtures)
	cmd.Env = append(env, "CONFORMANCE_TRACE=1")
	cmd.Dir = tmp
	start := time.Now()
	out, runErr := cmd.CombinedOutput()
	t.Logf("certificates.mjs (%.1f s):\n%s", time.Since(start).Seconds(), out)

	var fails, gaps []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "FAIL "), strings.HasPrefix(line, "SKIP "):
			fails = append(fails, line)
		case strings.HasPrefix(line, "GAP "):
			gaps = append(gaps, line)
		}
	}
	// A known difference from Key Vault (docs/emulator.md, "Checked by a real SDK") is
	// reported, not failed: the check passes once the emulator behaves.
	if len(gaps) > 0 {
		t.Logf("known gaps of the emulator:\n%s", strings.Join(gaps, "\n"))
	}
	m := summaryRE.FindAllStringSubmatch(string(out), -1)
	if len(m) == 0 {
		t.Fatalf("no \"N passed, M failed\" line (%v)", runErr)
	}
	passed, _ := strconv.Atoi(m[len(m)-1][1])
	failed, _ := strconv.Atoi(m[len(m)-1][2])
	if failed != 0 || len(fails) != 0 || runErr != nil {
		t.Fatalf("%d check(s) failed (%v):\n%s", failed, runErr, strings.Join(fails, "\n"))
	}
	// A script that stops early or loses checks must not pass quietly.
	const minPassed = 48
	if passed < minPassed {
		t.Fatalf("only %d checks passed, want every check of the script (%d or more)", passed, minPassed)
	}
}
