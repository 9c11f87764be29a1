package kvtest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/kvtest"
)

// A vault's networking settings refuse every caller with a valid token, whatever its
// roles, with Key Vault's 403 (code Forbidden, inner ForbiddenByFirewall or
// ForbiddenByConnection, the service's message naming the caller), through the real
// azsecrets client. A request without a token still gets the challenge.
func TestNetworkAccess(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("netvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsOfficer)
	kv.SetSecret("s", "v")
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)
	oid := srv.SystemIdentity().ObjectID

	for _, tc := range []struct {
		name   string
		na     kvtest.NetworkAccess
		inner  string
		prefix string
	}{
		{"firewall", kvtest.NetworkAccess{FirewallDeny: true}, "ForbiddenByFirewall",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.1\r\nCaller: appid="},
		{"public access disabled", kvtest.NetworkAccess{PublicAccessDisabled: true}, "ForbiddenByConnection",
			"Public network access is disabled and request is not from a trusted service nor via an approved private link.\r\nCaller: appid="},
		{"public access disabled overrides the firewall", kvtest.NetworkAccess{PublicAccessDisabled: true, FirewallDeny: true}, "ForbiddenByConnection",
			"Public network access is disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv.ResetCounters()
			kv.SetNetworkAccess(tc.na)
			defer kv.SetNetworkAccess(kvtest.NetworkAccess{})
			if got := kv.NetworkAccess(); got != tc.na {
				t.Errorf("NetworkAccess() = %+v, want %+v", got, tc.na)
			}
			_, err := c.GetSecret(ctx, "s", "", nil)
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if st, code, inner := responseError(t, err); st != 403 || code != "Forbidden" || inner != tc.inner {
				t.Errorf("GET: %d %s (%s), want 403 Forbidden (%s)", st, code, inner, tc.inner)
			}
			wantMsg := strings.ReplaceAll(strings.ReplaceAll(tc.prefix, "\r", `\r`), "\n", `\n`) // as azcore prints the JSON body
			if !strings.Contains(msg, wantMsg) || !strings.Contains(msg, "oid="+oid) || !strings.Contains(msg, `Vault: netvault;location=kvtest`) {
				t.Errorf("message:\n%s\nwant %q, the caller's oid and the vault", msg, wantMsg)
			}
			pager := c.NewListSecretPropertiesPager(nil)
			_, err = pager.NextPage(ctx)
			if st, _, inner := responseError(t, err); st != 403 || inner != tc.inner {
				t.Errorf("list: %d (%s), want 403 (%s)", st, inner, tc.inner)
			}
			if n, g := kv.Count(kvtest.OpNetworkDenied), kv.Count(kvtest.OpGetSecret)+kv.Count(kvtest.OpListSecrets); n != 2 || g != 0 {
				t.Errorf("%d network denials, %d requests served; want 2, 0", n, g)
			}
		})
	}

	// Without a token: the challenge, as on Azure, whose 403 names the caller of a token.
	kv.SetNetworkAccess(kvtest.NetworkAccess{FirewallDeny: true})
	resp, body := rawGet(t, srv, kv.URL()+"/secrets/s?api-version=7.5", "")
	if resp.StatusCode != 401 || body.Error.Code != "Unauthorized" || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("without a token: %d %s, want the 401 challenge", resp.StatusCode, body.Error.Code)
	}
	kv.SetNetworkAccess(kvtest.NetworkAccess{})
	if _, err := c.GetSecret(ctx, "s", "", nil); err != nil {
		t.Errorf("after the rule is lifted: %v", err)
	}
}

// On an access policy vault a denied request answers 403 ForbiddenByPolicy with the
// service's message, naming the permission the operation needs; the role assignments
// still decide who may do what.
func TestAccessPolicyModel(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("apvault")
	kv.SetSecret("s", "v")
	kv.SetPermissionModel(kvtest.PermissionAccessPolicy)
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)

	_, err := c.GetSecret(ctx, "s", "", nil)
	if st, code, inner := responseError(t, err); st != 403 || code != "Forbidden" || inner != "ForbiddenByPolicy" {
		t.Errorf("GET: %d %s (%s), want 403 Forbidden (ForbiddenByPolicy)", st, code, inner)
	}
	want := "The user, group or application 'appid="
	if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "oid="+srv.SystemIdentity().ObjectID) ||
		!strings.Contains(msg, "' does not have secrets get permission on key vault 'apvault;location=kvtest'. For help resolving this issue") {
		t.Errorf("message:\n%s", msg)
	}
	_, err = c.NewListSecretPropertiesPager(nil).NextPage(ctx)
	if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByPolicy" || !strings.Contains(err.Error(), "does not have secrets list permission") {
		t.Errorf("list: %d (%s): %v", st, inner, err)
	}
	if n := kv.Count(kvtest.OpForbidden); n != 2 {
		t.Errorf("%d denials counted, want 2", n)
	}
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	if _, err := c.GetSecret(ctx, "s", "", nil); err != nil {
		t.Errorf("granted: %v", err)
	}
	kv.SetPermissionModel(kvtest.PermissionRBAC)
	kv.Revoke(srv.SystemIdentity())
	_, err = c.GetSecret(ctx, "s", "", nil)
	if _, _, inner := responseError(t, err); inner != "ForbiddenByRbac" {
		t.Errorf("back to RBAC: %s, want ForbiddenByRbac", inner)
	}
}

// The seed sets a vault's network rules and permission model, and refuses values it does
// not know, naming the field.
func TestSeedNetworkAccess(t *testing.T) {
	sd, err := kvtest.ParseSeed(strings.NewReader(`
vaults:
  - name: private
    public_network_access: Disabled
  - name: walled
    firewall: deny
  - name: policies
    permission_model: access_policy
  - name: open
    public_network_access: enabled
    firewall: allow
    permission_model: rbac
`))
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t)
	if err := kvtest.ApplySeed(srv, sd); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]kvtest.NetworkAccess{
		"private": {PublicAccessDisabled: true}, "walled": {FirewallDeny: true}, "policies": {}, "open": {},
	} {
		if got := srv.Vault(name).NetworkAccess(); got != want {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
	c := newSecretsClient(t, srv, srv.Vault("policies").URL(), newCred(t, srv, nil))
	_, err = c.GetSecret(ctxTimeout(t, 30*time.Second), "s", "", nil)
	if _, _, inner := responseError(t, err); inner != "ForbiddenByPolicy" {
		t.Errorf("access policy vault: %s, want ForbiddenByPolicy", inner)
	}

	for doc, want := range map[string]string{
		"vaults:\n  - name: v\n    public_network_access: off\n":  `vaults[0]: public_network_access "off": want enabled or disabled`,
		"vaults:\n  - name: v\n    firewall: block\n":             `vaults[0]: firewall "block": want allow or deny`,
		"vaults:\n  - name: v\n    permission_model: acl\n":       `vaults[0]: permission_model "acl": want rbac or access_policy`,
		"vaults:\n  - name: v\n    firewal: deny\n":               `unknown field "firewal" in vault "v" (line 3)`,
		"vaults:\n  - name: v\n    public_network_access: [no]\n": `field "public_network_access" in vault "v" (line 3): want a string`,
	} {
		if _, err := kvtest.ParseSeed(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("seed:\n%s\nerror %v, want %q", doc, err, want)
		}
	}
}
