package resource_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// newEmulator starts an emulator whose managed identity endpoint the process's variables
// point at, as App Service sets them.
func newEmulator(t *testing.T) *kvtest.Server {
	t.Helper()
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	return srv
}

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

// load makes a provider for v that reaches srv with its managed identity, and loads it.
func load(t *testing.T, srv *kvtest.Server, v *viper.Viper, opts ...viperkv.Option) (*viperkv.Provider, error) {
	t.Helper()
	p, err := viperkv.New(v, append([]viperkv.Option{viperkv.WithTransport(srv.Client())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, p.Load(context.Background())
}

// exampleEmulator starts an emulator with the vault myvault for the examples.
func exampleEmulator() (srv *kvtest.Server, kv *kvtest.Vault, stop func()) {
	srv = kvtest.NewServer()
	for k, v := range srv.Env() {
		os.Setenv(k, v)
	}
	kv = srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	return srv, kv, func() {
		for k := range srv.Env() {
			os.Unsetenv(k)
		}
		srv.Close()
	}
}

func exampleViper(doc string) *viper.Viper {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		panic(err)
	}
	return v
}
