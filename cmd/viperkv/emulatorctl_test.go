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

// standaloneEmulator runs viperkv emulator with seed (and args) as a process of its own
// and returns it and its info file once it is serving; the emulator is killed when the
// test ends.
func standaloneEmulator(t *testing.T, seed string, args ...string) (*proc, string) {
	t.Helper()
	dir := t.TempDir()
	seedPath := filepath.Join(dir, "seed.yaml")
	if err := os.WriteFile(seedPath, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	info := filepath.Join(dir, "kv.json")
	return emulatorAt(t, seedPath, info, args...), info
}

// emulatorAt runs viperkv emulator --seed seedPath --info info (and args) and returns it
// once it is serving: the instructions, printed after the info file, are out. An info
// file there before (a stale one) does not count.
func emulatorAt(t *testing.T, seedPath, info string, args ...string) *proc {
	t.Helper()
	p := start(t, nil, append([]string{"emulator", "--seed", seedPath, "--info", info}, args...)...)
	p.waitOutput("Press Ctrl+C to stop.")
	return p
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
		{"tag without =", info, []string{"set", "myvault", "db-conn", "-", "--tag", "env"}, 2,
			[]string{`--tag "env": want KEY=VALUE`}},
		{"tag twice", info, []string{"set", "myvault", "db-conn", "-", "--tag", "env=a", "--tag", "env=b"}, 2,
			[]string{"--tag env: given twice"}},
		{"get without role", info, []string{"get", "myvault", "db-conn", "--identity", "noaccess"}, 1,
			[]string{"viperkv: get as noaccess: the vault answered 403 Forbidden (ForbiddenByRbac)"}},
		{"get missing", info, []string{"get", "myvault", "nosuch"}, 1,
			[]string{"get as rotator: the vault answered 404 SecretNotFound"}},
		{"versions missing", info, []string{"versions", "myvault", "nosuch"}, 1,
			[]string{"versions as rotator: the vault answered 404 SecretNotFound"}},
		{"recover not deleted", info, []string{"recover", "myvault", "db-conn"}, 1,
			[]string{"recover as rotator: the vault answered 404 SecretNotFound"}},
		{"purge not deleted", info, []string{"purge", "myvault", "db-conn"}, 1,
			[]string{"purge as rotator: the vault answered 404 SecretNotFound"}},
		{"list without vault", info, []string{"list"}, 2,
			[]string{"accepts 1 arg(s), received 0", "Run 'viperkv emulator secret list --help' for usage."}},
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

// listSeed is ctlSeed with a secret that has a content type, tags and an expiry.
const listSeed = `
identities:
  - name: rotator
vaults:
  - name: myvault
    secrets:
      - name: db-conn
        value: "first-value-of-db-conn"
      - name: expiring
        value: "value-of-expiring"
        content_type: text/plain
        expires: 2031-02-03T04:05:06Z
        tags: {env: dev}
    grants:
      - identity: rotator
        role: Key Vault Secrets Officer
`

// tableRows parses the output of list or versions: the header's columns, then one map per
// row from column to cell. Cells hold no blanks (the CLI quotes those).
func tableRows(t *testing.T, out string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	header := strings.Fields(lines[0])
	var rows []map[string]string
	for _, l := range lines[1:] {
		cells := strings.Fields(l)
		if len(cells) != len(header) {
			t.Fatalf("row %q has %d cells, the header %d:\n%s", l, len(cells), len(header), out)
		}
		row := map[string]string{}
		for i, h := range header {
			row[h] = cells[i]
		}
		rows = append(rows, row)
	}
	return rows
}

// TestEmulatorSecretListAndVersions: set --tag and --content-type reach the vault (the SDK
// reads them back), list shows each secret's latest version (enabled, updated, content
// type, tags) and versions each version (enabled, created, expires), in a table; neither
// shows a value, and both follow a disable.
func TestEmulatorSecretListAndVersions(t *testing.T) {
	t.Parallel()
	_, info := standaloneEmulator(t, listSeed)
	run := func(stdin string, args ...string) string {
		t.Helper()
		code, out, errOut := ctl(t, info, stdin, args...)
		if code != 0 {
			t.Fatalf("secret %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	first, second := sentinel(t), sentinel(t)
	began := time.Now().Add(-time.Second).Truncate(time.Second)
	out1 := run(first, "set", "myvault", "tagged", "-")
	out2 := run(second, "set", "myvault", "tagged", "-", "--tag", "env=dev", "--tag", "owner=team,a", "--content-type", "application/json")
	if want := ` (content type application/json; tags env=dev,owner="team,a")`; !strings.HasSuffix(strings.TrimSpace(out2), want) {
		t.Errorf("set says %q, want it to end in %q", out2, want)
	}
	v1 := strings.TrimSpace(strings.TrimPrefix(out1, "myvault.vault.azure.net/tagged: new version "))
	v2, _, _ := strings.Cut(strings.TrimPrefix(out2, "myvault.vault.azure.net/tagged: new version "), " ")
	if len(v1) != 32 || len(v2) != 32 {
		t.Fatalf("versions %q and %q from %q and %q", v1, v2, out1, out2)
	}

	list := run("", "list", "myvault")
	rows := tableRows(t, list)
	if got := strings.Fields(strings.SplitN(list, "\n", 2)[0]); !slices.Equal(got, []string{"NAME", "ENABLED", "UPDATED", "CONTENT-TYPE", "TAGS"}) {
		t.Errorf("list header %q", got)
	}
	var names []string
	byName := map[string]map[string]string{}
	for _, r := range rows {
		names = append(names, r["NAME"])
		byName[r["NAME"]] = r
	}
	if !slices.Equal(names, []string{"db-conn", "expiring", "tagged"}) {
		t.Fatalf("list names %q:\n%s", names, list)
	}
	// A value with a comma is quoted, so the list reads back.
	if r := byName["tagged"]; r["ENABLED"] != "true" || r["CONTENT-TYPE"] != "application/json" || r["TAGS"] != `env=dev,owner="team,a"` {
		t.Errorf("tagged row %q:\n%s", r, list)
	}
	if r := byName["expiring"]; r["CONTENT-TYPE"] != "text/plain" || r["TAGS"] != "env=dev" {
		t.Errorf("expiring row %q", r)
	}
	if r := byName["db-conn"]; r["CONTENT-TYPE"] != "-" || r["TAGS"] != "-" {
		t.Errorf("db-conn row %q", r)
	}
	updated, err := time.Parse(time.RFC3339, byName["tagged"]["UPDATED"])
	if err != nil || updated.Before(began) || updated.After(time.Now().Add(time.Second)) {
		t.Errorf("tagged updated %q (%v), want between %s and now", byName["tagged"]["UPDATED"], err, began)
	}

	run("", "disable", "myvault", "tagged", "--version", v1)
	versions := run("", "versions", "myvault", "tagged")
	vrows := tableRows(t, versions)
	// Oldest first; created has seconds, as on Key Vault, so both may share one.
	byVersion := map[string]map[string]string{}
	for _, r := range vrows {
		byVersion[r["VERSION"]] = r
	}
	if len(vrows) != 2 || byVersion[v1] == nil || byVersion[v2] == nil || vrows[0]["CREATED"] > vrows[1]["CREATED"] {
		t.Fatalf("versions, want %s and %s, oldest first:\n%s", v1, v2, versions)
	}
	if byVersion[v1]["ENABLED"] != "false" || byVersion[v2]["ENABLED"] != "true" || byVersion[v1]["EXPIRES"] != "-" {
		t.Errorf("versions after disabling the first:\n%s", versions)
	}
	if _, err := time.Parse(time.RFC3339, byVersion[v2]["CREATED"]); err != nil {
		t.Errorf("created %q: %v", byVersion[v2]["CREATED"], err)
	}
	if ex := tableRows(t, run("", "versions", "myvault", "expiring")); len(ex) != 1 || ex[0]["EXPIRES"] != "2031-02-03T04:05:06Z" {
		t.Errorf("expiring versions %q", ex)
	}
	// The latest version disabled: list says so.
	run("", "disable", "myvault", "tagged")
	for _, r := range tableRows(t, run("", "list", "myvault")) {
		if r["NAME"] == "tagged" && r["ENABLED"] != "false" {
			t.Errorf("tagged after disabling the latest: %q", r)
		}
	}
	all := list + versions + out1 + out2
	for _, v := range []string{first, second, "first-value-of-db-conn", "value-of-expiring"} {
		assertNoValues(t, all, v)
	}
}

// TestEmulatorSecretGetRecoverPurge: get prints the value exactly (the only command that
// does); delete then recover at once waits out the deletion (409 ObjectIsBeingDeleted)
// and the recovery (GET 404 until done), so a get right after it reads the value; a
// --timeout shorter than the deletion ends recover with exit 1 and the vault's reason;
// purge waits out the deletion too, after which the secret is gone for good; list
// --deleted shows a deleted secret.
func TestEmulatorSecretGetRecoverPurge(t *testing.T) {
	t.Parallel()
	_, info := standaloneEmulator(t, ctlSeed) // the default deletion window: 2s
	// The output of every command but get.
	var outputs []string
	ctlAll := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		code, out, errOut := ctl(t, info, stdin, args...)
		if args[0] != "get" {
			outputs = append(outputs, out, errOut)
		}
		return code, out, errOut
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		code, out, errOut := ctlAll(stdin, args...)
		if code != 0 {
			t.Fatalf("secret %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	value := hardSentinel(t)
	run(value, "set", "myvault", "back", "-")
	if got := run("", "get", "myvault", "back"); got != value {
		t.Fatalf("get printed %d bytes, not the value's %d exactly", len(got), len(value))
	}

	run("", "delete", "myvault", "back")
	began := time.Now()
	out := run("", "recover", "myvault", "back")
	if !strings.HasPrefix(out, "myvault.vault.azure.net/back: recovered (latest version ") || !strings.HasSuffix(out, "; readable again\n") {
		t.Errorf("recover says %q", out)
	}
	if took := time.Since(began); took < time.Second {
		t.Errorf("recover returned after %s, inside the 2s deletion window: it did not wait for the deletion", took)
	}
	if got := run("", "get", "myvault", "back"); got != value {
		t.Errorf("get right after recover printed %d bytes, not the value", len(got))
	}

	other := sentinel(t)
	run(other, "set", "myvault", "gone", "-")
	run("", "delete", "myvault", "gone")
	code, out, errOut := ctlAll("", "recover", "myvault", "gone", "--timeout", "500ms")
	if code != 1 || out != "" || !strings.Contains(errOut, "recover as rotator: the vault answered 409 Conflict (ObjectIsBeingDeleted)") {
		t.Errorf("recover --timeout 500ms during the deletion: exit %d\n%s%s", code, out, errOut)
	}
	if out := run("", "purge", "myvault", "gone"); out != "myvault.vault.azure.net/gone: purged (it cannot be recovered)\n" {
		t.Errorf("purge says %q", out)
	}
	for _, args := range [][]string{{"recover", "myvault", "gone"}, {"get", "myvault", "gone"}} {
		if code, out, errOut := ctlAll("", args...); code != 1 || !strings.Contains(errOut, "404 SecretNotFound") {
			t.Errorf("%s after purge: exit %d\n%s%s", args[0], code, out, errOut)
		}
	}

	run("", "delete", "myvault", "db-conn")
	deadline := time.Now().Add(15 * time.Second)
	for {
		rows := tableRows(t, run("", "list", "myvault", "--deleted"))
		if len(rows) == 1 && rows[0]["NAME"] == "db-conn" && rows[0]["DELETED"] != "-" && rows[0]["SCHEDULED-PURGE"] != "-" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list --deleted does not show db-conn after 15s: %q", rows)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := run("", "list", "myvault"); strings.Contains(out, "db-conn") {
		t.Errorf("list shows the deleted db-conn:\n%s", out)
	}
	all := strings.Join(outputs, "\n")
	assertNoSentinel(t, "secret commands but get", all, value)
	assertNoValues(t, all, other, "first-value-of-db-conn")
}

// TestEmulatorSecretUnknownCommand: a misspelled command of viperkv emulator or viperkv
// emulator secret is a usage error (exit 2) with a suggestion, where cobra printed the
// help and exited 0; with no command, secret prints its help; the help lists the new
// commands and flags.
func TestEmulatorSecretUnknownCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args  []string
		wants []string
	}{
		{[]string{"emulator", "secret", "sett", "myvault", "x", "y"}, []string{
			`viperkv: unknown command "sett" for "viperkv emulator secret" (did you mean set?)`,
			"Run 'viperkv emulator secret --help' for usage."}},
		{[]string{"emulator", "secret", "lst"}, []string{`(did you mean list?)`}},
		{[]string{"emulator", "secret", "recovr", "myvault", "x"}, []string{`(did you mean recover?)`}},
		{[]string{"emulator", "secret", "frobnicate"}, []string{
			`unknown command "frobnicate" for "viperkv emulator secret" (its commands: delete, disable, enable, get, list, purge, recover, set, versions)`}},
		{[]string{"emulator", "secert", "list"}, []string{
			`viperkv: unknown command "secert" for "viperkv emulator" (did you mean secret?)`, "Run 'viperkv emulator --help' for usage."}},
	} {
		code, out, errOut := cli(t, nil, tc.args...)
		if code != 2 || out != "" {
			t.Errorf("%s: exit %d, want 2\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, out, errOut)
		}
		for _, w := range tc.wants {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", strings.Join(tc.args, " "), w, errOut)
			}
		}
	}
	code, out, errOut := cli(t, nil, "emulator", "secret")
	if code != 0 || !strings.Contains(out, "Available Commands:") {
		t.Errorf("emulator secret: exit %d\n%s%s", code, out, errOut)
	}
	for _, w := range []string{"list ", "versions ", "get ", "recover ", "purge "} {
		if !strings.Contains(out, "\n  "+w) {
			t.Errorf("emulator secret help lacks the command %q:\n%s", w, out)
		}
	}
	if code, out, _ := cli(t, nil, "emulator", "secret", "set", "--help"); code != 0 || !strings.Contains(out, "--tag stringArray") || !strings.Contains(out, "--content-type string") {
		t.Errorf("secret set --help: exit %d, no --tag or --content-type:\n%s", code, out)
	}
	if code, out, _ := cli(t, nil, "emulator", "--help"); code != 0 || !strings.Contains(out, "-v, --verbose") {
		t.Errorf("emulator --help: exit %d, no --verbose:\n%s", code, out)
	}
}
