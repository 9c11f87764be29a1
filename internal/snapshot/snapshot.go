// Package snapshot writes and reads viperkv's encrypted last-known-good snapshot: the secret
// values a provider held after a successful update, kept on disk so that a cold start
// while Key Vault, Entra ID or the identity endpoint is unreachable can still serve them.
//
// The file is encrypted and authenticated with AES-256-GCM under a key derived from the
// caller's 32-byte key with HKDF-SHA256 and a random per-file salt, and bound to one
// configuration (the set of references it was written for). Read returns every entry or
// none: a file that is missing, truncated, altered, written under another key or for
// another configuration, older than maxAge or from the future is refused with an *Error
// that says why, and never with a secret value or a byte of the file in its text.
//
// # Format, version 1
//
//	offset  size  field
//	0       8     magic "\x89VKVSNAP"
//	8       1     format version, 1
//	9       32    binding: SHA-256 of the configuration's references (see Binding)
//	41      32    salt: random, the HKDF salt for this file's AEAD key
//	73      8     length of what follows, big-endian
//	81      12    nonce: random, 96 bits
//	93      n     ciphertext of the JSON payload
//	93+n    16    GCM tag
//
// The AEAD key is HKDF-SHA256(key, salt, "viperkv snapshot v1 AES-256-GCM"), and the whole
// 81-byte header (magic, version, binding, salt and length) is the additional data, so no
// byte of the file can change without the file being refused. The payload holds the time
// the snapshot was written and the entries; the written time is never taken from the
// file's modification time.
package snapshot

import (
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// Limits.
const (
	// KeySize is the length of the key Write and Read take, in bytes.
	KeySize = 32
	// MaxFileSize bounds a snapshot file: Write refuses to write a larger one, and Read
	// refuses to read one without reading it.
	MaxFileSize = 64 << 20
	// MaxEntries bounds the number of entries in a snapshot.
	MaxEntries = 100_000
	// MaxClockSkew is how far in the future a snapshot's written time (or an entry's fetched
	// time) may be before it is refused: clocks of the machine that wrote it and of the one
	// reading it may disagree by this much.
	MaxClockSkew = 5 * time.Minute
)

// The format's fixed parts.
const (
	magic         = "\x89VKVSNAP"
	formatVersion = 1
	hkdfInfo      = "viperkv snapshot v1 AES-256-GCM"
	bindingDomain = "viperkv snapshot binding v1\x00"

	offVersion = len(magic)
	offBinding = offVersion + 1
	offSalt    = offBinding + 32
	offLength  = offSalt + 32
	headerLen  = offLength + 8 // 81

	nonceLen = 12
	tagLen   = 16
	// minLen is the shortest file that can be a snapshot: a header and an empty sealed box.
	minLen = headerLen + nonceLen + tagLen
)

// Ref is a reference to a secret: the vault's host (for example
// "myvault.vault.azure.net", with ":port" only for an explicitly allowed host:port), the
// secret's name, and the pinned version in hex or "" for the latest. Vault, name and
// version compare case-insensitively (as Key Vault does): see Canonical.
type Ref struct {
	Vault, Name, Version string
}

// Canonical returns r with its vault, name and version in ASCII lower case, the form
// Binding hashes and ByRef keys.
func (r Ref) Canonical() Ref {
	return Ref{Vault: lowerASCII(r.Vault), Name: lowerASCII(r.Name), Version: lowerASCII(r.Version)}
}

// String returns "vault/name" or "vault/name/version", to talk about r (never a value).
func (r Ref) String() string {
	s := r.Vault + "/" + r.Name
	if r.Version != "" {
		s += "/" + r.Version
	}
	return s
}

// Entry is one secret value held in a snapshot.
type Entry struct {
	// Ref is the reference the value answers: a versionless one (Version "") or a pinned
	// one.
	Ref Ref
	// Version is the version whose value this is, as the vault named it.
	Version string
	// Value is the secret value itself: never log it.
	Value string
	// ContentType is the version's content type, as Key Vault stores it.
	ContentType string
	// Tags are the version's tags.
	Tags map[string]string
	// Expires and NotBefore are the version's validity window, if it has one, so that a
	// value that is no longer valid can be withheld when the snapshot is served.
	Expires, NotBefore *time.Time
	// Fetched is when the value was last confirmed current: fetched, or shown unchanged by a
	// list. It must not be zero. For a versionless reference it counts towards the
	// snapshot's age (see Snapshot.Age); a pinned version never changes, so it does not.
	Fetched time.Time
}

// Snapshot is what a snapshot file holds.
type Snapshot struct {
	// Written is when the snapshot was written; Write uses the current time when it is
	// zero. It is stored inside the ciphertext.
	Written time.Time
	// Binding identifies the configuration the snapshot is for: Binding(refs) of its
	// references. Read refuses a snapshot whose binding is not the one it is given.
	Binding [32]byte
	// Entries are the values, at most one per reference (compared by Ref.Canonical).
	Entries []Entry
	// Warnings are set by Read (Write ignores them): things worth a log line that did not
	// stop the snapshot from being used, each an *Error whose Kind is ErrInsecureMode.
	Warnings []error
}

// Age returns how old the snapshot's oldest value is at now: the time since the earlier of
// Written and the oldest Fetched of a versionless entry. A value confirmed days before the
// snapshot was last written (its refreshes kept failing) makes the snapshot that old: it
// is what maxAge bounds. The second result is that entry's reference, or the zero Ref when
// Written is the oldest.
func (s Snapshot) Age(now time.Time) (time.Duration, Ref) {
	oldest, by := s.Written, Ref{}
	for _, e := range s.Entries {
		if e.Ref.Version == "" && e.Fetched.Before(oldest) {
			oldest, by = e.Fetched, e.Ref
		}
	}
	return now.Sub(oldest), by
}

// ByRef returns the entries keyed by their canonical reference (Ref.Canonical).
func (s Snapshot) ByRef() map[Ref]Entry {
	m := make(map[Ref]Entry, len(s.Entries))
	for _, e := range s.Entries {
		m[e.Ref.Canonical()] = e
	}
	return m
}

// Binding returns the identity of a configuration: SHA-256 over a domain-separation string
// and the distinct canonical references (Ref.Canonical), sorted, each field
// length-prefixed so that no two different sets hash alike. Order, repetitions and case do
// not matter; adding, removing or changing a reference does. A caller may add a Ref with an
// empty Name for something else the configuration reads, such as a whole vault.
func Binding(refs []Ref) [32]byte {
	set := make(map[Ref]bool, len(refs))
	sorted := make([]Ref, 0, len(refs))
	for _, r := range refs {
		c := r.Canonical()
		if !set[c] {
			set[c] = true
			sorted = append(sorted, c)
		}
	}
	sortRefs(sorted)
	h := sha256.New()
	h.Write([]byte(bindingDomain))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(sorted)))
	h.Write(n[:])
	for _, r := range sorted {
		for _, f := range [...]string{r.Vault, r.Name, r.Version} {
			binary.BigEndian.PutUint64(n[:], uint64(len(f)))
			h.Write(n[:])
			h.Write([]byte(f))
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Write writes s to path, encrypted under key, replacing any file there atomically: a new
// file in the same directory, mode 0600 whatever the umask, synced, renamed over path, and
// the directory synced. A reader sees the old snapshot or the new one, never a part; a
// symbolic link at path is replaced, not followed. Temporary files that an earlier Write
// left behind when its process died (older than ten minutes) are removed.
//
// It refuses (an *Error of Kind ErrKey or ErrInvalid) a key that is not KeySize bytes, a
// zero binding, more than MaxEntries entries, an entry without a vault, a name or a
// fetched time, or one from after Written, two entries for one reference, and a snapshot
// that would be larger than MaxFileSize. Write neither keeps nor changes key.
func Write(path string, key []byte, s Snapshot) error {
	fail := func(kind error, reason string, err error) error {
		return &Error{Op: "write", Path: path, Kind: kind, Reason: reason, Err: err}
	}
	if len(key) != KeySize {
		return fail(ErrKey, fmt.Sprintf("the key is %d bytes; want %d", len(key), KeySize), nil)
	}
	if s.Binding == ([32]byte{}) {
		return fail(ErrInvalid, "no binding: set it to Binding(refs) of the configuration's references", nil)
	}
	if s.Written.IsZero() {
		s.Written = time.Now()
	}
	if reason := check(s.Written, s.Entries); reason != "" {
		return fail(ErrInvalid, reason, nil)
	}
	data, reason := seal(key, s)
	if reason != "" {
		return fail(ErrInvalid, reason, nil)
	}
	if err := writeAtomic(path, data); err != nil {
		return fail(ErrIO, err.Error(), err)
	}
	return nil
}

// Read reads the snapshot at path, written under key for the configuration binding, and
// returns it with every entry, or an *Error and no entry at all. It refuses a missing file
// (Kind fs.ErrNotExist), a key that is not KeySize bytes (ErrKey), a file that is not a
// snapshot, is truncated or too large (ErrMalformed), one in a format version it does not
// know (ErrUnsupportedVersion), one that fails authentication because the key is not the
// one it was written under or a byte of it changed (ErrUnauthenticated: AES-GCM cannot
// tell these apart), one written for another configuration (ErrOtherConfiguration), one
// whose written time is more than MaxClockSkew after now (ErrFromFuture), and one whose
// Age at now is more than maxAge (ErrStale), in that order of checks. maxAge must be
// positive; a zero now means time.Now().
//
// A file that grants any permission to its group or others (viperkv writes 0600, but a
// restore or a Kubernetes fsGroup may widen it) is read, with an ErrInsecureMode warning in
// Snapshot.Warnings: its contents are encrypted and authenticated, so the mode does not
// decide whether it is safe to use, and refusing it would fail the very start the
// snapshot is for. The next Write replaces it with a 0600 file.
func Read(path string, key []byte, binding [32]byte, maxAge time.Duration, now time.Time) (Snapshot, error) {
	if len(key) != KeySize {
		return Snapshot{}, &Error{Op: "read", Path: path, Kind: ErrKey,
			Reason: fmt.Sprintf("the key is %d bytes; want %d", len(key), KeySize)}
	}
	if maxAge <= 0 {
		return Snapshot{}, &Error{Op: "read", Path: path, Kind: ErrInvalid,
			Reason: fmt.Sprintf("maxAge %v: need a positive duration", maxAge)}
	}
	if now.IsZero() {
		now = time.Now()
	}
	data, mode, e := readFile(path)
	if e != nil {
		e.Op, e.Path = "read", path
		return Snapshot{}, e
	}
	s, e := open(data, key, binding, maxAge, now)
	clear(data)
	if e != nil {
		e.Op, e.Path = "read", path
		return Snapshot{}, e
	}
	if w := modeWarning(mode); w != nil {
		w.Op, w.Path = "read", path
		s.Warnings = append(s.Warnings, w)
	}
	return s, nil
}

// wireEntry and wirePayload are the plaintext's JSON. A value is bytes (base64 in JSON) so
// that it comes back exactly as it went in, whatever its encoding.
type wireEntry struct {
	Vault       string            `json:"vault"`
	Name        string            `json:"name"`
	RefVersion  string            `json:"ref_version,omitempty"`
	Version     string            `json:"version,omitempty"`
	Value       []byte            `json:"value"`
	ContentType string            `json:"content_type,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Expires     *time.Time        `json:"expires,omitempty"`
	NotBefore   *time.Time        `json:"not_before,omitempty"`
	Fetched     time.Time         `json:"fetched"`
}

type wirePayload struct {
	Written time.Time   `json:"written"`
	Entries []wireEntry `json:"entries"`
}

// check returns why entries written at written cannot be a snapshot, or "".
func check(written time.Time, entries []Entry) string {
	if len(entries) > MaxEntries {
		return fmt.Sprintf("%d entries, more than the limit of %d", len(entries), MaxEntries)
	}
	seen := make(map[Ref]int, len(entries))
	for i, e := range entries {
		switch {
		case e.Ref.Vault == "" || e.Ref.Name == "":
			return fmt.Sprintf("entry %d has no vault or no name", i)
		case e.Fetched.IsZero():
			return fmt.Sprintf("entry %d (%s) has no fetched time", i, e.Ref)
		case e.Fetched.After(written.Add(MaxClockSkew)):
			return fmt.Sprintf("entry %d (%s) was fetched after the snapshot was written", i, e.Ref)
		}
		c := e.Ref.Canonical()
		if j, ok := seen[c]; ok {
			return fmt.Sprintf("entries %d and %d are both for %s", j, i, e.Ref)
		}
		seen[c] = i
	}
	return ""
}

// aead returns the AES-256-GCM AEAD (random nonces, prepended) under the key derived from
// key and salt.
func aead(key, salt []byte) cipher.AEAD {
	k, err := hkdf.Key(sha256.New, key, salt, hkdfInfo, 32)
	if err != nil {
		panic("snapshot: hkdf: " + err.Error()) // only for an impossible length
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		panic("snapshot: aes: " + err.Error()) // only for a key that is not 16, 24 or 32 bytes
	}
	g, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		panic("snapshot: gcm: " + err.Error())
	}
	return g
}

// seal returns the file's bytes for s, or why it cannot.
func seal(key []byte, s Snapshot) ([]byte, string) {
	p := wirePayload{Written: s.Written.Round(0).UTC(), Entries: make([]wireEntry, len(s.Entries))}
	for i, e := range s.Entries {
		p.Entries[i] = wireEntry{Vault: e.Ref.Vault, Name: e.Ref.Name, RefVersion: e.Ref.Version,
			Version: e.Version, Value: []byte(e.Value), ContentType: e.ContentType, Tags: e.Tags,
			Expires: utcPtr(e.Expires), NotBefore: utcPtr(e.NotBefore), Fetched: e.Fetched.Round(0).UTC()}
	}
	plain, err := json.Marshal(p)
	for _, e := range p.Entries {
		clear(e.Value)
	}
	if err != nil {
		// Only an unencodable time (a year outside 0-9999) gets here; the error names no value.
		return nil, "the payload does not encode: " + err.Error()
	}
	defer clear(plain)
	size := minLen + len(plain)
	if size > MaxFileSize {
		return nil, fmt.Sprintf("the snapshot would be %d bytes, more than the limit of %d", size, MaxFileSize)
	}
	out := make([]byte, headerLen, size)
	copy(out, magic)
	out[offVersion] = formatVersion
	copy(out[offBinding:offSalt], s.Binding[:])
	rand.Read(out[offSalt:offLength]) // never fails: crypto/rand aborts the program instead
	binary.BigEndian.PutUint64(out[offLength:headerLen], uint64(size-headerLen))
	return aead(key, out[offSalt:offLength]).Seal(out, nil, plain, out[:headerLen]), ""
}

// open parses, authenticates, decrypts and checks data. Its errors carry no Op or Path.
func open(data, key []byte, binding [32]byte, maxAge time.Duration, now time.Time) (Snapshot, *Error) {
	malformed := func(reason string) (Snapshot, *Error) {
		return Snapshot{}, &Error{Kind: ErrMalformed, Reason: reason}
	}
	if len(data) < len(magic) || string(data[:len(magic)]) != magic {
		if len(data) == 0 {
			return malformed("the file is empty")
		}
		return malformed("not a viperkv snapshot (no snapshot header)")
	}
	if len(data) <= offVersion {
		return malformed(fmt.Sprintf("truncated: %d bytes, a snapshot has at least %d", len(data), minLen))
	}
	if v := data[offVersion]; v != formatVersion {
		return Snapshot{}, &Error{Kind: ErrUnsupportedVersion, Version: int(v),
			Reason: fmt.Sprintf("format version %d; this viperkv reads version %d (was it written by a newer one?)", v, formatVersion)}
	}
	if len(data) < minLen {
		return malformed(fmt.Sprintf("truncated: %d bytes, a snapshot has at least %d", len(data), minLen))
	}
	if n := binary.BigEndian.Uint64(data[offLength:headerLen]); n != uint64(len(data)-headerLen) {
		what := "truncated"
		if n < uint64(len(data)-headerLen) {
			what = "longer than its header says"
		}
		return malformed(fmt.Sprintf("%s: its header says %d bytes follow it, the file has %d (or the header was altered)",
			what, n, len(data)-headerLen))
	}
	plain, err := aead(key, data[offSalt:offLength]).Open(nil, nil, data[headerLen:], data[:headerLen])
	if err != nil {
		return Snapshot{}, &Error{Kind: ErrUnauthenticated,
			Reason: "authentication failed: the key is not the one it was written under, or the file was altered " +
				"(AES-GCM cannot tell which)"}
	}
	defer clear(plain)
	var p wirePayload
	if err := json.Unmarshal(plain, &p); err != nil {
		// The payload was authenticated, so only a writer's bug gets here. Its error may
		// quote payload bytes: it is not kept.
		return malformed("the authenticated payload does not decode")
	}
	defer func() {
		for _, e := range p.Entries {
			clear(e.Value)
		}
	}()
	s := Snapshot{Written: p.Written, Entries: make([]Entry, len(p.Entries))}
	copy(s.Binding[:], data[offBinding:offSalt])
	for i, w := range p.Entries {
		s.Entries[i] = Entry{Ref: Ref{Vault: w.Vault, Name: w.Name, Version: w.RefVersion}, Version: w.Version,
			Value: string(w.Value), ContentType: w.ContentType, Tags: w.Tags, Expires: w.Expires,
			NotBefore: w.NotBefore, Fetched: w.Fetched}
	}
	if s.Written.IsZero() {
		return malformed("the authenticated payload has no written time")
	}
	if reason := check(s.Written, s.Entries); reason != "" {
		return malformed("the authenticated payload is inconsistent: " + reason)
	}
	// The stored binding is authenticated (it is part of the additional data), so this is
	// really a snapshot this key wrote for another configuration, not a forgery.
	if s.Binding != binding {
		return Snapshot{}, &Error{Kind: ErrOtherConfiguration, Written: s.Written, Binding: s.Binding,
			Reason: fmt.Sprintf("another configuration's snapshot (binding %s, this configuration's %s): "+
				"the references changed since it was written at %s", short(s.Binding), short(binding),
				s.Written.UTC().Format(time.RFC3339))}
	}
	if ahead := s.Written.Sub(now); ahead > MaxClockSkew {
		return Snapshot{}, &Error{Kind: ErrFromFuture, Written: s.Written, Age: -ahead,
			Reason: fmt.Sprintf("written %v in the future, at %s (more than the %v of clock skew allowed): "+
				"is this machine's clock right?", ahead.Round(time.Second), s.Written.UTC().Format(time.RFC3339), MaxClockSkew)}
	}
	if age, by := s.Age(now); age > maxAge {
		what := "written"
		if by != (Ref{}) {
			what = "its oldest value (" + by.String() + ") last confirmed"
		}
		return Snapshot{}, &Error{Kind: ErrStale, Written: s.Written, Age: age, MaxAge: maxAge, Oldest: by,
			Reason: fmt.Sprintf("too old: %s %v ago, more than maxAge %v", what, age.Round(time.Second), maxAge)}
	}
	return s, nil
}

// modeWarning returns an ErrInsecureMode warning when mode grants group or others any
// permission, or nil.
func modeWarning(mode fs.FileMode) *Error {
	if !checkMode || mode.Perm()&0o077 == 0 {
		return nil
	}
	return &Error{Kind: ErrInsecureMode, Mode: mode.Perm(),
		Reason: fmt.Sprintf("mode %04o lets its group or others read or change it; it was used (its contents are "+
			"encrypted and authenticated), and the next write replaces it with a 0600 file", uint32(mode.Perm()))}
}

func short(b [32]byte) string { return hex.EncodeToString(b[:6]) }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.Round(0).UTC()
	return &u
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func sortRefs(refs []Ref) {
	slices.SortFunc(refs, func(a, b Ref) int {
		return cmp.Or(strings.Compare(a.Vault, b.Vault), strings.Compare(a.Name, b.Name),
			strings.Compare(a.Version, b.Version))
	})
}
