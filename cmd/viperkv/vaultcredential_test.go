//go:build !windows

package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/viperkv/viperkv/kvtest"
)

// issuedTokens counts the tokens an emulator issues, by identity name, from its
// "token issued" log records.
type issuedTokens struct {
	mu sync.Mutex
	by map[string]int
}

func (l *issuedTokens) Enabled(context.Context, slog.Level) bool { return true }
func (l *issuedTokens) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *issuedTokens) WithGroup(string) slog.Handler            { return l }
func (l *issuedTokens) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "token issued" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "identity" {
			return true
		}
		l.mu.Lock()
		if l.by == nil {
			l.by = map[string]int{}
		}
		l.by[a.Value.String()]++
		l.mu.Unlock()
		return false
	})
	return nil
}

// take returns the counts so far and starts again from zero.
func (l *issuedTokens) take() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.by
	l.by = nil
	return out
}

// checkStatuses reads check -o json's rows as key -> "Status: reason".
func checkStatuses(t *testing.T, out string) map[string]string {
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

// TestVaultCredentialFlag: on an emulator of its own, vault alpha is readable by identity
// reader-a only and beta by reader-b only. --client-id reader-a with --vault-credential
// beta=managed-identity:<reader-b> reads both, in check, resolve, render and run, with one
// token for each identity per process (each run is a new process); so does a workload
// identity for beta. A vault left to the default identity is denied, and a failure names the
// credential that served the vault.
func TestVaultCredentialFlag(t *testing.T) {
	t.Parallel()
	tokens := &issuedTokens{}
	srv := kvtest.NewServer(kvtest.WithLogger(slog.New(tokens)))
	t.Cleanup(srv.Close)
	idA, idB := srv.AddUserIdentity("reader-a"), srv.AddUserIdentity("reader-b")
	alpha, beta, gamma := srv.AddVault("alpha"), srv.AddVault("beta"), srv.AddVault("gamma")
	alpha.Grant(idA, kvtest.RoleSecretsUser)
	beta.Grant(idB, kvtest.RoleSecretsUser)
	gamma.Grant(idB, kvtest.RoleSecretsUser) // but gamma is not given reader-b
	alpha.SetSecret("a", "alpha-value")
	beta.SetSecret("b", "beta-value")
	gamma.SetSecret("g", "gamma-value")
	info := filepath.Join(t.TempDir(), "info.json")
	if err := srv.WriteInfo(info, ""); err != nil {
		t.Fatal(err)
	}
	env := []string{emulatorInfoEnv + "=" + info}
	cfg := writeFile(t, "config.yaml", `
a: "@KeyVault(VaultName=alpha;SecretName=a)"
b: "@KeyVault(SecretUri=https://beta.vault.azure.net/secrets/b)"
`)
	creds := []string{"--client-id", idA.ClientID, "--vault-credential", "beta=managed-identity:" + idB.ClientID}
	oneEach := func(t *testing.T) {
		t.Helper()
		if got := tokens.take(); len(got) != 2 || got[idA.Name] != 1 || got[idB.Name] != 1 {
			t.Errorf("tokens issued = %v, want one for each of %s and %s", got, idA.Name, idB.Name)
		}
	}
	tokens.take()

	t.Run("check", func(t *testing.T) {
		code, out, errOut := cli(t, env, append([]string{"check", "--config", cfg, "-o", "json"}, creds...)...)
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		for k, st := range checkStatuses(t, out) {
			if !strings.HasPrefix(st, "Resolved") {
				t.Errorf("%s: %s", k, st)
			}
		}
		oneEach(t)
	})

	t.Run("resolve, the vault as a host", func(t *testing.T) {
		code, out, errOut := cli(t, env, "resolve", "--config", cfg, "--format", "json", "--reveal",
			"--client-id", idA.ClientID, "--vault-credential", "BETA.vault.azure.net=managed-identity:"+idB.ClientID)
		if code != 0 || !strings.Contains(out, `"alpha-value"`) || !strings.Contains(out, `"beta-value"`) {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		oneEach(t)
	})

	t.Run("render", func(t *testing.T) {
		tmpl := writeFile(t, "t.tmpl", "{{ .a }}|{{ .b }}\n")
		dest := filepath.Join(t.TempDir(), "out")
		code, out, errOut := cli(t, env, append([]string{"render", "--config", cfg, "--template", tmpl, "--out", dest}, creds...)...)
		if b, err := os.ReadFile(dest); code != 0 || err != nil || string(b) != "alpha-value|beta-value\n" {
			t.Fatalf("exit %d, rendered %q (%v)\n%s%s", code, b, err, out, errOut)
		}
		oneEach(t)
	})

	t.Run("run", func(t *testing.T) {
		args := append(append([]string{"run", "--config", cfg, "--no-masking"}, creds...), childCmd("print", "A", "B")...)
		code, out, errOut := cli(t, append(env, childEnvVar), args...)
		if code != 0 || out != "A=alpha-value\nB=beta-value\n" {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		oneEach(t)
	})

	t.Run("workload identity for one vault", func(t *testing.T) {
		wl := srv.AddUserIdentity("reader-wl", kvtest.WithFederated())
		beta.Grant(wl, kvtest.RoleSecretsUser)
		tokenFile := writeFile(t, "sa-token", srv.FederatedToken(wl))
		pod := append(env, "AZURE_TENANT_ID="+srv.TenantID(), "AZURE_FEDERATED_TOKEN_FILE="+tokenFile, "AZURE_CLIENT_ID=")
		code, out, errOut := cli(t, pod, "check", "--config", cfg, "-o", "json",
			"--client-id", idA.ClientID, "--vault-credential", "beta=workload-identity:"+wl.ClientID)
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
		if got := tokens.take(); len(got) != 2 || got[idA.Name] != 1 || got[wl.Name] != 1 {
			t.Errorf("tokens issued = %v, want one for each of %s and %s", got, idA.Name, wl.Name)
		}
	})

	t.Run("a vault left to the default identity", func(t *testing.T) {
		denied := writeFile(t, "denied.yaml", `
b: "@KeyVault(VaultName=beta;SecretName=b)"
g: "@KeyVault(VaultName=gamma;SecretName=g)"
`)
		code, out, errOut := cli(t, env, append([]string{"check", "--config", denied, "-o", "json"}, creds...)...)
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
		}
		got := checkStatuses(t, out)
		want := "credential: the default (managed identity, client ID " + idA.ClientID + ")"
		if !strings.HasPrefix(got["b"], "Resolved") || !strings.HasPrefix(got["g"], "AccessToKeyVaultDenied") || !strings.Contains(got["g"], want) {
			t.Errorf("statuses %v\nwant b Resolved and g AccessToKeyVaultDenied naming %q", got, want)
		}
		tokens.take()
	})

	t.Run("a vault's credential that fails is named", func(t *testing.T) {
		code, out, errOut := cli(t, append(env, "PATH="+t.TempDir()), "check", "--config", cfg, "-o", "json",
			"--client-id", idA.ClientID, "--vault-credential", "beta=azure-cli")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
		}
		got := checkStatuses(t, out)
		if !strings.HasPrefix(got["a"], "Resolved") || !strings.Contains(got["b"], "AzureCLICredential") ||
			!strings.Contains(got["b"], "credential: this vault's own (*azidentity.AzureCLICredential)") {
			t.Errorf("statuses %v\nwant a Resolved and b naming the vault's azure-cli credential", got)
		}
		tokens.take()
	})

	t.Run("without the flag", func(t *testing.T) {
		code, out, errOut := cli(t, env, "check", "--config", cfg, "-o", "json", "--client-id", idA.ClientID)
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
		}
		if got := checkStatuses(t, out); !strings.HasPrefix(got["b"], "AccessToKeyVaultDenied") {
			t.Errorf("b: %s, want AccessToKeyVaultDenied: reader-a may not read beta", got["b"])
		}
	})
}

// TestVaultCredentialFlagErrors: a malformed value, an unknown kind, a client ID where none
// applies, a host that is not a vault of the cloud and a vault given twice are usage errors
// (exit 2) naming the flag and its value, before any request.
func TestVaultCredentialFlagErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no kind", []string{"--vault-credential", "beta"},
			`--vault-credential "beta": want VAULT=KIND[:CLIENT-ID]`},
		{"unknown kind", []string{"--vault-credential", "beta=password"},
			`--vault-credential "beta=password": unknown credential "password": want managed-identity, azure-cli, default or workload-identity`},
		{"twice", []string{"--vault-credential", "beta=azure-cli", "--vault-credential", "Beta.vault.azure.net=default"},
			`--vault-credential "Beta.vault.azure.net=default": vault beta.vault.azure.net already has a credential (--vault-credential "beta=azure-cli")`},
		{"not a vault host", []string{"--vault-credential", "evil.example=azure-cli"},
			`--vault-credential "evil.example=azure-cli": host "evil.example" is not a Key Vault host of cloud AzurePublic`},
		{"a URL", []string{"--vault-credential", "https://beta.vault.azure.net/=azure-cli"},
			`--vault-credential "https://beta.vault.azure.net/=azure-cli": not a vault name or host`},
		{"bad vault name", []string{"--vault-credential", "b=azure-cli"},
			`--vault-credential "b=azure-cli": host "b.vault.azure.net" is not a valid vault host`},
		{"another cloud's vault", []string{"--cloud", "AzureChina", "--vault-credential", "beta.vault.azure.net=azure-cli"},
			`--vault-credential "beta.vault.azure.net=azure-cli": host "beta.vault.azure.net" is not a Key Vault host of cloud AzureChina (*.vault.azure.cn) but of cloud AzurePublic; select that cloud`},
		{"client ID of azure-cli", []string{"--vault-credential", "beta=azure-cli:6a1f0c3e-0000-4000-8000-000000000001"},
			`--vault-credential "beta=azure-cli:6a1f0c3e-0000-4000-8000-000000000001": a client ID selects a managed identity or a workload identity's app; it does not apply to azure-cli`},
		{"empty client ID", []string{"--vault-credential", "beta=managed-identity:"},
			`--vault-credential "beta=managed-identity:": empty client ID after "managed-identity:"`},
		{"workload identity without its variables", []string{"--vault-credential", "beta=workload-identity:6a1f0c3e-0000-4000-8000-000000000001"},
			`--vault-credential "beta=workload-identity:6a1f0c3e-0000-4000-8000-000000000001": AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE are not set`},
	}
	noWorkload := []string{"AZURE_CLIENT_ID=", "AZURE_TENANT_ID=", "AZURE_FEDERATED_TOKEN_FILE="}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, cmd := range []string{"check", "resolve"} {
				code, out, errOut := cli(t, noWorkload, append([]string{cmd, "--config", quickstart}, c.args...)...)
				if code != 2 || out != "" || !strings.Contains(errOut, "viperkv: "+c.want) || !strings.Contains(errOut, "'viperkv "+cmd+" --help' for usage.") {
					t.Errorf("%s: exit %d, want 2 and %q\nstdout:\n%s\nstderr:\n%s", cmd, code, c.want, out, errOut)
				}
			}
		})
	}
}

// TestVaultCredentialFlagCompletes: once VAULT= is typed, the shell completes the kinds of
// --credential after it.
func TestVaultCredentialFlagCompletes(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"check", "resolve", "render", "run"} {
		code, out, _ := cli(t, nil, "__complete", cmd, "--vault-credential", "othervault=")
		if code != 0 || !strings.Contains(out, "othervault=managed-identity\tthe machine's managed identity (default)\nothervault=azure-cli\t") ||
			!strings.Contains(out, "othervault=workload-identity\t") {
			t.Errorf("__complete %s --vault-credential othervault=: exit %d:\n%s", cmd, code, out)
		}
	}
}
