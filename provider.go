package viperkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv/internal/driver"
	"github.com/viperkv/viperkv/internal/driver/azvault"
	"github.com/viperkv/viperkv/internal/fanout"
	"github.com/viperkv/viperkv/internal/notice"
	"github.com/viperkv/viperkv/internal/viperlayers"
)

// Mask replaces secret values in MaskedSettings.
const Mask = "******"

// Provider resolves the Key Vault references in a Viper's configuration and holds the
// resolved configuration. Its methods are safe for concurrent use.
//
// The Viper passed to New is read only inside Load, on the caller's goroutine, and never
// written: Load copies it with everything it knows, and a config file edit seen by Watch is
// read into that copy. So the app may go on using its own Viper (v.Set included; it keeps
// the values it had), and several Providers may share one Viper. The app reads the resolved
// configuration through Viper, Get and GetString, which answer every key as the app's Viper
// would with its references resolved.
type Provider struct {
	src       *viper.Viper
	opts      options
	parse     parseConfig
	reader    *driver.Reader         // every request to a vault goes through it
	cred      azcore.TokenCredential // the shared credential behind reader, for the remote provider
	transport policy.Transporter     // what reader sends through, refusing redirects
	failover  failover               // WithVaultFailover's secondaries by primary
	snap      *snapshotState         // WithSnapshot's file; nil without it
	notify    *fanout.Fanout[Event]

	// updateMu serialises everything that publishes a configuration: Load, Refresh, poll
	// cycles and file reloads. It guards the fields below it. Readers never take it.
	// It is held across fetches, which WithFetchTimeout bounds (New refuses no bound).
	updateMu sync.Mutex
	sched    schedule
	captured capture               // what the last Load read of the app's Viper
	file     []byte                // the config file's content as Watch last read it; nil: as captured
	applied  map[string]any        // that content's settings
	lists    map[string]*vaultList // what listing each vault has taught (version checks)
	sources  sourcesState          // what the vault sources gave

	push   notice.Memory[pushKey] // what Notify remembers; its own lock, so a delivery never waits on a Load to be judged
	pushes pushQueue              // notices Enqueue accepted
	tel    *telemetry
	health atomic.Pointer[healthState] // what update last learned of each secret's freshness

	cur      atomic.Pointer[snapshot]
	watching atomic.Bool
	wake     chan struct{} // tells the poll loop the schedule changed

	// The lifecycle. life ends when Close is called; every call that does I/O runs under
	// it (see enter) and Close waits for them, so no goroutine of the provider survives it.
	life      context.Context
	end       context.CancelFunc
	lifeMu    sync.Mutex
	closed    bool
	ops       sync.WaitGroup // calls in progress (Load, Refresh, Watch, Notify) and push workers
	unobserve func()         // unregisters the meter callback
}

// ErrClosed is returned by a Provider's methods that do I/O after Close.
var ErrClosed = errors.New("viperkv: the provider is closed")

// enter starts a call that does I/O: it returns a context that ends when ctx does or when
// the provider is closed, and a func that ends the call. It fails after Close.
func (p *Provider) enter(ctx context.Context) (context.Context, func(), error) {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.closed {
		return nil, nil, ErrClosed
	}
	p.ops.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.life, cancel)
	return ctx, func() { stop(); cancel(); p.ops.Done() }, nil
}

// Close stops everything the provider started and releases what it holds: Watch returns,
// Load, Refresh and Notify in progress are cut short (their fetches keep nothing), queued
// pushes are dropped, watchers get no more events, the metrics callback is unregistered and
// idle connections are closed. It returns when all of it has stopped, watchers' calls in
// progress included: do not call it from a watcher, which it would wait for. The resolved
// configuration stays readable (Viper, Get, Status); calls that do I/O return ErrClosed.
// Calling Close again does nothing.
func (p *Provider) Close() error {
	p.lifeMu.Lock()
	if p.closed {
		p.lifeMu.Unlock()
		return nil
	}
	p.closed = true
	p.lifeMu.Unlock()
	p.end()
	p.ops.Wait()
	p.notify.Close()
	p.unobserve()
	return p.reader.Close()
}

// ReferenceStatus is the state of one reference in one config key, and how fresh its value
// is, for people, dashboards and readiness probes. It never holds a value.
type ReferenceStatus struct {
	Key       string    // config key, e.g. "db.conn"; list elements as "hosts[1]"
	Written   string    // the reference as written in the config, e.g. "@KeyVault(VaultName=v;SecretName=s)"
	Reference Reference // the secret referred to (zero when the reference is malformed)
	Version   string    // the version whose value the key holds; "" when it holds none
	// ContentType is the content type of that version (for example application/json or
	// application/x-pkcs12), as Key Vault stores it.
	ContentType string
	// Certificate describes the certificate that version holds, when it holds one (its
	// content type is a certificate's): subject, serial and NotAfter, never key material.
	Certificate *CertificateInfo
	// ServedBy is the vault that served the value held: Reference.Vault, or a secondary
	// of WithVaultFailover while the primary cannot answer (Reason then says why). "" when
	// the key holds no value.
	ServedBy string
	Status   Status        // StatusResolved or why not
	Reason   string        // why, when Status is not StatusResolved; or why a failover vault served
	Took     time.Duration // time the fetch took

	// Optional says the reference was written with Optional=true: a secret that is missing,
	// disabled or forbidden leaves the key out (or with its last good value) and is not a
	// failure of Load, only a warning.
	Optional bool

	// HasValue says the key holds a value: its latest, or its last good one while failing.
	HasValue bool
	// LastSuccess is when the value held was last confirmed current: fetched, or shown
	// unchanged by a list. Zero when never.
	LastSuccess time.Time
	// ConsecutiveFailures counts the failed fetches since the last success, and
	// FailingSince is when they began (zero when not failing).
	ConsecutiveFailures int
	FailingSince        time.Time
	// Staleness is the time since LastSuccess, for a versionless reference (a pinned
	// version never changes, so it is never stale: 0).
	Staleness time.Duration
}

// New returns a Provider for v. It makes no request; Load (or Watch) resolves. Without
// WithCredential it authenticates with the system-assigned managed identity (or the one
// WithManagedIdentity names), so no credential is in code or config.
func New(v *viper.Viper, opts ...Option) (*Provider, error) {
	if v == nil {
		return nil, errors.New("viperkv: New: nil *viper.Viper")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.cloud.VaultSuffix() == "" {
		return nil, fmt.Errorf("viperkv: New: unknown cloud %q", o.cloud)
	}
	if o.maxInflight < 1 {
		return nil, fmt.Errorf("viperkv: New: WithMaxInflight(%d): need at least 1", o.maxInflight)
	}
	if o.fetchTimeout <= 0 {
		// It bounds every refresh cycle, which holds the lock that publishes: no bound
		// would let one hung vault stop every update.
		return nil, fmt.Errorf("viperkv: New: WithFetchTimeout(%v): need a positive duration", o.fetchTimeout)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.refreshInterval <= 0 || o.retryMin <= 0 || o.retryMax < o.retryMin {
		return nil, fmt.Errorf("viperkv: New: refresh interval %v and retry back-off %v..%v must be positive and ordered",
			o.refreshInterval, o.retryMin, o.retryMax)
	}
	if err := checkVersionCheck(o.versionCheck); err != nil {
		return nil, err
	}
	for _, vs := range o.vaultSources {
		if err := vs.resolveHost(o.parseConfig()); err != nil {
			return nil, err
		}
	}
	if o.localEmulator != nil {
		if err := o.localEmulator.apply(&o); err != nil {
			return nil, err
		}
	}
	tel, err := newTelemetry(o)
	if err != nil {
		return nil, fmt.Errorf("viperkv: New: telemetry: %w", err)
	}
	p := &Provider{
		unobserve: func() {},
		tel:       tel,
		src:       v,
		opts:      o,
		parse:     o.parseConfig(),
		notify:    fanout.New(o.logger, eventAttrs),
		sched:     newSchedule(o),
		lists:     map[string]*vaultList{},
		wake:      make(chan struct{}, 1),
	}
	vaultCreds, err := o.vaultCredentials() // checked even for the logic tests' source
	if err != nil {
		return nil, err
	}
	if p.failover, err = o.failoverMap(); err != nil {
		return nil, err
	}
	if err := o.snapshot.check(); err != nil {
		return nil, err
	}
	if o.snapshot != nil {
		p.snap = &snapshotState{spec: *o.snapshot}
	}
	src := o.source // the logic tests' in-memory vaults
	if src == nil {
		az, err := azvault.New(azvault.Config{Credential: o.cred, Identity: o.identity, Vaults: vaultCreds, Transport: o.transport,
			Tracing: tel.sdk, OnRequest: tel.countRequest, Log: o.logger})
		if err != nil {
			return nil, fmt.Errorf("viperkv: New: managed identity: %w", err)
		}
		src, p.cred, p.transport = az, az.Credential(), az.Transport()
	}
	p.reader = driver.NewReader(src, o.maxInflight, o.logger)
	p.life, p.end = context.WithCancel(context.Background())
	if err := p.observeGauges(); err != nil {
		return nil, fmt.Errorf("viperkv: New: telemetry: %w", err)
	}
	return p, nil
}

// Load copies the Viper (every layer and option; the config file as it is on disk now, with
// what merged files and readers added over it), finds every reference, fetches each
// distinct secret once, and publishes the resolved configuration. It is the only call that
// reads the Viper.
// It may be called again at any time (for example after the app changed its Viper): each
// call publishes what it read, fetching every reference again, and notifies watchers of
// what changed.
//
// A transient failure (a connection refused or reset, a timeout, a 5xx after the SDK's own
// retries, a 429 beyond the vault's Retry-After budget, an identity endpoint not answering
// yet, as while a container starts) is retried with capped exponential back-off and jitter
// (from about 0.1 s up to 3 s between attempts) until the fetch deadline: the earlier of
// ctx's deadline and WithFetchTimeout, measured in elapsed time. It stops at once when ctx
// ends. A permanent failure (403, 404, a disabled, expired or not yet valid secret, a vault
// that does not resolve, an identity the endpoint does not know) fails at once. A reference
// that never succeeded reports its last failure, with its reason.
//
// When some references fail it still publishes the others and returns a *LoadError listing
// each failure. A failed key is left out (never a placeholder or an empty string in its
// place) unless an earlier Load or refresh gave it a good value, which it keeps. When ctx
// ends first, fetches cut short do not replace what the provider held, and the error also
// wraps ctx's error.
func (p *Provider) Load(ctx context.Context) error {
	ctx, done, err := p.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	p.opts.localEmulator.warn()
	if err := p.opts.localEmulator.running(ctx); err != nil {
		return err
	}
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	start := time.Now()
	ctx, span := p.tel.span(ctx, "viperkv.Load", SourceRefresh)
	snap, err := p.load(ctx)
	p.tel.loadTime.Record(ctx, time.Since(start).Seconds())
	endSpan(span, snap, err)
	return err
}

// load is Load's work under updateMu, on the caller's goroutine: the only place the app's
// Viper is read.
func (p *Provider) load(ctx context.Context) (*snapshot, error) {
	start := time.Now()
	c, err := captureOf(p.src, p.captured.fileBase, p.applied)
	if err != nil {
		return nil, err
	}
	p.captured, p.file, p.applied = c, nil, nil // the capture read the config file as it is now
	var ierr error
	if len(p.opts.vaultSources) > 0 {
		p.sources.imports, _, ierr = p.importVaults(ctx, p.sources.imports, start)
	}
	base, sc, err := p.settings()
	if err != nil {
		return nil, err
	}
	snap, err := p.update(ctx, SourceRefresh, base, sc, sc.distinct())
	p.logLoad(snap, time.Since(start))
	var lerr error
	if failed := failures(snap.status); len(failed) > 0 {
		lerr = &LoadError{Failed: failed}
	}
	if err != nil {
		return snap, errors.Join(fmt.Errorf("viperkv: Load: %w", err), lerr, ierr)
	}
	if ierr != nil {
		return snap, errors.Join(ierr, lerr)
	}
	return snap, lerr
}

// settings returns the settings to resolve, scanned: what the last Load captured of the
// app's Viper, with the config file as Watch last read it. The caller holds updateMu.
func (p *Provider) settings() (*viper.Viper, *scan, error) {
	v := p.captured.v
	if p.file != nil {
		withFile, _, err := p.captured.withFile(p.file)
		if err != nil {
			return nil, nil, err
		}
		v = withFile
	}
	base, sc := p.scanOf(v)
	return base, sc, nil
}

// scanOf returns a clone of v with the vault sources' keys placed in it, and what a scan of
// its keys (with the env-only keys named) found. The caller holds updateMu.
func (p *Provider) scanOf(v *viper.Viper) (*viper.Viper, *scan) {
	base := viperlayers.Clone(v)
	imported := p.placeImports(base, p.sources.imports)
	keys := base.AllKeys()
	named := slices.Clone(p.opts.envKeys)
	for _, path := range p.opts.envKeyPaths {
		named = append(named, strings.Join(path, *viperlayers.Of(base).KeyDelim))
	}
	for _, k := range named {
		if k = strings.ToLower(k); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	sc := scanView(base, keys, p.parse, imported)
	sc.warnings = unnamedEnvRefs(base, sc.read, p.parse)
	return base, sc
}

// update fetches refs, merges them into the current configuration with the settings tree
// (scanned as sc), publishes the result and announces what changed. It is the one way a
// configuration is made: Load and file reloads pass new settings, refreshes the current
// ones. A fetch cut short by the end of ctx does not replace what the provider held; update
// then returns ctx's error along with the published snapshot. The caller holds updateMu.
func (p *Provider) update(ctx context.Context, src Source, base *viper.Viper, sc *scan, refs []Reference) (*snapshot, error) {
	prev := p.cur.Load()
	// Under updateMu: the fetches are bounded by the fetch timeout (New refuses none).
	fctx, cancel := context.WithTimeout(ctx, p.opts.fetchTimeout)
	fetched := fetchSecrets(fctx, p.reader, refs, p.retryFor(src, sc))
	cancel()
	p.untagged(sc, fetched)
	var snapEvs []Event
	if prev == nil && src == SourceRefresh {
		snapEvs = p.fromSnapshot(ctx, sc, fetched, time.Now())
	}
	err := ctx.Err()
	if err != nil && prev != nil {
		// An aborted fetch says nothing about the vault: keep what the provider holds.
		for r, s := range fetched {
			if _, held := prev.secrets[r]; held && s.status != StatusResolved {
				delete(fetched, r)
			}
		}
	}
	now := time.Now()
	secrets, evs := mergeSecrets(sc, prev, fetched, src, now)
	p.noteFailovers(ctx, prev, fetched)
	p.recordHistory(prev, secrets)
	// The first configuration announces nothing (no watcher has seen one yet), so it must
	// not mark near-expiry warnings as given either.
	evs = append(evs, p.sched.checkExpiry(secrets, src, now, prev != nil)...)

	snap := prev
	if prev == nil || sc != prev.scan || !equalSecrets(secrets, prev.secrets) {
		snap = build(base, sc, secrets, prev)
		p.cur.Store(snap)
	}
	// The schedule, the metrics and the health state are current before watchers hear of
	// the change, so one that looks at them sees what the event says.
	p.sched.record(fetched, secrets, now)
	p.observe(snap, fetched, now)
	p.persist(snap, fetched, now)
	if prev != nil {
		evs = append(settingsEvents(prev, snap, src, now, evs), evs...)
		p.announce(evs, prev, snap)
	} else if len(snapEvs) > 0 {
		p.announce(snapEvs, nil, snap)
	}
	p.poke()
	return snap, err
}

// poke tells the poll loop, if one runs, that the schedule changed.
func (p *Provider) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Provider) logLoad(snap *snapshot, took time.Duration) {
	log := p.opts.logger
	failed := failures(snap.status)
	log.Info("viperkv: configuration loaded",
		"references", len(snap.status), "secrets", len(snap.secrets), "failed", len(failed), "took", took)
	for _, st := range snap.status {
		attrs := []any{"key", st.Key, "reference", st.Written}
		if st.Reference.Vault != "" {
			attrs = append(attrs, "vault", st.Reference.Vault, "secret", st.Reference.Name)
		}
		switch st.Status {
		case StatusResolved:
			log.Debug("viperkv: reference resolved", append(attrs, "version", st.Version, "took", st.Took)...)
		case StatusEnvKeyNotNamed:
			log.Warn("viperkv: reference in the environment is not read", append(attrs, "status", st.Status, "reason", st.Reason)...)
		default:
			if st.OptionalMissing() {
				log.Info("viperkv: optional reference left out", append(attrs, "status", st.Status, "reason", st.Reason)...)
			} else {
				log.Warn("viperkv: reference not resolved", append(attrs, "status", st.Status, "reason", st.Reason)...)
			}
		}
	}
}

// failures lists the references that did not resolve. A warning (StatusEnvKeyNotNamed) is
// not a failure: the key it is about is not in the configuration at all.
func failures(status []ReferenceStatus) []ReferenceStatus {
	var out []ReferenceStatus
	for _, st := range status {
		if st.Status != StatusResolved && st.Status != StatusEnvKeyNotNamed && st.Status != StatusServedFromSnapshot && !st.OptionalMissing() {
			out = append(out, st)
		}
	}
	return out
}

// OptionalMissing reports whether the row is an optional reference whose secret is
// missing (404, the secret or its pinned version), disabled or forbidden (RBAC or access
// policy): a warning, not a failure. Any other failure of an optional reference (a
// malformed reference, a value without its shape, a vault that cannot be reached, a
// firewall) still fails.
func (st ReferenceStatus) OptionalMissing() bool {
	if !st.Optional {
		return false
	}
	switch st.Status {
	case StatusSecretNotFound, StatusSecretVersionNotFound, StatusSecretDisabled, StatusAccessToKeyVaultDenied:
		return true
	}
	return false
}

// Viper returns the resolved configuration as a Viper. Treat it as read-only: it is shared
// by every reader, and a reload replaces it rather than changing it. It returns an empty
// Viper before the first Load.
func (p *Provider) Viper() *viper.Viper {
	if s := p.cur.Load(); s != nil {
		return s.v
	}
	return viper.New()
}

// Get returns the resolved value of key, like viper.Get.
func (p *Provider) Get(key string) any { return p.Viper().Get(key) }

// GetString returns the resolved value of key as a string, like viper.GetString.
func (p *Provider) GetString(key string) string { return p.Viper().GetString(key) }

// MaskedSettings returns the resolved settings as nested maps with every secret value
// replaced by Mask, for showing configuration to people. Keys that failed are absent.
func (p *Provider) MaskedSettings() map[string]any {
	s := p.cur.Load()
	if s == nil {
		return nil
	}
	return s.masked()
}

// LoadError reports the references a Load could not resolve. It names keys, vaults,
// secrets and statuses, never values. errors.As on it finds each failure's *ReferenceError.
type LoadError struct {
	Failed []ReferenceStatus
}

func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "viperkv: %d reference(s) not resolved:", len(e.Failed))
	for _, f := range e.Failed {
		b.WriteString("\n  ")
		b.WriteString(printable(f.Key))
		if f.Reference.Vault != "" {
			fmt.Fprintf(&b, " (vault %s, secret %s", f.Reference.Vault, f.Reference.Name)
			if f.Reference.Version != "" {
				b.WriteString(", version " + f.Reference.Version)
			}
			b.WriteString(")")
		} else if f.Written != "" {
			b.WriteString(" (" + printable(f.Written) + ")")
		}
		fmt.Fprintf(&b, ": %s: %s", f.Status, printable(f.Reason))
	}
	return b.String()
}

// printable returns s as it is when it is valid UTF-8 without control characters, and
// quoted with escapes otherwise: keys and references come from the configuration, and an
// error must not carry a NUL, a terminal escape or broken UTF-8 into logs.
func printable(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// Unwrap returns one *ReferenceError per failed reference.
func (e *LoadError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = &ReferenceError{Key: f.Key, Status: f.Status, Reason: f.Reason}
	}
	return errs
}
