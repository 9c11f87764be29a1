package remote_test

import (
	"fmt"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
	"github.com/viperkv/viperkv/remote"
)

// A whole configuration document kept in one secret, read through Viper's remote
// configuration API. References inside the document are resolved too.
func ExampleRegister() {
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db-password", "s3cret")
	kv.SetSecret("app-settings", `
app: {name: billing}
db: {dsn: "host=db user=app password=@KeyVault(VaultName=myvault;SecretName=db-password)"}
`, kvtest.WithContentType("application/yaml"))

	// Once, at start-up; the options are viperkv.New's.
	if err := remote.Register(viperkv.WithEmulator(srv)); err != nil {
		fmt.Println(err)
		return
	}
	defer remote.Unregister()

	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.AddRemoteProvider(remote.ProviderName, "https://myvault.vault.azure.net", "app-settings"); err != nil {
		fmt.Println(err)
		return
	}
	if err := v.ReadRemoteConfig(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(v.GetString("app.name"))
	fmt.Println(v.GetString("db.dsn"))
	// Output:
	// billing
	// host=db user=app password=s3cret
}
