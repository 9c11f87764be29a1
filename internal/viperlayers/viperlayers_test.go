package viperlayers

import (
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

func TestCheck(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}

// A clone answers as the original, keeps its options (here the key delimiter, the
// replacer and AutomaticEnv), and shares nothing the original goes on writing.
func TestCloneAnswersAsTheOriginalAndSharesNothing(t *testing.T) {
	t.Setenv("APP_LOG__LEVEL", "debug")
	v := viper.NewWithOptions(viper.KeyDelimiter("::"), viper.EnvKeyReplacer(strings.NewReplacer("::", "__")))
	v.SetEnvPrefix("APP")
	v.AutomaticEnv()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader("db:\n  conn: c\n  pool: 5\nhosts: [a, b]\nendpoints:\n  api.example.invalid: x\n")); err != nil {
		t.Fatal(err)
	}
	v.SetDefault("db::timeout", "5s")
	v.Set("db::pool", 7)
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("region", "west", "")
	if err := v.BindPFlag("region", fs.Lookup("region")); err != nil {
		t.Fatal(err)
	}
	c := Clone(v)
	for _, k := range []string{"db::conn", "db::pool", "db::timeout", "log::level", "hosts", "endpoints::api.example.invalid", "region", "db"} {
		if got, want := c.Get(k), v.Get(k); !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%q) = %v, the original says %v", k, got, want)
		}
	}
	if !reflect.DeepEqual(c.AllSettings(), v.AllSettings()) || c.InConfig("db::timeout") || !c.InConfig("db::conn") {
		t.Errorf("AllSettings or InConfig differ")
	}
	// The original goes on changing; the clone does not.
	v.Set("db::conn", "changed")
	v.SetDefault("db::timeout", "9s")
	(*Of(v).Config)["hosts"].([]any)[0] = "mutated"
	if err := fs.Parse([]string{"--region=east"}); err != nil {
		t.Fatal(err)
	}
	if c.GetString("db::conn") != "c" || c.GetString("db::timeout") != "5s" || c.GetStringSlice("hosts")[0] != "a" || c.GetString("region") != "west" {
		t.Errorf("the clone changed with the original: %v", c.AllSettings())
	}
}

// Run with -race: reading a clone while the app writes its Viper is no data race.
func TestCloneWhileTheAppWrites(t *testing.T) {
	v := viper.New()
	v.Set("a.b", 1)
	c := Clone(v)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 1000 {
			v.Set("a.b", i)
			v.SetDefault("x.y", i)
		}
	})
	for range 1000 {
		_ = c.GetInt("a.b")
		_ = c.AllSettings()
	}
	wg.Wait()
}

// Source names the layer each key's value comes from, in Viper's order, through Viper's own
// lookup; Place puts a value there, and Remove takes a key out of every layer.
func TestSourcePlaceRemove(t *testing.T) {
	t.Setenv("T_FROM_ENV", "env-raw")
	v := viper.New()
	v.SetEnvPrefix("T")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader("file:\n  key: file-raw\nboth: file\nlist: [a, file-raw]\n")); err != nil {
		t.Fatal(err)
	}
	v.SetDefault("def", "def-raw")
	v.SetDefault("both", "default")
	v.Set("set", "set-raw")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("flag", "flag-default", "")
	_ = v.BindPFlag("flag", fs.Lookup("flag"))
	_ = fs.Parse([]string{"--flag=flag-raw"})
	c := Clone(v)
	for key, want := range map[string]Layer{"file.key": LayerConfig, "both": LayerConfig, "def": LayerDefault,
		"set": LayerOverride, "flag": LayerFlag, "from.env": LayerEnv, "list": LayerConfig, "absent": LayerNone} {
		if got := Source(c, key); got != want {
			t.Errorf("Source(%q) = %v, want %v", key, got, want)
		}
	}
	upper := func(_, s string) (any, bool) { return strings.ToUpper(s), true }
	for _, key := range []string{"file.key", "def", "set", "flag", "from.env", "list"} {
		Place(c, key, Source(v, key), upper)
	}
	HideEnv(c, func(val string) bool { return strings.HasSuffix(val, "-raw") })
	for key, want := range map[string]any{"file.key": "FILE-RAW", "def": "DEF-RAW", "set": "SET-RAW", "flag": "FLAG-RAW",
		"from.env": "ENV-RAW", "list": []any{"A", "FILE-RAW"}} {
		if got := c.Get(key); !reflect.DeepEqual(got, want) {
			t.Errorf("after Place, %s = %v, want %v", key, got, want)
		}
	}
	if !c.InConfig("file.key") || c.InConfig("from.env") || v.GetString("file.key") != "file-raw" {
		t.Error("InConfig moved, or the original changed")
	}
	Remove(c, "both")
	if c.IsSet("both") {
		t.Errorf("both = %v after Remove: a lower layer answers", c.Get("both"))
	}
	// A variable whose value is hidden is not read, and nothing below answers for it.
	t.Setenv("T_OTHER", "other-raw")
	if c.IsSet("other") {
		t.Errorf("a hidden variable is read: %v", c.Get("other"))
	}
}
