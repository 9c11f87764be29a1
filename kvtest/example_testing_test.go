package kvtest_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// A service's test with its own emulator: no environment variables, so it can run in
// parallel with other tests, each with a server of its own. In a test:
//
//	func TestOrders(t *testing.T) {
//		t.Parallel()
//		srv := kvtest.NewServerT(t) // closed when the test ends
//		kv := srv.AddVault("myvault")
//		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
//		kv.SetSecret("db-password", "s3cret")
//
//		v := newConfig() // the service's Viper, with its production @KeyVault references
//		p, err := viperkv.New(v, viperkv.WithEmulator(srv))
//		if err != nil {
//			t.Fatal(err)
//		}
//		if err := p.Load(t.Context()); err != nil {
//			t.Fatal(err)
//		}
//		// ... p.GetString("db.dsn") holds the secret.
//	}
//
// An example has no *testing.T, so this one starts the server with [kvtest.NewServer]
// and closes it itself, which is what NewServerT does for a test.
func ExampleNewServerT() {
	srv := kvtest.NewServer() // in a test: srv := kvtest.NewServerT(t)
	defer srv.Close()
	kv := srv.AddVault("myvault") // serves https://myvault.vault.azure.net
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db-password", "s3cret")

	v := viper.New()
	v.SetConfigType("yaml")
	_ = v.ReadConfig(strings.NewReader(`
db:
  dsn: "host=db password=@KeyVault(VaultName=myvault;SecretName=db-password)"
`))

	// srv.Credential() is the app's system-assigned identity without IDENTITY_ENDPOINT;
	// srv.Client() routes the production host names to the emulator.
	p, err := viperkv.New(v, viperkv.WithEmulator(srv))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Load(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.GetString("db.dsn"))
	fmt.Println("token requests:", srv.Count(kvtest.OpToken), "secret reads:", kv.Count(kvtest.OpGetSecret))
	// Output:
	// host=db password=s3cret
	// token requests: 1 secret reads: 1
}
