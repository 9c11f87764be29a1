package viperkv

import (
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// noRedirects returns a transport that never follows a redirect. STUB: filled in by the
// redirect hardening work.
func noRedirects(t policy.Transporter) policy.Transporter { return t }

// vaultGuard returns a per-retry policy for the client of one vault host. STUB.
func vaultGuard(host string) policy.Policy { return nil }

// guards drops nil policies (the stub's).
func guards(ps ...policy.Policy) []policy.Policy {
	var out []policy.Policy
	for _, p := range ps {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}
