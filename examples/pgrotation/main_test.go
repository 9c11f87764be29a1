package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/viperkv/viperkv/internal/logtest"
)

// requirePostgres skips the test where PostgreSQL is not installed, except in CI
// (CI=true), where it must be: .ci/run installs it.
func requirePostgres(t *testing.T) {
	t.Helper()
	if _, err := findPostgres(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

func testLogger() (*slog.Logger, *logtest.Buffer) {
	buf := &logtest.Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// shortRun is the CI form of the load test: the 8 workers and 20 rotations, with
// a 2 s baseline and short intervals.
var shortRun = params{workers: 8, rotations: 20, baseline: 2 * time.Second,
	interval: 150 * time.Millisecond, grace: 400 * time.Millisecond, drain: 5 * time.Second}

// TestRotationUnderLoad is `go run ./examples/pgrotation` in its CI form: 20 rotations of a
// real PostgreSQL credential while 8 workers query, with zero failed queries, p99 within
// 2x the baseline's, and no session left open with a retired credential.
func TestRotationUnderLoad(t *testing.T) {
	requirePostgres(t)
	log, logs := testLogger()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prm := shortRun
	if raceEnabled {
		// Under the race detector each new connection's SCRAM key derivation (PBKDF2, 4096
		// rounds) takes about 20 ms of CPU instead of 3 ms (measured on a 2-core machine),
		// and 8 new connections per rotation then measure the detector, not the swap. `go run ./examples/pgrotation` (.ci/run) and
		// `go test` without -race check the latency target.
		prm.skipLatencyTarget = true
		t.Log("race detector on: p99 is reported, not checked against 2x the baseline")
	}
	err := run(ctx, &out, log, prm, func(h *harness) error {
		checkNoSecretLeaked(t, h, logs.String(), out.String())
		return nil
	})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("%v\nlogs:\n%s", err, logs.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "pgrotation: rotations=20 ") || !strings.Contains(last, " failed=0 ") {
		t.Fatalf("last line %q", last)
	}
}

// TestWrongPasswordKeepsServingOnTheOldPool publishes a version whose password does not
// work: the service keeps serving on the old pool with no failed query, reports the
// failure on its health surface and in its log, and recovers with the next good version.
func TestWrongPasswordKeepsServingOnTheOldPool(t *testing.T) {
	requirePostgres(t)
	log, logs := testLogger()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prm := shortRun
	h, err := setup(ctx, log, prm)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()

	l := startLoad(ctx, h.svc, prm.workers)
	l.phase.Store(phaseBaseline)
	var res result
	defer l.finish(&res)

	// An operator publishes a connection string for the idle role with a password the
	// database never heard of.
	wrong := h.rot.connString(greenRole, newPassword())
	badVersion, err := h.rot.publish(ctx, greenRole, wrong)
	if err != nil {
		t.Fatal(err)
	}
	hl := waitHealth(t, h, "degraded", "")
	refused := hl
	if hl.User != blueRole || !strings.Contains(hl.Error, badVersion) || !strings.Contains(hl.Error, "28P01") ||
		!strings.Contains(hl.Error, greenRole) {
		t.Fatalf("health %+v: want still serving as %s, and an error naming version %s, role %s and SQLSTATE 28P01", hl, blueRole, badVersion, greenRole)
	}
	rec := httptest.NewRecorder()
	h.svc.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	var served health
	if err := json.Unmarshal(rec.Body.Bytes(), &served); err != nil || served.Status != "degraded" || served.Error == "" {
		t.Fatalf("/healthz = %s (%v)", rec.Body.String(), err)
	}
	if !strings.Contains(logs.String(), "the new credential does not work; still serving on the current pool") {
		t.Fatalf("the failure was not logged:\n%s", logs.String())
	}
	time.Sleep(time.Second) // keep serving on the old pool for a while, retrying the new one

	// The rotator publishes a good version: the service moves to it.
	rot, err := h.rot.rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rot.from != blueRole || rot.to != greenRole || rot.terminated != 0 {
		t.Fatalf("rotation %+v", rot)
	}
	hl = waitHealth(t, h, "ok", greenRole)
	time.Sleep(300 * time.Millisecond)
	l.phase.Store(phaseRotating) // only to check that queries went on after the recovery
	time.Sleep(300 * time.Millisecond)
	l.finish(&res)

	total := res.queries[phaseBaseline] + res.queries[phaseRotating]
	if res.totalFailed() != 0 || res.queries[phaseBaseline] == 0 || res.queries[phaseRotating] == 0 {
		t.Fatalf("%d queries, %d failed (%v); want none failed", total, res.totalFailed(), res.errors)
	}
	if hl.Swaps != 1 || hl.Failures < 2 {
		t.Fatalf("health %+v: want 1 swap, and the wrong version tried more than once", hl)
	}
	if n, err := h.rot.retiredSessions(ctx); err != nil || n != 0 {
		t.Fatalf("%d sessions with a retired credential (%v)", n, err)
	}
	checkNoSecretLeaked(t, h, logs.String(), "")
	t.Logf("%d queries, none failed, while version %s was refused and %s was taken; health while refused: %+v", total, badVersion, rot.version, refused)
}

// waitHealth waits for the service's health to have status (and, if set, user).
func waitHealth(t *testing.T, h *harness, status, user string) health {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		hl := h.svc.health()
		if hl.Status == status && (user == "" || hl.User == user) {
			return hl
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never became %s %s: %+v", status, user, hl)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkNoSecretLeaked uses every password and connection string the secret ever held as
// a sentinel: none may appear in the logs, the output or the server's log.
func checkNoSecretLeaked(t *testing.T, h *harness, logs, out string) {
	t.Helper()
	serverLog, err := h.cluster.serverLog()
	if err != nil {
		t.Fatal(err)
	}
	versions := h.kv.Versions("pg-conn")
	if len(versions) < 2 {
		t.Fatalf("%d versions of pg-conn", len(versions))
	}
	for _, v := range versions {
		conn, _ := h.kv.SecretValue("pg-conn", v)
		cfg, err := pgconn.ParseConfig(conn)
		if err != nil || len(cfg.Password) < 20 {
			t.Fatalf("version %s does not hold a connection string with a password", v)
		}
		for where, text := range map[string]string{"log": logs, "output": out, "server log": string(serverLog)} {
			if strings.Contains(text, cfg.Password) || strings.Contains(text, conn) {
				t.Errorf("the password of version %s appears in the %s", v, where)
			}
		}
	}
}
