package kvtest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// Tests of the edges where the emulator behaves as Key Vault does (issue #12, items 4, 5,
// 8 and 9): deletion takes time, api-version is validated, backup and restore, limits,
// short pages and throttling of every secret transaction.

// officer returns a vault, a fresh identity with Key Vault Secrets Officer on it, an SDK
// client for that identity and a bearer token for raw requests.
func officer(t *testing.T, srv *kvtest.Server) (*kvtest.Vault, *azsecrets.Client, string) {
	t.Helper()
	id := freshIdentity(t, srv)
	kv := srv.AddVault("myvault")
	kv.Grant(id, kvtest.RoleSecretsOfficer)
	cred := newCred(t, srv, azidentity.ClientID(id.ClientID))
	tk, err := cred.GetToken(ctxTimeout(t, 30*time.Second), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	return kv, newSecretsClient(t, srv, kv.URL(), cred), tk.Token
}

// rawDo sends one request with a bearer token and decodes Key Vault's error body, if any.
func rawDo(t *testing.T, srv *kvtest.Server, method, url, token string, body any) (*http.Response, []byte, kvErr) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e kvErr
	_ = json.Unmarshal(b, &e)
	return resp, b, e
}

// waitDeleted polls GET /deletedsecrets/{name} until the deletion has completed, as the
// other SDKs' delete pollers do. Real time on purpose: the window runs on the emulator's
// clock behind real HTTP, which a synctest bubble cannot hold; the poll is bounded by limit.
func waitDeleted(t *testing.T, c *azsecrets.Client, name string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := ctxTimeout(t, limit+10*time.Second)
	for {
		_, err := c.GetDeletedSecret(ctx, name, nil)
		if err == nil {
			return time.Since(start)
		}
		if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
			t.Fatalf("GET deleted while deleting: %d %s", st, code)
		}
		if time.Since(start) > limit {
			t.Fatalf("the deletion of %s did not complete within %v", name, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDeletionTakesTime(t *testing.T) {
	// The default is realistic: DELETE returns at once, the deletion completes later.
	srv := newServer(t)
	kv, c, _ := officer(t, srv)
	ctx := ctxTimeout(t, 60*time.Second)
	if _, err := c.SetSecret(ctx, "gone", azsecrets.SetSecretParameters{Value: to.Ptr("v1")}, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.DeleteSecret(ctx, "gone", nil); err != nil {
		t.Fatal(err)
	}
	// The secret is gone at once...
	_, err := c.GetSecret(ctx, "gone", "", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("GET while deleting: %d %s", st, code)
	}
	// ...but not yet a deleted secret: re-create, purge and recover answer 409.
	_, err = c.SetSecret(ctx, "gone", azsecrets.SetSecretParameters{Value: to.Ptr("v2")}, nil)
	if st, code, inner := responseError(t, err); st != 409 || code != "Conflict" || inner != "ObjectIsBeingDeleted" {
		t.Errorf("PUT while deleting: %d %s %s", st, code, inner)
	} else if msg := err.Error(); !strings.Contains(msg, "Secret gone is currently being deleted and cannot be re-created; retry later.") {
		t.Errorf("PUT while deleting: %s", msg)
	}
	_, err = c.PurgeDeletedSecret(ctx, "gone", nil)
	if st, code, inner := responseError(t, err); st != 409 || code != "Conflict" || inner != "ObjectIsBeingDeleted" {
		t.Errorf("purge while deleting: %d %s %s", st, code, inner)
	} else if msg := err.Error(); !strings.Contains(msg, "Secret is currently being deleted.") {
		t.Errorf("purge while deleting: %s", msg)
	}
	_, err = c.RecoverDeletedSecret(ctx, "gone", nil)
	if st, code, inner := responseError(t, err); st != 409 || code != "Conflict" || inner != "ObjectIsBeingDeleted" {
		t.Errorf("recover while deleting: %d %s %s", st, code, inner)
	}
	// The deleted-secrets list does not show it yet either.
	pager := c.NewListDeletedSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Value) != 0 {
			t.Errorf("deleted list while deleting (%v after DELETE): %d items", time.Since(start), len(page.Value))
		}
	}

	took := waitDeleted(t, c, "gone", kvtest.DefaultDeletionWindow+5*time.Second)
	if took < kvtest.DefaultDeletionWindow/2 {
		t.Errorf("the deletion completed after %v, want about %v", took, kvtest.DefaultDeletionWindow)
	}
	// Deleted now: re-create answers the soft-delete conflict, purge works.
	_, err = c.SetSecret(ctx, "gone", azsecrets.SetSecretParameters{Value: to.Ptr("v2")}, nil)
	if st, _, inner := responseError(t, err); st != 409 || inner != "ObjectIsDeletedButRecoverable" {
		t.Errorf("PUT over deleted: %d %s", st, inner)
	}
	if _, err := c.PurgeDeletedSecret(ctx, "gone", nil); err != nil {
		t.Fatal(err)
	}
	// A purge takes time too: the name is not free at once.
	_, err = c.SetSecret(ctx, "gone", azsecrets.SetSecretParameters{Value: to.Ptr("v3")}, nil)
	if st, _, inner := responseError(t, err); st != 409 || inner != "ObjectIsBeingDeleted" {
		t.Errorf("PUT while purging: %d %s", st, inner)
	}
	_, err = c.GetDeletedSecret(ctx, "gone", nil)
	if st, _, _ := responseError(t, err); st != 404 {
		t.Errorf("GET deleted while purging: %d", st)
	}
	deadline := time.Now().Add(kvtest.DefaultDeletionWindow + 5*time.Second)
	for {
		_, err := c.SetSecret(ctx, "gone", azsecrets.SetSecretParameters{Value: to.Ptr("v3")}, nil)
		if err == nil {
			break
		}
		if st, _, inner := responseError(t, err); st != 409 || inner != "ObjectIsBeingDeleted" || time.Now().After(deadline) {
			t.Fatalf("PUT after purge: %d %s", st, inner)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v, _ := kv.SecretValue("gone", ""); v != "v3" {
		t.Errorf("re-created value %q", v)
	}

	// Recover after the deletion completed works, as before.
	if _, err := c.DeleteSecret(ctx, "gone", nil); err != nil {
		t.Fatal(err)
	}
	waitDeleted(t, c, "gone", kvtest.DefaultDeletionWindow+5*time.Second)
	if _, err := c.RecoverDeletedSecret(ctx, "gone", nil); err != nil {
		t.Fatal(err)
	}
	// The recovery takes time too (TestRecoveryTakesTime).
	if r := waitRecovered(t, c, "gone", kvtest.DefaultRecoveryDelay+5*time.Second); *r.Value != "v3" {
		t.Errorf("after recover: %q", *r.Value)
	}
}

func TestDeletionWindowOption(t *testing.T) {
	for _, window := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(window.String(), func(t *testing.T) {
			srv := newServer(t, kvtest.WithDeletionWindow(window))
			_, c, _ := officer(t, srv)
			ctx := ctxTimeout(t, 30*time.Second)
			if _, err := c.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := c.DeleteSecret(ctx, "s", nil); err != nil {
				t.Fatal(err)
			}
			took := waitDeleted(t, c, "s", window+5*time.Second)
			if window == 0 && took > time.Second {
				t.Errorf("window 0: deletion took %v", took)
			}
			if window > 0 && took < window/2 {
				t.Errorf("window %v: deletion took %v", window, took)
			}
			_, err := c.PurgeDeletedSecret(ctx, "s", nil)
			if err != nil {
				t.Fatal(err)
			}
			if window == 0 {
				// Instant: the name is free right after the purge.
				if _, err := c.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("y")}, nil); err != nil {
					t.Errorf("PUT right after purge, window 0: %v", err)
				}
			}
		})
	}
}

func TestGoAPIDeleteFollowsTheWindow(t *testing.T) {
	// Vault.DeleteSecret behaves as DELETE; Vault.SetSecret still purges at once.
	srv := newServer(t, kvtest.WithDeletionWindow(time.Hour))
	kv, c, _ := officer(t, srv)
	ctx := ctxTimeout(t, 30*time.Second)
	kv.SetSecret("s", "x")
	if err := kv.DeleteSecret("s"); err != nil {
		t.Fatal(err)
	}
	_, err := c.PurgeDeletedSecret(ctx, "s", nil)
	if st, _, inner := responseError(t, err); st != 409 || inner != "ObjectIsBeingDeleted" {
		t.Errorf("purge after Vault.DeleteSecret: %d %s", st, inner)
	}
	kv.SetSecret("s", "again")
	if r, err := c.GetSecret(ctx, "s", "", nil); err != nil || *r.Value != "again" {
		t.Errorf("Vault.SetSecret during the window: %v", err)
	}
}

func TestAPIVersionValidated(t *testing.T) {
	srv := newServer(t)
	kv, _, token := officer(t, srv)
	kv.SetSecret("s", "x")
	base := kv.URL() + "/secrets/s/?api-version="

	for _, v := range []string{"9.9", "2026-04-02", "7.7", "latest", "2019-08-01"} {
		resp, _, e := rawDo(t, srv, http.MethodGet, base+v, token, nil)
		want := "The specified version (" + v + ") is not recognized. Consider using the latest supported version (2026-04-01)."
		if resp.StatusCode != 400 || e.Error.Code != "BadParameter" || e.Error.Message != want {
			t.Errorf("api-version %s: %d %+v", v, resp.StatusCode, e.Error)
		}
	}
	// What the SDKs send: Go azsecrets 2026-04-01; Python and JS 7.x and the 2025 versions;
	// older SDKs 7.0-7.5 and 2016-10-01; previews.
	for _, v := range []string{
		"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "7.4-preview.1",
		"7.5-preview.1", "7.6-preview.2", "2025-06-01-preview", "2025-07-01", "2026-01-01-preview",
		"2026-03-01-preview", "2026-04-01",
	} {
		if resp, _, e := rawDo(t, srv, http.MethodGet, base+v, token, nil); resp.StatusCode != 200 {
			t.Errorf("api-version %s: %d %+v", v, resp.StatusCode, e.Error)
		}
	}
	// Lists and their nextLinks keep the version the client chose.
	for i := range 30 {
		kv.SetSecret(fmt.Sprintf("p%02d", i), "v")
	}
	resp, body, _ := rawDo(t, srv, http.MethodGet, kv.URL()+"/secrets?api-version=7.3", token, nil)
	var page struct {
		NextLink string `json:"nextLink"`
	}
	_ = json.Unmarshal(body, &page)
	if resp.StatusCode != 200 || !strings.Contains(page.NextLink, "api-version=7.3") {
		t.Errorf("list 7.3: %d nextLink %q", resp.StatusCode, page.NextLink)
	}
	if resp, _, _ := rawDo(t, srv, http.MethodGet, page.NextLink, token, nil); resp.StatusCode != 200 {
		t.Errorf("nextLink: %d", resp.StatusCode)
	}
}

func TestBackupRestore(t *testing.T) {
	srv := newServer(t, kvtest.WithDeletionWindow(0))
	kv, c, token := officer(t, srv)
	ctx := ctxTimeout(t, 60*time.Second)
	v1 := kv.SetSecret("db", "old", kvtest.WithContentType("text/plain"), kvtest.WithTags(map[string]string{"env": "test"}))
	v2 := kv.SetSecret("db", "new", kvtest.WithEnabled(false))

	b, err := c.BackupSecret(ctx, "db", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Value) < 32 || bytes.Contains(b.Value, []byte("old")) {
		t.Errorf("backup blob of %d bytes, opaque=%v", len(b.Value), !bytes.Contains(b.Value, []byte("old")))
	}
	// On the wire: {"value": "<base64url>"}.
	resp, body, _ := rawDo(t, srv, http.MethodPost, kv.URL()+"/secrets/db/backup?api-version=2026-04-01", token, nil)
	var wire map[string]any
	if err := json.Unmarshal(body, &wire); err != nil || resp.StatusCode != 200 || len(wire) != 1 {
		t.Fatalf("backup body: %d %s", resp.StatusCode, body)
	}
	if s, _ := wire["value"].(string); s == "" || strings.ContainsAny(s, "+/=") {
		t.Errorf("backup value is not base64url without padding: %.40q", s)
	} else if _, err := base64.RawURLEncoding.DecodeString(s); err != nil {
		t.Errorf("backup value: %v", err)
	}

	// Restore over the existing secret: 409.
	_, err = c.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: b.Value}, nil)
	if st, code, _ := responseError(t, err); st != 409 || code != "Conflict" {
		t.Errorf("restore over existing: %d %s", st, code)
	} else if msg := err.Error(); !strings.Contains(msg, "There was a conflict restoring the secret 'https://myvault.vault.azure.net/secrets/db/"+v2+"'.") {
		t.Errorf("restore over existing: %s", msg)
	}
	// Over a deleted (recoverable) secret: 409 too.
	if _, err := c.DeleteSecret(ctx, "db", nil); err != nil {
		t.Fatal(err)
	}
	_, err = c.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: b.Value}, nil)
	if st, code, _ := responseError(t, err); st != 409 || code != "Conflict" {
		t.Errorf("restore over deleted: %d %s", st, code)
	}
	if _, err := c.PurgeDeletedSecret(ctx, "db", nil); err != nil {
		t.Fatal(err)
	}
	r, err := c.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: b.Value}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Value != nil || r.ID.Name() != "db" || r.ID.Version() != v2 || *r.Attributes.Enabled {
		t.Errorf("restore response: value=%v id=%s", r.Value, *r.ID)
	}
	// Every version comes back, with its properties.
	if got := kv.Versions("db"); len(got) != 2 || got[0] != v1 || got[1] != v2 {
		t.Errorf("versions after restore: %v", got)
	}
	old, err := c.GetSecret(ctx, "db", v1, nil)
	if err != nil || *old.Value != "old" || *old.ContentType != "text/plain" || *old.Tags["env"] != "test" {
		t.Errorf("v1 after restore: %v", err)
	}

	// Into another vault of the same server (same "subscription"), under the same name.
	other := srv.AddVault("othervault")
	id := freshIdentity(t, srv)
	other.Grant(id, kvtest.RoleSecretsOfficer)
	oc := newSecretsClient(t, srv, other.URL(), newCred(t, srv, azidentity.ClientID(id.ClientID)))
	if r, err := oc.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: b.Value}, nil); err != nil || !strings.HasPrefix(string(*r.ID), "https://othervault.vault.azure.net/secrets/db/") {
		t.Errorf("restore into another vault: %v", err)
	}

	// Errors: a missing secret, a corrupt blob, a role without backup.
	_, err = c.BackupSecret(ctx, "nope", nil)
	if st, code, _ := responseError(t, err); st != 404 || code != "SecretNotFound" {
		t.Errorf("backup missing: %d %s", st, code)
	}
	_, err = c.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: bytes.Repeat([]byte{0}, 64)}, nil)
	if st, code, _ := responseError(t, err); st != 400 || code != "Malformed backup blob" {
		t.Errorf("restore corrupt: %d %s", st, code)
	}
	user := freshIdentity(t, srv)
	kv.Grant(user, kvtest.RoleSecretsUser)
	uc := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, azidentity.ClientID(user.ClientID)))
	_, err = uc.BackupSecret(ctx, "db", nil)
	if st, _, inner := responseError(t, err); st != 403 || inner != "ForbiddenByRbac" || !strings.Contains(err.Error(), "Microsoft.KeyVault/vaults/secrets/backup/action") {
		t.Errorf("secrets user backup: %d %s %v", st, inner, err)
	}
	if kv.Count(kvtest.OpBackupSecret) != 3 || kv.Count(kvtest.OpRestoreSecret) != 4 || other.Count(kvtest.OpRestoreSecret) != 1 {
		t.Errorf("backups=%d restores=%d/%d", kv.Count(kvtest.OpBackupSecret), kv.Count(kvtest.OpRestoreSecret), other.Count(kvtest.OpRestoreSecret))
	}
}

func TestLimits(t *testing.T) {
	srv := newServer(t)
	_, c, _ := officer(t, srv)
	ctx := ctxTimeout(t, 60*time.Second)
	set := func(value, ct string, tags int) error {
		p := azsecrets.SetSecretParameters{Value: &value}
		if ct != "" {
			p.ContentType = &ct
		}
		if tags > 0 {
			p.Tags = map[string]*string{}
			for i := range tags {
				p.Tags[fmt.Sprintf("t%d", i)] = to.Ptr("v")
			}
		}
		_, err := c.SetSecret(ctx, "limited", p, nil)
		return err
	}
	bad := func(what string, err error) {
		t.Helper()
		st, code, _ := responseError(t, err)
		if st != 400 || code != "BadParameter" || !strings.Contains(err.Error(), "Property has invalid value") {
			t.Errorf("%s: %d %s %v", what, st, code, err)
		}
	}
	if err := set(strings.Repeat("x", 25*1024), strings.Repeat("c", 255), 15); err != nil {
		t.Errorf("at the limits: %v", err)
	}
	bad("value of 25 KB + 1", set(strings.Repeat("x", 25*1024+1), "", 0))
	bad("contentType of 256", set("v", strings.Repeat("c", 256), 0))
	bad("16 tags", set("v", "", 16))
	// PATCH checks the same limits.
	tags := map[string]*string{}
	for i := range 16 {
		tags[fmt.Sprintf("t%d", i)] = to.Ptr("v")
	}
	_, err := c.UpdateSecretProperties(ctx, "limited", "", azsecrets.UpdateSecretPropertiesParameters{Tags: tags}, nil)
	bad("PATCH 16 tags", err)
	_, err = c.UpdateSecretProperties(ctx, "limited", "", azsecrets.UpdateSecretPropertiesParameters{ContentType: to.Ptr(strings.Repeat("é", 256))}, nil)
	bad("PATCH contentType of 256 characters", err)
	if _, err := c.UpdateSecretProperties(ctx, "limited", "", azsecrets.UpdateSecretPropertiesParameters{ContentType: to.Ptr(strings.Repeat("é", 255))}, nil); err != nil {
		t.Errorf("PATCH contentType of 255 characters (510 bytes): %v", err)
	}
}

func TestShortPages(t *testing.T) {
	srv := newServer(t, kvtest.WithShortPages(), kvtest.WithDeletionWindow(0))
	kv, c, _ := officer(t, srv)
	ctx := ctxTimeout(t, 60*time.Second)
	for i := range 60 {
		kv.SetSecret(fmt.Sprintf("s%02d", i), "v")
	}
	var versions []string
	for i := range 30 {
		versions = append(versions, kv.SetSecret("rotated", fmt.Sprint(i)))
	}
	kv.ResetCounters()

	var names []string
	empty, pages := 0, 0
	pager := c.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Value) == 0 {
			empty++
		}
		if len(page.Value) > 12 {
			t.Errorf("page of %d: not short", len(page.Value))
		}
		for _, p := range page.Value {
			names = append(names, p.ID.Name())
		}
	}
	if len(names) != 61 || names[0] != "rotated" || names[60] != "s59" {
		t.Errorf("%d names: %v", len(names), names)
	}
	if empty < 2 || pages < 6 || kv.Count(kvtest.OpListSecrets) != int64(pages) {
		t.Errorf("pages=%d empty=%d counted=%d", pages, empty, kv.Count(kvtest.OpListSecrets))
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
	if !sameSet(got, versions) {
		t.Errorf("versions = %d, want %d", len(got), len(versions))
	}

	for i := range 30 {
		if err := kv.DeleteSecret(fmt.Sprintf("s%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deleted := 0
	dp := c.NewListDeletedSecretPropertiesPager(nil)
	for dp.More() {
		page, err := dp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deleted += len(page.Value)
	}
	if deleted != 30 {
		t.Errorf("deleted = %d, want 30", deleted)
	}
	// An empty vault: one empty page, no nextLink.
	empties := srv.AddVault("emptyvault")
	id := freshIdentity(t, srv)
	empties.Grant(id, kvtest.RoleReader)
	ec := newSecretsClient(t, srv, empties.URL(), newCred(t, srv, azidentity.ClientID(id.ClientID)))
	ep := ec.NewListSecretPropertiesPager(nil)
	n := 0
	for ep.More() {
		if _, err := ep.NextPage(ctx); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("empty vault: %d pages", n)
	}
}

func TestThrottlingCountsEveryTransaction(t *testing.T) {
	srv := newServer(t, kvtest.WithDeletionWindow(0))
	kv, _, token := officer(t, srv)
	kv.SetSecret("s", "x")
	q := "?api-version=2026-04-01"
	kv.SetThrottle(4, 10*time.Second) // one token every 2.5 s

	for _, r := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/secrets" + q, nil},
		{http.MethodPut, "/secrets/s" + q, map[string]any{"value": "y"}},
		{http.MethodPatch, "/secrets/s/" + q, map[string]any{"contentType": "text/plain"}},
		{http.MethodDelete, "/secrets/s" + q, nil},
	} {
		if resp, _, e := rawDo(t, srv, r.method, kv.URL()+r.path, token, r.body); resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %+v", r.method, r.path, resp.StatusCode, e.Error)
		}
	}
	for range 2 { // 429s use no token
		resp, _, e := rawDo(t, srv, http.MethodGet, kv.URL()+"/deletedsecrets"+q, token, nil)
		if resp.StatusCode != 429 || e.Error.Code != "Throttled" ||
			e.Error.Message != "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached" {
			t.Errorf("fifth transaction: %d %+v", resp.StatusCode, e.Error)
		}
		if ra := resp.Header.Get("Retry-After"); ra != "2" && ra != "3" {
			t.Errorf("Retry-After = %q, want 3 (2.5 s rounded up)", ra)
		}
	}
	if kv.Count(kvtest.OpThrottled) != 2 || kv.Count(kvtest.OpListDeletedSecrets) != 0 {
		t.Errorf("throttled=%d listDeleted=%d", kv.Count(kvtest.OpThrottled), kv.Count(kvtest.OpListDeletedSecrets))
	}

	// Without Retry-After, as the real service sometimes answers; the SDK backs off by itself.
	srv2 := newServer(t, kvtest.WithoutThrottleRetryAfter())
	kv2, c2, token2 := officer(t, srv2)
	kv2.SetSecret("s", "x")
	kv2.SetThrottle(1, time.Second)
	if resp, _, _ := rawDo(t, srv2, http.MethodGet, kv2.URL()+"/secrets"+q, token2, nil); resp.StatusCode != 200 {
		t.Fatalf("list: %d", resp.StatusCode)
	}
	resp, _, e := rawDo(t, srv2, http.MethodGet, kv2.URL()+"/secrets/s/"+q, token2, nil)
	if resp.StatusCode != 429 || e.Error.Code != "Throttled" || resp.Header.Get("Retry-After") != "" {
		t.Errorf("without Retry-After: %d %+v Retry-After=%q", resp.StatusCode, e.Error, resp.Header.Get("Retry-After"))
	}
	if r, err := c2.GetSecret(ctxTimeout(t, 30*time.Second), "s", "", nil); err != nil || *r.Value != "x" {
		t.Errorf("SDK through a 429 without Retry-After: %v", err)
	}
}
