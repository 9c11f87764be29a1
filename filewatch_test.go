package viperkv_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// The config file tests run in real time on a real file system: what they prove is that
// fsnotify sees every way a file gets replaced, and that the reload never touches the app's
// Viper while the app reads it (the race detector watches real goroutines). They wait for
// events, never for a length of time. The logic of a reload (what it fetches, which events
// it makes) is tested through loadFile under simulated time.

// configFile is a config file laid out one way, with the way it gets replaced.
type configFile struct {
	name  string
	setup func(t *testing.T, dir, content string) (path string, update func(content string))
}

// configFileWays are the ways a config file gets changed in place or replaced.
var configFileWays = []configFile{
	{"in-place write", func(t *testing.T, dir, content string) (string, func(string)) {
		path := filepath.Join(dir, "config.yaml")
		writeFile(t, path, content)
		return path, func(c string) { writeFile(t, path, c) }
	}},
	{"rename and replace", func(t *testing.T, dir, content string) (string, func(string)) {
		path := filepath.Join(dir, "config.yaml")
		writeFile(t, path, content)
		return path, func(c string) {
			tmp := filepath.Join(dir, ".config.yaml.swp")
			writeFile(t, tmp, c)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"remove and create", func(t *testing.T, dir, content string) (string, func(string)) {
		path := filepath.Join(dir, "config.yaml")
		writeFile(t, path, content)
		return path, func(c string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, c)
		}
	}},
	{"configmap symlink swap", func(t *testing.T, dir, content string) (string, func(string)) {
		// What the kubelet does: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>;
		// an update writes a new timestamped dir, points ..data_tmp at it, renames it over
		// ..data (atomic) and removes the old dir.
		gen := 0
		current := ""
		publish := func(c string) {
			gen++
			next := fmt.Sprintf("..2024_%02d", gen)
			if err := os.Mkdir(filepath.Join(dir, next), 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, next, "config.yaml"), c)
			if err := os.Symlink(next, filepath.Join(dir, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if current != "" {
				if err := os.RemoveAll(filepath.Join(dir, current)); err != nil {
					t.Fatal(err)
				}
			}
			current = next
		}
		publish(content)
		path := filepath.Join(dir, "config.yaml")
		if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
			t.Fatal(err)
		}
		return path, publish
	}},
}

// isFileChange tells the file's own Changed event.
func isFileChange(e viperkv.Event) bool {
	return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventChanged && e.Secret.Name == ""
}

// TestConfigFileReload edits the config file every way it gets changed in practice. Each
// edit changes a plain value and adds a reference while keeping an existing one: the
// provider publishes the new configuration with one file event naming the changed keys,
// fetches only the new secret, and leaves the rest intact.
func TestConfigFileReload(t *testing.T) {
	srv := newEmulator(t)
	// The ways run at the same time (each on a vault of its own): they mostly wait for the
	// file to settle, and t.Parallel is not allowed next to newEmulator's t.Setenv.
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, way := range configFileWays {
		wg.Go(func() {
			t.Run(way.name, func(t *testing.T) {
				vault := fmt.Sprintf("cfgvault%d", i)
				kv := srv.AddVault(vault)
				kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
				kv.SetSecret("conn", "conn-value")
				kv.SetSecret("api-key", "api-key-value")
				kv.SetSecret("extra", "extra-value")
				base := fmt.Sprintf(`
app:
  name: %%s
  pool: 10
db:
  conn: "@KeyVault(VaultName=%s;SecretName=conn)"
`, vault)
				apiKey := fmt.Sprintf("api:\n  key: \"@KeyVault(SecretUri=https://%s.vault.azure.net/secrets/api-key/)\"\n", vault)
				extra := fmt.Sprintf("extra: \"prefix-@KeyVault(VaultName=%s;SecretName=extra)\"\n", vault)

				path, update := way.setup(t, t.TempDir(), fmt.Sprintf(base, "v1"))
				p, err := load(t, srv, fileViper(t, path), viperkv.WithRefreshInterval(time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				evs := collect(p)
				watch(t, p)
				kv.ResetCounters()

				steps := []struct {
					content  string
					keys     []string
					name     string
					newValue map[string]string
				}{
					{fmt.Sprintf(base, "v2") + apiKey, []string{"api.key", "app.name"}, "v2", map[string]string{"api.key": "api-key-value"}},
					{fmt.Sprintf(base, "v3") + apiKey + extra, []string{"app.name", "extra"}, "v3", map[string]string{"extra": "prefix-extra-value"}},
					// A reference removed: nothing to fetch.
					{fmt.Sprintf(base, "v4") + apiKey, []string{"app.name", "extra"}, "v4", nil},
				}
				wantGets := []int64{1, 2, 2}
				from := 0
				for n, step := range steps {
					update(step.content)
					// The file's event (Secret zero); a new secret's first version has one of its own.
					ev, at := evs.waitFor(t, from, "file Changed", isFileChange)
					from = at + 1
					if !slices.Equal(ev.Keys, step.keys) {
						t.Errorf("edit %d: event keys %v, want %v", n+1, ev.Keys, step.keys)
					}
					if ev.Previous.GetString("app.name") == step.name || ev.Current.GetString("app.name") != step.name {
						t.Errorf("edit %d: Previous/Current app.name = %q/%q", n+1, ev.Previous.GetString("app.name"), ev.Current.GetString("app.name"))
					}
					c := p.Viper()
					if got := c.GetString("app.name"); got != step.name {
						t.Errorf("edit %d: app.name = %q, want %q", n+1, got, step.name)
					}
					for k, want := range step.newValue {
						if got := c.GetString(k); got != want {
							t.Errorf("edit %d: %s = %q, want %q", n+1, k, got, want)
						}
						if st := statusOf(t, p, k); st.Status != viperkv.StatusResolved {
							t.Errorf("edit %d: %s status %+v", n+1, k, st)
						}
					}
					if c.GetString("db.conn") != "conn-value" || c.GetInt("app.pool") != 10 {
						t.Errorf("edit %d: siblings changed: db.conn=%q app.pool=%v", n+1, c.GetString("db.conn"), c.Get("app.pool"))
					}
					// Only new secrets were fetched; db.conn (and earlier ones) were reused.
					if got := kv.Count(kvtest.OpGetSecret); got != wantGets[n] {
						t.Errorf("edit %d: %d secret GETs in all, want %d (one per new secret)", n+1, got, wantGets[n])
					}
				}
				if p.GetString("api.key") != "api-key-value" || p.Viper().IsSet("extra") {
					t.Errorf("after the last edit: api.key = %q, extra set: %v", p.GetString("api.key"), p.Viper().IsSet("extra"))
				}
				for _, e := range evs.all() {
					// A removed file may be seen (and reported) between remove and create.
					if e.Kind == viperkv.EventError && way.name != "remove and create" {
						t.Errorf("unexpected error event: %v", e)
					}
				}
			})
		})
	}

	wg.Go(func() {
		t.Run("unparsable file", func(t *testing.T) {
			kv := srv.AddVault("cfgvaultbad")
			kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
			kv.SetSecret("conn", "conn-value")
			kv.SetSecret("fixed", "fixed-value")
			good := "app:\n  name: v1\n  pool: 10\ndb:\n  conn: \"@KeyVault(VaultName=cfgvaultbad;SecretName=conn)\"\n"
			path := filepath.Join(t.TempDir(), "config.yaml")
			writeFile(t, path, good)
			p, err := load(t, srv, fileViper(t, path), viperkv.WithRefreshInterval(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			evs := collect(p)
			watch(t, p)

			writeFile(t, path, "app:\n  name: [v2\n  pool: 10\n") // unclosed flow sequence
			ev, at := evs.waitFor(t, 0, "file Error", func(e viperkv.Event) bool {
				return e.Source == viperkv.SourceFile && e.Kind == viperkv.EventError
			})
			if ev.Err == nil || !strings.Contains(ev.Err.Error(), "config.yaml") {
				t.Errorf("error event Err = %v, want it to name the file", ev.Err)
			}
			c := p.Viper()
			if c.GetString("app.name") != "v1" || c.GetInt("app.pool") != 10 || c.GetString("db.conn") != "conn-value" {
				t.Errorf("last good configuration not kept: %v", p.MaskedSettings())
			}
			if st := statusOf(t, p, "db.conn"); st.Status != viperkv.StatusResolved {
				t.Errorf("db.conn status %+v after a parse error", st)
			}

			// Watching goes on: the fixed file is picked up.
			writeFile(t, path, good+"fixed: \"@KeyVault(VaultName=cfgvaultbad;SecretName=fixed)\"\n")
			ch, _ := evs.waitFor(t, at+1, "file Changed", isFileChange)
			if !slices.Equal(ch.Keys, []string{"fixed"}) {
				t.Errorf("changed keys after the fix = %v, want [fixed]", ch.Keys)
			}
			if p.GetString("fixed") != "fixed-value" || p.GetString("app.name") != "v1" {
				t.Errorf("after the fix: fixed=%q app.name=%q", p.GetString("fixed"), p.GetString("app.name"))
			}
			if n := count(evs.all(), kind(viperkv.EventError)); n != 1 {
				t.Errorf("%d error events for one bad file, want 1: %v", n, evs.all())
			}
		})
	})
}

// readUntil calls read (as an app keeps reading its own Viper) on a goroutine until the
// returned stop is called, and reports a value other than want if it saw one.
func readUntil(t *testing.T, read func() string, want string) (stop func()) {
	t.Helper()
	var done atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	var wrong atomic.Value
	wg.Go(func() {
		for !done.Load() {
			if got := read(); got != want {
				wrong.Store(got)
			}
			reads.Add(1)
			runtime.Gosched()
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			done.Store(true)
			wg.Wait()
			if w := wrong.Load(); w != nil {
				t.Errorf("the app's Viper changed under its reader: read %q, want %q", w, want)
			}
			if reads.Load() == 0 {
				t.Error("the reader never read: the check proves nothing")
			}
		})
	}
	t.Cleanup(stop) // when the test ends early
	return stop
}

// Defect 1 of issue #11: a file reload wrote the Viper passed to New (ReadInConfig on it).
// An app that keeps reading its Viper during Watch must see no data race (under -race) and
// the values it had; the provider serves the new file.
func TestWatchNeverWritesTheSourceViper(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("conn", "conn-v1")
	kv.SetSecret("extra", "extra-v1")
	const ref = "@KeyVault(VaultName=myvault;SecretName=conn)"
	doc := "db:\n  conn: \"" + ref + "\"\nname: %s\n"
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, fmt.Sprintf(doc, "v1"))
	v := fileViper(t, path)
	p, err := load(t, srv, v, viperkv.WithRefreshInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(p)
	stop := readUntil(t, func() string {
		_ = v.AllSettings()
		return v.GetString("name") + " " + v.GetString("db.conn")
	}, "v1 "+ref)
	watch(t, p)

	writeFile(t, path, fmt.Sprintf(doc, "v2")+"extra: \"@KeyVault(VaultName=myvault;SecretName=extra)\"\n")
	evs.waitFor(t, 0, "file Changed", isFileChange)
	stop()
	if p.GetString("name") != "v2" || p.GetString("extra") != "extra-v1" || p.GetString("db.conn") != "conn-v1" {
		t.Errorf("the provider does not serve the edited file: %v", p.MaskedSettings())
	}
	if v.GetString("name") != "v1" || v.IsSet("extra") {
		t.Errorf("the app's Viper was written: name = %q, extra set: %v", v.GetString("name"), v.IsSet("extra"))
	}
}

// Defect 1, second part: two Providers on one Viper, both watching its file, must not race
// each other (under -race) and must both serve the edited file.
func TestTwoProvidersWatchOneViper(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	kv.SetSecret("conn", "conn-v1")
	doc := "db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\nname: %s\n"
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, fmt.Sprintf(doc, "v1"))
	v := fileViper(t, path)
	var ps []*viperkv.Provider
	var evs []*events
	for range 2 {
		p, err := load(t, srv, v, viperkv.WithRefreshInterval(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ps, evs = append(ps, p), append(evs, collect(p))
	}
	stop := readUntil(t, func() string { return v.GetString("name") }, "v1")
	for _, p := range ps {
		watch(t, p)
	}

	writeFile(t, path, fmt.Sprintf(doc, "v2"))
	for i, p := range ps {
		evs[i].waitFor(t, 0, fmt.Sprintf("file Changed (provider %d)", i+1), isFileChange)
		if p.GetString("name") != "v2" || p.GetString("db.conn") != "conn-v1" {
			t.Errorf("provider %d after the edit: %v", i+1, p.MaskedSettings())
		}
	}
	stop()
	if got := v.GetString("name"); got != "v1" {
		t.Errorf("the shared Viper was written: name = %q", got)
	}
}
