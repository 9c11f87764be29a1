package viperkv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/viperkv/viperkv/internal/kvname"

	"go.opentelemetry.io/otel/attribute"
)

// NoticeType is what a [Notice] reports. The values are Key Vault's Event Grid event
// types.
type NoticeType string

// Key Vault's secret event types. Key Vault publishes no event when a secret is disabled
// or deleted: polling (Watch) notices those.
const (
	// NoticeNewVersion: a new version of the secret was created (a rotation).
	NoticeNewVersion NoticeType = "Microsoft.KeyVault.SecretNewVersionCreated"
	// NoticeNearExpiry: the version expires soon (Key Vault says so 30 days ahead).
	NoticeNearExpiry NoticeType = "Microsoft.KeyVault.SecretNearExpiry"
	// NoticeExpired: the version has expired.
	NoticeExpired NoticeType = "Microsoft.KeyVault.SecretExpired"
)

// Notice is a change Key Vault reported for one secret: the content of a Key Vault
// Event Grid event, however it reached the app (the Event Grid handler, a Service Bus
// subscription, a queue). It holds no value.
type Notice struct {
	Type NoticeType
	// ID is the event's id. A change whose ID was seen recently is a duplicate delivery
	// and is ignored; "" skips that check.
	ID string
	// Vault is the vault's name ("myvault", in the provider's cloud), host
	// ("myvault.vault.azure.net") or URL.
	Vault string
	// Name is the secret's name (Key Vault compares names case-insensitively).
	Name string
	// Version is the version the change is about.
	Version string
	// NotBefore and Expires are the version's validity window; zero when unset.
	NotBefore, Expires time.Time
}

// Notify refreshes the one secret c names, as the Event Grid handler does for each event it
// accepts, for apps that receive Key Vault's events some other way (for example Event Grid
// to a Service Bus topic with a subscription per instance).
//
// For NoticeNewVersion it fetches that secret's latest version, after a random delay of up
// to WithPushDelay, publishes the configuration and sends EventChanged with Source
// SourcePush to OnChange watchers. It fetches nothing when no versionless reference names
// the secret, when the provider holds that version already or held it before (a late or
// duplicate delivery), or when the same change is being handled already. For
// NoticeNearExpiry and NoticeExpired of the version in use it updates the status and sends
// the events Watch would send, without a fetch. Pinned references are never touched.
//
// A change is untrusted input. A new version of a secret that a vault source
// ([WithVaultSource]) would import but that no key holds yet costs one GET, to learn that
// the secret exists and the source takes it; only then does Watch list the source early, at
// most once every 10 seconds. A change naming a secret nothing would take costs nothing.
//
// Notify returns when the change has been handled: nil, a *LoadError when the secret
// could not be fetched (it keeps its last good value and Watch retries it), ctx's error,
// or an error naming a missing field. Before the first Load it returns an error and does
// nothing: the Load fetches the latest versions anyway.
func (p *Provider) Notify(ctx context.Context, c Notice) (err error) {
	ctx, done, err := p.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	ctx, span := p.tel.span(ctx, "viperkv.Notify", SourcePush)
	span.SetAttributes(attrVault.String(c.Vault), attrSecret.String(c.Name), attribute.String("viperkv.change", string(c.Type)))
	defer func() { endSpan(span, nil, err) }()
	c, err = p.normalizeChange(c)
	if err != nil {
		return err
	}
	cur := p.cur.Load()
	if cur == nil {
		return ErrNotLoaded
	}
	log := p.opts.logger.With("id", c.ID, "type", c.Type, "vault", c.Vault, "secret", c.Name, "version", c.Version)
	ignore := func(why string) error {
		log.Debug("viperkv: change ignored: " + why)
		return nil
	}
	key := pushKey{vault: c.Vault, name: strings.ToLower(c.Name)}
	if len(versionless(cur, key)) == 0 {
		if c.Type == NoticeNewVersion && p.importsFrom(c.Vault) {
			return p.newToSource(ctx, c, key, ignore)
		}
		return ignore("no versionless reference names the secret")
	}
	if p.push.SeenID(c.ID) {
		return ignore("duplicate delivery")
	}
	switch held := heldVersions(cur, key); {
	case c.Type == NoticeNewVersion && allEqual(held, c.Version):
		p.push.RememberID(c.ID)
		return ignore("version already held")
	case !slices.Contains(held, c.Version) && p.push.WasHeld(key, c.Version):
		p.push.RememberID(c.ID)
		return ignore("an older version than the one held")
	case c.Type != NoticeNewVersion && slices.Contains(held, c.Version):
		return p.noteExpiry(ctx, c, key)
	}
	// A new version, or an expiry notice for a version not seen yet: fetch the latest.
	if !p.push.Start(key, c.Version) {
		return ignore("the same change is being handled")
	}
	defer p.push.Finish(key, c.Version)
	if err := p.pushDelay(ctx); err != nil {
		return err
	}
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	cur = p.cur.Load()
	refs := versionless(cur, key)
	if c.Type == NoticeNewVersion && allEqual(heldVersions(cur, key), c.Version) {
		p.push.RememberID(c.ID)
		return ignore("version fetched meanwhile")
	}
	snap, err := p.update(ctx, SourcePush, cur.base, cur.scan, refs)
	if err != nil {
		return fmt.Errorf("viperkv: Notify: %w", err)
	}
	p.push.RememberID(c.ID)
	var failed []ReferenceStatus
	for _, st := range failures(snap.status) {
		if st.Reference.Version == "" && st.Reference.Vault == key.vault && strings.EqualFold(st.Reference.Name, key.name) {
			failed = append(failed, st)
		}
	}
	if len(failed) > 0 {
		return &LoadError{Failed: failed}
	}
	return nil
}

// pushDelay waits WithPushDelay's random delay, or until ctx ends.
func (p *Provider) pushDelay(ctx context.Context) error {
	max := p.opts.pushDelay
	if max <= 0 {
		return nil
	}
	t := time.NewTimer(rand.N(max + 1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// minEarlyImport is how soon after a vault source's last list a notice of a new secret may
// list it again: notices of new secrets come in bursts (a deployment creates many), and a
// stream of forged ones must not become a stream of lists.
const minEarlyImport = 10 * time.Second

// newToSource handles a new version of a secret no key holds, in a vault a source imports.
// A notice is untrusted: one GET says whether the secret exists and a source takes it, so
// a forged or stale notice costs that request and nothing more. A secret that is new
// brings the sources' next list forward, to at most one every minEarlyImport.
func (p *Provider) newToSource(ctx context.Context, c Notice, key pushKey, ignore func(string) error) error {
	if kvname.SecretNameProblem(c.Name) != "" {
		return ignore("not a secret name")
	}
	if !p.sourceTakes(c.Vault, c.Name, nil) {
		return ignore("no vault source takes the secret")
	}
	if p.push.SeenID(c.ID) {
		return ignore("duplicate delivery")
	}
	if !p.push.Start(key, c.Version) {
		return ignore("the same change is being handled")
	}
	defer p.push.Finish(key, c.Version)
	if err := p.pushDelay(ctx); err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, p.opts.fetchTimeout)
	sv, err := p.reader.Get(fctx, c.Vault, c.Name, "")
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p.push.RememberID(c.ID)
	if err != nil {
		return ignore("the secret could not be fetched: " + err.Error())
	}
	if !p.sourceTakes(c.Vault, c.Name, sv.Tags) {
		return ignore("no vault source takes the secret (tags)")
	}
	p.updateMu.Lock()
	if next := p.sources.at.Add(minEarlyImport); next.Before(p.sources.next) {
		p.sources.next = next
	}
	p.updateMu.Unlock()
	p.poke()
	return ignore("new to a vault source; the source is listed again")
}

// noteExpiry applies Key Vault's word that the version in use is near expiry or expired:
// the same status and events as the poll path, without a fetch.
func (p *Provider) noteExpiry(ctx context.Context, c Notice, key pushKey) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	cur := p.cur.Load()
	for _, r := range versionless(cur, key) {
		p.sched.tell(r, expiryNote{version: c.Version, expired: c.Type == NoticeExpired, expires: c.Expires})
	}
	_, err := p.update(ctx, SourcePush, cur.base, cur.scan, nil)
	p.push.RememberID(c.ID)
	return err
}

// normalizeChange trims and case-folds c's fields (Azure's own sample event carries an
// "ObjectName " key) and turns the vault into a host.
func (p *Provider) normalizeChange(c Notice) (Notice, error) {
	c.Type = NoticeType(strings.TrimSpace(string(c.Type)))
	c.ID = strings.TrimSpace(c.ID)
	c.Name = strings.TrimSpace(c.Name)
	c.Version = strings.ToLower(strings.TrimSpace(c.Version))
	v := strings.ToLower(strings.TrimSpace(c.Vault))
	if strings.Contains(v, "://") {
		if u, err := url.Parse(v); err == nil {
			v = u.Host
		}
	}
	v = strings.TrimSuffix(v, "/")
	if v != "" && !strings.Contains(v, ".") {
		v += "." + p.opts.cloud.VaultSuffix()
	}
	c.Vault = v
	var missing []string
	switch {
	case c.Vault == "":
		missing = append(missing, "Vault")
	case c.Name == "":
		missing = append(missing, "Name")
	}
	if c.Version == "" {
		missing = append(missing, "Version")
	}
	if len(missing) > 0 {
		return c, fmt.Errorf("viperkv: Notify: the change has no %s", strings.Join(missing, " or "))
	}
	switch c.Type {
	case NoticeNewVersion, NoticeNearExpiry, NoticeExpired:
	default:
		return c, fmt.Errorf("viperkv: Notify: unknown change type %q", c.Type)
	}
	return c, nil
}

// pushKey names a secret regardless of version and of the case its name was written in.
type pushKey struct{ vault, name string }

func pushKeyOf(r Reference) pushKey { return pushKey{vault: r.Vault, name: strings.ToLower(r.Name)} }

// versionless returns cur's versionless references to the secret key names.
func versionless(cur *snapshot, key pushKey) []Reference {
	var out []Reference
	for r := range cur.secrets {
		if r.Version == "" && pushKeyOf(r) == key {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, compareRefs)
	return out
}

// heldVersions returns the versions cur holds for key's versionless references ("" for
// one without a good value).
func heldVersions(cur *snapshot, key pushKey) []string {
	var out []string
	for _, r := range versionless(cur, key) {
		v := ""
		if s := cur.secrets[r]; s.has {
			v = strings.ToLower(s.version)
		}
		out = append(out, v)
	}
	return out
}

func allEqual(vs []string, v string) bool {
	for _, x := range vs {
		if x != v {
			return false
		}
	}
	return len(vs) > 0
}

// recordHistory remembers the versions next replaced in prev. The caller holds updateMu.
func (p *Provider) recordHistory(prev *snapshot, secrets map[Reference]*secret) {
	if prev == nil {
		return
	}
	for r, old := range prev.secrets {
		if s, ok := secrets[r]; r.Version == "" && old.has && (!ok || !s.has || s.version != old.version) {
			p.push.HeldBefore(pushKeyOf(r), strings.ToLower(old.version))
		}
	}
}
