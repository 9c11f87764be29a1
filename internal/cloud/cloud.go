// Package cloud is the table of Azure clouds that have Key Vault: each one's vault DNS
// suffix, Entra ID host and token issuer. The library, the CLI and the emulator read it
// here and nowhere else.
package cloud

import (
	"slices"
	"strings"
)

// Cloud is one Azure cloud.
type Cloud struct {
	// Name is the cloud's name, such as "AzurePublic".
	Name string
	// VaultSuffix is the DNS suffix of its vaults, such as "vault.azure.net".
	VaultSuffix string
	// AuthorityHost is its Entra ID host, such as "login.microsoftonline.com".
	AuthorityHost string
	// PrivateLinkZone is the DNS zone its vaults' private endpoints are named in, such as
	// "privatelink.vaultcore.azure.net": with a private endpoint, a vault's host is a CNAME
	// of <vault>.<zone> (Azure's private endpoint DNS zone values for Microsoft.KeyVault/vaults).
	PrivateLinkZone string
	// v1IssuerHost is the host of its v1 access tokens' issuer.
	v1IssuerHost string
	// aliases are other names people use for it (the Azure CLI's among them).
	aliases []string
}

// clouds is the table; nothing writes it.
var clouds = [...]Cloud{
	{Name: "AzurePublic", VaultSuffix: "vault.azure.net", AuthorityHost: "login.microsoftonline.com",
		PrivateLinkZone: "privatelink.vaultcore.azure.net", v1IssuerHost: "sts.windows.net", aliases: []string{"azurecloud", "public"}},
	{Name: "AzureChina", VaultSuffix: "vault.azure.cn", AuthorityHost: "login.chinacloudapi.cn",
		PrivateLinkZone: "privatelink.vaultcore.azure.cn", v1IssuerHost: "sts.chinacloudapi.cn", aliases: []string{"azurechinacloud", "china"}},
	{Name: "AzureUSGovernment", VaultSuffix: "vault.usgovcloudapi.net", AuthorityHost: "login.microsoftonline.us",
		PrivateLinkZone: "privatelink.vaultcore.usgovcloudapi.net", v1IssuerHost: "login.microsoftonline.us", aliases: []string{"usgovernment", "usgov"}},
}

// All returns the clouds, the public cloud first.
func All() []Cloud { return slices.Clone(clouds[:]) }

// Public returns the public cloud.
func Public() Cloud { return clouds[0] }

// ByName returns the cloud a name or alias names, in any case. It allocates nothing: the
// reference parser asks for every reference.
func ByName(name string) (Cloud, bool) {
	n := strings.TrimSpace(name)
	for _, c := range clouds {
		if strings.EqualFold(n, c.Name) || slices.ContainsFunc(c.aliases, func(a string) bool { return strings.EqualFold(n, a) }) {
			return c, true
		}
	}
	return Cloud{}, false
}

// ByVaultHost returns the cloud whose vault suffix host ends with (or is).
func ByVaultHost(host string) (Cloud, bool) {
	for _, c := range clouds {
		if host == c.VaultSuffix || strings.HasSuffix(host, "."+c.VaultSuffix) {
			return c, true
		}
	}
	return Cloud{}, false
}

// IsAuthorityHost reports whether h is the Entra ID host of a cloud.
func IsAuthorityHost(h string) bool {
	for _, c := range clouds {
		if h == c.AuthorityHost {
			return true
		}
	}
	return false
}

// Resource is the token audience its Key Vault expects, such as "https://vault.azure.net".
func (c Cloud) Resource() string { return "https://" + c.VaultSuffix }

// V1Issuer returns the issuer of its v1 access tokens for tenant.
func (c Cloud) V1Issuer(tenant string) string {
	return "https://" + c.v1IssuerHost + "/" + tenant + "/"
}
