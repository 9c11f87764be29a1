//go:build !windows

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// renderSetup writes a configuration with one reference to a fresh secret holding value,
// and a template over it, and returns the secret's name and the files' paths.
func renderSetup(t *testing.T, value, template string) (name, cfg, tmpl string) {
	t.Helper()
	name, ref := newSecret(t, value)
	cfg = writeFile(t, "app.yaml", "database:\n  user: app\n  password: \""+ref+"\"\n")
	tmpl = writeFile(t, "pgpass.tmpl", template)
	return name, cfg, tmpl
}

// dirEntries lists a directory's names, to find temporary files left behind.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestRenderReplacesAtomicallyWithMode0600: the rendered file replaces the old one in one
// rename (a reader sees the old content or the new, never a part), with mode 0600 whatever
// the old file's, leaving no temporary file; nothing is printed.
func TestRenderReplacesAtomicallyWithMode0600(t *testing.T) {
	t.Parallel()
	secret := sentinel(t)
	_, cfg, tmpl := renderSetup(t, secret, `db.internal:5432:app:{{ .database.user }}:{{ get "Database.Password" }}`+"\n")
	dir := t.TempDir()
	out := filepath.Join(dir, "pgpass")
	old := strings.Repeat("old content\n", 20000) // large, so a non-atomic write would be seen half done
	if err := os.WriteFile(out, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(out)
	want := "db.internal:5432:app:app:" + secret + "\n"

	// A reader reads the file all along: every read must be the old file or the new one.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var torn atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if b, err := os.ReadFile(out); err == nil && string(b) != old && string(b) != want {
				torn.Add(1)
			}
		}
	}()
	code, stdout, stderr := cli(t, nil, "render", "--config", cfg, "--template", tmpl, "--out", out)
	stop.Store(true)
	wg.Wait()
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil || string(got) != want {
		t.Fatalf("rendered %q (%v), want the template over the resolved configuration", got, err)
	}
	after, _ := os.Stat(out)
	if after.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", after.Mode().Perm())
	}
	if os.SameFile(before, after) {
		t.Error("the file was rewritten in place, not replaced by a rename")
	}
	if n := torn.Load(); n != 0 {
		t.Errorf("a reader saw a partly written file %d times", n)
	}
	if names := dirEntries(t, dir); !slices.Equal(names, []string{"pgpass"}) {
		t.Errorf("directory holds %v, want only pgpass", names)
	}
	assertNoSentinel(t, "render's output", stdout+stderr, secret)
}

// TestRenderFailureLeavesTheFile: a template that reads a key that is not set, a template
// that does not parse, and a reference that does not resolve each exit non-zero, name the
// reason, and leave the previous file as it was (content, mode, inode) with no temporary
// file beside it; a world-readable mode is refused.
func TestRenderFailureLeavesTheFile(t *testing.T) {
	t.Parallel()
	secret := sentinel(t)
	_, cfg, good := renderSetup(t, secret, `{{ get "database.password" }}`)
	missingKey := writeFile(t, "missing.tmpl", `{{ get "database.password" }} {{ .database.nope }}`)
	missingGet := writeFile(t, "missing-get.tmpl", `{{ get "database.password" }} {{ get "database.nope" }}`)
	broken := writeFile(t, "broken.tmpl", `{{ get "database.password" `)
	unresolved := writeFile(t, "unresolved.yaml", "database:\n  password: \"@KeyVault(VaultName=myvault;SecretName=no-such-secret-here)\"\n")
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		wantErr string
	}{
		{"a missing key", []string{"--config", cfg, "--template", missingKey}, 1, `map has no entry for key "nope"`},
		{"a missing key through get", []string{"--config", cfg, "--template", missingGet}, 1, `key "database.nope" is not set`},
		{"a template that does not parse", []string{"--config", cfg, "--template", broken}, 2, "template " + broken},
		{"a reference that does not resolve", []string{"--config", unresolved, "--template", good}, 1, "SecretNotFound"},
		{"a world-readable mode", []string{"--config", cfg, "--template", good, "--mode", "0644"}, 2, "never world-readable"},
	} {
		dir := t.TempDir()
		out := filepath.Join(dir, "pgpass")
		if err := os.WriteFile(out, []byte("the good file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Stat(out)
		code, stdout, stderr := cli(t, nil, append([]string{"render", "--out", out}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.wantErr) {
			t.Errorf("%s: exit %d, want %d and %q\n%s%s", tc.name, code, tc.code, tc.wantErr, stdout, stderr)
		}
		after, err := os.Stat(out)
		if got, _ := os.ReadFile(out); err != nil || string(got) != "the good file\n" || !os.SameFile(before, after) || after.Mode().Perm() != 0o600 {
			t.Errorf("%s: the previous file was touched: %q", tc.name, got)
		}
		if names := dirEntries(t, dir); !slices.Equal(names, []string{"pgpass"}) {
			t.Errorf("%s: directory holds %v", tc.name, names)
		}
		assertNoSentinel(t, tc.name, stdout+stderr, secret)
	}
}

// TestRenderReplacesASymlinkWithoutFollowingIt: an attacker who can plant a symbolic link
// at the output path does not get the secret written to the link's target.
func TestRenderReplacesASymlinkWithoutFollowingIt(t *testing.T) {
	t.Parallel()
	secret := sentinel(t)
	_, cfg, tmpl := renderSetup(t, secret, `{{ get "database.password" }}`)
	victim := writeFile(t, "victim", "untouched\n")
	out := filepath.Join(t.TempDir(), "pgpass")
	if err := os.Symlink(victim, out); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := cli(t, nil, "render", "--config", cfg, "--template", tmpl, "--out", out); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if got, _ := os.ReadFile(victim); string(got) != "untouched\n" {
		t.Errorf("the link's target was written: %q", got)
	}
	if fi, err := os.Lstat(out); err != nil || fi.Mode()&os.ModeSymlink != 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("out is %v (%v), want a regular 0600 file", fi.Mode(), err)
	}
}

// TestRunRenderAndReloadSignal: with --render and --reload-signal HUP, a rotation rewrites
// the file and signals the same process, which reads the new value from it; the command is
// not restarted and its output never shows a value.
func TestRunRenderAndReloadSignal(t *testing.T) {
	t.Parallel()
	first, second := sentinel(t), sentinel(t)
	name, cfg, tmpl := renderSetup(t, first, `{{ get "database.password" }}`)
	dir := t.TempDir()
	out, log := filepath.Join(dir, "secret.txt"), filepath.Join(dir, "log")
	p := start(t, []string{childEnvVar}, append([]string{"run", "--config", cfg, "--watch", "--refresh-interval", "200ms",
		"--render", tmpl + ":" + out, "--reload-signal", "HUP"}, childCmd("reload", log, out)...)...)
	got := waitLines(t, p, log, 1)
	pid, value, _ := strings.Cut(got[0], "|")
	if value != first {
		t.Fatalf("the command first read %q from the rendered file", value)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("rendered file: %v %v", fi, err)
	}
	version := emu.Vault("myvault").SetSecret(name, second)
	got = waitLines(t, p, log, 2)
	if got[1] != pid+"|"+second {
		t.Errorf("after the rotation the log holds %q, want the same pid %s reading the new value", got, pid)
	}
	errOut := p.waitStderr("SIGHUP sent to the command's process group")
	if !strings.Contains(errOut, "-> "+version) || strings.Contains(errOut, "restarted the command") {
		t.Errorf("stderr:\n%s", errOut)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
	assertNoValues(t, p.stdout.String()+p.stderr.String(), first, second)
	if n, _ := strconv.Atoi(pid); n <= 0 {
		t.Errorf("pid %q", pid)
	}
}

// TestRunRenderFlagsNeedEachOther: --reload-signal without --watch or --render, and an
// unknown signal, are usage errors; a template that fails before the first start means the
// command is not started (125).
func TestRunRenderFlagsNeedEachOther(t *testing.T) {
	t.Parallel()
	_, cfg, tmpl := renderSetup(t, "render-flags-value", `{{ get "database.nope" }}`)
	out := filepath.Join(t.TempDir(), "f")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--reload-signal", "HUP", "--render", tmpl + ":" + out, "--", "true"}, "--reload-signal needs --watch"},
		{[]string{"run", "--watch", "--reload-signal", "HUP", "--", "true"}, "--reload-signal needs --render"},
		{[]string{"run", "--watch", "--render", tmpl + ":" + out, "--reload-signal", "KILL", "--", "true"}, "want HUP, USR1 or USR2"},
		{[]string{"run", "--render", "no-colon", "--", "true"}, "want TEMPLATE:OUT"},
	} {
		if code, _, errOut := cli(t, nil, tc.args...); code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("viperkv %s: exit %d, want 2 and %q\n%s", strings.Join(tc.args, " "), code, tc.want, errOut)
		}
	}
	code, _, errOut := cli(t, nil, "run", "--config", cfg, "--render", tmpl+":"+out, "--", "true")
	if code != 125 || !strings.Contains(errOut, `key "database.nope" is not set`) || !strings.Contains(errOut, "was not started") {
		t.Errorf("a failing template: exit %d, want 125\n%s", code, errOut)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failing template wrote %s", out)
	}
}
