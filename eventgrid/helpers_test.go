package eventgrid_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
)

// yamlViper returns a Viper holding the YAML document doc, as an app reads its config.
func yamlViper(t *testing.T, doc string) *viper.Viper {
	t.Helper()
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		t.Fatal(err)
	}
	return v
}

// statusOf returns p's status row for key, failing the test when there is none.
func statusOf(t *testing.T, p *viperkv.Provider, key string) viperkv.ReferenceStatus {
	t.Helper()
	for _, st := range p.Status() {
		if st.Key == key {
			return st
		}
	}
	t.Fatalf("no status for key %q in %+v", key, p.Status())
	return viperkv.ReferenceStatus{}
}

// waitPending waits until the notices the handler queued have been handled.
func waitPending(t *testing.T, p *viperkv.Provider) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for p.Pending() > 0 {
		if ctx.Err() != nil {
			t.Fatal("queued notices were not handled within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
