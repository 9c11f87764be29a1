package snapshot

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fuzzSeeds are valid snapshots under testKey, built by sealSpec with a fixed salt and
// nonce so that every fuzzing process has the same ones: an input equal to one of them is
// the only one that may be read with testKey.
func fuzzSeeds() [][]byte {
	salt := bytes.Repeat([]byte{7}, 32)
	nonce := bytes.Repeat([]byte{9}, nonceLen)
	return [][]byte{
		sealSpec(testKey, testBinding, salt, nonce, []byte(specPayload)),
		sealSpec(testKey, testBinding, salt, nonce, []byte(`{"written":"2026-03-01T12:00:00Z","entries":[]}`)),
	}
}

// FuzzRead feeds arbitrary bytes to open, which is all of Read after the file's bytes are
// read: it must never panic, never accept anything under a key the inputs were not written
// with, and under testKey accept only a seed exactly.
func FuzzRead(f *testing.F) {
	seeds := fuzzSeeds()
	for _, s := range seeds {
		f.Add(s)
		f.Add(s[:len(s)-1])
		f.Add(s[:headerLen])
		b := bytes.Clone(s)
		b[len(b)-1] ^= 1
		f.Add(b)
		b = bytes.Clone(s)
		b[offVersion] = 2
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte(magic))
	f.Add([]byte(magic + "\x01"))
	f.Add(make([]byte, minLen))
	unknownKey := make([]byte, KeySize)
	rand.Read(unknownKey)
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		if s, e := open(data, unknownKey, testBinding, time.Hour, now); e == nil {
			t.Fatalf("accepted %d bytes under a key no input was written with (%d entries)", len(data), len(s.Entries))
		} else {
			checkFuzzError(t, e)
		}
		s, e := open(data, testKey, testBinding, time.Hour, now)
		if e == nil {
			known := false
			for _, seed := range seeds {
				known = known || bytes.Equal(data, seed)
			}
			if !known {
				t.Fatalf("accepted %d bytes that are not a snapshot written under the key", len(data))
			}
			if len(s.Entries) > MaxEntries {
				t.Fatal("too many entries")
			}
		} else {
			checkFuzzError(t, e)
		}
		if !bytes.Equal(in, data) {
			t.Fatal("open changed its input")
		}
	})
}

func checkFuzzError(t *testing.T, e *Error) {
	t.Helper()
	if e.Kind == nil || e.Reason == "" {
		t.Fatalf("error without a kind or a reason: %#v", e)
	}
	if strings.Contains(e.Error(), sentinel) {
		t.Fatal("an error holds a secret")
	}
}

// FuzzPayload seals arbitrary plaintext under testKey, as a buggy or future writer could,
// to reach what open does after authentication: decoding and checking the payload. It must
// never panic, and whatever it accepts must satisfy Write's rules and survive a round trip.
func FuzzPayload(f *testing.F) {
	f.Add([]byte(`{"written":"2026-03-01T12:00:00Z","entries":[]}`))
	f.Add([]byte(`{"written":"2026-03-01T11:00:00Z","entries":[{"vault":"v","name":"n","value":"eA==","fetched":"2026-03-01T11:00:00Z"}]}`))
	f.Add([]byte(`{"written":"2026-03-01T11:00:00Z","entries":[{"vault":"v","name":"n","fetched":"2026-03-01T11:00:00Z"},{"vault":"V","name":"N","fetched":"2026-03-01T11:00:00Z"}]}`))
	f.Add([]byte(`{"written":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"entries":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"written":"2026-03-01T11:00:00Z","entries":[{"expires":"2026-03-01T11:00:00Z","tags":{"a":"b"}}]}`))
	f.Fuzz(func(t *testing.T, plain []byte) {
		data := sealRaw(testBinding, plain)
		s, e := open(data, testKey, testBinding, 24*time.Hour, now)
		if e != nil {
			checkFuzzError(t, e)
			if !errors.Is(e, ErrMalformed) && !errors.Is(e, ErrStale) && !errors.Is(e, ErrFromFuture) {
				t.Fatalf("an authenticated payload refused as %v", e.Kind)
			}
			return
		}
		if reason := check(s.Written, s.Entries); reason != "" {
			t.Fatalf("accepted an inconsistent payload: %s", reason)
		}
		path := filepath.Join(t.TempDir(), "s")
		if err := Write(path, testKey, s); err != nil {
			t.Fatalf("what Read accepted, Write refuses: %v", err)
		}
		back, err := Read(path, testKey, testBinding, 24*time.Hour, now)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if len(back.Entries) != len(s.Entries) || !back.Written.Equal(s.Written) {
			t.Fatal("round trip changed the snapshot")
		}
		for i := range s.Entries {
			if back.Entries[i].Value != s.Entries[i].Value || back.Entries[i].Ref != s.Entries[i].Ref {
				t.Fatalf("round trip changed entry %d", i)
			}
		}
	})
}

// sealRaw builds a file around plain as seal would around a payload.
func sealRaw(binding [32]byte, plain []byte) []byte {
	size := minLen + len(plain)
	out := make([]byte, headerLen, size)
	copy(out, magic)
	out[offVersion] = formatVersion
	copy(out[offBinding:offSalt], binding[:])
	rand.Read(out[offSalt:offLength])
	binary.BigEndian.PutUint64(out[offLength:headerLen], uint64(size-headerLen))
	return aead(testKey, out[offSalt:offLength]).Seal(out, nil, plain, out[:headerLen])
}

// FuzzParseKey: ParseKey never panics, accepts only what decodes to KeySize bytes, and
// never repeats its input in an error.
func FuzzParseKey(f *testing.F) {
	f.Add("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	f.Add("ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=")
	f.Add("ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8")
	f.Add("")
	f.Add(" \n")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err == nil {
			if len(k) != KeySize {
				t.Fatalf("accepted a %d-byte key", len(k))
			}
			return
		}
		if !errors.Is(err, ErrKey) {
			t.Fatalf("%v is not ErrKey", err)
		}
		if trimmed := strings.Trim(s, " \t\r\n"); len(trimmed) >= 12 && strings.Contains(err.Error(), trimmed) {
			t.Fatalf("error %q repeats the input", err)
		}
	})
}
