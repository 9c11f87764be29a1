package eventgrid_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/go-jose/go-jose/v4"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// These tests send deliveries as Event Grid does, over real HTTP, to the handler of a
// provider that reads a kvtest vault through the real SDK. Tokens are signed with the
// emulator's own key (kvtest.WithSigningKey), so the handler verifies them against the
// emulator's OpenID Connect metadata and JWKS like any Entra token, and a test can make
// one wrong in exactly one way.

const (
	egAudience = "api://viperkv-webhook"
	egAppID    = "4962773b-9cdb-44cf-a8bf-237846a00ab7" // Microsoft.EventGrid
)

var egKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

type egFixture struct {
	srv      *kvtest.Server
	kv       *kvtest.Vault
	p        *viperkv.Provider
	h        http.Handler
	url      string
	kid      string
	v1       string // version of myvault/db at Load
	events   chan viperkv.Event
	logs     *logtest.Buffer
	sentinel string
}

// newEGFixture loads a provider with db.conn (versionless myvault/db), db.pinned (that
// secret's first version) and api.key (versionless myvault/api-key), and serves its Event
// Grid handler.
func newEGFixture(t *testing.T, opts ...eventgrid.Option) *egFixture {
	t.Helper()
	f := &egFixture{srv: kvtest.NewServerT(t, kvtest.WithSigningKey(egKey())), events: make(chan viperkv.Event, 64),
		logs: &logtest.Buffer{}, sentinel: "sentinel-" + fmt.Sprint(time.Now().UnixNano())}
	f.kv = f.srv.AddVault("myvault")
	f.kv.Grant(f.srv.SystemIdentity(), kvtest.RoleSecretsUser)
	f.v1 = f.kv.SetSecret("db", f.sentinel+"-v1")
	f.kv.SetSecret("api-key", "key-v1")
	f.kv.SetSecret("unreferenced", "u")
	v := yamlViper(t, fmt.Sprintf("db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=db)\"\n"+
		"  pinned: \"@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db/%s)\"\n"+
		"api:\n  key: \"@KeyVault(VaultName=myvault;SecretName=api-key)\"\n", f.v1))
	var err error
	f.p, err = viperkv.New(v, viperkv.WithEmulator(f.srv),
		viperkv.WithoutFileWatch(), viperkv.WithLogger(slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	f.p.OnChange(func(e viperkv.Event) { f.events <- e })
	if err := f.p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(opts) == 0 {
		opts = []eventgrid.Option{eventgrid.Entra(f.srv.TenantID(), egAudience)}
	}
	f.h, err = eventgrid.NewHandler(f.p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(f.h)
	t.Cleanup(ts.Close)
	f.url = ts.URL + "/events"
	f.kid = f.keyID(t)
	t.Cleanup(func() {
		if strings.Contains(f.logs.String(), f.sentinel) {
			t.Errorf("a secret value appears in the logs:\n%s", f.logs.String())
		}
	})
	return f
}

// keyID reads the kid of the emulator's signing key from the tenant's JWKS.
func (f *egFixture) keyID(t *testing.T) string {
	t.Helper()
	resp, err := f.srv.Client().Get("https://login.microsoftonline.com/" + f.srv.TenantID() + "/discovery/v2.0/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("JWKS: %v", err)
	}
	return set.Keys[0].Kid
}

// claims returns the claims of a good Event Grid token, as Entra ID issues it (v1).
func (f *egFixture) claims() map[string]any {
	now := time.Now()
	return map[string]any{
		"aud": egAudience, "iss": "https://sts.windows.net/" + f.srv.TenantID() + "/", "tid": f.srv.TenantID(),
		"appid": egAppID, "appidacr": "2", "idtyp": "app", "ver": "1.0", "roles": []string{eventgrid.DefaultRole},
		"oid": "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b", "sub": "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// sign signs claims as key would, with the given kid.
func sign(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *egFixture) token(t *testing.T, edit func(map[string]any)) string {
	c := f.claims()
	if edit != nil {
		edit(c)
	}
	return sign(t, egKey(), f.kid, c)
}

// egEvent is a Key Vault event in the Event Grid schema.
func egEvent(id, typ, secret, version string) map[string]any {
	return map[string]any{
		"id": id, "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/myvault",
		"subject": secret, "eventType": typ, "eventTime": time.Now().UTC().Format(time.RFC3339Nano),
		"data": map[string]any{"Id": "https://myvault.vault.azure.net/secrets/" + secret + "/" + version, "VaultName": "myvault",
			"ObjectType": "Secret", "ObjectName": secret, "Version": version, "NBF": nil, "EXP": nil},
		"dataVersion": "1", "metadataVersion": "1",
	}
}

// ceEvent is the same event in CloudEvents 1.0.
func ceEvent(id, typ, secret, version string) map[string]any {
	e := egEvent(id, typ, secret, version)
	return map[string]any{"specversion": "1.0", "type": typ, "source": e["topic"], "subject": secret, "id": id,
		"time": e["eventTime"], "datacontenttype": "application/json", "data": e["data"]}
}

// post sends a delivery and returns the status and body.
func (f *egFixture) post(t *testing.T, token, contentType string, body any, header ...string) (int, string) {
	t.Helper()
	var b []byte
	switch x := body.(type) {
	case []byte:
		b = x
	default:
		b, _ = json.Marshal(x)
	}
	req, _ := http.NewRequest(http.MethodPost, f.url, bytes.NewReader(b))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("aeg-event-type", "Notification")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// changed waits for the next EventChanged (real time: the refresh runs in the background).
func (f *egFixture) changed(t *testing.T) viperkv.Event {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case e := <-f.events:
			if e.Kind == viperkv.EventChanged {
				return e
			}
		case <-deadline:
			t.Fatal("no EventChanged within 15 s")
		}
	}
}

// settle waits until the handler's background work is over, then sends a marker delivery
// (a rotation of api-key) and returns the events watchers got before the marker's own:
// watchers are told in order, so those are all the events of the earlier deliveries.
func (f *egFixture) settle(t *testing.T, token string) []viperkv.Event {
	t.Helper()
	waitPending(t, f.p)
	v := f.kv.SetSecret("api-key", "key-"+fmt.Sprint(time.Now().UnixNano()))
	if st, body := f.post(t, token, "application/json", []any{egEvent("marker-"+v, string(viperkv.NoticeNewVersion), "api-key", v)}); st != 200 {
		t.Fatalf("marker delivery: %d %s", st, body)
	}
	var seen []viperkv.Event
	deadline := time.After(15 * time.Second)
	for {
		select {
		case e := <-f.events:
			if e.Secret.Name == "api-key" && e.NewVersion == v {
				return seen
			}
			seen = append(seen, e)
		case <-deadline:
			t.Fatal("the marker's event did not arrive within 15 s")
		}
	}
}

// TestEventGridSchemas: a rotation delivered in each schema refreshes that one secret with
// one GET and reaches the watcher as a push; the pinned reference keeps its version.
func TestEventGridSchemas(t *testing.T) {
	for _, tc := range []struct {
		name, contentType string
		body              func(id, v string) any
	}{
		{"EventGridSchema", "application/json", func(id, v string) any {
			return []any{egEvent(id, string(viperkv.NoticeNewVersion), "db", v)}
		}},
		{"CloudEvents", "application/cloudevents+json; charset=utf-8", func(id, v string) any {
			return ceEvent(id, string(viperkv.NoticeNewVersion), "db", v)
		}},
		{"CloudEventsBatch", "application/cloudevents-batch+json; charset=utf-8", func(id, v string) any {
			return []any{ceEvent("other-"+id, "Microsoft.KeyVault.KeyNewVersionCreated", "k", "1"), ceEvent(id, string(viperkv.NoticeNewVersion), "db", v)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newEGFixture(t)
			tok := f.token(t, nil)
			v2 := f.kv.SetSecret("db", f.sentinel+"-v2")
			f.kv.ResetCounters()
			if st, body := f.post(t, tok, tc.contentType, tc.body("ev-1", v2)); st != 200 {
				t.Fatalf("delivery: %d %s", st, body)
			}
			e := f.changed(t)
			if e.Source != viperkv.SourcePush || e.OldVersion != f.v1 || e.NewVersion != v2 || f.p.GetString("db.conn") != f.sentinel+"-v2" {
				t.Errorf("event %v", e)
			}
			if n := f.kv.Count(kvtest.OpGetSecret); n != 1 {
				t.Errorf("%d GETs for one rotation, want 1", n)
			}
			if got := f.p.GetString("db.pinned"); got != f.sentinel+"-v1" {
				t.Error("the pinned reference changed")
			}
		})
	}
}

// TestEventGridHandshakes: both schemas' validation handshakes, before and after Load,
// with and without a token (a handshake changes nothing).
func TestEventGridHandshakes(t *testing.T) {
	f := newEGFixture(t)
	tok := f.token(t, nil)
	validation := []any{map[string]any{
		"id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "topic": "/subscriptions/x", "subject": "",
		"data":      map[string]any{"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://rp-eastus2.eventgrid.azure.net/..."},
		"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2026-12-01T00:00:00Z", "metadataVersion": "1", "dataVersion": "2",
	}}
	st, body := f.post(t, tok, "application/json", validation, "aeg-event-type", "SubscriptionValidation")
	var resp struct {
		ValidationResponse string `json:"validationResponse"`
	}
	if st != 200 || json.Unmarshal([]byte(body), &resp) != nil || resp.ValidationResponse != "512d38b6-c7b8-40c8-89fe-f46f9e9622b6" {
		t.Errorf("Event Grid handshake: %d %s", st, body)
	}
	if st, body := f.post(t, "", "application/json", validation, "aeg-event-type", "SubscriptionValidation"); st != 200 || !strings.Contains(body, "512d38b6") {
		t.Errorf("handshake without a token: %d %s, want it answered", st, body)
	}

	options := func(token string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, f.url, nil)
		req.Header.Set("WebHook-Request-Origin", "eventgrid.azure.net")
		req.Header.Set("WebHook-Request-Rate", "120")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := options(tok); r.StatusCode != 200 || r.Header.Get("WebHook-Allowed-Origin") != "eventgrid.azure.net" {
		t.Errorf("CloudEvents handshake: %d, WebHook-Allowed-Origin %q", r.StatusCode, r.Header.Get("WebHook-Allowed-Origin"))
	}
	if r := options(""); r.StatusCode != 200 || r.Header.Get("WebHook-Allowed-Origin") != "eventgrid.azure.net" {
		t.Errorf("CloudEvents handshake without a token: %d, WebHook-Allowed-Origin %q", r.StatusCode, r.Header.Get("WebHook-Allowed-Origin"))
	}

	// Before the first Load: handshakes are answered, notifications get 503 (retried).
	unloaded, err := viperkv.New(yamlViper(t, "a: b\n"), viperkv.WithEmulator(f.srv))
	if err != nil {
		t.Fatal(err)
	}
	h, err := eventgrid.NewHandler(unloaded, eventgrid.Entra(f.srv.TenantID(), egAudience))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	f.url = ts.URL
	if st, body := f.post(t, tok, "application/json", validation, "aeg-event-type", "SubscriptionValidation"); st != 200 || !strings.Contains(body, "512d38b6") {
		t.Errorf("handshake before Load: %d %s", st, body)
	}
	if st, _ := f.post(t, tok, "application/json", []any{egEvent("e", string(viperkv.NoticeNewVersion), "db", "abc")}); st != 503 {
		t.Errorf("notification before Load: %d, want 503", st)
	}
}

// bodyWatch is a request body that records whether it was read.
type bodyWatch struct {
	r    io.Reader
	read bool
}

func (b *bodyWatch) Read(p []byte) (int, error) { b.read = true; return b.r.Read(p) }

// TestEventGridAuthentication: every way a token can be wrong gets 401 before the body is
// read and fetches nothing; a v1 or v2 token from Event Grid with the role passes.
func TestEventGridAuthentication(t *testing.T) {
	f := newEGFixture(t)
	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// A real token of the tenant, for Key Vault, from another app: what a stolen or
	// replayed Key Vault token looks like.
	kvToken, err := f.srv.Credential().GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	edit := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	cases := []struct {
		name  string
		token string
		want  int
	}{
		{"good v1", f.token(t, nil), 200},
		{"good v2", f.token(t, func(c map[string]any) {
			c["iss"] = "https://login.microsoftonline.com/" + f.srv.TenantID() + "/v2.0"
			c["ver"] = "2.0"
			delete(c, "appid")
			c["azp"] = egAppID
		}), 200},
		{"missing", "", 401},
		{"not a JWT", "hunter2", 401},
		{"wrong audience", f.token(t, edit("aud", "https://vault.azure.net")), 401},
		{"wrong issuer", f.token(t, edit("iss", "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/")), 401},
		{"wrong tenant claim", f.token(t, edit("tid", "72f988bf-86f1-41af-91ab-2d7cd011db47")), 401},
		{"expired", f.token(t, edit("exp", time.Now().Add(-time.Minute).Unix())), 401},
		{"not yet valid", f.token(t, edit("nbf", time.Now().Add(time.Hour).Unix())), 401},
		{"wrong app id", f.token(t, edit("appid", "11111111-2222-3333-4444-555555555555")), 401},
		{"no role", f.token(t, edit("roles", []string{"Reader"})), 401},
		{"signed by another key", sign(t, attacker, f.kid, f.claims()), 401},
		{"unsigned", unsigned(f.claims()), 401},
		{"a Key Vault token", kvToken.Token, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := f.kv.SetSecret("db", f.sentinel+"-"+tc.name)
			f.kv.ResetCounters()
			body := &bodyWatch{r: strings.NewReader(`[` + mustJSON(egEvent("id-"+v, string(viperkv.NoticeNewVersion), "db", v)) + `]`)}
			req := httptest.NewRequest(http.MethodPost, "/events", body)
			req.Header.Set("Content-Type", "application/json")
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d (%s)", rec.Code, tc.want, rec.Body.String())
			}
			if tc.want == 401 {
				if body.read {
					t.Error("the body was read before authentication")
				}
				if rec.Header().Get("WWW-Authenticate") != "Bearer" {
					t.Error("401 without WWW-Authenticate: Bearer")
				}
				if tc.token != "" && strings.Contains(f.logs.String(), tc.token) {
					t.Error("the token appears in the logs")
				}
				return
			}
			if e := f.changed(t); e.NewVersion != v {
				t.Errorf("event %v, want version %s", e, v)
			}
		})
	}
	// None of the refused deliveries fetched: a last good one settles, then count.
	f.kv.ResetCounters()
	f.settle(t, f.token(t, nil))
	if n := f.kv.Count(kvtest.OpGetSecret); n != 1 {
		t.Errorf("%d GETs after refused deliveries and one marker, want the marker's 1", n)
	}
}

func unsigned(claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "none", "typ": "JWT"}) + "." + enc(claims) + "."
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestEventGridHeaderAuthentication: a shared secret header alone, and with Entra (both
// required).
func TestEventGridHeaderAuthentication(t *testing.T) {
	f := newEGFixture(t, eventgrid.Header("X-Webhook-Key", "s3cret-header"))
	v := f.kv.SetSecret("db", f.sentinel+"-v2")
	ev := []any{egEvent("h1", string(viperkv.NoticeNewVersion), "db", v)}
	for _, hv := range []string{"", "wrong", "s3cret-header-and-more"} {
		var hdr []string
		if hv != "" {
			hdr = []string{"X-Webhook-Key", hv}
		}
		if st, _ := f.post(t, "", "application/json", ev, hdr...); st != 401 {
			t.Errorf("header %q: %d, want 401", hv, st)
		}
	}
	if st, body := f.post(t, "", "application/json", ev, "X-Webhook-Key", "s3cret-header"); st != 200 {
		t.Fatalf("good header: %d %s", st, body)
	}
	if e := f.changed(t); e.NewVersion != v {
		t.Errorf("event %v", e)
	}
	if strings.Contains(f.logs.String(), "s3cret-header") {
		t.Error("the shared secret appears in the logs")
	}

	both, err := eventgrid.NewHandler(f.p, eventgrid.Header("X-Webhook-Key", "s3cret-header"),
		eventgrid.Entra(f.srv.TenantID(), egAudience))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(both)
	defer ts.Close()
	f.url = ts.URL
	if st, _ := f.post(t, "", "application/json", ev, "X-Webhook-Key", "s3cret-header"); st != 401 {
		t.Errorf("header without the token, both required: %d", st)
	}
	if st, _ := f.post(t, f.token(t, nil), "application/json", ev); st != 401 {
		t.Errorf("token without the header, both required: %d", st)
	}
	if st, _ := f.post(t, f.token(t, nil), "application/json", ev, "X-Webhook-Key", "s3cret-header"); st != 200 {
		t.Errorf("both: %d", st)
	}

	for _, opts := range [][]eventgrid.Option{
		nil,
		{eventgrid.Entra(f.srv.TenantID())},
		{eventgrid.Entra("", egAudience)},
		{eventgrid.Header("", "x")},
		{eventgrid.Header("X-Key", "")},
	} {
		if _, err := eventgrid.NewHandler(f.p, opts...); err == nil {
			t.Errorf("NewEventGridHandler with %d option(s) and no usable authentication: no error", len(opts))
		}
	}
}

// TestEventGridDeliveries: what Event Grid and the world may send besides a clean
// rotation: oversized and malformed bodies, other methods, unknown vaults and secrets,
// pinned-only secrets, duplicates, an older version after a newer one, Azure's sample
// field name with a trailing space, near-expiry and expiry. None fetches more than needed.
func TestEventGridDeliveries(t *testing.T) {
	f := newEGFixture(t)
	tok := f.token(t, nil)
	nv := string(viperkv.NoticeNewVersion)

	big := bytes.Repeat([]byte(" "), 1<<20+1)
	if st, _ := f.post(t, tok, "application/json", big); st != 413 {
		t.Errorf("body over 1 MB: %d, want 413", st)
	}
	for _, bad := range []string{`[{"id":`, `{"not":"an event"}`, `[{"id":"x","eventType":"Microsoft.KeyVault.SecretNewVersionCreated","data":"text"}]`} {
		if st, _ := f.post(t, tok, "application/json", []byte(bad)); st != 400 {
			t.Errorf("malformed %q: %d, want 400", bad, st)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, f.url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 405 {
		t.Errorf("GET: %v %v, want 405", resp.StatusCode, err)
	}

	f.kv.ResetCounters()
	v2 := f.kv.SetSecret("db", f.sentinel+"-v2")
	rotation := egEvent("rot-1", nv, "db", v2)
	other := egEvent("o1", nv, "db", v2)
	other["data"].(map[string]any)["Id"] = "https://othervault.vault.azure.net/secrets/db/" + v2
	other["data"].(map[string]any)["VaultName"] = "othervault"
	for _, body := range []any{
		[]any{other}, // another vault
		[]any{egEvent("u1", nv, "unreferenced", "abc")}, // a secret nothing references
		[]any{rotation},
		[]any{rotation},                        // the same event again
		[]any{egEvent("rot-2", nv, "db", v2)},  // the held version, another id
		[]any{egEvent("late", nv, "db", f.v1)}, // the older version, late
	} {
		if st, out := f.post(t, tok, "application/json", body); st != 200 {
			t.Fatalf("delivery: %d %s", st, out)
		}
	}
	seen := f.settle(t, tok)
	var changes []viperkv.Event
	for _, e := range seen {
		if e.Kind == viperkv.EventChanged {
			changes = append(changes, e)
		}
	}
	if len(changes) != 1 || changes[0].NewVersion != v2 {
		t.Errorf("changed events %v, want one, to %s", changes, v2)
	}
	if n := f.kv.Count(kvtest.OpGetSecret); n != 2 {
		t.Errorf("%d GETs, want 2 (the rotation and the marker)", n)
	}

	// Azure's documented sample spells the key "ObjectName " and others in odd cases.
	f.kv.ResetCounters()
	v3 := f.kv.SetSecret("db", f.sentinel+"-v3")
	odd := fmt.Sprintf(`[{"id":"odd","eventType":" microsoft.keyvault.secretnewversioncreated ","subject":"db",`+
		`"data":{"id":"https://MyVault.vault.azure.net/secrets/db/%s","vaultName":"MyVault","objectType":"Secret","ObjectName ":" DB ","version":" %s ","nbf":null,"exp":null}}]`,
		v3, strings.ToUpper(v3))
	if st, out := f.post(t, tok, "application/json", []byte(odd)); st != 200 {
		t.Fatalf("odd delivery: %d %s", st, out)
	}
	if e := f.changed(t); e.NewVersion != v3 {
		t.Errorf("event %v after the odd delivery", e)
	}

	// Near expiry and expiry of the version in use: events, no GET.
	f.kv.ResetCounters()
	exp := time.Now().Add(29 * 24 * time.Hour)
	near := egEvent("near", string(viperkv.NoticeNearExpiry), "db", v3)
	near["data"].(map[string]any)["EXP"] = exp.Unix()
	expired := egEvent("exp", string(viperkv.NoticeExpired), "db", v3)
	expired["data"].(map[string]any)["EXP"] = exp.Unix()
	for _, body := range []any{[]any{near}, []any{expired}} {
		if st, out := f.post(t, tok, "application/json", body); st != 200 {
			t.Fatalf("expiry delivery: %d %s", st, out)
		}
	}
	seen = f.settle(t, tok)
	kinds := map[viperkv.EventKind]int{}
	for _, e := range seen {
		if e.Secret.Name == "db" {
			kinds[e.Kind]++
			if e.Source != viperkv.SourcePush {
				t.Errorf("event %v not from push", e)
			}
		}
	}
	if kinds[viperkv.EventNearExpiry] != 1 || kinds[viperkv.EventError] != 1 {
		t.Errorf("events %v, want one NearExpiry and one Error", seen)
	}
	if st := statusOf(t, f.p, "db.conn"); st.Status != viperkv.StatusSecretExpired {
		t.Errorf("status %v, want SecretExpired", st.Status)
	}
	if n := f.kv.Count(kvtest.OpGetSecret); n != 1 {
		t.Errorf("%d GETs for expiry notices and the marker, want the marker's 1", n)
	}
}

// TestEventGridFromTheEmulator: the emulator's own Event Grid, delivering each batch twice
// and out of order in the CloudEvents schema, drives the handler through several quick
// rotations: the configuration ends at the newest version, never moves backwards, and
// duplicates cost nothing.
func TestEventGridFromTheEmulator(t *testing.T) {
	f := newEGFixture(t)
	sub := f.kv.Subscribe(kvtest.EventSubscription{Endpoint: f.url, Audience: egAudience, Schema: kvtest.CloudEventSchema,
		Duplicate: true, Reorder: true, RetryDelays: []time.Duration{10 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := sub.WaitValidated(ctx); err != nil {
		t.Fatal(err)
	}
	f.kv.ResetCounters()
	var versions []string
	for i := range 4 {
		versions = append(versions, f.kv.SetSecret("db", fmt.Sprintf("%s-r%d", f.sentinel, i)))
	}
	last := versions[len(versions)-1]
	order := map[string]int{f.v1: -1}
	for i, v := range versions {
		order[v] = i
	}
	deadline := time.After(15 * time.Second)
	at := -1
	for at != len(versions)-1 {
		select {
		case e := <-f.events:
			if e.Kind != viperkv.EventChanged || e.Secret.Name != "db" {
				continue
			}
			if order[e.NewVersion] <= order[e.OldVersion] {
				t.Errorf("the configuration moved backwards: %v", e)
			}
			at = order[e.NewVersion]
		case <-deadline:
			t.Fatalf("the newest version %s did not arrive; at version %d of %d; deliveries %+v", last, at, len(versions), sub.Deliveries())
		}
	}
	if got := f.p.GetString("db.conn"); got != f.sentinel+"-r3" {
		t.Error("db.conn does not hold the newest value")
	}
	delivered := func() int {
		n := 0
		for _, d := range sub.Deliveries() {
			if d.Kind == "notification" && d.Status == 200 {
				n += len(d.EventIDs)
			}
		}
		return n
	}
	for end := time.Now().Add(15 * time.Second); delivered() < 2*len(versions) && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond) // Reorder holds the last event up to a second
	}
	waitPending(t, f.p)
	ok := delivered()
	if gets := f.kv.Count(kvtest.OpGetSecret); gets > int64(len(versions)) || ok < 2*len(versions) {
		t.Errorf("%d GETs for %d rotations delivered %d times: duplicates must cost nothing", gets, len(versions), ok)
	}
}

// bodyRecorder is an endpoint of the emulator's Event Grid that answers both schemas'
// handshakes and keeps each notification's body, as a Service Bus subscription would keep
// the message.
type bodyRecorder struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (b *bodyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		w.Header().Set("WebHook-Allowed-Origin", r.Header.Get("WebHook-Request-Origin"))
		return
	}
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("aeg-event-type") == "SubscriptionValidation" {
		var evs []struct {
			Data struct{ ValidationCode string } `json:"data"`
		}
		if json.Unmarshal(body, &evs) != nil || len(evs) != 1 {
			http.Error(w, "bad handshake", http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"validationResponse": evs[0].Data.ValidationCode})
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bodies = append(b.bodies, body)
}

func (b *bodyRecorder) first() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bodies) == 0 {
		return nil
	}
	return b.bodies[0]
}

// TestParseNoticesFromTheEmulator: the bodies the emulator's Event Grid writes in
// either schema, read by ParseNotices and handed to Notify, as an app reading a Service
// Bus subscription would: the rotation arrives with one GET, a redelivery costs none.
func TestParseNoticesFromTheEmulator(t *testing.T) {
	for _, schema := range []kvtest.EventSchema{kvtest.EventGridSchema, kvtest.CloudEventSchema} {
		t.Run(string(schema), func(t *testing.T) {
			f := newEGFixture(t)
			rec := &bodyRecorder{}
			ts := httptest.NewServer(rec)
			defer ts.Close()
			sub := f.kv.Subscribe(kvtest.EventSubscription{Endpoint: ts.URL, Schema: schema, Headers: map[string]string{"X-Test": "1"}})
			defer sub.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := sub.WaitValidated(ctx); err != nil {
				t.Fatal(err)
			}
			v2 := f.kv.SetSecret("db", f.sentinel+"-v2")
			var body []byte
			for body == nil && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
				body = rec.first()
			}
			changes, err := eventgrid.ParseNotices(body)
			if err != nil || len(changes) != 1 {
				t.Fatalf("ParseNotices(%s) = %v, %v", body, changes, err)
			}
			c := changes[0]
			if c.Type != viperkv.NoticeNewVersion || c.ID == "" || c.Vault != "myvault.vault.azure.net" || c.Name != "db" || c.Version != v2 {
				t.Errorf("change %+v", c)
			}
			f.kv.ResetCounters()
			for range 2 { // the second is a redelivery: same event id
				if err := f.p.Notify(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			if got := f.p.GetString("db.conn"); got != f.sentinel+"-v2" {
				t.Error("db.conn does not hold the new version")
			}
			if n := f.kv.Count(kvtest.OpGetSecret); n != 1 {
				t.Errorf("%d GETs for a change delivered twice, want 1", n)
			}
		})
	}
}

// ParseNotices keeps only Key Vault secret events and refuses what is neither schema.
func TestParseNoticesSkipsAndRejects(t *testing.T) {
	mixed := mustJSON([]any{
		egEvent("e1", "Microsoft.KeyVault.KeyNewVersionCreated", "signing-key", "k1"),
		egEvent("e2", "Microsoft.EventGrid.SubscriptionValidationEvent", "", ""),
		egEvent("e3", string(viperkv.NoticeNearExpiry), "db", "v9"),
	})
	changes, err := eventgrid.ParseNotices([]byte(mixed))
	if err != nil || len(changes) != 1 || changes[0].Type != viperkv.NoticeNearExpiry || changes[0].ID != "e3" || changes[0].Version != "v9" {
		t.Errorf("mixed delivery: %+v, %v", changes, err)
	}
	batch := mustJSON([]any{ceEvent("c1", string(viperkv.NoticeNewVersion), "db", "v2"), ceEvent("c2", string(viperkv.NoticeExpired), "api-key", "v3")})
	if changes, err := eventgrid.ParseNotices([]byte(batch)); err != nil || len(changes) != 2 || changes[1].Type != viperkv.NoticeExpired {
		t.Errorf("CloudEvents batch: %+v, %v", changes, err)
	}
	for _, bad := range []string{"", "not json", `{"id":"x"}`, `[{"id":"x","data":"str","eventType":"Microsoft.KeyVault.SecretNewVersionCreated"}]`,
		// Defects: null was a body of no events, and a field named twice in different case
		// was read from whichever came first out of a map.
		`null`, ` null `,
		`[{"id":"x","eventType":"Microsoft.KeyVault.SecretNewVersionCreated","data":{"ObjectName":"db","objectname":"other","VaultName":"myvault","Version":"v"}}]`,
		`{"specversion":"1.0","id":"x","type":"Microsoft.KeyVault.SecretNewVersionCreated","data":{"Version":"a","VERSION ":"b","ObjectName":"db","VaultName":"myvault"}}`,
	} {
		if changes, err := eventgrid.ParseNotices([]byte(bad)); err == nil {
			t.Errorf("ParseNotices(%q) = %+v, want an error", bad, changes)
		}
	}
}

// An attacker who can put a message where the app reads changes can cost a GET of a
// referenced secret, nothing more: a change naming another host sends it no request, and a
// forged version of a referenced secret fetches the vault's own latest, which is held.
func TestParseNoticesForged(t *testing.T) {
	f := newEGFixture(t)
	var hits atomic.Int64
	evil := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer evil.Close()
	host := strings.TrimPrefix(evil.URL, "https://")
	forged := mustJSON([]any{
		map[string]any{"id": "f1", "eventType": string(viperkv.NoticeNewVersion),
			"data": map[string]any{"Id": "https://" + host + "/secrets/db/0123", "VaultName": "myvault", "ObjectName": "db", "Version": "0123"}},
		map[string]any{"id": "f2", "eventType": string(viperkv.NoticeNewVersion),
			"data": map[string]any{"Id": "https://myvault.vault.azure.net/secrets/db/forged", "VaultName": "myvault", "ObjectName": "db", "Version": "forged"}},
	})
	changes, err := eventgrid.ParseNotices([]byte(forged))
	if err != nil || len(changes) != 2 || changes[0].Vault != host {
		t.Fatalf("ParseNotices = %+v, %v", changes, err)
	}
	f.kv.ResetCounters()
	for _, c := range changes {
		if err := f.p.Notify(context.Background(), c); err != nil {
			t.Errorf("Notify(%+v) = %v", c, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the forged host got %d requests", n)
	}
	if n := f.kv.Count(kvtest.OpGetSecret); n != 1 {
		t.Errorf("%d GETs for a forged version of a referenced secret, want 1", n)
	}
	if got := f.p.GetString("db.conn"); got != f.sentinel+"-v1" {
		t.Error("db.conn changed after forged changes")
	}
	select {
	case e := <-f.events:
		t.Errorf("event after forged changes: %v", e)
	default:
	}
}

// ParseNotices takes any body without panicking, and what it returns is a secret
// change of a known type whose fields carry no surrounding spaces.
func FuzzParseNotices(f *testing.F) {
	f.Add([]byte(mustJSON([]any{egEvent("e1", string(viperkv.NoticeNewVersion), "db", "v2")})))
	f.Add([]byte(mustJSON(ceEvent("c1", string(viperkv.NoticeExpired), "db", "v2"))))
	f.Add([]byte(`[{"id":" x ","eventType":"Microsoft.KeyVault.SecretNearExpiry","data":{"ObjectName ":" db ","Id":"https://h/secrets/db/v"}}]`))
	f.Add([]byte(`{"specversion":"1.0","type":"x","data":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		changes, err := eventgrid.ParseNotices(body)
		if err != nil {
			if changes != nil {
				t.Fatalf("changes %+v with error %v", changes, err)
			}
			return
		}
		for _, c := range changes {
			switch c.Type {
			case viperkv.NoticeNewVersion, viperkv.NoticeNearExpiry, viperkv.NoticeExpired:
			default:
				t.Fatalf("change of type %q", c.Type)
			}
			for _, s := range []string{c.ID, c.Name, c.Version} {
				if s != strings.TrimSpace(s) {
					t.Fatalf("untrimmed field %q in %+v", s, c)
				}
			}
		}
	})
}

// Refused requests do not flood the logs with what the attacker chose: each is logged at
// Debug, and a Warn at most once a minute counts them.
func TestRefusedRequestsDoNotFloodTheLogs(t *testing.T) {
	f := newEGFixture(t)
	const chosen = "ATTACKER-CHOSEN-ISSUER-8d2f"
	for range 50 {
		tok := f.token(t, func(c map[string]any) { c["iss"] = chosen })
		if st, _ := f.post(t, tok, "application/json", []any{egEvent("e", string(viperkv.NoticeNewVersion), "db", "v")}); st != http.StatusUnauthorized {
			t.Fatalf("a token with a foreign issuer answered %d", st)
		}
	}
	var warns []string
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") {
			warns = append(warns, line)
		}
	}
	if len(warns) > 1 {
		t.Errorf("%d Warn lines for 50 refused requests, want at most one:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	for _, w := range warns {
		if strings.Contains(w, chosen) {
			t.Errorf("a Warn line carries the attacker's claim: %s", w)
		}
	}
}
