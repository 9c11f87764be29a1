package viperkv

import (
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
	reveal.SetSecretValues(func(p any) []string { return p.(*Provider).secretValues() })
}

// secretValues returns the distinct values of the secrets the current configuration holds
// (including last good values kept through a failed refresh), sorted, for viperkv run to
// mask them in its child's output (through internal/reveal: no other program gets them).
func (p *Provider) secretValues() []string {
	s := p.cur.Load()
	if s == nil {
		return nil
	}
	var out []string
	for _, sec := range s.secrets {
		if sec.has && sec.value != "" {
			out = append(out, sec.value)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
