package viperkv

import (
	"cmp"
	"slices"
	"strings"

	"github.com/viperkv/viperkv/internal/grammar"
	"github.com/viperkv/viperkv/internal/reveal"
)

// HasReference reports whether s holds a Key Vault reference prefix (@KeyVault( or
// @Microsoft.KeyVault(, in any case, escaped with "@@" or not), well-formed or not, or an
// App Configuration reference (@Microsoft.AppConfiguration(), which a Provider reports as
// not supported rather than pass its text off as a value. Strings
// for which it is false resolve to themselves; it costs one scan for '@'. viperkv run uses it
// to pick the environment variables that go through a Provider.
func HasReference(s string) bool { return grammar.HasPrefix(s) }

func init() {
	reveal.SetSecrets(func(p any) []reveal.Secret { return p.(*Provider).secrets() })
}

// secrets returns the secrets the current configuration holds with a value (including
// last good values kept through a failed refresh), sorted, for viperkv run to mask them in
// its child's output (through internal/reveal: no other program gets them).
func (p *Provider) secrets() []reveal.Secret {
	s := p.cur.Load()
	if s == nil {
		return nil
	}
	var out []reveal.Secret
	for r, sec := range s.secrets {
		if sec.has && sec.value != "" {
			out = append(out, reveal.Secret{Vault: r.Vault, Name: r.Name, Value: sec.value})
		}
	}
	// What a reference's shape made of a secret (a property, each leaf of a subtree, the
	// decoded bytes) shows on its own in output, so it is masked on its own too.
	for key, val := range s.rendered {
		t := s.scan.templates[key]
		if len(t.Parts) != 1 || t.Parts[0].Ref == nil || t.Parts[0].Shape.Plain() {
			continue
		}
		r := *t.Parts[0].Ref
		eachLeaf(val, func(leaf string) {
			out = append(out, reveal.Secret{Vault: r.Vault, Name: r.Name, Value: leaf})
		})
	}
	out = slices.CompactFunc(slices.SortedFunc(slices.Values(out), compareSecrets), func(a, b reveal.Secret) bool { return a == b })
	return out
}

func compareSecrets(a, b reveal.Secret) int {
	return cmp.Or(strings.Compare(a.Vault, b.Vault), strings.Compare(a.Name, b.Name), strings.Compare(a.Value, b.Value))
}

// eachLeaf calls fn with every string leaf of v, and bytes as the string they hold.
// Numbers and booleans (a port, a flag) are left unmasked: masking "true" or "5432" in a
// child's output would hide more than it protects.
func eachLeaf(v any, fn func(string)) {
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			eachLeaf(e, fn)
		}
	case []any:
		for _, e := range x {
			eachLeaf(e, fn)
		}
	case []byte:
		fn(string(x))
	case string:
		if x != "" {
			fn(x)
		}
	}
}
