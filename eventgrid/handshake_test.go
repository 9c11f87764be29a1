package eventgrid_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/kvtest"
)

const (
	hsHeader = "X-Webhook-Key"
	hsValue  = "s3cret-handshake-header"
	hsCode   = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
)

// serve replaces f's handler with one built with opts, served over real HTTP.
func (f *egFixture) serve(t *testing.T, opts ...eventgrid.Option) {
	t.Helper()
	h, err := eventgrid.NewHandler(f.p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	f.h, f.url = h, ts.URL+"/events"
}

// validationEvent is the Event Grid schema's handshake event, as Event Grid sends it.
func validationEvent() map[string]any {
	return map[string]any{
		"id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "topic": "/subscriptions/x", "subject": "",
		"data":      map[string]any{"validationCode": hsCode, "validationUrl": "https://rp-eastus2.eventgrid.azure.net/..."},
		"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2026-12-01T00:00:00Z",
		"metadataVersion": "1", "dataVersion": "2",
	}
}

// options sends CloudEvents' abuse protection request, with the extra headers given in
// pairs.
func (f *egFixture) options(t *testing.T, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodOptions, f.url, nil)
	req.Header.Set("WebHook-Request-Origin", "eventgrid.azure.net")
	req.Header.Set("WebHook-Request-Rate", "120")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// allows reports whether an Allow header value lists method.
func allows(allow, method string) bool {
	return slices.ContainsFunc(strings.Split(allow, ","), func(m string) bool { return strings.EqualFold(strings.TrimSpace(m), method) })
}

// TestEventGridHandshakesWithoutCredentials: in every authentication mode, both schemas'
// handshakes are answered without the delivery header and without a token (Azure does not
// document that a handshake carries custom delivery properties, and a handshake changes
// nothing), while every delivery without them is refused as before and changes nothing:
// a notification, one that claims to be a handshake, and a handshake batched with a
// rotation.
func TestEventGridHandshakesWithoutCredentials(t *testing.T) {
	header := func(*egFixture) eventgrid.Option { return eventgrid.Header(hsHeader, hsValue) }
	entra := func(f *egFixture) eventgrid.Option { return eventgrid.Entra(f.srv.TenantID(), egAudience) }
	for _, mode := range []struct {
		name   string
		opts   []func(f *egFixture) eventgrid.Option
		header bool // deliveries need the header
		token  bool // deliveries need a token
	}{
		{name: "Header", opts: []func(*egFixture) eventgrid.Option{header}, header: true},
		{name: "Entra", opts: []func(*egFixture) eventgrid.Option{entra}, token: true},
		{name: "HeaderAndEntra", opts: []func(*egFixture) eventgrid.Option{header, entra}, header: true, token: true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			f := newEGFixture(t)
			var opts []eventgrid.Option
			for _, o := range mode.opts {
				opts = append(opts, o(f))
			}
			f.serve(t, opts...)
			handshake := []any{validationEvent()}
			asHandshake := func(extra ...string) []string {
				return append([]string{"aeg-event-type", "SubscriptionValidation"}, extra...)
			}

			// The handshakes, with no credentials and with wrong ones.
			for _, wrong := range []struct {
				name   string
				token  string
				header []string
			}{
				{"none", "", nil},
				{"a wrong header", "", []string{hsHeader, "wrong"}},
				{"a forged token", "hunter2", nil},
			} {
				st, body := f.post(t, wrong.token, "application/json", handshake, asHandshake(wrong.header...)...)
				var resp struct {
					ValidationResponse string `json:"validationResponse"`
				}
				if st != 200 || json.Unmarshal([]byte(body), &resp) != nil || resp.ValidationResponse != hsCode {
					t.Errorf("Event Grid handshake with %s: %d %q, want the validation code", wrong.name, st, body)
				}
				var extra []string
				if wrong.token != "" {
					extra = []string{"Authorization", "Bearer " + wrong.token}
				}
				r := f.options(t, append(extra, wrong.header...)...)
				if r.StatusCode != 200 || r.Header.Get("WebHook-Allowed-Origin") != "eventgrid.azure.net" || !allows(r.Header.Get("Allow"), "POST") {
					t.Errorf("CloudEvents handshake with %s: %d, WebHook-Allowed-Origin %q, Allow %q", wrong.name, r.StatusCode,
						r.Header.Get("WebHook-Allowed-Origin"), r.Header.Get("Allow"))
				}
			}

			// Deliveries without credentials: refused, whatever they claim to be.
			v2 := f.kv.SetSecret("db", f.sentinel+"-v2")
			rotation := egEvent("rot-"+v2, string(viperkv.NoticeNewVersion), "db", v2)
			second := validationEvent()
			second["id"] = "another-handshake"
			noCode := validationEvent()
			noCode["data"] = map[string]any{"validationUrl": "https://rp-eastus2.eventgrid.azure.net/..."}
			padded := append(append([]byte(`[`), bytes.Repeat([]byte(" "), 64<<10)...), []byte(mustJSON(validationEvent())+`]`)...)
			ceHandshake := ceEvent("ce-hs", "Microsoft.EventGrid.SubscriptionValidationEvent", "", "")
			ceHandshake["data"] = map[string]any{"validationCode": hsCode}
			f.kv.ResetCounters()
			for _, d := range []struct {
				name, contentType string
				body              any
				header            []string
			}{
				{"a notification", "application/json", []any{rotation}, nil},
				{"a notification marked as a handshake", "application/json", []any{rotation}, asHandshake()},
				{"a handshake then a rotation", "application/json", []any{validationEvent(), rotation}, asHandshake()},
				{"a rotation then a handshake", "application/json", []any{rotation, validationEvent()}, asHandshake()},
				{"a handshake then a rotation, with a wrong header", "application/json", []any{validationEvent(), rotation}, asHandshake(hsHeader, "wrong")},
				{"a CloudEvents batch of a handshake and a rotation", "application/cloudevents-batch+json",
					[]any{ceHandshake, ceEvent("ce-rot", string(viperkv.NoticeNewVersion), "db", v2)}, asHandshake()},
				{"two handshakes", "application/json", []any{validationEvent(), second}, asHandshake()},
				{"a handshake without a code", "application/json", []any{noCode}, asHandshake()},
				{"a handshake not marked as one", "application/json", handshake, nil},
				{"a handshake over 64 KB", "application/json", padded, asHandshake()},
			} {
				st, body := f.post(t, "", d.contentType, d.body, d.header...)
				if st != 401 || strings.Contains(body, hsCode) {
					t.Errorf("%s without credentials: %d %q, want 401", d.name, st, body)
				}
			}
			// A refused notification is refused before its body is read.
			watch := &bodyWatch{r: strings.NewReader(mustJSON([]any{rotation}))}
			req := httptest.NewRequest(http.MethodPost, "/events", watch)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("aeg-event-type", "Notification")
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, req)
			if rec.Code != 401 || watch.read {
				t.Errorf("notification without credentials: %d, body read %v; want 401 before the body is read", rec.Code, watch.read)
			}

			// Nothing changed, nothing was queued or fetched.
			waitPending(t, f.p)
			if n := f.kv.Count(kvtest.OpGetSecret); n != 0 {
				t.Errorf("%d GETs after refused deliveries, want 0", n)
			}
			if got := f.p.GetString("db.conn"); got != f.sentinel+"-v1" {
				t.Error("db.conn changed after refused deliveries")
			}
			select {
			case e := <-f.events:
				t.Errorf("event after refused deliveries: %v", e)
			default:
			}

			// The same rotation with the credentials goes through: the refusals above were
			// authentication's.
			var token string
			var creds []string
			if mode.token {
				token = f.token(t, nil)
			}
			if mode.header {
				creds = []string{hsHeader, hsValue}
			}
			if st, body := f.post(t, token, "application/json", []any{rotation}, creds...); st != 200 {
				t.Fatalf("authenticated rotation: %d %s", st, body)
			}
			if e := f.changed(t); e.NewVersion != v2 {
				t.Errorf("event %v, want version %s", e, v2)
			}
			if n := f.kv.Count(kvtest.OpGetSecret); n != 1 {
				t.Errorf("%d GETs, want the authenticated rotation's 1", n)
			}
			if strings.Contains(f.logs.String(), hsValue) {
				t.Error("the delivery header's value appears in the logs")
			}
		})
	}
}

// TestEventGridOptionsAllowsPost: the answer to CloudEvents' abuse protection request
// carries WebHook-Allowed-Origin, WebHook-Allowed-Rate and an Allow header listing POST.
func TestEventGridOptionsAllowsPost(t *testing.T) {
	f := newEGFixture(t)
	r := f.options(t, "Authorization", "Bearer "+f.token(t, nil))
	if r.StatusCode != 200 {
		t.Fatalf("OPTIONS: %d", r.StatusCode)
	}
	if got := r.Header.Get("WebHook-Allowed-Origin"); got != "eventgrid.azure.net" {
		t.Errorf("WebHook-Allowed-Origin %q", got)
	}
	if got := r.Header.Get("WebHook-Allowed-Rate"); got == "" {
		t.Error("no WebHook-Allowed-Rate")
	}
	if got := r.Header.Get("Allow"); !allows(got, "POST") {
		t.Errorf("Allow %q, want it to list POST", got)
	}
}
