package kvtest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// newServer starts an emulator and points the App Service managed identity variables at
// it, as App Service does for a real app.
func newServer(t *testing.T, opts ...kvtest.Option) *kvtest.Server {
	t.Helper()
	srv := kvtest.NewServer(opts...)
	t.Cleanup(srv.Close)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	return srv
}

// useIMDS clears the variables that select another managed identity source, so MSAL
// falls back to IMDS at 169.254.169.254.
func useIMDS(t *testing.T) {
	t.Helper()
	for _, k := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"} {
		t.Setenv(k, "")
	}
}

// freshIdentity adds a user-assigned identity whose name no other test used, so MSAL's
// process-wide cache has no token for it and token requests can be counted.
func freshIdentity(t *testing.T, srv *kvtest.Server) kvtest.Identity {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return srv.AddUserIdentity("id-" + hex.EncodeToString(b))
}

func newCred(t *testing.T, srv *kvtest.Server, id azidentity.ManagedIDKind) *azidentity.ManagedIdentityCredential {
	t.Helper()
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client()},
		ID:            id,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func newSecretsClient(t *testing.T, srv *kvtest.Server, vaultURL string, cred azcore.TokenCredential) *azsecrets.Client {
	t.Helper()
	c, err := azsecrets.NewClient(vaultURL, cred, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client()},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// kvErr is Key Vault's error body.
type kvErr struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

// responseError unwraps an SDK error into status, code and innererror code.
func responseError(t *testing.T, err error) (status int, code, inner string) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error is not an *azcore.ResponseError: %v", err)
	}
	body, rerr := io.ReadAll(re.RawResponse.Body)
	if rerr != nil {
		t.Fatal(rerr)
	}
	var e kvErr
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error.Code != re.ErrorCode {
		t.Errorf("body code %q != ErrorCode %q", e.Error.Code, re.ErrorCode)
	}
	if e.Error.InnerError != nil {
		inner = e.Error.InnerError.Code
	}
	return re.StatusCode, re.ErrorCode, inner
}

// rawGet sends one request straight to a vault with an optional bearer token.
func rawGet(t *testing.T, srv *kvtest.Server, url, token string) (*http.Response, kvErr) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e kvErr
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp, e
}
