package kvtest_test

import (
	"context"
	"fmt"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// The real managed identity credential and Key Vault client against the emulator, with
// the production vault URL.
func ExampleNewServer() {
	srv := kvtest.NewServer()
	defer srv.Close()
	// What App Service sets for an app with a managed identity. In a test, use t.Setenv.
	for k, v := range srv.Env() {
		os.Setenv(k, v)
		defer os.Unsetenv(k)
	}
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("greeting", "hello from the emulator")

	opts := azcore.ClientOptions{Transport: srv.Client()}
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts})
	if err != nil {
		fmt.Println(err)
		return
	}
	client, err := azsecrets.NewClient("https://myvault.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: opts})
	if err != nil {
		fmt.Println(err)
		return
	}
	resp, err := client.GetSecret(context.Background(), "greeting", "", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*resp.Value)
	fmt.Println(resp.ID.Name(), len(resp.ID.Version()))
	fmt.Println("challenges:", kv.Count(kvtest.OpChallenge), "gets:", kv.Count(kvtest.OpGetSecret))
	// Output:
	// hello from the emulator
	// greeting 32
	// challenges: 1 gets: 1
}
