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
// resolved configuration. Its methods are safe for concurrent use. After New, the Viper
// passed in belongs to the provider (it re-reads the config file into it); the app reads
// the resolved configuration through Viper, Get and GetString.
type Provider struct {
	src    *viper.Viper
	opts   options
	parse  parseConfig
	fetch  *fetcher
	notify notifier

	// updateMu serialises everything that builds a snapshot: Load, Refresh, poll cycles
	// and file reloads. It guards the fields below it. Readers never take it.
	updateMu sync.Mutex
	polls    map[Reference]*pollState
	warned   map[Reference]string // version whose near expiry was announced
	expiryAt time.Time            // when checkExpiry next has something to say; zero: never

	cur      atomic.Pointer[snapshot]
	watching atomic.Bool
	wake     chan struct{} // tells the poll loop the set of references changed
}

// snapshot is one resolved configuration. It is never modified after it is published, so
// readers need no lock; an update publishes a new snapshot in one atomic step.
type snapshot struct {
	tree     map[string]any // the settings as read, references unresolved
	scan     *scan
	v        *viper.Viper
	masked   map[string]any
	rendered map[string]string // resolved value of each key holding references
	status   []ReferenceStatus
	secrets  map[Reference]*secret
}

// ReferenceStatus is the state of one reference in one config key. It never holds a value.
type ReferenceStatus struct {
	Key       string        // config key, e.g. "db.conn"; list elements as "hosts[1]"
	Reference Reference     // the secret referred to; Version is "" for the latest
	Version   string        // the version whose value the key holds; "" when it holds none
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
			ClientOptions: azcore.ClientOptions{Transport: noRedirects(o.transport)},
			ID:            o.identity,
		})
		if err != nil {
			return nil, fmt.Errorf("viperkv: New: managed identity: %w", err)
		}
		cred = mi
	}
	if o.refreshInterval <= 0 || o.retryMin <= 0 || o.retryMax < o.retryMin {
		return nil, fmt.Errorf("viperkv: New: refresh interval %v and retry back-off %v..%v must be positive and ordered",
			o.refreshInterval, o.retryMin, o.retryMax)
	}
	return &Provider{
		src:    v,
		opts:   o,
		parse:  newParseConfig(o.cloud, o.allowedHosts...),
		fetch:  newFetcher(cred, o.transport, o.maxInflight, o.logger),
		notify: notifier{log: o.logger},
		polls:  map[Reference]*pollState{},
		warned: map[Reference]string{},
		wake:   make(chan struct{}, 1),
	}, nil
}

// Load finds every reference in the Viper's settings, fetches each distinct secret once,
// and publishes the resolved configuration. When some references fail it still publishes
// the others and returns a *LoadError listing each failure. A failed key is left out (never
// a placeholder or an empty string in its place) unless an earlier Load or refresh gave it
// a good value, which it keeps.
func (p *Provider) Load(ctx context.Context) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	start := time.Now()
	tree := settingsOf(p.src, p.opts.envKeys)
	snap, _ := p.update(ctx, SourceRefresh, tree, func(sc *scan, _ *snapshot) []Reference { return sc.distinct() })

	failed := failures(snap.status)
	p.opts.logger.Info("viperkv: configuration loaded",
		"references", len(snap.status), "secrets", len(snap.secrets), "failed", len(failed), "took", time.Since(start))
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

// build makes a snapshot from the settings and the secrets. A key whose references cannot
// all be rendered keeps its value from prev, if prev had one: a good value is never
// replaced by nothing.
func (p *Provider) build(tree map[string]any, sc *scan, secrets map[Reference]*secret, prev *snapshot) *snapshot {
	lookup := func(r Reference) (string, bool) {
		s, ok := secrets[r.key()]
		if !ok || !s.has {
			return "", false
		}
		return s.value, true
	}
	rendered := map[string]string{}
	kept := map[string]bool{}
	values, _ := transform("", tree, func(key, s string) (string, bool) {
		t, isRef := sc.templates[key]
		_, bad := sc.invalid[key]
		if !isRef && !bad {
			return s, true
		}
		if isRef {
			if v, ok := t.render(lookup); ok {
				rendered[key] = v
				return v, true
			}
		}
		if prev != nil {
			if v, ok := prev.rendered[key]; ok {
				rendered[key], kept[key] = v, true
				return v, true
			}
		}
		return "", false
	})
	masked, _ := transform("", tree, func(key, s string) (string, bool) {
		t, isRef := sc.templates[key]
		_, bad := sc.invalid[key]
		switch _, ok := rendered[key]; {
		case !isRef && !bad:
			return s, true
		case !ok:
			return "", false
		case kept[key]:
			return Mask, true
		}
		return t.render(func(Reference) (string, bool) { return Mask, true })
	})
	v := viper.New()
	// MergeConfigMap fails only for values it cannot copy; transform's output is plain maps.
	_ = v.MergeConfigMap(values.(map[string]any))

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
				if s.has {
					st.Version = s.version
				}
			}
			status = append(status, st)
		}
	}
	return &snapshot{tree: tree, scan: sc, v: v, masked: masked.(map[string]any), rendered: rendered, status: status, secrets: secrets}
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
