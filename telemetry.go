package viperkv

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/tracing"
	"github.com/Azure/azure-sdk-for-go/sdk/tracing/azotel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// instrumentation is the name of the meter and tracer, after the package.
const instrumentation = "github.com/viperkv/viperkv"

// WithMeterProvider makes the provider record OpenTelemetry metrics with mp (default: none).
// The instruments, their units and attributes are in the README's "Operating it" section;
// no attribute holds a value, a version id or an event id, so their number is bounded by
// the configuration.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *options) { o.meterProvider = mp }
}

// WithTracerProvider makes the provider record OpenTelemetry spans with tp (default: none):
// one for each Load, refresh cycle, file reload and push notification, with the Azure SDK's
// own spans of each request (through azcore's OpenTelemetry adapter) as children.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// telemetry holds the provider's instruments; with no providers they do nothing.
type telemetry struct {
	tracer    trace.Tracer
	sdk       tracing.Provider // for the SDK clients; zero: no spans
	requests  metric.Int64Counter
	failures  metric.Int64Counter
	loadTime  metric.Float64Histogram
	pushes    metric.Int64Counter
	failovers metric.Int64Counter
	// snapshotServed counts values a first Load served from the snapshot.
	snapshotServed metric.Int64Counter
	meter          metric.Meter
}

func newTelemetry(o options) (*telemetry, error) {
	mp, tp := o.meterProvider, o.tracerProvider
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	t := &telemetry{tracer: tracenoop.NewTracerProvider().Tracer(instrumentation)}
	if tp != nil {
		t.tracer = tp.Tracer(instrumentation)
		t.sdk = azotel.NewTracingProvider(tp, nil)
	}
	m := mp.Meter(instrumentation)
	t.meter = m
	var err error
	if t.requests, err = m.Int64Counter("viperkv.vault.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests to Key Vault, by vault, operation, status class and whether the vault throttled them.")); err != nil {
		return nil, err
	}
	if t.failures, err = m.Int64Counter("viperkv.refresh.failures", metric.WithUnit("{failure}"),
		metric.WithDescription("Fetches of a secret that failed (Load, refreshes, pushes), by vault and status.")); err != nil {
		return nil, err
	}
	if t.loadTime, err = m.Float64Histogram("viperkv.load.duration", metric.WithUnit("s"),
		metric.WithDescription("How long Load took."),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)); err != nil {
		return nil, err
	}
	if t.failovers, err = m.Int64Counter("viperkv.vault.failovers", metric.WithUnit("{fetch}"),
		metric.WithDescription("Fetches a failover vault served because the primary could not answer, by primary and failover vault.")); err != nil {
		return nil, err
	}
	if t.snapshotServed, err = m.Int64Counter("viperkv.snapshot.served", metric.WithUnit("{secret}"),
		metric.WithDescription("Secret values a Load served from the snapshot because no vault answered, by vault.")); err != nil {
		return nil, err
	}
	if t.pushes, err = m.Int64Counter("viperkv.push.deliveries", metric.WithUnit("{delivery}"),
		metric.WithDescription("Event Grid requests the push handler answered, by outcome.")); err != nil {
		return nil, err
	}
	return t, nil
}

// Attribute keys. Values are vault hosts, secret names, statuses and fixed words: never a
// secret value, a version or an event id.
const (
	attrVault       = attribute.Key("viperkv.vault")
	attrSecret      = attribute.Key("viperkv.secret")
	attrStatus      = attribute.Key("viperkv.status")
	attrOperation   = attribute.Key("viperkv.operation")
	attrStatusClass = attribute.Key("http.response.status_class")
	attrThrottled   = attribute.Key("viperkv.throttled")
	attrSource      = attribute.Key("viperkv.source")
	attrOutcome     = attribute.Key("viperkv.outcome")
	attrServedBy    = attribute.Key("viperkv.served_by")
)

// observeGauges registers the observable gauges, read from what update last published.
// The callback holds the provider weakly, and its registration ends when the provider is
// closed or collected: a meter provider outlives the providers it observes (the remote
// provider makes one per document), and must not pin them and the secrets they hold.
func (p *Provider) observeGauges() error {
	m := p.tel.meter
	staleness, err := m.Float64ObservableGauge("viperkv.secret.staleness", metric.WithUnit("s"),
		metric.WithDescription("Seconds since the value held for a secret was last confirmed current (fetched, or shown unchanged by a list)."))
	if err != nil {
		return err
	}
	refs, err := m.Int64ObservableGauge("viperkv.references", metric.WithUnit("{reference}"),
		metric.WithDescription("References of the configuration, by status."))
	if err != nil {
		return err
	}
	window, err := m.Int64ObservableGauge("viperkv.limiter.window", metric.WithUnit("{request}"),
		metric.WithDescription("Requests the provider lets be in flight to a vault; it narrows when the vault throttles."))
	if err != nil {
		return err
	}
	wp := weak.Make(p)
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		p := wp.Value()
		if p == nil {
			return nil
		}
		now := time.Now()
		if h := p.health.Load(); h != nil {
			for r, f := range h.refs {
				if r.Version == "" && !f.confirmed.IsZero() { // a pinned version never goes stale
					o.ObserveFloat64(staleness, now.Sub(f.confirmed).Seconds(),
						metric.WithAttributes(attrVault.String(r.Vault), attrSecret.String(r.Name)))
				}
			}
		}
		if cur := p.cur.Load(); cur != nil {
			counts := map[Status]int64{}
			for _, st := range cur.status {
				counts[st.Status]++
			}
			for s, n := range counts {
				o.ObserveInt64(refs, n, metric.WithAttributes(attrStatus.String(string(s))))
			}
		}
		for vault, w := range p.reader.Windows() {
			o.ObserveInt64(window, int64(w), metric.WithAttributes(attrVault.String(vault)))
		}
		return nil
	}, staleness, refs, window)
	if err != nil {
		return err
	}
	var once sync.Once
	unregister := func() { once.Do(func() { _ = reg.Unregister() }) }
	p.unobserve = unregister
	runtime.AddCleanup(p, func(f func()) { f() }, unregister)
	return nil
}

// countRequest counts one request to a vault: its operation, its status code (0: no
// answer) and whether the vault throttled it.
func (t *telemetry) countRequest(ctx context.Context, vault, op string, status int) {
	class := "error"
	if status != 0 {
		class = fmt.Sprintf("%dxx", status/100)
	}
	t.requests.Add(ctx, 1, metric.WithAttributes(attrVault.String(vault), attrOperation.String(op),
		attrStatusClass.String(class), attrThrottled.Bool(status == http.StatusTooManyRequests)))
}

// span starts a span for one of the provider's operations.
func (t *telemetry) span(ctx context.Context, name string, src Source) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, name, trace.WithAttributes(attrSource.String(string(src))))
}

// endSpan ends span with what the configuration's references say.
func endSpan(span trace.Span, snap *snapshot, err error) {
	if snap != nil {
		failed := failures(snap.status)
		span.SetAttributes(attribute.Int("viperkv.references", len(snap.status)), attribute.Int("viperkv.failed", len(failed)))
		if len(failed) > 0 {
			span.SetStatus(codes.Error, fmt.Sprintf("%d reference(s) not resolved", len(failed)))
		}
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error()) // errors name keys, vaults and statuses, never values
	}
	span.End()
}
