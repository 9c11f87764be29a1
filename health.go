package viperkv

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"
)

// ReferenceHealth is how fresh one reference's value is, for dashboards and readiness
// probes. It never holds a value.
type ReferenceHealth struct {
	Key       string    // config key
	Reference Reference // zero when the reference is malformed
	Status    Status
	Reason    string // why, when Status is not StatusResolved
	// HasValue says the key holds a value: its latest, or its last good one while failing.
	HasValue bool
	// LastSuccess is when the value held was last confirmed current: fetched, or shown
	// unchanged by a list. Zero when never.
	LastSuccess time.Time
	// ConsecutiveFailures counts the failed fetches since the last success, and
	// FailingSince is when they began (zero when not failing).
	ConsecutiveFailures int
	FailingSince        time.Time
	// Staleness is the time since LastSuccess, for a versionless reference (a pinned
	// version never changes, so it is never stale: 0).
	Staleness time.Duration
}

// Health reports every reference of the current configuration, sorted by config key, as
// Status does, with how fresh each value is. It is nil before the first Load.
func (p *Provider) Health() []ReferenceHealth {
	cur := p.cur.Load()
	if cur == nil {
		return nil
	}
	var refs map[Reference]refHealth
	if h := p.health.Load(); h != nil {
		refs = h.refs
	}
	now := time.Now()
	out := make([]ReferenceHealth, 0, len(cur.status))
	for _, st := range cur.status {
		if st.Status == StatusEnvKeyNotNamed {
			continue // a warning about a variable no key reads, not a reference of the configuration
		}
		rh := refs[st.Reference]
		h := ReferenceHealth{Key: st.Key, Reference: st.Reference, Status: st.Status, Reason: st.Reason,
			HasValue: st.Version != "", LastSuccess: rh.confirmed, ConsecutiveFailures: rh.fails, FailingSince: rh.failingSince}
		if st.Reference.Version == "" && !rh.confirmed.IsZero() {
			h.Staleness = now.Sub(rh.confirmed)
		}
		out = append(out, h)
	}
	return out
}

// HealthOption configures HealthHandler.
type HealthOption func(*healthConfig)

type healthConfig struct {
	maxFailing time.Duration
	optional   []string
}

// HealthMaxFailing makes HealthHandler answer 503 when a reference has been failing for
// longer than d, even though it keeps its last good value (default: never, so that a Key
// Vault outage does not take a fleet that still has every value out of service).
func HealthMaxFailing(d time.Duration) HealthOption {
	return func(c *healthConfig) { c.maxFailing = d }
}

// HealthOptional names config keys whose references are not required: one without a
// value does not make HealthHandler answer 503.
func HealthOptional(keys ...string) HealthOption {
	return func(c *healthConfig) { c.optional = append(c.optional, keys...) }
}

// HealthHandler returns an http.Handler for readiness probes: 200 when every required
// reference has a value (and, with HealthMaxFailing, none has failed for longer than the
// bound), 503 otherwise and before the first Load. The JSON body names the references
// that fail, with their status, reason and how long they have failed; never a value.
func (p *Provider) HealthHandler(opts ...HealthOption) http.Handler {
	var cfg healthConfig
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
		hs := p.Health()
		if hs == nil && p.cur.Load() == nil {
			body.Status, code = "not loaded", http.StatusServiceUnavailable
		}
		now := time.Now()
		body.References = len(hs)
		for _, h := range hs {
			if h.Status == StatusResolved {
				continue
			}
			f := failing{Key: h.Key, Vault: h.Reference.Vault, Secret: h.Reference.Name, Status: h.Status, Reason: h.Reason,
				HasValue: h.HasValue, StalenessS: h.Staleness.Seconds()}
			if !h.FailingSince.IsZero() {
				f.FailingForS = now.Sub(h.FailingSince).Seconds()
			}
			required := !slices.Contains(cfg.optional, h.Key)
			tooLong := cfg.maxFailing > 0 && !h.FailingSince.IsZero() && now.Sub(h.FailingSince) > cfg.maxFailing
			f.MakesUnready = required && (!h.HasValue || tooLong)
			if f.MakesUnready {
				body.Status, code = "unavailable", http.StatusServiceUnavailable
			}
			body.Failing = append(body.Failing, f)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}
