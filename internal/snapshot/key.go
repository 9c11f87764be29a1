package snapshot

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// ParseKey decodes a snapshot key written as text: 32 bytes in hex (64 digits, either case)
// or in base64, standard or URL-safe, padded (44 characters) or not (43), such as
// `openssl rand -base64 32` prints. Blanks and line ends around it are ignored (a mounted
// secret file often ends with a newline). A key of 32 zero bytes is refused as a
// placeholder. The errors (errors.Is ErrKey) say what was wrong with the text's length or
// alphabet and never repeat any of it.
func ParseKey(s string) ([]byte, error) {
	s = strings.Trim(s, " \t\r\n")
	bad := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: %s; want %d random bytes as 64 hex digits or 43-44 base64 characters "+
			"(openssl rand -base64 32)", ErrKey, fmt.Sprintf(format, args...), KeySize)
	}
	var key []byte
	switch len(s) {
	case 0:
		return bad("the key is empty")
	case 2 * KeySize:
		k, err := hex.DecodeString(s)
		if err != nil {
			return bad("the key is 64 characters but not all hex digits")
		}
		key = k
	case 43, 44:
		enc := base64.StdEncoding
		if strings.ContainsAny(s, "-_") {
			enc = base64.URLEncoding
		}
		if len(s) == 43 {
			enc = enc.WithPadding(base64.NoPadding)
		}
		k, err := enc.Strict().DecodeString(s)
		if err != nil || len(k) != KeySize {
			return bad("the key is %d characters but not valid base64 of %d bytes", len(s), KeySize)
		}
		key = k
	default:
		return bad("the key is %d characters", len(s))
	}
	zero := true
	for _, b := range key {
		zero = zero && b == 0
	}
	if zero {
		return bad("the key is all zeros")
	}
	return key, nil
}
