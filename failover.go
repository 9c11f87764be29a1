package viperkv

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/viperkv/viperkv/internal/driver"
)

// WithVaultFailover makes versionless references to the vault primaryHost (such as
// "myapp-weu.vault.azure.net") fall back to secondaryHosts, in order, when the primary
// cannot answer: a connection refused or reset, a host name that does not resolve, a
// timeout, a 5xx, or 429 beyond the retry budget. The secondary is asked for the secret of
// the same name; the rotation job is expected to write each secret to every vault.
//
// A pinned version is never looked up elsewhere (version ids differ between vaults): it
// fails with the primary's reason. A refusal or an absence on the primary (401, 403, 404,
// a disabled secret) is the truth and never fails over. Each fetch asks the primary first,
// so the first cycle after it recovers reads from it again; a value that comes back from
// the primary unchanged is not announced as a change. ReferenceStatus.ServedBy and
// Event.ServedBy say which vault served each value, and the metric
// viperkv.vault.failovers counts the fetches a secondary served.
//
// The hosts are checked as references' hosts are (the configured cloud's vaults, or
// WithAllowedHosts); New reports a bad one, a vault given twice or a cycle.
func WithVaultFailover(primaryHost string, secondaryHosts ...string) Option {
	return func(o *options) {
		o.failovers = append(o.failovers, failoverSpec{primary: primaryHost, secondaries: slices.Clone(secondaryHosts)})
	}
}

type failoverSpec struct {
	primary     string
	secondaries []string
}

// primaryBudget bounds how long a fetch waits for a primary vault that has failover vaults
// before asking them: Key Vault answers a GET in tens of milliseconds, so 10 s is an outage.
const primaryBudget = 10 * time.Second

// failover maps a primary vault's host to its secondaries', in order.
type failover map[string][]string

// failoverMap checks WithVaultFailover's hosts and returns them by primary.
func (o options) failoverMap() (failover, error) {
	if len(o.failovers) == 0 {
		return nil, nil
	}
	out := failover{}
	for _, spec := range o.failovers {
		call := fmt.Sprintf("WithVaultFailover(%q, ...)", spec.primary)
		primary, err := o.vaultHost(spec.primary)
		if err != nil {
			return nil, fmt.Errorf("viperkv: New: %s: primary: %w", call, err)
		}
		if _, twice := out[primary]; twice {
			return nil, fmt.Errorf("viperkv: New: %s: vault %s already has failover vaults", call, primary)
		}
		if len(spec.secondaries) == 0 {
			return nil, fmt.Errorf("viperkv: New: %s: no secondary vault", call)
		}
		var secs []string
		for _, raw := range spec.secondaries {
			h, err := o.vaultHost(raw)
			if err != nil {
				return nil, fmt.Errorf("viperkv: New: %s: secondary %q: %w", call, raw, err)
			}
			if h == primary || slices.Contains(secs, h) {
				return nil, fmt.Errorf("viperkv: New: %s: vault %s is listed twice", call, h)
			}
			secs = append(secs, h)
		}
		out[primary] = secs
	}
	return out, nil
}

// failsOver reports whether a primary's failure is one a secondary may answer instead: the
// vault could not answer, as opposed to answering no.
func failsOver(e *driver.Error) bool {
	switch e.Kind {
	case driver.KindVaultNotFound, driver.KindTimeout, driver.KindThrottled:
		return true
	case driver.KindOther:
		return e.Transient // connection refused or reset, 5xx
	}
	return false
}

// fetchFailingOver fetches r from its vault and, when that vault cannot answer and r is
// versionless, from its secondaries in order. A secondary's answer is judged as the
// primary's would be; if none serves, the primary's failure stands, with what each
// secondary said.
func fetchFailingOver(ctx context.Context, rd *driver.Reader, r Reference, fo failover) (*secret, bool) {
	secs := fo[r.Vault]
	if r.Version != "" || len(secs) == 0 {
		s, transient, _ := fetchFrom(ctx, rd, r, r.Vault)
		return s, transient
	}
	// The primary gets half of what is left of the fetch's time (the SDK retries a refused
	// connection or a 503 within it), so a vault that cannot answer leaves time to ask
	// the secondaries.
	pctx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok {
		pctx, cancel = context.WithTimeout(ctx, min(time.Until(dl)/2, primaryBudget))
	}
	s, transient, err := fetchFrom(pctx, rd, r, r.Vault)
	cancel()
	if s.status == StatusResolved || err == nil || ctx.Err() != nil || !failsOver(err) {
		return s, transient
	}
	var tried []string
	for _, host := range secs {
		alt, _, _ := fetchFrom(ctx, rd, r, host)
		if alt.status == StatusResolved {
			alt.servedBy = host
			alt.reason = fmt.Sprintf("served by %s: %s answered %s: %s", host, r.Vault, s.status, s.reason)
			alt.took += s.took
			return alt, false
		}
		tried = append(tried, fmt.Sprintf("%s: %s: %s", host, alt.status, alt.reason))
		if ctx.Err() != nil {
			break
		}
	}
	out := *s
	out.reason += "; failover vaults also failed (" + strings.Join(tried, "; ") + ")"
	return &out, transient
}

// noteFailovers counts the fetches a failover vault served, and logs when a secret moves to
// a failover vault or back to its own.
func (p *Provider) noteFailovers(ctx context.Context, prev *snapshot, fetched map[Reference]*secret) {
	if p.failover == nil {
		return
	}
	for r, s := range fetched {
		if s.status != StatusResolved {
			continue
		}
		was := ""
		if prev != nil {
			if old := prev.secrets[r]; old != nil && old.has {
				was = old.servedBy
			}
		}
		if s.servedBy != "" {
			p.tel.failovers.Add(ctx, 1, metric.WithAttributes(attrVault.String(r.Vault), attrServedBy.String(s.servedBy)))
		}
		switch {
		case s.servedBy != "" && s.servedBy != was:
			p.opts.logger.Warn("viperkv: the vault cannot answer; a failover vault served the secret",
				"vault", r.Vault, "secret", r.Name, "served_by", s.servedBy, "reason", s.reason)
		case s.servedBy == "" && was != "":
			p.opts.logger.Info("viperkv: the vault answers again; it serves the secret",
				"vault", r.Vault, "secret", r.Name, "was_served_by", was)
		}
	}
}
