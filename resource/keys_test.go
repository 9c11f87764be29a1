package resource_test

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/resource"
)

// A misspelt key would never match an event, so the resource would never rebuild:
// New refuses it, naming the key. Keys that exist (set, a parent of set keys, or
// holding a reference that failed) are accepted.
func TestNewRefusesUnknownKeys(t *testing.T) {
	srv := newEmulator(t)
	srv.AddVault("myvault").SetSecret("db-conn", "host=db")
	v := yamlViper(t, "database:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=db-conn)\"\n  broken: \"@KeyVault(VaultName=myvault;SecretName=missing)\"\n  pool: 4\n")
	p, _ := load(t, srv, v)
	build := func(_ context.Context, c *viper.Viper) (string, error) { return "built", nil }

	_, err := resource.New(context.Background(), p, []string{"database.conn", "databse.pool"}, build, nil)
	if err == nil || !strings.Contains(err.Error(), `"databse.pool"`) || !strings.Contains(err.Error(), "not in the configuration") {
		t.Fatalf("New with a misspelt key: err = %v, want one naming \"databse.pool\"", err)
	}
	for _, keys := range [][]string{{"database.conn"}, {"Database"}, {"database.broken", "database.pool"}} {
		r, err := resource.New(context.Background(), p, keys, build, nil)
		if err != nil {
			t.Errorf("New(%v): %v", keys, err)
			continue
		}
		r.Close()
	}

	unloaded, err := viperkv.New(viper.New())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resource.New(context.Background(), unloaded, []string{"a"}, build, nil); err == nil || !strings.Contains(err.Error(), "Load") {
		t.Errorf("New before Load: err = %v, want one saying to call Load", err)
	}
}
