package viperkv_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/certtest"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// keyLines are the base64 lines of a private key's PEM and a stretch of the PKCS#12 that
// holds it: what any leak of the key would show.
func keyLines(c *certtest.Issued) []string {
	var out []string
	for _, l := range strings.Split(c.KeyPEM(), "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	p := c.PKCS12()
	return append(out, p[len(p)/2:len(p)/2+48])
}

// TestCertificateKeyMaterialNowhere: the private keys of a served certificate, of its
// renewal, and of a refused version (another certificate's key) show in no log line,
// error, event, status, metric, span or health answer, through a load, a renewal, a
// refusal and a near-expiry warning, while the events and statuses do describe the
// certificates (subject, serial).
func TestCertificateKeyMaterialNowhere(t *testing.T) {
	srv, kv := newVault(t, "myvault")
	root := certtest.New(nil, certtest.Options{CommonName: "sentinel root", IsCA: true, EC: true})
	first := certtest.New(root, certtest.Options{CommonName: "api.example", NotAfter: time.Now().Add(48 * time.Hour)})
	renewed := certtest.New(root, certtest.Options{CommonName: "api.example", NotAfter: time.Now().Add(24 * time.Hour)})
	other := certtest.New(root, certtest.Options{CommonName: "other.example", EC: true})
	mismatch := &certtest.Issued{Chain: renewed.Chain, Key: other.Key}
	pkcs12 := kvtest.WithContentType(certparse.ContentTypePKCS12)
	kv.SetSecret("api-tls", first.PKCS12(), pkcs12)

	var logs logtest.Buffer // a buffer safe for the provider's goroutines
	m := metrics{reader: sdkmetric.NewManualReader()}
	spans := tracetest.NewInMemoryExporter()
	p, err := viperkv.New(yamlViper(t, "tls: \"@KeyVault(SecretUri=https://myvault.vault.azure.net/certificates/api-tls/)\"\n"),
		viperkv.WithEmulator(srv), viperkv.WithoutFileWatch(),
		viperkv.WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		viperkv.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(m.reader))),
		viperkv.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))),
		viperkv.WithExpiryWarning(7*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var events strings.Builder
	var evMu sync.Mutex
	defer p.OnChange(func(e viperkv.Event) {
		evMu.Lock()
		defer evMu.Unlock()
		fmt.Fprintf(&events, "%v %+v %v %#v\n", e, e.Certificate, e.Err, e.Err)
	})()
	ctx := context.Background()
	var errs []string
	collect := func(err error) {
		if err != nil {
			errs = append(errs, fmt.Sprintf("%v %#v", err, err))
		}
	}
	collect(p.Load(ctx))
	kv.SetSecret("api-tls", mismatch.PEM(), kvtest.WithContentType(certparse.ContentTypePEM))
	collect(p.Refresh(ctx))
	if st := statusOf(t, p, "tls"); st.Status != viperkv.StatusCertificateInvalid || st.Certificate == nil ||
		st.Certificate.Serial != first.Leaf().SerialNumber.Text(16) {
		t.Errorf("after the refusal: %s %q, certificate %v; want CertificateInvalid keeping the first", st.Status, st.Reason, st.Certificate)
	}
	kv.SetSecret("api-tls", renewed.PKCS12(), pkcs12)
	collect(p.Refresh(ctx))
	if st := statusOf(t, p, "tls"); st.Status != viperkv.StatusResolved || st.Certificate == nil ||
		st.Certificate.Serial != renewed.Leaf().SerialNumber.Text(16) {
		t.Fatalf("after the renewal: %s %q, certificate %v", st.Status, st.Reason, st.Certificate)
	}
	// Watch warns of the renewal's expiry (a day away, within the week).
	wctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); _ = p.Watch(wctx) }()
	nearExpiry := func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		return strings.Contains(events.String(), "NearExpiry")
	}
	for deadline := time.Now().Add(20 * time.Second); !nearExpiry() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-watched
	if !nearExpiry() {
		t.Error("no NearExpiry event for a certificate expiring within the warning window")
	}

	health := httptest.NewServer(p.HealthHandler())
	defer health.Close()
	resp, err := http.Get(health.URL + "?verbose=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, metricText := m.collect(t)
	var spanText strings.Builder
	for _, s := range spans.GetSpans() {
		fmt.Fprintf(&spanText, "%s %v %v %v\n", s.Name, s.Attributes, s.Events, s.Status)
	}
	evMu.Lock()
	evText := events.String()
	evMu.Unlock()
	places := map[string]string{
		"logs":    logs.String(),
		"errors":  strings.Join(errs, "\n"),
		"events":  evText,
		"status":  fmt.Sprintf("%+v", p.Status()),
		"masked":  fmt.Sprintf("%v", p.MaskedSettings()),
		"metrics": metricText,
		"spans":   spanText.String(),
		"health":  string(body),
	}
	// The check below proves something only if these places say something.
	for where, want := range map[string]string{"logs": "CertificateInvalid", "events": "serial " + renewed.Leaf().SerialNumber.Text(16),
		"errors": "private key does not match", "spans": "api-tls", "metrics": "viperkv"} {
		if !strings.Contains(places[where], want) {
			t.Errorf("the %s do not say %q:\n%s", where, want, places[where])
		}
	}
	// The value itself holds the key: the probe finds what it looks for.
	if lines := keyLines(renewed); !strings.Contains(p.GetString("tls"), lines[len(lines)-1]) {
		t.Fatal("the probe does not find the renewal's PKCS#12 in its own value")
	}
	for where, text := range places {
		for _, c := range []*certtest.Issued{first, renewed, other} {
			for _, line := range keyLines(c) {
				if strings.Contains(text, line) {
					t.Errorf("key material of %s shows in the %s", c.Leaf().Subject, where)
					break
				}
			}
		}
	}
}
