//go:build !windows

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// systemPython is Debian's interpreter, whose dist-packages hold python3-azure (a python3
// earlier on PATH, such as pyenv's, does not see them).
const systemPython = "/usr/bin/python3"

// requirePythonAzure skips the test where Debian's Azure SDK for Python is not installed,
// except in CI (CI=true), where it must be: .ci/run installs python3-azure. It imports
// azure.identity and azure.keyvault.secrets, and the extra modules named.
func requirePythonAzure(t *testing.T, modules ...string) {
	t.Helper()
	imports := strings.Join(append([]string{"azure.identity", "azure.keyvault.secrets"}, modules...), ", ")
	out, err := exec.Command(systemPython, "-c", "import "+imports).CombinedOutput()
	if err == nil {
		return
	}
	msg := "the Azure SDK for Python is not installed for " + systemPython + " (apt-get install python3-azure): " +
		strings.TrimSpace(lastLine(string(out))+" "+err.Error())
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", msg)
	}
	t.Skipf("skipping: %s", msg)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// exportRE matches an "export NAME=value" line of the emulator's instructions.
var exportRE = regexp.MustCompile(`(?m)^\s*export ([A-Z_]+)=(\S+)`)

// summaryRE is the script's last line.
var summaryRE = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed$`)

// TestConformancePython runs a real SDK of another language, Debian's azure-identity and
// azure-keyvault-secrets (python3-azure), against the standalone emulator through its
// proxy: production URLs (https://myvault.vault.azure.net, login.microsoftonline.com,
// http://169.254.169.254), challenge resource verification on, and no option but the
// variables the emulator prints. testdata/conformance/conformance.py checks managed
// identity (App Service and IMDS styles), workload identity, paging, versions, update,
// the deletion window's 409s, recover, purge, backup and restore and the errors; the test
// fails if any check fails.
func TestConformancePython(t *testing.T) {
	requirePythonAzure(t)
	info, infoPath, stdout := startEmulator(t)
	runConformanceScript(t, "conformance.py", info, infoPath, stdout, 28)
}

// certificatesSeed is the seed of TestConformancePythonCertificates, and the example seed
// of docs/emulator.md's Certificates section (keep the two alike): a vault with two
// self-signed certificates, one of them renewed every minute; an identity that manages
// certificates and reads their linked secrets (Key Vault Certificates Officer and Key
// Vault Secrets User, as a deployment identity might have), one with Key Vault
// Certificates Officer only, which reads no secret, and one without a role; the
// system-assigned identity, an application's, reads certificates and their linked secrets
// (Key Vault Certificate User).
const certificatesSeed = `
identities:
  - name: certadmin     # manages certificates and reads their linked secrets
  - name: certofficer   # manages certificates, reads no secret
  - name: noaccess      # no role: 403 ForbiddenByRbac
vaults:
  - name: certvault     # https://certvault.vault.azure.net
    certificates:
      - name: seeded-web
        subject: "CN=web.contoso.test, O=Contoso"
        dns_names: [web.contoso.test]
        content_type: pem
        validity_months: 6
        renew_at_percentage: 75
        tags: {env: local}
      - name: short-lived   # valid 2 minutes, renewed at 50%: a new version every minute
        key_type: EC
        curve: P-384
        validity: 2m
        renew_at_percentage: 50
    grants:
      - identity: system
        role: Key Vault Certificate User
      - identity: certadmin
        role: Key Vault Certificates Officer
      - identity: certadmin
        role: Key Vault Secrets User
      - identity: certofficer
        role: Key Vault Certificates Officer
`

// TestConformancePythonCertificates runs Debian's azure-keyvault-certificates (python3-azure,
// API version 7.3) against the standalone emulator through its proxy, as
// TestConformancePython does for secrets. testdata/conformance/certificates.py checks
// create with a self-signed policy (RSA and EC) and the SDK's poller, get, versions,
// lists, the policy (get and update), the pending operation after it completed, import
// of PEM and PFX, the linked secret through SecretClient (content type, key matching the
// certificate, outContentType), delete, recover and purge, RBAC and the errors; the test
// fails if any check fails.
func TestConformancePythonCertificates(t *testing.T) {
	requirePythonAzure(t, "azure.keyvault.certificates")
	seed := filepath.Join(t.TempDir(), "certificates-seed.yaml")
	if err := os.WriteFile(seed, []byte(certificatesSeed), 0o600); err != nil {
		t.Fatal(err)
	}
	// startEmulator passes the example seed first; a later --seed replaces it (a repeated
	// string flag keeps its last value).
	info, infoPath, stdout := startEmulator(t, "--seed", seed)
	if _, ok := info.Identities["certadmin"]; !ok {
		t.Fatalf("the emulator did not load %s: identities %v", seed, info.Identities)
	}
	runConformanceScript(t, "certificates.py", info, infoPath, stdout, 24)
}

// runConformanceScript runs testdata/conformance/<script> with Debian's python3 against
// the emulator started by startEmulator, with only the proxy variables the emulator
// printed, and fails the test unless the script's last line says every check passed and
// at least minPassed did.
func runConformanceScript(t *testing.T, script string, info *emuinfo.Info, infoPath string, stdout *syncBuffer, minPassed int) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "..", "testdata", "conformance", script))
	if err != nil {
		t.Fatal(err)
	}

	// What the emulator told the user to export for Python, checked against the info file.
	printed := map[string]string{}
	for _, m := range exportRE.FindAllStringSubmatch(stdout.String(), -1) {
		printed[m[1]] = m[2]
	}
	want, err := info.ProxyEnv()
	if err != nil {
		t.Fatal(err)
	}
	env := conformanceEnv()
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "REQUESTS_CA_BUNDLE"} {
		if printed[k] == "" || printed[k] != want[k] {
			t.Fatalf("the emulator printed export %s=%q, want %q (info file)", k, printed[k], want[k])
		}
		env = append(env, k+"="+printed[k])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, systemPython, script, "--info", infoPath)
	cmd.Env = append(env, "PYTHONDONTWRITEBYTECODE=1", "CONFORMANCE_TRACE=1")
	cmd.Dir = t.TempDir()
	start := time.Now()
	out, runErr := cmd.CombinedOutput()
	t.Logf("%s (%.1f s):\n%s", filepath.Base(script), time.Since(start).Seconds(), out)

	var fails []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "FAIL ") {
			fails = append(fails, line)
		}
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
	if passed < minPassed {
		t.Fatalf("only %d checks passed, want every check of the script (%d or more)", passed, minPassed)
	}
}

// conformanceEnv is the test's environment without the variables that would steer the
// script other than the emulator's instructions say: proxies, CA bundles, managed
// identity, Azure and Python settings.
func conformanceEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch u := strings.ToUpper(k); {
		case strings.HasSuffix(u, "_PROXY"), u == "SSL_CERT_FILE", u == "SSL_CERT_DIR",
			u == "REQUESTS_CA_BUNDLE", u == "CURL_CA_BUNDLE", u == "NODE_EXTRA_CA_CERTS",
			strings.HasPrefix(u, "IDENTITY_"), strings.HasPrefix(u, "MSI_"), u == "IMDS_ENDPOINT",
			strings.HasPrefix(u, "AZURE_"), strings.HasPrefix(u, "PYTHON"), strings.HasPrefix(u, "VIPERKV_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}
