package viperkv

import (
	"fmt"

	"github.com/viperkv/viperkv/internal/cloud"

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
	t, _ := cloud.ByName(string(c))
	return t.VaultSuffix
}

// KeyVaultResource returns the resource (token audience) that Key Vault of this cloud
// expects, such as "https://vault.azure.net", or "" for an unknown cloud.
func (c Cloud) KeyVaultResource() string {
	if t, ok := cloud.ByName(string(c)); ok {
		return t.Resource()
	}
	return ""
}

// ParseCloud returns the Cloud a configuration or command line names. It accepts the
// constants' names, the Azure CLI's names (AzureCloud, AzureChinaCloud) and the short
// aliases public, china, usgovernment and usgov, in any case. An empty name is an error
// so that a missing setting is not silently taken for the public cloud.
func ParseCloud(name string) (Cloud, error) {
	if t, ok := cloud.ByName(name); ok {
		return Cloud(t.Name), nil
	}
	return "", fmt.Errorf("viperkv: unknown cloud %s (want AzurePublic, AzureChina or AzureUSGovernment)", kvname.Quote(name))
}
