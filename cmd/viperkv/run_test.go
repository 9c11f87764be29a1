//go:build !windows

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/viperkv/viperkv/kvtest"
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

// TestRunMasksEveryFormOfASecret: the CLI exports a list holding a reference as JSON, and
// a child may print a value unquoted (trimmed), or run viperkv resolve --reveal: none of
// the forms the CLI itself produces may show the secret.
func TestRunMasksEveryFormOfASecret(t *testing.T) {
	t.Parallel()
	secret := hardSentinel(t)
	_, ref := newSecret(t, secret)
	config := writeFile(t, "c.yaml", fmt.Sprintf("conn: %q\nlist: [%[1]q, plain]\ndsn: %q\n", ref, "password="+ref+";"))
	script := `printf 'raw=%s\n' "$S"; printf unquoted=; echo $S; printf 'list=%s\n' "$APP_LIST"; printf 'dsn=%s\n' "$APP_DSN"
for f in yaml json toml env; do "$VIPERKV" resolve --config "$CONFIG" --reveal --format $f; done
echo done`
	env := []string{"S=" + ref, "VIPERKV=" + binPath, "CONFIG=" + config}
	args := []string{"run", "--config", config, "--env-prefix", "app", "--", "sh", "-c", script}

	code, out, errOut := cli(t, env, args...)
	if code != 0 || !strings.HasSuffix(out, "done\n") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	assertNoSentinel(t, "run", out+errOut, secret)
	for _, want := range []string{"raw=<concealed by viperkv>\n", "unquoted=<concealed by viperkv>\n", "list=[\"<concealed by viperkv>\",\"plain\"]\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}

	// The same with --no-masking shows the secret in every form: the child did print them.
	code, out, _ = cli(t, env, append([]string{"run", "--no-masking"}, args[1:]...)...)
	if code != 0 || !showsSentinel(out, secret) || !strings.Contains(out, `\u0026`) || !strings.Contains(out, "unquoted="+strings.Join(strings.Fields(secret), " ")+"\n") {
		t.Errorf("--no-masking: exit %d\n%s", code, out)
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
	errOut := p.waitStderr("restarted the command")
	for _, s := range []string{"rotation: DB_CONN changed (secret myvault.vault.azure.net/" + name + " version ", "-> " + version + ")",
		"restarting the command: SIGTERM to its process group, then SIGKILL after 5s", "restarted the command (pid "} {
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
	if !strings.Contains(p.stderr.String(), "did not exit within 300ms; sending SIGKILL") {
		t.Errorf("no SIGKILL notice:\n%s", p.stderr.String())
	}
	p.signal(syscall.SIGINT)
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d after SIGINT, want the child's 0", code)
	}
}

// TestRunWatchMessagesHideValues: what run --watch says about a rotation and a failed
// refresh names variables, secrets and versions, never a value, in any form.
func TestRunWatchMessagesHideValues(t *testing.T) {
	t.Parallel()
	first, second := hardSentinel(t), hardSentinel(t)
	name, ref := newSecret(t, first)
	config := writeFile(t, "c.yaml", fmt.Sprintf("db:\n  conn: %q\n  hosts: [%[1]q, plain]\n", ref))
	p := start(t, []string{childEnvVar, "DB_CONN=" + ref},
		append([]string{"run", "--watch", "--config", config, "--refresh-interval", "200ms", "--grace", "5s"}, childCmd("serve", filepath.Join(t.TempDir(), "started"), "DB_CONN")...)...)
	p.waitOutput("started\n")
	version := emu.Vault("myvault").SetSecret(name, second)
	p.waitStderr("restarted the command")
	p.waitOutput("started\nstarted\n")
	if err := emu.Vault("myvault").SetEnabled(name, version, false); err != nil {
		t.Fatal(err)
	}
	p.waitStderr("SecretDisabled")
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	for _, secret := range []string{first, second} {
		assertNoSentinel(t, "run --watch", p.stdout.String()+p.stderr.String(), secret)
	}
}

// TestRunWatchWarningsSayWhy: a warning of run --watch says why the refresh failed: the
// parser's error for a bad config edit, the network error when the vault is gone.
func TestRunWatchWarningsSayWhy(t *testing.T) {
	t.Parallel()
	t.Run("bad config edit", func(t *testing.T) {
		t.Parallel()
		_, ref := newSecret(t, sentinel(t))
		config := writeFile(t, "c.yaml", fmt.Sprintf("db:\n  conn: %q\n", ref))
		p := start(t, []string{childEnvVar},
			append([]string{"run", "--watch", "--config", config, "--grace", "5s"}, childCmd("serve", filepath.Join(t.TempDir(), "started"), "DB_CONN")...)...)
		p.waitOutput("started\n")
		if err := os.WriteFile(config, []byte("db:\n  conn: [unclosed\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		errOut := p.waitStderr("; the command keeps its current values\n")
		if !regexp.MustCompile(`viperkv: warning: configuration: config file .*c\.yaml: .*yaml: line \d+: .+; the command keeps its current values\n`).MatchString(errOut) {
			t.Errorf("the warning does not say why:\n%s", errOut)
		}
		p.signal(syscall.SIGTERM)
		p.wait()
	})

	t.Run("vault gone", func(t *testing.T) {
		t.Parallel()
		srv, info := ownEmulator(t, func(srv *kvtest.Server) {
			v := srv.AddVault("myvault")
			v.SetSecret("db-conn", sentinel(t))
			v.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
		})
		p := start(t, []string{childEnvVar, emulatorInfoEnv + "=" + info, "DB_CONN=@KeyVault(VaultName=myvault;SecretName=db-conn)"},
			append([]string{"run", "--watch", "--refresh-interval", "100ms"}, childCmd("serve", filepath.Join(t.TempDir(), "started"), "DB_CONN")...)...)
		p.waitOutput("started\n")
		srv.Close()
		errOut := p.waitStderr("; the command keeps its current values\n")
		if !strings.Contains(errOut, "viperkv: warning: secret myvault.vault.azure.net/db-conn ($DB_CONN): OtherReasons: ") || !strings.Contains(errOut, "connection refused") {
			t.Errorf("the warning does not say why:\n%s", errOut)
		}
		p.signal(syscall.SIGTERM)
		p.wait()
	})
}

// ownEmulator starts an emulator for one test (which may stop it), lets setup add its
// vaults, and returns it and the path of its info file.
func ownEmulator(t *testing.T, setup func(*kvtest.Server)) (*kvtest.Server, string) {
	t.Helper()
	srv, err := kvtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	setup(srv)
	path, err := writeInfo(srv, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return srv, path
}

// TestRunWatchRestartsOnPush: with --listen, an Event Grid delivery restarts the command
// at once (the refresh interval is an hour); a delivery without the shared header gets 401
// and changes nothing; the header's value never reaches the command.
func TestRunWatchRestartsOnPush(t *testing.T) {
	t.Parallel()
	first, second := sentinel(t), sentinel(t)
	name, ref := newSecret(t, first)
	startedFile := filepath.Join(t.TempDir(), "started")
	p := start(t, []string{childEnvVar, "DB_CONN=" + ref, "VIPERKV_EVENTGRID_HEADER_VALUE=hook-secret-value"},
		append([]string{"run", "--watch", "--refresh-interval", "1h", "--grace", "5s", "--listen", "127.0.0.1:0", "--listen-path", "/events",
			"--eventgrid-header", "X-Webhook-Key"}, childCmd("serve", startedFile, "DB_CONN", "VIPERKV_EVENTGRID_HEADER_VALUE")...)...)
	if got := waitLines(t, p, startedFile, 1); !slices.Equal(got, []string{first + "|"}) {
		t.Fatalf("first start saw %q", got)
	}
	m := regexp.MustCompile(`listening for Event Grid deliveries on (http://127\.0\.0\.1:\d+/events) \(header X-Webhook-Key\)`).FindStringSubmatch(p.waitStderr("listening for Event Grid"))
	if m == nil {
		t.Fatalf("stderr does not say where it listens:\n%s", p.stderr.String())
	}
	version := emu.Vault("myvault").SetSecret(name, second)
	delivery := fmt.Sprintf(`[{"id":"%s","topic":"/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/myvault","subject":"%s",`+
		`"eventType":"Microsoft.KeyVault.SecretNewVersionCreated","eventTime":"2026-12-01T00:00:00Z","dataVersion":"1","metadataVersion":"1",`+
		`"data":{"Id":"https://myvault.vault.azure.net/secrets/%s/%s","VaultName":"myvault","ObjectType":"Secret","ObjectName":"%s","Version":"%s","NBF":null,"EXP":null}}]`,
		version, name, name, version, name, version)
	post := func(key string) int {
		req, _ := http.NewRequest(http.MethodPost, m[1], strings.NewReader(delivery))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("aeg-event-type", "Notification")
		if key != "" {
			req.Header.Set("X-Webhook-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := post("wrong"); st != 401 {
		t.Errorf("delivery with a wrong header: %d, want 401", st)
	}
	if st := post("hook-secret-value"); st != 200 {
		t.Fatalf("delivery: %d", st)
	}
	if got := waitLines(t, p, startedFile, 2); !slices.Equal(got, []string{first + "|", second + "|"}) {
		t.Fatalf("starts saw %q", got)
	}
	errOut := p.waitStderr("restarted the command")
	if !strings.Contains(errOut, "-> "+version+", pushed by Key Vault's event") {
		t.Errorf("stderr does not say the rotation was pushed:\n%s", errOut)
	}
	p.signal(syscall.SIGTERM)
	p.wait()
	assertNoValues(t, p.stdout.String()+p.stderr.String(), first, second, "hook-secret-value")
}

// TestRunListenNeedsAuthentication: --listen without a way to authenticate Event Grid, or
// without --watch, or with the header's value missing, is a usage error before anything runs.
func TestRunListenNeedsAuthentication(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--watch", "--listen", "127.0.0.1:0"}, "--listen needs authentication"},
		{[]string{"--listen", "127.0.0.1:0", "--eventgrid-header", "X-Key"}, "--listen needs --watch"},
		{[]string{"--watch", "--listen", "127.0.0.1:0", "--eventgrid-header", "X-Key"}, "VIPERKV_EVENTGRID_HEADER_VALUE"},
		{[]string{"--eventgrid-audience", "api://x"}, "need --listen"},
	} {
		p := start(t, []string{childEnvVar, "VIPERKV_EVENTGRID_HEADER_VALUE="}, append(append([]string{"run"}, tc.args...), childCmd("exit", "0")...)...)
		if code := p.wait(); code != 2 || !strings.Contains(p.stderr.String(), tc.want) {
			t.Errorf("run %v: exit %d, stderr %q; want 2 and %q", tc.args, code, p.stderr.String(), tc.want)
		}
	}
}

// TestRunWatchPushFromTheEmulator: the emulator's own Event Grid, with Microsoft Entra
// protected delivery (the tenant taken from the emulator's info file), restarts the command
// on a rotation: the whole path a service on Azure takes, on loopback.
func TestRunWatchPushFromTheEmulator(t *testing.T) {
	t.Parallel()
	first, second := sentinel(t), sentinel(t)
	var kv *kvtest.Vault
	_, info := ownEmulator(t, func(srv *kvtest.Server) {
		kv = srv.AddVault("pushvault")
		kv.SetSecret("db-conn", first)
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	})
	startedFile := filepath.Join(t.TempDir(), "started")
	p := start(t, []string{childEnvVar, emulatorInfoEnv + "=" + info, "DB_CONN=@KeyVault(VaultName=pushvault;SecretName=db-conn)"},
		append([]string{"run", "--watch", "--refresh-interval", "1h", "--grace", "5s", "--listen", "127.0.0.1:0",
			"--eventgrid-audience", "api://viperkv-run"}, childCmd("serve", startedFile, "DB_CONN")...)...)
	if got := waitLines(t, p, startedFile, 1); !slices.Equal(got, []string{first}) {
		t.Fatalf("first start saw %q", got)
	}
	m := regexp.MustCompile(`listening for Event Grid deliveries on (http://\S+) \(Entra ID \(tenant ` + kvtest.DefaultTenantID + `, audience api://viperkv-run\)\)`).
		FindStringSubmatch(p.waitStderr("listening for Event Grid"))
	if m == nil {
		t.Fatalf("stderr does not say where it listens or for which tenant:\n%s", p.stderr.String())
	}
	sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: m[1], Audience: "api://viperkv-run", Schema: kvtest.CloudEventSchema})
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := sub.WaitValidated(ctx); err != nil {
		t.Fatalf("handshake: %v; deliveries %+v", err, sub.Deliveries())
	}
	version := kv.SetSecret("db-conn", second)
	if got := waitLines(t, p, startedFile, 2); !slices.Equal(got, []string{first, second}) {
		t.Fatalf("starts saw %q; deliveries %+v", got, sub.Deliveries())
	}
	if errOut := p.waitStderr("restarted the command"); !strings.Contains(errOut, version+", pushed by Key Vault's event") {
		t.Errorf("stderr does not say the rotation was pushed:\n%s", errOut)
	}
	p.signal(syscall.SIGTERM)
	p.wait()
	assertNoValues(t, p.stdout.String()+p.stderr.String(), first, second)
}

// TestRunVersionCheckFlag: an unknown --version-check is a usage error; list mode
// still restarts the command on a rotation.
func TestRunVersionCheckFlag(t *testing.T) {
	t.Parallel()
	p := start(t, []string{childEnvVar}, append([]string{"run", "--watch", "--version-check", "sometimes"}, childCmd("exit", "0")...)...)
	if code := p.wait(); code != 2 || !strings.Contains(p.stderr.String(), `--version-check "sometimes"`) {
		t.Errorf("exit %d, stderr %q", code, p.stderr.String())
	}
	first, second := sentinel(t), sentinel(t)
	name, ref := newSecret(t, first)
	startedFile := filepath.Join(t.TempDir(), "started")
	p = start(t, []string{childEnvVar, "DB_CONN=" + ref},
		append([]string{"run", "--watch", "--version-check", "list", "--refresh-interval", "200ms", "--grace", "5s"}, childCmd("serve", startedFile, "DB_CONN")...)...)
	waitLines(t, p, startedFile, 1)
	emu.Vault("myvault").SetSecret(name, second)
	if got := waitLines(t, p, startedFile, 2); !slices.Equal(got, []string{first, second}) {
		t.Fatalf("starts saw %q", got)
	}
	p.signal(syscall.SIGTERM)
	p.wait()
}

// TestRunExportsVaultSource: with --vault-source, run exports the vault's keys as variables
// (db.password: APP_DB_PASSWORD) and masks their values in the command's output.
func TestRunExportsVaultSource(t *testing.T) {
	t.Parallel()
	prefix := "run" + strings.ReplaceAll(secretName(t), "-", "") + "--"
	secret := sentinel(t)
	emu.Vault("myvault").SetSecret(prefix+"Db--Password", secret)
	code, out, errOut := cli(t, []string{childEnvVar}, append([]string{"run", "--env-prefix", "APP", "--vault-source", "myvault,prefix=" + prefix},
		childCmd("print", "APP_DB_PASSWORD")...)...)
	if code != 0 || !strings.Contains(out, "APP_DB_PASSWORD=<concealed by viperkv>") {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
	assertNoSentinel(t, "run --vault-source", out+errOut, secret)
}

// holding counts the processes (zombies aside) whose environment holds s: what a restart
// must leave none of for an old secret. -1 when /proc cannot be read.
func holding(s string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range entries {
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !strings.Contains(string(env), s) {
			continue
		}
		if stat, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		n++
	}
	return n
}

// groupGone reports whether process group pgid has no process left (zombies aside), and
// what is left when it has.
func groupGone(pgid int) (bool, string) {
	if alive, known := groupAliveProc(pgid); known {
		return !alive, fmt.Sprintf("a process of group %d (see /proc)", pgid)
	}
	return syscall.Kill(-pgid, 0) == syscall.ESRCH, fmt.Sprintf("group %d", pgid)
}

// Defect: each rotation sent SIGTERM to the command alone: what it had started was
// orphaned, still running with the old secret in its environment (and, for a server, its
// port), and one survived SIGTERM to viperkv too. The command runs in a process group of
// its own: a rotation ends the whole group before the new command starts, with or without
// a process that ignores SIGTERM, and stopping viperkv ends the new group as well.
func TestRunWatchEndsTheWholeProcessGroup(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, script string }{
		{"children", `sleep 3600 & sleep 3600 & echo started; wait`},
		{"children that ignore SIGTERM", `trap '' TERM; sleep 3600 & sleep 3600 & echo started; wait`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			first := sentinel(t)
			name, ref := newSecret(t, first)
			p := start(t, []string{"DB_CONN=" + ref},
				"run", "--watch", "--refresh-interval", "200ms", "--stop-timeout", "500ms", "--", "sh", "-c", tc.script)
			p.waitOutput("started\n")
			pidOf := func(what string) int {
				t.Helper()
				m := regexp.MustCompile(what + ` the command \(pid (\d+)`).FindStringSubmatch(p.waitStderr(what + " the command (pid "))
				if m == nil {
					t.Fatalf("no pid in:\n%s", p.stderr.String())
				}
				pid, _ := strconv.Atoi(m[1])
				return pid
			}
			old := pidOf("started")
			if gone, _ := groupGone(old); gone {
				t.Fatalf("the command's group %d has no process while it runs: the check would prove nothing", old)
			}
			if n := holding("DB_CONN=" + first); n >= 0 && n < 3 {
				t.Fatalf("%d processes hold the first secret while the command runs, want its shell and two children", n)
			}
			emu.Vault("myvault").SetSecret(name, sentinel(t))
			renewed := pidOf("restarted")
			if gone, left := groupGone(old); !gone {
				t.Errorf("after the restart, %s of the old command is still running", left)
			}
			if n := holding("DB_CONN=" + first); n > 0 {
				t.Errorf("after the restart, %d processes still hold the old secret in their environment", n)
			}
			p.waitOutput("started\nstarted\n")
			p.signal(syscall.SIGTERM)
			p.wait()
			if gone, left := groupGone(renewed); !gone {
				t.Errorf("after SIGTERM to viperkv, %s is still running", left)
			}
		})
	}
}
