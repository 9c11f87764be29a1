package kvtest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	kvcloud "github.com/viperkv/viperkv/internal/cloud"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// NewServerT starts an emulator for the test t, as [NewServer] does, and closes it when
// t and its subtests end (t.Cleanup). If it cannot start, it fails t with t.Fatal.
//
// It reads and sets no environment variables, so tests using it can run in parallel
// (t.Parallel). Authenticate as the app's system-assigned identity with
// [Server.Credential], and send every request through [Server.Client]:
//
//	func TestOrders(t *testing.T) {
//		t.Parallel()
//		srv := kvtest.NewServerT(t)
//		kv := srv.AddVault("myvault") // https://myvault.vault.azure.net
//		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
//		kv.SetSecret("db-conn", "Server=test;...")
//		opts := azcore.ClientOptions{Transport: srv.Client()}
//		client, err := azsecrets.NewClient("https://myvault.vault.azure.net", srv.Credential(), &azsecrets.ClientOptions{ClientOptions: opts})
//		// ...
//	}
func NewServerT(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := Start(opts...)
	if err != nil {
		t.Fatalf("kvtest: NewServerT: %v", err)
		return nil // t.Fatal does not return from a real testing.TB
	}
	t.Cleanup(s.Close)
	return s
}

// systemCredential is the credential [Server.Credential] makes once per Server.
type systemCredential struct {
	once sync.Once
	cred azcore.TokenCredential
	err  error
}

// Credential returns a credential for the app's system-assigned identity (see
// [Server.SystemIdentity]), so roles granted to that identity apply to what it reads.
// Unlike azidentity.ManagedIdentityCredential with [Server.Env], it needs no environment
// variables, so tests using it can run in parallel, and its tokens are cached by the
// credential alone (not in MSAL's process-wide managed identity cache): the first
// request for a resource reaches this Server's token endpoint, later ones use the
// cached token, whatever other tests did.
//
// It is azidentity's own ClientSecretCredential, talking over HTTPS through
// [Server.Client] to the emulator's Entra ID at its production authority
// (https://login.microsoftonline.com/<tenant>, client credentials with a client secret
// the Server generated for the system identity's client ID). Its tokens carry the
// identity's oid and appid, as managed identity tokens do, so RBAC treats them alike;
// being app tokens, they have appidacr "1" and no xms_mirid. While the system identity is
// disabled ([WithoutSystemIdentity], [Server.SetSystemIdentityEnabled]) new tokens are
// refused with Entra ID's AADSTS700016 (unknown application).
//
// The credential does not read AZURE_AUTHORITY_HOST, AZURE_CLIENT_ID, AZURE_TENANT_ID or
// the managed identity variables. azidentity does read AZURE_REGIONAL_AUTHORITY_NAME for
// every client secret credential; a regional authority (<region>.login.microsoft.com)
// reaches the emulator too, and the credential sends nothing to any other host.
//
// Every call returns the same credential. It panics if azidentity refuses the tenant ID
// (see [WithTenantID]).
func (s *Server) Credential() azcore.TokenCredential {
	sc := &s.appCreds.system
	sc.once.Do(func() {
		secret := "kvtest~" + randomHex(20)
		s.addCredentials(SystemIdentityName, identityConfig{secrets: []string{secret}})
		sc.cred, sc.err = azidentity.NewClientSecretCredential(s.tenant, s.system.ClientID, secret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: azcore.ClientOptions{
				Transport: entraTransport{s.client},
				Cloud:     cloud.AzurePublic,
			}})
	})
	if sc.err != nil {
		panic(fmt.Sprintf("kvtest: Credential: %v", sc.err))
	}
	return sc.cred
}

// entraTransport is the transport of [Server.Credential]: the Server's client, for Entra
// ID's hosts only, with regional authorities (<region>.login.microsoft.com, which
// azidentity uses when AZURE_REGIONAL_AUTHORITY_NAME is set) sent to the emulator's
// Entra ID as login.microsoftonline.com. Any other host is refused, so the credential
// never talks to anything but the emulator.
type entraTransport struct{ c *http.Client }

// Do implements policy.Transporter.
func (t entraTransport) Do(req *http.Request) (*http.Response, error) {
	host := strings.ToLower(strings.TrimSuffix(req.URL.Hostname(), "."))
	switch {
	case kvcloud.IsAuthorityHost(host):
	case strings.HasSuffix(host, ".login.microsoft.com") || host == "login.microsoft.com":
		req = req.Clone(req.Context())
		req.URL.Host = "login.microsoftonline.com"
		req.Host = ""
	default:
		return nil, fmt.Errorf("kvtest: Server.Credential sends requests to the emulator's Entra ID only, not to %s", req.URL.Host)
	}
	return t.c.Do(req)
}
