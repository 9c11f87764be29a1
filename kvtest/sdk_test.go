package kvtest_test

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

func TestGetSecretAppServiceSystemIdentity(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	v1 := kv.SetSecret("db-conn", "old", kvtest.WithContentType("text/plain"), kvtest.WithTags(map[string]string{"env": "test"}))
	v2 := kv.SetSecret("db-conn", "new")
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)

	latest, err := c.GetSecret(ctx, "db-conn", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *latest.Value != "new" || latest.ID.Version() != v2 || latest.ID.Name() != "db-conn" {
		t.Errorf("latest = %q %s", *latest.Value, *latest.ID)
	}
	if want := "https://myvault.vault.azure.net/secrets/db-conn/" + v2; string(*latest.ID) != want {
		t.Errorf("id = %s, want %s", *latest.ID, want)
	}
	a := latest.Attributes
	if !*a.Enabled || *a.RecoveryLevel != "Recoverable+Purgeable" || *a.RecoverableDays != 90 || a.Created == nil || a.Updated == nil {
		t.Errorf("attributes = %+v", a)
	}
	old, err := c.GetSecret(ctx, "DB-CONN", v1, nil) // names are case-insensitive
	if err != nil {
		t.Fatal(err)
	}
	if *old.Value != "old" || *old.ContentType != "text/plain" || *old.Tags["env"] != "test" {
		t.Errorf("v1 = %q %v %v", *old.Value, old.ContentType, old.Tags)
	}
	if got := kv.Count(kvtest.OpChallenge); got != 1 {
		t.Errorf("challenges = %d, want 1 (counted apart from GETs)", got)
	}
	if got := kv.Count(kvtest.OpGetSecret); got != 2 {
		t.Errorf("GETs = %d, want 2", got)
	}
	if srv.Count(kvtest.OpDiscovery) < 1 || srv.Count(kvtest.OpJWKS) < 1 {
		// The keys may come from an earlier fetch of this server only, never from
		// another server: every server starts with an empty key cache.
		t.Errorf("discovery=%d jwks=%d: the vault did not learn the keys from the Entra listener",
			srv.Count(kvtest.OpDiscovery), srv.Count(kvtest.OpJWKS))
	}
}

func TestGetSecretErrors(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "x")
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)

	_, err := c.GetSecret(ctx, "nope", "", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("missing secret: %d %s", st, code)
	}
	if !strings.Contains(err.Error(), "A secret with (name/id) nope was not found in this key vault") {
		t.Errorf("message: %v", err)
	}
	_, err = c.GetSecret(ctx, "s", "0123456789abcdef0123456789abcdef", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("missing version: %d %s", st, code)
	}
	if !strings.Contains(err.Error(), "(name/id) s/0123456789abcdef0123456789abcdef was not found") {
		t.Errorf("message: %v", err)
	}
}

func TestExpiredAndNotYetValidSecretsAreReturned(t *testing.T) {
	// Key Vault treats exp and nbf of secrets as information: GET still returns them.
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	exp := time.Now().Add(-time.Hour).Truncate(time.Second)
	nbf := time.Now().Add(time.Hour).Truncate(time.Second)
	kv.SetSecret("expired", "e", kvtest.WithExpires(exp))
	kv.SetSecret("future", "f", kvtest.WithNotBefore(nbf))
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)
	r, err := c.GetSecret(ctx, "expired", "", nil)
	if err != nil || *r.Value != "e" || !r.Attributes.Expires.Equal(exp) {
		t.Errorf("expired: %v %+v", err, r.Attributes)
	}
	r, err = c.GetSecret(ctx, "future", "", nil)
	if err != nil || *r.Value != "f" || !r.Attributes.NotBefore.Equal(nbf) {
		t.Errorf("not yet valid: %v %+v", err, r.Attributes)
	}
}

func TestSetUpdateDeleteSecret(t *testing.T) {
	// Deletions and recoveries complete at once here; TestDeletionTakesTime covers the
	// deletion window, TestRecoveryTakesTime the recovery delay.
	srv := newServer(t, kvtest.WithDeletionWindow(0), kvtest.WithRecoveryDelay(0))
	id := freshIdentity(t, srv)
	kv := srv.AddVault("myvault")
	kv.Grant(id, kvtest.RoleSecretsOfficer)
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(id.ClientID)))
	ctx := ctxTimeout(t, 30*time.Second)

	exp := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	set, err := c.SetSecret(ctx, "api-key", azsecrets.SetSecretParameters{
		Value:            to.Ptr("k1"),
		ContentType:      to.Ptr("text/plain"),
		Tags:             map[string]*string{"owner": to.Ptr("team")},
		SecretAttributes: &azsecrets.SecretAttributes{Expires: &exp},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1 := set.ID.Version()
	if *set.Value != "k1" || len(v1) != 32 || !set.Attributes.Expires.Equal(exp) || *set.Tags["owner"] != "team" {
		t.Errorf("set = %+v", set.Secret)
	}
	if got, _ := kv.SecretValue("api-key", v1); got != "k1" {
		t.Errorf("stored value %q", got)
	}
	set2, err := c.SetSecret(ctx, "api-key", azsecrets.SetSecretParameters{Value: to.Ptr("k2")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := set2.ID.Version()

	// Disable the latest version: GET fails with 403 SecretDisabled, the old one still works.
	upd, err := c.UpdateSecretProperties(ctx, "api-key", v2, azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(false)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *upd.Attributes.Enabled || upd.Value != nil {
		t.Errorf("update response: enabled=%v value=%v (PATCH returns no value)", *upd.Attributes.Enabled, upd.Value)
	}
	_, err = c.GetSecret(ctx, "api-key", "", nil)
	st, code, inner := responseError(t, err)
	if st != 403 || code != "Forbidden" || inner != "SecretDisabled" || !strings.Contains(err.Error(), "Operation get is not allowed on a disabled secret.") {
		t.Errorf("disabled: %d %s %s %v", st, code, inner, err)
	}
	if r, err := c.GetSecret(ctx, "api-key", v1, nil); err != nil || *r.Value != "k1" {
		t.Errorf("v1 after disabling v2: %v", err)
	}
	// An empty version updates the latest (PATCH /secrets/{name}/).
	if _, err := c.UpdateSecretProperties(ctx, "api-key", "", azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(true)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if r, err := c.GetSecret(ctx, "api-key", "", nil); err != nil || *r.Value != "k2" {
		t.Errorf("re-enabled latest: %v", err)
	}

	del, err := c.DeleteSecret(ctx, "api-key", nil)
	if err != nil {
		t.Fatal(err)
	}
	if del.RecoveryID == nil || *del.RecoveryID != "https://myvault.vault.azure.net/deletedsecrets/api-key" || del.DeletedDate == nil {
		t.Errorf("delete response: %+v", del.DeletedSecret)
	}
	_, err = c.GetSecret(ctx, "api-key", "", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("after delete: %d %s", st, code)
	}
	// Soft delete: the name cannot be reused until purged or recovered.
	_, err = c.SetSecret(ctx, "api-key", azsecrets.SetSecretParameters{Value: to.Ptr("k3")}, nil)
	if st, _, inner := responseError(t, err); st != 409 || inner != "ObjectIsDeletedButRecoverable" {
		t.Errorf("set over deleted: %d %s", st, inner)
	}
	if _, err := c.RecoverDeletedSecret(ctx, "api-key", nil); err != nil {
		t.Fatal(err)
	}
	if r, err := c.GetSecret(ctx, "api-key", "", nil); err != nil || *r.Value != "k2" {
		t.Errorf("after recover: %v", err)
	}
	if _, err := c.DeleteSecret(ctx, "api-key", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PurgeDeletedSecret(ctx, "api-key", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSecret(ctx, "api-key", azsecrets.SetSecretParameters{Value: to.Ptr("k4")}, nil); err != nil {
		t.Errorf("set after purge: %v", err)
	}
	for op, want := range map[kvtest.Op]int64{kvtest.OpSetSecret: 4, kvtest.OpUpdateSecret: 2, kvtest.OpDeleteSecret: 2} {
		if got := kv.Count(op); got != want {
			t.Errorf("Count(%s) = %d, want %d", op, got, want)
		}
	}
}

func TestListPagers(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	for i := range 60 {
		kv.SetSecret(fmt.Sprintf("s%02d", i), "v")
	}
	var versions []string
	for i := range 30 {
		versions = append(versions, kv.SetSecret("rotated", fmt.Sprint(i)))
	}
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)
	srv.ResetCounters()

	var names []string
	pager := c.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Value) > 25 {
			t.Errorf("page of %d", len(page.Value))
		}
		for _, p := range page.Value {
			if p.ID.Version() != "" {
				t.Errorf("list id has a version: %s", *p.ID)
			}
			names = append(names, p.ID.Name())
		}
	}
	if len(names) != 61 || names[0] != "rotated" || names[60] != "s59" {
		t.Errorf("%d names: %v", len(names), names)
	}
	if got := kv.Count(kvtest.OpListSecrets); got != 3 {
		t.Errorf("list pages = %d, want 3", got)
	}

	var got []string
	vp := c.NewListSecretPropertiesVersionsPager("rotated", nil)
	for vp.More() {
		page, err := vp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Value {
			got = append(got, p.ID.Version())
		}
	}
	// Listed by version ID, not in creation order (Key Vault documents no order).
	if !slices.IsSorted(got) || !sameSet(got, versions) {
		t.Errorf("versions = %v, want %v sorted", got, versions)
	}
	if n := kv.Count(kvtest.OpListVersions); n != 2 {
		t.Errorf("version pages = %d, want 2", n)
	}
	if n := kv.Count(kvtest.OpGetSecret); n != 0 {
		t.Errorf("lists counted as GETs: %d", n)
	}
}

func TestUserAssignedIdentities(t *testing.T) {
	for _, imds := range []bool{false, true} {
		t.Run(map[bool]string{false: "AppService", true: "IMDS"}[imds], func(t *testing.T) {
			srv := newServer(t)
			if imds {
				useIMDS(t)
			}
			id := freshIdentity(t, srv)
			kv := srv.AddVault("myvault")
			kv.Grant(id, kvtest.RoleSecretsUser)
			kv.SetSecret("s", "user-assigned")
			ctx := ctxTimeout(t, 30*time.Second)
			for _, mid := range []azidentity.ManagedIDKind{
				azidentity.ClientID(id.ClientID),
				azidentity.ObjectID(id.ObjectID),
				azidentity.ResourceID(id.ResourceID),
			} {
				c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, mid))
				r, err := c.GetSecret(ctx, "s", "", nil)
				if err != nil {
					t.Fatalf("%T: %v", mid, err)
				}
				if *r.Value != "user-assigned" {
					t.Errorf("%T: value %q", mid, *r.Value)
				}
			}
			// One token per way of naming the identity: MSAL keys its cache by the ID given.
			if got := srv.Count(kvtest.OpToken); got != 3 {
				t.Errorf("token requests = %d, want 3", got)
			}
		})
	}
}

func TestSystemIdentityThroughIMDS(t *testing.T) {
	srv := newServer(t)
	useIMDS(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "imds")
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	r, err := c.GetSecret(ctxTimeout(t, 30*time.Second), "s", "", nil)
	if err != nil || *r.Value != "imds" {
		t.Fatalf("%v", err)
	}
}

func TestUnknownUserIdentity(t *testing.T) {
	for _, imds := range []bool{false, true} {
		t.Run(map[bool]string{false: "AppService", true: "IMDS"}[imds], func(t *testing.T) {
			srv := newServer(t)
			if imds {
				useIMDS(t)
			}
			cred := newCred(t, srv, azidentity.ClientID("00000000-0000-0000-0000-00000000beef"))
			_, err := cred.GetToken(ctxTimeout(t, 30*time.Second), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
			var afe *azidentity.AuthenticationFailedError
			if !errors.As(err, &afe) || afe.RawResponse == nil || afe.RawResponse.StatusCode != 400 {
				t.Fatalf("err = %v", err)
			}
			want := map[bool]string{false: "Unable to load the proper Managed Identity.", true: "Identity not found"}[imds]
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
			if srv.Count(kvtest.OpToken) != 0 {
				t.Error("a failed token request was counted")
			}
		})
	}
}

func TestSystemIdentityDisabled(t *testing.T) {
	// A resource no other managed identity test asks for, so MSAL's process-wide cache
	// holds no token. It must be one Entra ID knows (the emulator issues tokens for Key
	// Vault's resources only).
	scope := []string{"https://vault.usgovcloudapi.net/.default"}
	for _, imds := range []bool{false, true} {
		t.Run(map[bool]string{false: "AppService", true: "IMDS"}[imds], func(t *testing.T) {
			srv := newServer(t, kvtest.WithoutSystemIdentity(), kvtest.WithTokenLifetime(5*time.Minute))
			if imds {
				useIMDS(t)
			}
			_, err := newCred(t, srv, nil).GetToken(ctxTimeout(t, 30*time.Second), policy.TokenRequestOptions{Scopes: scope})
			if err == nil {
				t.Fatal("got a token for a disabled system identity")
			}
			var afe *azidentity.AuthenticationFailedError
			if imds {
				// azidentity reports IMDS's 400 for a system identity as "credential unavailable".
				if errors.As(err, &afe) || !strings.Contains(err.Error(), "failed to authenticate a system assigned identity") {
					t.Errorf("IMDS error = %T %v", err, err)
				}
			} else if !errors.As(err, &afe) || afe.RawResponse.StatusCode != 400 {
				t.Errorf("App Service error = %T %v", err, err)
			}
			// Enabled again, the same credential gets a token (5 min tokens are never cached).
			srv.SetSystemIdentityEnabled(true)
			tk, err := newCred(t, srv, nil).GetToken(ctxTimeout(t, 30*time.Second), policy.TokenRequestOptions{Scopes: scope})
			if err != nil || tk.Token == "" {
				t.Fatalf("after enabling: %v", err)
			}
		})
	}
}

func TestRBAC(t *testing.T) {
	srv := newServer(t)
	reader := freshIdentity(t, srv)
	user := freshIdentity(t, srv)
	kv := srv.AddVault("myvault")
	kv.SetSecret("s", "x")
	kv.Grant(reader, kvtest.RoleReader)
	kv.Grant(user, kvtest.RoleSecretsUser)
	ctx := ctxTimeout(t, 30*time.Second)

	rc := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(reader.ClientID)))
	pager := rc.NewListSecretPropertiesPager(nil)
	if _, err := pager.NextPage(ctx); err != nil {
		t.Errorf("reader list: %v", err)
	}
	_, err := rc.GetSecret(ctx, "s", "", nil)
	if st, code, inner := responseError(t, err); st != 403 || code != "Forbidden" || inner != "ForbiddenByRbac" {
		t.Errorf("reader get: %d %s %s", st, code, inner)
	}
	if !strings.Contains(err.Error(), "Microsoft.KeyVault/vaults/secrets/getSecret/action") {
		t.Errorf("forbidden message lacks the action: %v", err)
	}

	uc := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(user.ClientID)))
	if _, err := uc.GetSecret(ctx, "s", "", nil); err != nil {
		t.Fatal(err)
	}
	_, err = uc.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("y")}, nil)
	if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" {
		t.Errorf("secrets user set: %d %s", st, inner)
	}
	kv.Revoke(user)
	_, err = uc.GetSecret(ctx, "s", "", nil)
	if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" {
		t.Errorf("after revoke: %d %s", st, inner)
	}
	if got := kv.Count(kvtest.OpForbidden); got != 3 {
		t.Errorf("forbidden = %d, want 3", got)
	}
	if got := kv.Count(kvtest.OpGetSecret); got != 1 {
		t.Errorf("GETs = %d, want 1 (denied requests are not counted as GETs)", got)
	}
}

func TestUnknownVaultIsDNSNotFound(t *testing.T) {
	srv := newServer(t)
	// azcore retries transport errors, a DNS miss included (about 8 s); skip that here.
	c, err := azsecrets.NewClient("https://novault.vault.azure.net", newCred(t, srv, nil), &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: srv.Client(), Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetSecret(ctxTimeout(t, 30*time.Second), "s", "", nil)
	var dns *net.DNSError
	if !errors.As(err, &dns) || !dns.IsNotFound || dns.Name != "novault.vault.azure.net" {
		t.Fatalf("err = %v", err)
	}
}

func TestSovereignCloudVault(t *testing.T) {
	srv := newServer(t)
	id := freshIdentity(t, srv)
	kv := srv.AddVault("cnvault.vault.azure.cn")
	if kv.URL() != "https://cnvault.vault.azure.cn" || kv.Resource() != "https://vault.azure.cn" || srv.Vault("cnvault.vault.azure.cn") != kv {
		t.Fatalf("vault %s resource %s", kv.URL(), kv.Resource())
	}
	kv.Grant(id, kvtest.RoleSecretsUser)
	kv.SetSecret("s", "china")
	// The challenge's resource is the China cloud's; a public cloud token is rejected.
	resp, _ := rawGet(t, srv, kv.URL()+"/secrets/s/?api-version=2026-04-01", "")
	want := `Bearer authorization="https://login.chinacloudapi.cn/` + srv.TenantID() + `", resource="https://vault.azure.cn"`
	if got := resp.Header.Get("WWW-Authenticate"); got != want {
		t.Errorf("challenge = %s, want %s", got, want)
	}
	resp, e := rawGet(t, srv, kv.URL()+"/secrets/s/?api-version=2026-04-01", kvtest.IssueToken(srv, id, "https://vault.azure.net"))
	if resp.StatusCode != 401 || !strings.Contains(e.Error.Message, "AKV10022") {
		t.Errorf("public cloud token: %d %+v", resp.StatusCode, e)
	}
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(id.ClientID)))
	r, err := c.GetSecret(ctxTimeout(t, 30*time.Second), "s", "", nil)
	if err != nil || *r.Value != "china" || string(*r.ID) != "https://cnvault.vault.azure.cn/secrets/s/"+r.ID.Version() {
		t.Fatalf("%v", err)
	}
}

func TestDirectURLNeedsChallengeVerificationOff(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("s", "direct")
	cred := newCred(t, srv, nil)
	ctx := ctxTimeout(t, 30*time.Second)
	strict := newSecretsClient(t, srv, kv.DirectURL(), cred)
	if _, err := strict.GetSecret(ctx, "s", "", nil); err == nil || !strings.Contains(err.Error(), "doesn't match the requested domain") {
		t.Errorf("challenge verification did not trip on an IP host: %v", err)
	}
	lax, err := azsecrets.NewClient(kv.DirectURL(), cred, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: srv.Client()},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := lax.GetSecret(ctx, "s", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The id keeps the production host even when the vault was reached by IP.
	if !strings.HasPrefix(string(*r.ID), "https://myvault.vault.azure.net/secrets/s/") {
		t.Errorf("id = %s", *r.ID)
	}
}
