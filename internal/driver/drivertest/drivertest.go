// Package drivertest is the conformance suite of the driver contract: RunConformance runs
// the same checks against every source (the Azure one on the kvtest emulator, the
// in-memory one of the logic tests), read through a driver.Reader as the core reads them,
// so that the in-memory source cannot drift from the real one.
package drivertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/internal/driver"
)

// Op is an operation a fault can target.
type Op string

// The operations.
const (
	OpGet  Op = "get"
	OpList Op = "list"
)

// Attrs are attributes of a new version.
type Attrs struct {
	ContentType        string
	Tags               map[string]string
	Expires, NotBefore *time.Time
}

// Options set up a harness.
type Options struct {
	// ShortPages makes the vault page as real vaults sometimes do: empty and half pages.
	ShortPages bool
}

// Harness sets up one vault behind a source, and the faults the suite needs.
type Harness interface {
	// Source returns the source under test; the suite closes it.
	Source() driver.Source
	// Vault returns the host of the vault the harness sets up.
	Vault() string
	// Set makes value the latest version of the secret and returns its version id.
	Set(name, value string, a Attrs) string
	// SetEnabled enables or disables a version.
	SetEnabled(name, version string, enabled bool)
	// Delete deletes the secret.
	Delete(name string)
	// Deny takes the identity's permission to read and list secrets (403 ForbiddenByRbac).
	Deny()
	// Refuse makes the vault refuse every read and list for the reason inner names, with
	// Key Vault's 403 for it (its message naming the caller's object id, and the
	// firewall's the client address): driver.InnerForbiddenByRbac (no role),
	// InnerForbiddenByPolicy (an access policy vault, no policy), InnerForbiddenByFirewall
	// (the firewall denies the caller's network) or InnerForbiddenByConnection (public
	// network access disabled). Each call replaces the refusal before it.
	Refuse(inner string)
	// Throttle answers the next times requests of op with 429, asking for retryAfter (0:
	// no Retry-After header); times 0: until Clear.
	Throttle(op Op, times int, retryAfter time.Duration)
	// Fail answers every request of op with status until Clear.
	Fail(op Op, status int)
	// Forge answers every request of op with body, JSON as the vault would send it, until
	// Clear.
	Forge(op Op, body string)
	// Clear ends the faults.
	Clear()
	// Pages returns the list pages the vault was asked for.
	Pages() int
}

// RunConformance runs the suite. newHarness makes a harness with a fresh vault.
func RunConformance(t *testing.T, newHarness func(t *testing.T, o Options) Harness) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, h Harness, r *driver.Reader)
		o    Options
	}{
		{"GetLatestAndPinned", testGetLatestAndPinned, Options{}},
		{"NamesIgnoreCase", testNamesIgnoreCase, Options{}},
		{"NotFound", testNotFound, Options{}},
		{"Disabled", testDisabled, Options{}},
		{"ExpiryAndNotBefore", testExpiryAndNotBefore, Options{}},
		{"Forbidden", testForbidden, Options{}},
		{"ForbiddenKinds", testForbiddenKinds, Options{}},
		{"StatusMapping", testStatusMapping, Options{}},
		{"ThrottledThenServed", testThrottledThenServed, Options{}},
		{"ThrottledBeyondDeadline", testThrottledBeyondDeadline, Options{}},
		{"Canceled", testCanceled, Options{}},
		{"List", testList, Options{}},
		{"ListShortPages", testList, Options{ShortPages: true}},
		{"ListBounded", testListBounded, Options{}},
		{"ListThrottledRestarts", testListThrottledRestarts, Options{}},
		{"ListMalformedItems", testListMalformedItems, Options{}},
		{"ListNextLinks", testListNextLinks, Options{}},
		{"ForgedGetAnswers", testForgedGetAnswers, Options{}},
		{"Closed", testClosed, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tc.o)
			r := driver.NewReader(h.Source(), 16, nil)
			t.Cleanup(func() { _ = r.Close() })
			tc.run(t, h, r)
		})
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// wantKind checks that err is an *driver.Error of kind, transient as said.
func wantKind(t *testing.T, what string, err error, kind driver.Kind, transient bool) *driver.Error {
	t.Helper()
	var e *driver.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: %v (%T), want a *driver.Error of kind %v", what, err, err, kind)
	}
	if e.Kind != kind || e.Transient != transient || e.Reason == "" {
		t.Errorf("%s: %v (transient %v), want kind %v, transient %v, with a reason", what, e, e.Transient, kind, transient)
	}
	return e
}

func testGetLatestAndPinned(t *testing.T, h Harness, r *driver.Reader) {
	ctx := ctxFor(t, 30*time.Second)
	v1 := h.Set("db-conn", "first", Attrs{ContentType: "text/plain", Tags: map[string]string{"env": "prod"}})
	v2 := h.Set("db-conn", "second", Attrs{})
	if v1 == v2 || len(v2) != 32 {
		t.Fatalf("versions %q and %q", v1, v2)
	}
	got, err := r.Get(ctx, h.Vault(), "db-conn", "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != "second" || got.Version != strings.ToLower(v2) || got.Name != "db-conn" || got.Updated == nil || got.Served == nil {
		t.Errorf("latest = %+v, want second, version %s, with updated and served times", got, v2)
	}
	if got.Served != nil && (time.Since(*got.Served) > time.Minute || time.Until(*got.Served) > time.Minute) {
		t.Errorf("served at %v: not the vault's clock", got.Served)
	}
	old, err := r.Get(ctx, h.Vault(), "db-conn", strings.ToUpper(v1))
	if err != nil {
		t.Fatal(err)
	}
	if old.Value != "first" || old.Version != strings.ToLower(v1) || old.ContentType != "text/plain" || !maps.Equal(old.Tags, map[string]string{"env": "prod"}) {
		t.Errorf("pinned = %+v, want first, version %s, text/plain, tag env=prod", old, v1)
	}
}

func testNamesIgnoreCase(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("Mixed-Case", "v", Attrs{})
	got, err := r.Get(ctxFor(t, 30*time.Second), h.Vault(), "MIXED-case", "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != "v" || got.Name != "Mixed-Case" {
		t.Errorf("got %+v, want the value, named as the vault spells it", got)
	}
}

func testNotFound(t *testing.T, h Harness, r *driver.Reader) {
	ctx := ctxFor(t, 30*time.Second)
	_, err := r.Get(ctx, h.Vault(), "absent", "")
	wantKind(t, "absent secret", err, driver.KindNotFound, false)
	h.Set("present", "v", Attrs{})
	_, err = r.Get(ctx, h.Vault(), "present", strings.Repeat("ab", 16))
	wantKind(t, "absent version", err, driver.KindVersionNotFound, false)
	h.Delete("present")
	_, err = r.Get(ctx, h.Vault(), "present", "")
	wantKind(t, "deleted secret", err, driver.KindNotFound, false)
}

func testDisabled(t *testing.T, h Harness, r *driver.Reader) {
	ctx := ctxFor(t, 30*time.Second)
	v1 := h.Set("s", "one", Attrs{})
	v2 := h.Set("s", "two", Attrs{})
	h.SetEnabled("s", v2, false)
	_, err := r.Get(ctx, h.Vault(), "s", "")
	wantKind(t, "disabled latest version", err, driver.KindDisabled, false)
	if got, err := r.Get(ctx, h.Vault(), "s", v1); err != nil || got.Value != "one" {
		t.Errorf("the enabled older version: %+v, %v", got, err)
	}
}

func testExpiryAndNotBefore(t *testing.T, h Harness, r *driver.Reader) {
	exp := time.Now().Add(-time.Hour).Truncate(time.Second)
	nbf := time.Now().Add(time.Hour).Truncate(time.Second)
	h.Set("expired", "old", Attrs{Expires: &exp})
	h.Set("later", "new", Attrs{NotBefore: &nbf})
	ctx := ctxFor(t, 30*time.Second)
	// The vault returns versions outside their validity window: judging them is the core's.
	got, err := r.Get(ctx, h.Vault(), "expired", "")
	if err != nil || got.Expires == nil || !got.Expires.Equal(exp) || got.Value != "old" {
		t.Errorf("expired: %+v, %v; want the value with exp %v", got, err, exp)
	}
	got, err = r.Get(ctx, h.Vault(), "later", "")
	if err != nil || got.NotBefore == nil || !got.NotBefore.Equal(nbf) {
		t.Errorf("not yet valid: %+v, %v; want nbf %v", got, err, nbf)
	}
	l, err := r.List(ctx, h.Vault(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Props {
		if p.Name == "expired" && (p.Expires == nil || !p.Expires.Equal(exp)) || p.Name == "later" && (p.NotBefore == nil || !p.NotBefore.Equal(nbf)) {
			t.Errorf("listed %+v", p)
		}
	}
}

func testForbidden(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("s", "v", Attrs{})
	h.Deny()
	ctx := ctxFor(t, 30*time.Second)
	_, err := r.Get(ctx, h.Vault(), "s", "")
	if e := wantKind(t, "get without permission", err, driver.KindForbidden, false); e.Inner != "ForbiddenByRbac" {
		t.Errorf("inner code %q, want ForbiddenByRbac", e.Inner)
	}
	_, err = r.List(ctx, h.Vault(), 0)
	wantKind(t, "list without permission", err, driver.KindForbidden, false)
}

// testForbiddenKinds checks that each reason Key Vault gives for a 403 has its kind, its
// inner code and a reason naming its fix, for a GET and a list alike, and never repeats
// the vault's message.
func testForbiddenKinds(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("s", "v", Attrs{})
	guid := `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
	for _, tc := range []struct {
		inner      string
		kind       driver.Kind
		get, list  *regexp.Regexp // what the reason of a GET, of a list says
		notAllowed []string       // what it must not say: the vault's own words
	}{
		{driver.InnerForbiddenByRbac, driver.KindForbidden,
			regexp.MustCompile(`: 403: no role assignment lets the identity read secrets: grant the identity \(object id ` + guid +
				`\) Key Vault Secrets User on the vault or secret \(ForbiddenByRbac\)$`),
			regexp.MustCompile(`\(list\): 403: no role assignment lets the identity list secrets: grant the identity \(object id ` + guid + `\) Key Vault Secrets User`),
			[]string{"Caller", "appid=", "iss="}},
		{driver.InnerForbiddenByPolicy, driver.KindForbidden,
			regexp.MustCompile(`: 403: the vault's access policies do not let the identity get secrets: add Get to the secret permissions of an access policy for this identity \(object id ` +
				guid + `; ForbiddenByPolicy\)$`),
			regexp.MustCompile(`\(list\): 403: .*add List to the secret permissions`),
			[]string{"does not have", "appid=", "fwlink"}},
		{driver.InnerForbiddenByFirewall, driver.KindForbiddenByFirewall,
			regexp.MustCompile(`: 403: the vault's firewall refuses this caller \(ForbiddenByFirewall\): allow the app's outbound IP \(the vault saw [0-9.]+\) ` +
				`or virtual network in the vault's networking settings, or reach it through a private endpoint$`),
			regexp.MustCompile(`\(list\): 403: the vault's firewall refuses this caller \(ForbiddenByFirewall\)`),
			[]string{"Client address", "trusted service", "appid="}},
		{driver.InnerForbiddenByConnection, driver.KindForbiddenByConnection,
			regexp.MustCompile(`: 403: the vault's public network access is disabled \(ForbiddenByConnection\): reach the vault through its private endpoint; ` +
				`check that ` + regexp.QuoteMeta(h.Vault()) + ` resolves to a private address \(privatelink\.vaultcore\.azure\.net\)$`),
			regexp.MustCompile(`\(list\): 403: the vault's public network access is disabled \(ForbiddenByConnection\)`),
			[]string{"approved private link", "appid="}},
	} {
		t.Run(tc.inner, func(t *testing.T) {
			h.Refuse(tc.inner)
			ctx := ctxFor(t, 30*time.Second)
			_, err := r.Get(ctx, h.Vault(), "s", "")
			e := wantKind(t, "get", err, tc.kind, false)
			if e.Code != "Forbidden" || e.Inner != tc.inner {
				t.Errorf("get: code %q, inner %q; want Forbidden, %s", e.Code, e.Inner, tc.inner)
			}
			if !tc.get.MatchString(e.Reason) {
				t.Errorf("get: reason %q\nwant it to match %s", e.Reason, tc.get)
			}
			_, err = r.List(ctx, h.Vault(), 0)
			le := wantKind(t, "list", err, tc.kind, false)
			if !tc.list.MatchString(le.Reason) {
				t.Errorf("list: reason %q\nwant it to match %s", le.Reason, tc.list)
			}
			for _, s := range tc.notAllowed {
				if strings.Contains(e.Reason, s) || strings.Contains(le.Reason, s) {
					t.Errorf("a reason repeats the vault's message (%q): %q, %q", s, e.Reason, le.Reason)
				}
			}
		})
	}
}

func testStatusMapping(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("s", "v", Attrs{})
	for _, tc := range []struct {
		status    int
		kind      driver.Kind
		transient bool
	}{
		{503, driver.KindOther, true},
		{500, driver.KindOther, true},
		{400, driver.KindOther, false},
		{401, driver.KindUnauthorized, false},
		{404, driver.KindNotFound, false},
	} {
		h.Fail(OpGet, tc.status)
		_, err := r.Get(ctxFor(t, 30*time.Second), h.Vault(), "s", "")
		wantKind(t, fmt.Sprintf("GET answered %d", tc.status), err, tc.kind, tc.transient)
		h.Fail(OpList, tc.status)
		_, err = r.List(ctxFor(t, 30*time.Second), h.Vault(), 0)
		wantKind(t, fmt.Sprintf("list answered %d", tc.status), err, tc.kind, tc.transient)
		h.Clear()
	}
}

func testThrottledThenServed(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("s", "v", Attrs{})
	for _, after := range []time.Duration{time.Second, 0} { // 0: no Retry-After, read as 1 s
		h.Throttle(OpGet, 1, after)
		start := time.Now()
		got, err := r.Get(ctxFor(t, 30*time.Second), h.Vault(), "s", "")
		if err != nil || got.Value != "v" {
			t.Fatalf("after a 429 (Retry-After %v): %+v, %v", after, got, err)
		}
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Errorf("served %v after a 429 asking for %v: the wait was not honoured", took, after)
		}
	}
}

func testThrottledBeyondDeadline(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("s", "v", Attrs{})
	h.Throttle(OpGet, 0, time.Second)
	_, err := r.Get(ctxFor(t, 2500*time.Millisecond), h.Vault(), "s", "")
	wantKind(t, "throttled until the deadline", err, driver.KindThrottled, true)
}

func testCanceled(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("s", "v", Attrs{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.Get(ctx, h.Vault(), "s", "")
	wantKind(t, "canceled", err, driver.KindTimeout, false)
}

// listVault fills the vault for the list tests: 60 secrets, one disabled, one deleted,
// one tagged; it returns the names a list must show.
func listVault(h Harness) map[string]bool {
	want := map[string]bool{}
	for i := range 60 {
		name := fmt.Sprintf("s%02d", i)
		a := Attrs{}
		if i == 7 {
			a.Tags = map[string]string{"team": "a"}
		}
		v := h.Set(name, "v", a)
		switch i {
		case 3:
			h.SetEnabled(name, v, false)
		case 5:
			h.Delete(name)
			continue
		}
		want[name] = true
	}
	return want
}

func testList(t *testing.T, h Harness, r *driver.Reader) {
	want := listVault(h)
	l, err := r.List(ctxFor(t, 30*time.Second), h.Vault(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Complete || l.Malformed != 0 || len(l.Props) != len(want) {
		t.Fatalf("listing: complete %v, malformed %d, %d props; want complete, 0, %d", l.Complete, l.Malformed, len(l.Props), len(want))
	}
	for _, p := range l.Props {
		if !want[p.Name] || p.Updated == nil || p.Enabled != (p.Name != "s03") {
			t.Errorf("listed %+v", p)
		}
		if p.Name == "s07" && p.Tags["team"] != "a" {
			t.Errorf("s07's tags %v", p.Tags)
		}
	}
}

func testListBounded(t *testing.T, h Harness, r *driver.Reader) {
	listVault(h)
	l, err := r.List(ctxFor(t, 30*time.Second), h.Vault(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Complete || len(l.Props) != 25 || h.Pages() != 1 {
		t.Errorf("one page: complete %v, %d props, %d pages asked; want incomplete, 25, 1", l.Complete, len(l.Props), h.Pages())
	}
}

func testListThrottledRestarts(t *testing.T, h Harness, r *driver.Reader) {
	want := listVault(h)
	h.Throttle(OpList, 1, time.Second)
	l, err := r.List(ctxFor(t, 30*time.Second), h.Vault(), 0)
	if err != nil || !l.Complete || len(l.Props) != len(want) {
		t.Errorf("after a throttled page: %d props, complete %v, %v; want %d", len(l.Props), l.Complete, err, len(want))
	}
}

// item renders a list item with id (raw JSON).
func item(id string) string {
	return `{"id":` + id + `,"attributes":{"enabled":true,"created":1700000000,"updated":1700000000}}`
}

func page(next string, items ...string) string {
	return `{"value":[` + strings.Join(items, ",") + `],"nextLink":` + next + `}`
}

func testListMalformedItems(t *testing.T, h Harness, r *driver.Reader) {
	v := h.Vault()
	bad := []string{
		`"https://` + v + `/secrets/a%zz"`,
		`"https://` + v + `/secrets/a\u0000b"`,
		`"https://` + v + `/secrets"`,
		`"https://` + v + `/secrets/"`,
		`"https://` + v + `/secrets/x)@KeyVault(VaultName=other;SecretName=admin"`,
		`"https://` + v + `/secrets/named/0123456789abcdef0123456789abcdef"`,
		`"https://` + v + `/keys/k1"`,
		`"https://other.vault.azure.net/secrets/elsewhere"`,
		`"http://` + v + `/secrets/plain"`,
		`"https://user@` + v + `/secrets/userinfo"`,
		`"https://` + v + `/secrets/q?x=1"`,
		`"not a url"`,
		`""`,
		`null`,
		`"https://` + v + `/secrets/` + strings.Repeat("n", 128) + `"`,
		`"https://` + v + `/secrets/under_score"`,
	}
	items := make([]string, 0, len(bad)+2)
	for _, id := range bad {
		items = append(items, item(id))
	}
	items = append(items, item(`"https://`+v+`/secrets/good"`), item(`"https://`+strings.ToUpper(v)+`:443/secrets/Good-Two"`))
	h.Forge(OpList, page("null", items...))
	l, err := r.List(ctxFor(t, 30*time.Second), v, 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.Malformed != len(bad) || len(l.Props) != 2 || l.Props[0].Name != "good" || l.Props[1].Name != "Good-Two" || !l.Complete {
		t.Errorf("listing %+v, want %d malformed and good, Good-Two", l, len(bad))
	}
}

func testListNextLinks(t *testing.T, h Harness, r *driver.Reader) {
	v := h.Vault()
	for _, tc := range []struct {
		name, next string
		maxPages   int
	}{
		{"repeats", `"https://` + v + `:443/secrets?api-version=2026-04-01&$skiptoken=loop&maxresults=25"`, 2},
		{"other host", `"https://other.vault.azure.net:443/secrets?api-version=2026-04-01&$skiptoken=x"`, 1},
		{"other port", `"https://` + v + `:8443/secrets?api-version=2026-04-01&$skiptoken=x"`, 1},
		{"other path", `"https://` + v + `/secrets/good/versions?api-version=2026-04-01"`, 1},
		{"not https", `"http://` + v + `/secrets?api-version=2026-04-01&$skiptoken=y"`, 1},
		{"user info", `"https://user:pw@` + v + `/secrets?api-version=2026-04-01&$skiptoken=y"`, 1},
		{"not a URL", `"%zz"`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.Forge(OpList, page(tc.next, item(`"https://`+v+`/secrets/good"`)))
			before := h.Pages()
			_, err := r.List(ctxFor(t, 30*time.Second), v, 0)
			e := wantKind(t, "list", err, driver.KindMalformed, false)
			if !strings.Contains(e.Reason, "nextLink") || strings.Contains(e.Reason, "pw") || strings.Contains(e.Reason, "skiptoken") {
				t.Errorf("reason %q: want it to name the nextLink without its user info or query", e.Reason)
			}
			if n := h.Pages() - before; n > tc.maxPages {
				t.Errorf("%d pages read, want at most %d", n, tc.maxPages)
			}
			h.Clear()
		})
	}
}

func testForgedGetAnswers(t *testing.T, h Harness, r *driver.Reader) {
	v := h.Vault()
	ver := h.Set("s", "real", Attrs{})
	const sentinel = "FORGED-VALUE-4f1c"
	for _, tc := range []struct {
		name, version, body string
	}{
		{"another secret", "", `{"value":"` + sentinel + `","id":"https://` + v + `/secrets/other/` + strings.Repeat("a", 32) + `"}`},
		{"another vault", "", `{"value":"` + sentinel + `","id":"https://evil.vault.azure.net/secrets/s/` + strings.Repeat("a", 32) + `"}`},
		{"no version", "", `{"value":"` + sentinel + `","id":"https://` + v + `/secrets/s"}`},
		{"another version", ver, `{"value":"` + sentinel + `","id":"https://` + v + `/secrets/s/` + strings.Repeat("b", 32) + `"}`},
		{"no id", "", `{"value":"` + sentinel + `"}`},
		{"no value", "", `{"id":"https://` + v + `/secrets/s/` + strings.Repeat("a", 32) + `"}`},
	} {
		h.Forge(OpGet, tc.body)
		got, err := r.Get(ctxFor(t, 30*time.Second), v, "s", tc.version)
		e := wantKind(t, tc.name, err, driver.KindMalformed, false)
		if strings.Contains(e.Error(), sentinel) || got.Value != "" {
			t.Errorf("%s: the forged value came through: %+v, %v", tc.name, got, e)
		}
		h.Clear()
	}
}

func testClosed(t *testing.T, h Harness, r *driver.Reader) {
	h.Set("s", "v", Attrs{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err := r.Get(ctxFor(t, 30*time.Second), h.Vault(), "s", "")
	if e := wantKind(t, "get after Close", err, driver.KindOther, false); !strings.Contains(e.Reason, driver.ErrClosed.Error()) {
		t.Errorf("reason %q, want it to say the provider is closed", e.Reason)
	}
}
