//go:build !windows

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// TestEmulatorCommand runs the emulator command from the example seed and reads secrets
// with the real SDK using nothing but the info file.
func TestEmulatorCommand(t *testing.T) {
	tmp := t.TempDir()
	bin := binPath // built by TestMain
	seedPath := filepath.Join("..", "..", "testdata", "emulator-seed.yaml")
	seedFile, err := os.Open(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kvtest.ParseSeed(seedFile)
	seedFile.Close()
	if err != nil {
		t.Fatal(err)
	}

	infoPath := filepath.Join(tmp, "info.json")
	// MSAL caches managed identity tokens per process, keyed by identity and resource only:
	// with -count=N a later run would present a token signed by an earlier emulator
	// process's key. Tokens of 5 minutes are never cached.
	cmd := exec.Command(bin, "emulator", "--seed", seedPath, "--info", infoPath, "--token-lifetime", "5m")
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(infoPath); err == nil {
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("emulator exited early: %v\n%s%s", err, stdout.String(), stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no info file after 30 s\n%s%s", stdout.String(), stderr.String())
		}
	}
	info, err := kvtest.ReadInfo(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	if info.CAFile != filepath.Join(tmp, "emulator-ca.pem") {
		t.Errorf("CA file %s, want it next to the info file", info.CAFile)
	}

	// MSAL reads the managed identity variables from the process environment.
	t.Setenv("IDENTITY_ENDPOINT", info.IdentityEndpoint)
	t.Setenv("IDENTITY_HEADER", info.IdentityHeader)
	pemBytes, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("CA file holds no certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	plain := &http.Client{Transport: tr}
	defer plain.CloseIdleConnections()
	opts := azcore.ClientOptions{Transport: plain}
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The way any SDK user reaches it: https://127.0.0.1:PORT, the CA file, and challenge
	// resource verification off because the host is an IP.
	direct, err := azsecrets.NewClient(info.Vaults["myvault"], cred, &azsecrets.ClientOptions{
		ClientOptions:                        opts,
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, s := range seed.Vaults[0].Secrets {
		want[s.Name] = s.Value
	}
	got, err := direct.GetSecret(ctx, "db-conn", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Value != want["db-conn"] || !strings.HasPrefix(string(*got.ID), "https://myvault.vault.azure.net/secrets/db-conn/") {
		t.Errorf("db-conn = %s (value matches: %v)", *got.ID, *got.Value == want["db-conn"])
	}

	// The viperkv way: production URLs through Info.Client.
	hc, err := info.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	prod, err := azsecrets.NewClient("https://myvault.vault.azure.net", cred, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: hc},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := prod.GetSecret(ctx, "api-key", "", nil); err != nil || *got.Value != want["api-key"] {
		t.Errorf("api-key through Info.Client: %v", err)
	}

	out := stdout.String()
	for _, s := range []string{"IDENTITY_ENDPOINT=" + info.IdentityEndpoint, "IDENTITY_HEADER=" + info.IdentityHeader,
		info.Vaults["myvault"], "DisableChallengeResourceVerification", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
		"NODE_EXTRA_CA_CERTS", "kvtest.ReadInfo", "VIPERKV_EMULATOR_INFO=" + infoPath} {
		if !strings.Contains(out, s) {
			t.Errorf("instructions lack %q:\n%s", s, out)
		}
	}
	for name, v := range want {
		if strings.Contains(out+stderr.String(), v) {
			t.Errorf("the output shows the value of %s", name)
		}
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("exit after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the emulator did not stop on SIGINT")
	}
	// Files the user named stay.
	for _, p := range []string{infoPath, info.CAFile} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}
