package viperkv

import (
	"fmt"
	"strings"

	"github.com/viperkv/viperkv/internal/kvname"
)

// Cloud names an Azure cloud. It decides which vault host names references may use (and
// so where a token may be sent) and the host the VaultName form builds.
type Cloud string

// The Azure clouds that have Key Vault.
const (
	// CloudPublic is global Azure: vaults are <name>.vault.azure.net.
	CloudPublic Cloud = "AzurePublic"
	// CloudChina is Azure operated by 21Vianet: vaults are <name>.vault.azure.cn.
	CloudChina Cloud = "AzureChina"
	// CloudUSGovernment is Azure Government: vaults are <name>.vault.usgovcloudapi.net.
	CloudUSGovernment Cloud = "AzureUSGovernment"
)

// VaultSuffix returns the DNS suffix of the cloud's vaults, such as "vault.azure.net", or
// "" for a cloud this package does not know.
func (c Cloud) VaultSuffix() string {
	switch c {
	case CloudPublic:
		return "vault.azure.net"
	case CloudChina:
		return "vault.azure.cn"
	case CloudUSGovernment:
		return "vault.usgovcloudapi.net"
	}
	return ""
}

// KeyVaultResource returns the resource (token audience) that Key Vault of this cloud
// expects, such as "https://vault.azure.net", or "" for an unknown cloud.
func (c Cloud) KeyVaultResource() string {
	if s := c.VaultSuffix(); s != "" {
		return "https://" + s
	}
	return ""
}

// ParseCloud returns the Cloud a configuration or command line names. It accepts the
// constants' names, the Azure CLI's names (AzureCloud, AzureChinaCloud) and the short
// aliases public, china, usgovernment and usgov, in any case. An empty name is an error
// so that a missing setting is not silently taken for the public cloud.
func ParseCloud(name string) (Cloud, error) {
	switch lowerASCII(strings.TrimSpace(name)) {
	case "azurepublic", "azurecloud", "public":
		return CloudPublic, nil
	case "azurechina", "azurechinacloud", "china":
		return CloudChina, nil
	case "azureusgovernment", "usgovernment", "usgov":
		return CloudUSGovernment, nil
	}
	return "", fmt.Errorf("viperkv: unknown cloud %s (want AzurePublic, AzureChina or AzureUSGovernment)", kvname.Quote(name))
}

// authorityHost returns the cloud's Entra ID host, such as "login.microsoftonline.com".
func (c Cloud) authorityHost() string {
	switch c {
	case CloudChina:
		return "login.chinacloudapi.cn"
	case CloudUSGovernment:
		return "login.microsoftonline.us"
	}
	return "login.microsoftonline.com"
}

// v1Issuer returns the issuer of the cloud's v1 access tokens for tenant.
func (c Cloud) v1Issuer(tenant string) string {
	switch c {
	case CloudChina:
		return "https://sts.chinacloudapi.cn/" + tenant + "/"
	case CloudUSGovernment:
		return "https://login.microsoftonline.us/" + tenant + "/"
	}
	return "https://sts.windows.net/" + tenant + "/"
}
