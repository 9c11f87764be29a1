package viperkv

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/viperkv/viperkv/internal/grammar"
)

const (
	testVersion      = "0123456789abcdef0123456789abcdef"
	testVersionUpper = "0123456789ABCDEF0123456789abcdef"
)

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

// A parse failure reaches the user as a *ReferenceError naming the config key, with the
// grammar's status and reason and the reference as written, never the rest of the value.
// (internal/grammar tests the grammar itself.)
func TestParseTemplateNamesTheKey(t *testing.T) {
	const secretText = "Password=hunter2;Extra="
	for in, status := range map[string]Status{
		"@KeyVault(VaultName=abc)":                                StatusInvalidSyntax,
		"@KeyVault(SecretUri=https://evil.test/secrets/x)":        StatusHostNotAllowed,
		"@Microsoft.AppConfiguration(Endpoint=https://a.example)": StatusAppConfigurationNotSupported,
	} {
		_, err := parseTemplate("db.conn", secretText+in, newParseConfig(CloudPublic))
		var re *ReferenceError
		if !errors.As(err, &re) {
			t.Fatalf("%s: error %T is not a *ReferenceError: %v", in, err, err)
		}
		if re.Key != "db.conn" || re.Status != status || re.Reason == "" || !strings.HasPrefix(in, strings.TrimSuffix(re.Written, "...")) {
			t.Errorf("%s: got Key %q, Status %s, Reason %q, Written %q", in, re.Key, re.Status, re.Reason, re.Written)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, `viperkv: config key "db.conn": `+string(status)+": ") || strings.Contains(msg, "hunter2") {
			t.Errorf("Error() = %q", msg)
		}
	}
}

// The grammar's statuses pass to users as Status by conversion: their names must be the
// same.
func TestGrammarStatusesAreStatuses(t *testing.T) {
	for g, want := range map[grammar.Status]Status{
		grammar.InvalidSyntax:                StatusInvalidSyntax,
		grammar.HostNotAllowed:               StatusHostNotAllowed,
		grammar.AppConfigurationNotSupported: StatusAppConfigurationNotSupported,
		grammar.PropertyNotFound:             StatusPropertyNotFound,
		grammar.SecretFormatInvalid:          StatusSecretFormatInvalid,
		grammar.DecodeFailed:                 StatusDecodeFailed,
	} {
		if Status(g) != want {
			t.Errorf("grammar status %q passes as %q, want %q", g, Status(g), want)
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
		for _, p := range tmpl.Parts {
			if p.Ref == nil {
				if p.Lit == "" || prevLit {
					t.Fatalf("empty or adjacent literal parts: %+v", tmpl.Parts)
				}
				prevLit = true
				continue
			}
			prevLit = false
			r := *p.Ref
			if !(fuzzHost.MatchString(r.Vault) && !strings.Contains(r.Vault, "--")) && r.Vault != fuzzAllowed {
				t.Fatalf("vault host %q accepted", r.Vault)
			}
			if !fuzzName.MatchString(r.Name) {
				t.Fatalf("secret name %q accepted", r.Name)
			}
			if r.Version != "" && !fuzzVersion.MatchString(r.Version) {
				t.Fatalf("version %q accepted", r.Version)
			}
			if sh := p.Shape; !sh.Plain() || sh.Optional {
				if grammar.HasPrefixFold(p.Text, "@microsoft.keyvault(") {
					t.Fatalf("App Service's form took viperkv's parameters: %q", p.Text)
				}
				if sh.WholeValue() && len(tmpl.Parts) != 1 {
					t.Fatalf("a reference with Decode or Format alone inside text: %q", s)
				}
				if (sh.Pointer() != nil) != strings.HasPrefix(sh.Property, "/") || (sh.Pointer() != nil && sh.Format() == "") {
					t.Fatalf("Property %q parsed as %q (format %q)", sh.Property, sh.Pointer(), sh.Format())
				}
			}
		}
		if !tmpl.HasRefs() {
			got, ok := tmpl.Render(func(grammar.Ref) (string, bool) {
				t.Fatal("lookup called for a template without references")
				return "", false
			})
			if want := fuzzUnescape(s); !ok || got != want {
				t.Fatalf("render = %q, want %q", got, want)
			}
			if tmpl.NeedsRender() != (got != s) {
				t.Fatalf("needsRender = %v for %q", tmpl.NeedsRender(), s)
			}
			return
		}
		// Canonical round trip: escaped literals and canonical references parse back to
		// the same parts.
		var canon strings.Builder
		for _, p := range tmpl.Parts {
			if p.Ref != nil {
				canon.WriteString(Reference(*p.Ref).String())
			} else {
				canon.WriteString(fuzzEscape(p.Lit))
			}
		}
		back, err := parseTemplate("fuzz.key", canon.String(), pc)
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", canon.String(), err)
		}
		if len(back.Parts) != len(tmpl.Parts) {
			t.Fatalf("canonical form %q parses to %d parts, want %d", canon.String(), len(back.Parts), len(tmpl.Parts))
		}
		for i, p := range tmpl.Parts {
			q := back.Parts[i]
			if p.Lit != q.Lit || (p.Ref == nil) != (q.Ref == nil) || (p.Ref != nil && *p.Ref != *q.Ref) {
				t.Fatalf("canonical form %q: part %d = %+v, want %+v", canon.String(), i, q, p)
			}
		}
	})
}
