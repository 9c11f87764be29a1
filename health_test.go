package viperkv

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"
)

// Health follows a failing reference in simulated time: consecutive failures, since when,
// staleness growing, the value kept; the handler turns 503 only after the bound, and an
// optional key never makes it so.
func TestHealthInSimulatedTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		src.set("myvault", "db", "db-v1")
		src.set("myvault", "cache", "cache-v1")
		p := newFakeProvider(t, src, YAMLViper(t, "db: \"@KeyVault(VaultName=myvault;SecretName=db)\"\ncache: \"@KeyVault(VaultName=myvault;SecretName=cache)\"\n"+
			"bad: \"@KeyVault(VaultName=;SecretName=x)\"\n"),
			WithRefreshInterval(interval), WithRetryBackoff(time.Minute, time.Minute), WithVersionCheck(VersionCheckGet))
		if err := p.Load(t.Context()); err == nil {
			t.Fatal("Load with a malformed reference: no error")
		}
		byKey := func() map[string]ReferenceStatus {
			out := map[string]ReferenceStatus{}
			for _, h := range p.Status() {
				out[h.Key] = h
			}
			return out
		}
		serve := func(opts ...HealthOption) (int, map[string]any) {
			rec := httptest.NewRecorder()
			p.HealthHandler(opts...).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("health body %q: %v", rec.Body.String(), err)
			}
			return rec.Code, body
		}
		if code, _ := serve(); code != 503 {
			t.Errorf("a malformed required reference: %d, want 503", code)
		}
		if code, _ := serve(HealthOptional("bad")); code != 200 {
			t.Errorf("the malformed reference made optional: %d, want 200", code)
		}
		if code, _ := serve(HealthOptional("BAD")); code != 200 {
			t.Errorf("the malformed reference made optional in another case: %d, want 200 (keys are case-insensitive)", code)
		}

		startWatch(t, p)
		src.fail("myvault", "db", StatusAccessToKeyVaultDenied, "GET https://myvault.vault.azure.net/secrets/db: 403 Forbidden (ForbiddenByRbac)")
		failedAt := time.Now()
		time.Sleep(interval + interval/5)
		synctest.Wait()
		h := byKey()["db"]
		if h.Status != StatusAccessToKeyVaultDenied || !h.HasValue || h.ConsecutiveFailures != 1 || h.FailingSince.IsZero() {
			t.Errorf("db after one failure: %+v", h)
		}
		stale := h.Staleness
		time.Sleep(3 * interval)
		synctest.Wait()
		h = byKey()["db"]
		if h.ConsecutiveFailures < 3 || h.Staleness <= stale || h.FailingSince.After(failedAt.Add(2*interval)) {
			t.Errorf("db after more failures: %+v (staleness was %v)", h, stale)
		}
		if c := byKey()["cache"]; c.Status != StatusResolved || c.ConsecutiveFailures != 0 || c.Staleness > interval+interval/5 {
			t.Errorf("cache: %+v", c)
		}
		if code, body := serve(HealthOptional("bad")); code != 200 {
			t.Errorf("failing with its last good value, no bound: %d %v", code, body)
		}
		if code, body := serve(HealthOptional("bad"), HealthMaxFailing(2*interval)); code != 503 {
			t.Errorf("failing past the bound: %d %v", code, body)
		}
		if code, _ := serve(HealthOptional("bad", "db"), HealthMaxFailing(2*interval)); code != 200 {
			t.Errorf("the failing key made optional: %d", code)
		}
		src.heal("myvault", "db")
		time.Sleep(2 * interval)
		synctest.Wait()
		if h := byKey()["db"]; h.Status != StatusResolved || h.ConsecutiveFailures != 0 || !h.FailingSince.IsZero() {
			t.Errorf("db after recovery: %+v", h)
		}
		if code, _ := serve(HealthOptional("bad"), HealthMaxFailing(2*interval)); code != 200 {
			t.Errorf("after recovery: %d", code)
		}
	})
}
