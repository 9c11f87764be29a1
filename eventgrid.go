package viperkv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// EventGridOption configures NewEventGridHandler.
type EventGridOption func(*eventGridConfig)

type eventGridConfig struct {
	tenant    string
	audiences []string
	role      string
	header    *headerAuth
	errs      []error
}

// EventGridEntra accepts deliveries that carry a Microsoft Entra ID token, as Event Grid
// sends to a webhook with Entra authentication: a token of tenantID (checked against the
// tenant's OpenID Connect metadata and signing keys, in the provider's cloud and through
// its transport) for one of audiences (the webhook app's application ID or ID URI, the
// subscription's "Microsoft Entra application ID or URI"), issued to Event Grid's own
// application and holding the app role the webhook app assigns it (EventGridRole; default
// DefaultEventGridRole). Validation handshakes must carry it too.
func EventGridEntra(tenantID string, audiences ...string) EventGridOption {
	return func(c *eventGridConfig) {
		c.tenant = strings.ToLower(strings.TrimSpace(tenantID))
		c.audiences = append(c.audiences, audiences...)
		if c.tenant == "" {
			c.errs = append(c.errs, errors.New("EventGridEntra: empty tenant ID"))
		}
		if len(audiences) == 0 {
			c.errs = append(c.errs, errors.New("EventGridEntra: no audience (the webhook app's application ID or ID URI)"))
		}
	}
}

// EventGridRole sets the app role EventGridEntra requires in the token's roles claim.
func EventGridRole(role string) EventGridOption {
	return func(c *eventGridConfig) { c.role = role }
}

// EventGridHeader accepts deliveries carrying header name with exactly value: an Event
// Grid custom delivery property (mark it secret in the subscription). With EventGridEntra
// too, a delivery must pass both.
func EventGridHeader(name, value string) EventGridOption {
	return func(c *eventGridConfig) {
		if strings.TrimSpace(name) == "" || value == "" {
			c.errs = append(c.errs, errors.New("EventGridHeader: empty header name or value"))
			return
		}
		c.header = &headerAuth{name: http.CanonicalHeaderKey(strings.TrimSpace(name)), value: []byte(value)}
	}
}

// maxEventGridBody is Event Grid's limit on an event (and so on a delivery of one).
const maxEventGridBody = 1 << 20

// NewEventGridHandler returns an http.Handler that takes Key Vault's events from Event
// Grid and refreshes exactly the secret that changed (see Provider.Notify), so a rotation
// reaches OnChange watchers within a second instead of a refresh interval. Mount it on a
// path of the service's own server and point an Event Grid subscription of the vault's
// system topic at it (Event Grid schema or CloudEvents 1.0, webhook endpoint).
//
// Authentication is required: EventGridEntra, EventGridHeader or both; without either
// NewEventGridHandler returns an error. A request that fails it gets 401 before its body
// is read. The handler answers both schemas' validation handshakes (the Event Grid
// schema's SubscriptionValidationEvent, CloudEvents' OPTIONS abuse protection), 413 to a
// body over 1 MB, 400 to malformed JSON, 503 before the first Load (Event Grid retries),
// and 200 to events it accepts or ignores (other event types, vaults or secrets no
// versionless reference names, duplicates). It answers before fetching: the fetch (after
// WithPushDelay's random delay) runs in the background, and what it changes reaches
// OnChange watchers with Source SourcePush. Polling (Watch) stays the safety net: Event
// Grid may lose events, and disabling or deleting a secret publishes none.
//
// It logs event ids, types, vault and secret names, never anything else of a delivery.
func NewEventGridHandler(p *Provider, opts ...EventGridOption) (http.Handler, error) {
	if p == nil {
		return nil, errors.New("viperkv: NewEventGridHandler: nil *Provider")
	}
	cfg := eventGridConfig{role: DefaultEventGridRole}
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.errs) > 0 {
		return nil, fmt.Errorf("viperkv: NewEventGridHandler: %w", errors.Join(cfg.errs...))
	}
	h := &eventGridHandler{p: p, header: cfg.header, log: p.opts.logger}
	if cfg.tenant != "" {
		c := p.opts.cloud.table()
		h.entra = &entraAuth{
			tenant:    cfg.tenant,
			audiences: cfg.audiences,
			role:      cfg.role,
			discovery: "https://" + c.AuthorityHost + "/" + url.PathEscape(cfg.tenant) + "/v2.0/.well-known/openid-configuration",
			v1Issuer:  c.V1Issuer(cfg.tenant),
			client:    p.transportClient(),
			now:       time.Now,
		}
	}
	if h.entra == nil && h.header == nil {
		return nil, errors.New("viperkv: NewEventGridHandler: authentication is required: EventGridEntra, EventGridHeader or both")
	}
	return h, nil
}

type eventGridHandler struct {
	p      *Provider
	entra  *entraAuth
	header *headerAuth
	log    *slog.Logger
	wg     sync.WaitGroup // background refreshes, for tests
}

// ServeHTTP authenticates, then answers handshakes or accepts the delivery's events.
func (h *eventGridHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if status, err := h.authenticate(r); err != nil {
		h.log.Warn("viperkv: Event Grid request refused", "status", status, "reason", err.Error(), "remote", r.RemoteAddr)
		if h.entra != nil && status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", "Bearer")
		}
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "10")
		}
		h.count(r, "refused")
		http.Error(w, http.StatusText(status), status)
		return
	}
	switch r.Method {
	case http.MethodOptions:
		h.count(r, "handshake")
		h.allowOrigin(w, r)
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "POST, OPTIONS")
		h.count(r, "malformed")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > maxEventGridBody {
		h.count(r, "too_large")
		http.Error(w, "delivery over 1 MB", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEventGridBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.count(r, "too_large")
			http.Error(w, "delivery over 1 MB", http.StatusRequestEntityTooLarge)
			return
		}
		h.count(r, "malformed")
		http.Error(w, "cannot read the delivery", http.StatusBadRequest)
		return
	}
	events, err := parseDelivery(r.Header.Get("Content-Type"), body)
	if err != nil {
		h.log.Warn("viperkv: Event Grid delivery malformed", "reason", err.Error())
		h.count(r, "malformed")
		http.Error(w, "malformed delivery: "+err.Error(), http.StatusBadRequest)
		return
	}
	for _, e := range events {
		if strings.EqualFold(e.typ, subscriptionValidationEvent) {
			h.count(r, "handshake")
			h.validate(w, e)
			return
		}
	}
	if h.p.cur.Load() == nil {
		h.count(r, "not_loaded")
		w.Header().Set("Retry-After", "10")
		http.Error(w, "configuration not loaded yet", http.StatusServiceUnavailable)
		return
	}
	outcome := "ignored"
	for _, e := range events {
		if h.accept(e) {
			outcome = "accepted"
		}
	}
	h.count(r, outcome)
	w.WriteHeader(http.StatusOK)
}

// authenticate checks every configured method, reading no body. It returns 401 for a
// request that fails, 503 when a token cannot be checked now.
func (h *eventGridHandler) authenticate(r *http.Request) (int, error) {
	if h.header != nil {
		if err := h.header.check(r); err != nil {
			return http.StatusUnauthorized, err
		}
	}
	if h.entra != nil {
		if err := h.entra.check(r.Context(), r); err != nil {
			if errors.Is(err, errAuthUnavailable) {
				return http.StatusServiceUnavailable, err
			}
			return http.StatusUnauthorized, err
		}
	}
	return 0, nil
}

// allowOrigin answers CloudEvents' abuse protection handshake.
func (h *eventGridHandler) allowOrigin(w http.ResponseWriter, r *http.Request) {
	origin := strings.TrimSpace(r.Header.Get("WebHook-Request-Origin"))
	if origin == "" {
		http.Error(w, "OPTIONS without WebHook-Request-Origin", http.StatusBadRequest)
		return
	}
	h.log.Info("viperkv: Event Grid (CloudEvents) handshake answered", "origin", origin)
	w.Header().Set("WebHook-Allowed-Origin", origin)
	w.Header().Set("WebHook-Allowed-Rate", "*")
	w.WriteHeader(http.StatusOK)
}

// validate answers the Event Grid schema's subscription validation handshake.
func (h *eventGridHandler) validate(w http.ResponseWriter, e deliveredEvent) {
	code := e.field("validationcode")
	if code == "" {
		http.Error(w, "SubscriptionValidationEvent without validationCode", http.StatusBadRequest)
		return
	}
	h.log.Info("viperkv: Event Grid subscription validation answered", "id", e.id)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"validationResponse": code})
}

// count records a request's outcome in viperkv.push.deliveries.
func (h *eventGridHandler) count(r *http.Request, outcome string) {
	h.p.tel.pushes.Add(r.Context(), 1, metric.WithAttributes(attrOutcome.String(outcome)))
}

// accept hands a Key Vault secret event to Notify in the background, and reports whether
// it did.
func (h *eventGridHandler) accept(e deliveredEvent) bool {
	c, ok := e.change()
	log := h.log.With("id", e.id, "type", e.typ)
	if !ok {
		log.Debug("viperkv: Event Grid event ignored: not a Key Vault secret event")
		return false
	}
	c, err := h.p.normalizeChange(c)
	if err != nil {
		log.Warn("viperkv: Event Grid event ignored", "reason", err.Error())
		return false
	}
	log = log.With("vault", c.Vault, "secret", c.Name)
	cur := h.p.cur.Load()
	if len(versionless(cur, pushKey{vault: c.Vault, name: strings.ToLower(c.Name)})) == 0 && !h.p.importsFrom(c.Vault) {
		log.Debug("viperkv: Event Grid event ignored: no versionless reference names the secret")
		return false
	}
	log.Info("viperkv: Event Grid event accepted")
	h.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.p.opts.pushDelay+h.p.opts.fetchTimeout)
		defer cancel()
		if err := h.p.Notify(ctx, c); err != nil {
			log.Warn("viperkv: refresh after an Event Grid event failed; polling retries it", "err", err.Error())
		}
	})
	return true
}

const subscriptionValidationEvent = "Microsoft.EventGrid.SubscriptionValidationEvent"

// deliveredEvent is one event of a delivery, in either schema.
type deliveredEvent struct {
	id, typ string
	data    map[string]json.RawMessage // keys trimmed and lowercased
}

// field returns data's string field key ("" when absent or not a string), trimmed.
func (e deliveredEvent) field(key string) string {
	var s string
	if json.Unmarshal(e.data[key], &s) != nil {
		return ""
	}
	return strings.TrimSpace(s)
}

// unix returns data's numeric field key as a time (zero when absent or null).
func (e deliveredEvent) unix(key string) time.Time {
	var f *float64
	if json.Unmarshal(e.data[key], &f) != nil || f == nil || *f <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(*f), 0)
}

// change returns the Notice a Key Vault secret event carries.
func (e deliveredEvent) change() (Notice, bool) {
	var typ NoticeType
	switch {
	case strings.EqualFold(e.typ, string(NoticeNewVersion)):
		typ = NoticeNewVersion
	case strings.EqualFold(e.typ, string(NoticeNearExpiry)):
		typ = NoticeNearExpiry
	case strings.EqualFold(e.typ, string(NoticeExpired)):
		typ = NoticeExpired
	default:
		return Notice{}, false
	}
	if ot := e.field("objecttype"); ot != "" && !strings.EqualFold(ot, "secret") {
		return Notice{}, false
	}
	vault := e.field("vaultname")
	if u, err := url.Parse(e.field("id")); err == nil && u.Scheme == "https" && u.Host != "" {
		vault = u.Host // the full host: right in every cloud and for allowed private hosts
	}
	return Notice{Type: typ, ID: e.id, Vault: vault, Name: e.field("objectname"), Version: e.field("version"),
		NotBefore: e.unix("nbf"), Expires: e.unix("exp")}, true
}

// ParseSecretChanges reads the Key Vault secret events of an Event Grid delivery or
// message body, for apps that receive Key Vault's events other than through
// [NewEventGridHandler]: the body of a Service Bus message (Event Grid to a Service Bus
// topic with a subscription per instance is how every replica of a fleet hears of a
// rotation), an Event Hubs event, or a webhook of the app's own. It reads both of Event
// Grid's schemas: an Event Grid schema event or array, a CloudEvents 1.0 event or batch.
// Events of other types (keys, certificates, a subscription validation) are skipped; a
// body that is neither schema is an error. Hand each change to [Provider.Notify], which
// ignores duplicates and changes to secrets the configuration does not reference.
//
// It authenticates nothing: the body must come from a channel that did (a Service Bus
// receiver signed in with the app's identity, for example). A forged change can cost a GET
// of a referenced secret, never change a value.
func ParseSecretChanges(body []byte) ([]Notice, error) {
	events, err := parseDelivery("", body)
	if err != nil {
		return nil, fmt.Errorf("viperkv: not an Event Grid or CloudEvents body: %w", err)
	}
	var out []Notice
	for _, e := range events {
		if c, ok := e.change(); ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// parseDelivery reads a delivery's events: CloudEvents 1.0 structured
// (application/cloudevents+json) or batched (application/cloudevents-batch+json), or an
// Event Grid schema array (application/json).
func parseDelivery(contentType string, body []byte) ([]deliveredEvent, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	type wire struct {
		ID          string          `json:"id"`
		EventType   string          `json:"eventType"`   // Event Grid schema
		Type        string          `json:"type"`        // CloudEvents
		SpecVersion string          `json:"specversion"` // CloudEvents
		Data        json.RawMessage `json:"data"`
	}
	var raw []wire
	body = bytes.TrimSpace(body)
	switch {
	case mt == "application/cloudevents+json" || (len(body) > 0 && body[0] == '{'):
		var one wire
		if err := json.Unmarshal(body, &one); err != nil {
			return nil, err
		}
		raw = []wire{one}
	default:
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, err
		}
	}
	out := make([]deliveredEvent, 0, len(raw))
	for i, w := range raw {
		e := deliveredEvent{id: strings.TrimSpace(w.ID), typ: strings.TrimSpace(w.EventType)}
		if w.SpecVersion != "" || e.typ == "" {
			e.typ = strings.TrimSpace(w.Type)
		}
		if e.typ == "" {
			return nil, fmt.Errorf("event %d has no type", i)
		}
		var data map[string]json.RawMessage
		if len(w.Data) > 0 && string(w.Data) != "null" {
			if err := json.Unmarshal(w.Data, &data); err != nil {
				return nil, fmt.Errorf("event %d: data: %w", i, err)
			}
		}
		e.data = make(map[string]json.RawMessage, len(data))
		for k, v := range data {
			e.data[strings.ToLower(strings.TrimSpace(k))] = v
		}
		out = append(out, e)
	}
	return out, nil
}
