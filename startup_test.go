package viperkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/viperkv/viperkv/internal/logtest"
)

// Start-up resilience: Load and Refresh retry transient failures with back-off until the
// fetch deadline and fail permanent ones at once; Watch's poll cycles and Notify make one
// attempt. Under testing/synctest with the fake source, so the back-off's timing is exact.

// startupDoc references one secret, s, from two keys.
const startupDoc = `
db:
  conn: "@KeyVault(VaultName=myvault;SecretName=s)"
  dsn: "host=db password=@KeyVault(VaultName=myvault;SecretName=s)"
`

// debugLogger returns a logger writing Debug and above to sink.
func debugLogger(sink *logtest.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkBackoff checks that each call of a retried fetch started one back-off after the
// previous one ended: after failed attempt n, in [d/2, d] with d = min(retryFirst << (n-1),
// retryCap).
func checkBackoff(t *testing.T, what string, calls []fakeCall) {
	t.Helper()
	for i := 1; i < len(calls); i++ {
		d := min(retryFirst<<(i-1), retryCap)
		if gap := calls[i].start.Sub(calls[i-1].end); !within(gap, d/2, d) {
			t.Errorf("%s: attempt %d began %v after attempt %d ended, want %v..%v", what, i+1, gap, i, d/2, d)
		}
	}
}

// retryLines returns the log lines announcing a retry.
func retryLines(logs string) []string {
	var out []string
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, `msg="viperkv: fetch failed; retrying"`) {
			out = append(out, line)
		}
	}
	return out
}

// A transient failure (the way keyVault reports each kind) is retried with capped
// exponential back-off until it clears; the key then resolves, and its Took covers every
// attempt.
func TestLoadRetriesTransientFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status Status
		reason string
	}{
		{"vault 503", StatusOtherReasons, "GET https://myvault.vault.azure.net/secrets/s: 503 ServiceUnavailable"},
		{"connection reset", StatusOtherReasons, "GET https://myvault.vault.azure.net/secrets/s: read: connection reset by peer"},
		{"identity endpoint refuses", StatusMSINotEnabled, "no managed identity endpoint is available: connection refused"},
		{"identity endpoint 503", StatusOtherReasons, "identity endpoint answered 503"},
		{"token request timed out", StatusFetchTimedOut, "identity endpoint did not answer in time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newFakeSource()
				v := src.set("myvault", "s", "the-value")
				src.flaky("myvault", "s", tc.status, tc.reason, 3)
				p := newFakeProvider(t, src, YAMLViper(t, startupDoc))
				start := time.Now()
				if err := p.Load(context.Background()); err != nil {
					t.Fatalf("Load: %v", err)
				}
				calls := src.callsOf("myvault", "s")
				if len(calls) != 4 {
					t.Fatalf("%d attempts, want 4 (three failures, then the value)", len(calls))
				}
				checkBackoff(t, tc.name, calls)
				st := StatusOf(t, p, "db.conn")
				if st.Status != StatusResolved || st.Version != v || p.GetString("db.dsn") != "host=db password=the-value" {
					t.Errorf("after the retries: %+v, dsn %q", st, p.GetString("db.dsn"))
				}
				if took := time.Since(start); st.Took != took || took != calls[3].end.Sub(start) {
					t.Errorf("Took = %v, Load took %v: want the time of every attempt and back-off", st.Took, took)
				}
			})
		})
	}
}

// The identity endpoint comes up 3 s after Load starts (App Service or an AKS node
// starting): every secret fails until then, and all resolve on their first attempt after it,
// within one capped back-off. Each retry is logged at Debug, naming the keys, vault, secret,
// status and attempt, never the value.
func TestLoadWaitsForIdentityEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const up = 3 * time.Second
		src := newFakeSource()
		start := time.Now()
		for _, name := range []string{"s", "t"} {
			src.set("myvault", name, "sentinel-"+name+"-value")
			src.flakyUntil("myvault", name, StatusMSINotEnabled,
				"no managed identity endpoint is available: dial tcp 127.0.0.1:41234: connect: connection refused", start.Add(up))
		}
		var logs logtest.Buffer
		p := newFakeProvider(t, src, YAMLViper(t, startupDoc+"api: \"@KeyVault(VaultName=myvault;SecretName=t)\"\n"),
			WithLogger(debugLogger(&logs)))
		if err := p.Load(context.Background()); err != nil {
			t.Fatalf("Load: %v", err)
		}
		if took := time.Since(start); took < up || took > up+retryCap {
			t.Errorf("Load took %v, want %v..%v (the endpoint's start, plus at most one back-off)", took, up, up+retryCap)
		}
		lines := retryLines(logs.String())
		total := 0
		for _, name := range []string{"s", "t"} {
			calls := src.callsOf("myvault", name)
			total += len(calls)
			last := calls[len(calls)-1]
			if len(calls) < 5 || last.start.Before(start.Add(up)) || calls[len(calls)-2].start.After(start.Add(up)) {
				t.Errorf("%s: %d attempts, the last at %v: want at least 5, failing until %v, then one success",
					name, len(calls), last.start.Sub(start), up)
			}
			checkBackoff(t, name, calls)
			for i := 1; i < len(calls); i++ {
				want := []string{"key=" + map[string]string{"s": "db.conn,db.dsn", "t": "api"}[name],
					"vault=myvault.vault.azure.net", "secret=" + name, "status=MSINotEnabled", fmt.Sprintf("attempt=%d ", i)}
				if !containsLine(lines, want...) {
					t.Errorf("%s: no Debug line with %q among\n%s", name, want, strings.Join(lines, "\n"))
				}
			}
		}
		if len(lines) != total-2 {
			t.Errorf("%d retry log lines for %d attempts of 2 secrets, want one per retry", len(lines), total)
		}
		for _, key := range []string{"db.conn", "api"} {
			if st := StatusOf(t, p, key); st.Status != StatusResolved {
				t.Errorf("%s: %+v", key, st)
			}
		}
		var c LeakCheck
		c.Status(p)
		c.Check(t, p, "sentinel-", logs.String(), "fetch failed; retrying", "fetch succeeded after retries")
	})
}

// containsLine reports whether some line contains every one of parts.
func containsLine(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// A permanent failure fails at once, one attempt, while a transient one in the same Load is
// retried and resolves. Malformed references are never fetched at all.
func TestLoadFailsPermanentFailuresAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		permanent := map[string]Status{
			"denied":   StatusAccessToKeyVaultDenied,
			"disabled": StatusSecretDisabled,
			"refused":  StatusUnauthorizedClient,
			"noid":     StatusMSINotEnabled, // the endpoint answered: no such identity
			"novault":  StatusVaultNotFound,
		}
		var doc strings.Builder
		for name, status := range permanent {
			src.set("myvault", name, "x")
			src.fail("myvault", name, status, "GET https://myvault.vault.azure.net/secrets/"+name+": permanent")
			fmt.Fprintf(&doc, "%s: \"@KeyVault(VaultName=myvault;SecretName=%s)\"\n", name, name)
		}
		now := time.Now()
		src.set("myvault", "expired", "x", expiresAt(now.Add(-time.Hour)))
		src.set("myvault", "early", "x", notBeforeAt(now.Add(time.Hour)))
		src.set("myvault", "pinned", "x")
		src.set("myvault", "flaky", "flaky-value")
		src.flaky("myvault", "flaky", StatusOtherReasons, "GET https://myvault.vault.azure.net/secrets/flaky: 500 InternalServerError", 2)
		doc.WriteString(`
missing: "@KeyVault(VaultName=myvault;SecretName=nope)"
missingversion: "@KeyVault(VaultName=myvault;SecretName=pinned;SecretVersion=0123456789abcdef0123456789abcdef)"
expired: "@KeyVault(VaultName=myvault;SecretName=expired)"
early: "@KeyVault(VaultName=myvault;SecretName=early)"
syntax: "@KeyVault(VaultName=myvault;SecretName=bad_name)"
flaky: "@KeyVault(VaultName=myvault;SecretName=flaky)"
`)
		permanent["missing"] = StatusSecretNotFound
		permanent["missingversion"] = StatusSecretVersionNotFound
		permanent["expired"] = StatusSecretExpired
		permanent["early"] = StatusSecretNotYetValid
		permanent["syntax"] = StatusInvalidSyntax

		p := newFakeProvider(t, src, YAMLViper(t, doc.String()))
		start := time.Now()
		err := p.Load(context.Background())
		var le *LoadError
		if !errors.As(err, &le) || len(le.Failed) != len(permanent) {
			t.Fatalf("Load = %v, want a LoadError listing the %d permanent failures", err, len(permanent))
		}
		for key, want := range permanent {
			st := StatusOf(t, p, key)
			if st.Status != want || st.Took != 0 || strings.Contains(st.Reason, "tried") {
				t.Errorf("%s: %s after %v (%s), want %s at once", key, st.Status, st.Took, st.Reason, want)
			}
		}
		for _, name := range []string{"denied", "disabled", "refused", "noid", "novault", "nope", "expired", "early"} {
			calls := src.callsOf("myvault", name)
			if len(calls) != 1 || !calls[0].end.Equal(start) {
				t.Errorf("%s: %d attempts, want one, at once", name, len(calls))
			}
		}
		if n := src.count("myvault", "pinned"); n != 1 {
			t.Errorf("missing version: %d attempts, want 1", n)
		}
		if n := src.count("myvault", "bad_name"); n != 0 {
			t.Errorf("malformed reference fetched %d times", n)
		}
		// The transient one alongside: three attempts, so the Load lasted two back-offs.
		calls := src.callsOf("myvault", "flaky")
		if len(calls) != 3 || p.GetString("flaky") != "flaky-value" {
			t.Errorf("flaky: %d attempts, value %q; want 3 and the value", len(calls), p.GetString("flaky"))
		}
		checkBackoff(t, "flaky", calls)
		if took := time.Since(start); took != calls[len(calls)-1].end.Sub(start) || took > retryFirst+2*retryFirst {
			t.Errorf("Load took %v: want it to end with the transient secret's third attempt", took)
		}
	})
}

// The retries end at the fetch deadline, measured in elapsed time whatever the number of
// attempts: quick failures are tried more often than slow ones in the same time. The
// status is then the last failure the source reported, with its reason, not FetchTimedOut,
// even when the deadline cut a last attempt short.
func TestLoadRetriesUntilTheDeadline(t *testing.T) {
	const timeout = 10 * time.Second
	const reason = "GET https://myvault.vault.azure.net/secrets/s: 503 ServiceUnavailable"
	attempts := map[string]int{}
	for _, tc := range []struct {
		name    string
		latency time.Duration
		ctx     time.Duration // a deadline of the caller's, earlier than WithFetchTimeout; 0: none
		min     int           // fewest attempts the back-off allows
	}{
		// Waits of at most 0.2, 0.4, 0.8, 1.6, 3, 3 s: at least 7 attempts start within 9 s.
		{name: "quick failures", min: 7},
		// 4 s per attempt: 0-4, 4.1-8.1 at the earliest, 8.3-8.6 to 12.3-12.6, cut short by
		// the deadline at 10 s.
		{name: "slow failures", latency: 4 * time.Second, min: 3},
		// At least 5 attempts start within 3 s.
		{name: "caller's deadline", ctx: 5 * time.Second, min: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newFakeSource()
				src.set("myvault", "s", "x")
				src.flaky("myvault", "s", StatusOtherReasons, reason, -1)
				src.delay("myvault", "s", tc.latency)
				p := newFakeProvider(t, src, YAMLViper(t, startupDoc), WithFetchTimeout(timeout))
				ctx := context.Background()
				deadline := timeout
				if tc.ctx > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.ctx)
					defer cancel()
					deadline = tc.ctx
				}
				start := time.Now()
				err := p.Load(ctx)
				took := time.Since(start)
				switch {
				case tc.latency > 0 && took != deadline:
					t.Errorf("Load took %v, want %v: the deadline cuts the last attempt short", took, deadline)
				case tc.latency == 0 && (took >= deadline || took < deadline-retryCap):
					// No back-off is begun that would end past the deadline.
					t.Errorf("Load took %v, want %v..%v: retries end before the deadline", took, deadline-retryCap, deadline)
				}
				var le *LoadError
				if !errors.As(err, &le) || len(le.Failed) != 2 {
					t.Fatalf("Load = %v, want a LoadError for both keys", err)
				}
				calls := src.callsOf("myvault", "s")
				attempts[tc.name] = len(calls)
				if len(calls) < tc.min {
					t.Errorf("%d attempts in %v, want at least %d", len(calls), took, tc.min)
				}
				for i, c := range calls {
					if c.start.Sub(start) >= deadline {
						t.Errorf("attempt %d began %v after Load began, past the deadline", i+1, c.start.Sub(start))
					}
				}
				if tc.latency == 0 {
					checkBackoff(t, tc.name, calls)
				}
				st := StatusOf(t, p, "db.conn")
				wantReason := fmt.Sprintf("%s (tried %d times before the fetch deadline)", reason, len(calls))
				if st.Status != StatusOtherReasons || st.Reason != wantReason || p.Viper().IsSet("db.conn") {
					t.Errorf("status %s (%s), want OtherReasons (%s), the key left out", st.Status, st.Reason, wantReason)
				}
			})
		})
	}
	if attempts["quick failures"] <= attempts["slow failures"] {
		t.Errorf("attempts %v: quick failures should be tried more often in the same time", attempts)
	}
}

// Cancelling ctx stops the retries at once: Load returns the moment ctx ends and no
// attempt starts after it.
func TestLoadRetriesStopWhenCanceled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		src.set("myvault", "s", "x")
		src.flaky("myvault", "s", StatusOtherReasons, "GET https://myvault.vault.azure.net/secrets/s: 502 BadGateway", -1)
		p := newFakeProvider(t, src, YAMLViper(t, startupDoc))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const after = 2500 * time.Millisecond
		time.AfterFunc(after, cancel)
		start := time.Now()
		err := p.Load(ctx)
		if took := time.Since(start); took != after {
			t.Errorf("Load returned %v after it began, want %v (when ctx was cancelled)", took, after)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Load = %v, want it to wrap context.Canceled", err)
		}
		calls := src.callsOf("myvault", "s")
		if len(calls) < 4 {
			t.Errorf("%d attempts in %v, want at least 4", len(calls), after)
		}
		for i, c := range calls {
			if c.start.Sub(start) >= after {
				t.Errorf("attempt %d began %v after Load began, after ctx was cancelled", i+1, c.start.Sub(start))
			}
		}
		synctest.Wait()
		if n := src.count("myvault", "s"); n != len(calls) {
			t.Errorf("%d attempts after Load returned", n-len(calls))
		}
		if st := StatusOf(t, p, "db.conn"); st.Status != StatusOtherReasons || !strings.Contains(st.Reason, "502") {
			t.Errorf("status %s (%s), want the last failure's", st.Status, st.Reason)
		}
	})
}

// Refresh retries as Load does; when the failure outlasts the deadline the key keeps its
// last good value (never an empty one) and the status says why.
func TestRefreshRetriesTransientFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		src.set("myvault", "s", "value-1")
		p := loadFake(t, src, startupDoc, WithFetchTimeout(5*time.Second))
		v2 := src.set("myvault", "s", "value-2")
		src.flaky("myvault", "s", StatusOtherReasons, "GET https://myvault.vault.azure.net/secrets/s: 503 ServiceUnavailable", 2)
		if err := p.Refresh(context.Background()); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		calls := src.callsOf("myvault", "s")[1:]
		if len(calls) != 3 || p.GetString("db.conn") != "value-2" || StatusOf(t, p, "db.conn").Version != v2 {
			t.Errorf("Refresh made %d attempts, db.conn = %q: want 3 and the new version", len(calls), p.GetString("db.conn"))
		}
		checkBackoff(t, "refresh", calls)

		src.flaky("myvault", "s", StatusOtherReasons, "GET https://myvault.vault.azure.net/secrets/s: 503 ServiceUnavailable", -1)
		start := time.Now()
		err := p.Refresh(context.Background())
		var le *LoadError
		if took := time.Since(start); !errors.As(err, &le) || took > 5*time.Second || took < 5*time.Second-retryCap {
			t.Errorf("Refresh = %v after %v, want a LoadError at the 5s deadline", err, took)
		}
		st := StatusOf(t, p, "db.conn")
		if p.GetString("db.conn") != "value-2" || p.GetString("db.dsn") != "host=db password=value-2" ||
			st.Status != StatusOtherReasons || st.Version != v2 || !strings.Contains(st.Reason, "503") {
			t.Errorf("after a failed Refresh: db.conn = %q, status %+v; want the last good value and the failure", p.GetString("db.conn"), st)
		}
	})
}

// Watch's poll cycles make one attempt each (the schedule backs a failing secret off across
// cycles), and so does Notify: neither retries within a cycle while holding updateMu.
func TestPollAndNotifyDoNotRetryInCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const retryMin = 30 * time.Second
		src := newFakeSource()
		src.set("myvault", "s", "value-1")
		var logs logtest.Buffer
		p := loadFake(t, src, startupDoc, WithLogger(debugLogger(&logs)), WithVersionCheck(VersionCheckGet),
			WithRefreshInterval(time.Minute), WithRetryBackoff(retryMin, 5*time.Minute))
		src.flaky("myvault", "s", StatusOtherReasons, "GET https://myvault.vault.azure.net/secrets/s: 503 ServiceUnavailable", -1)

		err := p.Notify(context.Background(), Notice{Type: NoticeNewVersion, Vault: "myvault", Name: "s",
			Version: "0123456789abcdef0123456789abcdef"})
		var le *LoadError
		if n := src.count("myvault", "s"); !errors.As(err, &le) || n != 2 {
			t.Errorf("Notify = %v after %d attempts, want a LoadError after one", err, n-1)
		}

		startWatch(t, p)
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		calls := src.callsOf("myvault", "s")[2:]
		if len(calls) < 4 {
			t.Fatalf("%d poll attempts in 20 minutes, want several", len(calls))
		}
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].start.Sub(calls[i-1].end); gap < retryMin/2 {
				t.Errorf("poll attempt %d came %v after the previous one: a retry within the cycle", i+1, gap)
			}
		}
		if lines := retryLines(logs.String()); len(lines) != 0 {
			t.Errorf("Notify or a poll cycle retried:\n%s", strings.Join(lines, "\n"))
		}
		if p.GetString("db.conn") != "value-1" {
			t.Errorf("db.conn = %q, want the last good value", p.GetString("db.conn"))
		}
	})
}
