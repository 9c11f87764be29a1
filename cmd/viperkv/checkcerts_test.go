//go:build !windows

package main

import (
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/certtest"
	"github.com/viperkv/viperkv/kvtest"
)

// TestCheckCertificates: check shows each certificate's subject, serial, expiry and days
// left (a CA bundle's too), --min-validity fails the gate for one that expires sooner, the
// JSON says the same, and no key material shows.
func TestCheckCertificates(t *testing.T) {
	t.Parallel()
	root := certtest.New(nil, certtest.Options{CommonName: "check root", IsCA: true, EC: true, NotAfter: time.Now().Add(365 * 24 * time.Hour)})
	leaf := certtest.New(root, certtest.Options{CommonName: "web.example", EC: true, NotAfter: time.Now().Add(10*24*time.Hour + time.Hour)})
	tlsName, caName := secretName(t), secretName(t)
	kv := emu.Vault("myvault")
	kv.SetSecret(tlsName, leaf.PKCS12(), kvtest.WithContentType(certparse.ContentTypePKCS12))
	kv.SetSecret(caName, root.CertsPEM(), kvtest.WithContentType(certparse.ContentTypePEM))
	cfg := writeFile(t, "certs.yaml", "server:\n  tls: \"@KeyVault(VaultName=myvault;SecretName="+tlsName+")\"\nca: \"@KeyVault(VaultName=myvault;SecretName="+caName+")\"\n")

	code, out, errOut := cli(t, nil, "check", "--config", cfg, "--min-validity", "5d")
	if code != 0 {
		t.Fatalf("--min-validity 5d: exit %d\n%s%s", code, out, errOut)
	}
	serial := leaf.Leaf().SerialNumber.Text(16)
	if !regexp.MustCompile(`(?m)^server\.tls\s+CN=web\.example\s+` + serial + `\s+\S+\s+10$`).MatchString(out) {
		t.Errorf("no certificate row for server.tls with 10 days left:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^ca\s+CN=check root\s+`).MatchString(out) {
		t.Errorf("no row for the CA bundle:\n%s", out)
	}

	code, out, errOut = cli(t, nil, "check", "--config", cfg, "--min-validity", "14d")
	if code != 1 || !strings.Contains(out, "10 (too soon)") || !strings.Contains(out, "1 certificate(s) expire within --min-validity 336h0m0s") {
		t.Errorf("--min-validity 14d: exit %d, want 1 and the certificate named\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, nil, "check", "--config", cfg, "--min-validity", "14d", "-o", "json")
	var doc struct {
		References []struct {
			Key         string `json:"key"`
			Certificate *struct {
				Subject  string `json:"subject"`
				DaysLeft int    `json:"days_left"`
				TooSoon  bool   `json:"expires_too_soon"`
			} `json:"certificate"`
		} `json:"references"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 1 {
		t.Fatalf("json: exit %d, %v\n%s", code, err, out)
	}
	for _, r := range doc.References {
		if r.Key == "server.tls" && (r.Certificate == nil || r.Certificate.DaysLeft != 10 || !r.Certificate.TooSoon || r.Certificate.Subject != "CN=web.example") {
			t.Errorf("json row for server.tls: %+v", r.Certificate)
		}
	}
	if code, _, errOut := cli(t, nil, "check", "--config", cfg, "--min-validity", "soon"); code != 2 || !strings.Contains(errOut, "want days (14d)") {
		t.Errorf("--min-validity soon: exit %d\n%s", code, errOut)
	}
	body := strings.Split(leaf.KeyPEM(), "\n")[1]
	if strings.Contains(out+errOut, body) || strings.Contains(out, leaf.PKCS12()[:40]) {
		t.Error("key material in check's output")
	}
}

// TestRenderCertificateFiles: render writes a Key Vault certificate (PKCS#12) as the PEM
// chain and key files a server reads, 0600, which make a working key pair.
func TestRenderCertificateFiles(t *testing.T) {
	t.Parallel()
	root := certtest.New(nil, certtest.Options{CommonName: "render root", IsCA: true, EC: true})
	leaf := certtest.New(root, certtest.Options{CommonName: "nginx.example", DNSNames: []string{"nginx.example"}})
	name := secretName(t)
	emu.Vault("myvault").SetSecret(name, leaf.PKCS12(), kvtest.WithContentType(certparse.ContentTypePKCS12))
	cfg := writeFile(t, "nginx.yaml", "tls: \"@KeyVault(VaultName=myvault;SecretName="+name+")\"\n")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for tmpl, out := range map[string]string{`{{ certPEM "tls" }}`: certFile, `{{ keyPEM "tls" }}`: keyFile} {
		code, stdout, stderr := cli(t, nil, "render", "--config", cfg, "--template", writeFile(t, "t.tmpl", tmpl), "--out", out)
		if code != 0 {
			t.Fatalf("render %s: exit %d\n%s%s", tmpl, code, stdout, stderr)
		}
		if strings.Contains(stdout+stderr, "PRIVATE KEY") {
			t.Error("render printed key material")
		}
		if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", out, fi, err)
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("the rendered files are not a key pair: %v", err)
	}
	if len(pair.Certificate) != 2 || pair.Leaf.Subject.CommonName != "nginx.example" {
		t.Errorf("rendered chain of %d, leaf %q", len(pair.Certificate), pair.Leaf.Subject.CommonName)
	}
}

// TestCertificateKeyShownOnlyWhenRevealed: a certificate's private key (PEM and PKCS#12)
// shows in no output of check, resolve or run (whose child prints it) unless revealed.
func TestCertificateKeyShownOnlyWhenRevealed(t *testing.T) {
	t.Parallel()
	leaf := certtest.New(nil, certtest.Options{CommonName: "sentinel.example"})
	pemName, p12Name := secretName(t), secretName(t)
	kv := emu.Vault("myvault")
	kv.SetSecret(pemName, leaf.PEM(), kvtest.WithContentType(certparse.ContentTypePEM))
	kv.SetSecret(p12Name, leaf.PKCS12(), kvtest.WithContentType(certparse.ContentTypePKCS12))
	cfg := writeFile(t, "certs.yaml", "tls:\n  pem: \"@KeyVault(VaultName=myvault;SecretName="+pemName+")\"\n  p12: \"@KeyVault(VaultName=myvault;SecretName="+p12Name+")\"\n")
	var probes []string
	for _, l := range strings.Split(leaf.KeyPEM(), "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			probes = append(probes, l)
		}
	}
	p12 := leaf.PKCS12()
	probes = append(probes, p12[len(p12)/2:len(p12)/2+48])
	shows := func(out string) bool {
		for _, p := range probes {
			if strings.Contains(out, p) || strings.Contains(out, strings.ReplaceAll(p, "/", `\/`)) {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		args   []string
		reveal bool
	}{
		{[]string{"check", "--config", cfg}, false},
		{[]string{"check", "--config", cfg, "-o", "json", "--verbose"}, false},
		{[]string{"resolve", "--config", cfg}, false},
		{[]string{"resolve", "--config", cfg, "--format", "json", "--verbose"}, false},
		{[]string{"resolve", "--config", cfg, "--format", "env"}, false},
		{append([]string{"run", "--config", cfg, "--verbose"}, childCmd("print", "TLS_PEM", "TLS_P12")...), false},
		{[]string{"resolve", "--config", cfg, "--format", "json", "--reveal"}, true},
	} {
		what := "viperkv " + strings.Join(tc.args, " ")
		var env []string
		if tc.args[0] == "run" {
			env = []string{childEnvVar}
		}
		code, out, errOut := cli(t, env, tc.args...)
		if code != 0 {
			t.Errorf("%s: exit %d\n%s%s", what, code, out, errOut)
			continue
		}
		if got := shows(out + errOut); got != tc.reveal {
			t.Errorf("%s: key material shown %v, want %v", what, got, tc.reveal)
		}
	}
}
