package viperkv_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/viperkv/viperkv"
)

// failingCredential is a credential other than managed identity that cannot get a token,
// as az login's is on a machine without the az command.
type failingCredential struct{}

func (failingCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("AzureCLICredential: executable not found on path")
}

// A credential that is not a managed identity is not reported as MSINotEnabled ("no managed
// identity endpoint"): the status and reason name the credential's own failure.
func TestNonManagedCredentialFailureIsNamedAsSuch(t *testing.T) {
	srv := newEmulator(t)
	srv.AddVault("myvault").SetSecret("s", "v")
	_, err := load(t, srv, yamlViper(t, "k: \"@KeyVault(VaultName=myvault;SecretName=s)\"\n"),
		viperkv.WithCredential(failingCredential{}))
	var le *viperkv.LoadError
	if !errors.As(err, &le) || len(le.Failed) != 1 {
		t.Fatalf("Load = %v, want a LoadError with one failure", err)
	}
	f := le.Failed[0]
	if f.Status == viperkv.StatusMSINotEnabled || strings.Contains(f.Reason, "managed identity") ||
		!strings.Contains(f.Reason, "AzureCLICredential: executable not found on path") {
		t.Errorf("failure = %s: %s; want the credential's own reason, not a managed identity one", f.Status, f.Reason)
	}
}
