//go:build !windows

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/viperkv/viperkv/kvtest"
)

const quickstart = "../../testdata/quickstart.yaml"

// apiKeyEnv is the quickstart's environment-only reference.
const apiKeyEnv = "APP_API_KEY=@KeyVault(VaultName=myvault;SecretName=api-key)"

// seedValues are the values of the seeded secrets: none may appear in output.
func seedValues(t *testing.T) []string {
	t.Helper()
	seed, err := readSeed("../../testdata/emulator-seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range seed.Vaults {
		for _, s := range v.Secrets {
			out = append(out, s.Value)
		}
	}
	return out
}

func assertNoValues(t *testing.T, output string, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(output, v) {
			t.Errorf("output shows a secret value (%d bytes):\n%s", len(v), output)
		}
	}
}

// assertNoSentinel fails if output shows secret (a hardSentinel) in any form: whole,
// trimmed, with its blanks collapsed (an unquoted echo $X), escaped for JSON (with and
// without Go's HTML-safe escapes), quoted for YAML, TOML or a shell, line by line, or any
// part of it holding one of its tokens.
func assertNoSentinel(t *testing.T, what, output, secret string) {
	t.Helper()
	forms := map[string]string{
		"value":        secret,
		"trimmed":      strings.TrimSpace(secret),
		"unquoted":     strings.Join(strings.Fields(secret), " "),
		"shell-quoted": strings.ReplaceAll(secret, "'", `'\''`),
	}
	html, _ := json.Marshal(secret)
	forms["JSON"] = unquote(string(html))
	var plain bytes.Buffer
	enc := json.NewEncoder(&plain)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(secret)
	forms["JSON without HTML escapes"] = unquote(strings.TrimSpace(plain.String()))
	y, _ := yaml.Marshal(secret)
	forms["YAML"] = unquote(strings.TrimSpace(string(y)))
	v := viper.New()
	v.Set("k", secret)
	v.SetConfigType("toml")
	var toml bytes.Buffer
	_ = v.WriteConfigTo(&toml)
	forms["TOML"] = unquote(strings.TrimPrefix(strings.TrimSpace(toml.String()), "k = "))
	for i, line := range strings.Split(secret, "\n") {
		if len(strings.TrimSpace(line)) >= 4 {
			forms[fmt.Sprintf("line %d", i+1)] = line
			forms[fmt.Sprintf("line %d trimmed", i+1)] = strings.TrimSpace(line)
		}
	}
	var shown []string
	for name, f := range forms {
		if f != "" && strings.Contains(output, f) {
			shown = append(shown, name+" form")
		}
	}
	for _, tok := range sentinelTokens(secret) {
		if strings.Contains(output, tok) {
			shown = append(shown, "a part holding "+tok)
		}
	}
	if len(shown) > 0 {
		slices.Sort(shown)
		t.Errorf("%s: output shows the secret (%s):\n%s", what, strings.Join(shown, ", "), output)
	}
}

// unquote strips one pair of matching quotes.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// showsSentinel reports whether output shows any part of secret (a hardSentinel).
func showsSentinel(output, secret string) bool {
	for _, tok := range sentinelTokens(secret) {
		if strings.Contains(output, tok) {
			return true
		}
	}
	return false
}

func TestCheckQuickstart(t *testing.T) {
	t.Parallel()
	code, out, errOut := cli(t, []string{apiKeyEnv}, "check", "--config", quickstart, "--env-prefix", "APP", "--env-key", "api.key")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	row := regexp.MustCompile(`(?m)^(\S+)\s+(\S+)\s+(\S+)\s+([0-9a-f]{32})\s+Resolved\s+[0-9.]+[µm]?s$`)
	rows := row.FindAllStringSubmatch(out, -1)
	want := map[string]string{
		"api.key":        "myvault.vault.azure.net api-key",
		"cache.url":      "myvault.vault.azure.net db-password",
		"database.conn":  "myvault.vault.azure.net db-conn",
		"features.flags": "othervault.vault.azure.net feature-flags",
	}
	if len(rows) != len(want) {
		t.Fatalf("%d resolved rows, want %d:\n%s", len(rows), len(want), out)
	}
	for _, r := range rows {
		if want[r[1]] != r[2]+" "+r[3] {
			t.Errorf("row %q: vault and secret %s %s, want %s", r[1], r[2], r[3], want[r[1]])
		}
	}
	for _, s := range []string{"KEY", "VAULT", "SECRET", "VERSION", "STATUS", "TOOK", "4 of 4 references resolved."} {
		if !strings.Contains(out, s) {
			t.Errorf("no %q in:\n%s", s, out)
		}
	}
	if !strings.Contains(errOut, "VIPERKV_EMULATOR_INFO") {
		t.Errorf("stderr does not say the emulator is used:\n%s", errOut)
	}
	assertNoValues(t, out+errOut, seedValues(t)...)
}

func TestCheckFailures(t *testing.T) {
	t.Parallel()
	config := writeFile(t, "config.yaml", `
good: "@KeyVault(VaultName=myvault;SecretName=db-conn)"
missing: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/no-such-secret/)"
pinned: "@KeyVault(VaultName=myvault;SecretName=db-conn;SecretVersion=0123456789abcdef0123456789abcdef)"
evil: "@KeyVault(SecretUri=https://myvault.vault.azure.net.evil.test/secrets/x/)"
broken: "@KeyVault(VaultName=myvault;SecretName=bad_name)"
nowhere: "@KeyVault(VaultName=novault;SecretName=x)"
plain: 42
`)
	code, out, errOut := cli(t, nil, "check", "--config", config)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	for key, status := range map[string]string{
		"good": "Resolved", "missing": "SecretNotFound", "pinned": "SecretVersionNotFound", "evil": "HostNotAllowed",
		"broken": "InvalidSyntax", "nowhere": "VaultNotFound",
	} {
		if !regexp.MustCompile(`(?m)^` + key + `\s.*\s` + status + `\s`).MatchString(out) {
			t.Errorf("no row %s ... %s in:\n%s", key, status, out)
		}
	}
	if !strings.Contains(out, "5 of 6 references failed:") || !strings.Contains(out, "missing: SecretNotFound: GET https://myvault.vault.azure.net/secrets/no-such-secret: 404") {
		t.Errorf("no failure summary in:\n%s", out)
	}
	assertNoValues(t, out+errOut, seedValues(t)...)

	// JSON: the same, machine-readable.
	code, out, _ = cli(t, nil, "check", "--config", config, "--output", "json")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	var doc struct {
		References []checkRow
		Resolved   int
		Failed     int
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if doc.Resolved != 1 || doc.Failed != 5 || len(doc.References) != 6 {
		t.Errorf("resolved %d failed %d rows %d, want 1, 5, 6", doc.Resolved, doc.Failed, len(doc.References))
	}
	for _, r := range doc.References {
		switch r.Key {
		case "good":
			if r.Status != "Resolved" || r.Vault != "myvault.vault.azure.net" || r.Secret != "db-conn" || len(r.Version) != 32 || r.Reason != "" {
				t.Errorf("good: %+v", r)
			}
		case "pinned":
			if r.Status != "SecretVersionNotFound" || r.PinnedVersion != "0123456789abcdef0123456789abcdef" || r.Version != "" {
				t.Errorf("pinned: %+v", r)
			}
		case "evil":
			if r.Status != "HostNotAllowed" || !strings.Contains(r.Reason, "evil.test") {
				t.Errorf("evil: %+v", r)
			}
		}
	}
}

func TestCheckIdentityWithoutAccess(t *testing.T) {
	t.Parallel()
	id, ok := emu.UserIdentity("noaccess")
	if !ok {
		t.Fatal("seed has no identity noaccess")
	}
	code, out, errOut := cli(t, []string{apiKeyEnv}, "check", "--config", quickstart, "--env-prefix", "APP", "--env-key", "api.key",
		"--client-id", id.ClientID, "-o", "json")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	var doc struct{ References []checkRow }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.References) != 4 {
		t.Fatalf("%d rows, want 4", len(doc.References))
	}
	for _, r := range doc.References {
		if r.Status != "AccessToKeyVaultDenied" {
			t.Errorf("%s: %s, want AccessToKeyVaultDenied", r.Key, r.Status)
		}
	}
}

func TestCheckEnviron(t *testing.T) {
	t.Parallel()
	code, out, errOut := cli(t, []string{"DB_CONN=@KeyVault(VaultName=myvault;SecretName=db-conn)", "NOPE=x@KeyVault(VaultName=myvault;SecretName=nope)"},
		"check", "--environ")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	if !regexp.MustCompile(`(?m)^\$DB_CONN\s.*Resolved`).MatchString(out) || !regexp.MustCompile(`(?m)^\$NOPE\s.*SecretNotFound`).MatchString(out) {
		t.Errorf("environment rows missing:\n%s", out)
	}
	assertNoValues(t, out+errOut, seedValues(t)...)
}

// TestCheckNothingToCheck: a deployment gate must not pass because its flags were
// forgotten or point at a configuration without references; --allow-empty says none is
// expected.
func TestCheckNothingToCheck(t *testing.T) {
	t.Parallel()
	noRefs := writeFile(t, "c.json", `{"a": 1}`)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "nothing to check: pass --config FILE, --environ, --vault-source VAULT"},
		{[]string{"check", "--output", "json"}, "nothing to check: pass --config FILE, --environ, --vault-source VAULT"},
		{[]string{"check", "--environ"}, "nothing to check: no Key Vault reference in the environment"},
		{[]string{"check", "--config", noRefs}, "nothing to check: no Key Vault reference in " + noRefs},
		{[]string{"check", "--config", noRefs, "--environ", "-o", "json"}, "nothing to check: no Key Vault reference in " + noRefs + " or the environment"},
		// A misspelled prefix imports nothing: that is nothing to check too.
		{[]string{"check", "--vault-source", "myvault,prefix=ordrs--"}, "nothing to check: no Key Vault reference in --vault-source myvault,prefix=ordrs-- (no secret matched)"},
		{[]string{"check", "--config", noRefs, "--vault-source", "myvault,tag=team=nobody"}, "--vault-source myvault,tag=team=nobody (no secret matched)"},
	} {
		what := "viperkv " + strings.Join(tc.args, " ")
		code, out, errOut := cli(t, nil, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "--allow-empty") || !strings.Contains(errOut, "--help' for usage.") {
			t.Errorf("%s: exit %d, want 2 and %q\nstdout:\n%s\nstderr:\n%s", what, code, tc.want, out, errOut)
		}
	}
	// --allow-empty: nothing to check is fine.
	for _, args := range [][]string{{"check", "--allow-empty"}, {"check", "--config", noRefs, "--allow-empty"}} {
		code, out, errOut := cli(t, nil, args...)
		if code != 0 || !strings.Contains(out, "No Key Vault references found.") {
			t.Errorf("viperkv %s: exit %d:\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	code, out, _ := cli(t, nil, "check", "--config", noRefs, "--allow-empty", "-o", "json")
	if code != 0 || !strings.Contains(out, `"references": []`) {
		t.Errorf("--allow-empty -o json: exit %d:\n%s", code, out)
	}
	// The choice is documented.
	if _, out, _ := cli(t, nil, "check", "--help"); !strings.Contains(out, "--allow-empty") || !strings.Contains(out, "nothing to check") {
		t.Errorf("check --help does not explain nothing to check:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"check", "--bogus"},
		{"check", "extra"},
		{"check", "--output", "xml"},
		{"check", "--config", "/no/such/file.yaml"},
		{"check", "--timeout", "soon"},
		{"check", "--cloud", "mars"},
		{"resolve", "--format", "xml"},
		{"resolve", "-f"},
		{"run"},
		{"run", "--grace", "0s", "--", "true"},
		{"nosuchcommand"},
		{"version", "extra"},
		{"emulator", "extra"},
		{"emulator", "--seed", "/no/such/seed.yaml"},
		{"emulator", "--seed", writeFile(t, "typo.yaml", "vaults:\n  - name: v\n    secrets:\n      - name: db-conn\n        vlaue: x\n")},
		{"check", "--credential", "password", "--config", quickstart},
		{"check", "--credential", "azure-cli", "--client-id", "6a1f0c3e-0000-4000-8000-000000000001", "--config", quickstart},
	} {
		code, out, errOut := cli(t, nil, args...)
		if code != 2 {
			t.Errorf("viperkv %s: exit %d, want 2\n%s%s", strings.Join(args, " "), code, out, errOut)
			continue
		}
		if !strings.Contains(errOut, "--help' for usage.") {
			t.Errorf("viperkv %s: no usage hint:\n%s", strings.Join(args, " "), errOut)
		}
	}
}

func TestResolveFormats(t *testing.T) {
	t.Parallel()
	args := []string{"resolve", "--config", quickstart, "--env-prefix", "APP", "--env-key", "api.key"}
	values := seedValues(t)
	dbConn, _ := emu.Vault("myvault").SecretValue("db-conn", "")

	// YAML, masked.
	code, out, errOut := cli(t, []string{apiKeyEnv}, args...)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	assertNoValues(t, out+errOut, values...)
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := fmt.Sprint(doc["database"]); got != "map[conn:****** pool_size:10]" {
		t.Errorf("database = %s", got)
	}
	if got := fmt.Sprint(doc["cache"]); got != "map[url:rediss://cache.internal:6380?password=******&db=0]" {
		t.Errorf("cache = %s", got)
	}

	// JSON and TOML, masked; read back with Viper.
	for _, format := range []string{"json", "toml"} {
		code, out, errOut := cli(t, []string{apiKeyEnv}, append(args, "--format", format)...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", format, code, errOut)
		}
		assertNoValues(t, out+errOut, values...)
		v := viper.New()
		v.SetConfigType(format)
		if err := v.ReadConfig(strings.NewReader(out)); err != nil {
			t.Fatalf("%s: %v\n%s", format, err, out)
		}
		if v.GetString("api.key") != "******" || v.GetInt("database.pool_size") != 10 || v.GetString("app.name") != "quickstart" {
			t.Errorf("%s: %v", format, v.AllSettings())
		}
	}

	// Environment variables, revealed.
	code, out, _ = cli(t, []string{apiKeyEnv}, append(args, "--format", "env", "--reveal")...)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"APP_APP_NAME=quickstart\n", "APP_DATABASE_POOL_SIZE=10\n", "APP_DATABASE_CONN=" + shellQuote(dbConn) + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// TestSeedErrorsAreUsageErrors: a bad seed is the user's mistake (exit 2), said in the
// seed's words with its line.
func TestSeedErrorsAreUsageErrors(t *testing.T) {
	t.Parallel()
	seed := writeFile(t, "seed.yaml", "vaults:\n  - name: myvault\n    secrets:\n      - name: db-conn\n        vlaue: x\n")
	code, out, errOut := cli(t, nil, "emulator", "--seed", seed)
	want := "viperkv: --seed " + seed + `: invalid seed: unknown field "vlaue" in secret "db-conn" (line 5)` + "\n"
	if code != 2 || !strings.HasPrefix(errOut, want) {
		t.Errorf("exit %d, want 2 and %q\n%s%s", code, want, out, errOut)
	}
	code, _, errOut = cli(t, nil, "emulator", "--seed", "/no/such/seed.yaml")
	if code != 2 || !strings.HasPrefix(errOut, "viperkv: --seed /no/such/seed.yaml: open /no/such/seed.yaml: no such file or directory\n") {
		t.Errorf("missing seed: exit %d\n%s", code, errOut)
	}
}

func TestResolveFailurePrintsNothing(t *testing.T) {
	t.Parallel()
	config := writeFile(t, "c.yaml", "a: \"@KeyVault(VaultName=myvault;SecretName=db-conn)\"\nb: \"@KeyVault(VaultName=myvault;SecretName=nope)\"\n")
	code, out, errOut := cli(t, nil, "resolve", "--config", config, "--reveal")
	if code != 1 || out != "" || !strings.Contains(errOut, "b (vault myvault.vault.azure.net, secret nope): SecretNotFound") {
		t.Errorf("exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	assertNoValues(t, out+errOut, seedValues(t)...)
}

// TestSentinelShownOnlyWhenRevealed audits every place the CLI turns values into text
// (check's table and JSON, resolve in each format, --verbose logs, error messages, run's
// child environment) with a sentinel full of characters that encodings escape: it shows,
// in any form, only with --reveal or --no-masking.
func TestSentinelShownOnlyWhenRevealed(t *testing.T) {
	t.Parallel()
	secret := hardSentinel(t)
	name := secretName(t)
	emu.Vault("myvault").SetSecret(name, secret)
	disabled := secretName(t) + "-off"
	emu.Vault("myvault").SetSecret(disabled, secret, kvtest.WithEnabled(false))
	ref := "@KeyVault(VaultName=myvault;SecretName=" + name + ")"
	config := writeFile(t, "c.yaml", fmt.Sprintf("db:\n  conn: %q\n  dsn: %q\n  hosts: [%[1]q, plain]\n", ref, "user=app password="+ref+" host=db"))
	failing := writeFile(t, "failing.yaml", fmt.Sprintf("good: %q\noff: \"@KeyVault(VaultName=myvault;SecretName=%s)\"\nmissing: \"@KeyVault(VaultName=myvault;SecretName=nope)\"\n", ref, disabled))
	// References in the environment, for the commands that read them (--environ, run).
	env := []string{"SECRET_ENV=" + ref, "SECRET_DSN=pw=" + ref + ";"}
	for _, tc := range []struct {
		args  []string
		code  int
		shows bool
	}{
		{[]string{"check", "--config", config}, 0, false},
		{[]string{"check", "--config", config, "--environ"}, 0, false},
		{[]string{"check", "--config", config, "--output", "json", "--environ", "--verbose"}, 0, false},
		{[]string{"check", "--config", failing, "--environ", "--verbose"}, 1, false},
		{[]string{"check", "--config", failing, "--output", "json"}, 1, false},
		{[]string{"resolve", "--config", config}, 0, false},
		{[]string{"resolve", "--config", config, "--format", "json", "--verbose"}, 0, false},
		{[]string{"resolve", "--config", config, "--format", "toml"}, 0, false},
		{[]string{"resolve", "--config", config, "--format", "env", "--env-prefix", "app"}, 0, false},
		{[]string{"resolve", "--config", failing, "--verbose"}, 1, false},
		{[]string{"resolve", "--config", failing, "--reveal"}, 1, false},
		{[]string{"resolve", "--config", config, "--reveal"}, 0, true},
		{[]string{"resolve", "--config", config, "--format", "json", "--reveal"}, 0, true},
		{[]string{"resolve", "--config", config, "--format", "toml", "--reveal"}, 0, true},
		{[]string{"resolve", "--config", config, "--format", "env", "--reveal"}, 0, true},
		{append([]string{"run", "--config", config, "--verbose"}, childCmd("print", "SECRET_ENV", "SECRET_DSN", "DB_CONN", "DB_DSN", "DB_HOSTS")...), 0, false},
		{append([]string{"run", "--config", failing, "--verbose"}, childCmd("print", "GOOD")...), exitNotResolved, false},
		{append([]string{"run", "--no-masking"}, childCmd("print", "SECRET_ENV")...), 0, true},
	} {
		what := "viperkv " + strings.Join(tc.args, " ")
		var environ []string
		if tc.args[0] == "run" || slices.Contains(tc.args, "--environ") {
			environ = append(env, childEnvVar)
		}
		code, out, errOut := cli(t, environ, tc.args...)
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s%s", what, code, tc.code, out, errOut)
			continue
		}
		if tc.shows {
			if !showsSentinel(out+errOut, secret) {
				t.Errorf("%s: does not show the secret\nstdout:\n%s\nstderr:\n%s", what, out, errOut)
			}
			continue
		}
		assertNoSentinel(t, what, out+errOut, secret)
	}
}

func TestVersionHelpCompletion(t *testing.T) {
	t.Parallel()
	if code, out, _ := cli(t, nil, "version"); code != 0 || !regexp.MustCompile(`^viperkv \S+ \(.*go1\.\d+.*\)\n$`).MatchString(out) {
		t.Errorf("version: exit %d: %q", code, out)
	}
	for _, cmd := range []string{"check", "resolve", "run", "emulator"} {
		if code, out, _ := cli(t, nil, cmd, "--help"); code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help: exit %d, no examples:\n%s", cmd, code, out)
		}
	}
	if code, out, _ := cli(t, nil, "completion", "bash"); code != 0 || !strings.Contains(out, "viperkv") {
		t.Errorf("completion bash: exit %d", code)
	}
	// Completion of flag values.
	if code, out, _ := cli(t, nil, "__complete", "check", "--output", ""); code != 0 || !strings.Contains(out, "table\njson\n") {
		t.Errorf("__complete check --output: exit %d:\n%s", code, out)
	}
	for _, cmd := range []string{"check", "resolve", "run"} {
		if code, out, _ := cli(t, nil, "__complete", cmd, "--credential", ""); code != 0 || !strings.Contains(out, "managed-identity\tthe machine's managed identity (default)\nazure-cli\t") ||
			!strings.Contains(out, "\ndefault\t") || !strings.Contains(out, "\nworkload-identity\t") {
			t.Errorf("__complete %s --credential: exit %d:\n%s", cmd, code, out)
		}
	}
}

// TestVaultSourceInTheCLI: --vault-source imports a vault's secrets as keys; check shows a
// row per key and one per source (listed, imported, skipped and why); resolve masks the
// values; a malformed --vault-source is a usage error.
func TestVaultSourceInTheCLI(t *testing.T) {
	t.Parallel()
	prefix := "cli" + strings.ReplaceAll(secretName(t), "-", "") + "--"
	secret := sentinel(t)
	kv := emu.Vault("myvault")
	kv.SetSecret(prefix+"Db--Password", secret)
	kv.SetSecret(prefix+"Off", "off", kvtest.WithEnabled(false))
	src := "myvault,prefix=" + prefix
	code, out, errOut := cli(t, nil, "check", "--vault-source", src)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if !regexp.MustCompile(`(?m)^db\.password\s+myvault\.vault\.azure\.net\s+\S+--Db--Password\s+[0-9a-f]{32}\s+Resolved`).MatchString(out) {
		t.Errorf("no resolved row for db.password:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^myvault\.vault\.azure\.net\s+\d+\s+1\s+1 disabled, \d+ filtered$`).MatchString(out) {
		t.Errorf("no vault source row:\n%s", out)
	}
	code, out, errOut = cli(t, nil, "resolve", "--vault-source", src, "--format", "env")
	if code != 0 || !strings.Contains(out, "DB_PASSWORD=") {
		t.Errorf("resolve: exit %d\n%s%s", code, out, errOut)
	}
	assertNoSentinel(t, "check and resolve with --vault-source", out+errOut, secret)
	if code, _, errOut := cli(t, nil, "check", "--vault-source", "myvault,suffix=x"); code != 2 || !strings.Contains(errOut, `unknown part "suffix=x"`) {
		t.Errorf("a malformed --vault-source: exit %d, %s", code, errOut)
	}
}
