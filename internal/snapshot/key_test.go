package snapshot

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	key := make([]byte, KeySize)
	for i := range key {
		key[i] = byte(0xf0 + i) // bytes that make '+', '/', '-' and '_' in base64
	}
	good := map[string]string{
		"hex":            hex.EncodeToString(key),
		"HEX":            strings.ToUpper(hex.EncodeToString(key)),
		"std":            base64.StdEncoding.EncodeToString(key),
		"std raw":        base64.RawStdEncoding.EncodeToString(key),
		"url":            base64.URLEncoding.EncodeToString(key),
		"url raw":        base64.RawURLEncoding.EncodeToString(key),
		"newline":        base64.StdEncoding.EncodeToString(key) + "\n",
		"blanks":         " \t" + hex.EncodeToString(key) + "\r\n",
		"url raw spaced": " " + base64.RawURLEncoding.EncodeToString(key) + " ",
	}
	if s := base64.StdEncoding.EncodeToString(key); !strings.ContainsAny(s, "+/") {
		t.Fatalf("test key %s has no +/ in base64", s)
	}
	for name, s := range good {
		got, err := ParseKey(s)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s: %x, %v", name, got, err)
		}
	}

	std := base64.StdEncoding.EncodeToString(key)
	bad := map[string]string{
		"empty":          "",
		"blank":          " \n",
		"16 bytes b64":   base64.StdEncoding.EncodeToString(key[:16]),
		"33 bytes hex":   hex.EncodeToString(append(key, 1)),
		"31 bytes hex":   hex.EncodeToString(key[:31]),
		"hex with g":     "g" + hex.EncodeToString(key)[1:],
		"44 no padding":  std[:43] + "A",
		"mixed alphabet": strings.Replace(base64.URLEncoding.EncodeToString(key), "-", "+", 1),
		"inner space":    std[:20] + " " + std[21:],
		"zero":           hex.EncodeToString(make([]byte, KeySize)),
		"zero b64":       base64.StdEncoding.EncodeToString(make([]byte, KeySize)),
		"not canonical":  base64.RawStdEncoding.EncodeToString(key)[:42] + "B", // non-zero trailing bits
		"passphrase":     "correct horse battery staple, a passphrase",
	}
	for name, s := range bad {
		got, err := ParseKey(s)
		if err == nil {
			t.Fatalf("%s: accepted as %x", name, got)
		}
		if !errors.Is(err, ErrKey) {
			t.Fatalf("%s: %v is not ErrKey", name, err)
		}
		if trimmed := strings.TrimSpace(s); len(trimmed) >= 4 {
			for i := 0; i+4 <= len(trimmed); i++ {
				if strings.Contains(err.Error(), trimmed[i:i+4]) && !strings.Contains(errTextAllowed, trimmed[i:i+4]) {
					t.Fatalf("%s: error %q repeats the input (%q)", name, err, trimmed[i:i+4])
				}
			}
		}
	}
}

// errTextAllowed is text of ParseKey's errors that an input may share by chance.
const errTextAllowed = "snapshot: bad key: the key is empty all zeros characters but not valid base64 of bytes " +
	"hex digits; want 32 random bytes as 64 hex digits or 43-44 base64 characters (openssl rand -base64 32)"
