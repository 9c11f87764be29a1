// Package reveal hands viperkv's own CLI the plaintext secret values a Provider holds, so
// that viperkv run can mask them in its child's output. It is internal on purpose: no
// program outside this module can ask a Provider for its values.
package reveal

// Secret is one secret a Provider holds: where it is, and its value.
type Secret struct {
	Vault, Name string // the vault's host and the secret's name, to talk about it
	Value       string // the plaintext: never log it
}

// secrets is set once, by package viperkv's init, and never written again. A hook
// (rather than a method on Provider) keeps plaintext off the exported API.
var secrets func(provider any) []Secret

// SetSecrets installs the accessor. Only package viperkv calls it, from init.
func SetSecrets(f func(provider any) []Secret) { secrets = f }

// Secrets returns the secrets p (a *viperkv.Provider) currently holds with a value,
// including last good values kept through a failed refresh, sorted by vault and name.
// Treat the values as the secrets themselves: never log them.
func Secrets(p any) []Secret {
	if secrets == nil {
		return nil
	}
	return secrets(p)
}
