package kvtest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// AKS workload identity against the emulator: the emulator signs the service account
// token a pod's AZURE_FEDERATED_TOKEN_FILE holds, and its Entra token endpoint exchanges
// it for a vault token. In a test, write the file into t.TempDir().
func ExampleServer_FederatedToken() {
	srv := kvtest.NewServer()
	defer srv.Close()
	id := srv.AddUserIdentity("orders-api", kvtest.WithFederated())
	kv := srv.AddVault("myvault")
	kv.Grant(id, kvtest.RoleSecretsUser)
	kv.SetSecret("greeting", "hello, workload")

	dir, err := os.MkdirTemp("", "kvtest-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	tokenFile := filepath.Join(dir, "azure-identity-token")
	if err := os.WriteFile(tokenFile, []byte(srv.FederatedToken(id)), 0o600); err != nil {
		fmt.Println(err)
		return
	}

	// srv.Client() routes login.microsoftonline.com to the emulator's Entra ID.
	opts := azcore.ClientOptions{Transport: srv.Client(), Cloud: cloud.AzurePublic}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: opts,
		ClientID:      id.ClientID,
		TenantID:      srv.TenantID(),
		TokenFilePath: tokenFile,
	})
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
	// Output:
	// hello, workload
}
