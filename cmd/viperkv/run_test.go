//go:build !windows

package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newSecret stores a fresh secret in myvault and returns its name and a reference to it.
func newSecret(t *testing.T, value string) (name, ref string) {
	t.Helper()
	name = secretName(t)
	emu.Vault("myvault").SetSecret(name, value)
	return name, "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/" + name + "/)"
}

func TestRunResolvesEnvironmentAndMasksOutput(t *testing.T) {
	t.Parallel()
	secret := sentinel(t)
	_, ref := newSecret(t, secret)
	env := []string{childEnvVar, "DB_CONN=" + ref, "DSN=user=app password=" + ref + " host=db", "PLAIN=hello", "ESCAPED=@@KeyVault(literal)"}

	code, out, errOut := cli(t, env, append([]string{"run"}, childCmd("print", "DB_CONN", "DSN", "PLAIN", "ESCAPED")...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	want := "DB_CONN=<concealed by viperkv>\nDSN=user=app password=<concealed by viperkv> host=db\nPLAIN=hello\nESCAPED=@KeyVault(literal)\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(errOut, "stderr DB_CONN=<concealed by viperkv>\n") {
		t.Errorf("stderr not masked:\n%s", errOut)
	}
	assertNoValues(t, out+errOut, secret)

	// --no-masking: the child's output as it is.
	code, out, _ = cli(t, env, append([]string{"run", "--no-masking"}, childCmd("print", "DB_CONN")...)...)
	if code != 0 || out != "DB_CONN="+secret+"\n" {
		t.Errorf("--no-masking: exit %d, stdout %q", code, out)
	}
}

func TestRunMasksValuesSplitAcrossWrites(t *testing.T) {
	t.Parallel()
	secret := sentinel(t)
	_, ref := newSecret(t, secret)
	code, out, errOut := cli(t, []string{childEnvVar, "S=" + ref}, append([]string{"run"}, childCmd("split", "S")...)...)
	if code != 0 || out != "<<concealed by viperkv>>\n" {
		t.Errorf("exit %d, stdout %q\n%s", code, out, errOut)
	}
}

func TestRunExportsConfigFile(t *testing.T) {
	t.Parallel()
	secret := sentinel(t)
	_, ref := newSecret(t, secret)
	config := writeFile(t, "config.yaml", fmt.Sprintf(`
database:
  conn: "%s"
  pool_size: 10
hosts: [a.example, b.example]
`, ref))
	code, out, errOut := cli(t, []string{childEnvVar, "APP_HOSTS=c.example d.example"},
		append([]string{"run", "--config", config, "--env-prefix", "app", "--no-masking"},
			childCmd("print", "APP_DATABASE_CONN", "APP_DATABASE_POOL_SIZE", "APP_HOSTS")...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	// The environment overrides the file, as with Viper's AutomaticEnv.
	want := "APP_DATABASE_CONN=" + secret + "\nAPP_DATABASE_POOL_SIZE=10\nAPP_HOSTS=c.example d.example\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	_, ref := newSecret(t, "v")
	for _, tc := range []struct {
		name    string
		env     []string
		command []string
		want    int
	}{
		{"zero", nil, childCmd("exit", "0"), 0},
		{"seven", nil, childCmd("exit", "7"), 7},
		{"killed by SIGKILL", nil, []string{"--", "sh", "-c", "kill -9 $$"}, 128 + 9},
		{"not found", nil, []string{"--", "viperkv-no-such-command"}, exitNotFound},
		{"not executable", nil, []string{"--", "../../testdata/quickstart.yaml"}, exitCannotRun},
		{"unresolved", []string{"BAD=@KeyVault(VaultName=myvault;SecretName=no-such-secret)", "OK=" + ref}, childCmd("exit", "0"), exitNotResolved},
		{"malformed", []string{"BAD=@KeyVault(VaultName=myvault)"}, childCmd("exit", "0"), exitNotResolved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := cli(t, append([]string{childEnvVar}, tc.env...), append([]string{"run"}, tc.command...)...)
			if code != tc.want {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.want, out, errOut)
			}
			if tc.want == exitNotResolved && !strings.Contains(errOut, "$BAD: ") {
				t.Errorf("the error does not name the variable:\n%s", errOut)
			}
		})
	}
}

func TestRunForwardsSignals(t *testing.T) {
	t.Parallel()
	_, ref := newSecret(t, "v")
	p := start(t, []string{childEnvVar, "S=" + ref}, append([]string{"run"}, childCmd("trap", "42")...)...)
	p.waitOutput("ready\n")
	p.signal(syscall.SIGHUP)
	p.waitOutput("got SIGHUP\n")
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 42 {
		t.Errorf("exit %d, want the child's 42\n%s%s", code, p.stdout.String(), p.stderr.String())
	}
	if !strings.Contains(p.stdout.String(), "got SIGTERM\n") {
		t.Errorf("the child did not get SIGTERM:\n%s", p.stdout.String())
	}
}

// waitLines waits until the file has n lines.
func waitLines(t *testing.T, p *proc, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if l := lines(t, path); len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines, want %d\nstdout:\n%s\nstderr:\n%s", path, len(lines(t, path)), n, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunWatchRestartsOnRotation(t *testing.T) {
	t.Parallel()
	first, second := sentinel(t), sentinel(t)
	name, ref := newSecret(t, first)
	startedFile := filepath.Join(t.TempDir(), "started")
	p := start(t, []string{childEnvVar, "DB_CONN=" + ref},
		append([]string{"run", "--watch", "--refresh-interval", "200ms", "--grace", "5s"}, childCmd("serve", startedFile, "DB_CONN")...)...)
	if got := waitLines(t, p, startedFile, 1); !slices.Equal(got, []string{first}) {
		t.Fatalf("first start saw %q", got)
	}
	version := emu.Vault("myvault").SetSecret(name, second)
	if got := waitLines(t, p, startedFile, 2); !slices.Equal(got, []string{first, second}) {
		t.Fatalf("starts saw %q", got)
	}
	p.waitOutput("started\nstarted\n")
	// The restart is announced, with the secret and versions, never the values.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "restarted the command") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	errOut := p.stderr.String()
	for _, s := range []string{"rotation: DB_CONN changed (secret myvault.vault.azure.net/" + name + " version ", "-> " + version + ")",
		"restarting the command: SIGTERM, then SIGKILL after 5s", "restarted the command (pid "} {
		if !strings.Contains(errOut, s) {
			t.Errorf("stderr lacks %q:\n%s", s, errOut)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want the child's 0", code)
	}
	assertNoValues(t, p.stdout.String()+p.stderr.String(), first, second)
}

func TestRunWatchKillsAfterGrace(t *testing.T) {
	t.Parallel()
	first, second := sentinel(t), sentinel(t)
	name, ref := newSecret(t, first)
	startedFile := filepath.Join(t.TempDir(), "started")
	p := start(t, []string{childEnvVar, "DB_CONN=" + ref},
		append([]string{"run", "--watch", "--refresh-interval", "200ms", "--grace", "300ms"}, childCmd("stubborn", startedFile, "DB_CONN")...)...)
	waitLines(t, p, startedFile, 1)
	p.waitOutput("started\n")
	emu.Vault("myvault").SetSecret(name, second)
	if got := waitLines(t, p, startedFile, 2); !slices.Equal(got, []string{first, second}) {
		t.Fatalf("starts saw %q", got)
	}
	p.waitOutput("ignoring SIGTERM\nstarted\n")
	if !strings.Contains(p.stderr.String(), "did not exit within 300ms of SIGTERM; sending SIGKILL") {
		t.Errorf("no SIGKILL notice:\n%s", p.stderr.String())
	}
	p.signal(syscall.SIGINT)
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d after SIGINT, want the child's 0", code)
	}
}
