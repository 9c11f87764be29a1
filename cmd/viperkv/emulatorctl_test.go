//go:build !windows

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctlSeed is the seed of the standalone emulators these tests run: rotator may change the
// secrets of myvault (as in testdata/emulator-seed.yaml), noaccess may not.
const ctlSeed = `
identities:
  - name: rotator
  - name: noaccess
vaults:
  - name: myvault
    secrets:
      - name: db-conn
        value: "first-value-of-db-conn"
    grants:
      - identity: system
        role: Key Vault Secrets User
      - identity: rotator
        role: Key Vault Secrets Officer
`

// standaloneEmulator runs viperkv emulator with seed as a process of its own and returns
// it and its info file once written; the emulator is killed when the test ends.
func standaloneEmulator(t *testing.T, seed string) (*proc, string) {
	t.Helper()
	dir := t.TempDir()
	seedPath := filepath.Join(dir, "seed.yaml")
	if err := os.WriteFile(seedPath, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	info := filepath.Join(dir, "kv.json")
	p := start(t, nil, "emulator", "--seed", seedPath, "--info", info)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(info); err == nil {
			return p, info
		}
		select {
		case <-p.exited:
			t.Fatalf("the emulator exited (status %d)\n%s%s", p.code, p.stdout.String(), p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no info file after 20 s\n%s%s", p.stdout.String(), p.stderr.String())
		}
	}
}

// ctl runs viperkv emulator secret ARGS against the emulator of info, with stdin.
func ctl(t *testing.T, info, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"emulator", "secret"}, args...)...)
	cmd.Env = append(os.Environ(), emulatorInfoEnv+"="+info, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// TestEmulatorSecretHotReload: viperkv emulator secret changes a secret of a running
// standalone emulator through its Key Vault API, and viperkv run --watch, started against
// the same emulator, sees each change: set (stdin, argument, file) restarts the command
// with the new value, disable makes it warn, enable makes it resolve again, delete warns
// that the secret is gone. No output shows a value.
func TestEmulatorSecretHotReload(t *testing.T) {
	t.Parallel()
	_, info := standaloneEmulator(t, ctlSeed)
	started := filepath.Join(t.TempDir(), "started")
	run := start(t, []string{childEnvVar, emulatorInfoEnv + "=" + info, "DB_CONN=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)"},
		append([]string{"run", "--watch", "--refresh-interval", "200ms", "--grace", "5s"}, childCmd("serve", started, "DB_CONN")...)...)
	want := []string{"first-value-of-db-conn"}
	if got := waitLines(t, run, started, 1); !slices.Equal(got, want) {
		t.Fatalf("first start saw %q", got)
	}
	var outputs []string
	step := func(stdin string, args ...string) string {
		t.Helper()
		code, out, errOut := ctl(t, info, stdin, args...)
		if code != 0 {
			t.Fatalf("secret %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		outputs = append(outputs, out, errOut)
		return out
	}
	rotate := func(value, stdin string, args ...string) string {
		t.Helper()
		out := step(stdin, args...)
		want = append(want, value)
		if got := waitLines(t, run, started, len(want)); !slices.Equal(got, want) {
			t.Fatalf("after secret %s: starts saw %q", strings.Join(args, " "), got)
		}
		return out
	}

	// The child writes one value a line: no value here holds a newline.
	fromStdin, fromArg, fromFile := sentinel(t), sentinel(t), sentinel(t)+` "q'b\s<l>g&a`+"\t "
	out := rotate(fromStdin, fromStdin, "set", "myvault", "db-conn", "-")
	if !strings.HasPrefix(out, "myvault.vault.azure.net/db-conn: new version ") {
		t.Errorf("set says %q", out)
	}
	run.waitStderr("restarted the command")

	out = step("", "disable", "myvault", "db-conn")
	if !strings.HasSuffix(out, " disabled\n") {
		t.Errorf("disable says %q", out)
	}
	run.waitStderr("SecretDisabled")
	step("", "enable", "https://myvault.vault.azure.net/", "db-conn")
	run.waitStderr("resolves again")

	out = rotate(fromArg, "", "set", "myvault.vault.azure.net", "db-conn", fromArg, "--content-type", "text/plain")
	if !strings.Contains(out, " (content type text/plain)") {
		t.Errorf("set --content-type says %q", out)
	}
	rotate(fromFile, "", "set", "myvault", "db-conn", "--from-file", writeFile(t, "value", fromFile))

	out = step("", "delete", "myvault", "db-conn", "--identity", "rotator")
	if !strings.HasPrefix(out, "myvault.vault.azure.net/db-conn: deleted") {
		t.Errorf("delete says %q", out)
	}
	run.waitStderr("SecretNotFound")

	run.signal(syscall.SIGTERM)
	run.wait()
	all := strings.Join(append(outputs, run.stdout.String(), run.stderr.String()), "\n")
	for _, v := range []string{fromStdin, fromArg, fromFile} {
		assertNoSentinel(t, "emulator secret and run --watch", all, v)
	}
}

// TestEmulatorSecretErrors: the mistakes and refusals of viperkv emulator secret, each
// saying what is wrong, none showing the value.
func TestEmulatorSecretErrors(t *testing.T) {
	t.Parallel()
	_, info := standaloneEmulator(t, ctlSeed)
	value := sentinel(t)
	for _, tc := range []struct {
		name  string
		info  string
		args  []string
		code  int
		wants []string
	}{
		{"no role", info, []string{"set", "myvault", "db-conn", value, "--identity", "noaccess"}, 1,
			[]string{"viperkv: set as noaccess: the vault answered 403 Forbidden (ForbiddenByRbac)", "Key Vault Secrets Officer"}},
		{"unknown identity", info, []string{"disable", "myvault", "db-conn", "--identity", "nobody"}, 2,
			[]string{"--identity nobody: the emulator has no such identity (it has noaccess, rotator, system)"}},
		{"unknown vault", info, []string{"set", "novault", "db-conn", value}, 2,
			[]string{`vault "novault": the emulator has no such vault (it has myvault)`}},
		{"unknown secret", info, []string{"enable", "myvault", "nosuch"}, 1,
			[]string{"enable as rotator: the vault answered 404 SecretNotFound"}},
		{"no emulator named", "", []string{"delete", "myvault", "db-conn"}, 2,
			[]string{"give --info FILE or set " + emulatorInfoEnv}},
		{"value twice", info, []string{"set", "myvault", "db-conn", value, "--from-file", "x"}, 2,
			[]string{"not both"}},
		{"no value", info, []string{"set", "myvault", "db-conn"}, 2,
			[]string{"missing the value: VALUE, - (stdin) or --from-file PATH"}},
		{"unreadable file", info, []string{"set", "myvault", "db-conn", "--from-file", filepath.Join(t.TempDir(), "absent")}, 2,
			[]string{"--from-file: open "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := ctl(t, tc.info, value, tc.args...)
			if code != tc.code || out != "" {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.wants {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			assertNoValues(t, out+errOut, value)
		})
	}
}

// TestEmulatorGoneIsSaidAtOnce: pointed at the info file of an emulator that is no longer
// running, the commands say so at once, naming the file and the address, instead of
// retrying the identity endpoint for seconds.
func TestEmulatorGoneIsSaidAtOnce(t *testing.T) {
	t.Parallel()
	emulator, info := standaloneEmulator(t, ctlSeed)
	_ = emulator.cmd.Process.Kill() // SIGKILL: the info file stays behind
	<-emulator.exited
	config := writeFile(t, "c.yaml", "db: \"@KeyVault(VaultName=myvault;SecretName=db-conn)\"\n")
	for _, tc := range []struct {
		name string
		run  func() (int, string)
		from string
	}{
		{"check", func() (int, string) {
			code, _, errOut := cli(t, []string{emulatorInfoEnv + "=" + info}, "check", "--config", config)
			return code, errOut
		}, emulatorInfoEnv + "=" + info},
		{"run", func() (int, string) {
			code, _, errOut := cli(t, []string{emulatorInfoEnv + "=" + info, "DB_CONN=@KeyVault(VaultName=myvault;SecretName=db-conn)"},
				append([]string{"run"}, childCmd("exit", "0")...)...)
			return code, errOut
		}, emulatorInfoEnv + "=" + info},
		{"secret set --info", func() (int, string) {
			code, _, errOut := ctl(t, "", "", "set", "myvault", "db-conn", "x", "--info", info)
			return code, errOut
		}, "--info=" + info},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			code, errOut := tc.run()
			took := time.Since(began)
			want := "viperkv: the emulator of " + tc.from + " is not running (connection refused at 127.0.0.1:"
			if code != 1 || !strings.Contains(errOut, want) {
				t.Errorf("exit %d, want 1 and %q:\n%s", code, want, errOut)
			}
			if took > 3*time.Second {
				t.Errorf("took %s to say the emulator is gone", took)
			}
		})
	}
}

// TestRunRefreshIntervalIsVisible: --refresh-interval is a documented flag of run.
func TestRunRefreshIntervalIsVisible(t *testing.T) {
	t.Parallel()
	code, out, errOut := cli(t, nil, "run", "--help")
	if code != 0 || !strings.Contains(out, "--refresh-interval duration") || !strings.Contains(out, "with --watch: how often") {
		t.Errorf("exit %d; run --help does not show --refresh-interval:\n%s%s", code, out, errOut)
	}
}

// TestEmulatorSecretExampleSeed: the example seed's rotator may change secrets, as the
// README's hot reload walk-through does.
func TestEmulatorSecretExampleSeed(t *testing.T) {
	t.Parallel()
	if emu.Vault("myvault") == nil || !slices.Contains(seedIdentities(t), "rotator") {
		t.Skip("testdata/emulator-seed.yaml has no identity rotator yet")
	}
	name := secretName(t)
	value := sentinel(t)
	code, out, errOut := ctl(t, infoPath, value, "set", "myvault", name, "-")
	if code != 0 || !strings.HasPrefix(out, "myvault.vault.azure.net/"+name+": new version ") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if got, ok := emu.Vault("myvault").SecretValue(name, ""); !ok || got != value {
		t.Error("the emulator holds another value")
	}
	assertNoValues(t, out+errOut, value)
}

func seedIdentities(t *testing.T) []string {
	t.Helper()
	seed, err := readSeed(filepath.Join("..", "..", "testdata", "emulator-seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, id := range seed.Identities {
		names = append(names, id.Name)
	}
	return names
}
