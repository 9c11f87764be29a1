package viperkv_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// Resolving references with the system-assigned managed identity. The emulator stands in
// for Azure: it sets the same IDENTITY_ENDPOINT and IDENTITY_HEADER variables App Service
// sets, and its transport reaches it for production vault host names.
func Example() {
	srv := kvtest.NewServer()
	defer srv.Close()
	for k, v := range srv.Env() {
		os.Setenv(k, v)
		defer os.Unsetenv(k)
	}
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db-password", "s3cret")

	v := viper.New()
	v.SetConfigType("yaml")
	_ = v.ReadConfig(strings.NewReader(`
db:
  dsn: "host=db user=app password=@KeyVault(VaultName=myvault;SecretName=db-password)"
  pool: 10
`))

	p, err := viperkv.New(v, viperkv.WithTransport(srv.Client()))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Load(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.GetString("db.dsn"))
	fmt.Println(p.Viper().GetInt("db.pool"))
	for _, st := range p.Status() {
		fmt.Println(st.Key, st.Reference.Name, st.Status)
	}
	// Output:
	// host=db user=app password=s3cret
	// 10
	// db.dsn db-password Resolved
}
