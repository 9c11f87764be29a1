package snapshot

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// specPayload is a version 1 payload written by hand from the format's description.
const specPayload = `{"written":"2026-03-01T11:00:00Z","entries":[` +
	`{"vault":"one.vault.azure.net","name":"db-password","version":"aaaa","value":"U0VOVElORUwtczNjcjN0LXY0bHVlLTlmMmM=",` +
	`"content_type":"text/plain","tags":{"env":"prod"},"expires":"2026-06-01T00:00:00Z","fetched":"2026-03-01T11:00:00Z"},` +
	`{"vault":"one.vault.azure.net","name":"api-key","ref_version":"0123456789abcdef0123456789abcdef",` +
	`"version":"0123456789abcdef0123456789abcdef","value":"","fetched":"2026-01-01T00:00:00Z"}]}`

// sealSpec builds a version 1 file from the package documentation alone, with the standard
// library's plain AES-GCM and an explicit nonce.
func sealSpec(key []byte, binding [32]byte, salt, nonce, plain []byte) []byte {
	h := append([]byte(nil), 0x89, 'V', 'K', 'V', 'S', 'N', 'A', 'P', 1)
	h = append(h, binding[:]...)
	h = append(h, salt...)
	h = binary.BigEndian.AppendUint64(h, uint64(len(nonce)+len(plain)+16))
	k, err := hkdf.Key(sha256.New, key, salt, "viperkv snapshot v1 AES-256-GCM", 32)
	if err != nil {
		panic(err)
	}
	block, _ := aes.NewCipher(k)
	g, _ := cipher.NewGCM(block)
	out := append(bytes.Clone(h), nonce...)
	return g.Seal(out, nonce, plain, h)
}

// TestFormat checks the documented format both ways: a file built from the description is
// read, and a file Write made decrypts by the description.
func TestFormat(t *testing.T) {
	if headerLen != 81 || minLen != 81+12+16 {
		t.Fatalf("header %d, min %d", headerLen, minLen)
	}
	data := sealSpec(testKey, testBinding, bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 12), []byte(specPayload))
	s, e := open(data, testKey, testBinding, 24*time.Hour, now)
	if e != nil {
		t.Fatalf("a file built from the description: %v", e)
	}
	if len(s.Entries) != 2 || s.Entries[0].Value != sentinel || s.Entries[1].Ref.Version == "" ||
		s.Entries[0].Tags["env"] != "prod" || s.Entries[0].Expires == nil || !s.Written.Equal(now.Add(-time.Hour)) {
		t.Fatalf("read %+v", s.Written) // no values in the message
	}

	data = readBytes(t, write(t, testSnapshot(now)))
	if string(data[:8]) != "\x89VKVSNAP" || data[8] != 1 || !bytes.Equal(data[9:41], testBinding[:]) ||
		binary.BigEndian.Uint64(data[73:81]) != uint64(len(data)-81) {
		t.Fatal("the header is not as documented")
	}
	k, _ := hkdf.Key(sha256.New, testKey, data[41:73], "viperkv snapshot v1 AES-256-GCM", 32)
	block, _ := aes.NewCipher(k)
	g, _ := cipher.NewGCM(block)
	plain, err := g.Open(nil, data[81:93], data[93:], data[:81])
	if err != nil {
		t.Fatalf("a written file does not decrypt by the description: %v", err)
	}
	if !strings.HasPrefix(string(plain), `{"written":"2026-03-01T12:00:00Z","entries":[{"vault":"one.vault.azure.net"`) {
		t.Fatal("the payload is not the documented JSON")
	}

	// Two writes of one snapshot share no salt, nonce or ciphertext.
	again := readBytes(t, write(t, testSnapshot(now)))
	if bytes.Equal(data[41:73], again[41:73]) || bytes.Equal(data[81:93], again[81:93]) || bytes.Equal(data[93:], again[93:]) {
		t.Fatal("two writes repeat a salt, a nonce or a ciphertext")
	}
}
