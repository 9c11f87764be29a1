package viperkv

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/viperkv/viperkv/internal/driver"
)

// VersionCheck is how Watch finds new versions of versionless references.
type VersionCheck string

// Version check modes.
const (
	// VersionCheckAuto chooses per vault whichever costs fewer requests a cycle: listing
	// when the vault is small next to the number of its secrets the configuration watches,
	// a GET per secret otherwise. It is the default.
	VersionCheckAuto VersionCheck = "auto"
	// VersionCheckList lists each vault's secrets (25 a page) every cycle and GETs only
	// those whose attributes changed.
	VersionCheckList VersionCheck = "list"
	// VersionCheckGet GETs every versionless secret every cycle.
	VersionCheckGet VersionCheck = "get"
)

// WithVersionCheck sets how Watch finds new versions (default VersionCheckAuto).
//
// A refresh cycle by listing costs ceil(N/25) requests for a vault of N secrets, however
// many of them the configuration references, plus one GET per secret that changed: 20
// secrets watched in a vault of 20 cost 1 request a cycle instead of 20. Listing a shared
// vault of 2,000 secrets to watch 3 of them costs 80; auto sees that (it learns a vault's
// size from its first list, which it stops early when it would cost more than the GETs)
// and GETs instead, looking again every hour. Listing needs the list permission (RBAC "Key
// Vault Secrets User" has it; an access policy needs List): without it, a vault falls back
// to GETs and the provider logs that once.
//
// Key Vault's timestamps have one-second resolution, so a version created within the same
// second as the one held could list as unchanged. When a list shows a change less than two
// seconds old by the vault's clock, the GET waits until it is two seconds old (at most two
// seconds), so that no version of the same second can follow it: a rotation costs each
// replica one GET. A secret fetched within two seconds of its last change all the same
// (by Load, by push, or when the vault's clock moved), by the Date of the vault's answer,
// is checked by GET once more on the next cycle.
func WithVersionCheck(mode VersionCheck) Option {
	return func(o *options) { o.versionCheck = mode }
}

// sameSecond is how soon after a version's last change a fetch leaves it ambiguous to a
// list: one second of timestamp resolution, one of the Date header's (the time the fetch is
// measured by, so this machine's clock does not matter) or, without one, of clock skew.
const sameSecond = 2 * time.Second

// vaultClock is how far a vault's clock is ahead of this machine's (behind when negative),
// at least: learned from the Date of its answers, which is truncated to the second and
// was written before this machine read it.
type vaultClock struct {
	ahead time.Duration
	at    time.Time // when ahead was learned, by this machine's clock
}

// noteClock learns from an answer of vault, dated served by the vault and read by now. It
// keeps the tightest bound, and starts afresh after relist in case either clock moved. The
// bound decides only when a GET is made (settle): a bound too high costs one more GET,
// the re-check of record, never a missed version.
func (s *schedule) noteClock(vault string, served, now time.Time) {
	if s.clocks == nil {
		s.clocks = map[string]vaultClock{}
	}
	ahead := served.Sub(now)
	if c, ok := s.clocks[vault]; !ok || ahead > c.ahead || now.Sub(c.at) >= relist {
		s.clocks[vault] = vaultClock{ahead: ahead, at: now}
	}
}

// settle returns when a GET of a secret listed as changed at updated (to the second, by
// the vault's clock) can no longer be followed by another version with the same
// timestamp: when the vault's clock has passed updated+sameSecond. A list read at readAt
// (this machine's clock) showing newest as its latest change was served at newest or
// later by the vault's clock, so that time is at most sameSecond after readAt; the Date
// of the vault's answers may say it is sooner (noteClock).
func (s *schedule) settle(vault string, updated, newest, readAt time.Time) time.Time {
	at := readAt.Add(updated.Add(sameSecond).Sub(newest))
	if c, ok := s.clocks[vault]; ok {
		if t := updated.Add(sameSecond).Add(-c.ahead); t.Before(at) {
			at = t
		}
	}
	return at
}

// relist is how long auto trusts what it learned of a vault (too big to list, or list
// forbidden) before it tries listing again.
const relist = time.Hour

// vaultList is what the provider learned of listing one vault.
type vaultList struct {
	size     int       // secrets as last listed (a lower bound when the list was cut short)
	listedAt time.Time // when size was learned; zero: never
	denied   time.Time // when listing was refused (403); zero: never or it worked since
}

// listPlan decides whether the cycle lists vault, watching k of its secrets, and how many
// pages it may read (0: all). The caller holds updateMu.
func (p *Provider) listPlan(vault string, k int, now time.Time) (list bool, maxPages int) {
	st := p.lists[vault]
	if st == nil {
		st = &vaultList{}
		p.lists[vault] = st
	}
	switch {
	case p.opts.versionCheck == VersionCheckGet:
		return false, 0
	case !st.denied.IsZero() && now.Sub(st.denied) < relist:
		return false, 0
	case p.opts.versionCheck == VersionCheckList:
		return true, 0
	case k < 2: // one GET costs no more than one page
		return false, 0
	case st.listedAt.IsZero() || now.Sub(st.listedAt) >= relist:
		return true, k - 1 // a probe: stop where the GETs would have been cheaper
	}
	return max(1, (st.size+24)/25) < k, 0
}

// detect splits the due references into those a GET must fetch, those a list shows
// unchanged, and those to check again later because the vault throttled the list. The
// caller holds updateMu.
func (p *Provider) detect(ctx context.Context, cur *snapshot, due []Reference, lists map[string]driver.Listing, now time.Time) (fetch, confirmed, postponed []Reference) {
	listable := func(r Reference) bool {
		s := cur.secrets[r]
		return r.Version == "" && s != nil && s.has && s.status == StatusResolved && !p.sched.recheck[r]
	}
	byVault := map[string][]Reference{}
	for _, r := range due {
		if !listable(r) {
			fetch = append(fetch, r)
			continue
		}
		byVault[r.Vault] = append(byVault[r.Vault], r)
	}
	for _, vault := range slices.Sorted(maps.Keys(byVault)) {
		// A list checks every secret of the vault: it takes them all, due or not, so the
		// vault's secrets share one cycle instead of each rotation starting its own.
		cands, all := byVault[vault], byVault[vault]
		for _, r := range refreshable(cur) {
			if r.Vault == vault && listable(r) && !slices.Contains(all, r) {
				all = append(all, r)
			}
		}
		list, maxPages := p.listPlan(vault, len(all), now)
		if list {
			cands = all
		}
		if !list {
			fetch = append(fetch, cands...)
			continue
		}
		l, listed := lists[vault]
		var err error
		if !listed && p.importsFrom(vault) {
			// A vault source lists this vault every interval: check with its next list
			// rather than listing twice.
			p.sched.deferTo(cands, p.sources.next)
			continue
		}
		if !listed { // not listed by this cycle's import of a vault source
			// Under updateMu: the list is bounded by the fetch timeout.
			lctx, cancel := context.WithTimeout(ctx, p.opts.fetchTimeout)
			l, err = p.reader.List(lctx, vault, maxPages)
			cancel()
		}
		st := p.lists[vault]
		if err != nil {
			switch e := driver.AsError(err); e.Kind {
			case driver.KindForbidden:
				if st.denied.IsZero() {
					p.opts.logger.Warn("viperkv: the identity may not list the vault's secrets; checking each secret by GET instead",
						"vault", vault, "reason", e.Reason)
				}
				st.denied = now
			case driver.KindThrottled, driver.KindTimeout:
				// The vault is throttling: a GET per secret would multiply the load that
				// throttles it. Check again after the back-off.
				p.opts.logger.Debug("viperkv: listing the vault was throttled; checking again later", "vault", vault, "reason", e.Reason)
				postponed = append(postponed, cands...)
				continue
			default:
				// The list could not finish (a failure, or pages that loop): a GET says.
				p.opts.logger.Debug("viperkv: listing the vault failed; checking each secret by GET this cycle", "vault", vault, "reason", e.Reason)
			}
			fetch = append(fetch, cands...)
			continue
		}
		if !st.denied.IsZero() {
			p.opts.logger.Info("viperkv: the vault's secrets may be listed again", "vault", vault)
			st.denied = time.Time{}
		}
		st.size, st.listedAt = len(l.Props)+l.Malformed, now
		if !l.Complete {
			st.size++ // more than were read
		}
		readAt := time.Now() // the list was served before
		byName := make(map[string]driver.Props, len(l.Props))
		var newest time.Time // the vault's clock had reached it when it served the list
		for _, sp := range l.Props {
			byName[strings.ToLower(sp.Name)] = sp
			if sp.Updated != nil && sp.Updated.After(newest) {
				newest = *sp.Updated
			}
		}
		for _, r := range cands {
			sp, ok := byName[strings.ToLower(r.Name)]
			switch {
			case ok && p.unchanged(r, sp):
				confirmed = append(confirmed, r)
			case ok && sp.Enabled && sp.Updated != nil:
				// A new version (or new attributes). Made less than sameSecond ago, another
				// version could follow it within its second, listing the same: GET it once
				// that second is surely over, rather than now and again on the next cycle.
				if at := p.sched.settle(vault, *sp.Updated, newest, readAt); at.After(readAt) {
					p.sched.recheck[r] = true // by GET, not by the next list
					p.sched.deferTo([]Reference{r}, at)
					continue
				}
				fetch = append(fetch, r)
			default:
				// Disabled, deleted (absent from a complete list), or not reached by a list
				// cut short: a GET says which, with the status a GET gives.
				fetch = append(fetch, r)
			}
		}
	}
	return fetch, confirmed, postponed
}

// unchanged reports whether a list item shows the version the provider last fetched for r,
// enabled, with the same validity window.
func (p *Provider) unchanged(r Reference, sp driver.Props) bool {
	held, ok := p.sched.updated[r]
	return ok && sp.Enabled && sp.Updated != nil && sp.Updated.Equal(held.updated) &&
		equalTime(sp.Expires, held.expires) && equalTime(sp.NotBefore, held.notBefore)
}

func equalTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// checkVersionCheck validates WithVersionCheck's mode.
func checkVersionCheck(m VersionCheck) error {
	switch m {
	case VersionCheckAuto, VersionCheckList, VersionCheckGet:
		return nil
	}
	return fmt.Errorf("viperkv: New: WithVersionCheck(%q): want auto, list or get", string(m))
}
