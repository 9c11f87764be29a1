// Package eventgrid is the Event Grid webhook of a viperkv Provider: it takes Key Vault's
// events (a new secret version, a version near expiry or expired) from Event Grid, checks
// who sent them, and hands each one to the provider, so a rotation reaches the app within
// a second instead of a refresh interval. ParseNotices reads the same events from a
// Service Bus message or any other channel.
package eventgrid

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/cloud"
)

// DefaultRole is the app role a webhook's app registration assigns to Event Grid's service
// principal in Azure's guide to Microsoft Entra protected webhooks.
const DefaultRole = "AzureEventGridSecureWebhookSubscriber"

// Option configures NewHandler.
type Option func(*config)

type config struct {
	tenant    string
	audiences []string
	role      string
	header    *headerAuth
	errs      []error
}

// Entra accepts deliveries that carry a Microsoft Entra ID token, as Event Grid sends to a
// webhook with Entra authentication: a token of tenantID (checked against the tenant's
// OpenID Connect metadata and signing keys, in the provider's cloud and through its
// transport) for one of audiences (the webhook app's application ID or ID URI, the
// subscription's "Microsoft Entra application ID or URI"), issued to Event Grid's own
// application and holding the app role the webhook app assigns it (Role; default
// DefaultRole). Validation handshakes are answered without it (see NewHandler).
func Entra(tenantID string, audiences ...string) Option {
	return func(c *config) {
		c.tenant = strings.ToLower(strings.TrimSpace(tenantID))
		c.audiences = append(c.audiences, audiences...)
		if c.tenant == "" {
			c.errs = append(c.errs, errors.New("Entra: empty tenant ID"))
		}
		if len(audiences) == 0 {
			c.errs = append(c.errs, errors.New("Entra: no audience (the webhook app's application ID or ID URI)"))
		}
	}
}

// Role sets the app role Entra requires in the token's roles claim.
func Role(role string) Option {
	return func(c *config) { c.role = role }
}

// Header accepts deliveries carrying header name with exactly value: an Event Grid custom
// delivery property (mark it secret in the subscription). With Entra too, a delivery must
// pass both. Validation handshakes are answered without it (see NewHandler): Azure does not
// document that they carry custom delivery properties.
func Header(name, value string) Option {
	return func(c *config) {
		if strings.TrimSpace(name) == "" || value == "" {
			c.errs = append(c.errs, errors.New("Header: empty header name or value"))
			return
		}
		c.header = &headerAuth{name: http.CanonicalHeaderKey(strings.TrimSpace(name)), value: []byte(value)}
	}
}

// maxBody is Event Grid's limit on an event (and so on a delivery of one).
const maxBody = 1 << 20

// maxHandshake bounds what the handler reads of a request that failed authentication to
// see whether it is a subscription validation handshake (Event Grid's is under 1 KB).
const maxHandshake = 64 << 10

// aegSubscriptionValidation is the aeg-event-type header of Event Grid's validation
// handshake (deliveries carry Notification).
const aegSubscriptionValidation = "SubscriptionValidation"

// Handler is the webhook: an http.Handler for Event Grid deliveries to one Provider.
type Handler struct {
	p        *viperkv.Provider
	entra    *entraAuth
	header   *headerAuth
	log      *slog.Logger
	outcomes metric.Int64Counter
	// refusals and handshakes throttle the logs of requests anyone can send: refused
	// requests and handshakes answered without authentication.
	refusals, handshakes throttle
}

// NewHandler returns the webhook for p. Mount it on a path of the service's own server and
// point an Event Grid subscription of the vault's system topic at it (Event Grid schema or
// CloudEvents 1.0, webhook endpoint).
//
// Authentication is required: Entra, Header or both; without either NewHandler returns an
// error. A delivery that fails it gets 401 (503 when the tenant's signing keys cannot be
// fetched now) before its body is read, and changes nothing.
//
// The handler answers both schemas' validation handshakes, with or without the token and
// the header: a handshake proves the endpoint to Event Grid and changes nothing, and Azure
// documents no custom delivery header on it. CloudEvents' OPTIONS abuse protection request
// gets WebHook-Allowed-Origin, WebHook-Allowed-Rate and Allow: POST. The Event Grid schema's
// SubscriptionValidationEvent gets {"validationResponse": code}; unauthenticated, it is
// answered only when the request says it is one (aeg-event-type: SubscriptionValidation)
// and its body, at most 64 KB, is that one event alone. Anything else unauthenticated, a
// batch holding a validation event among other events included, is refused as a delivery.
//
// It answers 413 to a body over 1 MB, 400 to malformed JSON, 503 before the first Load and
// when the provider's queue is full (Event Grid retries), and 200 to events it accepts or
// ignores (other event types, vaults or secrets no versionless reference names,
// duplicates). It answers before fetching: accepted events go to the provider's own
// workers (viperkv.Provider.Enqueue), which Close stops, and what they change reaches
// OnChange watchers with Source SourcePush. Polling (Watch) stays the safety net: Event
// Grid may lose events, and disabling or deleting a secret publishes none.
//
// It logs event ids, types, vault and secret names, never anything else of a delivery;
// refused requests are logged at Debug, with a Warn at most once a minute counting them,
// and so are handshakes answered without authentication, with an Info.
func NewHandler(p *viperkv.Provider, opts ...Option) (*Handler, error) {
	if p == nil {
		return nil, errors.New("eventgrid: NewHandler: nil *viperkv.Provider")
	}
	cfg := config{role: DefaultRole}
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.errs) > 0 {
		return nil, fmt.Errorf("eventgrid: NewHandler: %w", errors.Join(cfg.errs...))
	}
	h := &Handler{p: p, header: cfg.header, log: p.Logger()}
	if cfg.tenant != "" {
		c, ok := cloud.ByName(string(p.Cloud()))
		if !ok {
			return nil, fmt.Errorf("eventgrid: NewHandler: unknown cloud %q", p.Cloud())
		}
		h.entra = &entraAuth{
			tenant:    cfg.tenant,
			audiences: cfg.audiences,
			role:      cfg.role,
			discovery: "https://" + c.AuthorityHost + "/" + url.PathEscape(cfg.tenant) + "/v2.0/.well-known/openid-configuration",
			v1Issuer:  c.V1Issuer(cfg.tenant),
			client:    p.HTTPClient(),
			now:       time.Now,
		}
	}
	if h.entra == nil && h.header == nil {
		return nil, errors.New("eventgrid: NewHandler: authentication is required: Entra, Header or both")
	}
	var err error
	h.outcomes, err = p.MeterProvider().Meter("github.com/viperkv/viperkv/eventgrid").Int64Counter("viperkv.push.deliveries",
		metric.WithUnit("{delivery}"), metric.WithDescription("Event Grid requests the push handler answered, by outcome."))
	if err != nil {
		return nil, fmt.Errorf("eventgrid: NewHandler: telemetry: %w", err)
	}
	return h, nil
}

// ServeHTTP answers handshakes, authenticates deliveries and accepts their events.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		// CloudEvents' abuse protection: it changes nothing, so it needs no credentials.
		h.count(r, "handshake")
		h.allowOrigin(w, r)
		return
	}
	if status, err := h.authenticate(r); err != nil {
		if h.validateUnauthenticated(w, r) {
			return
		}
		h.refuse(w, r, status, err)
		return
	}
	switch r.Method {
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "POST, OPTIONS")
		h.count(r, "malformed")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > maxBody {
		h.count(r, "too_large")
		http.Error(w, "delivery over 1 MB", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
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
	outcome := "ignored"
	for _, e := range events {
		queued, err := h.accept(e)
		switch {
		case errors.Is(err, viperkv.ErrNotLoaded):
			h.unavailable(w, r, "not_loaded", "configuration not loaded yet")
			return
		case errors.Is(err, viperkv.ErrBusy), errors.Is(err, viperkv.ErrClosed):
			// Event Grid retries with back-off; the events accepted before stay queued
			// and their retries are duplicates, which Notify ignores.
			h.unavailable(w, r, "busy", "too many notices queued")
			return
		case queued:
			outcome = "accepted"
		}
	}
	h.count(r, outcome)
	w.WriteHeader(http.StatusOK)
}

// refuse answers a request that failed authentication with status (401, or 503 when a
// token cannot be checked now).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	h.log.Debug("viperkv: Event Grid request refused", "status", status, "reason", err.Error())
	if n, due := h.refusals.tick(); due {
		h.log.Warn("viperkv: Event Grid requests refused (reasons at Debug)", "refused", n, "last_status", status)
	}
	if h.entra != nil && status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "10")
	}
	h.count(r, "refused")
	http.Error(w, http.StatusText(status), status)
}

// validateUnauthenticated answers the Event Grid schema's validation handshake of a
// request that failed authentication, and reports whether it did. It answers only a POST
// marked aeg-event-type: SubscriptionValidation whose body, at most maxHandshake, is one
// SubscriptionValidationEvent with a code and nothing else: no event of a delivery gets
// past authentication riding along with a handshake. It reads no body of any other request.
func (h *Handler) validateUnauthenticated(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost || !strings.EqualFold(strings.TrimSpace(r.Header.Get("aeg-event-type")), aegSubscriptionValidation) ||
		r.ContentLength > maxHandshake {
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHandshake+1))
	if err != nil || len(body) > maxHandshake {
		return false
	}
	events, err := parseDelivery(r.Header.Get("Content-Type"), body)
	if err != nil || len(events) != 1 || !strings.EqualFold(events[0].typ, subscriptionValidationEvent) ||
		events[0].field("validationcode") == "" {
		return false
	}
	h.count(r, "handshake")
	h.log.Debug("viperkv: Event Grid subscription validation answered without authentication", "id", events[0].id)
	if n, due := h.handshakes.tick(); due {
		h.log.Info("viperkv: Event Grid handshakes answered without authentication (a handshake changes nothing; details at Debug)", "answered", n)
	}
	h.respondValidation(w, events[0].field("validationcode"))
	return true
}

// unavailable answers 503 with a Retry-After, so Event Grid tries again.
func (h *Handler) unavailable(w http.ResponseWriter, r *http.Request, outcome, why string) {
	h.count(r, outcome)
	w.Header().Set("Retry-After", "10")
	http.Error(w, why, http.StatusServiceUnavailable)
}

// authenticate checks every configured method, reading no body. It returns 401 for a
// request that fails, 503 when a token cannot be checked now.
func (h *Handler) authenticate(r *http.Request) (int, error) {
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

// allowOrigin answers CloudEvents' abuse protection handshake without checking
// credentials: the origin it names is logged at Debug, with an Info at most once a minute.
func (h *Handler) allowOrigin(w http.ResponseWriter, r *http.Request) {
	origin := strings.TrimSpace(r.Header.Get("WebHook-Request-Origin"))
	if origin == "" {
		http.Error(w, "OPTIONS without WebHook-Request-Origin", http.StatusBadRequest)
		return
	}
	h.log.Debug("viperkv: Event Grid (CloudEvents) handshake answered", "origin", origin)
	if n, due := h.handshakes.tick(); due {
		h.log.Info("viperkv: Event Grid handshakes answered without authentication (a handshake changes nothing; details at Debug)", "answered", n)
	}
	// CloudEvents 1.0 webhook spec, 4.2: the origin allowed to deliver, the rate allowed
	// (any) and, in Allow, the method it delivers with.
	w.Header().Set("Allow", http.MethodPost)
	w.Header().Set("WebHook-Allowed-Origin", origin)
	w.Header().Set("WebHook-Allowed-Rate", "*")
	w.WriteHeader(http.StatusOK)
}

// validate answers the Event Grid schema's subscription validation handshake of an
// authenticated request.
func (h *Handler) validate(w http.ResponseWriter, e deliveredEvent) {
	code := e.field("validationcode")
	if code == "" {
		http.Error(w, "SubscriptionValidationEvent without validationCode", http.StatusBadRequest)
		return
	}
	h.log.Info("viperkv: Event Grid subscription validation answered", "id", e.id)
	h.respondValidation(w, code)
}

// respondValidation writes the answer to a SubscriptionValidationEvent.
func (h *Handler) respondValidation(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"validationResponse": code})
}

// count records a request's outcome in viperkv.push.deliveries.
func (h *Handler) count(r *http.Request, outcome string) {
	h.outcomes.Add(r.Context(), 1, metric.WithAttributes(attribute.String("viperkv.outcome", outcome)))
}

// accept hands a Key Vault secret event to the provider's queue, and reports whether it
// was queued.
func (h *Handler) accept(e deliveredEvent) (bool, error) {
	n, ok := e.notice()
	log := h.log.With("id", e.id, "type", e.typ)
	if !ok {
		log.Debug("viperkv: Event Grid event ignored: not a Key Vault secret event")
		return false, nil
	}
	queued, err := h.p.Enqueue(n)
	switch {
	case errors.Is(err, viperkv.ErrNotLoaded), errors.Is(err, viperkv.ErrBusy), errors.Is(err, viperkv.ErrClosed):
		return false, err
	case err != nil:
		log.Warn("viperkv: Event Grid event ignored", "reason", err.Error())
		return false, nil
	case !queued:
		log.Debug("viperkv: Event Grid event ignored: no versionless reference names the secret", "vault", n.Vault, "secret", n.Name)
		return false, nil
	}
	log.Info("viperkv: Event Grid event accepted", "vault", n.Vault, "secret", n.Name)
	return true, nil
}

// throttle paces the summary log lines of requests anyone can send (refusals, handshakes
// answered without authentication): each is logged at Debug, and a summary counting them
// at most once a minute, so a stream of forged requests cannot flood the logs, nor write
// what an attacker chose into them above Debug.
type throttle struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

// tick counts one request and reports, at most once a minute, that a summary is due and
// how many requests it covers.
func (t *throttle) tick() (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	if now := time.Now(); now.Sub(t.last) >= time.Minute {
		n := t.n
		t.last, t.n = now, 0
		return n, true
	}
	return 0, false
}
