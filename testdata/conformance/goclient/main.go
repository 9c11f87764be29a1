// Command goclient reads a secret with the Azure SDK for Go configured by environment
// variables alone: no transport, no cloud configuration, challenge resource verification
// on, the vault's production URL. Against the standalone emulator it runs with the
// variables the emulator prints for its proxy (HTTPS_PROXY, HTTP_PROXY, SSL_CERT_FILE)
// and those of a managed identity (IDENTITY_ENDPOINT and IDENTITY_HEADER, or none for
// IMDS) or of AKS workload identity (AZURE_CLIENT_ID, AZURE_TENANT_ID,
// AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST).
//
//	go run ./testdata/conformance/goclient -credential workload-identity -secret db-conn
//
// It prints the secret's version and a hash of its value, never the value, and exits 1
// on any error. cmd/viperkv/emulator_test.go runs it.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

func main() {
	credential := flag.String("credential", "managed-identity", "managed-identity or workload-identity")
	vault := flag.String("vault", "https://myvault.vault.azure.net", "the vault's URL")
	secret := flag.String("secret", "db-conn", "the secret to read")
	flag.Parse()
	if err := run(*credential, *vault, *secret); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func run(credential, vault, secret string) error {
	var (
		cred azcore.TokenCredential
		err  error
	)
	switch credential {
	case "managed-identity":
		cred, err = azidentity.NewManagedIdentityCredential(nil)
	case "workload-identity":
		cred, err = azidentity.NewWorkloadIdentityCredential(nil)
	default:
		return fmt.Errorf("unknown -credential %q", credential)
	}
	if err != nil {
		return err
	}
	c, err := azsecrets.NewClient(vault, cred, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 1}},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := c.GetSecret(ctx, secret, "", nil)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(*r.Value))
	fmt.Printf("goclient: %s version=%s sha256=%x\n", r.ID.Name(), r.ID.Version(), sum[:8])
	return nil
}
