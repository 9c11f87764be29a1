//go:build !windows

package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCredentialFlag: --credential picks azidentity's credential. Against the emulator,
// managed-identity (the default) and default work; azure-cli without az fails fast naming
// the credential; workload-identity without its variables is a usage error.
func TestCredentialFlag(t *testing.T) {
	t.Parallel()
	args := []string{"check", "--config", quickstart, "--env-prefix", "APP", "--env-key", "api.key", "-o", "json", "--timeout", "10s"}
	statuses := func(t *testing.T, out string) map[string]string {
		t.Helper()
		var doc struct{ References []checkRow }
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got := map[string]string{}
		for _, r := range doc.References {
			got[r.Key] = r.Status + ": " + r.Reason
		}
		return got
	}

	for _, cred := range []string{"", "managed-identity", "default"} {
		t.Run("emulator "+cred, func(t *testing.T) {
			t.Parallel()
			a := args
			if cred != "" {
				a = append(a, "--credential", cred)
			}
			code, out, errOut := cli(t, []string{apiKeyEnv}, a...)
			if code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out, errOut)
			}
			if got := statuses(t, out); len(got) != 4 {
				t.Errorf("%d references, want 4: %v", len(got), got)
			}
		})
	}

	t.Run("azure-cli without az", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := cli(t, []string{apiKeyEnv, "PATH=" + t.TempDir()}, append(args, "--credential", "azure-cli")...)
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
		}
		for key, st := range statuses(t, out) {
			if !strings.Contains(st, "AzureCLICredential") || !strings.Contains(st, "not found on path") {
				t.Errorf("%s: %s: want a reason naming AzureCLICredential", key, st)
			}
		}
	})

	t.Run("workload-identity without token file", func(t *testing.T) {
		t.Parallel()
		env := []string{apiKeyEnv, "AZURE_CLIENT_ID=6a1f0c3e-0000-4000-8000-000000000001", "AZURE_TENANT_ID=8f5c6a3e-2b1d-4e7a-9c0f-6d4b2a1e3f57", "AZURE_FEDERATED_TOKEN_FILE="}
		code, out, errOut := cli(t, env, append(args, "--credential", "workload-identity")...)
		if code != 2 || out != "" || !strings.Contains(errOut, "--credential workload-identity: AZURE_FEDERATED_TOKEN_FILE is not set") || !strings.Contains(errOut, "--help' for usage.") {
			t.Errorf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := cli(t, nil, append(args, "--credential", "password")...)
		want := `viperkv: --credential "password": want managed-identity, azure-cli, default or workload-identity`
		if code != 2 || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, want 2 and %q\nstdout:\n%s\nstderr:\n%s", code, want, out, errOut)
		}
	})
}
