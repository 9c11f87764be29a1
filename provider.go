package viperkv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/viper"
)

// Mask replaces secret values in MaskedSettings.
const Mask = "******"

// Provider resolves the Key Vault references in a Viper's configuration and holds the
// resolved configuration. Its methods are safe for concurrent use.
type Provider struct {
	src   *viper.Viper
	opts  options
	fetch *fetcher

	loadMu sync.Mutex // one Load at a time
	cur    atomic.Pointer[snapshot]
}

// snapshot is one resolved configuration. It is never modified after it is published, so
// readers need no lock; a reload publishes a new snapshot in one atomic step.
type snapshot struct {
	v       *viper.Viper
	masked  map[string]any
	status  []ReferenceStatus
	secrets map[Reference]*secret
}

// ReferenceStatus is the state of one reference in one config key. It never holds a value.
type ReferenceStatus struct {
	Key       string        // config key, e.g. "db.conn"; list elements as "hosts[1]"
	Reference Reference     // the secret referred to; Version is "" for the latest
	Version   string        // the version resolved, when Status is StatusResolved
	Status    Status        // StatusResolved or why not
	Reason    string        // why, when Status is not StatusResolved
	Took      time.Duration // time the fetch took
}

// New returns a Provider for v. It makes no request; call Load. Without WithCredential it
// authenticates with the system-assigned managed identity (or the one WithManagedIdentity
// names), so no credential is in code or config.
func New(v *viper.Viper, opts ...Option) (*Provider, error) {
	if v == nil {
		return nil, errors.New("viperkv: New: nil *viper.Viper")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.cloud.VaultSuffix() == "" {
		return nil, fmt.Errorf("viperkv: New: unknown cloud %q", o.cloud)
	}
	if o.maxInflight < 1 {
		return nil, fmt.Errorf("viperkv: New: WithMaxInflight(%d): need at least 1", o.maxInflight)
	}
	cred := o.cred
	if cred == nil {
		mi, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ClientOptions: azcore.ClientOptions{Transport: o.transport},
			ID:            o.identity,
		})
		if err != nil {
			return nil, fmt.Errorf("viperkv: New: managed identity: %w", err)
		}
		cred = mi
	}
	return &Provider{src: v, opts: o, fetch: newFetcher(cred, o.transport, o.maxInflight, o.logger)}, nil
}

// Load finds every reference in the Viper's settings, fetches each distinct secret once,
// and publishes the resolved configuration. When some references fail it still publishes
// the others, leaves the failed keys out (never a placeholder or an empty string in their
// place), and returns a *LoadError listing each failure.
func (p *Provider) Load(ctx context.Context) error {
	p.loadMu.Lock()
	defer p.loadMu.Unlock()
	start := time.Now()
	pc := parseConfig{cloud: p.opts.cloud, allowedHosts: p.opts.allowedHosts}
	tree := settingsOf(p.src, p.opts.envKeys)
	sc := scanSettings(tree, pc)
	refs := sc.distinct()

	fctx, cancel := context.WithTimeout(ctx, p.opts.fetchTimeout)
	defer cancel()
	secrets := p.fetch.fetchAll(fctx, refs)

	snap, err := p.build(tree, sc, secrets)
	if err != nil {
		return err
	}
	p.cur.Store(snap)

	failed := failures(snap.status)
	p.opts.logger.Info("viperkv: configuration loaded",
		"references", len(snap.status), "secrets", len(refs), "failed", len(failed), "took", time.Since(start))
	for _, st := range snap.status {
		if st.Status == StatusResolved {
			p.opts.logger.Debug("viperkv: reference resolved", "key", st.Key, "vault", st.Reference.Vault,
				"secret", st.Reference.Name, "version", st.Version, "took", st.Took)
		} else {
			p.opts.logger.Warn("viperkv: reference not resolved", "key", st.Key, "vault", st.Reference.Vault,
				"secret", st.Reference.Name, "status", st.Status, "reason", st.Reason)
		}
	}
	if len(failed) > 0 {
		return &LoadError{Failed: failed}
	}
	return nil
}

// build makes a snapshot from the settings and the fetched secrets.
func (p *Provider) build(tree map[string]any, sc *scan, secrets map[Reference]*secret) (*snapshot, error) {
	resolved := func(r Reference) (*secret, bool) {
		s, ok := secrets[r.key()]
		return s, ok && s.status == StatusResolved
	}
	values := sc.substitute(tree, func(r Reference) (string, bool) {
		s, ok := resolved(r)
		if !ok {
			return "", false
		}
		return s.value, true
	})
	masked := sc.substitute(tree, func(r Reference) (string, bool) {
		_, ok := resolved(r)
		return Mask, ok
	})
	v := viper.New()
	if err := v.MergeConfigMap(values); err != nil {
		return nil, fmt.Errorf("viperkv: building resolved configuration: %w", err)
	}

	var status []ReferenceStatus
	for _, key := range sc.keys() {
		if re, bad := sc.invalid[key]; bad {
			status = append(status, ReferenceStatus{Key: key, Status: re.Status, Reason: re.Reason})
			continue
		}
		for _, r := range sc.templates[key].refs() {
			st := ReferenceStatus{Key: key, Reference: r, Status: StatusInitialized}
			if s, ok := secrets[r.key()]; ok {
				st.Status, st.Reason, st.Took = s.status, s.reason, s.took
				if s.status == StatusResolved {
					st.Version = s.version
				}
			}
			status = append(status, st)
		}
	}
	return &snapshot{v: v, masked: masked, status: status, secrets: secrets}, nil
}

func failures(status []ReferenceStatus) []ReferenceStatus {
	var out []ReferenceStatus
	for _, st := range status {
		if st.Status != StatusResolved {
			out = append(out, st)
		}
	}
	return out
}

// Viper returns the resolved configuration as a Viper. Treat it as read-only: it is shared
// by every reader, and a reload replaces it rather than changing it. It returns an empty
// Viper before the first Load.
func (p *Provider) Viper() *viper.Viper {
	if s := p.cur.Load(); s != nil {
		return s.v
	}
	return viper.New()
}

// Get returns the resolved value of key, like viper.Get.
func (p *Provider) Get(key string) any { return p.Viper().Get(key) }

// GetString returns the resolved value of key as a string, like viper.GetString.
func (p *Provider) GetString(key string) string { return p.Viper().GetString(key) }

// Status reports every reference found by the last Load, sorted by config key.
func (p *Provider) Status() []ReferenceStatus {
	if s := p.cur.Load(); s != nil {
		return slices.Clone(s.status)
	}
	return nil
}

// MaskedSettings returns the resolved settings as nested maps with every secret value
// replaced by Mask, for showing configuration to people. Keys that failed are absent.
func (p *Provider) MaskedSettings() map[string]any {
	s := p.cur.Load()
	if s == nil {
		return nil
	}
	out, _ := transform("", s.masked, func(_, v string) (string, bool) { return v, true })
	return out.(map[string]any)
}

// LoadError reports the references a Load could not resolve. It names keys, vaults,
// secrets and statuses, never values. errors.As on it finds each failure's *ReferenceError.
type LoadError struct {
	Failed []ReferenceStatus
}

func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "viperkv: %d reference(s) not resolved:", len(e.Failed))
	for _, f := range e.Failed {
		b.WriteString("\n  ")
		b.WriteString(f.Key)
		if f.Reference.Vault != "" {
			fmt.Fprintf(&b, " (vault %s, secret %s", f.Reference.Vault, f.Reference.Name)
			if f.Reference.Version != "" {
				b.WriteString(", version " + f.Reference.Version)
			}
			b.WriteString(")")
		}
		fmt.Fprintf(&b, ": %s: %s", f.Status, f.Reason)
	}
	return b.String()
}

// Unwrap returns one *ReferenceError per failed reference.
func (e *LoadError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = &ReferenceError{Key: f.Key, Status: f.Status, Reason: f.Reason}
	}
	return errs
}
