package viperkv

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// freshness is what the provider knows of one secret's freshness.
type freshness struct {
	confirmed    time.Time // the value held was last confirmed current (zero: never)
	failingSince time.Time // the current run of failures began (zero: not failing)
	fails        int       // consecutive failed fetches
}

// healthState is published by every update, for Status and the gauges to read without
// waiting on a Load.
type healthState struct {
	refs map[Reference]freshness
}

// observe counts the update's failed fetches and publishes the health state. The caller
// holds updateMu.
func (p *Provider) observe(snap *snapshot, fetched map[Reference]*secret, now time.Time) {
	for r, f := range fetched {
		if f.status != StatusResolved {
			p.tel.failures.Add(context.Background(), 1, metric.WithAttributes(attrVault.String(r.Vault), attrStatus.String(string(f.status))))
		}
	}
	h := &healthState{refs: make(map[Reference]freshness, len(snap.secrets))}
	for r := range snap.secrets {
		var f freshness
		if st := p.sched.polls[r]; st != nil {
			f = freshness{confirmed: st.ok, failingSince: st.since, fails: st.fails}
		}
		h.refs[r] = f
	}
	p.health.Store(h)
}

// Status reports every reference of the current configuration, sorted by config key, with
// how fresh each value is, and environment variables holding references that no key reads
// (StatusEnvKeyNotNamed). It is nil before the first Load.
func (p *Provider) Status() []ReferenceStatus {
	return p.statusOf(p.cur.Load(), time.Now())
}

// statusOf returns the rows of cur with their freshness at now.
func (p *Provider) statusOf(cur *snapshot, now time.Time) []ReferenceStatus {
	if cur == nil {
		return nil
	}
	var refs map[Reference]freshness
	if h := p.health.Load(); h != nil {
		refs = h.refs
	}
	out := make([]ReferenceStatus, len(cur.status))
	for i, st := range cur.status {
		if st.Status != StatusEnvKeyNotNamed {
			f := refs[st.Reference]
			st.HasValue = st.Version != ""
			st.LastSuccess, st.ConsecutiveFailures, st.FailingSince = f.confirmed, f.fails, f.failingSince
			if st.Reference.Version == "" && !f.confirmed.IsZero() { // a pinned version never goes stale
				st.Staleness = now.Sub(f.confirmed)
			}
		}
		out[i] = st
	}
	return out
}

// HealthOption configures HealthHandler.
type HealthOption func(*healthConfig)

type healthConfig struct {
	maxFailing time.Duration
	optional   map[string]bool
}

// HealthMaxFailing makes HealthHandler answer 503 when a reference has been failing for
// longer than d, even though it keeps its last good value (default: never, so that a Key
// Vault outage does not take a fleet that still has every value out of service).
func HealthMaxFailing(d time.Duration) HealthOption {
	return func(c *healthConfig) { c.maxFailing = d }
}

// HealthOptional names config keys whose references are not required: one without a
// value does not make HealthHandler answer 503. Keys are compared without regard to case,
// as Viper's are.
func HealthOptional(keys ...string) HealthOption {
	return func(c *healthConfig) {
		for _, k := range keys {
			c.optional[strings.ToLower(k)] = true
		}
	}
}

// HealthHandler returns an http.Handler for readiness probes: 200 when every required
// reference has a value (and, with HealthMaxFailing, none has failed for longer than the
// bound), 503 otherwise and before the first Load. The JSON body's status is "ok",
// "degraded" (200, but a reference fails and keeps its last good value, or an optional one
// has none), "unavailable" or "not loaded"; it names the references that fail, with their
// status, reason and how long they have failed; never a value.
func (p *Provider) HealthHandler(opts ...HealthOption) http.Handler {
	cfg := healthConfig{optional: map[string]bool{}}
	for _, o := range opts {
		o(&cfg)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		type failing struct {
			Key          string  `json:"key"`
			Vault        string  `json:"vault,omitempty"`
			Secret       string  `json:"secret,omitempty"`
			Status       Status  `json:"status"`
			Reason       string  `json:"reason,omitempty"`
			HasValue     bool    `json:"has_value"`
			FailingForS  float64 `json:"failing_for_s,omitempty"`
			StalenessS   float64 `json:"staleness_s,omitempty"`
			MakesUnready bool    `json:"makes_unready"`
		}
		body := struct {
			Status     string    `json:"status"`
			References int       `json:"references"`
			Failing    []failing `json:"failing"`
		}{Status: "ok", Failing: []failing{}}
		code := http.StatusOK
		now := time.Now()
		cur := p.cur.Load() // one configuration: the rows and "not loaded" must agree
		if cur == nil {
			body.Status, code = "not loaded", http.StatusServiceUnavailable
		}
		for _, st := range p.statusOf(cur, now) {
			if st.Status == StatusEnvKeyNotNamed {
				continue // a warning about a variable no key reads, not a reference of the configuration
			}
			body.References++
			if st.Status == StatusResolved {
				continue
			}
			f := failing{Key: st.Key, Vault: st.Reference.Vault, Secret: st.Reference.Name, Status: st.Status, Reason: st.Reason,
				HasValue: st.HasValue, StalenessS: st.Staleness.Seconds()}
			if !st.FailingSince.IsZero() {
				f.FailingForS = now.Sub(st.FailingSince).Seconds()
			}
			required := !cfg.optional[strings.ToLower(st.Key)]
			tooLong := cfg.maxFailing > 0 && !st.FailingSince.IsZero() && now.Sub(st.FailingSince) > cfg.maxFailing
			f.MakesUnready = required && (!st.HasValue || tooLong)
			if f.MakesUnready {
				body.Status, code = "unavailable", http.StatusServiceUnavailable
			}
			body.Failing = append(body.Failing, f)
		}
		if code == http.StatusOK && len(body.Failing) > 0 {
			body.Status = "degraded" // serving, on last good values or without optional ones
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}
