package viperkv

import (
	"slices"
	"strings"
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

// SecretValues returns the distinct values of the secrets the current configuration holds
// (including last good values kept through a failed refresh), sorted, so that a program can
// mask them in output it passes on, as viperkv run masks a child's output. Treat the result
// as the secrets themselves: never log it. It returns nil before the first Load.
func (p *Provider) SecretValues() []string {
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
