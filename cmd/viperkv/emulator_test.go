//go:build !windows

package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// TestEmulatorCommand runs the emulator command from the example seed and reads secrets
// with the real SDK using nothing but the info file.
func TestEmulatorCommand(t *testing.T) {
	tmp := t.TempDir()
	bin := binPath // built by TestMain
	seedPath := filepath.Join("..", "..", "testdata", "emulator-seed.yaml")
	seed, err := readSeed(seedPath)
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
	info, err := emuinfo.Read(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	if info.CAFile != filepath.Join(tmp, "info.ca.pem") {
		t.Errorf("CA file %s, want it next to the info file, named after it", info.CAFile)
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
	hc, err := info.Client("the emulator")
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
		"NODE_EXTRA_CA_CERTS", "viperkv.WithEmulatorInfo", "VIPERKV_EMULATOR_INFO=" + infoPath} {
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
	// The files the emulator wrote go with it.
	for _, p := range []string{infoPath, info.CAFile, info.Identities["workload"].FederatedTokenFile} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after shutdown: %v", p, err)
		}
	}
}

// emulatorFiles returns the files an emulator's info file names: the info file, the CA
// and the federated token files.
func emulatorFiles(t *testing.T, infoPath string) []string {
	t.Helper()
	info, err := emuinfo.Read(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{infoPath, info.CAFile}
	for _, id := range info.Identities {
		if id.FederatedTokenFile != "" {
			files = append(files, id.FederatedTokenFile)
		}
	}
	return files
}

func assertExist(t *testing.T, what string, files []string, exist bool) {
	t.Helper()
	for _, f := range files {
		_, err := os.Stat(f)
		if exist && err != nil {
			t.Errorf("%s: %s missing: %v", what, f, err)
		}
		if !exist && !os.IsNotExist(err) {
			t.Errorf("%s: %s still there: %v", what, f, err)
		}
	}
}

// TestEmulatorFilesPerInfoFile: two emulators in one directory with different --info names
// keep their own CA and token files (named after the info file), and each removes the
// files it wrote (its lock file too) on SIGTERM or SIGINT, leaving the other's alone. The
// same --info twice is refused: see TestEmulatorInfoInUse.
func TestEmulatorFilesPerInfoFile(t *testing.T) {
	dir := t.TempDir()
	seed := filepath.Join("..", "..", "testdata", "emulator-seed.yaml")
	emulator := func(info string) *proc {
		p := start(t, nil, "emulator", "--seed", seed, "--info", filepath.Join(dir, info))
		p.waitOutput("Press Ctrl+C to stop.")
		return p
	}
	a, b := emulator("a.json"), emulator("b.json")
	aInfo, err := emuinfo.Read(filepath.Join(dir, "a.json"))
	if err != nil {
		t.Fatal(err)
	}
	bInfo, err := emuinfo.Read(filepath.Join(dir, "b.json"))
	if err != nil {
		t.Fatal(err)
	}
	if aInfo.CAFile != filepath.Join(dir, "a.ca.pem") || bInfo.CAFile != filepath.Join(dir, "b.ca.pem") {
		t.Fatalf("CA files %s and %s, want a.ca.pem and b.ca.pem in %s", aInfo.CAFile, bInfo.CAFile, dir)
	}
	if aw, bw := aInfo.Identities["workload"].FederatedTokenFile, bInfo.Identities["workload"].FederatedTokenFile; aw == bw || aw == "" {
		t.Errorf("federated token files %q and %q", aw, bw)
	}
	// Each CA file is its own emulator's: its vault's certificate verifies against it.
	for _, in := range []*emuinfo.Info{aInfo, bInfo} {
		hc, err := in.Client("the emulator")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Get("https://myvault.vault.azure.net/")
		if err != nil {
			t.Errorf("%s: %v", in.CAFile, err)
		} else {
			resp.Body.Close()
		}
		hc.CloseIdleConnections()
	}
	aFiles, bFiles := emulatorFiles(t, filepath.Join(dir, "a.json")), emulatorFiles(t, filepath.Join(dir, "b.json"))

	a.signal(syscall.SIGTERM)
	if code := a.wait(); code != 0 {
		t.Fatalf("a exited %d after SIGTERM\n%s", code, a.stderr.String())
	}
	assertExist(t, "a after SIGTERM", aFiles, false)
	assertExist(t, "b while running", bFiles, true)
	b.signal(os.Interrupt)
	if code := b.wait(); code != 0 {
		t.Fatalf("b exited %d after SIGINT\n%s", code, b.stderr.String())
	}
	assertExist(t, "b after SIGINT", bFiles, false)
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Errorf("left in the directory: %v", left)
	}
}

// TestEmulatorProxy: the standalone emulator's info file has proxy_url and its
// instructions say what to export; through the proxy alone (no dialer routing) a client
// trusting the CA file reaches https://myvault.vault.azure.net with challenge resource
// verification on, and the proxy refuses other hosts.
func TestEmulatorProxy(t *testing.T) {
	info, infoPath, stdout := startEmulator(t, "--token-lifetime", "5m")
	var raw struct {
		ProxyURL string `json:"proxy_url"`
	}
	b, err := os.ReadFile(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &raw); err != nil || !strings.HasPrefix(raw.ProxyURL, "http://127.0.0.1:") {
		t.Fatalf("proxy_url = %q (%v)", raw.ProxyURL, err)
	}
	out := stdout.String()
	for _, s := range []string{"export HTTPS_PROXY=" + raw.ProxyURL, "export HTTP_PROXY=" + raw.ProxyURL,
		"export SSL_CERT_FILE=" + info.CAFile, "export REQUESTS_CA_BUNDLE=" + info.CAFile, "export NODE_EXTRA_CA_CERTS=" + info.CAFile} {
		if !strings.Contains(out, s) {
			t.Errorf("instructions lack %q:\n%s", s, out)
		}
	}

	pemBytes, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	proxyURL, err := url.Parse(info.ProxyURL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	if resp, err := hc.Get("https://example.com/"); err == nil {
		resp.Body.Close()
		t.Errorf("https://example.com through the proxy: %s", resp.Status)
	} else if !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("https://example.com through the proxy: %v", err)
	}

	c := myvaultClient(t, info, hc, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.GetSecret(ctx, "api-key", "", nil); err != nil {
		t.Errorf("api-key through the proxy: %v", err)
	}
}

// TestEmulatorProxyGoSDKEnvironmentOnly: against the standalone emulator, the Go SDK with
// default options (testdata/conformance/goclient) reaches https://myvault.vault.azure.net
// through the proxy with nothing but environment variables: the proxy and CA variables
// from the info file and a managed identity (App Service and IMDS styles) or the seed's
// workload identity. Go reads proxy variables once per process, so each case is a process.
func TestEmulatorProxyGoSDKEnvironmentOnly(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "goclient")
	build := []string{"build", "-o", bin}
	if raceEnabled {
		build = append(build, "-race") // reuses the test's compiled SDK packages
	}
	if out, err := exec.Command("go", append(build, "../../testdata/conformance/goclient")...).CombinedOutput(); err != nil {
		t.Fatalf("go build goclient: %v\n%s", err, out)
	}
	info, _, _ := startEmulator(t)
	seed, err := readSeed(filepath.Join("..", "..", "testdata", "emulator-seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dbConn string
	for _, s := range seed.Vaults[0].Secrets {
		if s.Name == "db-conn" {
			dbConn = s.Value
		}
	}
	sum := sha256.Sum256([]byte(dbConn))
	wantHash := fmt.Sprintf("sha256=%x", sum[:8])

	proxyEnv, err := info.ProxyEnv()
	if err != nil {
		t.Fatal(err)
	}
	workload, err := info.WorkloadIdentityEnv("workload")
	if err != nil {
		t.Fatal(err)
	}
	aks := maps.Clone(workload)
	aks["AZURE_AUTHORITY_HOST"] = "https://login.microsoftonline.com/" // what AKS sets
	for _, tc := range []struct {
		name       string
		env        map[string]string
		args       []string
		wantOutput string // "" = must fail
	}{
		{"managed identity, App Service style", info.Env(), []string{"-credential", "managed-identity"}, wantHash},
		{"managed identity, IMDS style", nil, []string{"-credential", "managed-identity"}, wantHash},
		{"workload identity, production authority", aks, []string{"-credential", "workload-identity"}, wantHash},
		{"workload identity, the printed variables", workload, []string{"-credential", "workload-identity"}, wantHash},
		// The seed's workload identity may read myvault only: the token is really its own.
		{"workload identity, no role on othervault", aks, []string{"-credential", "workload-identity",
			"-vault", "https://othervault.vault.azure.net", "-secret", "feature-flags"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := conformanceEnv()
			for _, m := range []map[string]string{proxyEnv, tc.env} {
				for k, v := range m {
					env = append(env, k+"="+v)
				}
			}
			env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			switch {
			case tc.wantOutput == "" && (err == nil || !strings.Contains(string(out), "403")):
				t.Fatalf("want a 403, got %v\n%s", err, out)
			case tc.wantOutput != "" && (err != nil || !strings.Contains(string(out), tc.wantOutput)):
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestEmulatorDeletionWindowFlag: --deletion-window 0 makes a purge right after DELETE
// succeed (the default window answers 409, see TestConformancePython); a negative window
// is a usage error.
func TestEmulatorDeletionWindowFlag(t *testing.T) {
	if code, _, stderr := cli(t, nil, "emulator", "--deletion-window", "-1s"); code != 2 || !strings.Contains(stderr, "--deletion-window") {
		t.Errorf("--deletion-window -1s: exit %d, %s", code, stderr)
	}
	// Tokens of 5 minutes are never cached by MSAL, whose cache is per process.
	info, _, _ := startEmulator(t, "--deletion-window", "0", "--token-lifetime", "5m")
	hc, err := info.Client("the emulator")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	c := myvaultClient(t, info, hc, info.Identities["rotator"].ClientID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.DeleteSecret(ctx, "api-key", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PurgeDeletedSecret(ctx, "api-key", nil); err != nil {
		t.Errorf("purge right after DELETE with --deletion-window 0: %v", err)
	}
}

// TestEmulatorRecoveryDelayFlag: --recovery-delay 0 makes a recover instant (a GET right
// after it finds the secret); a negative one is a usage error.
func TestEmulatorRecoveryDelayFlag(t *testing.T) {
	if code, _, stderr := cli(t, nil, "emulator", "--recovery-delay", "-1s"); code != 2 || !strings.Contains(stderr, "--recovery-delay") {
		t.Errorf("--recovery-delay -1s: exit %d, %s", code, stderr)
	}
	info, _, _ := startEmulator(t, "--deletion-window", "0", "--recovery-delay", "0", "--token-lifetime", "5m")
	hc, err := info.Client("the emulator")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	c := myvaultClient(t, info, hc, info.Identities["rotator"].ClientID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.DeleteSecret(ctx, "db-conn", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecoverDeletedSecret(ctx, "db-conn", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSecret(ctx, "db-conn", "", nil); err != nil {
		t.Errorf("GET right after recover with --recovery-delay 0: %v", err)
	}
}

// myvaultClient is the real SDK reaching myvault at its production URL through hc, with
// managed identity from the emulator's App Service variables (set for the test): the
// system identity, or the user-assigned one clientID names.
func myvaultClient(t *testing.T, info *emuinfo.Info, hc *http.Client, clientID string) *azsecrets.Client {
	t.Helper()
	for k, v := range info.Env() {
		t.Setenv(k, v)
	}
	opts := azcore.ClientOptions{Transport: hc}
	mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
	if clientID != "" {
		mo.ID = azidentity.ClientID(clientID)
	}
	cred, err := azidentity.NewManagedIdentityCredential(mo)
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient("https://myvault.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEmulatorVerbose: with --verbose the emulator logs to stderr each token it issues,
// each RBAC decision, each secret read and the Event Grid handshake and deliveries of a
// seeded subscription, while set, get, check and a refused get run against it; the log
// holds no form of the value (a hard sentinel), though get printed it and the webhook got
// events about it. The instructions stay on stdout, without log lines. Without --verbose,
// stderr stays empty, as before.
func TestEmulatorVerbose(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var delivered []string // request bodies the webhook got
	webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		delivered = append(delivered, string(b))
		mu.Unlock()
		var events []struct {
			EventType string `json:"eventType"`
			Data      struct {
				ValidationCode string `json:"validationCode"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &events) == nil && len(events) == 1 && events[0].EventType == "Microsoft.EventGrid.SubscriptionValidationEvent" {
			_ = json.NewEncoder(w).Encode(map[string]string{"validationResponse": events[0].Data.ValidationCode})
		}
	}))
	defer webhook.Close()
	seed := ctlSeed + `    event_subscriptions:
      - name: verbose-test
        endpoint: ` + webhook.URL + `/events
`
	emulator, info := standaloneEmulator(t, seed, "--verbose")
	emulator.waitStderr(`msg="event subscription validation"`)

	value := hardSentinel(t)
	name := secretName(t)
	if code, out, errOut := ctl(t, info, value, "set", "myvault", name, "-"); code != 0 {
		t.Fatalf("set: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := ctl(t, info, "", "get", "myvault", name); code != 0 || out != value {
		t.Fatalf("get: exit %d, printed the value: %v\n%s", code, out == value, errOut)
	}
	if code, _, errOut := ctl(t, info, "", "get", "myvault", name, "--identity", "noaccess"); code != 1 {
		t.Errorf("get as noaccess: exit %d\n%s", code, errOut)
	}
	config := writeFile(t, "c.yaml", "db: \"@KeyVault(VaultName=myvault;SecretName="+name+")\"\n")
	if code, out, errOut := cli(t, []string{emulatorInfoEnv + "=" + info}, "check", "--config", config); code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	log := emulator.waitStderr(`msg="events delivered"`)
	for _, want := range []string{
		`level=INFO msg="token issued" identity=rotator`,
		`msg="token issued" identity=system`,
		`msg="token issued" identity=noaccess`,
		`msg="RBAC allowed" vault=myvault.vault.azure.net identity=rotator action=Microsoft.KeyVault/vaults/secrets/setSecret/action`,
		`msg="RBAC allowed" vault=myvault.vault.azure.net identity=system action=Microsoft.KeyVault/vaults/secrets/getSecret/action`,
		`msg="RBAC denied" vault=myvault.vault.azure.net identity=noaccess`,
		`msg="secret read" vault=myvault.vault.azure.net secret=` + name,
		`msg="event subscription validation" vault=myvault.vault.azure.net subscription=verbose-test attempt=1 status=200 validated=true`,
		`msg="event published" vault=myvault.vault.azure.net type=Microsoft.KeyVault.SecretNewVersionCreated secret=` + name,
		`msg="events delivered" vault=myvault.vault.azure.net subscription=verbose-test`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the verbose log lacks %q:\n%s", want, log)
		}
	}
	if n := strings.Count(log, `msg="secret read"`); n < 2 {
		t.Errorf("%d secret read lines, want one for get and one for check:\n%s", n, log)
	}
	stdout := emulator.stdout.String()
	if strings.Contains(stdout, "level=") || !strings.Contains(stdout, "Press Ctrl+C to stop.") {
		t.Errorf("stdout holds log lines, or not the instructions:\n%s", stdout)
	}
	mu.Lock()
	events := strings.Join(delivered, "\n")
	mu.Unlock()
	if !strings.Contains(events, name) {
		t.Errorf("the webhook got no event about %s:\n%s", name, events)
	}
	assertNoSentinel(t, "emulator --verbose", log+stdout+events, value)

	// Without --verbose: nothing on stderr.
	quiet, quietInfo := standaloneEmulator(t, ctlSeed)
	if code, out, errOut := ctl(t, quietInfo, value, "set", "myvault", name, "-"); code != 0 {
		t.Fatalf("set: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, _ := ctl(t, quietInfo, "", "get", "myvault", name); code != 0 {
		t.Fatalf("get: exit %d", code)
	}
	if errOut := quiet.stderr.String(); errOut != "" {
		t.Errorf("the emulator without --verbose wrote to stderr:\n%s", errOut)
	}
}

// TestEmulatorInfoInUse: a second emulator given the --info of a running one refuses
// (exit 1), naming the path, the running one's pid and its proxy, and touches nothing:
// the first one's info file is unchanged and still serves. When the first one stops, its
// lock file goes with its other files.
func TestEmulatorInfoInUse(t *testing.T) {
	t.Parallel()
	first, info := standaloneEmulator(t, ctlSeed)
	dir := filepath.Dir(info)
	before, err := os.ReadFile(info)
	if err != nil {
		t.Fatal(err)
	}
	in, err := emuinfo.Read(info)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(info + ".lock"); err != nil {
		t.Errorf("no lock file beside the info file: %v", err)
	}
	code, out, errOut := cli(t, nil, "emulator", "--seed", filepath.Join(dir, "seed.yaml"), "--info", info)
	want := "viperkv: --info " + info + " belongs to a running emulator (pid " + strconv.Itoa(first.cmd.Process.Pid) +
		", proxy " + in.ProxyURL + "): stop that one first (Ctrl+C in its terminal, or kill " + strconv.Itoa(first.cmd.Process.Pid) + ")"
	if code != 1 || !strings.Contains(errOut, want) || strings.Contains(out, "is running") {
		t.Errorf("second emulator: exit %d, want 1 and %q\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
	}
	if after, err := os.ReadFile(info); err != nil || string(after) != string(before) {
		t.Errorf("the refused emulator changed the info file (%v)", err)
	}
	if code, out, errOut := ctl(t, info, "", "list", "myvault"); code != 0 || !strings.Contains(out, "db-conn") {
		t.Errorf("the first emulator after the refusal: exit %d\n%s%s", code, out, errOut)
	}
	first.signal(syscall.SIGTERM)
	if code := first.wait(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, first.stderr.String())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 1 || left[0] != filepath.Join(dir, "seed.yaml") {
		t.Errorf("left in the directory: %v", left)
	}
}

// TestEmulatorInfoStale: the info file (and lock file) of an emulator that was killed
// (SIGKILL: nothing removed) does not block a new emulator on the same --info, which
// replaces the files and serves.
func TestEmulatorInfoStale(t *testing.T) {
	t.Parallel()
	killed, info := standaloneEmulator(t, ctlSeed)
	old, err := emuinfo.Read(info)
	if err != nil {
		t.Fatal(err)
	}
	_ = killed.cmd.Process.Kill()
	<-killed.exited
	assertExist(t, "after SIGKILL", []string{info, info + ".lock", old.CAFile}, true)

	next := emulatorAt(t, filepath.Join(filepath.Dir(info), "seed.yaml"), info)
	in, err := emuinfo.Read(info)
	if err != nil {
		t.Fatal(err)
	}
	if in.IdentityEndpoint == old.IdentityEndpoint || in.IdentityHeader == old.IdentityHeader {
		t.Errorf("the info file is still the killed emulator's")
	}
	if lock, err := os.ReadFile(info + ".lock"); err != nil || strings.TrimSpace(string(lock)) != strconv.Itoa(next.cmd.Process.Pid) {
		t.Errorf("lock file holds %q (%v), want the new pid %d", lock, err, next.cmd.Process.Pid)
	}
	if code, out, errOut := ctl(t, info, "", "list", "myvault"); code != 0 || !strings.Contains(out, "db-conn") {
		t.Errorf("the new emulator: exit %d\n%s%s", code, out, errOut)
	}
}

// TestEmulatorInfoSimultaneous: two emulators started at once on one --info: exactly one
// serves, the other refuses (exit 1). The lock decides, not who writes the file first.
func TestEmulatorInfoSimultaneous(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed.yaml")
	if err := os.WriteFile(seed, []byte(ctlSeed), 0o600); err != nil {
		t.Fatal(err)
	}
	info := filepath.Join(dir, "kv.json")
	a := start(t, nil, "emulator", "--seed", seed, "--info", info)
	b := start(t, nil, "emulator", "--seed", seed, "--info", info)
	var refused, serving *proc
	select {
	case <-a.exited:
		refused, serving = a, b
	case <-b.exited:
		refused, serving = b, a
	case <-time.After(20 * time.Second):
		t.Fatalf("both emulators still run after 20s\na:\n%s%s\nb:\n%s%s", a.stdout.String(), a.stderr.String(), b.stdout.String(), b.stderr.String())
	}
	if refused.code != 1 || !strings.Contains(refused.stderr.String(), "belongs to a running emulator (pid "+strconv.Itoa(serving.cmd.Process.Pid)) {
		t.Errorf("exit %d, want 1 and the serving emulator's pid %d\n%s", refused.code, serving.cmd.Process.Pid, refused.stderr.String())
	}
	serving.waitOutput("Press Ctrl+C to stop.")
}

// TestEmulatorInfoOwnedWithoutLock: an info file written by an emulator that takes no
// lock (here kvtest's Server.WriteInfo in this test process, as an older viperkv would)
// is still refused while that emulator answers: the probe of its Entra listener, over
// TLS with its CA, finds it. The refused emulator leaves no lock file.
func TestEmulatorInfoOwnedWithoutLock(t *testing.T) {
	t.Parallel()
	in, err := emuinfo.Read(infoPath) // TestMain's emulator
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, nil, "emulator", "--info", infoPath)
	want := "viperkv: --info " + infoPath + " belongs to a running emulator (proxy " + in.ProxyURL + "): stop that one first (Ctrl+C in its terminal)"
	if code != 1 || !strings.Contains(errOut, want) || strings.Contains(out, "is running") {
		t.Errorf("exit %d, want 1 and %q\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
	}
	if _, err := os.Stat(infoPath + ".lock"); !os.IsNotExist(err) {
		t.Errorf("the refused emulator left its lock file: %v", err)
	}
	if _, err := emuinfo.Read(infoPath); err != nil {
		t.Errorf("the info file after the refusal: %v", err)
	}
}
