package kvtest

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// NetworkAccess is a vault's networking settings as they apply to the emulator's clients,
// which never come from a trusted service, an allowed network or a private endpoint. The
// zero value is Azure's default: public access from all networks.
type NetworkAccess struct {
	// PublicAccessDisabled is publicNetworkAccess Disabled: only a private endpoint reaches
	// the vault, so every request with a valid token answers 403 Forbidden, inner error
	// ForbiddenByConnection ("Public network access is disabled and request is not from a
	// trusted service nor via an approved private link."). As on Azure it overrides the
	// firewall's rules.
	PublicAccessDisabled bool
	// FirewallDeny is the firewall's default action Deny ("Allow public access from
	// specific virtual networks and IP addresses") with no rule for the caller: every
	// request with a valid token answers 403 Forbidden, inner error ForbiddenByFirewall
	// ("Client address is not authorized and caller is not a trusted service.", naming the
	// address the request came from).
	FirewallDeny bool
}

// PermissionModel is how a vault authorizes data plane requests: Azure RBAC (the default)
// or vault access policies.
type PermissionModel string

// The permission models.
const (
	// PermissionRBAC is Azure RBAC: a denied request answers 403 ForbiddenByRbac.
	PermissionRBAC PermissionModel = "rbac"
	// PermissionAccessPolicy is the vault access policy model: a denied request answers 403
	// ForbiddenByPolicy ("The user, group or application '...' does not have secrets get
	// permission on key vault '...'"). The vault's role assignments ([Vault.Grant]) still
	// decide who may do what: the emulator keeps no access policies of its own, only their
	// answer.
	PermissionAccessPolicy PermissionModel = "access_policy"
)

// ParsePermissionModel accepts rbac or access_policy (access-policy, accesspolicy), in any
// letter case; "" is rbac, Azure's default for new vaults.
func ParsePermissionModel(s string) (PermissionModel, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "rbac", "":
		return PermissionRBAC, nil
	case "access_policy", "access-policy", "accesspolicy":
		return PermissionAccessPolicy, nil
	}
	return "", fmt.Errorf("kvtest: unknown permission model %q (want rbac or access_policy)", s)
}

// SetNetworkAccess sets the vault's networking settings; it applies to the next request.
// Requests without a token still get the 401 challenge, as on Azure, whose 403 names the
// caller of the token it validated first.
func (v *Vault) SetNetworkAccess(na NetworkAccess) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.network = na
}

// NetworkAccess returns the vault's networking settings.
func (v *Vault) NetworkAccess() NetworkAccess {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.network
}

// SetPermissionModel sets how the vault answers a request its role assignments deny:
// 403 ForbiddenByRbac ([PermissionRBAC], the default) or 403 ForbiddenByPolicy
// ([PermissionAccessPolicy]). It panics on another value.
func (v *Vault) SetPermissionModel(m PermissionModel) {
	if m != PermissionRBAC && m != PermissionAccessPolicy {
		panic(fmt.Sprintf("kvtest: unknown permission model %q", m))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.model = m
}

// callerText is how Key Vault's 403 messages name the caller.
func callerText(c *verifiedToken) string {
	return "appid=" + c.appid + ";oid=" + c.oid + ";iss=" + c.iss
}

// networkDenied answers r with Key Vault's 403 if the vault's networking settings refuse
// it, and returns the inner error code it answered with ("" when they allow it). The messages are the service's, as recorded in
// microsoft/multimodal-ai#171 (ForbiddenByConnection) and microsoft/AzureTRE#3789
// (ForbiddenByFirewall).
func (v *Vault) networkDenied(w http.ResponseWriter, r *http.Request, caller *verifiedToken) string {
	na := v.NetworkAccess()
	vault := "\r\nCaller: " + callerText(caller) + "\r\nVault: " + v.name + ";location=kvtest"
	switch {
	case na.PublicAccessDisabled:
		v.counters.add(OpNetworkDenied)
		v.writeErrorInner(w, http.StatusForbidden, "Forbidden",
			"Public network access is disabled and request is not from a trusted service nor via an approved private link."+vault,
			"ForbiddenByConnection")
		return "ForbiddenByConnection"
	case na.FirewallDeny:
		addr, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			addr = r.RemoteAddr
		}
		v.counters.add(OpNetworkDenied)
		v.writeErrorInner(w, http.StatusForbidden, "Forbidden",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: "+addr+vault,
			"ForbiddenByFirewall")
		return "ForbiddenByFirewall"
	}
	return ""
}

// policyDenied answers a request an access policy vault denies, with the message of
// azure-sdk-for-net's recorded 403 (CertificateClientTests): "The user, group or
// application '...' does not have secrets get permission on key vault 'v;location=...'".
func (v *Vault) policyDenied(w http.ResponseWriter, caller *verifiedToken, op Op) {
	object, perm := accessPolicyPermission(op)
	msg := "The user, group or application '" + callerText(caller) + "' does not have " + object + " " + perm +
		" permission on key vault '" + v.name + ";location=kvtest'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
	v.writeErrorInner(w, http.StatusForbidden, "Forbidden", msg, "ForbiddenByPolicy")
}

// accessPolicyPermission is the access policy permission an operation needs: its object
// (secrets, certificates) and the permission (get, list, set, ...).
func accessPolicyPermission(op Op) (object, perm string) {
	switch op {
	case OpGetCertificate, OpGetCertificatePolicy, OpGetCertificateOperation:
		return "certificates", "get"
	case OpListCertificates, OpListCertificateVersions, OpGetDeletedCertificate, OpListDeletedCertificates:
		return "certificates", "list"
	case OpCreateCertificate:
		return "certificates", "create"
	case OpImportCertificate:
		return "certificates", "import"
	case OpUpdateCertificate, OpUpdateCertificatePolicy, OpUpdateCertificateOperation:
		return "certificates", "update"
	case OpDeleteCertificate, OpDeleteCertificateOperation:
		return "certificates", "delete"
	case OpRecoverDeletedCertificate:
		return "certificates", "recover"
	case OpPurgeDeletedCertificate:
		return "certificates", "purge"
	case OpGetCertificateIssuer:
		return "certificates", "getissuers"
	case OpListCertificateIssuers:
		return "certificates", "listissuers"
	case OpSetCertificateIssuer, OpUpdateCertificateIssuer:
		return "certificates", "setissuers"
	case OpDeleteCertificateIssuer:
		return "certificates", "deleteissuers"
	case OpListSecrets, OpListVersions, OpGetDeletedSecret, OpListDeletedSecrets:
		return "secrets", "list"
	case OpSetSecret, OpUpdateSecret:
		return "secrets", "set"
	case OpDeleteSecret:
		return "secrets", "delete"
	case OpRecoverDeletedSecret:
		return "secrets", "recover"
	case OpPurgeDeletedSecret:
		return "secrets", "purge"
	case OpBackupSecret:
		return "secrets", "backup"
	case OpRestoreSecret:
		return "secrets", "restore"
	}
	return "secrets", "get"
}
