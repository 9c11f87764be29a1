package kvtest_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/viperkv/viperkv/internal/emuinfo"
	"github.com/viperkv/viperkv/kvtest"
)

// Tests of Event Grid delivery: a real webhook (httptest) receives what the emulator's
// Event Grid sends. Waits are real time, since the deliveries are real HTTP, and poll with
// a generous deadline so a loaded machine only makes them slower, never flaky.

const eventWait = 20 * time.Second

// hookReq is one request the webhook received.
type hookReq struct {
	Method string
	Header http.Header
	Body   []byte
	Time   time.Time
}

func (r hookReq) eventType() string { return r.Header.Get("aeg-event-type") }

// webhook is a test endpoint. By default it validates every handshake (both schemas) and
// answers notifications 200; answer and gate change that.
type webhook struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []hookReq
	notes int // notifications received
	// answer, when set, gives the status for the n-th notification (0-based); it may block
	// on the request's context (a timeout).
	answer func(n int, r *http.Request) int
	// handshake, when set, gives the status and validation code (Event Grid schema) or
	// allowed origin (CloudEvents) for the n-th handshake; "" means the right one.
	handshake func(n int) (status int, value string)
	// rawHandshake, when set, gives the status and the whole body of the answer to the
	// n-th Event Grid schema handshake (handshake is then not used for it).
	rawHandshake func(n int) (status int, body string)
	hshakes      int
	// gate, when set, holds every handshake until it is closed (or the request ends).
	gate chan struct{}
}

func newWebhook(t *testing.T, tlsOn bool) *webhook {
	t.Helper()
	h := &webhook{}
	if tlsOn {
		h.Server = httptest.NewTLSServer(h)
	} else {
		h.Server = httptest.NewServer(h)
	}
	t.Cleanup(h.Close)
	return h
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.reqs = append(h.reqs, hookReq{Method: r.Method, Header: r.Header.Clone(), Body: body, Time: time.Now()})
	isHandshake := r.Method == http.MethodOptions || r.Header.Get("aeg-event-type") == "SubscriptionValidation"
	var n int
	if isHandshake {
		n = h.hshakes
		h.hshakes++
	} else {
		n = h.notes
		h.notes++
	}
	answer, handshake, rawHandshake, gate := h.answer, h.handshake, h.rawHandshake, h.gate
	h.mu.Unlock()

	if !isHandshake {
		status := http.StatusOK
		if answer != nil {
			status = answer(n, r)
		}
		if status > 0 {
			w.WriteHeader(status)
		}
		return
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	status, value := http.StatusOK, ""
	if handshake != nil {
		status, value = handshake(n)
	}
	if r.Method == http.MethodOptions {
		if value == "" {
			value = r.Header.Get("WebHook-Request-Origin")
		}
		w.Header().Set("WebHook-Allowed-Origin", value)
		w.Header().Set("Allow", "POST, OPTIONS")
		w.WriteHeader(status)
		return
	}
	if rawHandshake != nil {
		status, raw := rawHandshake(n)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, raw)
		return
	}
	var evs []struct {
		Data struct {
			ValidationCode string `json:"validationCode"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &evs)
	if value == "" && len(evs) == 1 {
		value = evs[0].Data.ValidationCode
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"ValidationResponse": %q}`, value) // any letter case is accepted
}

func (h *webhook) requests() []hookReq {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reqs)
}

// notifications returns the notification requests, for one subscription or ("") all.
func (h *webhook) notifications(sub string) []hookReq {
	var out []hookReq
	for _, r := range h.requests() {
		if r.Method == http.MethodPost && r.eventType() == "Notification" &&
			(sub == "" || strings.EqualFold(r.Header.Get("aeg-subscription-name"), sub)) {
			out = append(out, r)
		}
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEvents waits until the subscription's notifications carry n events, and returns
// them in the order received.
func (h *webhook) waitEvents(t *testing.T, sub string, n int) []tEvent {
	t.Helper()
	var evs []tEvent
	waitUntil(t, fmt.Sprintf("%d events for %s", n, sub), func() bool {
		evs = nil
		for _, r := range h.notifications(sub) {
			evs = append(evs, parseEvents(t, r)...)
		}
		return len(evs) >= n
	})
	return evs
}

// tEvent is what the tests look at in an event of either schema.
type tEvent struct {
	ID, Type, Subject, Time string
	Data                    map[string]any
}

func (e tEvent) version() string { s, _ := e.Data["Version"].(string); return s }

// parseEvents reads the events of a notification in either schema.
func parseEvents(t *testing.T, r hookReq) []tEvent {
	t.Helper()
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", r.Header.Get("Content-Type"), err)
	}
	var raw []map[string]any
	switch mt {
	case "application/json", "application/cloudevents-batch+json":
		if err := json.Unmarshal(r.Body, &raw); err != nil {
			t.Fatalf("%s body %s: %v", mt, r.Body, err)
		}
	case "application/cloudevents+json":
		var one map[string]any
		if err := json.Unmarshal(r.Body, &one); err != nil {
			t.Fatalf("%s body %s: %v", mt, r.Body, err)
		}
		raw = []map[string]any{one}
	default:
		t.Fatalf("unexpected Content-Type %q", mt)
	}
	out := make([]tEvent, len(raw))
	for i, m := range raw {
		e := tEvent{ID: str(m["id"]), Subject: str(m["subject"])}
		e.Data, _ = m["data"].(map[string]any)
		if mt == "application/json" {
			e.Type, e.Time = str(m["eventType"]), str(m["eventTime"])
		} else {
			e.Type, e.Time = str(m["type"]), str(m["time"])
		}
		out[i] = e
	}
	return out
}

func str(v any) string { s, _ := v.(string); return s }

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func wantKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := keys(m); !slices.Equal(got, want) {
		t.Errorf("%s fields = %v, want %v", what, got, want)
	}
}

func wantHeader(t *testing.T, what string, h http.Header, name, want string) {
	t.Helper()
	if vs, ok := h[http.CanonicalHeaderKey(name)]; !ok || len(vs) != 1 || vs[0] != want {
		t.Errorf("%s: header %s = %q (present %v), want %q", what, name, vs, ok, want)
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// vaultTopic is the topic the events of a vault of srv carry: its resource ID in the
// emulated subscription, the one the system identity's resource ID names too.
func vaultTopic(t *testing.T, srv *kvtest.Server, vault string) string {
	t.Helper()
	m := regexp.MustCompile(`^/subscriptions/([0-9a-f-]{36})/`).FindStringSubmatch(srv.SystemIdentity().ResourceID)
	if m == nil {
		t.Fatalf("no subscription in %s", srv.SystemIdentity().ResourceID)
	}
	return "/subscriptions/" + m[1] + "/resourceGroups/kvtest-rg/providers/Microsoft.KeyVault/vaults/" + vault
}

// deliveries waits until the subscription has recorded n deliveries and returns them. A
// delivery is recorded once the emulator has read the endpoint's answer, which is after the
// endpoint saw the request: waiting on the endpoint alone races with the record.
func deliveries(t *testing.T, sub *kvtest.Subscription, n int) []kvtest.Delivery {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d deliveries recorded", n), func() bool { return len(sub.Deliveries()) >= n })
	return sub.Deliveries()
}

func waitValidated(t *testing.T, sub *kvtest.Subscription) {
	t.Helper()
	if err := sub.WaitValidated(ctxTimeout(t, eventWait)); err != nil {
		t.Fatal(err)
	}
}

// TestEventGridSchemaDelivery: the Event Grid schema's handshake precedes any
// notification, even of an event published while the handshake is under way, and both
// carry Event Grid's exact fields and headers.
func TestEventGridSchemaDelivery(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	hook.gate = make(chan struct{})
	sub := kv.Subscribe(kvtest.EventSubscription{
		Name: "app-push", Endpoint: hook.URL + "/events?k=1", Client: hook.Client(),
		Headers: map[string]string{"X-Api-Key": "k1", "Aeg-Delivery-Count": "99"}, // Event Grid's own headers win
	})
	if sub.Name() != "app-push" {
		t.Errorf("Name = %q", sub.Name())
	}
	waitUntil(t, "the handshake", func() bool { return len(hook.requests()) == 1 })
	nbf := time.Now().Add(-time.Hour).Truncate(time.Second)
	exp := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	before := time.Now()
	v1 := kv.SetSecret("db-conn", "value-1", kvtest.WithNotBefore(nbf), kvtest.WithExpires(exp))
	after := time.Now()
	close(hook.gate)
	waitValidated(t, sub)
	v2 := kv.SetSecret("db-conn", "value-2")
	waitUntil(t, "two notifications", func() bool { return len(hook.notifications("")) == 2 })

	reqs := hook.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want handshake + 2 notifications", len(reqs))
	}
	topic := vaultTopic(t, srv, "myvault")

	// The handshake.
	hs := reqs[0]
	if hs.Method != http.MethodPost || hs.eventType() != "SubscriptionValidation" {
		t.Fatalf("first request: %s aeg-event-type %q", hs.Method, hs.eventType())
	}
	wantHeader(t, "handshake", hs.Header, "aeg-subscription-name", "APP-PUSH")
	wantHeader(t, "handshake", hs.Header, "aeg-delivery-count", "0")
	wantHeader(t, "handshake", hs.Header, "aeg-metadata-version", "1")
	wantHeader(t, "handshake", hs.Header, "X-Api-Key", "k1")
	if mt, _, _ := mime.ParseMediaType(hs.Header.Get("Content-Type")); mt != "application/json" {
		t.Errorf("handshake Content-Type %q", hs.Header.Get("Content-Type"))
	}
	if hs.Header.Get("Authorization") != "" {
		t.Error("handshake has Authorization without Entra protection")
	}
	var vev []map[string]any
	if err := json.Unmarshal(hs.Body, &vev); err != nil || len(vev) != 1 {
		t.Fatalf("handshake body %s: %v", hs.Body, err)
	}
	wantKeys(t, "validation event", vev[0], "id", "topic", "subject", "data", "eventType", "eventTime", "metadataVersion", "dataVersion")
	if vev[0]["eventType"] != "Microsoft.EventGrid.SubscriptionValidationEvent" || vev[0]["subject"] != "" ||
		vev[0]["dataVersion"] != "2" || vev[0]["metadataVersion"] != "1" || vev[0]["topic"] != topic || !uuidRE.MatchString(str(vev[0]["id"])) {
		t.Errorf("validation event %v", vev[0])
	}
	vdata, _ := vev[0]["data"].(map[string]any)
	wantKeys(t, "validation data", vdata, "validationCode", "validationUrl")
	code := str(vdata["validationCode"])
	u, err := url.Parse(str(vdata["validationUrl"]))
	if !uuidRE.MatchString(code) || err != nil || u.Scheme != "https" || u.Host != "rp-kvtest.eventgrid.azure.net" ||
		u.Path != "/eventsubscriptions/app-push/validate" || u.Query().Get("id") != code ||
		u.Query().Get("apiVersion") != "2020-10-15-preview" || u.Query().Get("token") == "" {
		t.Errorf("validation data %v", vdata)
	}
	if _, err := time.Parse(time.RFC3339Nano, u.Query().Get("t")); err != nil {
		t.Errorf("validationUrl t: %v", err)
	}

	// The notifications, the one published during the handshake first.
	for i, want := range []struct {
		version string
		nbf     any
		exp     any
	}{{v1, float64(nbf.Unix()), float64(exp.Unix())}, {v2, nil, nil}} {
		r := reqs[i+1]
		what := fmt.Sprintf("notification %d", i+1)
		if r.Method != http.MethodPost || r.eventType() != "Notification" {
			t.Fatalf("%s: %s %q", what, r.Method, r.eventType())
		}
		if r.Time.Before(reqs[0].Time) {
			t.Errorf("%s arrived before the handshake", what)
		}
		wantHeader(t, what, r.Header, "Content-Type", "application/json; charset=utf-8")
		wantHeader(t, what, r.Header, "aeg-subscription-name", "APP-PUSH")
		wantHeader(t, what, r.Header, "aeg-delivery-count", "0")
		wantHeader(t, what, r.Header, "aeg-data-version", "1")
		wantHeader(t, what, r.Header, "aeg-metadata-version", "1")
		wantHeader(t, what, r.Header, "X-Api-Key", "k1")
		var evs []map[string]any
		if err := json.Unmarshal(r.Body, &evs); err != nil || len(evs) != 1 {
			t.Fatalf("%s body %s: %v", what, r.Body, err)
		}
		ev := evs[0]
		wantKeys(t, what, ev, "id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion", "metadataVersion")
		if !uuidRE.MatchString(str(ev["id"])) || ev["topic"] != topic || ev["subject"] != "db-conn" ||
			ev["eventType"] != kvtest.EventSecretNewVersionCreated || ev["dataVersion"] != "1" || ev["metadataVersion"] != "1" {
			t.Errorf("%s: %v", what, ev)
		}
		et, err := time.Parse(time.RFC3339Nano, str(ev["eventTime"]))
		if err != nil || !strings.HasSuffix(str(ev["eventTime"]), "Z") {
			t.Errorf("%s eventTime %v: %v", what, ev["eventTime"], err)
		}
		if i == 0 && (et.Before(before) || et.After(after)) {
			t.Errorf("eventTime %v not within the SetSecret call [%v, %v]", et, before, after)
		}
		data, _ := ev["data"].(map[string]any)
		wantKeys(t, what+" data", data, "Id", "VaultName", "ObjectType", "ObjectName", "Version", "NBF", "EXP")
		wantData := map[string]any{
			"Id": "https://myvault.vault.azure.net/secrets/db-conn/" + want.version, "VaultName": "myvault",
			"ObjectType": "Secret", "ObjectName": "db-conn", "Version": want.version, "NBF": want.nbf, "EXP": want.exp,
		}
		for k, w := range wantData {
			if data[k] != w {
				t.Errorf("%s data %s = %v, want %v", what, k, data[k], w)
			}
		}
	}

	ds := deliveries(t, sub, 3)
	if len(ds) != 3 || ds[0].Kind != "validation" || ds[0].Status != 200 || ds[0].Attempt != 1 || ds[0].Retried ||
		ds[1].Kind != "notification" || ds[1].Status != 200 || ds[1].Attempt != 1 || ds[1].Retried ||
		!slices.Equal(ds[1].Types, []string{kvtest.EventSecretNewVersionCreated}) || len(ds[1].EventIDs) != 1 {
		t.Errorf("deliveries %+v", ds)
	}
	if !slices.Equal(ds[0].EventIDs, []string{str(vev[0]["id"])}) || ds[0].Time.IsZero() {
		t.Errorf("validation delivery %+v", ds[0])
	}
}

// TestCloudEventsDelivery: the CloudEvents schema's OPTIONS handshake precedes any
// notification; a notification is one structured CloudEvent.
func TestCloudEventsDelivery(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	hook.gate = make(chan struct{})
	sub := kv.Subscribe(kvtest.EventSubscription{
		Endpoint: hook.URL, Schema: kvtest.CloudEventSchema, Client: hook.Client(),
		Headers: map[string]string{"X-Api-Key": "k2"},
	})
	if sub.Name() != "sub-1" {
		t.Errorf("default name %q", sub.Name())
	}
	waitUntil(t, "the handshake", func() bool { return len(hook.requests()) == 1 })
	ver := kv.SetSecret("api-key", "x")
	close(hook.gate)
	waitValidated(t, sub)
	waitUntil(t, "the notification", func() bool { return len(hook.notifications("")) == 1 })
	reqs := hook.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	hs := reqs[0]
	if hs.Method != http.MethodOptions {
		t.Fatalf("first request %s, want OPTIONS", hs.Method)
	}
	wantHeader(t, "handshake", hs.Header, "WebHook-Request-Origin", "eventgrid.azure.net")
	wantHeader(t, "handshake", hs.Header, "WebHook-Request-Rate", "120")
	wantHeader(t, "handshake", hs.Header, "X-Api-Key", "k2")

	r := reqs[1]
	wantHeader(t, "notification", r.Header, "Content-Type", "application/cloudevents+json; charset=utf-8")
	wantHeader(t, "notification", r.Header, "aeg-event-type", "Notification")
	wantHeader(t, "notification", r.Header, "aeg-subscription-name", "SUB-1")
	wantHeader(t, "notification", r.Header, "aeg-delivery-count", "0")
	wantHeader(t, "notification", r.Header, "aeg-metadata-version", "1")
	wantHeader(t, "notification", r.Header, "Origin", "eventgrid.azure.net")
	wantHeader(t, "notification", r.Header, "X-Api-Key", "k2")
	var ev map[string]any
	if err := json.Unmarshal(r.Body, &ev); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	wantKeys(t, "cloud event", ev, "specversion", "type", "source", "subject", "id", "time", "datacontenttype", "data")
	if ev["specversion"] != "1.0" || ev["type"] != kvtest.EventSecretNewVersionCreated || ev["source"] != vaultTopic(t, srv, "myvault") ||
		ev["subject"] != "api-key" || !uuidRE.MatchString(str(ev["id"])) || ev["datacontenttype"] != "application/json" {
		t.Errorf("cloud event %v", ev)
	}
	if _, err := time.Parse(time.RFC3339Nano, str(ev["time"])); err != nil {
		t.Errorf("time: %v", err)
	}
	data, _ := ev["data"].(map[string]any)
	wantKeys(t, "data", data, "Id", "VaultName", "ObjectType", "ObjectName", "Version", "NBF", "EXP")
	if data["Id"] != "https://myvault.vault.azure.net/secrets/api-key/"+ver || data["Version"] != ver || data["NBF"] != nil {
		t.Errorf("data %v", data)
	}
	if ds := deliveries(t, sub, 2); len(ds) != 2 || ds[0].Kind != "validation" || ds[0].EventIDs != nil || ds[1].EventIDs[0] != ev["id"] {
		t.Errorf("deliveries %+v", ds)
	}
}

// TestEventGridSDKSetSecret: writes through the real SDK publish what Key Vault does: one
// SecretNewVersionCreated per new version (a restore's included), nothing for a PATCH, a
// delete or a purge.
func TestEventGridSDKSetSecret(t *testing.T) {
	srv := kvtest.NewServerT(t, kvtest.WithDeletionWindow(0))
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsOfficer)
	c := newSecretsClient(t, srv, kv.URL(), srv.Credential())
	ctx := ctxTimeout(t, 60*time.Second)
	hook := newWebhook(t, true)
	sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client()})
	waitValidated(t, sub)

	resp, err := c.SetSecret(ctx, "api-key", azsecrets.SetSecretParameters{Value: to.Ptr("secret-value")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ver := resp.ID.Version()
	if _, err := c.UpdateSecretProperties(ctx, "api-key", ver, azsecrets.UpdateSecretPropertiesParameters{
		ContentType: to.Ptr("text/plain"), SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(false)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	backup, err := c.BackupSecret(ctx, "api-key", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSecret(ctx, "api-key", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PurgeDeletedSecret(ctx, "api-key", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RestoreSecret(ctx, azsecrets.RestoreSecretParameters{SecretBackup: backup.Value}, nil); err != nil {
		t.Fatal(err)
	}
	marker := kv.SetSecret("marker", "m") // published last: once it arrives, everything has
	evs := hook.waitEvents(t, sub.Name(), 3)
	if len(evs) != 3 {
		t.Fatalf("%d events: %+v", len(evs), evs)
	}
	for i, want := range []struct{ subject, version string }{{"api-key", ver}, {"api-key", ver}, {"marker", marker}} {
		if evs[i].Type != kvtest.EventSecretNewVersionCreated || evs[i].Subject != want.subject || evs[i].version() != want.version {
			t.Errorf("event %d = %s %s/%s, want SecretNewVersionCreated %s/%s", i, evs[i].Type, evs[i].Subject, evs[i].version(), want.subject, want.version)
		}
	}
	if evs[0].ID == evs[1].ID {
		t.Error("the restore's event reused the first event's ID")
	}
}

// jwk is a JSON Web Key of the emulator's JWKS.
type jwk struct {
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// verifyEntraToken checks token as a webhook protected by Entra ID does: the issuer and
// keys come from the tenant's OpenID configuration, the signature is RS256.
func verifyEntraToken(t *testing.T, srv *kvtest.Server, token string) map[string]any {
	t.Helper()
	getJSON := func(u string, into any) {
		t.Helper()
		resp, err := srv.Client().Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatal(err)
		}
	}
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON("https://login.microsoftonline.com/"+srv.TenantID()+"/.well-known/openid-configuration", &disc)
	var set struct {
		Keys []jwk `json:"keys"`
	}
	getJSON(disc.JWKSURI, &set)

	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var header struct {
		Alg, Kid, Typ string
	}
	hb, err := decodeB64(parts[0])
	if err != nil || json.Unmarshal(hb, &header) != nil || header.Alg != "RS256" || header.Typ != "JWT" {
		t.Fatalf("token header %s: %v", hb, err)
	}
	i := slices.IndexFunc(set.Keys, func(k jwk) bool { return k.Kid == header.Kid })
	if i < 0 {
		t.Fatalf("kid %s is not in the JWKS", header.Kid)
	}
	n, errN := decodeB64(set.Keys[i].N)
	e, errE := decodeB64(set.Keys[i].E)
	if errN != nil || errE != nil {
		t.Fatal("bad JWK")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	sig, err := decodeB64(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
		t.Fatal("token signature does not verify with the tenant's JWKS")
	}
	claims := decodeClaims(t, token)
	if claims["iss"] != disc.Issuer {
		t.Errorf("iss %v, discovery issuer %s", claims["iss"], disc.Issuer)
	}
	return claims
}

// TestEventGridEntraToken: with an audience, every request, the handshake included,
// carries a token of Event Grid's app that verifies with the tenant's keys.
func TestEventGridEntraToken(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	sub := kv.Subscribe(kvtest.EventSubscription{
		Name: "secure", Endpoint: hook.URL, Client: hook.Client(), Audience: "api://webhook-app",
		Headers: map[string]string{"Authorization": "Bearer replaced", "X-Api-Key": "k"},
	})
	noRoles := kv.Subscribe(kvtest.EventSubscription{
		Name: "noroles", Endpoint: hook.URL, Client: hook.Client(), Audience: "6f1c7c1e-0000-4000-8000-00000000aaaa",
		Roles: []string{}, Schema: kvtest.CloudEventSchema,
	})
	static := kv.Subscribe(kvtest.EventSubscription{
		Name: "static", Endpoint: hook.URL, Client: hook.Client(), Headers: map[string]string{"Authorization": "Bearer static"},
	})
	for _, s := range []*kvtest.Subscription{sub, noRoles, static} {
		waitValidated(t, s)
	}
	kv.SetSecret("s", "x")
	hook.waitEvents(t, "secure", 1)
	hook.waitEvents(t, "noroles", 1)
	hook.waitEvents(t, "static", 1)

	var oids []string
	for _, r := range hook.requests() {
		auth := r.Header.Get("Authorization")
		name := r.Header.Get("aeg-subscription-name")
		if r.Method == http.MethodOptions {
			name = "NOROLES" // the CloudEvents handshake names no subscription
		}
		if name == "STATIC" {
			if auth != "Bearer static" {
				t.Errorf("static: Authorization %q", auth)
			}
			continue
		}
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			t.Fatalf("%s %s: Authorization %q", name, r.Method, auth)
		}
		claims := verifyEntraToken(t, srv, token)
		wantAud, wantRoles := "api://webhook-app", []any{"AzureEventGridSecureWebhookSubscriber"}
		if name == "NOROLES" {
			wantAud, wantRoles = "6f1c7c1e-0000-4000-8000-00000000aaaa", nil
		}
		iat, _ := claims["iat"].(float64)
		exp, _ := claims["exp"].(float64)
		if claims["aud"] != wantAud || claims["tid"] != srv.TenantID() || claims["appid"] != kvtest.EventGridAppID ||
			claims["azp"] != kvtest.EventGridAppID || claims["appidacr"] != "2" || claims["idtyp"] != "app" ||
			claims["ver"] != "1.0" || claims["oid"] != claims["sub"] || claims["nbf"] != claims["iat"] || exp-iat != 3600 ||
			time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute {
			t.Errorf("%s %s claims %v", name, r.Method, claims)
		}
		if roles, ok := claims["roles"].([]any); !slices.Equal(roles, wantRoles) || (wantRoles == nil && ok) {
			t.Errorf("%s roles %v, want %v", name, claims["roles"], wantRoles)
		}
		oids = append(oids, str(claims["oid"]))
		if name == "SECURE" && r.Header.Get("X-Api-Key") != "k" {
			t.Error("custom header missing next to the token")
		}
	}
	if len(oids) != 4 {
		t.Errorf("%d tokens, want 4 (two handshakes, two notifications)", len(oids))
	}
	// Event Grid's service principal has one object ID in the tenant, on every Server.
	other := kvtest.NewServerT(t)
	for _, oid := range oids {
		if oid != kvtest.EventGridObjectID(srv) || oid != kvtest.EventGridObjectID(other) || !uuidRE.MatchString(oid) {
			t.Errorf("oid %s, want the stable %s", oid, kvtest.EventGridObjectID(srv))
		}
	}
}

// TestEventGridRetries: 5xx, 429, timeouts and transport errors are retried on the
// schedule, with aeg-delivery-count counting; 400, 401, 403 and 413 drop the batch; the
// handshake is retried until it validates.
func TestEventGridRetries(t *testing.T) {
	srv := kvtest.NewServerT(t)
	fast := []time.Duration{10 * time.Millisecond}
	for _, tc := range []struct {
		name     string
		status   int // first attempt's answer
		timeout  bool
		attempts int // want
	}{
		{"r500", 500, false, 2}, {"r503", 503, false, 2}, {"r429", 429, false, 2}, {"r408", 408, false, 2},
		{"r404", 404, false, 2}, {"timeout", 0, true, 2},
		{"r400", 400, false, 1}, {"r401", 401, false, 1}, {"r403", 403, false, 1}, {"r413", 413, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := srv.AddVault(tc.name)
			hook := newWebhook(t, true)
			hook.answer = func(n int, r *http.Request) int {
				if n > 0 {
					return 200
				}
				if tc.timeout {
					select {
					case <-r.Context().Done():
					case <-time.After(eventWait):
					}
					return 0
				}
				return tc.status
			}
			sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), RetryDelays: fast, Timeout: 300 * time.Millisecond})
			waitValidated(t, sub)
			kv.SetSecret("first", "x")
			kv.SetSecret("second", "x") // delivered whether or not the first was dropped
			waitUntil(t, "the second event", func() bool {
				n := hook.notifications("")
				return len(n) > 0 && strings.Contains(string(n[len(n)-1].Body), `"second"`)
			})
			var first []kvtest.Delivery
			for _, d := range sub.Deliveries() {
				if d.Kind == "notification" && len(first) < tc.attempts {
					first = append(first, d)
				}
			}
			notes := hook.notifications("")
			if len(notes) != tc.attempts+1 || len(first) != tc.attempts {
				t.Fatalf("%d notifications, want %d attempts for the first event and one for the second", len(notes), tc.attempts)
			}
			for i, d := range first {
				wantRetried := i < tc.attempts-1
				if d.Attempt != i+1 || d.Retried != wantRetried || !slices.Equal(d.EventIDs, first[0].EventIDs) {
					t.Errorf("attempt %d: %+v", i+1, d)
				}
				if got := notes[i].Header.Get("aeg-delivery-count"); got != fmt.Sprint(i) {
					t.Errorf("attempt %d: aeg-delivery-count %s", i+1, got)
				}
			}
			switch d := first[0]; {
			case tc.timeout && (d.Status != 0 || d.Err == ""):
				t.Errorf("timeout recorded as %+v", d)
			case !tc.timeout && (d.Status != tc.status || d.Err != ""):
				t.Errorf("first attempt recorded as %+v", d)
			}
		})
	}

	t.Run("max-attempts", func(t *testing.T) {
		kv := srv.AddVault("maxattempts")
		hook := newWebhook(t, true)
		hook.answer = func(n int, _ *http.Request) int { return map[bool]int{true: 500, false: 200}[n < 3] }
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), RetryDelays: fast, MaxDeliveryAttempts: 3})
		waitValidated(t, sub)
		kv.SetSecret("first", "x")
		kv.SetSecret("second", "x")
		evs := hook.waitEvents(t, "", 4)
		if len(evs) != 4 || evs[3].Subject != "second" {
			t.Fatalf("events %+v", evs)
		}
		ds := deliveries(t, sub, 5)[1:]
		if len(ds) != 4 || !ds[1].Retried || ds[2].Attempt != 3 || ds[2].Retried || ds[2].Status != 500 || ds[3].Attempt != 1 {
			t.Errorf("deliveries %+v", ds)
		}
	})

	t.Run("handshake", func(t *testing.T) {
		kv := srv.AddVault("handshake")
		hook := newWebhook(t, true)
		hook.handshake = func(n int) (int, string) {
			switch n {
			case 0:
				return 500, ""
			case 1:
				return 200, "not-the-code"
			}
			return 200, ""
		}
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), RetryDelays: fast})
		kv.SetSecret("queued", "x") // waits for the handshake
		waitValidated(t, sub)
		hook.waitEvents(t, "", 1)
		ds := deliveries(t, sub, 4)
		if len(ds) != 4 {
			t.Fatalf("deliveries %+v", ds)
		}
		for i, want := range []struct {
			status  int
			err     bool
			retried bool
		}{{500, false, true}, {200, true, true}, {200, false, false}} {
			d := ds[i]
			if d.Kind != "validation" || d.Attempt != i+1 || d.Status != want.status || (d.Err != "") != want.err || d.Retried != want.retried {
				t.Errorf("handshake attempt %d: %+v", i+1, d)
			}
		}
		if ds[3].Kind != "notification" {
			t.Errorf("after the handshake: %+v", ds[3])
		}
	})

	t.Run("cloudevents-handshake", func(t *testing.T) {
		kv := srv.AddVault("cehandshake")
		hook := newWebhook(t, true)
		hook.handshake = func(n int) (int, string) {
			if n == 0 {
				return 200, "someone-else.example.com"
			}
			return 200, "*"
		}
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), RetryDelays: fast, Schema: kvtest.CloudEventSchema})
		waitValidated(t, sub)
		if ds := sub.Deliveries(); len(ds) != 2 || ds[0].Err == "" || !ds[0].Retried || ds[1].Err != "" || ds[1].Retried {
			t.Errorf("deliveries %+v", ds)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		kv := srv.AddVault("refused")
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: "http://" + addr + "/hook", RetryDelays: fast, MaxDeliveryAttempts: 2})
		err = sub.WaitValidated(ctxTimeout(t, eventWait))
		if err == nil || !strings.Contains(err.Error(), "validation failed after 2 attempts") {
			t.Errorf("WaitValidated = %v", err)
		}
		ds := sub.Deliveries()
		if len(ds) != 2 || ds[0].Status != 0 || ds[0].Err == "" || !ds[0].Retried || ds[1].Retried {
			t.Errorf("deliveries %+v", ds)
		}
	})
}

// TestEventGridDuplicate: Duplicate delivers every batch twice with the same event IDs.
func TestEventGridDuplicate(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), Duplicate: true})
	waitValidated(t, sub)
	kv.SetSecret("a", "x")
	kv.SetSecret("b", "x")
	evs := hook.waitEvents(t, "", 4)
	if len(evs) != 4 || evs[0].ID != evs[1].ID || evs[2].ID != evs[3].ID || evs[0].ID == evs[2].ID ||
		evs[0].Subject != "a" || evs[2].Subject != "b" {
		t.Errorf("events %+v", evs)
	}
	for _, d := range deliveries(t, sub, 3)[1:] {
		if d.Attempt != 1 || d.Status != 200 {
			t.Errorf("delivery %+v", d)
		}
	}
}

// TestEventGridReorder: Reorder sends the later of two events first, and an event
// nothing follows after a second.
func TestEventGridReorder(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, true)
	sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), Reorder: true})
	waitValidated(t, sub)
	kv.SetSecret("a", "x")
	kv.SetSecret("b", "x")
	evs := hook.waitEvents(t, "", 2)
	if len(evs) != 2 || evs[0].Subject != "b" || evs[1].Subject != "a" {
		t.Errorf("events %+v, want b before a", evs)
	}
	published := time.Now()
	kv.SetSecret("c", "x")
	evs = hook.waitEvents(t, "", 3)
	notes := hook.notifications("")
	if len(evs) != 3 || evs[2].Subject != "c" {
		t.Fatalf("events %+v", evs)
	}
	if held := notes[2].Time.Sub(published); held < 900*time.Millisecond {
		t.Errorf("a lone event was held %v, want about a second", held)
	}
}

// TestEventGridBatching: with MaxEventsPerBatch > 1 the events waiting go together (in
// order), a batch waits up to BatchWindow for more, and CloudEvents batches use the batch
// media type.
func TestEventGridBatching(t *testing.T) {
	srv := kvtest.NewServerT(t)

	t.Run("eventgrid", func(t *testing.T) {
		kv := srv.AddVault("egbatch")
		hook := newWebhook(t, true)
		hook.gate = make(chan struct{})
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), MaxEventsPerBatch: 3})
		for _, n := range []string{"a", "b", "c", "d"} {
			kv.SetSecret(n, "x") // queued behind the handshake
		}
		close(hook.gate)
		waitValidated(t, sub)
		hook.waitEvents(t, "", 4)
		notes := hook.notifications("")
		if len(notes) != 2 {
			t.Fatalf("%d requests, want 2", len(notes))
		}
		var got [][]string
		for _, r := range notes {
			var subjects []string
			for _, e := range parseEvents(t, r) {
				subjects = append(subjects, e.Subject)
			}
			got = append(got, subjects)
		}
		if !slices.Equal(got[0], []string{"a", "b", "c"}) || !slices.Equal(got[1], []string{"d"}) {
			t.Errorf("batches %v", got)
		}
		if ds := deliveries(t, sub, 3); len(ds) != 3 || len(ds[1].EventIDs) != 3 || len(ds[1].Types) != 3 {
			t.Errorf("deliveries %+v", ds)
		}
	})

	t.Run("cloudevents", func(t *testing.T) {
		kv := srv.AddVault("cebatch")
		hook := newWebhook(t, true)
		hook.gate = make(chan struct{})
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), MaxEventsPerBatch: 2, Schema: kvtest.CloudEventSchema})
		for _, n := range []string{"a", "b", "c"} {
			kv.SetSecret(n, "x")
		}
		close(hook.gate)
		waitValidated(t, sub)
		hook.waitEvents(t, "", 3)
		notes := hook.notifications("")
		if len(notes) != 2 {
			t.Fatalf("%d requests, want 2", len(notes))
		}
		wantHeader(t, "batch", notes[0].Header, "Content-Type", "application/cloudevents-batch+json; charset=utf-8")
		wantHeader(t, "single", notes[1].Header, "Content-Type", "application/cloudevents+json; charset=utf-8")
		if !strings.HasPrefix(string(notes[0].Body), "[") || !strings.HasPrefix(string(notes[1].Body), "{") {
			t.Errorf("bodies %s / %s", notes[0].Body, notes[1].Body)
		}
	})

	t.Run("window", func(t *testing.T) {
		kv := srv.AddVault("window")
		hook := newWebhook(t, true)
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), MaxEventsPerBatch: 2, BatchWindow: 10 * time.Second})
		waitValidated(t, sub)
		start := time.Now()
		kv.SetSecret("a", "x")
		time.Sleep(50 * time.Millisecond) // published later, within the window
		kv.SetSecret("b", "x")
		hook.waitEvents(t, "", 2)
		notes := hook.notifications("")
		if len(notes) != 1 || len(parseEvents(t, notes[0])) != 2 {
			t.Fatalf("%d requests, want one batch of 2", len(notes))
		}
		if d := notes[0].Time.Sub(start); d >= 10*time.Second {
			t.Errorf("a full batch waited %v for the window", d)
		}
	})

	t.Run("window-elapses", func(t *testing.T) {
		kv := srv.AddVault("elapses")
		hook := newWebhook(t, true)
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), MaxEventsPerBatch: 5, BatchWindow: 300 * time.Millisecond})
		waitValidated(t, sub)
		start := time.Now()
		kv.SetSecret("a", "x")
		hook.waitEvents(t, "", 1)
		if d := hook.notifications("")[0].Time.Sub(start); d < 250*time.Millisecond {
			t.Errorf("sent after %v, want the 300 ms window", d)
		}
	})
}

// TestEventGridExpiry: a version with exp publishes SecretNearExpiry (at once, inside the
// 30 days) and SecretExpired at exp; a PATCH of exp reschedules; a disabled or deleted
// secret publishes nothing more; event type filters apply.
func TestEventGridExpiry(t *testing.T) {
	srv := kvtest.NewServerT(t, kvtest.WithDeletionWindow(0))
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsOfficer)
	c := newSecretsClient(t, srv, kv.URL(), srv.Credential())
	ctx := ctxTimeout(t, 60*time.Second)
	hook := newWebhook(t, true)
	all := kv.Subscribe(kvtest.EventSubscription{Name: "all", Endpoint: hook.URL, Client: hook.Client()})
	filtered := kv.Subscribe(kvtest.EventSubscription{Name: "filtered", Endpoint: hook.URL, Client: hook.Client(),
		EventTypes: []string{kvtest.EventSecretExpired, kvtest.EventSecretNewVersionCreated}})
	waitValidated(t, all)
	waitValidated(t, filtered)

	// b expires in an hour: SecretNearExpiry at once. A PATCH will bring exp closer.
	vb := kv.SetSecret("b", "x", kvtest.WithExpires(time.Now().Add(time.Hour)))
	waitUntil(t, "b's first SecretNearExpiry", func() bool {
		return slices.ContainsFunc(hook.waitEvents(t, "all", 1), func(e tEvent) bool { return e.Type == kvtest.EventSecretNearExpiry })
	})
	if _, err := c.GetSecret(ctx, "b", "", nil); err != nil { // warm the client: token, connection
		t.Fatal(err)
	}
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second) // 2-3 s ahead
	va := kv.SetSecret("a", "x", kvtest.WithExpires(exp))
	if _, err := c.UpdateSecretProperties(ctx, "b", vb, azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Expires: to.Ptr(exp)},
	}, nil); err != nil {
		t.Fatal(err)
	}
	kv.SetSecret("c", "x", kvtest.WithExpires(exp))
	if err := kv.SetEnabled("c", "", false); err != nil {
		t.Fatal(err)
	}
	kv.SetSecret("d", "x", kvtest.WithExpires(exp))
	if err := kv.DeleteSecret("d"); err != nil {
		t.Fatal(err)
	}
	kv.SetSecret("e", "x", kvtest.WithExpires(time.Now().Add(40*24*time.Hour))) // nothing yet
	kv.SetSecret("f", "x", kvtest.WithExpires(time.Now().Add(-time.Hour)))      // expired already: nothing
	kv.SetSecret("g", "x", kvtest.WithExpires(exp))
	waitUntil(t, "g's SecretNearExpiry", func() bool {
		return slices.ContainsFunc(hook.waitEvents(t, "all", 1), func(e tEvent) bool {
			return e.Type == kvtest.EventSecretNearExpiry && e.Subject == "g"
		})
	})
	kv.SetSecret("g", "y") // supersedes the expiring version: Key Vault reports expiry of the current one only
	if n := kvtest.PendingExpiryTimers(kv); n < 2 {
		t.Errorf("%d expiry timers pending", n)
	}

	// Wait until every timer but e's two has fired, then for a marker: published last,
	// it arrives after every event published before it.
	waitUntil(t, "the expiry timers", func() bool { return kvtest.PendingExpiryTimers(kv) == 2 })
	if time.Now().Before(exp) {
		t.Fatalf("the SecretExpired timers fired before exp")
	}
	kv.SetSecret("marker", "x")
	var evs []tEvent
	waitUntil(t, "the marker", func() bool {
		evs = hook.waitEvents(t, "all", 1)
		return evs[len(evs)-1].Subject == "marker"
	})
	bySecret := map[string][]string{}
	for _, e := range evs {
		bySecret[e.Subject] = append(bySecret[e.Subject], strings.TrimPrefix(e.Type, "Microsoft.KeyVault."))
		if e.Type == kvtest.EventSecretExpired {
			et, err := time.Parse(time.RFC3339Nano, e.Time)
			if err != nil || et.Before(exp) {
				t.Errorf("%s: SecretExpired at %v, before exp %v", e.Subject, et, exp)
			}
			if e.Data["EXP"] != float64(exp.Unix()) {
				t.Errorf("%s: EXP %v, want %d", e.Subject, e.Data["EXP"], exp.Unix())
			}
		}
	}
	for name, want := range map[string][]string{
		"a":      {"SecretNewVersionCreated", "SecretNearExpiry", "SecretExpired"},
		"b":      {"SecretNewVersionCreated", "SecretNearExpiry", "SecretNearExpiry", "SecretExpired"}, // rescheduled by the PATCH
		"e":      {"SecretNewVersionCreated"},
		"f":      {"SecretNewVersionCreated"},
		"g":      {"SecretNewVersionCreated", "SecretNearExpiry", "SecretNewVersionCreated"},
		"marker": {"SecretNewVersionCreated"},
	} {
		if got := bySecret[name]; !slices.Equal(got, want) {
			t.Errorf("%s: events %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"c", "d"} { // NearExpiry may have beaten the disable or delete
		if slices.Contains(bySecret[name], "SecretExpired") {
			t.Errorf("%s: SecretExpired after it was disabled or deleted: %v", name, bySecret[name])
		}
	}
	var ids []string
	for _, e := range evs {
		if e.Subject == "a" {
			ids = append(ids, e.version())
		}
	}
	if !slices.Equal(ids, []string{va, va, va}) {
		t.Errorf("a's events name versions %v", ids)
	}

	// The filtered subscription got no SecretNearExpiry.
	kv.SetSecret("marker2", "x")
	var fevs []tEvent
	waitUntil(t, "the filtered subscription's marker", func() bool {
		fevs = hook.waitEvents(t, "filtered", 1)
		return fevs[len(fevs)-1].Subject == "marker2"
	})
	for _, e := range fevs {
		if e.Type == kvtest.EventSecretNearExpiry {
			t.Errorf("filtered subscription got %s for %s", e.Type, e.Subject)
		}
	}
}

// TestEventGridClose: Close stops delivery at once (pending retries and a request in
// flight included) and is idempotent; Server.Close closes every subscription and stops
// the expiry timers.
func TestEventGridClose(t *testing.T) {
	srv := kvtest.NewServerT(t)

	t.Run("stops-delivery", func(t *testing.T) {
		kv := srv.AddVault("stops")
		hook, other := newWebhook(t, true), newWebhook(t, true)
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client()})
		witness := kv.Subscribe(kvtest.EventSubscription{Endpoint: other.URL, Client: other.Client()})
		waitValidated(t, sub)
		waitValidated(t, witness)
		kv.SetSecret("a", "x")
		hook.waitEvents(t, "", 1)
		sub.Close()
		sub.Close()
		kv.SetSecret("b", "x")
		other.waitEvents(t, "", 2) // b was published and delivered elsewhere
		if n := len(hook.notifications("")); n != 1 {
			t.Errorf("%d notifications after Close", n)
		}
		if ds := sub.Deliveries(); len(ds) != 2 {
			t.Errorf("deliveries %+v", ds)
		}
		if err := sub.WaitValidated(context.Background()); err != nil {
			t.Errorf("WaitValidated after Close of a validated subscription: %v", err)
		}
		if got := kvtest.Subscriptions(kv); len(got) != 1 || got[0] != witness {
			t.Errorf("subscriptions after Close: %v", got)
		}
	})

	t.Run("drops-retries", func(t *testing.T) {
		kv := srv.AddVault("drops")
		hook := newWebhook(t, true)
		hook.answer = func(int, *http.Request) int { return 500 }
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), RetryDelays: []time.Duration{time.Hour}})
		waitValidated(t, sub)
		kv.SetSecret("a", "x")
		waitUntil(t, "the first attempt", func() bool { return len(sub.Deliveries()) == 2 })
		start := time.Now()
		sub.Close()
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Close took %v", d)
		}
		if ds := sub.Deliveries(); len(ds) != 2 || !ds[1].Retried {
			t.Errorf("deliveries %+v", ds)
		}
	})

	t.Run("in-flight-handshake", func(t *testing.T) {
		kv := srv.AddVault("inflight")
		hook := newWebhook(t, true)
		hook.gate = make(chan struct{}) // never opened
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client()})
		waitUntil(t, "the handshake", func() bool { return len(hook.requests()) == 1 })
		sub.Close()
		if err := sub.WaitValidated(context.Background()); err == nil {
			t.Error("WaitValidated = nil for a subscription closed before it validated")
		}
	})

	t.Run("server-close", func(t *testing.T) {
		s := kvtest.NewServer()
		t.Cleanup(s.Close)
		kv := s.AddVault("myvault")
		hook := newWebhook(t, true)
		hook.answer = func(int, *http.Request) int { return 503 }
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(), RetryDelays: []time.Duration{time.Hour}})
		waitValidated(t, sub)
		kv.SetSecret("a", "x", kvtest.WithExpires(time.Now().Add(time.Hour)))
		if n := kvtest.PendingExpiryTimers(kv); n != 1 && n != 2 { // NearExpiry may have fired
			t.Errorf("%d timers pending", n)
		}
		waitUntil(t, "a retried attempt", func() bool { return len(hook.notifications("")) > 0 })
		s.Close()
		select {
		case <-kvtest.SubscriptionDone(sub):
		case <-time.After(eventWait):
			t.Fatal("the subscription's goroutine outlived Server.Close")
		}
		if n := kvtest.PendingExpiryTimers(kv); n != 0 {
			t.Errorf("%d timers pending after Server.Close", n)
		}
		if len(kvtest.Subscriptions(kv)) != 0 {
			t.Error("subscriptions left after Server.Close")
		}
		defer func() {
			if recover() == nil {
				t.Error("Subscribe on a closed Server did not panic")
			}
		}()
		kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL})
	})
}

// TestSubscribePanics: like AddVault on a bad name, Subscribe panics on what Event Grid
// would refuse.
func TestSubscribePanics(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	hook := newWebhook(t, false)
	kv.Subscribe(kvtest.EventSubscription{Name: "taken", Endpoint: hook.URL})
	for name, es := range map[string]kvtest.EventSubscription{
		"no endpoint":       {},
		"relative endpoint": {Endpoint: "/events"},
		"ftp endpoint":      {Endpoint: "ftp://example.com/x"},
		"bad schema":        {Endpoint: hook.URL, Schema: "CustomInputSchema"},
		"bad event type":    {Endpoint: hook.URL, EventTypes: []string{"Microsoft.Storage.BlobCreated"}},
		"bad name":          {Endpoint: hook.URL, Name: "a_b"},
		"taken name":        {Endpoint: hook.URL, Name: "TAKEN"},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Subscribe(%+v) did not panic", es)
				}
			}()
			kv.Subscribe(es)
		})
	}
}

// TestSeedEventSubscriptions: a seed's event_subscriptions are made after its secrets and
// deliver with the options they name; mistakes are named with their line.
func TestSeedEventSubscriptions(t *testing.T) {
	hook := newWebhook(t, false) // the default client trusts the system roots only
	doc := fmt.Sprintf(`
vaults:
  - name: myvault
    secrets:
      - {name: seeded, value: x}
    event_subscriptions:
      - name: seeded-sub
        endpoint: %s/kv
        schema: cloudevents
        event_types: [Microsoft.KeyVault.SecretNewVersionCreated]
        audience: api://webhook-app
        roles: [Custom.Role]
        headers: {X-Api-Key: from-seed}
        max_events_per_batch: 2
      - endpoint: %s/plain
`, hook.URL, hook.URL)
	srv := kvtest.NewServerT(t, kvtest.WithSeed([]byte(doc)))
	kv := srv.Vault("myvault")
	subs := kvtest.Subscriptions(kv)
	if len(subs) != 2 || subs[0].Name() != "seeded-sub" || subs[1].Name() != "sub-2" {
		t.Fatalf("subscriptions %v", subs)
	}
	for _, s := range subs {
		waitValidated(t, s)
	}
	kv.SetSecret("after", "x")
	for _, name := range []string{"seeded-sub", "sub-2"} {
		evs := hook.waitEvents(t, name, 1)
		if len(evs) != 1 || evs[0].Subject != "after" {
			t.Errorf("%s: events %+v (the seed's own secret publishes nothing)", name, evs)
		}
	}
	r := hook.notifications("seeded-sub")[0]
	wantHeader(t, "seeded", r.Header, "X-Api-Key", "from-seed")
	wantHeader(t, "seeded", r.Header, "Content-Type", "application/cloudevents+json; charset=utf-8")
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if claims := verifyEntraToken(t, srv, token); claims["aud"] != "api://webhook-app" || !slices.Equal(claims["roles"].([]any), []any{"Custom.Role"}) {
		t.Errorf("claims %v", claims)
	}
	if p := hook.notifications("sub-2")[0]; p.Header.Get("Authorization") != "" || p.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("plain subscription headers %v", p.Header)
	}

	const vault = "vaults:\n  - name: v\n    event_subscriptions:\n"
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown field":  {vault + "      - name: s1\n        endpont: http://x\n", `unknown field "endpont" in event subscription "s1" (line 5)`},
		"unnamed":        {vault + "      - {endpoint: http://x, shema: cloudevents}\n", `unknown field "shema" in event subscription 1 of vault "v" (line 4)`},
		"no endpoint":    {vault + "      - name: s1\n", `vaults[0].event_subscriptions[0]: endpoint is required`},
		"bad endpoint":   {vault + "      - endpoint: ftp://hunter2-sentinel/x\n", `vaults[0].event_subscriptions[0]: endpoint is not an http or https URL`},
		"relative":       {vault + "      - endpoint: /hunter2-sentinel\n", `endpoint is not an http or https URL`},
		"bad schema":     {vault + "      - {endpoint: http://x, schema: avro}\n", `vaults[0].event_subscriptions[0]: unknown schema "avro" (want eventgrid or cloudevents)`},
		"bad event type": {vault + "      - {endpoint: http://x, event_types: [SecretCreated]}\n", `unknown event type "SecretCreated"`},
		"bad name":       {vault + "      - {name: a_b, endpoint: http://x}\n", `invalid name "a_b"`},
		"duplicate":      {vault + "      - {name: sub1, endpoint: http://x}\n      - {name: SUB1, endpoint: http://y}\n", `vaults[0].event_subscriptions[1]: duplicate name "SUB1"`},
		"batch type":     {vault + "      - {endpoint: http://x, max_events_per_batch: lots}\n", `field "max_events_per_batch" in event subscription 1 of vault "v" (line 4): want a whole number`},
		"batch range":    {vault + "      - {endpoint: http://x, max_events_per_batch: 6000}\n", `max_events_per_batch must be between 1 and 5000`},
		"types list":     {vault + "      - {endpoint: http://x, event_types: Microsoft.KeyVault.SecretExpired}\n", `field "event_types" in event subscription 1 of vault "v" (line 4): want a list of strings`},
		"headers":        {vault + "      - {endpoint: http://x, headers: [hunter2-sentinel]}\n", `field "headers" in event subscription 1 of vault "v" (line 4): want a mapping of strings`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := kvtest.ParseSeed(strings.NewReader(tc.doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2-sentinel") {
				t.Errorf("error %q quotes a value", err)
			}
			if s, err := kvtest.Start(kvtest.WithSeed([]byte(tc.doc))); err == nil {
				s.Close()
				t.Error("Start accepted the seed")
			}
		})
	}
}

// The Event Grid schema's asynchronous (manual) validation: an endpoint that answers the
// handshake 200 without a validationResponse validates when its validationUrl is called.

const manualOK = "Webhook successfully validated as a subscription endpoint."

// validationURL returns the validationUrl of the first handshake the webhook received.
func (h *webhook) validationURL(t *testing.T) string {
	t.Helper()
	for _, r := range h.requests() {
		if r.eventType() != "SubscriptionValidation" {
			continue
		}
		var evs []struct {
			Data struct {
				ValidationURL string `json:"validationUrl"`
			} `json:"data"`
		}
		if err := json.Unmarshal(r.Body, &evs); err != nil || len(evs) != 1 || evs[0].Data.ValidationURL == "" {
			t.Fatalf("handshake body %s: %v", r.Body, err)
		}
		return evs[0].Data.ValidationURL
	}
	t.Fatal("the webhook received no handshake")
	return ""
}

// handshakes counts the Event Grid schema handshakes the webhook received.
func (h *webhook) handshakes() int {
	n := 0
	for _, r := range h.requests() {
		if r.eventType() == "SubscriptionValidation" {
			n++
		}
	}
	return n
}

// manualHook is a webhook that answers every Event Grid schema handshake 200 with body.
func manualHook(t *testing.T, body string) *webhook {
	t.Helper()
	hook := newWebhook(t, true)
	hook.rawHandshake = func(int) (int, string) { return http.StatusOK, body }
	return hook
}

// call sends one request with c and returns the status and body.
func call(t *testing.T, c *http.Client, method, u string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxTimeout(t, eventWait), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// awaitingManual waits for the handshake's record and checks it says the subscription
// awaits manual validation; WaitValidated must not return yet.
func awaitingManual(t *testing.T, sub *kvtest.Subscription) {
	t.Helper()
	ds := deliveries(t, sub, 1)
	if d := ds[0]; len(ds) != 1 || d.Kind != "validation" || d.Status != 200 || d.Attempt != 1 || d.Retried ||
		d.Err != "awaiting manual validation: GET the validationUrl" || len(d.EventIDs) != 1 ||
		!slices.Equal(d.Types, []string{"Microsoft.EventGrid.SubscriptionValidationEvent"}) {
		t.Fatalf("deliveries %+v", ds)
	}
	if err := sub.WaitValidated(ctxTimeout(t, 50*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitValidated before the GET = %v", err)
	}
}

// TestEventGridManualValidation: a 200 without a validationResponse switches to manual
// validation; a GET of the validationUrl at its production URL, through Server.Client
// or the proxy, completes the handshake and the events queued meanwhile are delivered.
func TestEventGridManualValidation(t *testing.T) {
	srv := kvtest.NewServerT(t)
	proxied := &http.Transport{
		Proxy:           http.ProxyURL(mustURL(t, srv.ProxyURL())),
		TLSClientConfig: &tls.Config{RootCAs: srv.CertPool(), MinVersion: tls.VersionTLS12},
	}
	t.Cleanup(proxied.CloseIdleConnections)
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{
		{"client", srv.Client()},
		{"proxy", &http.Client{Transport: proxied, Timeout: eventWait}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := srv.AddVault("manual-" + tc.name)
			hook := manualHook(t, "")
			sub := kv.Subscribe(kvtest.EventSubscription{Name: "async-sub", Endpoint: hook.URL, Client: hook.Client(),
				RetryDelays: []time.Duration{10 * time.Millisecond}})
			awaitingManual(t, sub)
			queued := kv.SetSecret("queued", "x") // waits for the validation
			vurl := hook.validationURL(t)
			u := mustURL(t, vurl)
			if u.Scheme != "https" || u.Host != emuinfo.EventGridHost || u.Path != "/eventsubscriptions/async-sub/validate" {
				t.Fatalf("validationUrl %s", vurl)
			}
			if n := len(hook.notifications("")); n != 0 {
				t.Fatalf("%d notifications before the validation", n)
			}

			resp, body := call(t, tc.client, http.MethodGet, vurl)
			if resp.StatusCode != 200 || body != manualOK {
				t.Fatalf("GET validationUrl: %d %q", resp.StatusCode, body)
			}
			if resp.TLS == nil || resp.TLS.PeerCertificates[0].VerifyHostname(emuinfo.EventGridHost) != nil {
				t.Error("the validationUrl's certificate is not valid for its host")
			}
			waitValidated(t, sub)
			later := kv.SetSecret("later", "x")
			evs := hook.waitEvents(t, "async-sub", 2)
			if len(evs) != 2 || evs[0].version() != queued || evs[1].version() != later {
				t.Errorf("events %+v", evs)
			}
			if n := hook.handshakes(); n != 1 {
				t.Errorf("%d handshakes, want 1 (manual validation is not retried)", n)
			}
			if ds := deliveries(t, sub, 3); len(ds) != 3 || ds[1].Kind != "notification" || ds[2].Kind != "notification" {
				t.Errorf("deliveries %+v", ds)
			}

			// The URL works once.
			if resp, body := call(t, tc.client, http.MethodGet, vurl); resp.StatusCode != 400 || !strings.Contains(body, "already validated") {
				t.Errorf("second GET: %d %q", resp.StatusCode, body)
			}
		})
	}

	// Every answer without a validationResponse means manual validation.
	for name, body := range map[string]string{
		"empty": "", "not-json": "validated, thanks", "no-field": `{"status": "ok"}`, "empty-field": `{"validationResponse": ""}`,
		"null-field": `{"VALIDATIONRESPONSE": null}`, "array": `["x"]`, "null": "null",
	} {
		t.Run("body-"+name, func(t *testing.T) {
			kv := srv.AddVault("body-" + name)
			hook := manualHook(t, body)
			sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(),
				RetryDelays: []time.Duration{10 * time.Millisecond}})
			awaitingManual(t, sub)
			if resp, got := call(t, srv.Client(), http.MethodGet, hook.validationURL(t)); resp.StatusCode != 200 || got != manualOK {
				t.Fatalf("GET validationUrl: %d %q", resp.StatusCode, got)
			}
			waitValidated(t, sub)
		})
	}
}

// TestEventGridManualValidationRefusals: the validationUrl validates only with its own
// token and id, only while the subscription awaits manual validation, only with GET and
// only at Event Grid's host.
func TestEventGridManualValidationRefusals(t *testing.T) {
	srv := kvtest.NewServerT(t)
	c := srv.Client()

	// An endpoint may call its validationUrl before its 200 reaches Event Grid (from a
	// goroutine its handshake handler started): the URL is valid once sent.
	t.Run("early-get", func(t *testing.T) {
		kv := srv.AddVault("earlyget")
		hook := manualHook(t, "")
		hook.gate = make(chan struct{})
		sub := kv.Subscribe(kvtest.EventSubscription{Name: "early", Endpoint: hook.URL, Client: hook.Client()})
		waitUntil(t, "the handshake", func() bool { return hook.handshakes() == 1 })
		if resp, body := call(t, c, http.MethodGet, hook.validationURL(t)); resp.StatusCode != 200 || body != manualOK {
			t.Errorf("GET before the handshake's answer: %d %q", resp.StatusCode, body)
		}
		close(hook.gate)
		waitValidated(t, sub)
		if ds := deliveries(t, sub, 1); len(ds) != 1 || ds[0].Status != 200 || ds[0].Err != "" || ds[0].Retried {
			t.Errorf("deliveries %+v", ds)
		}
		if resp, body := call(t, c, http.MethodGet, hook.validationURL(t)); resp.StatusCode != 400 || !strings.Contains(body, "already validated") {
			t.Errorf("second GET: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("wrong-token", func(t *testing.T) {
		kv := srv.AddVault("wrongtoken")
		hook := manualHook(t, "")
		hook.gate = make(chan struct{})
		sub := kv.Subscribe(kvtest.EventSubscription{Name: "guarded", Endpoint: hook.URL, Client: hook.Client()})
		waitUntil(t, "the handshake", func() bool { return hook.handshakes() == 1 })
		vurl := hook.validationURL(t)
		close(hook.gate)
		awaitingManual(t, sub)

		u := mustURL(t, vurl)
		with := func(key, value string) string {
			q := u.Query()
			q.Set(key, value)
			v := *u
			v.RawQuery = q.Encode()
			return v.String()
		}
		for _, tc := range []struct {
			what, method, url string
			status            int
			body              string
		}{
			{"wrong token", http.MethodGet, with("token", strings.Repeat("0", len(u.Query().Get("token")))), 400, "token does not match"},
			{"no token", http.MethodGet, with("token", ""), 400, "no id or no token"},
			{"wrong id", http.MethodGet, with("id", strings.ToUpper("00000000-0000-4000-8000-000000000000")), 400, "no event subscription guarded"},
			{"wrong name", http.MethodGet, strings.Replace(vurl, "/guarded/", "/other/", 1), 400, "no event subscription other"},
			{"POST", http.MethodPost, vurl, 405, "GET only"},
			{"other path", http.MethodGet, "https://" + emuinfo.EventGridHost + "/" + srv.TenantID() + "/.well-known/openid-configuration", 404, "not found"},
			// The same path at Entra ID's host is Entra ID's, not Event Grid's.
			{"Entra host", http.MethodGet, strings.Replace(vurl, emuinfo.EventGridHost, "login.microsoftonline.com", 1), 400, "AADSTS90002"},
		} {
			resp, body := call(t, c, tc.method, tc.url)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("%s: %d %q, want %d with %q", tc.what, resp.StatusCode, body, tc.status, tc.body)
			}
		}
		if err := sub.WaitValidated(ctxTimeout(t, 50*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitValidated after refused GETs = %v", err)
		}
		if resp, body := call(t, c, http.MethodGet, vurl); resp.StatusCode != 200 || body != manualOK {
			t.Fatalf("GET validationUrl: %d %q", resp.StatusCode, body)
		}
		waitValidated(t, sub)
		if resp, body := call(t, c, http.MethodGet, vurl); resp.StatusCode != 400 || !strings.Contains(body, "already validated") {
			t.Errorf("second GET: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("window-expires", func(t *testing.T) {
		kv := srv.AddVault("expires")
		hook, other := manualHook(t, ""), newWebhook(t, true)
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(),
			ManualValidationWindow: 200 * time.Millisecond})
		witness := kv.Subscribe(kvtest.EventSubscription{Endpoint: other.URL, Client: other.Client()})
		waitValidated(t, witness)
		kv.SetSecret("during", "x") // queued, then dropped with the subscription
		err := sub.WaitValidated(ctxTimeout(t, eventWait))
		if err == nil || !strings.Contains(err.Error(), "validationUrl was not called") || !strings.Contains(err.Error(), "200ms") {
			t.Fatalf("WaitValidated = %v, want the validationUrl not called within the window", err)
		}
		select {
		case <-kvtest.SubscriptionDone(sub):
		case <-time.After(eventWait):
			t.Fatal("the subscription's goroutine outlived the failed handshake")
		}
		kv.SetSecret("after", "x")
		other.waitEvents(t, "", 2) // both were published and delivered elsewhere
		if n := len(hook.notifications("")); n != 0 {
			t.Errorf("%d notifications to a subscription that failed validation", n)
		}
		if ds := sub.Deliveries(); len(ds) != 1 || ds[0].Err != "awaiting manual validation: GET the validationUrl" {
			t.Errorf("deliveries %+v", ds)
		}
		if n := hook.handshakes(); n != 1 {
			t.Errorf("%d handshakes, want 1", n)
		}
		if resp, body := call(t, c, http.MethodGet, hook.validationURL(t)); resp.StatusCode != 400 || !strings.Contains(body, "validation failed") {
			t.Errorf("GET after the window: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("closed", func(t *testing.T) {
		kv := srv.AddVault("closed")
		hook := manualHook(t, "")
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client()})
		awaitingManual(t, sub)
		sub.Close()
		if err := sub.WaitValidated(context.Background()); err == nil {
			t.Error("WaitValidated = nil for a subscription closed while awaiting manual validation")
		}
		if resp, body := call(t, c, http.MethodGet, hook.validationURL(t)); resp.StatusCode != 400 || !strings.Contains(body, "no event subscription") {
			t.Errorf("GET after Close: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("validated-synchronously", func(t *testing.T) {
		kv := srv.AddVault("syncvalidated")
		hook := newWebhook(t, true)
		sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client()})
		waitValidated(t, sub)
		if resp, body := call(t, c, http.MethodGet, hook.validationURL(t)); resp.StatusCode != 400 || !strings.Contains(body, "already validated") {
			t.Errorf("GET after a synchronous validation: %d %q", resp.StatusCode, body)
		}
	})

	// A validationResponse that is present but wrong is a failed attempt, retried, as
	// before: not manual validation.
	t.Run("wrong-code", func(t *testing.T) {
		for name, body := range map[string]string{
			"other-code": `{"validationResponse": "not-the-code"}`,
			"not-string": `{"validationResponse": 42}`,
		} {
			t.Run(name, func(t *testing.T) {
				kv := srv.AddVault("wrongcode-" + name)
				hook := manualHook(t, body)
				sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: hook.URL, Client: hook.Client(),
					RetryDelays: []time.Duration{10 * time.Millisecond}, MaxDeliveryAttempts: 2})
				err := sub.WaitValidated(ctxTimeout(t, eventWait))
				if err == nil || !strings.Contains(err.Error(), "validation failed after 2 attempts") ||
					!strings.Contains(err.Error(), "the validationResponse is not") {
					t.Fatalf("WaitValidated = %v", err)
				}
				ds := sub.Deliveries()
				if len(ds) != 2 || ds[0].Status != 200 || !ds[0].Retried || ds[1].Retried ||
					!strings.HasPrefix(ds[0].Err, "the validationResponse is not") || strings.Contains(ds[0].Err, "manual") {
					t.Errorf("deliveries %+v", ds)
				}
				if resp, got := call(t, c, http.MethodGet, hook.validationURL(t)); resp.StatusCode != 400 {
					t.Errorf("GET after a failed handshake: %d %q", resp.StatusCode, got)
				}
			})
		}
	})

	// Event Grid's host is HTTPS on port 443 only, as Entra ID's hosts are.
	t.Run("ports", func(t *testing.T) {
		for _, u := range []string{
			"https://" + emuinfo.EventGridHost + ":8443/eventsubscriptions/x/validate?id=1&token=2",
			"http://" + emuinfo.EventGridHost + "/eventsubscriptions/x/validate?id=1&token=2",
		} {
			req, _ := http.NewRequestWithContext(ctxTimeout(t, eventWait), http.MethodGet, u, nil)
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s through Server.Client: %s", u, resp.Status)
			} else if !strings.Contains(err.Error(), "connection refused") {
				t.Errorf("%s through Server.Client: %v, want connection refused", u, err)
			}
		}
		proxyURL := srv.ProxyURL()
		h := emuinfo.EventGridHost
		for _, tc := range []struct {
			req    string
			status int
			body   string
		}{
			{"CONNECT " + h + ":80 HTTP/1.1\r\nHost: " + h + ":80\r\n\r\n", 403, "port 443 only"},
			{"CONNECT " + h + ":8443 HTTP/1.1\r\nHost: " + h + ":8443\r\n\r\n", 403, "port 443 only"},
			{"GET http://" + h + "/eventsubscriptions/x/validate?id=1&token=2 HTTP/1.1\r\nHost: " + h + "\r\n\r\n", 403, "HTTPS only"},
			{"CONNECT rp-other.eventgrid.azure.net:443 HTTP/1.1\r\nHost: rp-other.eventgrid.azure.net:443\r\n\r\n", 403, "not an open proxy"},
		} {
			resp, body := proxyRoundTrip(t, proxyURL, tc.req)
			line, _, _ := strings.Cut(tc.req, "\r\n")
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("%s: %d %q, want %d with %q", line, resp.StatusCode, body, tc.status, tc.body)
			}
		}
	})
}
