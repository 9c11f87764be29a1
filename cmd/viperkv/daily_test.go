//go:build !windows

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/kvtest"
)

// TestWatchOnlyFlagsNeedWatch: without --watch the command's environment is resolved
// once, so a refresh interval or a version check would silently do nothing.
func TestWatchOnlyFlagsNeedWatch(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"run", "--refresh-interval", "2s", "--", "true"},
		{"run", "--version-check", "off", "--", "true"},
	} {
		code, out, errOut := cli(t, nil, args...)
		flag := strings.SplitN(args[1], "=", 2)[0]
		if code != 2 || out != "" || !strings.Contains(errOut, flag+" needs --watch") {
			t.Errorf("viperkv %s: exit %d, want 2 and %q\n%s%s", strings.Join(args, " "), code, flag+" needs --watch", out, errOut)
		}
	}
}

// TestConfigType: a Kubernetes ConfigMap mount has no extension; --config-type names its
// type, and without it the error says so instead of Viper's `Unsupported Config Type ""`.
func TestConfigType(t *testing.T) {
	t.Parallel()
	_, ref := newSecret(t, "config-type-value")
	dir := t.TempDir()
	mount := filepath.Join(dir, "app-config")
	if err := os.WriteFile(mount, []byte("db:\n  conn: \""+ref+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, nil, "check", "--config", mount)
	if code != 2 || !strings.Contains(errOut, "--config-type yaml") || strings.Contains(errOut, `Unsupported Config Type ""`) {
		t.Errorf("no extension, no --config-type: exit %d, want 2 and a hint naming --config-type\n%s%s", code, out, errOut)
	}
	code, out, errOut = cli(t, nil, "check", "--config", mount, "--config-type", "yaml")
	if code != 0 || !strings.Contains(out, "db.conn") || !strings.Contains(out, "Resolved") {
		t.Errorf("--config-type yaml: exit %d\n%s%s", code, out, errOut)
	}
	if _, out, _ := cli(t, nil, "check", "--help"); !strings.Contains(out, "--config-type") {
		t.Errorf("check --help does not show --config-type:\n%s", out)
	}
}

// TestUnknownFlagSuggestion: a misspelled flag gets the flag it most likely meant, as a
// misspelled command already gets one from cobra; a flag like no other gets none.
func TestUnknownFlagSuggestion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--confg", "x.yaml"}, "unknown flag: --confg (did you mean --config?)"},
		{[]string{"check", "--conf", "x.yaml"}, "(did you mean --config?)"},
		{[]string{"run", "--wacth", "--", "true"}, "(did you mean --watch?)"},
		{[]string{"resolve", "--revael"}, "(did you mean --reveal?)"},
	} {
		code, _, errOut := cli(t, nil, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("viperkv %s: exit %d, want 2 and %q\n%s", strings.Join(tc.args, " "), code, tc.want, errOut)
		}
	}
	if code, _, errOut := cli(t, nil, "check", "--zzzzzzzz"); code != 2 || strings.Contains(errOut, "did you mean") {
		t.Errorf("a flag like no other: exit %d\n%s", code, errOut)
	}
}

// TestMissingEmulatorInfo: the message names the variable and the file, in the user's
// terms, not a package of viperkv's.
func TestMissingEmulatorInfo(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.json")
	code, _, errOut := cli(t, []string{emulatorInfoEnv + "=" + missing}, "check", "--config", quickstart)
	if code != 2 || !strings.Contains(errOut, emulatorInfoEnv) || !strings.Contains(errOut, missing) || strings.Contains(errOut, "emuinfo") {
		t.Errorf("exit %d, want 2 and a message naming %s and %s\n%s", code, emulatorInfoEnv, missing, errOut)
	}
}

// TestInterruptedCheckSaysSo: Ctrl-C while check waits on a vault ends it at once with
// 128+SIGINT, and says what happened instead of exiting silently.
func TestInterruptedCheckSaysSo(t *testing.T) {
	t.Parallel()
	srv, info := ownEmulator(t, func(s *kvtest.Server) {
		kv := s.AddVault("slowvault")
		kv.Grant(s.SystemIdentity(), kvtest.RoleSecretsUser)
		kv.SetSecret("db-conn", "never-read")
		kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Hang: true})
	})
	cfg := writeFile(t, "slow.yaml", "db:\n  conn: \"@KeyVault(SecretUri=https://slowvault.vault.azure.net/secrets/db-conn/)\"\n")
	for _, cmd := range []string{"check", "resolve"} {
		before := srv.Vault("slowvault").Count(kvtest.OpGetSecret)
		p := start(t, []string{emulatorInfoEnv + "=" + info}, cmd, "--config", cfg)
		deadline := time.Now().Add(15 * time.Second)
		for srv.Vault("slowvault").Count(kvtest.OpGetSecret) == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s never asked the vault\n%s", cmd, p.stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		p.signal(os.Interrupt)
		if code := p.wait(); code != 130 || !strings.Contains(p.stderr.String(), "interrupted while resolving the references") {
			t.Errorf("%s: exit %d, want 130 and a message\nstdout:\n%s\nstderr:\n%s", cmd, code, p.stdout.String(), p.stderr.String())
		}
	}
}

// TestEnvKeyNotNamedHintSpeaksCLI: the warning names the CLI's fix (--env-key api.key), and
// for a misspelled variable the key the configuration has.
func TestEnvKeyNotNamedHintSpeaksCLI(t *testing.T) {
	t.Parallel()
	_, ref := newSecret(t, "hint-value")
	_, apiRef := newSecret(t, "api-value")
	_, typoRef := newSecret(t, "typo-value")
	cfg := writeFile(t, "hint.yaml", "database:\n  conn: \""+ref+"\"\n")
	code, out, errOut := cli(t, []string{"APP_API_KEY=" + apiRef, "APP_DATABSE_CONN=" + typoRef}, "check", "--config", cfg, "--env-prefix", "APP")
	// The gate fails: the app would read "" for both keys.
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"--env-key api.key", "--env-key databse.conn", "it may be meant for the key database.conn"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the warnings:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "it may be meant for"); n != 1 {
		t.Errorf("%d likely matches, want one (api.key resembles no key):\n%s", n, out)
	}
}

// TestRunDoesNotMaskShortValues: a secret of "10" is not concealed (port=8100 stays
// readable, and the marks would give the value away); run warns about it by name, once,
// and still conceals a longer secret.
func TestRunDoesNotMaskShortValues(t *testing.T) {
	t.Parallel()
	shortName, shortRef := newSecret(t, "10")
	long := sentinel(t)
	_, longRef := newSecret(t, long)
	code, out, errOut := cli(t, []string{childEnvVar, "PORT_SUFFIX=" + shortRef, "TOKEN=" + longRef},
		append([]string{"run"}, childCmd("print", "PORT_SUFFIX", "TOKEN")...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if want := "PORT_SUFFIX=10\nTOKEN=<concealed by viperkv>\n"; out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	warning := "warning: secret myvault.vault.azure.net/" + shortName + " is shorter than 6 characters: it is not concealed"
	if strings.Count(errOut, warning) != 1 {
		t.Errorf("want one warning %q:\n%s", warning, errOut)
	}
	assertNoValues(t, out+errOut, long)
}
