package viperkv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// The differential test: each set-up below builds a Viper twice, once as an app would with
// Key Vault references in it, once (the oracle) with the secrets' values where the
// references are. The provider's resolved view of the first must answer every read method
// as the oracle does: after Load, and again after a config file edit under Watch (the
// oracle is then built anew from the edited files). The exceptions, where the resolved
// view differs on purpose, are listed in one place: exceptions, below.

// secrets are the values the fake vault holds.
var diffSecrets = map[string]string{
	"db-conn": "Server=db;User=app;Password=s3cret", "api-key": "key-123", "db-password": "p4ss",
	"host-two": "two.internal", "token": "tok-9", "rotated": "rotated-value", "port": "5432", "flag": "true",
}

// writer writes where a secret is: a reference for the app, its value for the oracle.
type writer func(name string) string

func reference(name string) string {
	if name == "@@" { // an escaped '@' in the app's config is one '@' to its readers
		return "@@"
	}
	return "@KeyVault(VaultName=myvault;SecretName=" + name + ")"
}

func value(name string) string {
	if name == "@@" {
		return "@"
	}
	return diffSecrets[name]
}

// setup is one Viper set-up of the corpus.
type setup struct {
	name string
	// env returns the variables to set, for a Viper whose variables start with prefix.
	env func(prefix string, s writer) map[string]string
	// files returns the files to write in the set-up's directory.
	files func(s writer) map[string]string
	// build makes the Viper from the directory, the prefix and the flags.
	build func(t *testing.T, dir, prefix string, s writer) *viper.Viper
	// keys are read besides AllKeys (env-only keys, parents, unknown keys).
	keys []string
	// envKeys are named with WithEnvKeys, envFrom's with WithEnvKeysFrom.
	envKeys []string
	envFrom any
	// edit returns the files changed by an edit under Watch (nil: no edit).
	edit func(s writer) map[string]string
	// unmarshal, when set, decodes with a struct of the set-up's own.
	unmarshal func(v *viper.Viper) (any, error)
}

func yamlFile(dir, name string) *viper.Viper {
	v := viper.New()
	v.SetConfigFile(filepath.Join(dir, name))
	return v
}

func readIn(t *testing.T, v *viper.Viper) *viper.Viper {
	t.Helper()
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	return v
}

var corpus = []setup{
	{name: "yaml nested with siblings", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "db:\n  conn: \"" + s("db-conn") + "\"\n  pool: 5\n  timeout: 3s\napp:\n  name: orders\n  debug: true\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) },
		keys: []string{"db", "app", "nope", "DB.CONN"},
		edit: func(s writer) map[string]string {
			return map[string]string{"c.yaml": "db:\n  conn: \"" + s("rotated") + "\"\n  pool: 9\napp:\n  name: orders-2\n"}
		}},
	{name: "json", files: func(s writer) map[string]string {
		return map[string]string{"c.json": `{"api": {"key": "` + s("api-key") + `", "retries": 3}, "list": [1, 2, 3]}`}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.json")) }, keys: []string{"api"}},
	{name: "toml", files: func(s writer) map[string]string {
		return map[string]string{"c.toml": "[db]\nconn = \"" + s("db-conn") + "\"\nport = 5432\n[[servers]]\nname = \"a\"\npass = \"" + s("token") + "\"\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.toml")) }, keys: []string{"db", "servers"}},
	{name: "dotenv file", files: func(s writer) map[string]string {
		return map[string]string{"c.env": "DB_CONN=" + s("db-conn") + "\nLOG_LEVEL=info\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.env")) }},
	{name: "a reference in a default", build: func(t *testing.T, _, _ string, s writer) *viper.Viper {
		v := viper.New()
		v.SetDefault("db.conn", s("db-conn"))
		v.SetDefault("db.pool", 4)
		return v
	}, keys: []string{"db"}},
	{name: "the file wins over a default reference", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "db:\n  pool: 8\n"}
	}, build: func(t *testing.T, dir, _ string, s writer) *viper.Viper {
		v := readIn(t, yamlFile(dir, "c.yaml"))
		v.SetDefault("db.conn", s("db-conn"))
		return v
	}, keys: []string{"db"}, edit: func(s writer) map[string]string { return map[string]string{"c.yaml": "db:\n  pool: 9\n  extra: x\n"} }},
	{name: "Set holds a reference", build: func(t *testing.T, _, _ string, s writer) *viper.Viper {
		v := viper.New()
		v.Set("api.key", s("api-key"))
		v.SetDefault("api.timeout", "2s")
		return v
	}, keys: []string{"api"}},
	{name: "Set beside a file section", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "db:\n  pool: 5\n  host: db.internal\n"}
	}, build: func(t *testing.T, dir, _ string, s writer) *viper.Viper {
		v := readIn(t, yamlFile(dir, "c.yaml"))
		v.Set("db.conn", s("db-conn"))
		return v
	}, keys: []string{"db"}},
	{name: "AutomaticEnv with prefix and replacer, reference in the environment", env: func(prefix string, s writer) map[string]string {
		return map[string]string{prefix + "_DB_CONN": s("db-conn")}
	}, files: func(writer) map[string]string {
		return map[string]string{"c.yaml": "db:\n  conn: placeholder\n  pool: 5\n"}
	},
		build: func(t *testing.T, dir, prefix string, _ writer) *viper.Viper {
			v := readIn(t, yamlFile(dir, "c.yaml"))
			v.SetEnvPrefix(prefix)
			v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
			v.AutomaticEnv()
			return v
		}, keys: []string{"db"}},
	{name: "AutomaticEnv only plain keys", env: func(prefix string, s writer) map[string]string {
		return map[string]string{prefix + "_LOG_LEVEL": "debug", prefix + "_FEATURE_X": "on"}
	}, build: func(t *testing.T, _, prefix string, s writer) *viper.Viper {
		v := viper.New()
		v.SetEnvPrefix(prefix)
		v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
		v.AutomaticEnv()
		v.SetDefault("api.key", s("api-key"))
		return v
	}, keys: []string{"log.level", "feature.x", "log"}},
	{name: "AutomaticEnv only reference named with WithEnvKeys", env: func(prefix string, s writer) map[string]string {
		return map[string]string{prefix + "_API_KEY": s("api-key"), prefix + "_API_MODE": "strict"}
	}, build: func(t *testing.T, _, prefix string, _ writer) *viper.Viper {
		v := viper.New()
		v.SetEnvPrefix(prefix)
		v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
		v.AutomaticEnv()
		return v
	}, keys: []string{"api.key", "api.mode"}, envKeys: []string{"api.key"}},
	{name: "AutomaticEnv only references named with WithEnvKeysFrom", env: func(prefix string, s writer) map[string]string {
		return map[string]string{prefix + "_DB_CONN": s("db-conn"), prefix + "_API_KEY": s("api-key"), prefix + "_TOKEN": s("token")}
	}, build: func(t *testing.T, _, prefix string, _ writer) *viper.Viper {
		v := viper.New()
		v.SetEnvPrefix(prefix)
		v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
		v.AutomaticEnv()
		return v
	}, keys: []string{"db.conn", "api.key", "token", "db.pool"}, envFrom: &struct {
		Database struct {
			Conn string
			Pool int
		} `mapstructure:"db"`
		API   struct{ Key string }
		Auth  struct{ Token string } `mapstructure:",squash"`
		Skip  string                 `mapstructure:"-"`
		Since time.Time
	}{}},
	{name: "BindEnv with names", env: func(prefix string, s writer) map[string]string {
		return map[string]string{prefix + "_CONN": s("db-conn"), prefix + "_POOL": "7"}
	}, build: func(t *testing.T, _, prefix string, _ writer) *viper.Viper {
		v := viper.New()
		_ = v.BindEnv("db.conn", prefix+"_CONN")
		_ = v.BindEnv("db.pool", prefix+"_POOL")
		_ = v.BindEnv("db.unset", prefix+"_UNSET")
		return v
	}, keys: []string{"db"}},
	{name: "AllowEmptyEnv", env: func(prefix string, s writer) map[string]string {
		return map[string]string{prefix + "_EMPTY": "", prefix + "_TOKEN": s("token")}
	}, build: func(t *testing.T, _, prefix string, _ writer) *viper.Viper {
		v := viper.New()
		v.AllowEmptyEnv(true)
		_ = v.BindEnv("empty", prefix+"_EMPTY")
		_ = v.BindEnv("token", prefix+"_TOKEN")
		v.SetDefault("empty", "default")
		return v
	}},
	{name: "flags changed and unchanged", build: func(t *testing.T, _, _ string, s writer) *viper.Viper {
		fs := pflag.NewFlagSet("app", pflag.ContinueOnError)
		fs.String("db-conn", "", "")
		fs.Int("port", 8080, "")
		fs.String("region", "west", "")
		fs.StringSlice("hosts", nil, "")
		if err := fs.Parse([]string{"--db-conn=" + s("db-conn"), "--hosts=a," + s("host-two")}); err != nil {
			t.Fatal(err)
		}
		v := viper.New()
		if err := v.BindPFlags(fs); err != nil {
			t.Fatal(err)
		}
		return v
	}},
	{name: "a flag's default holds a reference", build: func(t *testing.T, _, _ string, s writer) *viper.Viper {
		fs := pflag.NewFlagSet("app", pflag.ContinueOnError)
		fs.String("token", s("token"), "")
		v := viper.New()
		if err := v.BindPFlag("auth.token", fs.Lookup("token")); err != nil {
			t.Fatal(err)
		}
		return v
	}, keys: []string{"auth"}},
	{name: "aliases", build: func(t *testing.T, _, _ string, s writer) *viper.Viper {
		v := viper.New()
		v.Set("database.conn", s("db-conn"))
		v.RegisterAlias("db", "database")
		return v
	}, keys: []string{"db.conn", "db"}},
	{name: "KeyDelimiter", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "database:\n  conn: \"" + s("db-conn") + "\"\n  pool.size: 5\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper {
		v := viper.NewWithOptions(viper.KeyDelimiter("::"))
		v.SetConfigFile(filepath.Join(dir, "c.yaml"))
		return readIn(t, v)
	}, keys: []string{"database::conn", "database.conn", "database", "database::pool.size"},
		edit: func(s writer) map[string]string {
			return map[string]string{"c.yaml": "database:\n  conn: \"" + s("rotated") + "\"\n  pool.size: 6\n"}
		}},
	{name: "MergeInConfig of a second file", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "db:\n  conn: \"" + s("db-conn") + "\"\n  pool: 5\n",
			"local.yaml": "db:\n  pool: 20\ncache:\n  token: \"" + s("token") + "\"\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper {
		v := readIn(t, yamlFile(dir, "c.yaml"))
		v.SetConfigFile(filepath.Join(dir, "local.yaml"))
		if err := v.MergeInConfig(); err != nil {
			t.Fatal(err)
		}
		v.SetConfigFile(filepath.Join(dir, "c.yaml"))
		return v
	}, keys: []string{"db", "cache"}, edit: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "db:\n  conn: \"" + s("rotated") + "\"\n  pool: 6\n  extra: e\n"}
	}},
	{name: "MergeConfig of a reader", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "db:\n  host: db\n"}
	}, build: func(t *testing.T, dir, _ string, s writer) *viper.Viper {
		v := readIn(t, yamlFile(dir, "c.yaml"))
		if err := v.MergeConfig(strings.NewReader("db:\n  password: \"" + s("db-password") + "\"\nfeatures: [a, b]\n")); err != nil {
			t.Fatal(err)
		}
		return v
	}, keys: []string{"db"}, edit: func(writer) map[string]string { return map[string]string{"c.yaml": "db:\n  host: db2\n"} }},
	{name: "map keys holding the delimiter", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "endpoints:\n  api.example.invalid: \"" + s("api-key") + "\"\n  app.kubernetes.io/name: orders\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) },
		keys: []string{"endpoints", "endpoints.api.example.invalid"}},
	{name: "empty maps and null values", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "empty: {}\nnothing: null\nlist: []\ndb:\n  conn: \"" + s("db-conn") + "\"\n  opts: {}\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) },
		keys: []string{"empty", "nothing", "db", "db.opts"}},
	{name: "a map[string]string default", build: func(t *testing.T, _, _ string, s writer) *viper.Viper {
		v := viper.New()
		v.SetDefault("labels", map[string]string{"team": "a", "env": "prod"})
		v.SetDefault("auth.token", s("token"))
		return v
	}, keys: []string{"labels", "labels.team"}},
	{name: "lists of maps with references", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "servers:\n  - name: a\n    pass: \"" + s("token") + "\"\n  - name: b\n    pass: plain\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) },
		keys: []string{"servers", "servers.0.pass"}},
	{name: "references in lists", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "hosts:\n  - one.internal\n  - \"" + s("host-two") + "\"\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) },
		keys: []string{"hosts", "hosts.1"}},
	{name: "references inside strings", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "dsn: \"host=db password=" + s("db-password") + " sslmode=require\"\nurl: \"https://x?token=" + s("token") + "&k=" + s("api-key") + "\"\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) }},
	{name: "@@ escapes", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "literal: \"" + s("@@") + "KeyVault(not a reference)\"\nplain: \"a@b\"\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) }},
	{name: "keys in mixed case", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "Database:\n  Conn: \"" + s("db-conn") + "\"\n  PoolSize: 5\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) },
		keys: []string{"DATABASE.CONN", "database.poolsize", "Database"}},
	{name: "typed values from references", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "port: \"" + s("port") + "\"\nenabled: \"" + s("flag") + "\"\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper { return readIn(t, yamlFile(dir, "c.yaml")) }},
	{name: "SetTypeByDefaultValue", build: func(t *testing.T, _, prefix string, s writer) *viper.Viper {
		v := viper.New()
		v.SetTypeByDefaultValue(true)
		v.SetDefault("hosts", []string{"a"})
		v.Set("hosts", "x y")
		v.SetDefault("key", s("api-key"))
		return v
	}},
	{name: "a decode hook", files: func(s writer) map[string]string {
		return map[string]string{"c.yaml": "timeout: 3s\nname: \"" + s("api-key") + "\"\n"}
	}, build: func(t *testing.T, dir, _ string, _ writer) *viper.Viper {
		v := viper.NewWithOptions(viper.WithDecodeHook(mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(), upperHook)))
		v.SetConfigFile(filepath.Join(dir, "c.yaml"))
		return readIn(t, v)
	}, unmarshal: func(v *viper.Viper) (any, error) {
		var c struct {
			Timeout time.Duration
			Name    string
		}
		err := v.Unmarshal(&c)
		return c, err
	}},
}

// upperHook upper-cases strings bound for strings: a decode hook the app set, which
// Unmarshal on the resolved view must apply too.
func upperHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.String && to.Kind() == reflect.String {
		return strings.ToUpper(data.(string)), nil
	}
	return data, nil
}

// exceptions are the reads where the resolved view differs on purpose, with the reason;
// the docs (docs/loading.md, "What the resolved view guarantees") say the same.
var exceptions = map[string]string{
	// Viper never lists AutomaticEnv keys; a reference read from one is resolved into a flag
	// of the view's own, which Viper lists.
	"AutomaticEnv only reference named with WithEnvKeys/AllKeys":          "a WithEnvKeys key is listed",
	"AutomaticEnv only reference named with WithEnvKeys/AllSettings":      "a WithEnvKeys key is listed",
	"AutomaticEnv only reference named with WithEnvKeys/Unmarshal":        "a WithEnvKeys key is listed",
	"AutomaticEnv only references named with WithEnvKeysFrom/AllKeys":     "a WithEnvKeys key is listed",
	"AutomaticEnv only references named with WithEnvKeysFrom/AllSettings": "a WithEnvKeys key is listed",
	"AutomaticEnv only references named with WithEnvKeysFrom/Unmarshal":   "a WithEnvKeys key is listed",
	// Sub makes a Viper of the parent's value from one layer, and reads the environment for
	// its children; the view hides variables that hold references (their resolved values
	// are in a flag, which Sub does not carry), so a child whose reference came from the
	// environment reads from the layers below it.
	"AutomaticEnv with prefix and replacer, reference in the environment/Sub db": "Sub of a parent whose child came from the environment",
}

// reads returns what every read method says of v: by key for the keys given, and whole.
func reads(v *viper.Viper, keys []string, unmarshal func(*viper.Viper) (any, error)) map[string]any {
	out := map[string]any{}
	allKeys := v.AllKeys()
	slices.Sort(allKeys)
	out["AllKeys"] = allKeys
	out["AllSettings"] = v.AllSettings()
	var m map[string]any
	out["Unmarshal"] = fmt.Sprint(v.Unmarshal(&m), m)
	if unmarshal != nil {
		c, err := unmarshal(v)
		out["Unmarshal(struct)"] = fmt.Sprint(c, err)
	}
	for _, k := range keys {
		out["Get "+k] = v.Get(k)
		out["GetString "+k] = v.GetString(k)
		out["GetInt "+k] = v.GetInt(k)
		out["GetBool "+k] = v.GetBool(k)
		out["GetStringSlice "+k] = v.GetStringSlice(k)
		out["GetStringMap "+k] = v.GetStringMap(k)
		out["GetStringMapString "+k] = v.GetStringMapString(k)
		out["IsSet "+k] = v.IsSet(k)
		out["InConfig "+k] = v.InConfig(k)
		var mk map[string]any
		out["UnmarshalKey "+k] = fmt.Sprint(v.UnmarshalKey(k, &mk), mk)
		if sub := v.Sub(k); sub != nil {
			out["Sub "+k] = sub.AllSettings()
		}
	}
	return out
}

// differ compares the reads of the resolved view with the oracle's, reporting each
// difference that is not an exception, and recording the exceptions that applied.
func differ(t *testing.T, name, when string, got, want map[string]any, applied map[string]bool) {
	t.Helper()
	for _, m := range slices.Sorted(mapKeys(want)) {
		if reflect.DeepEqual(got[m], want[m]) {
			continue
		}
		if _, ok := exceptions[name+"/"+m]; ok {
			applied[name+"/"+m] = true
			continue
		}
		t.Errorf("%s, %s: %s = %#v, the app's Viper (with the values) says %#v", name, when, m, got[m], want[m])
	}
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestResolvedViewAnswersAsTheAppsViper(t *testing.T) {
	if len(corpus) < 25 {
		t.Fatalf("the corpus has %d set-ups, want at least 25", len(corpus))
	}
	applied := map[string]bool{}
	defer func() {
		for e := range exceptions {
			if !applied[e] && !t.Failed() {
				t.Errorf("exception %q never applied: remove it", e)
			}
		}
	}()
	for i, sp := range corpus {
		t.Run(sp.name, func(t *testing.T) {
			src := newFakeSource()
			for name, val := range diffSecrets {
				src.set("myvault", name, val)
			}
			appDir, oracleDir := t.TempDir(), t.TempDir()
			appPrefix, oraclePrefix := fmt.Sprintf("APP%d", i), fmt.Sprintf("ORACLE%d", i)
			write := func(dir string, files map[string]string) {
				for f, content := range files {
					if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			if sp.env != nil {
				for k, val := range sp.env(appPrefix, reference) {
					t.Setenv(k, val)
				}
				for k, val := range sp.env(oraclePrefix, value) {
					t.Setenv(k, val)
				}
			}
			if sp.files != nil {
				write(appDir, sp.files(reference))
				write(oracleDir, sp.files(value))
			}
			app := sp.build(t, appDir, appPrefix, reference)
			oracle := sp.build(t, oracleDir, oraclePrefix, value)
			keys := append(slices.Clone(sp.keys), oracle.AllKeys()...)
			opts := []Option{withSource(src.Vaults), WithEnvKeys(sp.envKeys...), WithRefreshInterval(time.Hour)}
			if sp.envFrom != nil {
				opts = append(opts, WithEnvKeysFrom(sp.envFrom))
			}
			p, err := New(app, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.Load(context.Background()); err != nil {
				t.Fatalf("Load: %v", err)
			}
			differ(t, sp.name, "after Load", reads(p.Viper(), keys, sp.unmarshal), reads(oracle, keys, sp.unmarshal), applied)
			if sp.edit == nil {
				return
			}

			events := make(chan Event, 16)
			p.OnChange(func(e Event) { events <- e })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Watch(ctx) }()
			defer func() { cancel(); <-done }()
			time.Sleep(300 * time.Millisecond) // the watcher's first look at the file, unchanged
			write(appDir, sp.edit(reference))
			write(oracleDir, sp.edit(value))
			oracle = sp.build(t, oracleDir, oraclePrefix, value)
			keys = append(slices.Clone(sp.keys), oracle.AllKeys()...)
			want := reads(oracle, keys, sp.unmarshal)
			deadline := time.Now().Add(10 * time.Second)
			for {
				got := reads(p.Viper(), keys, sp.unmarshal)
				if reflect.DeepEqual(got["AllSettings"], want["AllSettings"]) || time.Now().After(deadline) {
					differ(t, sp.name, "after a file edit under Watch", got, want, applied)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
