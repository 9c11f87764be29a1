//go:build !windows

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// startEmulator runs `viperkv emulator` from the example seed with the extra args and
// waits for its info file. The process is killed when the test ends.
func startEmulator(t *testing.T, args ...string) (info *emuinfo.Info, infoPath string, stdout *syncBuffer) {
	t.Helper()
	infoPath = filepath.Join(t.TempDir(), "info.json")
	seedPath := filepath.Join("..", "..", "testdata", "emulator-seed.yaml")
	cmd := exec.Command(binPath, append([]string{"emulator", "--seed", seedPath, "--info", infoPath}, args...)...)
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	stdout = &syncBuffer{}
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The instructions are printed after the info file is written.
		if strings.Contains(stdout.String(), "Press Ctrl+C to stop.") {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("emulator exited early: %v\n%s%s", err, stdout.String(), stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("emulator not ready after 30 s\n%s%s", stdout.String(), stderr.String())
		}
	}
	info, err := emuinfo.Read(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	return info, infoPath, stdout
}

// TestWorkloadIdentityAgainstStandaloneEmulator: the standalone emulator writes a
// federated token file for the seed's "workload" identity, records it in the info file and
// prints the pod's variables; with them, `viperkv check --credential workload-identity`
// and the Go SDK's WorkloadIdentityCredential sign in through the emulator's Entra token
// endpoint, and RBAC applies to the workload identity (myvault only).
func TestWorkloadIdentityAgainstStandaloneEmulator(t *testing.T) {
	info, infoPath, stdout := startEmulator(t)
	wl, ok := info.Identities["workload"]
	if !ok || wl.ClientID == "" || wl.FederatedTokenFile == "" {
		t.Fatalf("info identities.workload = %+v", wl)
	}
	if filepath.Dir(wl.FederatedTokenFile) != filepath.Dir(infoPath) {
		t.Errorf("federated token file %s, want it next to the info file", wl.FederatedTokenFile)
	}
	if st, err := os.Stat(wl.FederatedTokenFile); err != nil || st.Mode().Perm() != 0o600 || st.Size() == 0 {
		t.Errorf("federated token file: %v %v", st, err)
	}
	for _, n := range []string{"noaccess", "rotator"} {
		if id := info.Identities[n]; id.FederatedTokenFile != "" {
			t.Errorf("%s is not federated but has a token file", n)
		}
	}
	var raw struct {
		TenantID   string `json:"tenant_id"`
		Identities map[string]struct {
			ClientID           string `json:"client_id"`
			FederatedTokenFile string `json:"federated_token_file"`
		} `json:"identities"`
	}
	b, err := os.ReadFile(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &raw); err != nil || raw.TenantID == "" || raw.Identities["workload"].FederatedTokenFile == "" || raw.Identities["workload"].ClientID != wl.ClientID {
		t.Errorf("info file JSON: %v %+v", err, raw)
	}
	env, err := info.WorkloadIdentityEnv("workload")
	if err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"} {
		if env[k] == "" || !strings.Contains(out, "export "+k+"="+env[k]) {
			t.Errorf("instructions lack export %s=%s:\n%s", k, env[k], out)
		}
	}
	if env["AZURE_AUTHORITY_HOST"] != info.EntraEndpoint+"/" {
		t.Errorf("AZURE_AUTHORITY_HOST = %s", env["AZURE_AUTHORITY_HOST"])
	}

	// The CLI, as in a pod: the pod's variables and the emulator's info file.
	vars := []string{emulatorInfoEnv + "=" + infoPath}
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	myvault := writeFile(t, "myvault.yaml", "database:\n  conn: \"@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)\"\n"+
		"api:\n  key: \"@KeyVault(VaultName=myvault;SecretName=api-key)\"\n")
	code, o, errOut := cli(t, vars, "check", "--config", myvault, "--credential", "workload-identity", "-o", "json", "--timeout", "20s")
	if code != 0 {
		t.Fatalf("check --credential workload-identity: exit %d\n%s%s", code, o, errOut)
	}
	rows := func(out string) map[string]string {
		t.Helper()
		var doc struct{ References []checkRow }
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got := map[string]string{}
		for _, r := range doc.References {
			got[r.Key] = r.Status
		}
		return got
	}
	if got := rows(o); len(got) != 2 || got["database.conn"] != "Resolved" || got["api.key"] != "Resolved" {
		t.Errorf("statuses %v", got)
	}
	assertNoValues(t, o+errOut, seedValues(t)...)
	// The workload identity reads myvault only: othervault's reference is denied.
	code, o, errOut = cli(t, vars, "check", "--config", quickstart, "--credential", "workload-identity", "-o", "json", "--timeout", "20s")
	if got := rows(o); code != 1 || got["features.flags"] != "AccessToKeyVaultDenied" || got["database.conn"] != "Resolved" {
		t.Errorf("quickstart as the workload identity: exit %d %v\n%s", code, got, errOut)
	}

	// The Go SDK, from the info file alone.
	hc, err := info.Client("the emulator")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	opts := azcore.ClientOptions{Transport: hc, Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: env["AZURE_AUTHORITY_HOST"]}}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: opts, ClientID: env["AZURE_CLIENT_ID"], TenantID: env["AZURE_TENANT_ID"], TokenFilePath: env["AZURE_FEDERATED_TOKEN_FILE"],
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient("https://myvault.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hc}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.GetSecret(ctx, "api-key", "", nil); err != nil {
		t.Errorf("GetSecret as the workload identity: %v", err)
	}
}
