package viperkv

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

const (
	testVersion      = "0123456789abcdef0123456789abcdef"
	testVersionUpper = "0123456789ABCDEF0123456789abcdef"
)

// renderNames renders refs as <name>, to show where each one landed.
func renderNames(r Reference) (string, bool) { return "<" + r.Name + ">", true }

func TestParseTemplateValid(t *testing.T) {
	pub := newParseConfig(CloudPublic)
	long := strings.Repeat("a", 127)
	tests := []struct {
		name string
		in   string
		pc   parseConfig
		want []Reference
		out  string // render with renderNames
	}{
		{name: "SecretUri trailing slash", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)",
			want: []Reference{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "Microsoft prefix", in: "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn)",
			want: []Reference{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "versioned, uppercase hex", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/" + testVersionUpper + ")",
			want: []Reference{{"myvault.vault.azure.net", "db-conn", testVersion}}, out: "<db-conn>"},
		{name: "versioned trailing slash", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/" + testVersion + "/)",
			want: []Reference{{"myvault.vault.azure.net", "db-conn", testVersion}}, out: "<db-conn>"},
		{name: "VaultName form", in: "@Microsoft.KeyVault(VaultName=myvault;SecretName=db-conn)",
			want: []Reference{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "VaultName form versioned, vault lowercased", in: "@KeyVault(VaultName=MyVault;SecretName=db-conn;SecretVersion=" + testVersionUpper + ")",
			want: []Reference{{"myvault.vault.azure.net", "db-conn", testVersion}}, out: "<db-conn>"},
		{name: "blanks and trailing ;", in: "@KeyVault(  VaultName = myvault ;\tSecretName=db-conn ; )",
			want: []Reference{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "newlines", in: "@KeyVault(\n  SecretUri = https://myvault.vault.azure.net/secrets/x;\r\n)",
			want: []Reference{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		{name: "case-insensitive everything", in: "@keyvault(SECRETURI=HTTPS://MYVAULT.VAULT.AZURE.NET/SECRETS/DB-CONN)",
			want: []Reference{{"myvault.vault.azure.net", "DB-CONN", ""}}, out: "<DB-CONN>"},
		{name: "port 443", in: "@MICROSOFT.KEYVAULT(secreturi=https://myvault.vault.azure.net:443/secrets/x)",
			want: []Reference{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		{name: "param order", in: "@KeyVault(SecretVersion=" + testVersion + ";SecretName=x;VaultName=abc)",
			want: []Reference{{"abc.vault.azure.net", "x", testVersion}}, out: "<x>"},
		{name: "limits", in: "@KeyVault(VaultName=a23456789012345678901234;SecretName=" + long + ")",
			want: []Reference{{"a23456789012345678901234.vault.azure.net", long, ""}}, out: "<" + long + ">"},
		{name: "embedded", in: "Server=db;Password=@KeyVault(VaultName=myvault;SecretName=db-pass);Timeout=30",
			want: []Reference{{"myvault.vault.azure.net", "db-pass", ""}}, out: "Server=db;Password=<db-pass>;Timeout=30"},
		{name: "several", in: "postgres://@KeyVault(VaultName=a1b;SecretName=user):@KeyVault(VaultName=a1b;SecretName=pass)@db/x",
			want: []Reference{{"a1b.vault.azure.net", "user", ""}, {"a1b.vault.azure.net", "pass", ""}},
			out:  "postgres://<user>:<pass>@db/x"},
		{name: "adjacent", in: "@KeyVault(VaultName=abc;SecretName=a)@KeyVault(VaultName=abc;SecretName=a)",
			want: []Reference{{"abc.vault.azure.net", "a", ""}, {"abc.vault.azure.net", "a", ""}}, out: "<a><a>"},
		{name: "escape only", in: "@@KeyVault(x)", out: "@KeyVault(x)"},
		{name: "escape Microsoft prefix", in: "text @@microsoft.keyvault(anything", out: "text @microsoft.keyvault(anything"},
		{name: "escape and ref", in: "a @@KeyVault(SecretName=x) b @KeyVault(VaultName=myvault;SecretName=y)",
			want: []Reference{{"myvault.vault.azure.net", "y", ""}}, out: "a @KeyVault(SecretName=x) b <y>"},
		{name: "triple @", in: "@@@KeyVault(x)", out: "@@KeyVault(x)"},
		{name: "other @@ left alone", in: "a@@b @@ c@example.com", out: "a@@b @@ c@example.com"},
		{name: "prefix without (", in: "see @KeyVault docs, @Microsoft.KeyVault ( too", out: "see @KeyVault docs, @Microsoft.KeyVault ( too"},
		{name: "Kelvin sign is not K", in: "@\u212AeyVault(SecretUri=http://evil.test/x)", out: "@\u212AeyVault(SecretUri=http://evil.test/x)"},
		{name: "ref after @", in: "me@KeyVault(VaultName=abc;SecretName=x)",
			want: []Reference{{"abc.vault.azure.net", "x", ""}}, out: "me<x>"},
		{name: "uppercase secrets segment", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/Secrets/x)",
			want: []Reference{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		// A certificate is read through its secret: the same name and version.
		{name: "certificate URI", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/certificates/web-tls/)",
			want: []Reference{{"myvault.vault.azure.net", "web-tls", ""}}, out: "<web-tls>"},
		{name: "certificate URI with version", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/Certificates/web-tls/" + testVersion + ")",
			want: []Reference{{"myvault.vault.azure.net", "web-tls", testVersion}}, out: "<web-tls>"},
		{name: "China VaultName", in: "@KeyVault(VaultName=myvault;SecretName=x)", pc: newParseConfig(CloudChina),
			want: []Reference{{"myvault.vault.azure.cn", "x", ""}}, out: "<x>"},
		{name: "China SecretUri", in: "@KeyVault(SecretUri=https://myvault.vault.azure.cn/secrets/x/)", pc: newParseConfig(CloudChina),
			want: []Reference{{"myvault.vault.azure.cn", "x", ""}}, out: "<x>"},
		{name: "USGov", in: "@KeyVault(SecretUri=https://myvault.vault.usgovcloudapi.net/secrets/x)", pc: newParseConfig(CloudUSGovernment),
			want: []Reference{{"myvault.vault.usgovcloudapi.net", "x", ""}}, out: "<x>"},
		{name: "USGov VaultName", in: "@KeyVault(VaultName=myvault;SecretName=x)", pc: newParseConfig(CloudUSGovernment),
			want: []Reference{{"myvault.vault.usgovcloudapi.net", "x", ""}}, out: "<x>"},
		{name: "allowed host", in: "@KeyVault(SecretUri=https://KV.Internal.Example/secrets/x)", pc: newParseConfig(CloudPublic, " kv.internal.EXAMPLE "),
			want: []Reference{{"kv.internal.example", "x", ""}}, out: "<x>"},
		{name: "allowed host:port", in: "@KeyVault(SecretUri=https://127.0.0.1:8443/secrets/x)", pc: newParseConfig(CloudPublic, "127.0.0.1:8443"),
			want: []Reference{{"127.0.0.1:8443", "x", ""}}, out: "<x>"},
		{name: "zero parseConfig is public", in: "@KeyVault(VaultName=myvault;SecretName=x)", pc: parseConfig{},
			want: []Reference{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		{name: "no @", in: "plain value", out: "plain value"},
		{name: "empty", in: "", out: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := tt.pc
			if pc.cloud == "" && tt.name != "zero parseConfig is public" {
				pc = pub
			}
			tmpl, err := parseTemplate("k", tt.in, pc)
			if err != nil {
				t.Fatalf("parseTemplate: %v", err)
			}
			got := tmpl.refs()
			if len(got) != len(tt.want) {
				t.Fatalf("refs = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("ref %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			if tmpl.hasRefs() != (len(tt.want) > 0) {
				t.Errorf("hasRefs = %v", tmpl.hasRefs())
			}
			if tmpl.needsRender() != (tt.out != tt.in || len(tt.want) > 0) {
				t.Errorf("needsRender = %v", tmpl.needsRender())
			}
			out, ok := tmpl.render(renderNames)
			if !ok || out != tt.out {
				t.Errorf("render = %q, %v; want %q", out, ok, tt.out)
			}
		})
	}
}

func TestParseTemplateMalformed(t *testing.T) {
	const (
		uri    = "https://myvault.vault.azure.net/secrets/"
		syntax = StatusInvalidSyntax
		host   = StatusHostNotAllowed
	)
	ref := func(body string) string { return "@KeyVault(" + body + ")" }
	sref := func(u string) string { return ref("SecretUri=" + u) }
	tests := []struct {
		in     string
		pc     parseConfig
		status Status
		reason string
	}{
		// Grammar.
		{in: "@KeyVault(SecretUri=" + uri + "x", status: syntax, reason: "missing closing ')' after @KeyVault("},
		{in: "@Microsoft.KeyVault(VaultName=abc;SecretName=x", status: syntax, reason: "missing closing ')' after @Microsoft.KeyVault("},
		{in: ref(""), status: syntax, reason: "empty reference (want SecretUri=https://<vault>.vault.azure.net/secrets/<name>"},
		{in: ref(" ; "), status: syntax, reason: "empty reference"},
		{in: ref("SecretUrl=" + uri + "x"), status: syntax, reason: `unknown parameter "SecretUrl" (want SecretUri, VaultName, SecretName, SecretVersion, Property, Format, Decode, Optional)`},
		// viperkv's own parameters: only in @KeyVault(...), each checked.
		{in: "@Microsoft.KeyVault(SecretUri=" + uri + ";Property=/a)", status: syntax, reason: "Property is not a parameter of App Service's @Microsoft.KeyVault(...): write @KeyVault(...)"},
		{in: "@Microsoft.KeyVault(VaultName=myvault;SecretName=s;Optional=true)", status: syntax, reason: "Optional is not a parameter of App Service's"},
		{in: "@Microsoft.KeyVault(SecretUrl=x)", status: syntax, reason: `unknown parameter "SecretUrl" (want SecretUri, VaultName, SecretName, SecretVersion)`},
		{in: ref("SecretUri=" + uri + ";Property=a.b"), status: syntax, reason: `Property "a.b" is not a JSON Pointer (want /name/name, such as /db/password)`},
		{in: ref("SecretUri=" + uri + ";Property=/a~2"), status: syntax, reason: "'~' not followed by 0 or 1"},
		{in: ref("SecretUri=" + uri + ";Property=/a;Property=/b"), status: syntax, reason: "duplicate parameter Property"},
		{in: ref("SecretUri=" + uri + ";Format=xml"), status: syntax, reason: `Format "xml" is not json or yaml`},
		{in: ref("SecretUri=" + uri + ";Decode=base32"), status: syntax, reason: `Decode "base32" is not base64, base64url or hex`},
		{in: ref("SecretUri=" + uri + ";Optional=yes"), status: syntax, reason: `Optional "yes" is not true or false`},
		{in: ref("SecretUri=" + uri + ";Format=json;Decode=base64"), status: syntax, reason: "Decode needs a Property"},
		{in: ref("SecretUri=" + uri + ";Optional="), status: syntax, reason: "parameter Optional has an empty value"},
		{in: "key=" + ref("SecretUri="+uri+"x;Decode=hex"), status: syntax, reason: "must be the whole value"},
		{in: ref("SecretUri="+uri+"x;Format=yaml") + "!", status: syntax, reason: "must be the whole value"},
		{in: ref("VaultName=abc;SecretName=a;secretname=b"), status: syntax, reason: "duplicate parameter SecretName"},
		{in: ref("VaultName=abc;SecretName= "), status: syntax, reason: "parameter SecretName has an empty value"},
		{in: ref("VaultName=abc"), status: syntax, reason: "missing SecretName"},
		{in: ref("SecretName=x;SecretVersion=" + testVersion), status: syntax, reason: "missing VaultName"},
		{in: ref("SecretUri=" + uri + "x;VaultName=abc"), status: syntax, reason: "SecretUri cannot be combined with VaultName"},
		{in: ref("SecretUri=" + uri + "x;SecretVersion=" + testVersion), status: syntax, reason: "SecretUri cannot be combined with SecretVersion"},
		{in: ref("VaultName=abc;;SecretName=x"), status: syntax, reason: "empty parameter"},
		{in: ref(";VaultName=abc;SecretName=x"), status: syntax, reason: "empty parameter"},
		{in: ref("VaultName=abc;SecretName=x;;"), status: syntax, reason: "empty parameter"},
		{in: ref("VaultName"), status: syntax, reason: `parameter "VaultName" has no '='`},
		{in: ref("=abc"), status: syntax, reason: "parameter name missing"},
		{in: ref("VaultName=a(b;SecretName=x"), status: syntax, reason: "unexpected '('"},
		{in: "@KeyVault(VaultName=abc;SecretName=a @KeyVault(VaultName=abc;SecretName=b)", status: syntax, reason: "unexpected '('"},
		// Names and versions.
		{in: ref("VaultName=abc;SecretName=db_conn"), status: syntax, reason: `secret name "db_conn" has '_' (allowed: letters, digits, '-')`},
		{in: ref("VaultName=abc;SecretName=" + strings.Repeat("a", 128)), status: syntax, reason: "is 128 characters (max 127)"},
		{in: sref(uri + "d\u00e9"), status: syntax, reason: `has 'é'`},
		{in: ref("VaultName=abc;SecretName=x;SecretVersion=abc"), status: syntax, reason: `secret version "abc" is 3 characters (want 32 hex digits)`},
		{in: ref("VaultName=abc;SecretName=x;SecretVersion=g123456789abcdef0123456789abcdef"), status: syntax, reason: "has 'g' (want 32 hex digits)"},
		{in: sref(uri + "x/" + testVersion[:31]), status: syntax, reason: "is 31 characters (want 32 hex digits)"},
		{in: ref("VaultName=ab;SecretName=x"), status: syntax, reason: `vault name "ab" is 2 characters (want 3-24)`},
		{in: ref("VaultName=a234567890123456789012345;SecretName=x"), status: syntax, reason: "is 25 characters (want 3-24)"},
		{in: ref("VaultName=1vault;SecretName=x"), status: syntax, reason: "must start with a letter"},
		{in: ref("VaultName=vault-;SecretName=x"), status: syntax, reason: "must end with a letter or digit"},
		{in: ref("VaultName=my--vault;SecretName=x"), status: syntax, reason: `has "--"`},
		{in: ref("VaultName=myvault.vault.azure.net;SecretName=x"), status: syntax, reason: "has '.' (allowed: letters, digits, '-'); VaultName takes the bare name"},
		// SecretUri shape.
		{in: sref("myvault.vault.azure.net/secrets/x"), status: syntax, reason: "SecretUri is not an absolute URL"},
		{in: sref("//myvault.vault.azure.net/secrets/x"), status: syntax, reason: "not an absolute URL"},
		{in: sref("https:///secrets/x"), status: syntax, reason: "SecretUri has no host"},
		{in: sref("https://:443/secrets/x"), status: syntax, reason: "SecretUri has no host"},
		{in: sref(uri + "x?api-version=7.4"), status: syntax, reason: "SecretUri has a query"},
		{in: sref("https://myvault.vault.azure.net?x=1"), status: syntax, reason: "SecretUri has a query"},
		{in: sref(uri + "x#frag"), status: syntax, reason: "SecretUri has a fragment"},
		{in: sref(uri + "../keys/x"), status: syntax, reason: "dot segment ('..')"},
		{in: sref(uri + "./x"), status: syntax, reason: "dot segment ('.')"},
		{in: sref(uri + "/x"), status: syntax, reason: "empty segment ('//')"},
		{in: sref(uri + "x//"), status: syntax, reason: "empty segment ('//')"},
		{in: sref(uri + "db%2Dconn"), status: syntax, reason: "percent-escape"},
		{in: sref("https://myvault.vault.azure.net\\secrets\\x"), status: syntax, reason: "backslash"},
		{in: sref(uri + "x/" + testVersion + "/extra"), status: syntax, reason: "extra segments"},
		{in: sref("https://myvault.vault.azure.net/keys/x"), status: syntax, reason: "starts with /keys/, want /secrets/<name>[/<version>] (only secrets and certificates can be referenced)"},
		{in: sref(uri), status: syntax, reason: "SecretUri has no secret name"},
		{in: sref("https://myvault.vault.azure.net"), status: syntax, reason: "SecretUri has no path"},
		{in: sref("https://myvault.vault.azure.net:/secrets/x"), status: syntax, reason: "empty port"},
		{in: sref("https://myvault.vault.azure.net:https/secrets/x"), status: syntax, reason: `port "https" is not a number`},
		// Destinations no token may go to.
		{in: sref("http://myvault.vault.azure.net/secrets/x"), status: host, reason: `scheme "http" is refused`},
		{in: sref("HTTP://myvault.vault.azure.net/secrets/x"), status: host, reason: `scheme "HTTP" is refused`},
		{in: sref("ftp://myvault.vault.azure.net/secrets/x"), status: host, reason: `scheme "ftp" is refused`},
		{in: sref("https://user:pa55w0rd@myvault.vault.azure.net/secrets/x"), status: host, reason: "user info"},
		{in: sref("https://myvault.vault.azure.net@evil.test/secrets/x"), status: host, reason: "user info"},
		{in: sref("https://myvault.vault.azure.net:8443/secrets/x"), status: host, reason: `port "8443" is refused`},
		{in: sref("https://myvault.vault.azure.net:0443/secrets/x"), status: host, reason: `port "0443" is refused`},
		{in: sref("https://127.0.0.1/secrets/x"), status: host, reason: `host "127.0.0.1" is an IP address`},
		{in: sref("https://[::1]/secrets/x"), status: host, reason: `host "[::1]" is an IP address`},
		{in: sref("https://[::ffff:127.0.0.1]:443/secrets/x"), status: host, reason: "is an IP address"},
		{in: sref("https://2130706433/secrets/x"), status: host, reason: "is an IP address"},
		{in: sref("https://0x7f000001/secrets/x"), status: host, reason: "is an IP address"},
		{in: sref("https://127.1/secrets/x"), status: host, reason: "is an IP address"},
		{in: sref("https://evil.test/secrets/x"), status: host, reason: `host "evil.test" is not a Key Vault host of cloud AzurePublic (*.vault.azure.net)`},
		{in: sref("https://myvault.vault.azure.net.evil.test/secrets/x"), status: host, reason: "is not a Key Vault host of cloud AzurePublic"},
		{in: sref("https://evilvault.azure.net/secrets/x"), status: host, reason: "is not a Key Vault host"},
		{in: sref("https://vault.azure.net/secrets/x"), status: host, reason: "is not a Key Vault host"},
		{in: sref("https://a.myvault.vault.azure.net/secrets/x"), status: host, reason: "is not a Key Vault host"},
		{in: sref("https://myvault.vault.azure.net./secrets/x"), status: host, reason: "ends with '.'"},
		{in: sref("https://evil.test\\@myvault.vault.azure.net/secrets/x"), status: host, reason: `host "evil.test" is not`},
		{in: sref("https://myv\u0430ult.vault.azure.net/secrets/x"), status: host, reason: "has 'а'"},
		{in: sref("https://xn--myvult-2fg.vault.azure.net/secrets/x"), status: host, reason: `not a valid vault host: vault name "xn--myvult-2fg" has "--"`},
		{in: sref("https://ab.vault.azure.net/secrets/x"), status: host, reason: "is 2 characters"},
		{in: sref("https://my_vault.vault.azure.net/secrets/x"), status: host, reason: "has '_'"},
		{in: sref("https://myvault.vault.azure.net:443:443/secrets/x"), status: host, reason: "has ':'"},
		{in: sref("https://myvault.vault.azure.cn/secrets/x"), status: host, reason: "but of cloud AzureChina; select that cloud"},
		{in: sref("https://myvault.vault.azure.net/secrets/x"), pc: newParseConfig(CloudChina), status: host, reason: "not a Key Vault host of cloud AzureChina (*.vault.azure.cn) but of cloud AzurePublic"},
		{in: sref("https://kv.internal.example:8443/secrets/x"), pc: newParseConfig(CloudPublic, "kv.internal.example"), status: host, reason: `port "8443" is refused`},
		{in: ref("VaultName=abc;SecretName=x"), pc: newParseConfig("Mars"), status: host, reason: `cloud "Mars" has no known Key Vault suffix`},
		{in: sref("https://evil.test/secrets/x/" + testVersion + "/../../y"), status: host, reason: "evil.test"},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d malformed cases", len(tests))
	}
	const secretText = "Password=hunter2;Extra=" // other text in the same value must never show up
	for _, tt := range tests {
		for _, in := range []string{tt.in, secretText + tt.in} {
			t.Run(in, func(t *testing.T) {
				pc := tt.pc
				if pc.cloud == "" {
					pc = newParseConfig(CloudPublic)
				}
				tmpl, err := parseTemplate("db.conn", in, pc)
				if err == nil {
					t.Fatalf("parsed as %v", tmpl.refs())
				}
				var re *ReferenceError
				if !errors.As(err, &re) {
					t.Fatalf("error %T is not a *ReferenceError: %v", err, err)
				}
				if re.Key != "db.conn" || re.Status != tt.status || !strings.Contains(re.Reason, tt.reason) {
					t.Errorf("got Key %q, Status %s, Reason %q\nwant Key \"db.conn\", Status %s, Reason containing %q", re.Key, re.Status, re.Reason, tt.status, tt.reason)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, `viperkv: config key "db.conn": `+string(tt.status)+": ") {
					t.Errorf("Error() = %q", msg)
				}
				if strings.Contains(msg, "hunter2") || strings.Contains(msg, "pa55w0rd") || (len(in) > 40 && strings.Contains(msg, in)) {
					t.Errorf("Error() leaks config text: %q", msg)
				}
			})
		}
	}
}

// TestRenderDoesNotRescan proves that a secret value that looks like a reference (or an
// escape) is copied as is: no chains, no injection.
func TestRenderDoesNotRescan(t *testing.T) {
	in := "a=@KeyVault(VaultName=abc;SecretName=x);b=@KeyVault(VaultName=abc;SecretName=y)"
	tmpl, err := parseTemplate("k", in, newParseConfig(CloudPublic))
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"x": "@KeyVault(VaultName=abc;SecretName=y)",
		"y": "@@KeyVault(z) @KeyVault(",
	}
	calls := 0
	lookup := func(r Reference) (string, bool) {
		calls++
		v, ok := values[r.Name]
		return v, ok
	}
	got, ok := tmpl.render(lookup)
	want := "a=" + values["x"] + ";b=" + values["y"]
	if !ok || got != want || calls != 2 {
		t.Errorf("render = %q, %v after %d lookups; want %q after 2", got, ok, calls, want)
	}

	whole, err := parseTemplate("k", "@KeyVault(VaultName=abc;SecretName=x)", newParseConfig(CloudPublic))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := whole.render(lookup); !ok || got != values["x"] {
		t.Errorf("whole-value render = %q, %v", got, ok)
	}

	delete(values, "y")
	if got, ok := tmpl.render(lookup); ok || got != "" {
		t.Errorf("render with a missing secret = %q, %v; want \"\", false", got, ok)
	}
}

func TestParseTemplateAllocs(t *testing.T) {
	pc := newParseConfig(CloudPublic)
	for in, max := range map[string]float64{
		"a plain value without references":  0,
		"alice@example.com, @KeyVault docs": 0,
		"Password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-pass/);Timeout=30": 2,
	} {
		n := testing.AllocsPerRun(100, func() {
			if _, err := parseTemplate("k", in, pc); err != nil {
				t.Fatal(err)
			}
		})
		if n > max {
			t.Errorf("parseTemplate(%q): %v allocations, want at most %v", in, n, max)
		}
	}
}

func TestParseReference(t *testing.T) {
	r, err := ParseReference("  @Microsoft.KeyVault(VaultName=MyVault;SecretName=Db-Conn)\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Reference{Vault: "myvault.vault.azure.net", Name: "Db-Conn"}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	if got := r.VaultURL(); got != "https://myvault.vault.azure.net" {
		t.Errorf("VaultURL = %q", got)
	}
	if got := r.ID(); got != "https://myvault.vault.azure.net/secrets/Db-Conn" {
		t.Errorf("ID = %q", got)
	}
	if got := r.key(); got.Name != "db-conn" || got.Vault != r.Vault {
		t.Errorf("key = %+v", got)
	}
	r.Version = testVersion
	if got := r.String(); got != "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/Db-Conn/"+testVersion+")" {
		t.Errorf("String = %q", got)
	}
	if back, err := ParseReference(r.String()); err != nil || back != r {
		t.Errorf("ParseReference(String()) = %+v, %v", back, err)
	}

	r, err = ParseReference("@KeyVault(VaultName=myvault;SecretName=x)", WithCloud(CloudChina))
	if err != nil || r.Vault != "myvault.vault.azure.cn" {
		t.Errorf("China: %+v, %v", r, err)
	}
	r, err = ParseReference("@KeyVault(SecretUri=https://KV.example.test/secrets/x)", WithAllowedHosts("kv.example.test"))
	if err != nil || r.Vault != "kv.example.test" {
		t.Errorf("allowed host: %+v, %v", r, err)
	}

	for _, in := range []string{
		"",
		"x=@KeyVault(VaultName=myvault;SecretName=x)",
		"@KeyVault(VaultName=myvault;SecretName=x)@KeyVault(VaultName=myvault;SecretName=x)",
		"@@KeyVault(VaultName=myvault;SecretName=x)",
		"@KeyVault(SecretUri=https://evil.test/secrets/x)",
	} {
		_, err := ParseReference(in)
		var re *ReferenceError
		if !errors.As(err, &re) || re.Key != "" || !strings.HasPrefix(err.Error(), "viperkv: "+string(re.Status)+": ") {
			t.Errorf("ParseReference(%q) error = %v", in, err)
		}
	}
}

func TestParseCloud(t *testing.T) {
	for in, want := range map[string]Cloud{
		"AzurePublic": CloudPublic, "azurecloud": CloudPublic, "PUBLIC": CloudPublic,
		"AzureChina": CloudChina, "AzureChinaCloud": CloudChina, " china ": CloudChina,
		"AzureUSGovernment": CloudUSGovernment, "usgovernment": CloudUSGovernment, "USGov": CloudUSGovernment,
	} {
		got, err := ParseCloud(in)
		if err != nil || got != want {
			t.Errorf("ParseCloud(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "mars", "AzureGermany"} {
		if _, err := ParseCloud(in); err == nil {
			t.Errorf("ParseCloud(%q) succeeded", in)
		}
	}
	for c, want := range map[Cloud][2]string{
		CloudPublic:       {"vault.azure.net", "https://vault.azure.net"},
		CloudChina:        {"vault.azure.cn", "https://vault.azure.cn"},
		CloudUSGovernment: {"vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"},
		"Mars":            {"", ""},
	} {
		if got := [2]string{c.VaultSuffix(), c.KeyVaultResource()}; got != want {
			t.Errorf("%s: suffix, resource = %q, want %q", c, got, want)
		}
	}
}

// Oracles for the fuzz test, written independently of the parser.
var (
	fuzzName    = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	fuzzVersion = regexp.MustCompile(`^[0-9a-f]{32}$`)
	fuzzHost    = regexp.MustCompile(`^[a-z][a-z0-9-]{1,22}[a-z0-9]\.vault\.azure\.net$`)
)

const fuzzAllowed = "kv.example.test"

// fuzzIsPrefix reports a reference prefix at s, ASCII case-insensitively.
func fuzzIsPrefix(s string) bool {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return strings.HasPrefix(string(b), "@keyvault(") || strings.HasPrefix(string(b), "@microsoft.keyvault(")
}

// fuzzUnescape applies the "@@" rule: "@@" right before a prefix becomes "@".
func fuzzUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '@' && i+1 < len(s) && s[i+1] == '@' && fuzzIsPrefix(s[i+1:]) {
			b.WriteByte('@')
			i++
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fuzzEscape is fuzzUnescape's inverse for literal text.
func fuzzEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if fuzzIsPrefix(s[i:]) {
			b.WriteByte('@')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)",
		"Server=db;Password=@Microsoft.KeyVault(VaultName=myvault;SecretName=db-pass;SecretVersion=" + testVersion + ");",
		"@@KeyVault(x) @KeyVault(SecretUri=https://kv.example.test/secrets/a/)",
		"@KeyVault(SecretUri=https://myvault.vault.azure.net@evil.test/secrets/x)",
		"dsn=@KeyVault(VaultName=myvault;SecretName=db;Property=/a~1b/0;Optional=true)",
		"@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db/;Format=YAML)",
		"@KeyVault(VaultName=myvault;SecretName=k;Property=/key;Decode=base64url)",
		"@Microsoft.KeyVault(VaultName=myvault;SecretName=k;Decode=hex)",
		"x @Microsoft.AppConfiguration(Endpoint=https://c.azconfig.io; Key=k) @KeyVault(VaultName=v;SecretName=s)",
	} {
		f.Add(s)
	}
	pc := newParseConfig(CloudPublic, fuzzAllowed)
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := parseTemplate("fuzz.key", s, pc)
		if err != nil {
			var re *ReferenceError
			if !errors.As(err, &re) {
				t.Fatalf("error %T is not a *ReferenceError: %v", err, err)
			}
			if re.Key != "fuzz.key" || re.Reason == "" || (re.Status != StatusInvalidSyntax && re.Status != StatusHostNotAllowed &&
				re.Status != StatusAppConfigurationNotSupported) {
				t.Fatalf("bad error %+v", re)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, `viperkv: config key "fuzz.key": `) {
				t.Fatalf("error does not name the key: %q", msg)
			}
			if len(s) > 2*64+8 && strings.Contains(msg, s) {
				t.Fatalf("error echoes the whole value: %q", msg)
			}
			return
		}
		prevLit := false
		for _, p := range tmpl.parts {
			if p.ref == nil {
				if p.lit == "" || prevLit {
					t.Fatalf("empty or adjacent literal parts: %+v", tmpl.parts)
				}
				prevLit = true
				continue
			}
			prevLit = false
			r := *p.ref
			if !(fuzzHost.MatchString(r.Vault) && !strings.Contains(r.Vault, "--")) && r.Vault != fuzzAllowed {
				t.Fatalf("vault host %q accepted", r.Vault)
			}
			if !fuzzName.MatchString(r.Name) {
				t.Fatalf("secret name %q accepted", r.Name)
			}
			if r.Version != "" && !fuzzVersion.MatchString(r.Version) {
				t.Fatalf("version %q accepted", r.Version)
			}
			if sh := p.shape; !sh.plain() || sh.optional {
				if hasPrefixFold(p.text, "@microsoft.keyvault(") {
					t.Fatalf("App Service's form took viperkv's parameters: %q", p.text)
				}
				if sh.wholeValue() && len(tmpl.parts) != 1 {
					t.Fatalf("a reference with Decode or Format alone inside text: %q", s)
				}
				if (sh.pointer != nil) != strings.HasPrefix(sh.property, "/") || (sh.pointer != nil && sh.format == "") {
					t.Fatalf("Property %q parsed as %q (format %q)", sh.property, sh.pointer, sh.format)
				}
			}
		}
		if !tmpl.hasRefs() {
			got, ok := tmpl.render(func(Reference) (string, bool) {
				t.Fatal("lookup called for a template without references")
				return "", false
			})
			if want := fuzzUnescape(s); !ok || got != want {
				t.Fatalf("render = %q, want %q", got, want)
			}
			if tmpl.needsRender() != (got != s) {
				t.Fatalf("needsRender = %v for %q", tmpl.needsRender(), s)
			}
			return
		}
		// Canonical round trip: escaped literals and canonical references parse back to
		// the same parts.
		var canon strings.Builder
		for _, p := range tmpl.parts {
			if p.ref != nil {
				canon.WriteString(p.ref.String())
			} else {
				canon.WriteString(fuzzEscape(p.lit))
			}
		}
		back, err := parseTemplate("fuzz.key", canon.String(), pc)
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", canon.String(), err)
		}
		if len(back.parts) != len(tmpl.parts) {
			t.Fatalf("canonical form %q parses to %d parts, want %d", canon.String(), len(back.parts), len(tmpl.parts))
		}
		for i, p := range tmpl.parts {
			q := back.parts[i]
			if p.lit != q.lit || (p.ref == nil) != (q.ref == nil) || (p.ref != nil && *p.ref != *q.ref) {
				t.Fatalf("canonical form %q: part %d = %+v, want %+v", canon.String(), i, q, p)
			}
		}
	})
}

func BenchmarkParseTemplateNoRef(b *testing.B) {
	pc := newParseConfig(CloudPublic)
	for name, in := range map[string]string{
		"plain": "postgres://db.internal:5432/orders?sslmode=require",
		"at":    "postgres://app@db.internal:5432/orders?sslmode=require",
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parseTemplate("db.url", in, pc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseTemplateEmbedded(b *testing.B) {
	pc := newParseConfig(CloudPublic)
	in := "Server=db;User=app;Password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-pass/);Timeout=30"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseTemplate("db.conn", in, pc); err != nil {
			b.Fatal(err)
		}
	}
}
