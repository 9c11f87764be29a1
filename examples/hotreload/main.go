// Command hotreload is a small HTTP service whose upstream API key lives in Key Vault and
// rotates while it runs. Each request reads the current key through the provider; change
// events are logged. It runs on the built-in emulator, which also plays the rotating
// operator:
//
//	go run ./examples/hotreload                       # serve on 127.0.0.1:8080, rotate every 10 s
//	curl http://127.0.0.1:8080/                       # which key version is in use
//	go run ./examples/hotreload -rotations 3 -every 1s # rotate 3 times, check, exit
//	curl http://127.0.0.1:8080/metrics                # the provider's metrics, for Prometheus
//	curl http://127.0.0.1:8080/healthz                # readiness: 200, or 503 naming failing keys
//
// The response shows the key's version and a fingerprint, never the key.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/viper"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

const config = `
upstream:
  url: https://api.example.com
  api_key: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/upstream-api-key/)"
`

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	every := flag.Duration("every", 10*time.Second, "rotate the key in the emulator this often")
	rotations := flag.Int("rotations", 0, "rotate this many times, check every one was picked up, and exit (0: run until interrupted)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	if err := run(ctx, log, *addr, *every, *rotations); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("hotreload failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, addr string, every time.Duration, rotations int) error {
	// The emulator stands in for Azure; on App Service, AKS or a VM these lines go away.
	srv, err := kvtest.Start()
	if err != nil {
		return err
	}
	defer srv.Close()
	for k, v := range srv.Env() {
		os.Setenv(k, v)
	}
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("upstream-api-key", newKey())

	// The service: load, watch, read per request.
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(config)); err != nil {
		return err
	}
	// Metrics through OpenTelemetry, exported for Prometheus on /metrics.
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	p, err := viperkv.New(v, viperkv.WithTransport(srv.Client()), viperkv.WithLogger(log),
		viperkv.WithRefreshInterval(every/4), viperkv.WithMeterProvider(mp))
	if err != nil {
		return err
	}
	if err := p.Load(ctx); err != nil {
		return err
	}
	changes := make(chan viperkv.Event, 16)
	p.OnChange(func(e viperkv.Event) {
		// Event.Previous holds the old configuration: a pool would drain connections made
		// with the old key here, while new requests already use the new one.
		log.Info("configuration changed", "event", e.String(),
			"old_fingerprint", fingerprint(e.Previous.GetString("upstream.api_key")),
			"new_fingerprint", fingerprint(e.Current.GetString("upstream.api_key")))
		if e.Kind == viperkv.EventChanged {
			select {
			case changes <- e:
			default:
			}
		}
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan error, 1)
	go func() { watched <- p.Watch(ctx) }()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		key := p.GetString("upstream.api_key") // the current key, on every request
		fmt.Fprintf(w, "upstream %s with key version %s (fingerprint %s)\n",
			p.GetString("upstream.url"), version(p, "upstream.api_key"), fingerprint(key))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.Handle("/healthz", p.HealthHandler(viperkv.HealthMaxFailing(10*time.Minute)))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	log.Info("serving", "url", "http://"+ln.Addr().String()+"/", "rotate_every", every)

	// The operator: rotate the key now and then.
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for i := 1; rotations == 0 || i <= rotations; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		newVersion := kv.SetSecret("upstream-api-key", newKey())
		log.Info("operator rotated the key", "version", newVersion)
		if rotations == 0 {
			continue
		}
		select {
		case e := <-changes:
			if e.NewVersion != newVersion {
				return fmt.Errorf("event for version %s, want %s", e.NewVersion, newVersion)
			}
		case <-time.After(3 * every):
			return fmt.Errorf("rotation %d was not picked up", i)
		}
		body, err := get("http://" + ln.Addr().String() + "/")
		if err != nil {
			return err
		}
		if !strings.Contains(body, newVersion) {
			return fmt.Errorf("request after rotation %d did not use the new key: %s", i, body)
		}
		fmt.Print(body)
	}
	if err := scrape(ln.Addr().String(), p); err != nil {
		return err
	}
	cancel()
	<-watched
	fmt.Printf("hotreload: ok: %d rotations picked up without a restart\n", rotations)
	return nil
}

// scrape reads /healthz and /metrics as a probe and Prometheus would, prints the
// provider's lines and checks that the key appears in neither.
func scrape(addr string, p *viperkv.Provider) error {
	health, err := get("http://" + addr + "/healthz")
	if err != nil {
		return err
	}
	fmt.Print("GET /healthz: ", health)
	metrics, err := get("http://" + addr + "/metrics")
	if err != nil {
		return err
	}
	fmt.Println("GET /metrics (the provider's series):")
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "viperkv_") {
			fmt.Println("  " + line)
		}
	}
	key := p.GetString("upstream.api_key")
	switch {
	case !strings.Contains(health, `"status":"ok"`):
		return fmt.Errorf("/healthz is not ok: %s", health)
	case !strings.Contains(metrics, "viperkv_vault_requests_total"), !strings.Contains(metrics, "viperkv_secret_staleness_seconds"):
		return errors.New("/metrics lacks the provider's series")
	case strings.Contains(metrics, key), strings.Contains(health, key):
		return errors.New("the key appears in /metrics or /healthz")
	}
	return nil
}

func version(p *viperkv.Provider, key string) string {
	for _, st := range p.Status() {
		if st.Key == key {
			return st.Version
		}
	}
	return ""
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func newKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "key-" + hex.EncodeToString(b)
}

// fingerprint identifies a key in logs without revealing it.
func fingerprint(key string) string {
	if key == "" {
		return "-"
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:4])
}
