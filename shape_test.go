package viperkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

const shapeSentinel = "SENTINEL-shape-4f1d9a"

// dbJSON is a structured secret as teams store one.
const dbJSON = `{"host":"db.example","port":5432,"user":"app","password":"` + shapeSentinel + `","tls":true,
"hosts":["a.example","b.example"],"app.settings":{"Retries":3,"ratio":0.25},"x/y":"slash","tilde~":"t","none":null,
"big":12345678901234567890}`

func shapedProvider(t *testing.T, doc string, setup func(kv *kvtest.Vault), opts ...viperkv.Option) (*viperkv.Provider, *bytes.Buffer, error) {
	t.Helper()
	srv, kv := newVault(t, "myvault")
	setup(kv)
	var logs bytes.Buffer
	opts = append(opts, viperkv.WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	p, err := load(t, srv, yamlViper(t, doc), opts...)
	t.Cleanup(func() { _ = p.Close() })
	return p, &logs, err
}

// TestPropertyOfAJSONSecret: Property (a JSON Pointer) takes one value of a JSON secret in
// its native type, in a whole value or inside text; a missing member, a secret that is
// not JSON, or an object inside text is a status of its own for that reference, never
// the whole secret, and the other keys resolve.
func TestPropertyOfAJSONSecret(t *testing.T) {
	ref := func(prop string) string {
		return `"@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db/;Property=` + prop + `)"`
	}
	doc := strings.Join([]string{
		"password: " + ref("/password"),
		"port: " + ref("/port"),
		"tls: " + ref("/tls"),
		"second: " + ref("/hosts/1"),
		"retries: " + ref("/app.settings/Retries"),
		"ratio: " + ref("/app.settings/ratio"),
		"slash: " + ref("/x~1y"),
		"tilde: " + ref("/tilde~0"),
		"big: " + ref("/big"),
		`dsn: "postgres://@KeyVault(VaultName=myvault;SecretName=db;Property=/user):@KeyVault(VaultName=myvault;SecretName=db;Property=/password)@h:@KeyVault(VaultName=myvault;SecretName=db;Property=/port)/app"`,
		"missing: " + ref("/nope"),
		"nullval: " + ref("/none"),
		"pastend: " + ref("/hosts/2"),
		`notjson: "@KeyVault(VaultName=myvault;SecretName=plain;Property=/a)"`,
		`objectintext: "x=@KeyVault(VaultName=myvault;SecretName=db;Property=/hosts)"`,
		"plain: \"@KeyVault(VaultName=myvault;SecretName=plain)\"",
	}, "\n")
	p, logs, err := shapedProvider(t, doc, func(kv *kvtest.Vault) {
		kv.SetSecret("db", dbJSON, kvtest.WithContentType("application/json"))
		kv.SetSecret("plain", "not json "+shapeSentinel)
	})
	var le *viperkv.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load: %v, want a *LoadError for the failing properties", err)
	}
	want := map[string]any{"password": shapeSentinel, "port": 5432, "tls": true, "second": "b.example", "retries": 3,
		"ratio": 0.25, "slash": "slash", "tilde": "t", "big": 1.2345678901234567e19,
		"dsn": "postgres://app:" + shapeSentinel + "@h:5432/app", "plain": "not json " + shapeSentinel}
	for k, w := range want {
		if got := p.Get(k); got != w {
			t.Errorf("%s = %#v, want %#v", k, got, w)
		}
	}
	failing := map[string]struct {
		status viperkv.Status
		reason string
	}{
		"missing":      {viperkv.StatusPropertyNotFound, `Property "/nope": no member "nope" at the top`},
		"nullval":      {viperkv.StatusPropertyNotFound, "null"},
		"pastend":      {viperkv.StatusPropertyNotFound, `no element "2" in a list of 2 under "/hosts"`},
		"notjson":      {viperkv.StatusSecretFormatInvalid, "not a JSON document"},
		"objectintext": {viperkv.StatusSecretFormatInvalid, "cannot be part of a text"},
	}
	var failed []string
	for _, f := range le.Failed {
		failed = append(failed, f.Key)
	}
	slices.Sort(failed)
	if want := slices.Sorted(func(yield func(string) bool) {
		for k := range failing {
			if !yield(k) {
				return
			}
		}
	}); !slices.Equal(failed, want) {
		t.Errorf("Load failed for %v, want %v", failed, want)
	}
	for k, w := range failing {
		st := statusOf(t, p, k)
		if st.Status != w.status || !strings.Contains(st.Reason, w.reason) {
			t.Errorf("%s: %s %q, want %s with %q", k, st.Status, st.Reason, w.status, w.reason)
		}
		if p.Viper().IsSet(k) {
			t.Errorf("%s is set (%#v): a reference without its value must leave the key out", k, p.Get(k))
		}
	}
	// The secret itself resolved: the status of a reference to it without a Property says so.
	if st := statusOf(t, p, "plain"); st.Status != viperkv.StatusResolved {
		t.Errorf("plain: %s", st.Status)
	}
	for where, text := range map[string]string{"logs": logs.String(), "error": err.Error(),
		"status": fmt.Sprintf("%+v", p.Status()), "masked": fmt.Sprint(p.MaskedSettings())} {
		if strings.Contains(text, shapeSentinel) {
			t.Errorf("the secret's value shows in the %s", where)
		}
	}
}

// TestFormatExpandsASecretIntoASubtree: Format=json (or yaml) alone puts the whole
// document at the key with native types, so Unmarshal fills a struct; each leaf is masked;
// a rotation that breaks the document keeps the last good subtree.
func TestFormatExpandsASecretIntoASubtree(t *testing.T) {
	doc := `
db: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db/;Format=json)"
svc: "@KeyVault(VaultName=myvault;SecretName=svc;Format=YAML)"
other: 1
`
	var kv *kvtest.Vault
	p, logs, err := shapedProvider(t, doc, func(v *kvtest.Vault) {
		kv = v
		v.SetSecret("db", dbJSON)
		v.SetSecret("svc", "name: billing\nlimits:\n  rps: 50\n  burst: 2.5\nregions: [westeurope, northeurope]\nEnabled: true\n")
	})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		DB struct {
			Host     string
			Port     int
			Password string
			TLS      bool
			Hosts    []string
		}
		Svc struct {
			Name   string
			Limits struct {
				RPS   int
				Burst float64
			}
			Regions []string
			Enabled bool
		}
	}
	if err := p.Viper().Unmarshal(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.DB.Host != "db.example" || cfg.DB.Port != 5432 || cfg.DB.Password != shapeSentinel || !cfg.DB.TLS ||
		!slices.Equal(cfg.DB.Hosts, []string{"a.example", "b.example"}) {
		t.Errorf("db = %+v", cfg.DB)
	}
	if cfg.Svc.Name != "billing" || cfg.Svc.Limits.RPS != 50 || cfg.Svc.Limits.Burst != 2.5 || len(cfg.Svc.Regions) != 2 || !cfg.Svc.Enabled {
		t.Errorf("svc = %+v", cfg.Svc)
	}
	if got := p.GetString("db.app.settings.retries"); got != "3" && p.Get("db.app.settings") == nil {
		t.Errorf("a member with a dot in its name: %v", p.Get("db.app.settings"))
	}
	if p.Viper().GetInt("other") != 1 {
		t.Error("other keys are kept")
	}
	masked := fmt.Sprint(p.MaskedSettings())
	if strings.Contains(masked, shapeSentinel) || strings.Contains(masked, "db.example") || !strings.Contains(masked, "password:"+viperkv.Mask) {
		t.Errorf("masked settings must keep the subtree's keys and mask each leaf: %s", masked)
	}
	if strings.Contains(logs.String(), shapeSentinel) || strings.Contains(fmt.Sprintf("%+v", p.Status()), shapeSentinel) {
		t.Error("a leaf of the subtree shows in the logs or statuses")
	}

	// A rotation to a document that does not parse keeps the subtree it had.
	kv.SetSecret("db", `{"host": "broken", `+shapeSentinel)
	err = p.Refresh(context.Background())
	if st := statusOf(t, p, "db"); err == nil || st.Status != viperkv.StatusSecretFormatInvalid || !strings.Contains(st.Reason, "JSON") {
		t.Errorf("after a broken rotation: %v, status %s %q", err, st.Status, st.Reason)
	}
	if p.GetString("db.host") != "db.example" || p.GetString("db.password") != shapeSentinel {
		t.Errorf("the last good subtree was not kept: host %q", p.GetString("db.host"))
	}
	if strings.Contains(err.Error(), shapeSentinel) || strings.Contains(fmt.Sprintf("%+v", p.Status()), shapeSentinel) {
		t.Error("the broken document shows in the error or status")
	}
	// A good rotation serves again, and watchers hear of it.
	kv.SetSecret("db", `{"host":"db2.example","port":6432}`)
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.GetString("db.host") != "db2.example" || p.Viper().GetInt("db.port") != 6432 || p.Viper().IsSet("db.password") {
		t.Errorf("after the good rotation: %v", p.Get("db"))
	}
}

// TestDecodeGivesBytes: Decode=base64, base64url or hex makes the value bytes ([]byte
// through Unmarshal), also of a Property; a value that does not decode is DecodeFailed.
func TestDecodeGivesBytes(t *testing.T) {
	doc := `
b64: "@KeyVault(VaultName=myvault;SecretName=b64;Decode=base64)"
wrapped: "@KeyVault(VaultName=myvault;SecretName=wrapped;Decode=base64)"
url: "@KeyVault(VaultName=myvault;SecretName=url;Decode=base64url)"
hex: "@KeyVault(VaultName=myvault;SecretName=hex;Decode=HEX)"
prop: "@KeyVault(VaultName=myvault;SecretName=keys;Property=/signing;Decode=base64)"
bad: "@KeyVault(VaultName=myvault;SecretName=url;Decode=hex)"
notstring: "@KeyVault(VaultName=myvault;SecretName=keys;Property=/n;Decode=base64)"
`
	raw := []byte{0xfb, 0xff, 0x00, 'k', 'e', 'y', 0xfe}
	p, _, err := shapedProvider(t, doc, func(kv *kvtest.Vault) {
		kv.SetSecret("b64", "+/8Aa2V5/g==")
		kv.SetSecret("wrapped", "+/8A\na2V5\n/g")
		kv.SetSecret("url", "-_8Aa2V5_g")
		kv.SetSecret("hex", "FBFF006B6579FE")
		kv.SetSecret("keys", `{"signing":"+/8Aa2V5/g==","n":5}`)
	})
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 2 {
		t.Fatalf("Load: %v, want bad and notstring to fail", err)
	}
	var cfg struct {
		B64, Wrapped, URL, Hex, Prop []byte
	}
	if err := p.Viper().Unmarshal(&cfg); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]byte{"b64": cfg.B64, "wrapped": cfg.Wrapped, "url": cfg.URL, "hex": cfg.Hex, "prop": cfg.Prop} {
		if !bytes.Equal(got, raw) {
			t.Errorf("%s = %x, want %x", name, got, raw)
		}
	}
	if _, ok := p.Get("b64").([]byte); !ok {
		t.Errorf("Get(b64) is %T, want []byte", p.Get("b64"))
	}
	if st := statusOf(t, p, "bad"); st.Status != viperkv.StatusDecodeFailed || !strings.Contains(st.Reason, "not hex") {
		t.Errorf("bad: %s %q", st.Status, st.Reason)
	}
	if st := statusOf(t, p, "notstring"); st.Status != viperkv.StatusDecodeFailed || !strings.Contains(st.Reason, "not a string") {
		t.Errorf("notstring: %s %q", st.Status, st.Reason)
	}
	if m := fmt.Sprint(p.MaskedSettings()); strings.Contains(m, "key") || !strings.Contains(m, "b64:"+viperkv.Mask) {
		t.Errorf("masked: %s", m)
	}
}

// TestOptionalReferences: Optional=true leaves a key out when its secret is missing,
// disabled or forbidden, without failing Load; the status row says so. Other failures of
// an optional reference still fail, and an optional secret that exists resolves.
func TestOptionalReferences(t *testing.T) {
	doc := `
gone: "@KeyVault(VaultName=myvault;SecretName=gone;Optional=true)"
off: "@KeyVault(VaultName=myvault;SecretName=off;Optional=true)"
pinned: "@KeyVault(VaultName=myvault;SecretName=here;SecretVersion=0123456789abcdef0123456789abcdef;Optional=true)"
here: "@KeyVault(VaultName=myvault;SecretName=here;Optional=true)"
inText: "a=@KeyVault(VaultName=myvault;SecretName=gone;Optional=true);b=@KeyVault(VaultName=myvault;SecretName=here)"
shapeless: "@KeyVault(VaultName=myvault;SecretName=here;Optional=true;Property=/a)"
required: "@KeyVault(VaultName=myvault;SecretName=gone2)"
`
	p, logs, err := shapedProvider(t, doc, func(kv *kvtest.Vault) {
		kv.SetSecret("here", "value")
		kv.SetSecret("off", "x", kvtest.WithEnabled(false))
	})
	var le *viperkv.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load: %v", err)
	}
	var failed []string
	for _, f := range le.Failed {
		failed = append(failed, f.Key)
	}
	slices.Sort(failed)
	if !slices.Equal(failed, []string{"required", "shapeless"}) {
		t.Errorf("Load failed for %v, want only the required reference and the optional one whose value has the wrong shape", failed)
	}
	for _, k := range []string{"gone", "off", "pinned", "intext"} {
		st := statusOf(t, p, k)
		if !st.Optional || !st.OptionalMissing() {
			t.Errorf("%s: %s optional=%v, want an optional reference missing", k, st.Status, st.Optional)
		}
		if p.Viper().IsSet(k) {
			t.Errorf("%s is set to %#v, want it left out", k, p.Get(k))
		}
	}
	if p.GetString("here") != "value" {
		t.Errorf("here = %q", p.GetString("here"))
	}
	if !strings.Contains(logs.String(), "gone") {
		t.Error("the logs do not mention the optional reference left out")
	}
	// A malformed optional reference is still a malformed reference.
	_, _, err = shapedProvider(t, `x: "@KeyVault(VaultName=myvault;Optional=true)"`, func(*kvtest.Vault) {})
	if err == nil || !strings.Contains(err.Error(), "missing SecretName") {
		t.Errorf("a malformed optional reference: %v", err)
	}
}

// TestAppConfigurationReferenceIsNotPassedThrough: App Service's App Configuration
// reference gets a status of its own, fails Load, and its text never becomes the value.
func TestAppConfigurationReferenceIsNotPassedThrough(t *testing.T) {
	t.Setenv("SHAPE_FROMENV", "@Microsoft.AppConfiguration(Endpoint=https://myconfig.azconfig.io; Key=featureX)")
	srv, _ := newVault(t, "myvault")
	v := yamlViper(t, "flag: \"@Microsoft.AppConfiguration(Endpoint=https://myconfig.azconfig.io; Key=app:flag; Label=prod)\"\nescaped: \"@@Microsoft.AppConfiguration(x)\"\n")
	v.SetEnvPrefix("shape")
	v.AutomaticEnv()
	p, err := load(t, srv, v, viperkv.WithEnvKeys("fromenv"))
	t.Cleanup(func() { _ = p.Close() })
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 2 {
		t.Fatalf("Load: %v, want both App Configuration references to fail", err)
	}
	for _, k := range []string{"flag", "fromenv"} {
		st := statusOf(t, p, k)
		if st.Status != viperkv.StatusAppConfigurationNotSupported || !strings.Contains(st.Reason, "App Configuration") ||
			!strings.HasPrefix(st.Written, "@Microsoft.AppConfiguration(") {
			t.Errorf("%s: %s %q written %q", k, st.Status, st.Reason, st.Written)
		}
		if got := p.GetString(k); got != "" {
			t.Errorf("%s = %q: the reference's text passed for the value", k, got)
		}
	}
	if !viperkv.HasReference("x @microsoft.appconfiguration(Endpoint=e)") {
		t.Error("HasReference does not see an App Configuration reference")
	}
	if got := p.GetString("escaped"); got != "@@Microsoft.AppConfiguration(x)" {
		t.Errorf("escaped = %q", got)
	}
}

// TestExpandedSecretFromTheEnvironment: a subtree from a reference in an environment
// variable answers as the environment would, above the file's value.
func TestExpandedSecretFromTheEnvironment(t *testing.T) {
	t.Setenv("SHAPE_DB", "@KeyVault(VaultName=myvault;SecretName=db;Format=json)")
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("db", `{"host":"from-env","port":1}`)
	v := yamlViper(t, "db:\n  host: from-file\n  name: app\n")
	v.SetEnvPrefix("shape")
	v.AutomaticEnv()
	p, err := load(t, srv, v, viperkv.WithEnvKeys("db"))
	t.Cleanup(func() { _ = p.Close() })
	if err != nil {
		t.Fatal(err)
	}
	if p.GetString("db.host") != "from-env" || p.Viper().GetInt("db.port") != 1 {
		t.Errorf("db = %v", p.Get("db"))
	}
}
