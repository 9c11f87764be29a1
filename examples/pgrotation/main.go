// Command pgrotation rotates a real PostgreSQL credential under load, with zero failed
// queries and no restart.
//
//	go run ./examples/pgrotation
//
// It starts a private PostgreSQL cluster (initdb and pg_ctl in a temporary directory; the
// server programs must be installed) and the Key Vault emulator. A service keeps a pgx
// pool whose connection string is the reference
// @KeyVault(SecretUri=https://appvault.vault.azure.net/secrets/pg-conn/), resolved through
// its managed identity; resource.Resource rebuilds the pool when a new version appears,
// moves traffic to it and drains the old one. A rotator, with an identity of its own,
// rotates the credential with two login roles (app_blue, app_green) in one group role. Eight
// workers query continuously: first without rotations (the baseline), then during twenty
// rotations, then without again. The last line is
//
//	pgrotation: rotations=<n> queries=<n> failed=<n> p99_ms=<n> baseline_p99_ms=<n>
//
// and the program exits with status 1 if a target is missed: a failed query, a p99 during
// rotations above twice the baseline's, or a session left open with a retired credential.
// No password or connection string is ever printed or logged.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"
)

func main() {
	prm := params{}
	flag.IntVar(&prm.workers, "workers", 8, "goroutines querying continuously")
	flag.IntVar(&prm.rotations, "rotations", 20, "rotations during the measured phase")
	flag.DurationVar(&prm.baseline, "baseline", 4*time.Second, "load without rotations (half before, half after them)")
	flag.DurationVar(&prm.interval, "interval", 150*time.Millisecond, "the service's Key Vault refresh interval")
	flag.DurationVar(&prm.grace, "grace", 500*time.Millisecond, "rotator: time from publishing a version to invalidating the old role")
	flag.DurationVar(&prm.drain, "drain", 5*time.Second, "rotator: time the old role's sessions get to end before they are terminated")
	flag.StringVar(&prm.healthz, "healthz", "", "serve the service's status at http://ADDR/healthz during the run (e.g. 127.0.0.1:8080)")
	verbose := flag.Bool("v", false, "log every rotation, swap and drain to stderr")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(ctx, os.Stdout, log, prm, nil); err != nil {
		fmt.Fprintln(os.Stderr, "pgrotation: FAILED:", err)
		os.Exit(1)
	}
}

// run sets everything up, measures, prints the report and checks the targets. after, if
// not nil, inspects the harness before it is taken down.
func run(ctx context.Context, out io.Writer, log *slog.Logger, prm params, after func(*harness) error) error {
	h, err := setup(ctx, log, prm)
	if err != nil {
		return err
	}
	defer h.close()
	if prm.healthz != "" {
		ln, err := net.Listen("tcp", prm.healthz)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /healthz", h.svc)
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		defer hs.Close()
		fmt.Fprintf(out, "pgrotation: status at http://%s/healthz\n", ln.Addr())
	}
	fmt.Fprintf(out, "pgrotation: PostgreSQL %s on 127.0.0.1:%d, serving as %s (secret version %s); refresh every %s, grace %s\n",
		h.cluster.version, h.cluster.port, h.svc.health().User, h.first, prm.interval, prm.grace)
	res, err := h.loadRun(ctx, prm)
	if err != nil {
		return err
	}
	res.report(out, prm)
	if after != nil {
		if err := after(h); err != nil {
			return err
		}
	}
	return res.check(prm)
}
