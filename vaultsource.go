package viperkv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv/internal/driver"
	"github.com/viperkv/viperkv/internal/grammar"
	"github.com/viperkv/viperkv/internal/viperlayers"
)

// VaultSourceOption configures WithVaultSource.
type VaultSourceOption func(*vaultSource)

// SecretPrefix imports only the secrets whose names start with prefix (compared without
// regard to case), and strips it from their keys: with "orders--", orders--Db--Password
// becomes db.password.
func SecretPrefix(prefix string) VaultSourceOption {
	return func(s *vaultSource) { s.prefix = strings.ToLower(prefix) }
}

// SecretTags imports only the secrets whose current version carries every one of these
// tags, with these values. A secret whose new version lacks them stops being imported at
// once: its key is removed (with a warning and an EventChanged), whatever SecretGrace says,
// and a version fetched without them is never served.
func SecretTags(tags map[string]string) VaultSourceOption {
	return func(s *vaultSource) {
		if s.tags == nil {
			s.tags = map[string]string{}
		}
		maps.Copy(s.tags, tags)
	}
}

// SecretKeys replaces the mapping from secret name to config key (after SecretPrefix):
// f returns the key, or false to skip the secret. Keys are case-insensitive, as Viper's
// are; "." separates their levels (it stands for the Viper's own key delimiter).
func SecretKeys(f func(name string) (key string, ok bool)) VaultSourceOption {
	return func(s *vaultSource) { s.mapKey = f }
}

// SecretGrace is how long a secret that disappeared from the vault (deleted, or no longer
// matching the filters) keeps its key. By default it keeps it for good: its last good value
// stays and an EventError says what happened, since a delete is more often a mistake than a
// wish. After the grace the key is removed and an EventChanged names it.
func SecretGrace(d time.Duration) VaultSourceOption {
	return func(s *vaultSource) { s.grace = d }
}

// WithVaultSource adds every secret of a vault as a configuration key, as .NET's
// AddAzureKeyVault does: Database--Password becomes database.password ("--" is the key
// delimiter; SecretPrefix, SecretTags and SecretKeys select and rename). vaultURL is the
// vault's URL (https://myvault.vault.azure.net), its host, or its name (myvault, in the
// provider's cloud); a host:port only when WithAllowedHosts allows it, as for references.
//
// Precedence: values the environment, flags or Set give a key win over the vault; the
// vault's win over the config file and defaults. A key that also holds a reference keeps
// the reference (with a warning), and two secrets mapping to one key give it the one updated
// last (with a warning naming both). Disabled secrets and versions not yet valid are
// skipped; expired ones follow the expiry rules of references. A secret's value is never
// scanned for references.
//
// Load lists the vault (the identity needs the list permission: RBAC "Key Vault Secrets
// User" has it; an access policy needs List) and GETs each secret; Watch lists it every
// refresh interval, adds new secrets (EventChanged names their keys) and GETs only what
// changed. Notify and the Event Grid handler refresh vault-sourced keys too. Status, Health
// and the CLI show them like references.
func WithVaultSource(vaultURL string, opts ...VaultSourceOption) Option {
	return func(o *options) {
		s := &vaultSource{raw: vaultURL}
		for _, opt := range opts {
			opt(s)
		}
		o.vaultSources = append(o.vaultSources, s)
	}
}

// vaultSource is one WithVaultSource.
type vaultSource struct {
	raw    string // as given
	host   string // lowercase vault host
	prefix string
	tags   map[string]string
	mapKey func(string) (string, bool)
	grace  time.Duration
}

// resolveHost checks the source's vault against what references may name.
func (s *vaultSource) resolveHost(pc parseConfig) error {
	v := strings.ToLower(strings.TrimSpace(s.raw))
	v = strings.TrimSuffix(strings.TrimPrefix(v, "https://"), "/")
	host, err := grammar.VaultHost(v, pc)
	if err != nil {
		return fmt.Errorf("viperkv: New: WithVaultSource(%q): not a vault this provider may read (%s: %s)", s.raw, err.Status, err.Reason)
	}
	s.host = host
	return nil
}

// key maps a secret name to a config key, or false to skip it.
func (s *vaultSource) key(name string) (string, bool) {
	n := name
	if s.prefix != "" {
		if !strings.HasPrefix(strings.ToLower(n), s.prefix) {
			return "", false
		}
		n = n[len(s.prefix):]
	}
	if s.mapKey != nil {
		k, ok := s.mapKey(n)
		return strings.ToLower(k), ok && k != ""
	}
	k := strings.ToLower(strings.ReplaceAll(n, "--", "."))
	if k == "" || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") || strings.Contains(k, "..") {
		return "", false
	}
	return k, true
}

// imported is one vault-sourced key.
type imported struct {
	ref     Reference
	updated time.Time
	missing time.Time // when the secret stopped being listed; zero while it is
}

// vaultImports is what the vault sources gave, by key. The caller holds updateMu.
type vaultImports map[string]imported

// VaultSourceStatus is what one WithVaultSource found when it last listed its vault.
type VaultSourceStatus struct {
	Vault    string         // the vault's host
	Listed   int            // secrets the vault listed
	Imported int            // keys the source gives (a key the environment or a reference wins still counts)
	Skipped  map[string]int // secrets left out, by reason: "filtered", "disabled", "not yet valid", "collision", "section" (other secrets lie below its key), "malformed" (an item that names no secret of the vault)
	Err      error          // why the list failed, if it did (the source's keys keep their values)
}

// VaultSources reports each WithVaultSource's last list, in the order given; nil before
// the first Load.
func (p *Provider) VaultSources() []VaultSourceStatus {
	if s := p.sources.stats.Load(); s != nil {
		return slices.Clone(*s)
	}
	return nil
}

// VaultSourceError says a vault source could not be listed. Load returns it (joined with
// any *LoadError); the keys the vault gave before keep their values.
type VaultSourceError struct {
	Vault  string // the vault's host
	Status Status
	Reason string // never a value
}

// Error names the vault, the status and the reason.
func (e *VaultSourceError) Error() string {
	return fmt.Sprintf("viperkv: vault source %s: %s: %s", e.Vault, e.Status, e.Reason)
}

// sourcesState is what the vault sources gave, and when they are listed again. updateMu
// guards it; stats is read without it.
type sourcesState struct {
	imports vaultImports                        // the keys the sources gave at the last import
	next    time.Time                           // when Watch lists the sources again
	at      time.Time                           // when they were last listed
	stats   atomic.Pointer[[]VaultSourceStatus] // what each source found at its last list
}

// importVaults lists every vault source and returns the keys they give now, keeping the
// keys of secrets that disappeared within their grace (and those of a vault that could
// not be listed), and the lists it made, for the cycle's version checks. The caller holds
// updateMu.
func (p *Provider) importVaults(ctx context.Context, prev vaultImports, now time.Time) (vaultImports, map[string]driver.Listing, error) {
	p.sources.at, p.sources.next = now, now.Add(jitter(p.opts.refreshInterval, 0.1))
	out := vaultImports{}
	made := map[string]driver.Listing{}
	listed := map[string]bool{} // keys a secret listed now gives, across the sources
	var errs []error
	// The vaults are listed at once (a vault's pages follow each other, vaults need not).
	type listing struct {
		driver.Listing
		err error
	}
	lists := make([]listing, len(p.opts.vaultSources))
	var wg sync.WaitGroup
	for i, s := range p.opts.vaultSources {
		wg.Go(func() {
			// Under updateMu: each list is bounded by the fetch timeout.
			lctx, cancel := context.WithTimeout(ctx, p.opts.fetchTimeout)
			defer cancel()
			lists[i].Listing, lists[i].err = p.reader.List(lctx, s.host, 0)
		})
	}
	wg.Wait()
	stats := make([]VaultSourceStatus, len(p.opts.vaultSources))
	defer func() {
		for k, im := range out {
			for i, s := range p.opts.vaultSources {
				if im.ref.Vault == s.host && s.gives(im.ref.Name, k) {
					stats[i].Imported++
				}
			}
		}
		p.sources.stats.Store(&stats)
	}()
	for i, s := range p.opts.vaultSources {
		l, err := lists[i].Listing, lists[i].err
		st := &stats[i]
		*st = VaultSourceStatus{Vault: s.host, Listed: len(l.Props) + l.Malformed, Skipped: map[string]int{}, Err: err}
		if err != nil {
			e := driver.AsError(err)
			ve := &VaultSourceError{Vault: s.host, Status: statusOf(e.Kind), Reason: e.Reason}
			if e.Kind == driver.KindForbidden && e.Inner == "" { // an inner code's reason names the fix already
				ve.Reason += ": the identity may not list the vault's secrets (grant Key Vault Secrets User, or the List permission of an access policy)"
			}
			errs = append(errs, ve)
			for k, im := range prev {
				if im.ref.Vault == s.host {
					out[k] = im // nothing is lost because a list failed
				}
			}
			continue
		}
		made[s.host] = l
		if l.Malformed > 0 {
			st.Skipped["malformed"] = l.Malformed
			p.opts.logger.Warn("viperkv: a vault source's list has items that name no secret of the vault; skipped",
				"vault", s.host, "items", l.Malformed)
		}
		untagged := map[string]bool{} // secrets the source takes by name whose current version lacks its tags
		for _, sp := range l.Props {
			k, ok := s.key(sp.Name)
			if ok && !s.matches(sp.Tags) {
				untagged[strings.ToLower(sp.Name)] = true
			}
			if !ok || !s.matches(sp.Tags) {
				st.Skipped["filtered"]++
				continue
			}
			if !sp.Enabled || (sp.NotBefore != nil && now.Before(*sp.NotBefore)) {
				// Skipped; a key it gave before is kept within the grace, like a deleted
				// one: its fetch says why (EventError), its last good value stays.
				if !sp.Enabled {
					st.Skipped["disabled"]++
				} else {
					st.Skipped["not yet valid"]++
				}
				continue
			}
			var updated time.Time
			if sp.Updated != nil {
				updated = *sp.Updated
			}
			im := imported{ref: Reference{Vault: s.host, Name: sp.Name}, updated: updated}
			if other, ok := out[k]; ok && listed[k] {
				winner, loser := im, other
				if other.updated.After(im.updated) {
					winner, loser = other, im
				}
				p.opts.logger.Warn("viperkv: two secrets map to one key; the one updated last wins",
					"key", k, "vault", s.host, "secret", winner.ref.Name, "other_secret", loser.ref.Name)
				im = winner
				st.Skipped["collision"]++
			}
			out[k], listed[k] = im, true
		}
		for k, old := range prev {
			if old.ref.Vault != s.host || listed[k] || !s.gives(old.ref.Name, k) {
				continue
			}
			if untagged[strings.ToLower(old.ref.Name)] {
				// The tags are a boundary some users rely on: a version without them is not
				// served, and its key goes at once, as a fresh provider would not have it.
				p.opts.logger.Warn("viperkv: a vault-sourced secret's current version lacks the source's tags; its key is removed",
					"key", k, "vault", s.host, "secret", old.ref.Name)
				continue
			}
			if old.missing.IsZero() {
				old.missing = now
			}
			if s.grace > 0 && now.Sub(old.missing) >= s.grace {
				p.opts.logger.Info("viperkv: a vault-sourced key is removed: its secret is gone past the grace",
					"key", k, "vault", s.host, "secret", old.ref.Name)
				continue
			}
			out[k] = old
		}
	}
	// A key with other keys below it is a section: a secret naming it would replace them
	// (Database beside Database--Host; .NET's ConnectionStrings beside
	// ConnectionStrings--Default). A section is made of its children; the secret naming it
	// is skipped.
	parents := map[string]bool{}
	for k := range out {
		for i := strings.IndexByte(k, '.'); i >= 0; i = next(k, i) {
			parents[k[:i]] = true
		}
	}
	for k, im := range out {
		if !parents[k] {
			continue
		}
		p.opts.logger.Warn("viperkv: a vault secret names a section that other secrets fill; skipped",
			"key", k, "vault", im.ref.Vault, "secret", im.ref.Name)
		delete(out, k)
		for i, s := range p.opts.vaultSources {
			if im.ref.Vault == s.host && s.gives(im.ref.Name, k) {
				stats[i].Skipped["section"]++
			}
		}
	}
	return out, made, errors.Join(errs...)
}

// next returns the index of the '.' after the one at i in k, or -1.
func next(k string, i int) int {
	if j := strings.IndexByte(k[i+1:], '.'); j >= 0 {
		return i + 1 + j
	}
	return -1
}

// gives reports whether the source maps the secret name to key (so a secret that is gone
// is kept by its own source only).
func (s *vaultSource) gives(name, key string) bool {
	k, ok := s.key(name)
	return ok && k == key
}

// matches reports whether a secret with tags carries every tag the source asks for.
func (s *vaultSource) matches(tags map[string]string) bool {
	for k, v := range s.tags {
		if got, ok := tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// placeImports puts the vault-sourced keys in base's config layer (the vault's values win
// over the file and the defaults), under the keys the environment, a flag or Set does not
// set and no reference holds, and returns the secret each key it placed stands for. An
// import is a structured value: its key holds a placeholder and the scan takes the secret
// from the returned map, so a listed name is never rendered into a reference and parsed
// again. Keys use the Viper's delimiter where a source's use ".".
func (p *Provider) placeImports(base *viper.Viper, ims vaultImports) map[string]Reference {
	if len(ims) == 0 {
		return nil
	}
	l := viperlayers.Of(base)
	if *l.Config == nil {
		*l.Config = map[string]any{}
	}
	delim := *l.KeyDelim
	placed := map[string]Reference{}
	for _, k := range slices.Sorted(maps.Keys(ims)) {
		im := ims[k]
		key := strings.ReplaceAll(k, ".", delim)
		switch viperlayers.Source(base, key) {
		case viperlayers.LayerOverride, viperlayers.LayerFlag, viperlayers.LayerEnv:
			p.opts.logger.Debug("viperkv: the environment, a flag or Set gives a vault-sourced key; it wins", "key", key)
			continue
		}
		switch cur := base.Get(key).(type) {
		case string:
			if HasReference(cur) {
				p.opts.logger.Warn("viperkv: a key holds a reference and a vault source gives it too; the reference wins",
					"key", key, "vault", im.ref.Vault, "secret", im.ref.Name)
				continue
			}
		case map[string]any:
			p.opts.logger.Warn("viperkv: a vault-sourced key would replace a section of the configuration; skipped", "key", key, "secret", im.ref.Name)
			continue
		}
		path := strings.Split(key, delim)
		if !canSet(*l.Config, path) {
			p.opts.logger.Warn("viperkv: a vault-sourced key lies under a key that holds a value; skipped", "key", key, "secret", im.ref.Name)
			continue
		}
		setPath(*l.Config, path, "") // a placeholder: the scan renders the import from placed
		placed[key] = im.ref
	}
	return placed
}

// canSet reports whether setting path would replace no value on the way.
func canSet(tree map[string]any, path []string) bool {
	m := tree
	for _, p := range path[:len(path)-1] {
		next, ok := m[p]
		if !ok {
			return true
		}
		if m, ok = next.(map[string]any); !ok {
			return false
		}
	}
	return true
}

// reimport lists the vault sources when their time has come and, when the keys they give
// changed (a secret added, or gone past its grace), publishes the new settings: new keys
// are fetched and an EventChanged names them. It returns the lists it made, which the
// cycle's version checks use rather than list a vault twice. The caller holds updateMu.
func (p *Provider) reimport(ctx context.Context, now time.Time) map[string]driver.Listing {
	if len(p.opts.vaultSources) == 0 || now.Before(p.sources.next) {
		return nil
	}
	ims, made, err := p.importVaults(ctx, p.sources.imports, now)
	if err != nil {
		p.opts.logger.Warn("viperkv: listing a vault source failed; its keys keep their values", "err", err.Error())
	}
	same := len(ims) == len(p.sources.imports)
	for k, im := range ims {
		if old, ok := p.sources.imports[k]; !ok || old.ref != im.ref {
			same = false
		}
	}
	p.sources.imports = ims
	if same {
		return made
	}
	tree, sc, err := p.settings()
	if err != nil {
		p.opts.logger.Warn("viperkv: reading the settings for new vault-sourced keys failed", "err", err.Error())
		return made
	}
	fresh := p.unheld(sc)
	_, _ = p.update(ctx, SourcePoll, tree, sc, fresh)
	return made
}

// sourceTakes reports whether a vault source of vault imports the secret name, with tags
// (nil: not known yet, so not checked).
func (p *Provider) sourceTakes(vault, name string, tags map[string]string) bool {
	for _, s := range p.opts.vaultSources {
		if _, ok := s.key(name); ok && s.host == vault && (tags == nil || s.matches(tags)) {
			return true
		}
	}
	return false
}

// untagged drops from fetched the versions of vault-sourced secrets that lack their
// source's tags (a rotation without them): such a version is never served, and the sources
// are listed again at once, which removes the key. The caller holds updateMu.
func (p *Provider) untagged(sc *scan, fetched map[Reference]*secret) {
	if len(sc.imported) == 0 {
		return
	}
	onlyImported := map[Reference]bool{}
	for _, r := range sc.imported {
		onlyImported[r.key()] = true
	}
	for key, t := range sc.templates {
		if _, imp := sc.imported[key]; !imp {
			for _, r := range refsOf(t) {
				delete(onlyImported, r.key()) // a reference of the app's own reads it too
			}
		}
	}
	for r, s := range fetched {
		if onlyImported[r] && s.status == StatusResolved && !p.sourceTakes(r.Vault, r.Name, orEmpty(s.tags)) {
			p.opts.logger.Warn("viperkv: a vault-sourced secret's new version lacks the source's tags; not served",
				"vault", r.Vault, "secret", r.Name, "version", s.version)
			delete(fetched, r)
			p.sources.next = time.Time{}
			p.poke()
		}
	}
}

// orEmpty is tags, or an empty map: nil tags mean "not known" to sourceTakes.
func orEmpty(tags map[string]string) map[string]string {
	if tags == nil {
		return map[string]string{}
	}
	return tags
}

// importsFrom reports whether a vault source reads the vault host.
func (p *Provider) importsFrom(host string) bool {
	for _, s := range p.opts.vaultSources {
		if s.host == host {
			return true
		}
	}
	return false
}
