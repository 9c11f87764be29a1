package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// params shape a run.
type params struct {
	workers   int           // goroutines querying back to back
	rotations int           // rotations during the measured phase
	baseline  time.Duration // load without rotations, half before and half after them
	interval  time.Duration // the provider's refresh interval
	grace     time.Duration // the rotator's grace period
	drain     time.Duration // how long the rotator lets the old role's sessions end
	healthz   string        // if set, serve the service's status there

	// skipLatencyTarget leaves p99 <= 2x baseline unchecked: the race detector makes the Go
	// side (SCRAM's PBKDF2 above all) several times slower, so it measures the detector.
	skipLatencyTarget bool
}

// harness is everything a run needs: a private PostgreSQL cluster, the Key Vault
// emulator, the rotator (its own identity, allowed to set secrets) and the service (the
// app's identity, allowed to read them).
type harness struct {
	cluster *cluster
	srv     *kvtest.Server
	kv      *kvtest.Vault
	admin   *pgxpool.Pool
	rot     *rotator
	svc     *service
	first   string // the first secret version
}

// setup starts everything; close stops it. It sets the managed-identity environment
// variables of this process, as App Service sets them for an app.
func setup(ctx context.Context, log *slog.Logger, prm params) (_ *harness, err error) {
	h := &harness{}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	if h.cluster, err = startCluster(ctx); err != nil {
		return nil, err
	}
	log.Info("postgres: private cluster started", "version", h.cluster.version, "port", h.cluster.port, "dir", h.cluster.dir,
		"runs_as", cmp.Or(h.cluster.user, "this process's user"))
	if err = prepareDatabase(ctx, h.cluster); err != nil {
		return nil, err
	}
	if h.admin, err = pgxpool.New(ctx, h.cluster.adminConnString(database)); err != nil {
		return nil, err
	}

	// The emulator stands in for Azure: Entra ID, the managed identity endpoint, Key Vault.
	if h.srv, err = kvtest.Start(); err != nil {
		return nil, err
	}
	for k, v := range h.srv.Env() {
		os.Setenv(k, v)
	}
	h.kv = h.srv.AddVault("appvault")
	h.kv.Grant(h.srv.SystemIdentity(), kvtest.RoleSecretsUser) // the service reads
	rotatorID := h.srv.AddUserIdentity("pg-rotator")
	h.kv.Grant(rotatorID, kvtest.RoleSecretsOfficer) // the rotator writes

	// The rotator talks to Key Vault with the real SDK and its own managed identity.
	transport := azcore.ClientOptions{Transport: h.srv.Client()}
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: transport, ID: azidentity.ClientID(rotatorID.ClientID),
	})
	if err != nil {
		return nil, err
	}
	secrets, err := azsecrets.NewClient("https://appvault.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: transport})
	if err != nil {
		return nil, err
	}
	h.rot = &rotator{
		admin: h.admin, secrets: secrets, secret: "pg-conn",
		host:  fmt.Sprintf("127.0.0.1:%d", h.cluster.port),
		grace: prm.grace, drain: prm.drain, log: log,
		setAt: map[string]time.Time{},
	}
	if h.first, err = h.rot.bootstrap(ctx); err != nil {
		return nil, err
	}

	h.svc, err = startService(ctx, log, viperkv.WithTransport(h.srv.Client()),
		viperkv.WithRefreshInterval(prm.interval), viperkv.WithRetryBackoff(prm.interval, 10*prm.interval))
	if err != nil {
		return nil, err
	}
	return h, nil
}

func (h *harness) close() {
	if h.svc != nil {
		h.svc.shutdown()
	}
	if h.admin != nil {
		h.admin.Close()
	}
	if h.srv != nil {
		h.srv.Close()
	}
	if h.cluster != nil {
		_ = h.cluster.stop()
	}
}

// Phases of a run; queries are counted in the phase they started in.
const (
	phaseWarmup = iota
	phaseBaseline
	phaseRotating
	phaseDone
	nPhases = phaseDone
)

// result is what a run measured.
type result struct {
	rotations          int
	queries, failed    [nPhases]int64
	p50, p99, worst    [nPhases]time.Duration
	rotatingFor        time.Duration
	swaps, drained     int64
	terminated         int64
	retired            int      // sessions open with a retired credential after the run
	errors             []string // the first few query errors
	serving, lastError string
}

// load runs workers that query back to back and records each query's latency, or its
// failure, in the phase it started in.
type load struct {
	phase   atomic.Int32
	samples []loadSample
	stop    context.CancelFunc
	wg      sync.WaitGroup
	done    bool

	errMu  sync.Mutex
	errors []string // the first few query errors
}

type loadSample struct {
	lat    [nPhases][]time.Duration
	failed [nPhases]int64
}

func startLoad(ctx context.Context, svc *service, workers int) *load {
	l := &load{samples: make([]loadSample, workers)}
	wctx, stop := context.WithCancel(ctx)
	l.stop = stop
	for w := range workers {
		l.wg.Go(func() {
			s := &l.samples[w]
			for wctx.Err() == nil {
				ph := l.phase.Load()
				if ph == phaseDone {
					return
				}
				qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				start := time.Now()
				_, err := svc.widget(qctx, 1+rand.IntN(1000))
				d := time.Since(start)
				cancel()
				if err != nil {
					s.failed[ph]++
					l.errMu.Lock()
					if len(l.errors) < 5 {
						l.errors = append(l.errors, err.Error())
					}
					l.errMu.Unlock()
					continue
				}
				s.lat[ph] = append(s.lat[ph], d)
			}
		})
	}
	return l
}

// finish stops the workers and adds up what they measured.
func (l *load) finish(res *result) {
	if l.done {
		return
	}
	l.done = true
	l.phase.Store(phaseDone)
	l.stop()
	l.wg.Wait()
	for ph := range nPhases {
		var all []time.Duration
		for _, s := range l.samples {
			all = append(all, s.lat[ph]...)
			res.failed[ph] += s.failed[ph]
		}
		res.queries[ph] = int64(len(all)) + res.failed[ph]
		res.p50[ph], res.p99[ph], res.worst[ph] = percentile(all, 0.50), percentile(all, 0.99), percentile(all, 1)
	}
	res.errors = l.errors
}

// loadRun queries with prm.workers goroutines through a baseline, the rotations, and a
// baseline again, then checks what is left open.
func (h *harness) loadRun(ctx context.Context, prm params) (res result, err error) {
	l := startLoad(ctx, h.svc, prm.workers)
	defer func() {
		if err != nil {
			l.finish(&res)
		}
	}()
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(300 * time.Millisecond); err != nil { // warm-up, not measured
		return res, err
	}
	l.phase.Store(phaseBaseline)
	if err := sleep(prm.baseline / 2); err != nil {
		return res, err
	}
	l.phase.Store(phaseRotating)
	start := time.Now()
	for range prm.rotations {
		rot, err := h.rot.rotate(ctx)
		if err != nil {
			return res, fmt.Errorf("rotation %d: %w", res.rotations+1, err)
		}
		res.rotations++
		res.terminated += int64(rot.terminated)
	}
	res.rotatingFor = time.Since(start)
	l.phase.Store(phaseBaseline)
	if err := sleep(prm.baseline - prm.baseline/2); err != nil {
		return res, err
	}
	l.finish(&res)

	hl := h.svc.health()
	res.swaps, res.drained = hl.Swaps, hl.Drained
	res.serving, res.lastError = hl.User, hl.Error
	res.retired, err = h.rot.retiredSessions(ctx)
	return res, err
}

// percentile returns the q-quantile of ds (nearest rank), sorting ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*q+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// report prints the run; its last line is the summary line.
func (res result) report(out io.Writer, prm params) {
	fmt.Fprintf(out, "pgrotation: baseline: %d queries over %s with %d workers, p50 %s ms, p99 %s ms, max %s ms, failed %d\n",
		res.queries[phaseBaseline], prm.baseline, prm.workers, ms(res.p50[phaseBaseline]), ms(res.p99[phaseBaseline]), ms(res.worst[phaseBaseline]),
		res.failed[phaseBaseline])
	fmt.Fprintf(out, "pgrotation: rotating: %d rotations in %s, %d queries, p50 %s ms, p99 %s ms, max %s ms, failed %d; pools swapped %d, drained %d, old sessions terminated %d\n",
		res.rotations, res.rotatingFor.Round(time.Millisecond), res.queries[phaseRotating], ms(res.p50[phaseRotating]), ms(res.p99[phaseRotating]),
		ms(res.worst[phaseRotating]), res.failed[phaseRotating], res.swaps, res.drained, res.terminated)
	fmt.Fprintf(out, "pgrotation: after the run: serving as %s; sessions open with a retired credential: %d\n", res.serving, res.retired)
	for _, e := range res.errors {
		fmt.Fprintf(out, "pgrotation: query error: %s\n", e)
	}
	fmt.Fprintf(out, "pgrotation: rotations=%d queries=%d failed=%d p99_ms=%s baseline_p99_ms=%s\n",
		res.rotations, res.queries[phaseBaseline]+res.queries[phaseRotating], res.totalFailed(),
		ms(res.p99[phaseRotating]), ms(res.p99[phaseBaseline]))
}

func (res result) totalFailed() int64 {
	var n int64
	for _, f := range res.failed {
		n += f
	}
	return n
}

// check compares a run with the targets.
func (res result) check(prm params) error {
	var problems []string
	if res.rotations != prm.rotations {
		problems = append(problems, fmt.Sprintf("%d of %d rotations", res.rotations, prm.rotations))
	}
	if res.totalFailed() != 0 {
		problems = append(problems, fmt.Sprintf("%d failed queries", res.totalFailed()))
	}
	if res.p99[phaseRotating] > 2*res.p99[phaseBaseline] && !prm.skipLatencyTarget {
		problems = append(problems, fmt.Sprintf("p99 during rotations %s ms > 2x baseline %s ms", ms(res.p99[phaseRotating]), ms(res.p99[phaseBaseline])))
	}
	if res.retired != 0 {
		problems = append(problems, fmt.Sprintf("%d sessions still open with a retired credential", res.retired))
	}
	if res.swaps != int64(prm.rotations) || res.drained != res.swaps {
		problems = append(problems, fmt.Sprintf("the service swapped pools %d times and drained %d old ones for %d rotations",
			res.swaps, res.drained, prm.rotations))
	}
	if res.lastError != "" {
		problems = append(problems, "the service reports: "+res.lastError)
	}
	if len(problems) > 0 {
		return fmt.Errorf("targets missed: %s", strings.Join(problems, "; "))
	}
	return nil
}
