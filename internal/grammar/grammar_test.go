package grammar

import (
	"strings"
	"testing"
)

const (
	testVersion      = "0123456789abcdef0123456789abcdef"
	testVersionUpper = "0123456789ABCDEF0123456789abcdef"
)

// renderNames renders refs as <name>, to show where each one landed.
func renderNames(r Ref) (string, bool) { return "<" + r.Name + ">", true }

func TestParseValid(t *testing.T) {
	pub := NewConfig("AzurePublic")
	long := strings.Repeat("a", 127)
	tests := []struct {
		name string
		in   string
		pc   Config
		want []Ref
		out  string // render with renderNames
	}{
		{name: "SecretUri trailing slash", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)",
			want: []Ref{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "Microsoft prefix", in: "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn)",
			want: []Ref{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "versioned, uppercase hex", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/" + testVersionUpper + ")",
			want: []Ref{{"myvault.vault.azure.net", "db-conn", testVersion}}, out: "<db-conn>"},
		{name: "versioned trailing slash", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/" + testVersion + "/)",
			want: []Ref{{"myvault.vault.azure.net", "db-conn", testVersion}}, out: "<db-conn>"},
		{name: "VaultName form", in: "@Microsoft.KeyVault(VaultName=myvault;SecretName=db-conn)",
			want: []Ref{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "VaultName form versioned, vault lowercased", in: "@KeyVault(VaultName=MyVault;SecretName=db-conn;SecretVersion=" + testVersionUpper + ")",
			want: []Ref{{"myvault.vault.azure.net", "db-conn", testVersion}}, out: "<db-conn>"},
		{name: "blanks and trailing ;", in: "@KeyVault(  VaultName = myvault ;\tSecretName=db-conn ; )",
			want: []Ref{{"myvault.vault.azure.net", "db-conn", ""}}, out: "<db-conn>"},
		{name: "newlines", in: "@KeyVault(\n  SecretUri = https://myvault.vault.azure.net/secrets/x;\r\n)",
			want: []Ref{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		{name: "case-insensitive everything", in: "@keyvault(SECRETURI=HTTPS://MYVAULT.VAULT.AZURE.NET/SECRETS/DB-CONN)",
			want: []Ref{{"myvault.vault.azure.net", "DB-CONN", ""}}, out: "<DB-CONN>"},
		{name: "port 443", in: "@MICROSOFT.KEYVAULT(secreturi=https://myvault.vault.azure.net:443/secrets/x)",
			want: []Ref{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		{name: "param order", in: "@KeyVault(SecretVersion=" + testVersion + ";SecretName=x;VaultName=abc)",
			want: []Ref{{"abc.vault.azure.net", "x", testVersion}}, out: "<x>"},
		{name: "limits", in: "@KeyVault(VaultName=a23456789012345678901234;SecretName=" + long + ")",
			want: []Ref{{"a23456789012345678901234.vault.azure.net", long, ""}}, out: "<" + long + ">"},
		{name: "embedded", in: "Server=db;Password=@KeyVault(VaultName=myvault;SecretName=db-pass);Timeout=30",
			want: []Ref{{"myvault.vault.azure.net", "db-pass", ""}}, out: "Server=db;Password=<db-pass>;Timeout=30"},
		{name: "several", in: "postgres://@KeyVault(VaultName=a1b;SecretName=user):@KeyVault(VaultName=a1b;SecretName=pass)@db/x",
			want: []Ref{{"a1b.vault.azure.net", "user", ""}, {"a1b.vault.azure.net", "pass", ""}},
			out:  "postgres://<user>:<pass>@db/x"},
		{name: "adjacent", in: "@KeyVault(VaultName=abc;SecretName=a)@KeyVault(VaultName=abc;SecretName=a)",
			want: []Ref{{"abc.vault.azure.net", "a", ""}, {"abc.vault.azure.net", "a", ""}}, out: "<a><a>"},
		{name: "escape only", in: "@@KeyVault(x)", out: "@KeyVault(x)"},
		{name: "escape Microsoft prefix", in: "text @@microsoft.keyvault(anything", out: "text @microsoft.keyvault(anything"},
		{name: "escape and ref", in: "a @@KeyVault(SecretName=x) b @KeyVault(VaultName=myvault;SecretName=y)",
			want: []Ref{{"myvault.vault.azure.net", "y", ""}}, out: "a @KeyVault(SecretName=x) b <y>"},
		{name: "triple @", in: "@@@KeyVault(x)", out: "@@KeyVault(x)"},
		{name: "other @@ left alone", in: "a@@b @@ c@example.com", out: "a@@b @@ c@example.com"},
		{name: "prefix without (", in: "see @KeyVault docs, @Microsoft.KeyVault ( too", out: "see @KeyVault docs, @Microsoft.KeyVault ( too"},
		{name: "Kelvin sign is not K", in: "@\u212AeyVault(SecretUri=http://evil.test/x)", out: "@\u212AeyVault(SecretUri=http://evil.test/x)"},
		{name: "ref after @", in: "me@KeyVault(VaultName=abc;SecretName=x)",
			want: []Ref{{"abc.vault.azure.net", "x", ""}}, out: "me<x>"},
		{name: "uppercase secrets segment", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/Secrets/x)",
			want: []Ref{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		// A certificate is read through its secret: the same name and version.
		{name: "certificate URI", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/certificates/web-tls/)",
			want: []Ref{{"myvault.vault.azure.net", "web-tls", ""}}, out: "<web-tls>"},
		{name: "certificate URI with version", in: "@KeyVault(SecretUri=https://myvault.vault.azure.net/Certificates/web-tls/" + testVersion + ")",
			want: []Ref{{"myvault.vault.azure.net", "web-tls", testVersion}}, out: "<web-tls>"},
		{name: "China VaultName", in: "@KeyVault(VaultName=myvault;SecretName=x)", pc: NewConfig("AzureChina"),
			want: []Ref{{"myvault.vault.azure.cn", "x", ""}}, out: "<x>"},
		{name: "China SecretUri", in: "@KeyVault(SecretUri=https://myvault.vault.azure.cn/secrets/x/)", pc: NewConfig("AzureChina"),
			want: []Ref{{"myvault.vault.azure.cn", "x", ""}}, out: "<x>"},
		{name: "USGov", in: "@KeyVault(SecretUri=https://myvault.vault.usgovcloudapi.net/secrets/x)", pc: NewConfig("AzureUSGovernment"),
			want: []Ref{{"myvault.vault.usgovcloudapi.net", "x", ""}}, out: "<x>"},
		{name: "USGov VaultName", in: "@KeyVault(VaultName=myvault;SecretName=x)", pc: NewConfig("AzureUSGovernment"),
			want: []Ref{{"myvault.vault.usgovcloudapi.net", "x", ""}}, out: "<x>"},
		{name: "allowed host", in: "@KeyVault(SecretUri=https://KV.Internal.Example/secrets/x)", pc: NewConfig("AzurePublic", " kv.internal.EXAMPLE "),
			want: []Ref{{"kv.internal.example", "x", ""}}, out: "<x>"},
		{name: "allowed host:port", in: "@KeyVault(SecretUri=https://127.0.0.1:8443/secrets/x)", pc: NewConfig("AzurePublic", "127.0.0.1:8443"),
			want: []Ref{{"127.0.0.1:8443", "x", ""}}, out: "<x>"},
		{name: "zero Config is public", in: "@KeyVault(VaultName=myvault;SecretName=x)", pc: Config{},
			want: []Ref{{"myvault.vault.azure.net", "x", ""}}, out: "<x>"},
		{name: "no @", in: "plain value", out: "plain value"},
		{name: "empty", in: "", out: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := tt.pc
			if pc.Cloud == "" && tt.name != "zero Config is public" {
				pc = pub
			}
			tmpl, err := Parse(tt.in, pc)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := tmpl.Refs()
			if len(got) != len(tt.want) {
				t.Fatalf("refs = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("ref %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			if tmpl.HasRefs() != (len(tt.want) > 0) {
				t.Errorf("hasRefs = %v", tmpl.HasRefs())
			}
			if tmpl.NeedsRender() != (tt.out != tt.in || len(tt.want) > 0) {
				t.Errorf("needsRender = %v", tmpl.NeedsRender())
			}
			out, ok := tmpl.Render(renderNames)
			if !ok || out != tt.out {
				t.Errorf("render = %q, %v; want %q", out, ok, tt.out)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	const (
		uri    = "https://myvault.vault.azure.net/secrets/"
		syntax = InvalidSyntax
		host   = HostNotAllowed
	)
	ref := func(body string) string { return "@KeyVault(" + body + ")" }
	sref := func(u string) string { return ref("SecretUri=" + u) }
	tests := []struct {
		in     string
		pc     Config
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
		{in: sref("https://myvault.vault.azure.net/secrets/x"), pc: NewConfig("AzureChina"), status: host, reason: "not a Key Vault host of cloud AzureChina (*.vault.azure.cn) but of cloud AzurePublic"},
		{in: sref("https://kv.internal.example:8443/secrets/x"), pc: NewConfig("AzurePublic", "kv.internal.example"), status: host, reason: `port "8443" is refused`},
		{in: ref("VaultName=abc;SecretName=x"), pc: NewConfig("Mars"), status: host, reason: `cloud "Mars" has no known Key Vault suffix`},
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
				if pc.Cloud == "" {
					pc = NewConfig("AzurePublic")
				}
				tmpl, err := Parse(in, pc)
				if err == nil {
					t.Fatalf("parsed as %v", tmpl.Refs())
				}
				if err.Status != tt.status || !strings.Contains(err.Reason, tt.reason) {
					t.Errorf("got Status %s, Reason %q\nwant Status %s, Reason containing %q", err.Status, err.Reason, tt.status, tt.reason)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, string(tt.status)+": ") {
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
	tmpl, err := Parse(in, NewConfig("AzurePublic"))
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"x": "@KeyVault(VaultName=abc;SecretName=y)",
		"y": "@@KeyVault(z) @KeyVault(",
	}
	calls := 0
	lookup := func(r Ref) (string, bool) {
		calls++
		v, ok := values[r.Name]
		return v, ok
	}
	got, ok := tmpl.Render(lookup)
	want := "a=" + values["x"] + ";b=" + values["y"]
	if !ok || got != want || calls != 2 {
		t.Errorf("render = %q, %v after %d lookups; want %q after 2", got, ok, calls, want)
	}

	whole, err := Parse("@KeyVault(VaultName=abc;SecretName=x)", NewConfig("AzurePublic"))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := whole.Render(lookup); !ok || got != values["x"] {
		t.Errorf("whole-value render = %q, %v", got, ok)
	}

	delete(values, "y")
	if got, ok := tmpl.Render(lookup); ok || got != "" {
		t.Errorf("render with a missing secret = %q, %v; want \"\", false", got, ok)
	}
}

func TestParseAllocs(t *testing.T) {
	pc := NewConfig("AzurePublic")
	for in, max := range map[string]float64{
		"a plain value without references":  0,
		"alice@example.com, @KeyVault docs": 0,
		"Password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-pass/);Timeout=30": 2,
	} {
		n := testing.AllocsPerRun(100, func() {
			if _, err := Parse(in, pc); err != nil {
				t.Fatal(err)
			}
		})
		if n > max {
			t.Errorf("Parse(%q): %v allocations, want at most %v", in, n, max)
		}
	}
}

func BenchmarkParseNoRef(b *testing.B) {
	pc := NewConfig("AzurePublic")
	for name, in := range map[string]string{
		"plain": "postgres://db.internal:5432/orders?sslmode=require",
		"at":    "postgres://app@db.internal:5432/orders?sslmode=require",
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(in, pc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseEmbedded(b *testing.B) {
	pc := NewConfig("AzurePublic")
	in := "Server=db;User=app;Password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-pass/);Timeout=30"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(in, pc); err != nil {
			b.Fatal(err)
		}
	}
}

// A vault source's host is checked as a SecretUri's authority is, without being written
// into a reference and parsed again: a bare name takes the cloud's suffix, an allowed
// host:port keeps its port, and anything else a reference could not name is refused.
func TestVaultHost(t *testing.T) {
	pc := NewConfig("AzurePublic", "kv.internal.example:8443")
	for in, want := range map[string]string{
		"myvault":                     "myvault.vault.azure.net",
		"MyVault.Vault.Azure.Net":     "myvault.vault.azure.net",
		"myvault.vault.azure.net:443": "myvault.vault.azure.net",
		"kv.internal.example:8443":    "kv.internal.example:8443",
	} {
		if got, err := VaultHost(in, pc); err != nil || got != want {
			t.Errorf("VaultHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, status := range map[string]Status{
		"":                                   InvalidSyntax,
		"myvault.vault.azure.net/secrets/x":  InvalidSyntax,
		"myvault.vault.azure.net?x":          InvalidSyntax,
		`evil.test\@myvault.vault.azure.net`: InvalidSyntax,
		"user@myvault.vault.azure.net":       HostNotAllowed,
		"evil.test":                          HostNotAllowed,
		"127.0.0.1":                          HostNotAllowed,
		"myvault.vault.azure.cn":             HostNotAllowed,
		"myvault.vault.azure.net:8443":       HostNotAllowed,
		"myvault.vault.azure.net:x":          InvalidSyntax,
	} {
		if got, err := VaultHost(in, pc); err == nil || err.Status != status || err.Reason == "" {
			t.Errorf("VaultHost(%q) = %q, %v; want %s", in, got, err, status)
		}
	}
}
