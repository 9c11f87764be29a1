// Package reveal hands viperkv's own CLI the plaintext secret values a Provider holds, so
// that viperkv run can mask them in its child's output. It is internal on purpose: no
// program outside this module can ask a Provider for its values.
package reveal

// secretValues is set once, by package viperkv's init, and never written again. A hook
// (rather than a method on Provider) keeps plaintext off the exported API.
var secretValues func(provider any) []string

// SetSecretValues installs the accessor. Only package viperkv calls it, from init.
func SetSecretValues(f func(provider any) []string) { secretValues = f }

// SecretValues returns the distinct secret values p (a *viperkv.Provider) currently holds,
// including last good values kept through a failed refresh, sorted. Treat the result as
// the secrets themselves: never log it.
func SecretValues(p any) []string {
	if secretValues == nil {
		return nil
	}
	return secretValues(p)
}
