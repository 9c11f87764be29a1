package kvtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/kvtest"
)

// TestWithUpdated: a backdated version reports its time, to the second, as created and
// updated on GET, in the list of secrets and in the list of versions; it still becomes the
// latest, whatever its time; a later SetSecret without the option, or a later change, is
// stamped with the current time.
func TestWithUpdated(t *testing.T) {
	srv := newServer(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	c := newSecretsClient(t, srv, kv.URL(), newCred(t, srv, nil))
	ctx := ctxTimeout(t, 30*time.Second)

	at := time.Now().Add(-time.Hour).Truncate(time.Second).Add(700 * time.Millisecond) // not on a second
	want := at.Truncate(time.Second)
	kv.SetSecret("other", "x") // now: the list's newest is not the backdated one
	v1 := kv.SetSecret("backdated", "old", kvtest.WithUpdated(at))

	stamped := func(what string, attrs *azsecrets.SecretAttributes, created, updated time.Time) {
		t.Helper()
		if attrs == nil || attrs.Created == nil || attrs.Updated == nil {
			t.Fatalf("%s: attributes %+v", what, attrs)
		}
		if !attrs.Created.Equal(created) || !attrs.Updated.Equal(updated) {
			t.Errorf("%s: created %v, updated %v; want %v, %v", what, attrs.Created, attrs.Updated, created, updated)
		}
	}
	get := func(version string) azsecrets.GetSecretResponse {
		t.Helper()
		r, err := c.GetSecret(ctx, "backdated", version, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	listed := func(ctx context.Context) map[string]*azsecrets.SecretProperties {
		t.Helper()
		out := map[string]*azsecrets.SecretProperties{}
		for p := c.NewListSecretPropertiesPager(nil); p.More(); {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, sp := range page.Value {
				out[sp.ID.Name()] = sp
			}
		}
		return out
	}
	versions := func(ctx context.Context) map[string]*azsecrets.SecretProperties {
		t.Helper()
		out := map[string]*azsecrets.SecretProperties{}
		for p := c.NewListSecretPropertiesVersionsPager("backdated", nil); p.More(); {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, sp := range page.Value {
				out[sp.ID.Version()] = sp
			}
		}
		return out
	}

	r := get("")
	if *r.Value != "old" || r.ID.Version() != v1 {
		t.Fatalf("GET = %q version %s, want old %s", *r.Value, r.ID.Version(), v1)
	}
	stamped("GET latest", r.Attributes, want, want)
	stamped("GET by version", get(v1).Attributes, want, want)
	l := listed(ctx)
	stamped("list of secrets", l["backdated"].Attributes, want, want)
	if !l["other"].Attributes.Updated.After(want) {
		t.Errorf("the secret set without the option lists as updated %v, not after %v", l["other"].Attributes.Updated, want)
	}
	stamped("list of versions", versions(ctx)[v1].Attributes, want, want)

	// A later SetSecret without the option is newer, and the backdated version keeps its time.
	before := time.Now().Truncate(time.Second)
	v2 := kv.SetSecret("backdated", "new")
	r = get("")
	if *r.Value != "new" || r.ID.Version() != v2 {
		t.Fatalf("GET = %q version %s, want new %s", *r.Value, r.ID.Version(), v2)
	}
	if u := *r.Attributes.Updated; u.Before(before) || !u.After(want) || !r.Attributes.Created.Equal(u) {
		t.Errorf("the later version: created %v, updated %v; want both at or after %v", r.Attributes.Created, u, before)
	}
	stamped("list of secrets after a later version", listed(ctx)["backdated"].Attributes, *r.Attributes.Created, *r.Attributes.Updated)
	vs := versions(ctx)
	stamped("list of versions: the backdated one", vs[v1].Attributes, want, want)
	stamped("list of versions: the later one", vs[v2].Attributes, *r.Attributes.Created, *r.Attributes.Updated)

	// Backdated further than the latest, a new version still becomes the latest.
	earlier := want.Add(-time.Hour)
	v3 := kv.SetSecret("backdated", "third", kvtest.WithUpdated(earlier))
	r = get("")
	if *r.Value != "third" || r.ID.Version() != v3 {
		t.Fatalf("GET = %q version %s, want third %s", *r.Value, r.ID.Version(), v3)
	}
	stamped("GET of a version backdated before the latest", r.Attributes, earlier, earlier)

	// A later change of the backdated version is stamped now; its creation is not.
	if err := kv.SetEnabled("backdated", v1, false); err != nil {
		t.Fatal(err)
	}
	if a := versions(ctx)[v1].Attributes; !a.Created.Equal(want) || a.Updated.Before(before) {
		t.Errorf("disabled later: created %v, updated %v; want %v and at or after %v", a.Created, a.Updated, want, before)
	}
}
