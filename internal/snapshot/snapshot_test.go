package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// sentinel is part of every secret value the tests write: it must never appear in a file
// in clear, nor in any error.
const sentinel = "SENTINEL-s3cr3t-v4lue-9f2c"

var (
	now      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testKey  = derive("key one")
	otherKey = derive("key two")
	testRefs = []Ref{
		{Vault: "one.vault.azure.net", Name: "db-password"},
		{Vault: "one.vault.azure.net", Name: "api-key", Version: "0123456789abcdef0123456789abcdef"},
		{Vault: "two.vault.azure.net", Name: "tls"},
	}
	testBinding = Binding(testRefs)
)

func derive(s string) []byte {
	k := sha256.Sum256([]byte(s))
	return k[:]
}

func tp(t time.Time) *time.Time { return &t }

// testSnapshot returns a snapshot of testRefs written at written, each value fetched then.
func testSnapshot(written time.Time) Snapshot {
	return Snapshot{
		Written: written,
		Binding: testBinding,
		Entries: []Entry{
			{Ref: testRefs[0], Version: "aaaa0000aaaa0000aaaa0000aaaa0000", Value: sentinel + "-db",
				ContentType: "text/plain", Tags: map[string]string{"env": "prod"},
				Expires: tp(written.Add(90 * 24 * time.Hour)), NotBefore: tp(written.Add(-time.Hour)), Fetched: written},
			{Ref: testRefs[1], Version: testRefs[1].Version, Value: sentinel + "-api\n\x00\xff\xfe not UTF-8 é",
				Fetched: written.Add(-30 * 24 * time.Hour)}, // pinned: its age does not count
			{Ref: testRefs[2], Version: "bbbb1111bbbb1111bbbb1111bbbb1111", Value: "", ContentType: "application/x-pem-file",
				Fetched: written},
		},
	}
}

// write writes s to a new file and returns its path.
func write(t *testing.T, s Snapshot) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "viperkv.snap")
	if err := Write(path, testKey, s); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return path
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refused checks that err is an *Error of kind, that nothing was returned with it, and
// that its text holds no secret; it returns the *Error.
func refused(t *testing.T, s Snapshot, err error, kind error) *Error {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want refused with %v", kind)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not an *Error", err, err)
	}
	if !errors.Is(err, kind) || e.Kind != kind {
		t.Fatalf("error %v: kind %v, want %v", err, e.Kind, kind)
	}
	if !reflect.DeepEqual(s, Snapshot{}) {
		t.Fatalf("refused with %v but returned a snapshot with %d entries", err, len(s.Entries))
	}
	noSecret(t, err.Error())
	return e
}

func noSecret(t *testing.T, text string) {
	t.Helper()
	if strings.Contains(text, sentinel) || strings.Contains(text, "s3cr3t") {
		t.Fatalf("text holds a secret value: %q", text)
	}
}

func sameEntries(t *testing.T, got, want []Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	eqTime := func(a, b *time.Time) bool { return a == nil && b == nil || a != nil && b != nil && a.Equal(*b) }
	for i := range want {
		g, w := got[i], want[i]
		if g.Ref != w.Ref || g.Version != w.Version || g.Value != w.Value || g.ContentType != w.ContentType ||
			!reflect.DeepEqual(g.Tags, w.Tags) || !eqTime(g.Expires, w.Expires) || !eqTime(g.NotBefore, w.NotBefore) ||
			!g.Fetched.Equal(w.Fetched) {
			t.Fatalf("entry %d (%s) did not come back as written", i, w.Ref) // no values in the message
		}
	}
}

func TestRoundTrip(t *testing.T) {
	want := testSnapshot(now.Add(-time.Hour))
	path := write(t, want)
	got, err := Read(path, testKey, testBinding, 24*time.Hour, now)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !got.Written.Equal(want.Written) || got.Binding != testBinding || len(got.Warnings) != 0 {
		t.Fatalf("got written %v binding %x warnings %v", got.Written, got.Binding, got.Warnings)
	}
	sameEntries(t, got.Entries, want.Entries)
	if age, by := got.Age(now); age != time.Hour || by != (Ref{}) {
		t.Fatalf("Age = %v, %v; want 1h, written", age, by)
	}
	m := got.ByRef()
	if e, ok := m[Ref{Vault: "ONE.vault.azure.net", Name: "DB-Password"}.Canonical()]; !ok || e.Value != want.Entries[0].Value {
		t.Fatal("ByRef does not find an entry by its canonical reference")
	}

	// An empty snapshot is a snapshot too.
	empty := Snapshot{Written: now, Binding: Binding(nil)}
	path = write(t, empty)
	if got, err := Read(path, testKey, Binding(nil), time.Minute, now); err != nil || len(got.Entries) != 0 {
		t.Fatalf("empty snapshot: %v, %d entries", err, len(got.Entries))
	}
}

func TestWriteStampsWrittenTime(t *testing.T) {
	s := testSnapshot(time.Time{})
	for i := range s.Entries {
		s.Entries[i].Fetched = time.Now()
	}
	before := time.Now()
	path := write(t, s)
	got, err := Read(path, testKey, testBinding, time.Hour, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Written.Before(before.Add(-time.Second)) || got.Written.After(time.Now().Add(time.Second)) {
		t.Fatalf("Written = %v, want about %v", got.Written, before)
	}
}

// TestTamperedByte flips bits in every byte of a snapshot: each file is refused, with the
// kind the altered region calls for.
func TestTamperedByte(t *testing.T) {
	path := write(t, testSnapshot(now))
	orig := readBytes(t, path)
	for i := range orig {
		var want error
		switch {
		case i < offVersion:
			want = ErrMalformed // magic
		case i == offVersion:
			want = ErrUnsupportedVersion
		case i >= offLength && i < headerLen:
			want = ErrMalformed // the length no longer matches the file
		default:
			want = ErrUnauthenticated // binding, salt, nonce, ciphertext, tag
		}
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(orig)
			b[i] ^= bit
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Read(path, testKey, testBinding, time.Hour, now)
			if err == nil {
				t.Fatalf("byte %d ^ %#x: accepted", i, bit)
			}
			refused(t, s, err, want)
		}
	}
}

// TestTamperedBinding writes another configuration's binding into the header: it is
// authenticated, so the file is refused as altered, not passed off as another
// configuration's.
func TestTamperedBinding(t *testing.T) {
	path := write(t, testSnapshot(now))
	b := readBytes(t, path)
	other := Binding(testRefs[:1])
	copy(b[offBinding:offSalt], other[:])
	os.WriteFile(path, b, 0o600)
	for _, bind := range [][32]byte{testBinding, other} {
		s, err := Read(path, testKey, bind, time.Hour, now)
		refused(t, s, err, ErrUnauthenticated)
	}
}

func TestTruncated(t *testing.T) {
	path := write(t, testSnapshot(now))
	orig := readBytes(t, path)
	for n := range len(orig) {
		os.WriteFile(path, orig[:n], 0o600)
		s, err := Read(path, testKey, testBinding, time.Hour, now)
		e := refused(t, s, err, ErrMalformed)
		if n > 0 && n >= len(magic) && !strings.Contains(e.Reason, "truncated") {
			t.Fatalf("%d bytes: reason %q does not say truncated", n, e.Reason)
		}
	}
	// Extra bytes are refused too.
	os.WriteFile(path, append(bytes.Clone(orig), 0), 0o600)
	s, err := Read(path, testKey, testBinding, time.Hour, now)
	refused(t, s, err, ErrMalformed)

	// A truncation that fixes the header's length up is caught by authentication.
	b := bytes.Clone(orig[:len(orig)-1])
	b[headerLen-1]--
	os.WriteFile(path, b, 0o600)
	s, err = Read(path, testKey, testBinding, time.Hour, now)
	refused(t, s, err, ErrUnauthenticated)
}

func TestWrongKey(t *testing.T) {
	path := write(t, testSnapshot(now))
	s, err := Read(path, otherKey, testBinding, time.Hour, now)
	e := refused(t, s, err, ErrUnauthenticated)
	if !strings.Contains(e.Error(), "key") || !strings.Contains(e.Error(), "altered") {
		t.Fatalf("reason %q does not name both causes", e.Error())
	}

	// Rotating the key: the old snapshot is refused, and the first write under the new key
	// replaces it.
	if err := Write(path, otherKey, testSnapshot(now)); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path, otherKey, testBinding, time.Hour, now); err != nil {
		t.Fatalf("after rewriting under the new key: %v", err)
	}
}

func TestOtherConfiguration(t *testing.T) {
	path := write(t, testSnapshot(now))
	// Another configuration: one reference more. Case does not make another one.
	refs := append(append([]Ref(nil), testRefs...), Ref{Vault: "one.vault.azure.net", Name: "new-secret"})
	s, err := Read(path, testKey, Binding(refs), time.Hour, now)
	e := refused(t, s, err, ErrOtherConfiguration)
	if !strings.Contains(e.Error(), "another configuration") || e.Binding != testBinding || !e.Written.Equal(now) {
		t.Fatalf("error %q, binding %x, written %v", e.Error(), e.Binding, e.Written)
	}
	upper := []Ref{}
	for _, r := range testRefs {
		upper = append(upper, Ref{Vault: strings.ToUpper(r.Vault), Name: strings.ToUpper(r.Name), Version: strings.ToUpper(r.Version)})
	}
	if _, err := Read(path, testKey, Binding(upper), time.Hour, now); err != nil {
		t.Fatalf("the same references in upper case: %v", err)
	}
}

func TestStale(t *testing.T) {
	path := write(t, testSnapshot(now.Add(-25*time.Hour)))
	s, err := Read(path, testKey, testBinding, 24*time.Hour, now)
	e := refused(t, s, err, ErrStale)
	if e.Age != 25*time.Hour || e.MaxAge != 24*time.Hour || e.Oldest != (Ref{}) ||
		!strings.Contains(e.Error(), "written 25h0m0s ago") || !strings.Contains(e.Error(), "maxAge 24h0m0s") {
		t.Fatalf("error %q, age %v, oldest %v", e.Error(), e.Age, e.Oldest)
	}
	// Exactly maxAge old is still usable.
	if _, err := Read(path, testKey, testBinding, 25*time.Hour, now); err != nil {
		t.Fatalf("at exactly maxAge: %v", err)
	}

	// A versionless value last confirmed long before the snapshot was written makes it that
	// old; a pinned one (entry 1, fetched 30 days before) does not.
	old := testSnapshot(now.Add(-time.Minute))
	old.Entries[2].Fetched = now.Add(-48 * time.Hour)
	path = write(t, old)
	s, err = Read(path, testKey, testBinding, 24*time.Hour, now)
	e = refused(t, s, err, ErrStale)
	if e.Age != 48*time.Hour || e.Oldest != testRefs[2] || !strings.Contains(e.Error(), "two.vault.azure.net/tls") {
		t.Fatalf("error %q, age %v, oldest %v", e.Error(), e.Age, e.Oldest)
	}
	if _, err := Read(path, testKey, testBinding, 49*time.Hour, now); err != nil {
		t.Fatalf("within maxAge: %v", err)
	}
}

func TestFromFuture(t *testing.T) {
	path := write(t, testSnapshot(now.Add(time.Hour)))
	s, err := Read(path, testKey, testBinding, 24*time.Hour, now)
	e := refused(t, s, err, ErrFromFuture)
	if e.Age != -time.Hour || !strings.Contains(e.Error(), "1h0m0s in the future") {
		t.Fatalf("error %q, age %v", e.Error(), e.Age)
	}
	// Within the allowed skew it is used.
	path = write(t, testSnapshot(now.Add(MaxClockSkew)))
	if _, err := Read(path, testKey, testBinding, 24*time.Hour, now); err != nil {
		t.Fatalf("%v ahead: %v", MaxClockSkew, err)
	}
}

func TestUnsupportedVersion(t *testing.T) {
	path := write(t, testSnapshot(now))
	b := readBytes(t, path)
	b[offVersion] = 2
	os.WriteFile(path, b, 0o600)
	s, err := Read(path, testKey, testBinding, time.Hour, now)
	if e := refused(t, s, err, ErrUnsupportedVersion); e.Version != 2 || !strings.Contains(e.Error(), "version 2") {
		t.Fatalf("error %q, version %d", e.Error(), e.Version)
	}
}

func TestNotASnapshot(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty": "", "text": "hello, " + sentinel, "json": `{"written":"2026-01-01T00:00:00Z"}`,
	} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(content), 0o600)
		s, err := Read(path, testKey, testBinding, time.Hour, now)
		refused(t, s, err, ErrMalformed)
	}
	// A directory.
	s, err := Read(dir, testKey, testBinding, time.Hour, now)
	refused(t, s, err, ErrMalformed)
	// Too large: refused without being read (the file is sparse).
	big := filepath.Join(dir, "big")
	f, _ := os.Create(big)
	f.Truncate(MaxFileSize + 1)
	f.Close()
	s, err = Read(big, testKey, testBinding, time.Hour, now)
	if e := refused(t, s, err, ErrMalformed); !strings.Contains(e.Reason, "larger than") {
		t.Fatalf("reason %q", e.Reason)
	}
}

func TestMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.snap")
	s, err := Read(path, testKey, testBinding, time.Hour, now)
	refused(t, s, err, fs.ErrNotExist)
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		t.Fatalf("%v does not wrap the *fs.PathError", err)
	}
	if got := err.Error(); got != "snapshot "+path+": refused: there is no snapshot file" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestBadArguments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "viperkv.snap")
	for _, k := range [][]byte{nil, make([]byte, 16), make([]byte, 33)} {
		err := Write(path, k, testSnapshot(now))
		refused(t, Snapshot{}, err, ErrKey)
		s, err := Read(path, k, testBinding, time.Hour, now)
		refused(t, s, err, ErrKey)
	}
	write(t, testSnapshot(now))
	for _, d := range []time.Duration{0, -time.Hour} {
		s, err := Read(path, testKey, testBinding, d, now)
		refused(t, s, err, ErrInvalid)
	}

	bad := map[string]func(*Snapshot){
		"zero binding":  func(s *Snapshot) { s.Binding = [32]byte{} },
		"no name":       func(s *Snapshot) { s.Entries[0].Ref.Name = "" },
		"no vault":      func(s *Snapshot) { s.Entries[0].Ref.Vault = "" },
		"no fetched":    func(s *Snapshot) { s.Entries[1].Fetched = time.Time{} },
		"fetched later": func(s *Snapshot) { s.Entries[1].Fetched = s.Written.Add(time.Hour) },
		"duplicate": func(s *Snapshot) {
			s.Entries = append(s.Entries, s.Entries[0])
			s.Entries[3].Ref.Name = strings.ToUpper(s.Entries[3].Ref.Name)
		},
		"too many": func(s *Snapshot) {
			s.Entries = make([]Entry, MaxEntries+1)
			for i := range s.Entries {
				s.Entries[i] = Entry{Ref: Ref{Vault: "v", Name: fmt.Sprint("n", i)}, Fetched: s.Written}
			}
		},
		"too large":  func(s *Snapshot) { s.Entries[0].Value = strings.Repeat("x", MaxFileSize) },
		"year 10000": func(s *Snapshot) { s.Entries[0].Expires = tp(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)) },
	}
	for name, f := range bad {
		s := testSnapshot(now)
		f(&s)
		path := filepath.Join(t.TempDir(), "viperkv.snap")
		err := Write(path, testKey, s)
		if err == nil {
			t.Fatalf("%s: written", name)
		}
		refused(t, Snapshot{}, err, ErrInvalid)
		if !strings.Contains(err.Error(), ": not written: ") {
			t.Fatalf("%s: %q", name, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: a file was left: %v", name, err)
		}
	}
}

// TestNoValueInClear scans the file's bytes for the sentinel and its base64 and hex forms.
func TestNoValueInClear(t *testing.T) {
	s := testSnapshot(now)
	s.Entries[0].Value = sentinel
	b := readBytes(t, write(t, s))
	forms := []string{sentinel, hex.EncodeToString([]byte(sentinel)), strings.ToUpper(hex.EncodeToString([]byte(sentinel)))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		for shift := range 3 { // the sentinel at each alignment within a longer base64 text
			e := enc.EncodeToString(append(make([]byte, shift), sentinel...))
			forms = append(forms, e[4:len(e)-4])
		}
	}
	for _, f := range forms {
		if bytes.Contains(b, []byte(f)) {
			t.Fatalf("the file holds the secret in clear (as %q)", f)
		}
	}
	// Names and versions are in the ciphertext too.
	for _, f := range []string{"db-password", "one.vault.azure.net", "aaaa0000aaaa0000"} {
		if bytes.Contains(b, []byte(f)) {
			t.Fatalf("the file holds %q in clear", f)
		}
	}
}

// TestCrashLeftover simulates a Write whose process died between creating its temporary
// file and renaming it: the snapshot in place is still read, the next Write works, and a
// leftover older than leftoverAge is removed.
func TestCrashLeftover(t *testing.T) {
	path := write(t, testSnapshot(now.Add(-time.Hour)))
	dir := filepath.Dir(path)
	half := readBytes(t, path)
	oldLeft := filepath.Join(dir, tempPrefix("viperkv.snap")+"123456")
	newLeft := filepath.Join(dir, tempPrefix("viperkv.snap")+"654321")
	for _, p := range []string{oldLeft, newLeft} {
		os.WriteFile(p, half[:len(half)/2], 0o600)
	}
	os.Chtimes(oldLeft, time.Now().Add(-time.Hour), time.Now().Add(-time.Hour))
	if _, err := Read(path, testKey, testBinding, 24*time.Hour, now); err != nil {
		t.Fatalf("Read with a leftover: %v", err)
	}
	if err := Write(path, testKey, testSnapshot(now)); err != nil {
		t.Fatalf("Write with a leftover: %v", err)
	}
	got, err := Read(path, testKey, testBinding, 24*time.Hour, now)
	if err != nil || !got.Written.Equal(now) {
		t.Fatalf("after the next Write: %v, written %v", err, got.Written)
	}
	if _, err := os.Stat(oldLeft); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the old leftover was not removed: %v", err)
	}
	if _, err := os.Stat(newLeft); err != nil {
		t.Fatalf("a recent temporary file (maybe another writer's) was removed: %v", err)
	}
}

// TestWriteFailureKeepsOld: a Write that fails leaves the snapshot in place and no
// temporary file.
func TestWriteFailureKeepsOld(t *testing.T) {
	path := write(t, testSnapshot(now))
	// Renaming over a non-empty directory fails after the temporary file was written.
	dirPath := filepath.Join(filepath.Dir(path), "d")
	os.Mkdir(dirPath, 0o700)
	os.WriteFile(filepath.Join(dirPath, "x"), nil, 0o600)
	err := Write(dirPath, testKey, testSnapshot(now))
	refused(t, Snapshot{}, err, ErrIO)
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
	if _, err := Read(path, testKey, testBinding, time.Hour, now); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentWrites: writers racing each other and readers reading meanwhile; every
// Read sees a whole snapshot, and the last file is one of those written.
func TestConcurrentWrites(t *testing.T) {
	path := write(t, testSnapshot(now))
	const writers, rounds = 8, 10
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s, err := Read(path, testKey, testBinding, 24*time.Hour, now)
				if err != nil {
					errs <- err
					return
				}
				if len(s.Entries) != 3 {
					errs <- fmt.Errorf("read %d entries", len(s.Entries))
					return
				}
			}
		})
	}
	var ww sync.WaitGroup
	for w := range writers {
		ww.Go(func() {
			for r := range rounds {
				s := testSnapshot(now.Add(-time.Duration(w*rounds+r) * time.Second))
				if err := Write(path, testKey, s); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	ww.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s, err := Read(path, testKey, testBinding, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if age := now.Sub(s.Written); age < 0 || age >= writers*rounds*time.Second {
		t.Fatalf("the file is none of the snapshots written (age %v)", age)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("%d files in the directory, want only the snapshot", len(entries))
	}
}

func TestBinding(t *testing.T) {
	a := Ref{Vault: "one.vault.azure.net", Name: "a"}
	b := Ref{Vault: "one.vault.azure.net", Name: "b"}
	bUpper := Ref{Vault: "ONE.Vault.Azure.Net", Name: "B"}
	pinned := Ref{Vault: "one.vault.azure.net", Name: "b", Version: "0123456789abcdef0123456789abcdef"}
	pinnedUpper := Ref{Vault: "one.vault.azure.net", Name: "b", Version: "0123456789ABCDEF0123456789ABCDEF"}
	same := [][]Ref{{a, b}, {b, a}, {a, b, a}, {bUpper, a}}
	for _, refs := range same {
		if Binding(refs) != Binding(same[0]) {
			t.Fatalf("Binding(%v) differs from Binding(%v)", refs, same[0])
		}
	}
	if Binding([]Ref{pinned}) != Binding([]Ref{pinnedUpper}) {
		t.Fatal("the version's case changes the binding")
	}
	if Binding(nil) != Binding([]Ref{}) {
		t.Fatal("nil and empty differ")
	}
	distinct := [][]Ref{
		nil, {a}, {b}, {a, b}, {pinned}, {b, pinned},
		{{Vault: "v", Name: "ab"}}, {{Vault: "va", Name: "b"}}, {{Vault: "v", Name: "a", Version: "b"}},
		{{Vault: "v", Name: "a"}, {Vault: "v", Name: "b"}}, {{Vault: "v", Name: "a\x00v"}},
		{{Vault: "one.vault.azure.net"}}, // a whole vault
	}
	seen := map[[32]byte]int{}
	for i, refs := range distinct {
		h := Binding(refs)
		if j, ok := seen[h]; ok {
			t.Fatalf("sets %d %v and %d %v have one binding", j, distinct[j], i, refs)
		}
		seen[h] = i
	}
	// The domain separation: not a bare hash of the empty set's encoding.
	if Binding(nil) == sha256.Sum256(make([]byte, 8)) {
		t.Fatal("no domain separation")
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Op: "write", Path: "/p", Kind: ErrInvalid, Reason: "r"}
	if e.Error() != "snapshot /p: not written: r" {
		t.Fatal(e.Error())
	}
	e = &Error{Op: "read", Path: "/p", Kind: ErrInsecureMode, Reason: "r"}
	if e.Error() != "snapshot /p: warning: r" || !errors.Is(e, ErrInsecureMode) || errors.Is(e, ErrStale) {
		t.Fatal(e.Error())
	}
}
