package kvtest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// Event Grid: a vault's system topic publishes Key Vault's secret events to webhook
// subscriptions, over real HTTP(S), in the wire format of Azure Event Grid, so a service's
// push handler can be tested end to end: the validation handshake, Microsoft Entra
// protected delivery, retries, duplicates, reordering and batches.

// EventSchema is an Event Grid subscription's delivery schema. The schema decides the
// handshake as well as the body: Event Grid's own validation event, or CloudEvents' abuse
// protection (HTTP OPTIONS).
type EventSchema string

// The delivery schemas a webhook subscription may choose, named as in Event Grid's API
// (eventDeliverySchema).
const (
	// EventGridSchema delivers a JSON array of Event Grid events, after a
	// Microsoft.EventGrid.SubscriptionValidationEvent handshake.
	EventGridSchema EventSchema = "EventGridSchema"
	// CloudEventSchema delivers CloudEvents 1.0 (structured mode, one event per request,
	// or a batch array with MaxEventsPerBatch > 1), after an OPTIONS handshake.
	CloudEventSchema EventSchema = "CloudEventSchemaV1_0"
)

// Key Vault's secret event types, the ones the emulated vaults publish. Key Vault has no
// event for a disabled, deleted or purged secret, so neither has the emulator: a handler
// still needs polling to notice those.
const (
	// EventSecretNewVersionCreated is published for every new version of a secret (PUT
	// /secrets/{name}, [Vault.SetSecret], and each version a restore brings back).
	EventSecretNewVersionCreated = "Microsoft.KeyVault.SecretNewVersionCreated"
	// EventSecretNearExpiry is published 30 days before a version's exp (at once when that
	// moment has passed but exp has not).
	EventSecretNearExpiry = "Microsoft.KeyVault.SecretNearExpiry"
	// EventSecretExpired is published when a version's exp is reached.
	EventSecretExpired = "Microsoft.KeyVault.SecretExpired"
)

// EventGridAppID is the application ID of Microsoft.EventGrid: the appid (v1) and azp
// (v2) of the tokens Event Grid presents to a Microsoft Entra protected webhook, which a
// handler checks to know the caller is Event Grid.
const EventGridAppID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"

// defaultRole is the app role Azure's guide to secure webhook delivery has the
// webhook's app registration define and assign to Event Grid's service principal; it is
// the roles claim of Event Grid's tokens unless [EventSubscription.Roles] says otherwise.
const defaultRole = "AzureEventGridSecureWebhookSubscriber"

// Other Key Vault event types. Subscriptions may filter on them, as a real subscription
// copied from Azure may, but the emulator publishes none of them. (The certificate events
// are published: see certificateEventTypes.)
var otherKeyVaultEvents = []string{
	"Microsoft.KeyVault.KeyNewVersionCreated",
	"Microsoft.KeyVault.KeyNearExpiry", "Microsoft.KeyVault.KeyExpired",
	"Microsoft.KeyVault.VaultAccessPolicyChanged",
}

const (
	// nearExpiryLead is how long before exp Key Vault publishes SecretNearExpiry.
	nearExpiryLead = 30 * 24 * time.Hour
	// reorderHold is how long a Reorder subscription holds an event for a later one.
	reorderHold = time.Second
	// eventGridOrigin is the origin Event Grid names in the CloudEvents handshake and
	// deliveries.
	eventGridOrigin = "eventgrid.azure.net"
	// validationEventType is the event of the Event Grid schema's handshake.
	validationEventType = "Microsoft.EventGrid.SubscriptionValidationEvent"
	// eventGridTokenLifetime is the lifetime of the tokens Event Grid presents.
	eventGridTokenLifetime = time.Hour
	// maxWebhookResponse is how much of a webhook's answer is read.
	maxWebhookResponse = 1 << 20
	// defaultManualValidationWindow is how long Event Grid waits for a GET of the
	// validationUrl once the endpoint answered the handshake 200 without the code.
	defaultManualValidationWindow = 10 * time.Minute
	// awaitingManualValidation is the Err of the handshake's Delivery that switched to
	// manual validation.
	awaitingManualValidation = "awaiting manual validation: GET the validationUrl"
	// manualValidationOK is what Event Grid answers a GET of the validationUrl that
	// completed the handshake.
	manualValidationOK = "Webhook successfully validated as a subscription endpoint."
)

// subscriptionNameRE is Event Grid's rule for event subscription names.
var subscriptionNameRE = regexp.MustCompile(`^[A-Za-z0-9-]{3,64}$`)

// EventSubscription describes an Event Grid event subscription with a webhook
// destination on a vault's system topic, for [Vault.Subscribe]. The zero value of every
// field but Endpoint means Event Grid's default.
type EventSubscription struct {
	// Name is the event subscription's name: 3-64 letters, digits and dashes (default
	// "sub-<n>"). Event Grid sends it upper-cased in the aeg-subscription-name header, so a
	// handler checking it must compare without regard to case.
	Name string
	// Endpoint is the webhook's URL, http or https.
	Endpoint string
	// Schema is the delivery schema (default [EventGridSchema]).
	Schema EventSchema
	// EventTypes filters what is delivered (default: the three secret events). The three
	// certificate events (EventCertificateNewVersionCreated...) are published to
	// subscriptions that list them; Key Vault's key and access policy event types are
	// accepted too, and the emulator never publishes them.
	EventTypes []string
	// Audience turns on Microsoft Entra protected delivery: every request, handshakes
	// included, carries "Authorization: Bearer <token>", an RS256 token the emulator's Entra
	// ID signs with the key its tenant's OpenID configuration and JWKS publish, so a handler
	// verifies it as it would Entra ID's. Claims: aud = Audience (the webhook app's ID or
	// ID URI), iss https://sts.windows.net/<tenant>/, tid, appid and azp [EventGridAppID],
	// appidacr "2", oid and sub Event Grid's service principal's object ID in the tenant
	// (stable), idtyp "app", ver "1.0", roles = Roles, iat, nbf and exp (one hour). Like
	// Event Grid, the subscription reuses a token until five minutes before it expires. It
	// replaces an Authorization header in Headers.
	Audience string
	// Roles is the roles claim of the Entra tokens (default AzureEventGridSecureWebhookSubscriber, eventgrid.DefaultRole); a
	// non-nil empty slice leaves the claim out, as for an app that assigned no role.
	Roles []string
	// Headers are custom delivery properties: static headers sent on every request,
	// handshakes included (an API key, for instance).
	Headers map[string]string
	// MaxEventsPerBatch is the most events one request carries (default 1). With more
	// than 1, events waiting to be sent go together, and BatchWindow can gather more.
	MaxEventsPerBatch int
	// BatchWindow is how long, with MaxEventsPerBatch > 1, a batch waits for more events
	// after its first one was published, unless it fills up first (default 0: send what is
	// waiting at once).
	BatchWindow time.Duration
	// RetryDelays are the waits before retry 1, 2, ...; the last repeats (default Event
	// Grid's schedule: 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h). Tests pass
	// milliseconds.
	RetryDelays []time.Duration
	// MaxDeliveryAttempts caps the attempts per batch and for the handshake (default 30).
	MaxDeliveryAttempts int
	// Timeout is the time each request may take (default 30 s); a request that times out
	// is retried.
	Timeout time.Duration
	// ManualValidationWindow is how long the Event Grid schema's handshake waits in manual
	// validation mode (default 10 minutes, Event Grid's; zero or less means the default).
	// An endpoint that answers the SubscriptionValidationEvent 200 without a
	// validationResponse (an empty body, a body that is not JSON, JSON without the field or
	// with an empty one) switches the subscription to manual validation, Event Grid's
	// provisioning state AwaitingManualAction: the handshake's Delivery records status 200
	// and Err "awaiting manual validation: GET the validationUrl", and the subscription
	// validates when the event's data.validationUrl
	// (https://rp-kvtest.eventgrid.azure.net/eventsubscriptions/<name>/validate?id=...&token=...)
	// is requested with GET within the window, through [Server.Client] or the proxy of
	// [Server.ProxyURL] (the emulator's CA is trusted for that host); the URL is valid from
	// when the handshake is sent, so a GET before the 200 arrives counts. If the window passes
	// first, the handshake fails as one that ran out of attempts does (Event Grid's
	// provisioning state Failed): nothing is delivered and WaitValidated returns an error
	// saying the validationUrl was not called. A 200 whose validationResponse is not the
	// code is not manual validation but a failed attempt, retried. Tests pass milliseconds.
	ManualValidationWindow time.Duration
	// Duplicate delivers every batch twice (same event IDs), the second time right after
	// the first succeeded, as at-least-once delivery may: a handler must be idempotent.
	Duplicate bool
	// Reorder delivers events out of order, as Event Grid may: each event is held until
	// the next one is published (or a second passes), and the later one is sent first.
	Reorder bool
	// Client reaches the webhook (default: a client of its own that uses no proxy, trusts
	// the system roots and follows no redirect). A test serving the webhook with
	// httptest.NewTLSServer passes the test server's Client().
	Client *http.Client
}

// defaultRetryDelays is Event Grid's retry schedule (after the seventh retry, once an
// hour).
func defaultRetryDelays() []time.Duration {
	return []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute,
		10 * time.Minute, 30 * time.Minute, time.Hour}
}

// defaultEventTypes are the secret events a subscription gets unless it filters.
func defaultEventTypes() []string {
	return []string{EventSecretNewVersionCreated, EventSecretNearExpiry, EventSecretExpired}
}

// knownEventType reports whether t is one of Key Vault's event types.
func knownEventType(t string) bool {
	return slices.Contains(defaultEventTypes(), t) || slices.Contains(certificateEventTypes(), t) ||
		slices.Contains(otherKeyVaultEvents, t)
}

// parseEventSchema accepts a schema's API name or the seed's short one, in any case.
func parseEventSchema(s string) (EventSchema, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "eventgrid", "eventgridschema":
		return EventGridSchema, nil
	case "cloudevents", "cloudeventschemav1_0":
		return CloudEventSchema, nil
	}
	return "", fmt.Errorf("kvtest: unknown event delivery schema %q (want eventgrid or cloudevents)", s)
}

// checkEndpoint reports whether u is an absolute http or https URL. The error never
// quotes the URL: a webhook URL may carry a key.
func checkEndpoint(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return errors.New("kvtest: an event subscription's endpoint must be an http or https URL")
	}
	return nil
}

// resolved validates the subscription and fills its defaults (except Name).
func (es EventSubscription) resolved() (EventSubscription, error) {
	if es.Name != "" && !subscriptionNameRE.MatchString(es.Name) {
		return es, fmt.Errorf("kvtest: invalid event subscription name %q (3-64 letters, digits, dashes)", es.Name)
	}
	if err := checkEndpoint(es.Endpoint); err != nil {
		return es, err
	}
	schema, err := parseEventSchema(string(es.Schema))
	if err != nil {
		return es, err
	}
	es.Schema = schema
	if len(es.EventTypes) == 0 {
		es.EventTypes = defaultEventTypes()
	} else {
		es.EventTypes = slices.Clone(es.EventTypes)
	}
	for _, t := range es.EventTypes {
		if !knownEventType(t) {
			return es, fmt.Errorf("kvtest: unknown Key Vault event type %q", t)
		}
	}
	if es.Roles == nil {
		es.Roles = []string{defaultRole}
	} else {
		es.Roles = slices.Clone(es.Roles)
	}
	es.Headers = maps.Clone(es.Headers)
	es.MaxEventsPerBatch = max(es.MaxEventsPerBatch, 1)
	es.BatchWindow = max(es.BatchWindow, 0)
	if len(es.RetryDelays) == 0 {
		es.RetryDelays = defaultRetryDelays()
	} else {
		es.RetryDelays = slices.Clone(es.RetryDelays)
	}
	if es.MaxDeliveryAttempts <= 0 {
		es.MaxDeliveryAttempts = 30
	}
	if es.Timeout <= 0 {
		es.Timeout = 30 * time.Second
	}
	if es.ManualValidationWindow <= 0 {
		es.ManualValidationWindow = defaultManualValidationWindow
	}
	return es, nil
}

// Delivery is one request a subscription sent (or tried to send) to its webhook, for
// assertions on what Event Grid did: handshakes, attempts, retries.
type Delivery struct {
	// Kind is "validation" for a handshake, "notification" for events.
	Kind string
	// EventIDs are the IDs of the events sent (of the validation event, for an Event Grid
	// schema handshake).
	EventIDs []string
	// Types are the event types of the batch, in its order.
	Types []string
	// Attempt is 1 for the first try, 2 for the first retry, ...
	Attempt int
	// Status is the webhook's HTTP status; 0 when the request failed (timeout, refused).
	Status int
	// Err is the transport error, if any, or why a handshake answered 200 did not validate
	// ("awaiting manual validation: GET the validationUrl" when it switched to manual
	// validation, see [EventSubscription.ManualValidationWindow]).
	Err string
	// Retried says whether this attempt is followed by a retry.
	Retried bool
	// Time is when the attempt started.
	Time time.Time
}

// Subscription is an event subscription made by [Vault.Subscribe]: its background
// handshake and deliveries, and the record of every attempt. Its methods are safe for
// concurrent use.
type Subscription struct {
	v         *Vault
	cfg       EventSubscription
	client    *http.Client
	ownClient bool   // the default client, whose idle connections Close closes
	code      string // the validation code
	valID     string // the validation event's ID

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{} // the delivery goroutine ended
	validated chan struct{}
	failed    chan struct{} // the handshake gave up
	closeOnce sync.Once

	mu         sync.Mutex
	queue      []queuedEvent
	wake       chan struct{} // capacity 1: something was queued
	held       *queuedEvent  // Reorder: the event waiting for a later one
	holdTimer  *time.Timer
	closed     bool
	failErr    error
	deliveries []Delivery
	valToken   string        // the token of the handshake's validationUrl
	manual     manualState   // the Event Grid schema's manual validation
	manualOK   chan struct{} // closed by the GET of the validationUrl that validated

	tokenMu  sync.Mutex
	token    string    // the Entra token in use, reused as Event Grid reuses the one it got
	tokenExp time.Time // when token expires
}

// bearer returns the subscription's Entra token, a new one when the one in use has less
// than five minutes left: Event Grid gets a token from Entra ID and reuses it, it does not
// sign one per delivery.
func (s *Subscription) bearer() string {
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	if s.token == "" || time.Until(s.tokenExp) < 5*time.Minute {
		s.token, s.tokenExp = s.v.srv.eventGridToken(s.cfg.Audience, s.cfg.Roles), time.Now().Add(eventGridTokenLifetime)
	}
	return s.token
}

// manualState is where a subscription is in the Event Grid schema's manual validation.
type manualState int

const (
	manualNone      manualState = iota // not (yet) in manual validation
	manualAwaiting                     // answered 200 without the code: waiting for the GET
	manualConfirmed                    // the validationUrl was called in time
	manualExpired                      // the window passed first (provisioning state Failed)
)

// queuedEvent is an event waiting for delivery, with when it was queued (BatchWindow).
type queuedEvent struct {
	e  *kvEvent
	at time.Time
}

// kvEvent is one published Key Vault event, shared by the subscriptions it goes to (as
// Event Grid delivers one event, one ID, to every matching subscription).
type kvEvent struct {
	id, typ, topic, subject string
	time                    time.Time
	data                    eventData
}

// eventData is the data of Key Vault's secret events, with Key Vault's field names.
type eventData struct {
	ID         string `json:"Id"`
	VaultName  string `json:"VaultName"`
	ObjectType string `json:"ObjectType"`
	ObjectName string `json:"ObjectName"`
	Version    string `json:"Version"`
	NBF        *int64 `json:"NBF"`
	EXP        *int64 `json:"EXP"`
}

// gridEvent is an event in the Event Grid schema.
type gridEvent struct {
	ID              string `json:"id"`
	Topic           string `json:"topic"`
	Subject         string `json:"subject"`
	EventType       string `json:"eventType"`
	EventTime       string `json:"eventTime"`
	Data            any    `json:"data"`
	DataVersion     string `json:"dataVersion"`
	MetadataVersion string `json:"metadataVersion"`
}

// cloudEvent is an event in the CloudEvents 1.0 schema (structured mode).
type cloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	Type            string    `json:"type"`
	Source          string    `json:"source"`
	Subject         string    `json:"subject"`
	ID              string    `json:"id"`
	Time            string    `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            eventData `json:"data"`
}

// vaultEvents is a vault's system topic: its subscriptions and the timers of its
// versions' expiry events. It is guarded by the vault's mu.
type vaultEvents struct {
	closed bool
	made   int // subscriptions made, for default names
	subs   []*Subscription
	timers map[string]*expiryTimers // lowercase name + "/" + version
}

// expiryTimers are the pending expiry events of one version with exp.
type expiryTimers struct {
	exp           time.Time
	near, expired *time.Timer // nil once fired
}

func (et *expiryTimers) stop() {
	for _, t := range []*time.Timer{et.near, et.expired} {
		if t != nil {
			t.Stop()
		}
	}
}

// topic is the vault's resource ID, the events' topic (Event Grid) and source
// (CloudEvents).
func (v *Vault) topic() string {
	return "/subscriptions/" + nameUUID(v.srv.tenant, "subscription") +
		"/resourceGroups/kvtest-rg/providers/Microsoft.KeyVault/vaults/" + v.name
}

// Subscribe adds an Event Grid event subscription with a webhook destination on the
// vault's system topic. It returns at once; the validation handshake runs first, in the
// background, retried on the RetryDelays schedule until it succeeds (at most
// MaxDeliveryAttempts times), and deliveries wait for it, as Event Grid sends nothing to
// an endpoint that has not validated. An Event Grid schema endpoint that answers it 200
// without the code puts the subscription in manual validation: it validates when its
// validationUrl is called, within [EventSubscription.ManualValidationWindow]. Events
// published from now on whose type the subscription takes are delivered in publication
// order (unless Reorder), one batch at a time: a batch being retried holds back the ones
// after it.
//
// Retries: a 2xx answer is a success; 400, 401, 403 and 413 drop the batch at once (Event
// Grid dead-letters it); any other status, a timeout or a transport error is retried
// after RetryDelays[attempt-1], until MaxDeliveryAttempts.
//
// Like [Server.AddVault] on a bad name, it panics on an invalid endpoint, schema, name or
// event type, on a name an open subscription of the vault has, and on a closed Server.
func (v *Vault) Subscribe(sub EventSubscription) *Subscription {
	cfg, err := sub.resolved()
	if err != nil {
		panic(err)
	}
	v.mu.Lock()
	if v.events.closed || v.srv.isClosed() {
		v.mu.Unlock()
		panic(errClosed)
	}
	taken := func(name string) bool {
		return slices.ContainsFunc(v.events.subs, func(s *Subscription) bool { return strings.EqualFold(s.cfg.Name, name) })
	}
	v.events.made++
	if cfg.Name == "" {
		for n := v.events.made; ; n++ {
			if cfg.Name = "sub-" + strconv.Itoa(n); !taken(cfg.Name) {
				break
			}
		}
	} else if taken(cfg.Name) {
		v.mu.Unlock()
		panic(fmt.Sprintf("kvtest: vault %s already has an event subscription named %q", v.name, cfg.Name))
	}
	s := newSubscription(v, cfg)
	v.events.subs = append(v.events.subs, s)
	v.mu.Unlock()
	v.srv.cfg.logger.Info("event subscription created", "vault", v.host, "subscription", cfg.Name, "schema", string(cfg.Schema))
	go s.run()
	return s
}

func newSubscription(v *Vault, cfg EventSubscription) *Subscription {
	s := &Subscription{
		v:         v,
		cfg:       cfg,
		client:    cfg.Client,
		code:      strings.ToUpper(newUUID()),
		valID:     newUUID(),
		done:      make(chan struct{}),
		validated: make(chan struct{}),
		failed:    make(chan struct{}),
		wake:      make(chan struct{}, 1),
		manualOK:  make(chan struct{}),
	}
	if s.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		s.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
		s.ownClient = true
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Name returns the event subscription's name, the one a default gave it included.
func (s *Subscription) Name() string { return s.cfg.Name }

// WaitValidated returns nil once the validation handshake has succeeded, or ctx's error.
// It returns an error at once if the handshake gave up after MaxDeliveryAttempts, its
// manual validation window passed without a GET of the validationUrl, or the
// subscription was closed before it succeeded.
func (s *Subscription) WaitValidated(ctx context.Context) error {
	select {
	case <-s.validated:
		return nil
	default:
	}
	select {
	case <-s.validated:
		return nil
	case <-s.failed:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.failErr
	case <-s.done:
		select {
		case <-s.validated:
			return nil
		case <-s.failed:
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.failErr
		default:
		}
		return fmt.Errorf("kvtest: event subscription %s closed before its endpoint validated", s.cfg.Name)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Deliveries returns every attempt so far, handshakes included, in the order they
// started.
func (s *Subscription) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Delivery, len(s.deliveries))
	for i, d := range s.deliveries {
		d.EventIDs, d.Types = slices.Clone(d.EventIDs), slices.Clone(d.Types)
		out[i] = d
	}
	return out
}

// Close deletes the event subscription: it ends a request in flight, drops pending
// retries and queued events, and returns when the delivery goroutine has ended. It is
// safe to call twice; [Server.Close] closes every subscription.
func (s *Subscription) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		s.mu.Lock()
		s.closed = true
		if s.holdTimer != nil {
			s.holdTimer.Stop()
		}
		s.held, s.queue = nil, nil
		s.mu.Unlock()
		<-s.done
		if s.ownClient {
			s.client.CloseIdleConnections()
		}
		v := s.v
		v.mu.Lock()
		v.events.subs = slices.DeleteFunc(v.events.subs, func(o *Subscription) bool { return o == s })
		v.mu.Unlock()
	})
}

// takes reports whether the subscription's filter lets events of type typ through.
func (s *Subscription) takes(typ string) bool { return slices.Contains(s.cfg.EventTypes, typ) }

// enqueue queues e for delivery; with Reorder, it holds e for a later event. The caller
// holds the vault's mu, so events are queued in publication order.
func (s *Subscription) enqueue(e *kvEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.failErr != nil {
		return
	}
	q := queuedEvent{e: e, at: time.Now()}
	if !s.cfg.Reorder {
		s.pushLocked(q)
		return
	}
	if s.held == nil {
		s.held = &q
		held := s.held
		s.holdTimer = time.AfterFunc(reorderHold, func() { s.release(held) })
		return
	}
	h := s.held
	s.held = nil
	s.holdTimer.Stop()
	s.pushLocked(q)
	s.pushLocked(*h)
}

// release queues a held event nothing followed within reorderHold.
func (s *Subscription) release(q *queuedEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == q && !s.closed {
		s.held = nil
		s.pushLocked(*q)
	}
}

func (s *Subscription) pushLocked(q queuedEvent) {
	s.queue = append(s.queue, q)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) record(d Delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deliveries = append(s.deliveries, d)
}

// run is the subscription's delivery goroutine: the handshake, then batches until Close.
func (s *Subscription) run() {
	defer close(s.done)
	if !s.handshake() {
		return
	}
	for {
		batch, ok := s.nextBatch()
		if !ok {
			return
		}
		if s.deliver(batch) && s.cfg.Duplicate {
			s.deliver(batch)
		}
	}
}

// nextBatch waits for queued events and takes up to MaxEventsPerBatch of them, after
// BatchWindow if the batch is not full. It returns false when the subscription closes.
func (s *Subscription) nextBatch() ([]*kvEvent, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var wait <-chan time.Time
		s.mu.Lock()
		if n := len(s.queue); n > 0 {
			most := s.cfg.MaxEventsPerBatch
			deadline := s.queue[0].at.Add(s.cfg.BatchWindow)
			if d := time.Until(deadline); most > 1 && n < most && d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				wait = timer.C
			} else {
				k := min(n, most)
				batch := make([]*kvEvent, k)
				for i, q := range s.queue[:k] {
					batch[i] = q.e
				}
				s.queue = slices.Delete(s.queue, 0, k)
				s.mu.Unlock()
				return batch, true
			}
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-wait:
		case <-s.ctx.Done():
			return nil, false
		}
	}
}

// delay is the wait before the retry that follows attempt.
func (s *Subscription) delay(attempt int) time.Duration {
	d := s.cfg.RetryDelays
	return d[min(attempt-1, len(d)-1)]
}

// sleep waits d unless the subscription closes first.
func (s *Subscription) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// handshake validates the endpoint, retrying, and reports whether it succeeded.
func (s *Subscription) handshake() bool {
	var body []byte
	if s.cfg.Schema == EventGridSchema {
		body = s.validationBody()
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		var status int
		var reason string
		var manual bool
		var err error
		if s.cfg.Schema == EventGridSchema {
			status, reason, manual, err = s.validateEventGrid(body, attempt)
		} else {
			status, reason, err = s.validateCloudEvents()
		}
		s.mu.Lock()
		early := s.manual == manualConfirmed // the validationUrl was called before the answer came
		s.mu.Unlock()
		if manual || early {
			return s.awaitManual(attempt, start)
		}
		ok := err == nil && reason == "" && status == http.StatusOK
		if err != nil {
			reason = err.Error()
		} else if !ok && reason == "" && status == http.StatusOK {
			reason = "the answer did not validate the subscription"
		}
		retry := !ok && attempt < s.cfg.MaxDeliveryAttempts && s.ctx.Err() == nil
		d := Delivery{Kind: "validation", Attempt: attempt, Status: status, Err: reason, Retried: retry, Time: start}
		if s.cfg.Schema == EventGridSchema {
			d.EventIDs, d.Types = []string{s.valID}, []string{validationEventType}
		}
		s.record(d)
		s.v.srv.cfg.logger.Info("event subscription validation", "vault", s.v.host, "subscription", s.cfg.Name,
			"attempt", attempt, "status", status, "validated", ok)
		if ok {
			close(s.validated)
			return true
		}
		if !retry || !s.sleep(s.delay(attempt)) {
			if s.ctx.Err() == nil {
				s.fail(fmt.Errorf("kvtest: event subscription %s: endpoint validation failed after %d attempts: %s",
					s.cfg.Name, attempt, reason))
			}
			return false
		}
	}
}

// fail gives the handshake up with err, which WaitValidated returns; queued events are
// dropped and none is queued afterwards.
func (s *Subscription) fail(err error) {
	s.mu.Lock()
	s.failErr = err
	s.queue = nil
	s.mu.Unlock()
	close(s.failed)
}

// awaitManual is the Event Grid schema's manual validation, after the endpoint answered
// the handshake's attempt 200 without a validationResponse: it waits for a GET of the
// validationUrl ([Server.serveManualValidation]), the subscription's Close or the end of
// ManualValidationWindow, and reports whether the subscription validated.
func (s *Subscription) awaitManual(attempt int, start time.Time) bool {
	s.mu.Lock()
	early := s.manual == manualConfirmed
	if !early {
		s.manual = manualAwaiting
	}
	s.mu.Unlock()
	d := Delivery{Kind: "validation", EventIDs: []string{s.valID}, Types: []string{validationEventType},
		Attempt: attempt, Status: http.StatusOK, Err: awaitingManualValidation, Time: start}
	if early {
		d.Err = ""
	}
	s.record(d)
	window := s.cfg.ManualValidationWindow
	s.v.srv.cfg.logger.Info("event subscription awaiting manual validation", "vault", s.v.host,
		"subscription", s.cfg.Name, "attempt", attempt, "window", window)
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-s.manualOK:
	case <-s.ctx.Done():
	case <-t.C:
	}
	// The GET and the window's end may race: the state, under mu, decides.
	s.mu.Lock()
	confirmed := s.manual == manualConfirmed
	closed := s.ctx.Err() != nil
	if !confirmed {
		s.manual = manualExpired
	}
	s.mu.Unlock()
	switch {
	case confirmed:
		s.v.srv.cfg.logger.Info("event subscription validation", "vault", s.v.host, "subscription", s.cfg.Name,
			"attempt", attempt, "status", http.StatusOK, "validated", true, "manual", true)
		close(s.validated)
		return true
	case closed:
		return false
	}
	s.v.srv.cfg.logger.Info("event subscription validation", "vault", s.v.host, "subscription", s.cfg.Name,
		"attempt", attempt, "status", http.StatusOK, "validated", false, "manual", true)
	s.fail(fmt.Errorf("kvtest: event subscription %s: endpoint validation failed: the endpoint answered the handshake "+
		"200 without a validationResponse, and its validationUrl was not called (GET) within the manual validation "+
		"window of %v (provisioning state Failed: re-create the subscription)", s.cfg.Name, window))
	return false
}

// confirmManual checks a GET of the validationUrl against the subscription and, when the
// token matches and the subscription awaits manual validation, completes the handshake.
// It returns "" on success, else why the GET does not validate.
func (s *Subscription) confirmManual(token string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.valToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.valToken)) != 1 {
		return "the validation token does not match the event subscription's validationUrl"
	}
	select {
	case <-s.validated:
		return "the event subscription is already validated"
	default:
	}
	switch {
	case s.closed || s.ctx.Err() != nil:
		return "the event subscription was deleted"
	case s.manual == manualConfirmed:
		return "the event subscription is already validated"
	case s.manual == manualExpired || s.failErr != nil:
		return "the event subscription's validation failed (provisioning state Failed): re-create it"
	}
	// manualAwaiting, or manualNone while the handshake's answer is still being read: an
	// endpoint may call the validationUrl before its 200 arrives, and the URL is valid
	// from the moment it was sent.
	s.manual = manualConfirmed
	close(s.manualOK)
	return ""
}

// serveManualValidation serves Event Grid's validationUrl,
// GET https://rp-kvtest.eventgrid.azure.net/eventsubscriptions/<name>/validate?id=<code>&token=<token>,
// on the Entra listener: 200 with Event Grid's text when it completes a manual
// validation, 400 with the reason otherwise.
func (s *Server) serveManualValidation(w http.ResponseWriter, r *http.Request) {
	plain := func(status int, msg string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, msg)
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 3 || parts[0] != "eventsubscriptions" || parts[2] != "validate" || parts[1] == "" {
		plain(http.StatusNotFound, "kvtest Event Grid: not found: validation URLs are /eventsubscriptions/<name>/validate?id=...&token=...\n")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		plain(http.StatusMethodNotAllowed, "kvtest Event Grid: a validation URL accepts GET only.\n")
		return
	}
	name, q := parts[1], r.URL.Query()
	id, token := q.Get("id"), q.Get("token")
	if id == "" || token == "" {
		plain(http.StatusBadRequest, "kvtest Event Grid: the validation URL has no id or no token.\n")
		return
	}
	var sub *Subscription
	for _, v := range s.Vaults() {
		for _, c := range v.subscriptions() {
			if strings.EqualFold(c.cfg.Name, name) && strings.EqualFold(c.code, id) {
				sub = c
			}
		}
	}
	if sub == nil {
		s.cfg.logger.Info("event subscription manual validation refused", "subscription", name, "reason", "unknown")
		plain(http.StatusBadRequest, "kvtest Event Grid: no event subscription "+name+" with this validation id.\n")
		return
	}
	if why := sub.confirmManual(token); why != "" {
		s.cfg.logger.Info("event subscription manual validation refused", "vault", sub.v.host, "subscription", sub.cfg.Name, "reason", why)
		plain(http.StatusBadRequest, "kvtest Event Grid: "+why+".\n")
		return
	}
	s.cfg.logger.Info("event subscription validated manually", "vault", sub.v.host, "subscription", sub.cfg.Name)
	plain(http.StatusOK, manualValidationOK)
}

// validationBody is the Event Grid schema's handshake: one SubscriptionValidationEvent.
// Its validationUrl's token, new for every handshake, is kept for the GET of manual
// validation.
func (s *Subscription) validationBody() []byte {
	now := time.Now().UTC()
	token := randomHex(16)
	s.mu.Lock()
	s.valToken = token
	s.mu.Unlock()
	vurl := "https://" + emuinfo.EventGridHost + "/eventsubscriptions/" + url.PathEscape(s.cfg.Name) +
		"/validate?id=" + s.code + "&t=" + now.Format("2006-01-02T15:04:05.0000000Z") +
		"&apiVersion=2020-10-15-preview&token=" + token
	b, _ := json.Marshal([]gridEvent{{
		ID:              s.valID,
		Topic:           s.v.topic(),
		Subject:         "",
		EventType:       validationEventType,
		EventTime:       now.Format(time.RFC3339Nano),
		Data:            map[string]string{"validationCode": s.code, "validationUrl": vurl},
		DataVersion:     "2",
		MetadataVersion: "1",
	}})
	return b
}

// validateEventGrid sends the validation event; it validates with 200 and a JSON body
// whose validationResponse (any letter case) is the code. A 200 without a
// validationResponse (no JSON object, no such field, null or "") reports manual: the
// subscription switches to manual validation.
func (s *Subscription) validateEventGrid(body []byte, attempt int) (status int, reason string, manual bool, err error) {
	h := s.aegHeaders("SubscriptionValidation", attempt, "2")
	h.Set("Content-Type", "application/json; charset=utf-8")
	status, _, resp, err := s.send(http.MethodPost, body, h)
	if err != nil || status != http.StatusOK {
		return status, "", false, err
	}
	raw, ok := validationResponse(resp)
	if !ok {
		return status, "", true, nil
	}
	var code string
	if json.Unmarshal(raw, &code) != nil {
		return status, "the validationResponse is not a string", false, nil
	}
	if code == "" {
		return status, "", true, nil
	}
	if !strings.EqualFold(code, s.code) {
		return status, "the validationResponse is not the validation code", false, nil
	}
	return status, "", false, nil
}

// validationResponse returns the validationResponse field of a handshake's answer (any
// letter case, an exact match first), and false when the answer has none: it is not a
// JSON object, lacks the field or has it null.
func validationResponse(resp []byte) (json.RawMessage, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(resp, &obj) != nil {
		return nil, false
	}
	raw, ok := obj["validationResponse"]
	if !ok {
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			if strings.EqualFold(k, "validationResponse") {
				raw, ok = obj[k], true
				break
			}
		}
	}
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return nil, false
	}
	return raw, true
}

// validateCloudEvents sends CloudEvents' abuse protection request; it validates with 200
// and WebHook-Allowed-Origin naming Event Grid or "*".
func (s *Subscription) validateCloudEvents() (int, string, error) {
	h := http.Header{}
	h["WebHook-Request-Origin"] = []string{eventGridOrigin}
	h["WebHook-Request-Rate"] = []string{"120"}
	status, rh, _, err := s.send(http.MethodOptions, nil, h)
	if err != nil || status != http.StatusOK {
		return status, "", err
	}
	if o := strings.TrimSpace(rh.Get("WebHook-Allowed-Origin")); o != "*" && !strings.EqualFold(o, eventGridOrigin) {
		return status, "the answer's WebHook-Allowed-Origin is not " + eventGridOrigin + " or *", nil
	}
	return status, "", nil
}

// aegHeaders are Event Grid's delivery headers, with the lower-case names Event Grid
// sends.
func (s *Subscription) aegHeaders(eventType string, attempt int, dataVersion string) http.Header {
	return http.Header{
		"aeg-event-type":        {eventType},
		"aeg-subscription-name": {strings.ToUpper(s.cfg.Name)},
		"aeg-delivery-count":    {strconv.Itoa(attempt - 1)},
		"aeg-data-version":      {dataVersion},
		"aeg-metadata-version":  {"1"},
	}
}

// deliver sends a batch until it succeeds, is dropped or the subscription closes, and
// reports whether it succeeded.
func (s *Subscription) deliver(batch []*kvEvent) bool {
	ids, types := make([]string, len(batch)), make([]string, len(batch))
	for i, e := range batch {
		ids[i], types[i] = e.id, e.typ
	}
	body, contentType := s.notificationBody(batch)
	for attempt := 1; ; attempt++ {
		start := time.Now()
		var h http.Header
		if s.cfg.Schema == EventGridSchema {
			h = s.aegHeaders("Notification", attempt, "1")
		} else {
			h = s.aegHeaders("Notification", attempt, "")
			h["Origin"] = []string{eventGridOrigin}
		}
		h.Set("Content-Type", contentType)
		status, _, _, err := s.send(http.MethodPost, body, h)
		ok := err == nil && status >= 200 && status < 300
		retry := !ok && retryable(status, err) && attempt < s.cfg.MaxDeliveryAttempts && s.ctx.Err() == nil
		d := Delivery{Kind: "notification", EventIDs: slices.Clone(ids), Types: slices.Clone(types),
			Attempt: attempt, Status: status, Retried: retry, Time: start}
		if err != nil {
			d.Err = err.Error()
		}
		s.record(d)
		s.v.srv.cfg.logger.Info("events delivered", "vault", s.v.host, "subscription", s.cfg.Name,
			"events", len(batch), "attempt", attempt, "status", status, "retry", retry)
		if ok {
			return true
		}
		if !retry || !s.sleep(s.delay(attempt)) {
			return false
		}
	}
}

// retryable reports whether Event Grid retries an answer: not 400, 401, 403 or 413
// (dead-lettered at once), every other failure yes.
func retryable(status int, err error) bool {
	if err != nil {
		return true
	}
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		return false
	}
	return true
}

// notificationBody renders a batch in the subscription's schema.
func (s *Subscription) notificationBody(batch []*kvEvent) ([]byte, string) {
	if s.cfg.Schema == EventGridSchema {
		out := make([]gridEvent, len(batch))
		for i, e := range batch {
			out[i] = gridEvent{ID: e.id, Topic: e.topic, Subject: e.subject, EventType: e.typ,
				EventTime: e.time.UTC().Format(time.RFC3339Nano), Data: e.data, DataVersion: "1", MetadataVersion: "1"}
		}
		b, _ := json.Marshal(out)
		return b, "application/json; charset=utf-8"
	}
	out := make([]cloudEvent, len(batch))
	for i, e := range batch {
		out[i] = cloudEvent{SpecVersion: "1.0", Type: e.typ, Source: e.topic, Subject: e.subject, ID: e.id,
			Time: e.time.UTC().Format(time.RFC3339Nano), DataContentType: "application/json", Data: e.data}
	}
	if s.cfg.MaxEventsPerBatch > 1 && len(out) > 1 {
		b, _ := json.Marshal(out)
		return b, "application/cloudevents-batch+json; charset=utf-8"
	}
	b, _ := json.Marshal(out[0])
	return b, "application/cloudevents+json; charset=utf-8"
}

// send makes one request to the webhook with the custom headers, the given ones and, for
// Entra protected delivery, a fresh token. It returns the status, headers and (up to
// 1 MB of) body of the answer.
func (s *Subscription) send(method string, body []byte, h http.Header) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.cfg.Endpoint, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	for k, v := range h { // Event Grid's own headers win over custom ones of the same name
		req.Header.Del(k)
		req.Header[k] = v
	}
	if s.cfg.Audience != "" {
		req.Header.Set("Authorization", "Bearer "+s.bearer())
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxWebhookResponse))
	return resp.StatusCode, resp.Header, b, nil
}

// eventGridObjectID is the object ID of Event Grid's service principal in the tenant.
func (s *Server) eventGridObjectID() string {
	return nameUUID(s.tenant, "serviceprincipal", EventGridAppID)
}

// eventGridToken is the token Event Grid gets from Entra ID for a webhook app: an app
// token of Microsoft.EventGrid for audience, with the roles the app assigned it.
func (s *Server) eventGridToken(audience string, roles []string) string {
	now := time.Now()
	claims := map[string]any{
		"aud":      audience,
		"iss":      s.issuer(),
		"iat":      now.Unix(),
		"nbf":      now.Unix(),
		"exp":      now.Add(eventGridTokenLifetime).Unix(),
		"tid":      s.tenant,
		"appid":    EventGridAppID,
		"azp":      EventGridAppID,
		"appidacr": "2",
		"oid":      s.eventGridObjectID(),
		"sub":      s.eventGridObjectID(),
		"idtyp":    "app",
		"ver":      "1.0",
	}
	if len(roles) > 0 {
		claims["roles"] = roles
	}
	return s.signer.sign(claims)
}

// Publishing. The vault's mu is held throughout, so events reach every subscription's
// queue in the order they happened.

// versionCreatedLocked publishes SecretNewVersionCreated for a new version and schedules
// its expiry events. The caller holds v.mu for writing.
func (v *Vault) versionCreatedLocked(s *secret, sv *secretVersion) {
	v.publishLocked(EventSecretNewVersionCreated, s, sv)
	v.scheduleExpiryLocked(s, sv)
}

// publishLocked publishes an event of type typ about the version to every subscription
// that takes it. The caller holds v.mu.
func (v *Vault) publishLocked(typ string, s *secret, sv *secretVersion) {
	if v.events.closed {
		return
	}
	e := &kvEvent{
		id:      newUUID(),
		typ:     typ,
		topic:   v.topic(),
		subject: s.name,
		time:    time.Now(),
		data: eventData{
			ID: "https://" + v.host + "/secrets/" + s.name + "/" + sv.version, VaultName: v.name,
			ObjectType: "Secret", ObjectName: s.name, Version: sv.version, NBF: unixPtr(sv.nbf), EXP: unixPtr(sv.exp),
		},
	}
	v.srv.cfg.logger.Info("event published", "vault", v.host, "type", typ, "secret", s.name, "version", sv.version)
	for _, sub := range v.events.subs {
		if sub.takes(typ) {
			sub.enqueue(e)
		}
	}
}

// scheduleExpiryLocked (re)schedules the version's SecretNearExpiry and SecretExpired
// after its exp was set or changed; an unchanged exp keeps its timers. Nothing is
// scheduled for a version already expired. The caller holds v.mu for writing.
func (v *Vault) scheduleExpiryLocked(s *secret, sv *secretVersion) {
	tkey := strings.ToLower(s.name) + "/" + sv.version
	old := v.events.timers[tkey]
	if old != nil {
		if sv.exp != nil && old.exp.Equal(*sv.exp) {
			return
		}
		old.stop()
		delete(v.events.timers, tkey)
	}
	if sv.exp == nil || v.events.closed || !time.Now().Before(*sv.exp) {
		return
	}
	if v.events.timers == nil {
		v.events.timers = map[string]*expiryTimers{}
	}
	exp, key, version := *sv.exp, strings.ToLower(s.name), sv.version
	et := &expiryTimers{exp: exp}
	et.near = time.AfterFunc(max(time.Until(exp.Add(-nearExpiryLead)), 0), func() {
		v.fireExpiry(key, version, EventSecretNearExpiry, exp)
	})
	et.expired = time.AfterFunc(time.Until(exp), func() { v.fireExpiry(key, version, EventSecretExpired, exp) })
	v.events.timers[tkey] = et
}

// fireExpiry publishes an expiry event when its timer fires, if the version is still the
// secret's current one (Key Vault publishes expiry events for the current version only),
// is enabled, is not deleted and has the exp it was scheduled for.
func (v *Vault) fireExpiry(key, version, typ string, exp time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	tkey := key + "/" + version
	et := v.events.timers[tkey]
	if v.events.closed || et == nil || !et.exp.Equal(exp) {
		return
	}
	if typ == EventSecretNearExpiry {
		et.near = nil
	} else {
		et.expired = nil
	}
	if et.near == nil && et.expired == nil {
		delete(v.events.timers, tkey)
	}
	s := v.secrets[key]
	if s == nil {
		return
	}
	sv := s.find(version)
	if sv == nil || sv != s.latest() || !sv.enabled || sv.exp == nil || !sv.exp.Equal(exp) {
		return
	}
	v.publishLocked(typ, s, sv)
}

// pendingExpiryTimers counts the expiry events still scheduled, for kvtest's tests.
func (v *Vault) pendingExpiryTimers() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := 0
	for _, et := range v.events.timers {
		if et.near != nil {
			n++
		}
		if et.expired != nil {
			n++
		}
	}
	return n
}

// subscriptions returns the vault's open subscriptions, for kvtest's tests.
func (v *Vault) subscriptions() []*Subscription {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Clone(v.events.subs)
}

// closeEvents stops the vault's expiry timers and closes its subscriptions; nothing is
// published afterwards. [Server.Close] calls it.
func (v *Vault) closeEvents() {
	v.mu.Lock()
	v.events.closed = true
	for _, et := range v.events.timers {
		et.stop()
	}
	v.events.timers = nil
	subs := slices.Clone(v.events.subs)
	v.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
}
