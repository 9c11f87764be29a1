package viperkv

import (
	"strconv"

	"github.com/viperkv/viperkv/internal/grammar"
)

// The grammar of references, the checks of their hosts and paths, and their shapes
// (Property, Format, Decode, Optional) live in internal/grammar; docs/references.md
// describes them for users. This file is their face: Reference, ReferenceError and
// ParseReference.

// Reference is one parsed Key Vault secret reference. Its fields are canonical: the URL the
// resolver requests is rebuilt from them, never taken from the config text.
type Reference struct {
	// Vault is the vault's host, lowercase, such as "myvault.vault.azure.net". It carries a
	// ":port" only for an explicitly allowed "host:port".
	Vault string
	// Name is the secret's name as written (Key Vault compares names case-insensitively).
	Name string
	// Version is the pinned version in lowercase hex, or "" for the latest version.
	Version string
}

// VaultURL returns the vault's base URL, such as "https://myvault.vault.azure.net".
func (r Reference) VaultURL() string { return "https://" + r.Vault }

// ID returns the secret's identifier URL: VaultURL + "/secrets/<name>[/<version>]".
func (r Reference) ID() string {
	id := r.VaultURL() + "/secrets/" + r.Name
	if r.Version != "" {
		id += "/" + r.Version
	}
	return id
}

// String returns the reference in canonical form, "@KeyVault(SecretUri=<ID>)", or "" for
// the zero Reference (a malformed reference has none: see ReferenceStatus.Written).
func (r Reference) String() string {
	if r == (Reference{}) {
		return ""
	}
	return "@KeyVault(SecretUri=" + r.ID() + ")"
}

// key returns r with the name lowercased: Key Vault secret names are case-insensitive, so
// "DB-Conn" and "db-conn" are one secret and must be fetched once.
func (r Reference) key() Reference {
	r.Name = grammar.LowerASCII(r.Name)
	return r
}

// ReferenceError reports a malformed or refused reference. Reason names the parameter,
// secret name or host involved but never quotes the whole config value, which may hold
// other sensitive text.
type ReferenceError struct {
	// Key is the config key whose value holds the reference ("" from ParseReference).
	Key string
	// Status is StatusInvalidSyntax or StatusHostNotAllowed.
	Status Status
	// Reason says what is wrong, for people.
	Reason string
	// Written is the reference as written, from its prefix to its ')' (or the prefix
	// alone when the ')' is missing, so no text after it is quoted).
	Written string
}

// Error formats the error as `viperkv: config key "db.conn": InvalidSyntax: <reason>`.
func (e *ReferenceError) Error() string {
	if e.Key == "" {
		return "viperkv: " + string(e.Status) + ": " + e.Reason
	}
	return "viperkv: config key " + strconv.Quote(e.Key) + ": " + string(e.Status) + ": " + e.Reason
}

// ParseReference parses s as exactly one reference making up the whole value (surrounding
// blanks are ignored), as a Provider with the same options would: for the public cloud
// unless WithCloud says otherwise, and with the hosts of WithAllowedHosts; other options
// are ignored. The error is a *ReferenceError with an empty Key.
func ParseReference(s string, opts ...Option) (Reference, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	t, err := parseTemplate("", grammar.TrimBlank(s), o.parseConfig())
	if err != nil {
		return Reference{}, err
	}
	if len(t.Parts) != 1 || t.Parts[0].Ref == nil {
		return Reference{}, &ReferenceError{Status: StatusInvalidSyntax,
			Reason: "not a single reference (want the whole value to be @KeyVault(...))"}
	}
	return Reference(*t.Parts[0].Ref), nil
}

// parseConfig is what parsing depends on: the cloud and the hosts the user allowed.
type parseConfig = grammar.Config

// newParseConfig builds a parseConfig for cloud and the allowed hosts.
func newParseConfig(cloud Cloud, allowedHosts ...string) parseConfig {
	return grammar.NewConfig(string(cloud), allowedHosts...)
}

// template is one config string cut into literal text and references.
type template = grammar.Template

// parseTemplate finds the references in s, the value of config key. The error is a
// *ReferenceError naming the key.
func parseTemplate(key, s string, pc parseConfig) (template, error) {
	t, err := grammar.Parse(s, pc)
	if err != nil {
		return template{}, &ReferenceError{Key: key, Status: Status(err.Status), Reason: err.Reason, Written: err.Written}
	}
	return t, nil
}

// refsOf returns t's references in order of appearance, duplicates included.
func refsOf(t template) []Reference {
	var out []Reference
	for _, p := range t.Parts {
		if p.Ref != nil {
			out = append(out, Reference(*p.Ref))
		}
	}
	return out
}
