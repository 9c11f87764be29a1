// Package kvname holds Key Vault's naming rules (vault names, secret names, versions),
// for the reference parser and for the checks on what a vault returns.
package kvname

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	// MaxSecretName is the longest secret name Key Vault accepts.
	MaxSecretName = 127
	// VersionLen is the length of a version id.
	VersionLen = 32
	// maxQuote bounds how much of any piece of text a message quotes, so a message can
	// never carry a long value (or the whole of one) into logs.
	maxQuote = 64
)

// VaultNameProblem applies Azure's vault naming rules: 3-24 of [0-9A-Za-z-], starting with
// a letter, ending with a letter or digit, no "--".
func VaultNameProblem(v string) string {
	for i := 0; i < len(v); i++ {
		if !isNameByte(v[i]) {
			return fmt.Sprintf("vault name %s has %s (allowed: letters, digits, '-')", Quote(v), DescribeByte(v, i))
		}
	}
	switch {
	case len(v) < 3 || len(v) > 24:
		return fmt.Sprintf("vault name %s is %d characters (want 3-24)", Quote(v), len(v))
	case !IsLetter(v[0]):
		return fmt.Sprintf("vault name %s must start with a letter", Quote(v))
	case v[len(v)-1] == '-':
		return fmt.Sprintf("vault name %s must end with a letter or digit", Quote(v))
	case strings.Contains(v, "--"):
		return fmt.Sprintf("vault name %s has \"--\" (consecutive hyphens are not allowed)", Quote(v))
	}
	return ""
}

// SecretNameProblem applies Key Vault's secret naming rules: 1-127 of [0-9A-Za-z-].
func SecretNameProblem(n string) string {
	if n == "" {
		return "missing secret name"
	}
	for i := 0; i < len(n); i++ {
		if !isNameByte(n[i]) {
			return fmt.Sprintf("secret name %s has %s (allowed: letters, digits, '-')", Quote(n), DescribeByte(n, i))
		}
	}
	if len(n) > MaxSecretName {
		return fmt.Sprintf("secret name %s is %d characters (max %d)", Quote(n), len(n), MaxSecretName)
	}
	return ""
}

// VersionProblem checks a secret version: 32 hex digits, as Key Vault issues them.
func VersionProblem(v string) string {
	for i := 0; i < len(v); i++ {
		if !IsHex(v[i : i+1]) {
			return fmt.Sprintf("secret version %s has %s (want 32 hex digits)", Quote(v), DescribeByte(v, i))
		}
	}
	if len(v) != VersionLen {
		return fmt.Sprintf("secret version %s is %d characters (want 32 hex digits)", Quote(v), len(v))
	}
	return ""
}

func IsLetter(c byte) bool   { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isNameByte(c byte) bool { return IsLetter(c) || c >= '0' && c <= '9' || c == '-' }

func AllDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func IsHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// DescribeByte names the character at s[i] for an error: '_', ' ', 'é', or byte 0xff.
func DescribeByte(s string, i int) string {
	r, size := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("byte 0x%02x", s[i])
	}
	return strconv.QuoteRune(r)
}

// Quote quotes a piece of config text for an error, cut to maxQuote bytes.
func Quote(s string) string {
	if len(s) <= maxQuote {
		return strconv.Quote(s)
	}
	n := maxQuote
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strconv.Quote(s[:n]) + "..."
}
