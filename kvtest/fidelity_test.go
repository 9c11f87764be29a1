package kvtest_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// Tests of the fidelity gaps closed after issue #12, each a way a test could pass on the
// emulator and fail on Azure: recovery takes time, versions are listed in no particular
// order, RBAC changes take time to propagate, purge protection and retention, the
// versions list of a missing secret, the challenge's authority, and the seed's client
// secrets and short pages.
//
// Delays run on real time behind real HTTP, which a synctest bubble cannot hold (the
// listeners block in the network poller, never durably). So each state in progress is
// checked under a delay of an hour, which cannot end during the test, and each completion
// under a short delay by polling with a bound, checking only that it took at least the
// delay: no assertion depends on how fast the machine is.

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	return len(a) == len(b) && slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// waitRecovered polls GET /secrets/{name} until a recovery has completed, as the other
// SDKs' recover pollers do, and returns the secret. The poll is bounded by limit.
func waitRecovered(t *testing.T, c *azsecrets.Client, name string, limit time.Duration) azsecrets.GetSecretResponse {
	t.Helper()
	ctx := ctxTimeout(t, limit+10*time.Second)
	deadline := time.Now().Add(limit)
	for {
		r, err := c.GetSecret(ctx, name, "", nil)
		if err == nil {
			return r
		}
		if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
			t.Fatalf("GET while recovering: %d %s", st, code)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recovery of %s did not complete within %v", name, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listVersions lists a secret's versions with the SDK's pager.
func listVersions(ctx context.Context, c *azsecrets.Client, name string) ([]string, error) {
	var out []string
	p := c.NewListSecretPropertiesVersionsPager(name, nil)
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return out, err
		}
		for _, sp := range page.Value {
			out = append(out, sp.ID.Version())
		}
	}
	return out, nil
}

// listNames lists the secrets' names with the SDK's pager, and the sizes of its pages.
func listNames(ctx context.Context, c *azsecrets.Client) (names []string, pages []int, err error) {
	p := c.NewListSecretPropertiesPager(nil)
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return names, pages, err
		}
		pages = append(pages, len(page.Value))
		for _, sp := range page.Value {
			names = append(names, sp.ID.Name())
		}
	}
	return names, pages, nil
}

// listDeletedNames lists the deleted secrets' names with the SDK's pager.
func listDeletedNames(ctx context.Context, t *testing.T, c *azsecrets.Client) []string {
	t.Helper()
	var out []string
	p := c.NewListDeletedSecretPropertiesPager(nil)
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.Value {
			out = append(out, d.ID.Name())
		}
	}
	return out
}

// TestRecoveryTakesTime: after POST /deletedsecrets/{name}/recover the secret is not back
// at once, as on Azure: GET answers 404 SecretNotFound (the body of a missing secret), it
// is no longer a deleted secret, and a second recover, a purge, a PUT and a restore of
// the name answer 409 Conflict, until the recovery completes.
func TestRecoveryTakesTime(t *testing.T) {
	srv := newServer(t, kvtest.WithDeletionWindow(0), kvtest.WithRecoveryDelay(time.Hour))
	kv, c, _ := officer(t, srv)
	ctx := ctxTimeout(t, 30*time.Second)
	v1 := kv.SetSecret("s", "one")
	v2 := kv.SetSecret("s", "two")
	backup, err := c.BackupSecret(ctx, "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSecret(ctx, "s", nil); err != nil {
		t.Fatal(err)
	}
	waitDeleted(t, c, "s", 5*time.Second)

	rec, err := c.RecoverDeletedSecret(ctx, "s", nil)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if rec.ID == nil || rec.ID.Name() != "s" || rec.ID.Version() != v2 {
		t.Errorf("recover response id %v, want s/%s", rec.ID, v2)
	}

	// Not a secret yet: 404 with the body of a missing secret.
	_, err = c.GetSecret(ctx, "s", "", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Fatalf("GET while recovering: %d %s (the secret came back at once)", st, code)
	}
	if !strings.Contains(err.Error(), "A secret with (name/id) s was not found in this key vault.") {
		t.Errorf("GET while recovering: %v", err)
	}
	if _, err := listVersions(ctx, c, "s"); err == nil {
		t.Error("versions list while recovering: no error")
	} else if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("versions list while recovering: %d %s", st, code)
	}
	if names, _, err := listNames(ctx, c); err != nil || slices.Contains(names, "s") {
		t.Errorf("secrets list while recovering: %v %v", names, err)
	}
	if _, ok := kv.SecretValue("s", ""); ok {
		t.Error("Vault.SecretValue sees the secret while it is recovering")
	}

	// No longer a deleted secret either.
	if names := listDeletedNames(ctx, t, c); slices.Contains(names, "s") {
		t.Errorf("deleted list while recovering: %v", names)
	}
	_, err = c.GetDeletedSecret(ctx, "s", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("GET deleted while recovering: %d %s", st, code)
	}

	// Everything else about the name conflicts.
	_, err = c.RecoverDeletedSecret(ctx, "s", nil)
	if st, code, _ := responseError(t, err); st != 409 || code != "Conflict" ||
		!strings.Contains(err.Error(), "There was a conflict while recovering the soft-deleted secret") {
		t.Errorf("second recover: %d %s %v", st, code, err)
	}
	_, err = c.PurgeDeletedSecret(ctx, "s", nil)
	if st, code, _ := responseError(t, err); st != 409 || code != "Conflict" {
		t.Errorf("purge while recovering: %d %s", st, code)
	}
	_, err = c.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("three")}, nil)
	if st, code, inner := responseError(t, err); st != 409 || code != "Conflict" || inner != "ObjectIsBeingRecovered" ||
		!strings.Contains(err.Error(), "Secret s is currently being recovered and cannot be re-created; retry later.") {
		t.Errorf("PUT while recovering: %d %s %s %v", st, code, inner, err)
	}
	_, err = c.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: backup.Value}, nil)
	if st, code, _ := responseError(t, err); st != 409 || code != "Conflict" {
		t.Errorf("restore while recovering: %d %s", st, code)
	}
	if err := kv.DeleteSecret("s"); err == nil {
		t.Error("Vault.DeleteSecret of a secret still recovering: no error")
	}

	// Vault.SetSecret, the Go control, completes the recovery at once.
	v3 := kv.SetSecret("s", "three")
	r, err := c.GetSecret(ctx, "s", "", nil)
	if err != nil || *r.Value != "three" {
		t.Fatalf("after Vault.SetSecret: %v", err)
	}
	if got := kv.Versions("s"); !slices.Equal(got, []string{v1, v2, v3}) {
		t.Errorf("versions after the recovery = %v, want %v", got, []string{v1, v2, v3})
	}
}

// TestRecoveryDelayOption: the recovery completes after the delay, and not before; with
// 0 it is instant, as the emulator was.
func TestRecoveryDelayOption(t *testing.T) {
	for _, delay := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			srv := newServer(t, kvtest.WithDeletionWindow(0), kvtest.WithRecoveryDelay(delay))
			kv, c, _ := officer(t, srv)
			ctx := ctxTimeout(t, 30*time.Second)
			kv.SetSecret("s", "x")
			if _, err := c.DeleteSecret(ctx, "s", nil); err != nil {
				t.Fatal(err)
			}
			waitDeleted(t, c, "s", 5*time.Second)
			start := time.Now()
			if _, err := c.RecoverDeletedSecret(ctx, "s", nil); err != nil {
				t.Fatal(err)
			}
			if delay == 0 {
				if r, err := c.GetSecret(ctx, "s", "", nil); err != nil || *r.Value != "x" {
					t.Errorf("GET right after recover, delay 0: %v", err)
				}
				return
			}
			r := waitRecovered(t, c, "s", delay+10*time.Second)
			if took := time.Since(start); took < delay {
				t.Errorf("the secret was back after %v, before the delay of %v", took, delay)
			}
			if *r.Value != "x" {
				t.Errorf("recovered value %q", *r.Value)
			}
			if names := listDeletedNames(ctx, t, c); len(names) != 0 {
				t.Errorf("deleted list after the recovery: %v", names)
			}
		})
	}
}

// TestVersionsListedOutOfCreationOrder: Key Vault documents no order for GET
// /secrets/{name}/versions, so the emulator lists them by version ID, not oldest first:
// code that takes the last listed (or the first) as the newest fails here too.
func TestVersionsListedOutOfCreationOrder(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	var created []string
	for i := 0; i < 8 || slices.IsSorted(created); i++ { // random IDs: sorted by chance 1 in 8!
		created = append(created, kv.SetSecret("rotated", fmt.Sprint(i)))
	}
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)
	got, err := listVersions(ctx, c, "rotated")
	if err != nil {
		t.Fatal(err)
	}
	if !sameSet(got, created) {
		t.Fatalf("listed %v, want the versions %v", got, created)
	}
	if slices.Equal(got, created) {
		t.Errorf("versions listed in creation order %v: Azure does not promise it", got)
	}
	if !slices.IsSorted(got) {
		t.Errorf("versions listed as %v, want them by version ID", got)
	}
	// The Go control still answers oldest first.
	if v := kv.Versions("rotated"); !slices.Equal(v, created) {
		t.Errorf("Vault.Versions = %v, want creation order", v)
	}
}

// TestRBACPropagationDelay: with WithRBACPropagationDelay a grant does not apply at once
// (403 ForbiddenByRbac until it propagates) and neither does a revoke (access goes on
// until then). Seed grants apply at once.
func TestRBACPropagationDelay(t *testing.T) {
	t.Run("in progress", func(t *testing.T) {
		seeded := freshName("seeded")
		srv := newServer(t, kvtest.WithRBACPropagationDelay(time.Hour), kvtest.WithSeed([]byte(
			"identities:\n  - name: "+seeded+"\nvaults:\n  - name: myvault\n    secrets:\n      - {name: s, value: x}\n"+
				"    grants:\n      - {identity: "+seeded+", role: secrets-user}\n")))
		kv := srv.Vault("myvault")
		ctx := ctxTimeout(t, 30*time.Second)
		old, ok := srv.UserIdentity(seeded)
		if !ok {
			t.Fatal("seeded identity missing")
		}
		oldClient := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(old.ClientID)))
		if _, err := oldClient.GetSecret(ctx, "s", "", nil); err != nil {
			t.Fatalf("seed grant: %v (seed grants apply at once)", err)
		}

		id := freshIdentity(t, srv)
		kv.Grant(id, kvtest.RoleSecretsUser)
		c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(id.ClientID)))
		_, err := c.GetSecret(ctx, "s", "", nil)
		if st, code, inner := responseError(t, err); st != 403 || code != "Forbidden" || inner != "ForbiddenByRbac" {
			t.Errorf("GET right after Grant: %d %s %s (the grant applied at once)", st, code, inner)
		}

		kv.Revoke(old)
		if _, err := oldClient.GetSecret(ctx, "s", "", nil); err != nil {
			t.Errorf("GET right after Revoke: %v (the revoke applied at once)", err)
		}
	})

	t.Run("completes", func(t *testing.T) {
		const delay = 300 * time.Millisecond
		srv := newServer(t, kvtest.WithRBACPropagationDelay(delay))
		kv := srv.AddVault("myvault")
		kv.SetSecret("s", "x")
		id := freshIdentity(t, srv)
		c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(id.ClientID)))
		ctx := ctxTimeout(t, 30*time.Second)

		// poll GETs until allowed is what it answers, and returns how long that took.
		poll := func(allowed bool) time.Duration {
			start, deadline := time.Now(), time.Now().Add(delay+10*time.Second)
			for {
				_, err := c.GetSecret(ctx, "s", "", nil)
				if (err == nil) == allowed {
					return time.Since(start)
				}
				if err != nil {
					if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" {
						t.Fatalf("GET: %d %s", st, inner)
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("access still %v after %v", !allowed, time.Since(start))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		kv.Grant(id, kvtest.RoleSecretsUser)
		if took := poll(true); took < delay {
			t.Errorf("the grant applied after %v, before the delay of %v", took, delay)
		}
		// A revoke and a grant made one after the other apply in that order.
		kv.Revoke(id)
		kv.Grant(id, kvtest.RoleReader)
		if took := poll(false); took < delay {
			t.Errorf("the revoke applied after %v, before the delay of %v", took, delay)
		}
		// The reader grant made right after the revoke is not undone by it: listing works.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			names, _, err := listNames(ctx, c)
			if err == nil {
				if !slices.Equal(names, []string{"s"}) {
					t.Errorf("list as Key Vault Reader: %v", names)
				}
				break
			}
			if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" || time.Now().After(deadline) {
				t.Fatalf("list as Key Vault Reader after the changes: %d %s", st, inner)
			}
		}
	})
}

// TestPurgeProtectionAndRetention: a vault's purge protection refuses purges with Azure's
// 403, and its retention and purge protection show in recoveryLevel, recoverableDays and
// scheduledPurgeDate.
func TestPurgeProtectionAndRetention(t *testing.T) {
	srv := newServer(t, kvtest.WithDeletionWindow(0), kvtest.WithRecoveryDelay(0))
	id := freshIdentity(t, srv)
	cred := newCred(t, srv, azidentity.ClientID(id.ClientID))
	ctx := ctxTimeout(t, 30*time.Second)
	for _, tc := range []struct {
		vault string
		opts  []kvtest.VaultOption
		level string
		days  int32
	}{
		{"plain", nil, "Recoverable+Purgeable", 90},
		{"protected", []kvtest.VaultOption{kvtest.WithPurgeProtection()}, "Recoverable", 90},
		{"short", []kvtest.VaultOption{kvtest.WithRetentionDays(7)}, "CustomizedRecoverable+Purgeable", 7},
		{"both", []kvtest.VaultOption{kvtest.WithPurgeProtection(), kvtest.WithRetentionDays(30)}, "CustomizedRecoverable", 30},
	} {
		t.Run(tc.vault, func(t *testing.T) {
			kv := srv.AddVault(tc.vault, tc.opts...)
			kv.Grant(id, kvtest.RoleSecretsOfficer)
			c := newSecretsClient(t, srv, kv.URL(), cred)
			set, err := c.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a := set.Attributes; *a.RecoveryLevel != tc.level || *a.RecoverableDays != tc.days {
				t.Errorf("recoveryLevel %s, recoverableDays %d; want %s, %d", *a.RecoveryLevel, *a.RecoverableDays, tc.level, tc.days)
			}
			del, err := c.DeleteSecret(ctx, "s", nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := del.DeletedDate.AddDate(0, 0, int(tc.days)); !del.ScheduledPurgeDate.Equal(want) {
				t.Errorf("scheduledPurgeDate %v, want %v (deletedDate + %d days)", del.ScheduledPurgeDate, want, tc.days)
			}
			waitDeleted(t, c, "s", 5*time.Second)
			got, err := c.GetDeletedSecret(ctx, "s", nil)
			if err != nil || *got.Attributes.RecoveryLevel != tc.level || !got.ScheduledPurgeDate.Equal(*del.ScheduledPurgeDate) {
				t.Errorf("GET deleted: %v %+v", err, got.DeletedSecret)
			}

			_, err = c.PurgeDeletedSecret(ctx, "s", nil)
			if !strings.Contains(tc.level, "Purgeable") {
				st, code, _ := responseError(t, err)
				if st != 403 || code != "Forbidden" || !strings.Contains(err.Error(),
					`Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.`) {
					t.Errorf("purge with purge protection: %d %s %v", st, code, err)
				}
				// Still recoverable.
				if _, err := c.RecoverDeletedSecret(ctx, "s", nil); err != nil {
					t.Errorf("recover with purge protection: %v", err)
				}
				return
			}
			if err != nil {
				t.Errorf("purge: %v", err)
			}
		})
	}

	for _, bad := range []kvtest.VaultOption{kvtest.WithRetentionDays(6), kvtest.WithRetentionDays(91), kvtest.WithPageSize(0), kvtest.WithPageSize(26)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("AddVault took an option out of Azure's range")
				}
			}()
			srv.AddVault("badvault", bad)
		}()
	}
	if srv.Vault("badvault") != nil {
		t.Error("AddVault made a vault with an invalid option")
	}
}

// TestListVersionsOfMissingSecret: the versions list of a secret that does not exist (or
// is deleted) answers 404 SecretNotFound with the body GET answers, as Azure does, not an
// empty list.
func TestListVersionsOfMissingSecret(t *testing.T) {
	srv := newServer(t, kvtest.WithDeletionWindow(0))
	kv, c, token := officer(t, srv)
	ctx := ctxTimeout(t, 30*time.Second)
	kv.SetSecret("gone", "x")
	if err := kv.DeleteSecret("gone"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nope", "gone"} {
		_, err := listVersions(ctx, c, name)
		if err == nil {
			t.Errorf("%s: versions listed", name)
			continue
		}
		if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
			t.Errorf("%s: %d %s", name, st, code)
		}
		q := "?api-version=2026-04-01"
		_, getBody, _ := rawDo(t, srv, http.MethodGet, kv.URL()+"/secrets/"+name+"/"+q, token, nil)
		_, listBody, _ := rawDo(t, srv, http.MethodGet, kv.URL()+"/secrets/"+name+"/versions"+q, token, nil)
		if string(getBody) != string(listBody) {
			t.Errorf("%s: versions list body %s, GET body %s", name, listBody, getBody)
		}
	}
}

// challengeAuthority reads the authority of the vault's 401 challenge.
func challengeAuthority(t *testing.T, srv *kvtest.Server, kv *kvtest.Vault) (host, tenant string) {
	t.Helper()
	resp, _ := rawGet(t, srv, kv.URL()+"/secrets/s/?api-version=2026-04-01", "")
	m := regexp.MustCompile(`authorization="https://([^/"]+)/([^"]+)"`).FindStringSubmatch(resp.Header.Get("WWW-Authenticate"))
	if resp.StatusCode != 401 || m == nil {
		t.Fatalf("challenge: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	return m[1], m[2]
}

// TestChallengeNamesLoginWindowsNet: the public cloud's challenges name
// https://login.windows.net/<tenant>, as Key Vault's recorded challenges do, and a client
// that signs in at the authority the challenge names (older SDKs, ADAL-style callbacks)
// reaches the emulator's Entra ID there, through Server.Client and through the proxy.
func TestChallengeNamesLoginWindowsNet(t *testing.T) {
	srv := newServer(t)
	id := srv.AddUserIdentity(freshName("legacy"), kvtest.WithClientSecret("legacy-app-secret"))
	kv := vaultWithSecret(srv, id)
	host, tenant := challengeAuthority(t, srv, kv)
	if host != "login.windows.net" || tenant != srv.TenantID() {
		t.Fatalf("challenge authority https://%s/%s, want https://login.windows.net/%s", host, tenant, srv.TenantID())
	}
	// Sovereign clouds keep their own Entra ID host.
	if h, _ := challengeAuthority(t, srv, srv.AddVault("cnvault.vault.azure.cn")); h != "login.chinacloudapi.cn" {
		t.Errorf("Azure China challenge authority %s", h)
	}

	proxied := &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(mustURL(t, srv.ProxyURL())),
		TLSClientConfig: &tls.Config{RootCAs: srv.CertPool(), MinVersion: tls.VersionTLS12},
	}}
	t.Cleanup(proxied.CloseIdleConnections)
	ctx := ctxTimeout(t, 30*time.Second)
	for name, hc := range map[string]*http.Client{"Server.Client": srv.Client(), "proxy": proxied} {
		t.Run(name, func(t *testing.T) {
			opts := azcore.ClientOptions{
				Transport: hc,
				Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: "https://" + host + "/"},
				Retry:     policy.RetryOptions{MaxRetries: -1},
			}
			cred, err := azidentity.NewClientSecretCredential(tenant, id.ClientID, "legacy-app-secret",
				&azidentity.ClientSecretCredentialOptions{ClientOptions: opts})
			if err != nil {
				t.Fatal(err)
			}
			c, err := azsecrets.NewClient(kv.URL(), cred, &azsecrets.ClientOptions{ClientOptions: opts})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := c.GetSecret(ctx, "s", "", nil); err != nil || *r.Value != "x" {
				t.Fatalf("GetSecret signed in at https://%s/: %v", host, err)
			}
		})
	}
}

// TestSeedClientSecretAndPageSize: a seed gives an identity a client secret, so
// ClientSecretCredential signs in, and a vault a page size, so the SDK's pager sees several
// pages; it sets purge protection and retention too.
func TestSeedClientSecretAndPageSize(t *testing.T) {
	app := freshName("ci-app")
	seed := `
identities:
  - name: ` + app + `
    client_secret: "seeded-app-secret"
vaults:
  - name: myvault
    page_size: 2
    purge_protection: true
    retention_days: 30
    secrets:
      - {name: a, value: "1"}
      - {name: b, value: "2"}
      - {name: c, value: "3"}
      - {name: d, value: "4"}
      - {name: e, value: "5"}
    grants:
      - {identity: ` + app + `, role: secrets-officer}
`
	srv := newServer(t, kvtest.WithSeed([]byte(seed)), kvtest.WithDeletionWindow(0))
	id, ok := srv.UserIdentity(app)
	if !ok {
		t.Fatal("seeded identity missing")
	}
	ctx := ctxTimeout(t, 30*time.Second)
	cred, err := azidentity.NewClientSecretCredential(srv.TenantID(), id.ClientID, "seeded-app-secret",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: entraOptions(srv)})
	if err != nil {
		t.Fatal(err)
	}
	c := newSecretsClient(t, srv, srv.Vault("myvault").URL(), cred)
	names, pages, err := listNames(ctx, c)
	if err != nil {
		t.Fatalf("list with the seeded client secret: %v", err)
	}
	if !slices.Equal(names, []string{"a", "b", "c", "d", "e"}) || len(pages) != 3 || slices.Max(pages) > 2 {
		t.Errorf("names %v in pages %v, want 5 in pages of at most 2", names, pages)
	}
	r, err := c.GetSecret(ctx, "a", "", nil)
	if err != nil || *r.Attributes.RecoveryLevel != "CustomizedRecoverable" || *r.Attributes.RecoverableDays != 30 {
		t.Errorf("GET a: %v", err)
	}
	if _, err := c.DeleteSecret(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	waitDeleted(t, c, "a", 5*time.Second)
	_, err = c.PurgeDeletedSecret(ctx, "a", nil)
	if st, code, _ := responseError(t, err); st != 403 || code != "Forbidden" {
		t.Errorf("purge in the seeded purge-protected vault: %d %s", st, code)
	}

	// A wrong secret is refused, as Entra ID refuses it.
	bad, err := azidentity.NewClientSecretCredential(srv.TenantID(), id.ClientID, "wrong",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: entraOptions(srv)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.GetToken(ctx, vaultScope); err == nil {
		t.Error("a wrong client secret got a token")
	}
}

// TestSeedNewKeysStrict: the new seed keys are checked like the others, and an error never
// quotes a client secret.
func TestSeedNewKeysStrict(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"misspelled key":      {"vaults:\n  - name: v\n    page_sizes: 2\n", `unknown field "page_sizes"`},
		"page size 0":         {"vaults:\n  - name: v\n    page_size: 0\n", "page_size 0 is out of range"},
		"page size 26":        {"vaults:\n  - name: v\n    page_size: 26\n", "page_size 26 is out of range"},
		"retention 6":         {"vaults:\n  - name: v\n    retention_days: 6\n", "retention_days 6 is out of range (7 to 90)"},
		"retention 91":        {"vaults:\n  - name: v\n    retention_days: 91\n", "retention_days 91 is out of range"},
		"purge protection":    {"vaults:\n  - name: v\n    purge_protection: sometimes\n", `field "purge_protection" in vault "v" (line 3): want true or false`},
		"empty client secret": {"identities:\n  - {name: a, client_secret: \"\"}\n", "client_secret is empty"},
		"client secret list":  {"identities:\n  - name: a\n    client_secret: [very-secret-value]\n", `field "client_secret" in identity "a" (line 3): want a string`},
		"client secret typo":  {"identities:\n  - name: a\n    client_secrets: very-secret-value\n", `unknown field "client_secrets"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := kvtest.ParseSeed(strings.NewReader(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "very-secret-value") {
				t.Errorf("the error quotes the client secret: %v", err)
			}
		})
	}
}
