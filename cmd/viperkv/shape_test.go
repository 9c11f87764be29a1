//go:build !windows

package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestShapedReferencesThroughTheCLI: Property, Format, Decode and Optional work in check,
// resolve and run as in the library: a property is its own variable, an expanded secret
// a variable per leaf (from a file or from a variable holding the reference), each leaf
// masked in the child's output; an optional reference left out is a warning row, and an
// App Configuration reference fails check with its own status.
func TestShapedReferencesThroughTheCLI(t *testing.T) {
	t.Parallel()
	password := sentinel(t)
	db, _ := newSecret(t, `{"host":"db.internal","port":5432,"password":"`+password+`"}`)
	key, _ := newSecret(t, "aGVsbG8td29ybGQ=") // "hello-world"
	ref := func(name, params string) string {
		return `"@KeyVault(VaultName=myvault;SecretName=` + name + params + `)"`
	}
	cfg := writeFile(t, "shaped.yaml", strings.Join([]string{
		"db: " + ref(db, ";Format=json"),
		"dbpass: " + ref(db, ";Property=/password"),
		"signing: " + ref(key, ";Decode=base64"),
		"legacy: " + ref("no-such-secret-"+db, ";Optional=true"),
	}, "\n")+"\n")

	code, out, errOut := cli(t, nil, "check", "--config", cfg)
	if code != 0 {
		t.Fatalf("check: exit %d, want 0 (an optional reference left out is a warning)\n%s%s", code, out, errOut)
	}
	if !regexp.MustCompile(`(?m)^legacy\s+myvault\.vault\.azure\.net\s+no-such-secret-\S+\s+-\s+SecretNotFound \(optional: left out\)`).MatchString(out) ||
		!strings.Contains(out, "1 optional reference(s) left out") || !strings.Contains(out, "3 of 4 references resolved.") {
		t.Errorf("check's table:\n%s", out)
	}
	code, out, _ = cli(t, nil, "check", "--config", cfg, "-o", "json")
	var doc struct {
		References []struct {
			Key      string `json:"key"`
			Optional bool   `json:"optional"`
			LeftOut  bool   `json:"left_out"`
		} `json:"references"`
		Resolved, Failed int
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 || doc.Failed != 0 || doc.Resolved != 3 {
		t.Fatalf("check -o json: exit %d, %v, %+v\n%s", code, err, doc, out)
	}
	for _, r := range doc.References {
		if (r.Key == "legacy") != (r.Optional && r.LeftOut) {
			t.Errorf("json row %+v", r)
		}
	}

	code, out, errOut = cli(t, nil, "resolve", "--config", cfg, "--format", "env", "--reveal")
	if code != 0 {
		t.Fatalf("resolve: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"DB_HOST=db.internal", "DB_PORT=5432", "DB_PASSWORD=" + password, "DBPASS=" + password, "SIGNING=hello-world"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(out) {
			t.Errorf("resolve --format env lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "LEGACY") {
		t.Errorf("the optional key left out was exported:\n%s", out)
	}
	code, out, errOut = cli(t, nil, "resolve", "--config", cfg)
	if code != 0 || strings.Contains(out+errOut, password) || strings.Contains(out, "hello-world") {
		t.Errorf("resolve without --reveal: exit %d, shows a value\n%s%s", code, out, errOut)
	}

	// run: from the file, and from a variable holding the reference.
	env := []string{childEnvVar, "CONN=@KeyVault(VaultName=myvault;SecretName=" + db + ";Format=json)"}
	code, out, errOut = cli(t, env, append([]string{"run", "--config", cfg}, childCmd("print", "DB_HOST", "DB_PASSWORD", "DBPASS", "CONN_HOST", "CONN_PASSWORD", "SIGNING")...)...)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, out, errOut)
	}
	// Every leaf of a secret is secret: the host too.
	want := "DB_HOST=<concealed by viperkv>\nDB_PASSWORD=<concealed by viperkv>\nDBPASS=<concealed by viperkv>\nCONN_HOST=<concealed by viperkv>\n" +
		"CONN_PASSWORD=<concealed by viperkv>\nSIGNING=<concealed by viperkv>\n"
	if out != want {
		t.Errorf("run's child printed:\n%s\nwant:\n%s", out, want)
	}
	assertNoValues(t, out+errOut, password, "hello-world")

	bad := writeFile(t, "appconfig.yaml", "flag: \"@Microsoft.AppConfiguration(Endpoint=https://c.azconfig.io; Key=flag)\"\n")
	code, out, errOut = cli(t, nil, "check", "--config", bad)
	if code != 1 || !strings.Contains(out, "AppConfigurationNotSupported") {
		t.Errorf("check of an App Configuration reference: exit %d\n%s%s", code, out, errOut)
	}
}
