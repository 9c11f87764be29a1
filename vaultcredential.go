package viperkv

import (
	"errors"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv/internal/driver/azvault"
)

// vaultCredential is one WithVaultCredential or WithVaultManagedIdentity.
type vaultCredential struct {
	option   string // the option that gave it, for errors
	host     string // as given
	cred     azcore.TokenCredential
	identity azidentity.ManagedIDKind
	managed  bool // WithVaultManagedIdentity: identity, not cred
}

// vaultCredentials checks the per-vault credentials and returns them by vault host, as
// requests name vaults. A host is checked as a reference's is, so a credential can only be
// bound to a vault this provider may send tokens to, and its key is then exactly what
// Reference.Vault holds for that vault.
func (o options) vaultCredentials() (map[string]azvault.VaultCredential, error) {
	if len(o.vaultCreds) == 0 {
		return nil, nil
	}
	out := make(map[string]azvault.VaultCredential, len(o.vaultCreds))
	by := map[string]string{} // host -> the option call that gave it, for "twice"
	for _, vc := range o.vaultCreds {
		call := fmt.Sprintf("%s(%q)", vc.option, vc.host)
		host, err := o.vaultHost(vc.host)
		if err != nil {
			return nil, fmt.Errorf("viperkv: New: %s: %w", call, err)
		}
		if !vc.managed && vc.cred == nil {
			return nil, fmt.Errorf("viperkv: New: %s: nil credential", call)
		}
		if prev, twice := by[host]; twice {
			return nil, fmt.Errorf("viperkv: New: %s: vault %s already has a credential (%s)", call, host, prev)
		}
		by[host] = call
		out[host] = azvault.VaultCredential{Credential: vc.cred, Identity: vc.identity}
	}
	return out, nil
}

// vaultHost returns raw as a vault host references may name (lowercase, as
// Reference.Vault has it), or why it is not one.
func (o options) vaultHost(raw string) (string, error) {
	host := strings.ToLower(strings.TrimSpace(raw))
	if host == "" {
		return "", errors.New("empty vault host (want one such as myvault." + o.cloud.VaultSuffix() + ")")
	}
	if strings.ContainsAny(host, "/()@;=?#\\ ") {
		// A URL or a reference, not a host: parsed as one, part of it would be dropped.
		return "", fmt.Errorf("not a vault host (want one such as myvault.%s, without scheme or path)", o.cloud.VaultSuffix())
	}
	r, err := ParseReference("@KeyVault(SecretUri=https://"+host+"/secrets/probe)", WithCloud(o.cloud), WithAllowedHosts(o.allowedHosts...))
	if err != nil {
		var re *ReferenceError
		if errors.As(err, &re) {
			return "", fmt.Errorf("not a vault this provider may send tokens to: %s", re.Reason)
		}
		return "", err
	}
	if r.Vault != host {
		return "", fmt.Errorf("not a vault host (want one such as myvault.%s)", o.cloud.VaultSuffix())
	}
	return host, nil
}
