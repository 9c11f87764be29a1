package viperkv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// metrics collects what the provider recorded, as a map from instrument name to data
// points (attributes rendered "k=v,k=v").
type metrics struct {
	reader *sdkmetric.ManualReader
}

type point struct {
	attrs string
	value float64
	count uint64 // histograms
}

func (m metrics) collect(t *testing.T) (map[string][]point, string) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string][]point{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out[mt.Name] = append(out[mt.Name], point{attrs: attrString(dp.Attributes.ToSlice()), value: float64(dp.Value)})
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					out[mt.Name] = append(out[mt.Name], point{attrs: attrString(dp.Attributes.ToSlice()), value: float64(dp.Value)})
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					out[mt.Name] = append(out[mt.Name], point{attrs: attrString(dp.Attributes.ToSlice()), value: dp.Value})
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out[mt.Name] = append(out[mt.Name], point{attrs: attrString(dp.Attributes.ToSlice()), value: dp.Sum, count: dp.Count})
				}
			}
		}
	}
	return out, fmt.Sprintf("%+v", rm)
}

func attrString(kvs []attribute.KeyValue) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = string(kv.Key) + "=" + kv.Value.String()
	}
	return strings.Join(parts, ",")
}

// sum adds the values of the points whose attributes contain every one of want.
func sum(points []point, want ...string) float64 {
	var n float64
next:
	for _, p := range points {
		for _, w := range want {
			if !strings.Contains(p.attrs, w) {
				continue next
			}
		}
		n += p.value
	}
	return n
}

// TestTelemetry runs a provider through a rotation, a failing reference and a throttled
// vault, reading its metrics with the OTel SDK's ManualReader, its spans with the
// in-memory exporter and its readiness from the health handler. A sentinel value appears
// in none of them.
func TestTelemetry(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	sentinel := "sentinel-" + fmt.Sprint(time.Now().UnixNano())
	kv.SetSecret("db", sentinel+"-v1")
	kv.SetSecret("api", "api-v1")

	m := metrics{reader: sdkmetric.NewManualReader()}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(m.reader))
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	p, err := viperkv.New(yamlViper(t, "db: \"@KeyVault(VaultName=myvault;SecretName=db)\"\napi: \"@KeyVault(VaultName=myvault;SecretName=api)\"\n"),
		viperkv.WithEmulator(srv), viperkv.WithoutFileWatch(),
		viperkv.WithRefreshInterval(100*time.Millisecond), viperkv.WithRetryBackoff(50*time.Millisecond, 100*time.Millisecond),
		viperkv.WithVersionCheck(viperkv.VersionCheckGet),
		viperkv.WithMeterProvider(mp), viperkv.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	health := httptest.NewServer(p.HealthHandler(viperkv.HealthMaxFailing(time.Second)))
	defer health.Close()
	probe := func() (int, string) {
		resp, err := http.Get(health.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var bodies []string
	if code, body := probe(); code != 503 || !strings.Contains(body, "not loaded") {
		t.Errorf("health before Load: %d %s", code, body)
	}
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, dump := m.collect(t)
	dumps := []string{dump}
	if h := got["viperkv.load.duration"]; len(h) != 1 || h[0].count != 1 {
		t.Errorf("load.duration %v, want one Load", h)
	}
	if n := sum(got["viperkv.vault.requests"], "viperkv.operation=get", "http.response.status_class=2xx", "viperkv.vault=myvault.vault.azure.net"); n < 2 {
		t.Errorf("vault.requests %v: want 2 successful GETs", got["viperkv.vault.requests"])
	}
	if n := sum(got["viperkv.references"], "viperkv.status=Resolved"); n != 2 {
		t.Errorf("references %v, want 2 Resolved", got["viperkv.references"])
	}
	if len(got["viperkv.secret.staleness"]) != 2 || len(got["viperkv.limiter.window"]) != 1 {
		t.Errorf("staleness %v, limiter window %v", got["viperkv.secret.staleness"], got["viperkv.limiter.window"])
	}
	if code, body := probe(); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("health after Load: %d %s", code, body)
	}

	// A rotation, found by Watch: a refresh span with the SDK's spans as children.
	changed := make(chan viperkv.Event, 32)
	p.OnChange(func(e viperkv.Event) { changed <- e })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	v2 := kv.SetSecret("db", sentinel+"-v2")
	waitEvent(t, changed, func(e viperkv.Event) bool { return e.Kind == viperkv.EventChanged && e.NewVersion == v2 })

	// A failing reference: the failure counter rises, its staleness grows, the health
	// handler turns 503 once it has failed for longer than the bound, and 200 again after.
	if err := kv.SetEnabled("api", "", false); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, changed, func(e viperkv.Event) bool { return e.Kind == viperkv.EventError })
	got, dump = m.collect(t)
	dumps = append(dumps, dump)
	if n := sum(got["viperkv.refresh.failures"], "viperkv.status=SecretDisabled"); n < 1 {
		t.Errorf("refresh.failures %v, want a SecretDisabled", got["viperkv.refresh.failures"])
	}
	stale1 := sum(got["viperkv.secret.staleness"], "viperkv.secret=api")
	code, body := probe()
	bodies = append(bodies, body)
	if code != 200 || !strings.Contains(body, `"status":"degraded"`) || !strings.Contains(body, `"key":"api"`) || !strings.Contains(body, "SecretDisabled") {
		t.Errorf("health while failing within the bound: %d %s", code, body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for code != 503 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		code, body = probe()
	}
	bodies = append(bodies, body)
	if code != 503 || !strings.Contains(body, `"makes_unready":true`) {
		t.Errorf("health after the bound: %d %s", code, body)
	}
	got, dump = m.collect(t)
	dumps = append(dumps, dump)
	if stale2 := sum(got["viperkv.secret.staleness"], "viperkv.secret=api"); stale2 <= stale1 {
		t.Errorf("staleness of the failing secret went from %v to %v, want it to grow", stale1, stale2)
	}
	if err := kv.SetEnabled("api", "", true); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, changed, func(e viperkv.Event) bool { return e.Kind == viperkv.EventRecovered })
	if code, body := probe(); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("health after recovery: %d %s", code, body)
	}

	// A throttled vault: 429s counted as throttled, the limiter's window narrows.
	kv.SetThrottle(1, time.Minute)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, dump = m.collect(t)
		if sum(got["viperkv.vault.requests"], "viperkv.throttled=true", "http.response.status_class=4xx") >= 1 || time.Now().After(deadline) {
			break
		}
	}
	dumps = append(dumps, dump)
	if n := sum(got["viperkv.vault.requests"], "viperkv.throttled=true", "http.response.status_class=4xx"); n < 1 {
		t.Errorf("vault.requests %v: want throttled requests", got["viperkv.vault.requests"])
	}
	if w := sum(got["viperkv.limiter.window"]); w >= float64(viperkv.DefaultMaxInflight) {
		t.Errorf("limiter window %v, want it narrowed below %d", w, viperkv.DefaultMaxInflight)
	}
	kv.SetThrottle(kvtest.DefaultThrottleLimit, kvtest.DefaultThrottlePeriod)

	names := map[string]int{}
	children := 0
	refreshIDs := map[string]bool{}
	var spanText strings.Builder
	for _, s := range spans.GetSpans() {
		names[s.Name]++
		if s.Name == "viperkv.refresh" {
			refreshIDs[s.SpanContext.SpanID().String()] = true
		}
		fmt.Fprintf(&spanText, "%s %v %v %v\n", s.Name, s.Attributes, s.Events, s.Status)
	}
	for _, s := range spans.GetSpans() {
		if refreshIDs[s.Parent.SpanID().String()] {
			children++
		}
	}
	if names["viperkv.Load"] != 1 || names["viperkv.refresh"] == 0 || children == 0 {
		t.Errorf("spans %v, %d SDK spans under refresh spans; want a Load span and refresh spans with the SDK's as children", names, children)
	}
	for what, text := range map[string]string{"metrics": strings.Join(dumps, "\n"), "spans": spanText.String(), "health": strings.Join(bodies, "\n")} {
		if strings.Contains(text, sentinel) {
			t.Errorf("the secret value appears in the %s", what)
		}
	}
	var decoded map[string]any
	if err := json.Unmarshal([]byte(bodies[len(bodies)-1]), &decoded); err != nil {
		t.Errorf("health body is not JSON: %v", err)
	}
}

func waitEvent(t *testing.T, ch <-chan viperkv.Event, ok func(viperkv.Event) bool) viperkv.Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-ch:
			if ok(e) {
				return e
			}
		case <-deadline:
			t.Fatal("the expected event did not come within 20 s")
		}
	}
}
