package viperkv

import (
	"cmp"
	"slices"
	"strings"

	"github.com/viperkv/viperkv/internal/reveal"
)

// HasReference reports whether s holds a Key Vault reference prefix (@KeyVault( or
// @Microsoft.KeyVault(, in any case, escaped with "@@" or not), well-formed or not. Strings
// for which it is false resolve to themselves; it costs one scan for '@'. viperkv run uses it
// to pick the environment variables that go through a Provider.
func HasReference(s string) bool {
	for i := strings.IndexByte(s, '@'); i >= 0; {
		if prefixLen(s, i) > 0 {
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
	slices.SortFunc(out, func(a, b reveal.Secret) int {
		return cmp.Or(strings.Compare(a.Vault, b.Vault), strings.Compare(a.Name, b.Name), strings.Compare(a.Value, b.Value))
	})
	return out
}
