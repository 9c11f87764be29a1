package viperkv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"time"

	"go.opentelemetry.io/otel/metric"

	snapfile "github.com/viperkv/viperkv/internal/snapshot"
)

// WithSnapshot keeps an encrypted last-known-good snapshot of the secrets at path, so a
// service that starts while Key Vault, Microsoft Entra ID or the identity endpoint cannot
// be reached still starts with the values it last had. key is 32 bytes (ParseSnapshotKey
// reads one from base64 or hex); keep it off the disk that holds the file, for example in
// an environment variable the platform sets or a mounted secret.
//
// After each update that fetched a secret, the provider writes the secrets it holds to
// path (AES-256-GCM, bound to this configuration's references, written atomically with
// mode 0600). The first Load uses the snapshot only when every fetch failed because
// nothing answered (a connection refused or reset, a host that does not resolve, a
// timeout, an identity endpoint or Entra ID out of reach, a 5xx or a 429 beyond the retry
// budget), never after an answer such as 401, 403 or 404, which is the truth; and only if
// it is no older than maxAge, counted from the oldest confirmation of a versionless value
// it holds. Each value served from it has the status StatusServedFromSnapshot (not a
// failure of Load), an EventError, a log line and the metric viperkv.snapshot.served, and
// is replaced by the first fetch that succeeds: Watch retries it as it retries a failure.
// A snapshot that is missing, truncated, altered, written with another key or for another
// configuration, too old or from the future is refused with the reason in the log, and
// never half-used.
func WithSnapshot(path string, key []byte, maxAge time.Duration) Option {
	return func(o *options) { o.snapshot = &snapshotSpec{path: path, key: key, maxAge: maxAge} }
}

// ParseSnapshotKey reads a 32-byte snapshot key written as base64 (standard or URL
// alphabet, padded or not) or as 64 hexadecimal digits, for WithSnapshot. Its errors never
// quote the input. Make one with: openssl rand -base64 32
func ParseSnapshotKey(s string) ([]byte, error) {
	k, err := snapfile.ParseKey(s)
	if err != nil {
		return nil, fmt.Errorf("viperkv: snapshot key: %w", err)
	}
	return k, nil
}

type snapshotSpec struct {
	path   string
	key    []byte
	maxAge time.Duration
}

// snapshotState is the provider's snapshot: its settings and when it was last written.
// The fields after spec are guarded by updateMu.
type snapshotState struct {
	spec      snapshotSpec
	written   time.Time
	writtenOf map[Reference]*secret // the secrets the last write held
}

func (sp *snapshotSpec) check() error {
	switch {
	case sp == nil:
		return nil
	case sp.path == "":
		return errors.New("viperkv: New: WithSnapshot: empty path")
	case len(sp.key) != snapfile.KeySize:
		return fmt.Errorf("viperkv: New: WithSnapshot: the key is %d bytes, want %d (ParseSnapshotKey reads one)", len(sp.key), snapfile.KeySize)
	case sp.maxAge <= 0:
		return fmt.Errorf("viperkv: New: WithSnapshot: maxAge %v: need a positive duration", sp.maxAge)
	}
	return nil
}

// unreachable reports whether every fetch failed because nothing answered: the one case in
// which the snapshot may stand in for the vault.
func unreachable(fetched map[Reference]*secret) bool {
	if len(fetched) == 0 {
		return false
	}
	for _, s := range fetched {
		if s.status == StatusResolved || !(s.transient || s.status == StatusVaultNotFound) {
			return false
		}
	}
	return true
}

func bindingOf(refs []Reference) [32]byte {
	out := make([]snapfile.Ref, len(refs))
	for i, r := range refs {
		out[i] = snapfile.Ref{Vault: r.Vault, Name: r.Name, Version: r.Version}
	}
	return snapfile.Binding(out)
}

// fromSnapshot replaces the failed fetches of a first Load that reached no vault with the
// snapshot's values, judged as fetched values are (expiry, certificates). It returns the
// events to announce; it logs why the snapshot was not used when it exists but is refused.
func (p *Provider) fromSnapshot(ctx context.Context, sc *scan, fetched map[Reference]*secret, now time.Time) []Event {
	ss := p.snap
	if ss == nil || !unreachable(fetched) {
		return nil
	}
	log := p.opts.logger
	snap, err := snapfile.Read(ss.spec.path, ss.spec.key, bindingOf(sc.distinct()), ss.spec.maxAge, now)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			log.Warn("viperkv: no vault answered, and there is no snapshot to start from", "path", ss.spec.path)
		} else {
			log.Error("viperkv: no vault answered, and the snapshot is refused", "path", ss.spec.path, "error", err)
		}
		return nil
	}
	for _, w := range snap.Warnings {
		log.Warn("viperkv: snapshot", "path", ss.spec.path, "warning", w)
	}
	age, _ := snap.Age(now)
	entries := snap.ByRef()
	var evs []Event
	served := 0
	for r, failed := range fetched {
		e, ok := entries[snapfile.Ref{Vault: r.Vault, Name: r.Name, Version: r.Version}.Canonical()]
		if !ok {
			continue
		}
		s := &secret{value: e.Value, version: e.Version, contentType: e.ContentType, tags: e.Tags,
			expires: e.Expires, notBefore: e.NotBefore, has: true, status: StatusResolved, snapshotAt: e.Fetched}
		judge(s, now)
		if !s.has {
			log.Warn("viperkv: a snapshot value is not served", "vault", r.Vault, "secret", r.Name, "status", s.status, "reason", s.reason)
			continue
		}
		s.status = StatusServedFromSnapshot
		s.reason = fmt.Sprintf("no vault answered (%s: %s); served from the snapshot, confirmed current %s ago",
			failed.status, failed.reason, now.Sub(e.Fetched).Round(time.Second))
		fetched[r] = s
		served++
		p.tel.snapshotServed.Add(ctx, 1, metric.WithAttributes(attrVault.String(r.Vault)))
		evs = append(evs, Event{Kind: EventError, Source: SourceRefresh, Time: now, Secret: r, NewVersion: s.version,
			Status: s.status, Err: &ReferenceError{Key: r.String(), Status: s.status, Reason: s.reason}, ServedBy: r.Vault})
	}
	log.Warn("viperkv: no vault answered; serving values from the snapshot", "path", ss.spec.path,
		"written", snap.Written, "age", age.Round(time.Second), "served", served, "references", len(fetched))
	return evs
}

// persist writes the snapshot after an update that fetched a secret, when what it holds
// changed or the last write is getting old (confirmations keep it young). The caller holds
// updateMu; the write is one small local file, fsynced.
func (p *Provider) persist(snap *snapshot, fetched map[Reference]*secret, now time.Time) {
	ss := p.snap
	if ss == nil || snap == nil {
		return
	}
	fresh := false
	for _, s := range fetched {
		fresh = fresh || s.status == StatusResolved
	}
	if !fresh || (maps.Equal(snap.secrets, ss.writtenOf) && now.Sub(ss.written) < max(ss.spec.maxAge/10, time.Minute)) {
		return
	}
	var entries []snapfile.Entry
	for r, s := range snap.secrets {
		if !s.has {
			continue
		}
		confirmed := s.snapshotAt
		if s.status != StatusServedFromSnapshot {
			confirmed = now
			if st := p.sched.polls[r]; st != nil && !st.ok.IsZero() {
				confirmed = st.ok
			}
		}
		entries = append(entries, snapfile.Entry{Ref: snapfile.Ref{Vault: r.Vault, Name: r.Name, Version: r.Version},
			Version: s.version, Value: s.value, ContentType: s.contentType, Tags: s.tags,
			Expires: s.expires, NotBefore: s.notBefore, Fetched: confirmed})
	}
	err := snapfile.Write(ss.spec.path, ss.spec.key, snapfile.Snapshot{Written: now, Binding: bindingOf(snap.scan.distinct()), Entries: entries})
	if err != nil {
		p.opts.logger.Error("viperkv: snapshot not written", "path", ss.spec.path, "error", err)
		return
	}
	ss.written, ss.writtenOf = now, snap.secrets
	p.opts.logger.Debug("viperkv: snapshot written", "path", ss.spec.path, "secrets", len(entries))
}
