// Package grammar finds Key Vault references in config strings and parses them:
//
//	ref     = "@" ( "KeyVault(" | "Microsoft.KeyVault(" ) params ")"   ; prefix case-insensitive
//	params  = param *( ";" param ) [ ";" ]                              ; blanks allowed around ";" "="
//	param   = ( "SecretUri" | "VaultName" | "SecretName" | "SecretVersion" ) "=" value
//
// with either SecretUri=https://<vault>.<suffix>/secrets/<name>[/<version>][/] alone (or
// /certificates/<name>[/<version>]: a Key Vault certificate, read through the secret of the
// same name and version that holds it with its private key), or
// VaultName and SecretName (and optionally SecretVersion). "@@" right before a prefix
// stands for a literal "@", so that prefix is plain text; other "@@" stay as they are.
//
// Which status a malformed reference gets:
//
//   - HostNotAllowed: the text is a well-formed URL but names a destination that no
//     token may go to: a scheme other than https, user info ("user@host"), a port other
//     than 443, an IP address, a host that is not <vault>.<suffix> of the configured cloud
//     (look-alikes, trailing dot, non-ASCII or punycode, bad vault label) unless the exact
//     host is allowed, or a cloud without a known vault suffix.
//   - InvalidSyntax: everything else: a missing ')', unknown, duplicate, empty or
//     conflicting parameters, a SecretUri that is not an absolute URL or has an empty host,
//     an empty or non-numeric port, a query or fragment, a path other than exactly
//     /secrets/<name>[/<version>][/] (dot segments, "//", percent-escapes, backslashes,
//     extra segments), a bad secret name, version or VaultName.
//
// Host problems are checked before the path, so a reference that is wrong in both ways
// reports HostNotAllowed: the security finding is the one an operator must see.
package grammar

import (
	"strings"

	"github.com/viperkv/viperkv/internal/cloud"
)

const (
	// The prefixes after their '@', lowercase for ASCII case folding.
	prefixShort = "keyvault("
	prefixLong  = "microsoft.keyvault("
)

// Config is what parsing depends on: the cloud whose vault hosts are accepted and
// extra exact hosts (lowercase, optionally "host:port") the user allowed. The zero Config
// is the public cloud.
type Config struct {
	// Cloud is the cloud's name as the user gave it ("" for the public cloud).
	Cloud string
	// AllowedHosts are the exact hosts allowed besides the cloud's vaults.
	AllowedHosts map[string]bool
}

// NewConfig builds a Config, normalizing the allowed hosts as the parser compares them
// (lowercase, blanks trimmed).
func NewConfig(cloudName string, allowedHosts ...string) Config {
	pc := Config{Cloud: cloudName}
	for _, h := range allowedHosts {
		if h = LowerASCII(TrimBlank(h)); h != "" {
			if pc.AllowedHosts == nil {
				pc.AllowedHosts = map[string]bool{}
			}
			pc.AllowedHosts[h] = true
		}
	}
	return pc
}

// cloudOrDefault is the cloud's name, the public cloud's for the zero Config.
func (pc Config) cloudOrDefault() string {
	if pc.Cloud == "" {
		return cloud.Public().Name
	}
	return pc.Cloud
}

// Suffix is the DNS suffix of the cloud's vaults, or "" for a cloud without a known one.
func (pc Config) Suffix() string {
	t, _ := cloud.ByName(pc.cloudOrDefault())
	return t.VaultSuffix
}

// Ref is one parsed reference, canonical: the vault's host (lowercase, with a ":port" only
// for an allowed "host:port"), the secret's name as written, and the pinned version in
// lowercase hex or "". viperkv.Reference has the same fields.
type Ref struct {
	Vault, Name, Version string
}

// Status is a parse or shape failure's status; the values are viperkv's Status names.
type Status string

// The statuses the grammar and the shapes give.
const (
	InvalidSyntax                Status = "InvalidSyntax"
	HostNotAllowed               Status = "HostNotAllowed"
	AppConfigurationNotSupported Status = "AppConfigurationNotSupported"
	PropertyNotFound             Status = "PropertyNotFound"
	SecretFormatInvalid          Status = "SecretFormatInvalid"
	DecodeFailed                 Status = "DecodeFailed"
)

// Error is a malformed or refused reference. Reason names the parameter, secret name or
// host involved but never quotes the whole config value.
type Error struct {
	Status Status
	Reason string
	// Written is the reference as written, from its prefix to its ')' (or the prefix
	// alone when the ')' is missing, so no text after it is quoted).
	Written string
}

// Error formats the error as "<Status>: <Reason>".
func (e *Error) Error() string { return string(e.Status) + ": " + e.Reason }

// Template is one config string cut into literal text and references.
type Template struct {
	// Parts alternate literal text (with "@@" escapes applied) and references; adjacent
	// literals are merged and none is empty. nil when the string needs no rendering.
	Parts []Part
	// Src is the whole string when Parts is nil, kept so Render needs no allocation.
	Src string
}

// Part is a literal (Ref == nil) or a reference, with Text the reference as written and
// Shape what it asks of the value (Property, Format, Decode, Optional).
type Part struct {
	Lit   string
	Ref   *Ref
	Text  string
	Shape Shape
}

// maxWritten bounds how much of a reference as written a status or error quotes.
const maxWritten = 200

// Written returns a reference's text for statuses, bounded.
func Written(s string) string {
	if len(s) > maxWritten {
		return s[:maxWritten] + "..."
	}
	return s
}

// Parse finds the references in s. A string without a reference prefix costs one scan
// and no allocation.
func Parse(s string, pc Config) (Template, *Error) {
	first := strings.IndexByte(s, '@')
	if first < 0 {
		return Template{Src: s}, nil
	}
	if text := appConfigReference(s[first:]); text != "" {
		// Passed through, its text would be read as the value.
		return Template{}, &Error{Status: AppConfigurationNotSupported, Written: text,
			Reason: "an App Configuration reference (@Microsoft.AppConfiguration(...)) is recognised but not resolved: " +
				"viperkv resolves Key Vault references; read the value with the App Configuration provider, " +
				"or reference its Key Vault secret with @KeyVault(...)"}
	}
	// An upper bound on references (escapes are counted too) sizes both slices once, so
	// the pointers into refs stay valid.
	n := 0
	for i := first; i < len(s); i++ {
		if s[i] == '@' && PrefixLen(s, i) > 0 {
			n++
		}
	}
	if n == 0 {
		return Template{Src: s}, nil
	}
	refs := make([]Ref, 0, n)
	parts := make([]Part, 0, 2*n+1)
	var pending string // literal text before an "@@" escape, not yet in parts
	litStart := 0
	for i := first; i < len(s); {
		j := strings.IndexByte(s[i:], '@')
		if j < 0 {
			break
		}
		j += i
		if j+1 < len(s) && s[j+1] == '@' && PrefixLen(s, j+1) > 0 {
			// "@@KeyVault(": keep one '@'; the prefix after it is plain text.
			pending += s[litStart : j+1]
			litStart = j + 2
			i = j + 2
			continue
		}
		pl := PrefixLen(s, j)
		if pl == 0 {
			i = j + 1
			continue
		}
		name := "@KeyVault("
		if pl > 1+len(prefixShort) {
			name = "@Microsoft.KeyVault("
		}
		end := strings.IndexByte(s[j+pl:], ')')
		if end < 0 {
			return Template{}, &Error{Status: InvalidSyntax,
				Reason: "missing closing ')' after " + name, Written: s[j:j+pl] + "..."}
		}
		text := s[j : j+pl+end+1]
		ref, sh, st, reason := params(s[j+pl:j+pl+end], pc, pl > 1+len(prefixShort))
		if reason != "" {
			return Template{}, &Error{Status: st, Reason: reason, Written: Written(text)}
		}
		if lit := pending + s[litStart:j]; lit != "" {
			parts = append(parts, Part{Lit: lit})
		}
		pending = ""
		refs = append(refs, ref)
		parts = append(parts, Part{Ref: &refs[len(refs)-1], Text: text, Shape: sh})
		i = j + pl + end + 1
		litStart = i
	}
	lit := pending + s[litStart:]
	if len(parts) == 0 && pending == "" {
		return Template{Src: s}, nil
	}
	if lit != "" {
		parts = append(parts, Part{Lit: lit})
	}
	if len(parts) > 1 {
		for _, p := range parts {
			if p.Ref != nil && p.Shape.WholeValue() {
				return Template{}, &Error{Status: InvalidSyntax, Written: Written(p.Text),
					Reason: "a reference with Decode, or with Format and no Property, must be the whole value: " +
						"its bytes or subtree cannot be part of a text"}
			}
		}
	}
	return Template{Parts: parts}, nil
}

// HasPrefix reports whether s holds a reference prefix, escaped or not, well-formed or
// not, or an App Configuration reference's. It costs one scan for '@'.
func HasPrefix(s string) bool {
	for i := strings.IndexByte(s, '@'); i >= 0; {
		if PrefixLen(s, i) > 0 || HasPrefixFold(s[i+1:], appConfigPrefix) {
			return true
		}
		j := strings.IndexByte(s[i+1:], '@')
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// appConfigPrefix is App Service's App Configuration reference, after its '@', lowercase.
const appConfigPrefix = "microsoft.appconfiguration("

// appConfigReference returns the first App Configuration reference in s (not escaped by
// "@@"), as written, or "".
func appConfigReference(s string) string {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] != '@':
		case i+1 < len(s) && s[i+1] == '@':
			i++ // "@@": a literal '@'
		case HasPrefixFold(s[i+1:], appConfigPrefix):
			text := s[i:]
			if end := strings.IndexByte(text, ')'); end >= 0 {
				return Written(text[:end+1])
			}
			return s[i:i+1+len(appConfigPrefix)] + "..."
		}
	}
	return ""
}

// HasRefs reports whether the string holds at least one reference.
func (t Template) HasRefs() bool {
	for _, p := range t.Parts {
		if p.Ref != nil {
			return true
		}
	}
	return false
}

// NeedsRender reports whether Render's result differs from the input string: it holds a
// reference or an "@@" escape. A resolver that keeps only HasRefs templates would leave
// "@@KeyVault(...)" unescaped.
func (t Template) NeedsRender() bool { return t.Parts != nil }

// Refs returns the references in order of appearance, duplicates included.
func (t Template) Refs() []Ref {
	var out []Ref
	for _, p := range t.Parts {
		if p.Ref != nil {
			out = append(out, *p.Ref)
		}
	}
	return out
}

// Written returns each reference as written, in the order of Refs.
func (t Template) Written() []string {
	var out []string
	for _, p := range t.Parts {
		if p.Ref != nil {
			out = append(out, Written(p.Text))
		}
	}
	return out
}

// Render substitutes lookup's value for each reference. It reports false (and "") when
// lookup lacks any of them, so a partial value never passes for a whole one. Values are
// copied as they are, never scanned: a secret holding "@KeyVault(...)" stays literal.
func (t Template) Render(lookup func(Ref) (string, bool)) (string, bool) {
	if t.Parts == nil {
		return t.Src, true
	}
	if len(t.Parts) == 1 {
		if p := t.Parts[0]; p.Ref != nil {
			return lookup(*p.Ref) // whole-value reference: no copy
		}
		return t.Parts[0].Lit, true
	}
	var b strings.Builder
	for _, p := range t.Parts {
		if p.Ref == nil {
			b.WriteString(p.Lit)
			continue
		}
		v, ok := lookup(*p.Ref)
		if !ok {
			return "", false
		}
		b.WriteString(v)
	}
	return b.String(), true
}

// PrefixLen returns the length of the reference prefix ("@KeyVault(" or
// "@Microsoft.KeyVault(", any ASCII case) at s[i:], or 0.
func PrefixLen(s string, i int) int {
	if i >= len(s) || s[i] != '@' {
		return 0
	}
	switch rest := s[i+1:]; {
	case HasPrefixFold(rest, prefixShort):
		return 1 + len(prefixShort)
	case HasPrefixFold(rest, prefixLong):
		return 1 + len(prefixLong)
	}
	return 0
}
