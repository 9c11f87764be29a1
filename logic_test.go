package viperkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/viperkv/viperkv/internal/logtest"
)

// The logic of keeping values current (schedule, back-off, merge, expiry, events) tested
// against a fake source under testing/synctest: time is simulated, so an hour of polling
// takes microseconds and every timing assertion is exact.

// checkPollGaps checks that consecutive calls are one refresh interval (+/-10%) apart.
func checkPollGaps(t *testing.T, what string, calls []fakeCall, interval time.Duration) {
	t.Helper()
	var gaps []time.Duration
	for i := 1; i < len(calls); i++ {
		gaps = append(gaps, calls[i].start.Sub(calls[i-1].start))
	}
	for i, g := range gaps {
		if !within(g, frac(interval, 0.9), frac(interval, 1.1)) {
			t.Errorf("%s: poll %d came %v after the previous one, want %v +/-10%% (gaps %v)", what, i+2, g, interval, gaps)
		}
	}
	if len(gaps) > 2 && !slices.ContainsFunc(gaps, func(g time.Duration) bool { return g != gaps[0] }) {
		t.Errorf("%s: every poll %v apart: the interval is not jittered", what, gaps[0])
	}
}

// A rotation is picked up by the next poll, one refresh interval (+/-10% jitter) after the
// last fetch; each cycle fetches each distinct versionless secret once, however many keys
// (or spellings) name it, and never a pinned version.
func TestPollPicksUpRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Minute
		src := newFakeSource()
		v1 := src.set("myvault", "db-conn", "conn-v1")
		src.set("myvault", "api", "api-v1")
		pinned := src.set("myvault", "pinned", "pinned-v1")
		src.set("myvault", "pinned", "pinned-v2")
		p := loadFake(t, src, fmt.Sprintf(`
db:
  conn: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)"
  dsn: "host=db password=@KeyVault(VaultName=myvault;SecretName=DB-Conn)"
  pool: 10
api: "@KeyVault(VaultName=myvault;SecretName=api)"
old: "@KeyVault(VaultName=myvault;SecretName=pinned;SecretVersion=%s)"
`, pinned), WithRefreshInterval(interval), WithVersionCheck(VersionCheckGet)) // counts GETs per cycle
		loaded := time.Now()
		rec := record(p)
		v2 := src.set("myvault", "db-conn", "conn-v2")
		startWatch(t, p)

		time.Sleep(10*interval + interval/2)
		synctest.Wait()
		ev := rec.only(t, EventChanged)
		if n := len(rec.all()); n != 1 {
			t.Errorf("%d events for one rotation, want 1: %v", n, rec.all())
		}
		if d := ev.Time.Sub(loaded); !within(d, frac(interval, 0.9), frac(interval, 1.1)) {
			t.Errorf("rotation picked up %v after the last fetch, want %v +/-10%%", d, interval)
		}
		if ev.Source != SourcePoll || ev.OldVersion != v1 || ev.NewVersion != v2 || ev.Secret.Name != "db-conn" {
			t.Errorf("event = %v, want poll db-conn %s -> %s", ev, v1, v2)
		}
		if !slices.Equal(ev.Keys, []string{"db.conn", "db.dsn"}) {
			t.Errorf("event keys = %v, want [db.conn db.dsn]", ev.Keys)
		}
		if ev.Previous.GetString("db.conn") != "conn-v1" || ev.Current.GetString("db.dsn") != "host=db password=conn-v2" {
			t.Errorf("Previous db.conn = %q, Current db.dsn = %q", ev.Previous.GetString("db.conn"), ev.Current.GetString("db.dsn"))
		}
		if p.GetString("db.conn") != "conn-v2" || p.Viper().GetInt("db.pool") != 10 || p.GetString("old") != "pinned-v1" {
			t.Errorf("after the rotation: %v", p.MaskedSettings())
		}

		// Load fetched each secret once; every cycle since fetched db-conn (two keys, two
		// spellings) and api once each, together; the pinned version was never fetched again.
		conn, api := src.callsOf("myvault", "db-conn"), src.callsOf("myvault", "api")
		checkPollGaps(t, "db-conn", conn, interval)
		if len(conn) < 10 || len(conn) != len(api) {
			t.Errorf("%d fetches of db-conn and %d of api in 10.5 intervals, want one each per cycle", len(conn), len(api))
		}
		for i := range min(len(conn), len(api)) {
			if !conn[i].start.Equal(api[i].start) {
				t.Errorf("cycle %d fetched db-conn at %v and api at %v: not one cycle", i, conn[i].start, api[i].start)
			}
		}
		calls := src.callCount()
		pinnedRef := Reference{Vault: vaultHost("myvault"), Name: "pinned", Version: pinned}
		if calls[pinnedRef] != 1 || src.count("myvault", "pinned") != 1 {
			t.Errorf("calls %v: want the pinned version fetched once (by Load), and no other version", calls)
		}
	})
}

// Load fetches the distinct secrets concurrently, each once, within the fetch timeout: a
// slow secret does not delay the others, one slower than the timeout fails alone.
func TestLoadFetchesConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		var doc strings.Builder
		for i := range 5 {
			name := fmt.Sprintf("s%d", i)
			src.set("myvault", name, "v-"+name)
			src.delay("myvault", name, 10*time.Second)
			fmt.Fprintf(&doc, "a%d: \"@KeyVault(VaultName=myvault;SecretName=%s)\"\nb%d: \"x-@KeyVault(VaultName=myvault;SecretName=%s)\"\n", i, name, i, name)
		}
		src.set("myvault", "slow", "v-slow")
		src.delay("myvault", "slow", 2*time.Minute)
		doc.WriteString("slow: \"@KeyVault(VaultName=myvault;SecretName=slow)\"\n")
		p := newFakeProvider(t, src, YAMLViper(t, doc.String()), WithFetchTimeout(time.Minute))
		start := time.Now()
		err := p.Load(context.Background())
		if took := time.Since(start); took != time.Minute {
			t.Errorf("Load took %v, want the fetch timeout (%v)", took, time.Minute)
		}
		var le *LoadError
		if !errors.As(err, &le) || len(le.Failed) != 1 || le.Failed[0].Key != "slow" || le.Failed[0].Status != StatusFetchTimedOut {
			t.Errorf("Load: %v, want only slow to fail, FetchTimedOut", err)
		}
		for i := range 5 {
			name := fmt.Sprintf("s%d", i)
			if p.GetString(fmt.Sprintf("a%d", i)) != "v-"+name || p.GetString(fmt.Sprintf("b%d", i)) != "x-v-"+name {
				t.Errorf("%s not resolved: %v", name, p.MaskedSettings())
			}
			calls := src.callsOf("myvault", name)
			if len(calls) != 1 {
				t.Errorf("%s fetched %d times for two keys, want once", name, len(calls))
			} else if d := calls[0].end.Sub(start); d != 10*time.Second {
				t.Errorf("%s fetched %v after Load began, want 10s: the fetches do not run at once", name, d)
			}
		}
	})
}

// failureKinds are the ways a refresh fails, as the source reports them.
var failureKinds = []struct {
	name   string
	status Status
	hang   bool // the fetch hangs until its deadline (FetchTimedOut)
	rotate bool // the fault ends with a new version (a re-created secret, a rotation)
}{
	{name: "vault 500", status: StatusOtherReasons, rotate: true},
	{name: "throttled", status: StatusThrottled},
	{name: "vault hangs", status: StatusFetchTimedOut, hang: true, rotate: true},
	{name: "secret disabled", status: StatusSecretDisabled},
	{name: "secret deleted", status: StatusSecretNotFound, rotate: true},
	{name: "access revoked", status: StatusAccessToKeyVaultDenied},
	{name: "no managed identity", status: StatusMSINotEnabled},
	{name: "identity unauthorized", status: StatusUnauthorizedClient, rotate: true},
}

// attempts merges the calls a fetch made without a pause between them (the driver's own
// retries of a throttled request) into one attempt, from the first call's start to the
// last one's end.
func attempts(calls []fakeCall) []fakeCall {
	var out []fakeCall
	for _, c := range calls {
		if n := len(out); n > 0 && c.start.Sub(out[n-1].end) < time.Millisecond {
			out[n-1].end = c.end
			continue
		}
		out = append(out, c)
	}
	return out
}

// A failing refresh keeps the last good value and says why (one Error event), retries with
// capped exponential back-off with equal jitter (retry n waits in [d/2, d], d =
// min(retryMin<<(n-1), retryMax)), leaves other secrets on their schedule, and recovers
// (Recovered, then the new value) once the fault ends.
func TestRefreshFailureKeepsLastGoodValue(t *testing.T) {
	const (
		interval     = time.Hour
		retryMin     = time.Second
		retryMax     = 30 * time.Second
		fetchTimeout = 20 * time.Second
	)
	for _, fk := range failureKinds {
		t.Run(fk.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				src := newFakeSource()
				v1 := src.set("myvault", "conn", "good-v1")
				src.set("myvault", "ok", "ok-v1")
				p := loadFake(t, src, `
db:
  conn: "@KeyVault(VaultName=myvault;SecretName=conn)"
  pool: 10
ok: "@KeyVault(VaultName=myvault;SecretName=ok)"
`, WithRefreshInterval(interval), WithRetryBackoff(retryMin, retryMax), WithFetchTimeout(fetchTimeout))
				loaded := time.Now()
				rec := record(p)
				if fk.hang {
					src.hang("myvault", "conn")
				} else {
					src.fail("myvault", "conn", fk.status, "GET conn: "+string(fk.status))
				}
				startWatch(t, p)
				time.Sleep(frac(interval, 1.1) + 10*time.Minute)
				synctest.Wait()

				errEv := rec.only(t, EventError)
				var re *ReferenceError
				if errEv.Status != fk.status || !errors.As(errEv.Err, &re) || re.Status != fk.status || re.Reason == "" || re.Key != "db.conn" {
					t.Errorf("error event %v (Err %#v), want status %s with a reason, naming db.conn", errEv, errEv.Err, fk.status)
				}
				if errEv.Source != SourcePoll || errEv.OldVersion != v1 || !slices.Equal(errEv.Keys, []string{"db.conn"}) {
					t.Errorf("error event = %v, want source poll, old version %s, keys [db.conn]", errEv, v1)
				}
				if errEv.Current.GetString("db.conn") != "good-v1" {
					t.Error("the error event's Current does not hold the last good value")
				}
				checkKept := func(when string) {
					t.Helper()
					if got := p.GetString("db.conn"); got != "good-v1" || p.Viper().GetInt("db.pool") != 10 || p.GetString("ok") != "ok-v1" {
						t.Errorf("%s: db.conn = %q, settings %v: want the last good value and siblings", when, got, p.MaskedSettings())
					}
					st := StatusOf(t, p, "db.conn")
					if st.Status != fk.status || st.Reason == "" || st.Version != v1 {
						t.Errorf("%s: status = %+v, want %s with a reason, serving version %s", when, st, fk.status, v1)
					}
				}
				checkKept("during the fault")

				tries := attempts(src.callsOf("myvault", "conn"))[1:] // after Load's
				if len(tries) < 10 {
					t.Fatalf("%d attempts in the fault, want at least 10", len(tries))
				}
				if d := tries[0].start.Sub(loaded); !within(d, frac(interval, 0.9), frac(interval, 1.1)) {
					t.Errorf("first attempt %v after Load, want the interval %v +/-10%%", d, interval)
				}
				jittered := false
				for n := 1; n < len(tries); n++ {
					d := retryMax
					if n < 31 { // retryMin<<30 is beyond any cap; further shifts overflow
						d = min(retryMin<<(n-1), retryMax)
					}
					gap := tries[n].start.Sub(tries[n-1].end)
					if !within(gap, d/2, d) {
						t.Errorf("retry %d came %v after failure %d, want within [%v, %v]", n, gap, n, d/2, d)
					}
					jittered = jittered || gap != d
				}
				if !jittered {
					t.Error("every retry waited the full back-off: no jitter")
				}
				if n := src.count("myvault", "ok"); n != 2 {
					t.Errorf("the healthy secret was fetched %d times, want twice (Load and one cycle): retries are per secret", n)
				}

				healed := time.Now()
				src.heal("myvault", "conn")
				want, wantVersion := "good-v1", v1
				if fk.rotate {
					want, wantVersion = "good-v2", src.set("myvault", "conn", "good-v2")
				}
				time.Sleep(retryMax + fetchTimeout)
				synctest.Wait()
				all := rec.all()
				recovered := rec.only(t, EventRecovered)
				if recovered.Status != StatusResolved || recovered.Err != nil || !slices.Equal(recovered.Keys, []string{"db.conn"}) ||
					recovered.Time.Before(healed) {
					t.Errorf("recovered event = %v", recovered)
				}
				wantKinds := []EventKind{EventError, EventRecovered}
				if fk.rotate {
					wantKinds = append(wantKinds, EventChanged)
					ch := rec.only(t, EventChanged)
					if ch.OldVersion != v1 || ch.NewVersion != wantVersion || ch.Previous.GetString("db.conn") != "good-v1" ||
						ch.Current.GetString("db.conn") != want {
						t.Errorf("changed event = %v", ch)
					}
				}
				var kinds []EventKind
				for _, e := range all {
					kinds = append(kinds, e.Kind)
				}
				if !slices.Equal(kinds, wantKinds) {
					t.Errorf("events %v, want kinds %v in that order", all, wantKinds)
				}
				if st := StatusOf(t, p, "db.conn"); p.GetString("db.conn") != want || st.Status != StatusResolved || st.Reason != "" || st.Version != wantVersion {
					t.Errorf("after recovery: db.conn = %q, status %+v; want %q Resolved at %s", p.GetString("db.conn"), st, want, wantVersion)
				}
			})
		})
	}
}

// A version in use that expires keeps serving (nothing is lost), with status
// SecretExpired and one Error event at its expiry; a new version ends it.
func TestExpiredVersionKeepsServing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		exp := time.Now().Add(10 * time.Minute)
		v1 := src.set("myvault", "ttl", "ttl-v1", expiresAt(exp))
		p := loadFake(t, src, "a:\n  ttl: \"@KeyVault(VaultName=myvault;SecretName=ttl)\"\n  n: 1\n",
			WithRefreshInterval(interval), WithRetryBackoff(time.Second, 30*time.Second))
		rec := record(p)
		startWatch(t, p)

		time.Sleep(9 * time.Minute)
		synctest.Wait()
		if evs := rec.all(EventError); len(evs) != 0 || StatusOf(t, p, "a.ttl").Status != StatusResolved {
			t.Errorf("before expiry: error events %v, status %+v", evs, StatusOf(t, p, "a.ttl"))
		}
		before := src.count("myvault", "ttl")
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		// The held version expiring is no fault to retry on the back-off (1 s..30 s here):
		// polling stays on the interval, about 20 fetches in 20 minutes.
		if n := src.count("myvault", "ttl") - before; n > 25 {
			t.Errorf("%d fetches in the 20 minutes around the expiry, want about 20 (the interval), not the retry back-off", n)
		}
		ev := rec.only(t, EventError)
		if !within(ev.Time.Sub(exp), 0, time.Second) {
			t.Errorf("expiry announced at %v, %v after the expiry", ev.Time, ev.Time.Sub(exp))
		}
		var re *ReferenceError
		if ev.Status != StatusSecretExpired || ev.OldVersion != v1 || !ev.Expires.Equal(exp) || !slices.Equal(ev.Keys, []string{"a.ttl"}) ||
			!errors.As(ev.Err, &re) || re.Status != StatusSecretExpired {
			t.Errorf("expired event = %v (expires %v), want SecretExpired of %s expiring %v, keys [a.ttl]", ev, ev.Expires, v1, exp)
		}
		if st := StatusOf(t, p, "a.ttl"); p.GetString("a.ttl") != "ttl-v1" || st.Status != StatusSecretExpired ||
			!strings.Contains(st.Reason, "still serving it") || st.Version != v1 {
			t.Errorf("after expiry: a.ttl = %q, status %+v; want the value kept, SecretExpired", p.GetString("a.ttl"), st)
		}
		if n := src.count("myvault", "ttl"); n < 20 {
			t.Errorf("%d fetches in 29 minutes: polling stopped", n)
		}
		rec.only(t, EventNearExpiry) // within the default warning window from the start

		v2 := src.set("myvault", "ttl", "ttl-v2")
		time.Sleep(interval + interval/10) // the next poll comes within the interval plus its jitter
		synctest.Wait()
		rec.only(t, EventRecovered)
		if ch := rec.only(t, EventChanged); ch.OldVersion != v1 || ch.NewVersion != v2 {
			t.Errorf("changed event = %v", ch)
		}
		if st := StatusOf(t, p, "a.ttl"); p.GetString("a.ttl") != "ttl-v2" || st.Status != StatusResolved || st.Version != v2 {
			t.Errorf("after rotation: a.ttl = %q, status %+v", p.GetString("a.ttl"), st)
		}
	})
}

// A version that expires within the warning window is announced once (not every cycle);
// a new version that also expires soon is announced once more.
func TestNearExpiryOncePerVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		start := time.Now()
		exp := start.Add(time.Hour)
		v1 := src.set("myvault", "soon", "soon-v1", expiresAt(exp))
		src.set("myvault", "later", "later-v1", expiresAt(start.Add(30*24*time.Hour)))
		src.set("myvault", "never", "never-v1")
		p := loadFake(t, src, `
near: "@KeyVault(VaultName=myvault;SecretName=soon)"
far: "@KeyVault(VaultName=myvault;SecretName=later)"
none: "@KeyVault(VaultName=myvault;SecretName=never)"
`, WithRefreshInterval(interval), WithExpiryWarning(2*time.Hour), WithVersionCheck(VersionCheckGet))
		rec := record(p)
		startWatch(t, p)

		time.Sleep(10 * time.Minute)
		synctest.Wait()
		ev := rec.only(t, EventNearExpiry)
		if ev.Secret.Name != "soon" || ev.NewVersion != v1 || !ev.Expires.Equal(exp) || !slices.Equal(ev.Keys, []string{"near"}) ||
			!within(ev.Time.Sub(start), 0, interval) {
			t.Errorf("near-expiry event = %v at %v (expires %v), want soon %s expiring %v for key near, at once", ev, ev.Time, ev.Expires, v1, exp)
		}
		if n := src.count("myvault", "soon"); n < 9 {
			t.Errorf("%d fetches in 10 cycles: too few to show the warning is not repeated", n)
		}
		if p.GetString("near") != "soon-v1" || StatusOf(t, p, "near").Status != StatusResolved {
			t.Errorf("a near-expiry secret must keep resolving: near=%q %+v", p.GetString("near"), StatusOf(t, p, "near"))
		}

		exp2 := time.Now().Add(90 * time.Minute)
		v2 := src.set("myvault", "soon", "soon-v2", expiresAt(exp2))
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		near := rec.all(EventNearExpiry)
		if len(near) != 2 || near[1].NewVersion != v2 || !near[1].Expires.Equal(exp2) {
			t.Errorf("near-expiry events %v, want a second one for %s expiring %v", near, v2, exp2)
		}
	})
}

// A new version whose not-before time is in the future is not served before it, and is
// served from it on: found by polling, or by a poll planned for its nbf after a Refresh
// saw it, with an interval far longer than the wait.
func TestNotBeforeHonoured(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		refresh  bool
	}{
		{"polled", time.Minute, false},
		{"found by Refresh, long interval", 24 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newFakeSource()
				v1 := src.set("myvault", "act", "act-v1")
				p := loadFake(t, src, "act: \"@KeyVault(VaultName=myvault;SecretName=act)\"\nplain: x\n", WithRefreshInterval(tc.interval))
				rec := record(p)
				startWatch(t, p)
				time.Sleep(30 * time.Second)

				nbf := time.Now().Add(5 * time.Minute)
				v2 := src.set("myvault", "act", "act-v2", notBeforeAt(nbf))
				if tc.refresh {
					if err := p.Refresh(context.Background()); err != nil {
						t.Fatalf("Refresh with a not-yet-valid newest version: %v", err)
					}
				}
				time.Sleep(time.Until(nbf) - time.Second)
				synctest.Wait()
				if st := StatusOf(t, p, "act"); p.GetString("act") != "act-v1" || st.Status != StatusResolved || st.Version != v1 || len(rec.all()) != 0 {
					t.Errorf("before nbf: act = %q, status %+v, events %v; want act-v1 served, Resolved, no event", p.GetString("act"), st, rec.all())
				}

				time.Sleep(frac(tc.interval, 1.1) + time.Second)
				synctest.Wait()
				ev := rec.only(t, EventChanged)
				late := ev.Time.Sub(nbf)
				if ev.OldVersion != v1 || ev.NewVersion != v2 || !within(late, 0, frac(min(tc.interval, time.Minute), 1.1)) {
					t.Errorf("changed event = %v, %v after nbf; want %s -> %s from nbf on, at the first poll", ev, late, v1, v2)
				}
				if p.GetString("act") != "act-v2" || p.GetString("plain") != "x" || len(rec.all()) != 1 {
					t.Errorf("after nbf: act = %q, plain = %q, events %v", p.GetString("act"), p.GetString("plain"), rec.all())
				}
			})
		})
	}
}

// A configuration of pinned versions only is never polled, yet its expiry is announced on
// time: the warning at exp - warning, SecretExpired at exp.
func TestPinnedExpiryNoticedWithoutPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		exp := time.Now().Add(3 * time.Hour)
		version := src.set("myvault", "cert", "pinned-value", expiresAt(exp))
		p := loadFake(t, src, fmt.Sprintf("cert: \"@KeyVault(VaultName=myvault;SecretName=cert;SecretVersion=%s)\"\n", version),
			WithRefreshInterval(time.Hour), WithExpiryWarning(time.Hour))
		rec := record(p)
		startWatch(t, p)

		time.Sleep(4 * time.Hour)
		synctest.Wait()
		near := rec.only(t, EventNearExpiry)
		if !within(near.Time.Sub(exp.Add(-time.Hour)), 0, time.Second) || !near.Expires.Equal(exp) || !slices.Equal(near.Keys, []string{"cert"}) {
			t.Errorf("near-expiry event = %v at %v, want key cert at %v", near, near.Time, exp.Add(-time.Hour))
		}
		expired := rec.only(t, EventError)
		if expired.Status != StatusSecretExpired || !within(expired.Time.Sub(exp), 0, time.Second) {
			t.Errorf("expired event = %v at %v, want SecretExpired at %v", expired, expired.Time, exp)
		}
		if st := StatusOf(t, p, "cert"); p.GetString("cert") != "pinned-value" || st.Status != StatusSecretExpired {
			t.Errorf("after expiry: cert = %q, status %+v; want the value kept, SecretExpired", p.GetString("cert"), st)
		}
		if n := src.count("myvault", "cert"); n != 1 {
			t.Errorf("the pinned version was fetched %d times, want once (by Load)", n)
		}
	})
}

// A watcher that never returns and one that panics on every event do not hold up a third:
// it gets every event, in order, as soon as it is published, and refreshing goes on.
func TestWatcherIsolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		versions := []string{src.set("myvault", "rot", "rot-0")}
		var logs logtest.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		p := loadFake(t, src, "rot: \"@KeyVault(VaultName=myvault;SecretName=rot)\"\nplain: x\n",
			WithRefreshInterval(interval), WithLogger(logger))

		release := make(chan struct{})
		var blocked, panics atomic.Int64
		p.OnChange(func(Event) {
			blocked.Add(1)
			<-release
		})
		t.Cleanup(func() { close(release) }) // after Watch stops: cleanups run last-in first-out
		p.OnChange(func(Event) {
			panics.Add(1)
			panic("watcher bug")
		})
		type received struct {
			ev Event
			at time.Time
		}
		var mu sync.Mutex
		var got []received
		p.OnChange(func(e Event) {
			mu.Lock()
			got = append(got, received{e, time.Now()})
			mu.Unlock()
		})
		startWatch(t, p)

		// Rotations found by polling, each delivered at the poll that finds it.
		for i := 1; i <= 4; i++ {
			set := time.Now()
			versions = append(versions, src.set("myvault", "rot", fmt.Sprintf("rot-%d", i)))
			time.Sleep(frac(interval, 1.1))
			synctest.Wait()
			mu.Lock()
			last := got[len(got)-1]
			mu.Unlock()
			if last.ev.NewVersion != versions[i] || last.at.Sub(set) > frac(interval, 1.1) || !last.at.Equal(last.ev.Time) {
				t.Errorf("rotation %d: last event %v received at +%v (published %v)", i, last.ev, last.at.Sub(set), last.ev.Time)
			}
		}
		// A burst of rotations applied by Refresh, faster than any watcher reacts.
		for i := 5; i <= 24; i++ {
			versions = append(versions, src.set("myvault", "rot", fmt.Sprintf("rot-%d", i)))
			if err := p.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if p.GetString("rot") != "rot-24" || p.GetString("plain") != "x" {
			t.Errorf("after the burst: rot = %q, plain = %q", p.GetString("rot"), p.GetString("plain"))
		}
		mu.Lock()
		var seen []string
		for _, r := range got {
			if r.ev.Kind != EventChanged || len(seen) > 0 && r.ev.OldVersion != seen[len(seen)-1] {
				t.Errorf("event %v does not follow version %v", r.ev, seen)
			}
			seen = append(seen, r.ev.NewVersion)
		}
		mu.Unlock()
		if !slices.Equal(seen, versions[1:]) {
			t.Errorf("versions delivered in this order:\n%v\nwant every rotation once, in order:\n%v", seen, versions[1:])
		}
		if n := panics.Load(); n != int64(len(versions)-1) {
			t.Errorf("the panicking watcher was called %d times, want %d (once per event)", n, len(versions)-1)
		}
		if n := blocked.Load(); n != 1 {
			t.Errorf("the blocked watcher was called %d times, want 1 (it never returned)", n)
		}
		if n := strings.Count(logs.String(), "watcher panicked"); n != len(versions)-1 {
			t.Errorf("%d panics logged, want %d", n, len(versions)-1)
		}
	})
}

// Cancelling Watch stops everything it started: the poll loop, a fetch in flight against
// a hanging vault, and (once idle) the watchers' delivery goroutines.
func TestWatchStopsEveryGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		src.set("myvault", "s", "s-1")
		p := loadFake(t, src, "s: \"@KeyVault(VaultName=myvault;SecretName=s)\"\nname: a\n",
			WithRefreshInterval(interval), WithFetchTimeout(time.Hour))
		rec := record(p)
		stop := startWatch(t, p)

		src.set("myvault", "s", "s-2")
		time.Sleep(frac(interval, 1.1))
		synctest.Wait()
		rec.only(t, EventChanged)

		src.hang("myvault", "s")
		for range 200 {
			if src.inFlight() > 0 {
				break
			}
			time.Sleep(time.Second)
		}
		synctest.Wait()
		running := strings.Join(coreGoroutines(), "\n")
		for _, fn := range []string{"(*Provider).pollLoop", "fetchSecrets", "(*Vaults).Get"} {
			if !strings.Contains(running, fn) {
				t.Fatalf("no goroutine in %s before cancel: the check below would prove nothing:\n%s", fn, running)
			}
		}

		cancelled := time.Now()
		stop()
		if d := time.Since(cancelled); d != 0 {
			t.Errorf("Watch returned %v (simulated) after cancel: it waited for a timer, not for its goroutines", d)
		}
		synctest.Wait()
		for _, g := range coreGoroutines() {
			t.Errorf("goroutine left after Watch returned:\n%s", g)
		}
	})
}

// Events, errors, statuses, logs and the masked view never show a secret value, through
// rotations, failures, recovery, a near-expiry warning, file edits, a file that does not
// parse, and a watcher that panics with the value.
func TestEventsCarryNoValues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { eventsCarryNoValues(t) })
}

func eventsCarryNoValues(t *testing.T) {
	const sentinel = "SENTINEL-b6f1c2"
	src := newFakeSource()
	src.set("myvault", "pw", sentinel+"-1")
	src.set("myvault", "other", sentinel+"-other")
	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	doc := "db:\n  pw: \"@KeyVault(VaultName=myvault;SecretName=pw)\"\n  dsn: \"user=app password=@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/pw/) sslmode=require\"\n  pool: 5\n"
	p := loadFake(t, src, doc, WithLogger(logger), WithExpiryWarning(time.Hour))
	rec := record(p)
	p.OnChange(func(e Event) { panic("watcher bug with value " + e.Current.GetString("db.pw")) })
	ctx := context.Background()
	var leak LeakCheck

	src.set("myvault", "pw", sentinel+"-2")
	leak.Err(p.Refresh(ctx))
	src.set("myvault", "pw", sentinel+"-3", expiresAt(time.Now().Add(30*time.Minute)))
	leak.Err(p.Refresh(ctx))
	src.fail("myvault", "pw", StatusAccessToKeyVaultDenied, "GET pw: 403 Forbidden (ForbiddenByRbac)")
	err := p.Refresh(ctx)
	if err == nil {
		t.Error("Refresh succeeded while access is denied")
	}
	leak.Err(err)
	leak.Status(p)
	src.heal("myvault", "pw")
	leak.Err(p.Refresh(ctx))
	leak.Err(p.loadFile(ctx, []byte(doc+"other: \"@KeyVault(VaultName=myvault;SecretName=other)\"\n")))
	err = p.loadFile(ctx, []byte("db: [\n  unclosed\n"))
	if err == nil {
		t.Error("a file that does not parse loaded")
	}
	leak.Err(err)
	p.fileError(&fileWatcher{path: "config.yaml"}, fmt.Errorf("config file config.yaml: %w", err))
	leak.Status(p)
	if p.GetString("other") != sentinel+"-other" || p.GetString("db.pw") != sentinel+"-3" {
		t.Fatalf("values not resolved as expected: %v", p.MaskedSettings())
	}

	synctest.Wait() // the watchers have had every event
	all := rec.all()
	kinds := map[EventKind]bool{}
	for _, e := range all {
		kinds[e.Kind] = true
	}
	if len(kinds) != 4 {
		t.Fatalf("events %v: not every kind was sent, the check below would prove little", all)
	}
	leak.Events(all)
	leak.Check(t, p, sentinel, logs.String(), "db.pw", "panicked")
}
