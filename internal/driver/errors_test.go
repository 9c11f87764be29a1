package driver

import (
	"encoding/json"
	"strings"
	"testing"
)

// body renders Key Vault's error body.
func body(code, inner, msg string) []byte {
	e := map[string]any{"code": code, "message": msg}
	if inner != "" {
		e["innererror"] = map[string]string{"code": inner}
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return b
}

// Each 403 Key Vault gives, in the shapes it was recorded in (see the Inner* constants),
// has its kind and a reason naming the fix, never the vault's words.
func TestForbiddenAnswers(t *testing.T) {
	const (
		get    = "GET https://myvault.vault.azure.net/secrets/db"
		list   = "GET https://myvault.vault.azure.net/secrets (list)"
		vault  = "myvault.vault.azure.net"
		caller = "appid=04b07795-8ddb-461a-bbee-02f9e1bf7b46;oid=EAADEB4C-A236-48A1-84F9-5C3685078B2C;iss=https://sts.windows.net/9d5f9c99-0e52-4b50-82d9-6152df0d794a/"
	)
	for _, tc := range []struct {
		name, what, vault string
		body              []byte
		kind              Kind
		reason            string
	}{
		{"firewall", get, vault, body("Forbidden", "ForbiddenByFirewall",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: 20.61.146.97\r\nCaller: "+caller+"\r\nVault: myvault;location=westeurope"),
			KindForbiddenByFirewall,
			get + ": 403: the vault's firewall refuses this caller (ForbiddenByFirewall): allow the app's outbound IP (the vault saw 20.61.146.97) " +
				"or virtual network in the vault's networking settings, or reach it through a private endpoint"},
		{"firewall, address masked", get, vault, body("Forbidden", "ForbiddenByFirewall",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: ***********\r\nCaller: "+caller),
			KindForbiddenByFirewall,
			get + ": 403: the vault's firewall refuses this caller (ForbiddenByFirewall): allow the app's outbound IP " +
				"or virtual network in the vault's networking settings, or reach it through a private endpoint"},
		{"private link", get, vault, body("Forbidden", "ForbiddenByConnection",
			"Public network access is disabled and request is not from a trusted service nor via an approved private link.\r\nCaller: "+caller+"\r\nVault: myvault;location=eastus2"),
			KindForbiddenByConnection,
			get + ": 403: the vault's public network access is disabled (ForbiddenByConnection): reach the vault through its private endpoint; " +
				"check that myvault.vault.azure.net resolves to a private address (privatelink.vaultcore.azure.net)"},
		{"private link, US Government", "GET https://v.vault.usgovcloudapi.net/secrets/db", "v.vault.usgovcloudapi.net",
			body("Forbidden", "ForbiddenByConnection", "Public network access is disabled ..."), KindForbiddenByConnection,
			"GET https://v.vault.usgovcloudapi.net/secrets/db: 403: the vault's public network access is disabled (ForbiddenByConnection): " +
				"reach the vault through its private endpoint; check that v.vault.usgovcloudapi.net resolves to a private address (privatelink.vaultcore.usgovcloudapi.net)"},
		{"rbac", get, vault, body("Forbidden", "ForbiddenByRbac",
			"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: "+
				caller+"\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: myvault;location=canadacentral\r\n"),
			KindForbidden,
			get + ": 403: no role assignment lets the identity read secrets: grant the identity (object id eaadeb4c-a236-48a1-84f9-5c3685078b2c) " +
				"Key Vault Secrets User on the vault or secret (ForbiddenByRbac)"},
		{"rbac, list, caller masked", list, vault, body("Forbidden", "ForbiddenByRbac", "Caller: appid=***;oid=*****;iss=***"), KindForbidden,
			list + ": 403: no role assignment lets the identity list secrets: grant the identity Key Vault Secrets User on the vault or secret (ForbiddenByRbac)"},
		{"access policy", get, vault, body("Forbidden", "ForbiddenByPolicy",
			"The user, group or application '"+caller+"' does not have secrets get permission on key vault 'myvault;location=westus2'. "+
				"For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"),
			KindForbidden,
			get + ": 403: the vault's access policies do not let the identity get secrets: add Get to the secret permissions of an access policy " +
				"for this identity (object id eaadeb4c-a236-48a1-84f9-5c3685078b2c; ForbiddenByPolicy)"},
		{"access policy, list", list, vault, body("Forbidden", "ForbiddenByPolicy", "does not have secrets list permission"), KindForbidden,
			list + ": 403: the vault's access policies do not let the identity list secrets: add List to the secret permissions of an access policy " +
				"for this identity (ForbiddenByPolicy)"},
		{"disabled", get, vault, body("Forbidden", "SecretDisabled", "Operation get is not allowed on a disabled secret."), KindDisabled,
			get + ": 403: the secret version is disabled"},
		{"another 403", get, vault, body("Forbidden", "", "Operation \"purge\" is not allowed"), KindForbidden, get + ": 403 Forbidden"},
		{"not JSON", get, vault, []byte("<html>403</html>"), KindForbidden, get + ": 403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ParseAnswer(403, tc.body, 0).Classify(tc.what, tc.vault, false)
			if e.Kind != tc.kind || e.Transient || e.Reason != tc.reason {
				t.Errorf("%v (transient %v)\nreason %q\nwant   %q, kind %v, not transient", e.Kind, e.Transient, e.Reason, tc.reason, tc.kind)
			}
		})
	}
}

// An answer's body is untrusted: codes that are not codes, object ids that are not GUIDs,
// addresses that are not IPs and bodies beyond a bound are not repeated.
func TestHostileAnswers(t *testing.T) {
	const what = "GET https://myvault.vault.azure.net/secrets/db"
	const evil = "EVIL-7f3a"
	for _, tc := range []struct {
		name string
		body []byte
		kind Kind
	}{
		{"code with a newline", body("Forbidden\n"+evil, "ForbiddenByRbac", ""), KindForbidden},
		{"inner with escapes", body("Forbidden", "ForbiddenByRbac\x1b[31m"+evil, ""), KindForbidden},
		{"long code", body(strings.Repeat("A", 65)+evil, "", ""), KindForbidden},
		{"oid not a GUID", body("Forbidden", "ForbiddenByRbac", "Caller: oid="+evil+";iss=x"), KindForbidden},
		{"oid GUID with a tail", body("Forbidden", "ForbiddenByRbac", "Caller: oid=eaadeb4c-a236-48a1-84f9-5c3685078b2c"+evil), KindForbidden},
		{"address not an IP", body("Forbidden", "ForbiddenByFirewall", "Client address: 999.1.2.3"+evil), KindForbiddenByFirewall},
		{"huge body", body("Forbidden", "ForbiddenByFirewall", strings.Repeat(evil, 20000)), KindForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ParseAnswer(403, tc.body, 0).Classify(what, "myvault.vault.azure.net", false)
			if e.Kind != tc.kind || strings.Contains(e.Error(), evil) || strings.Contains(e.Code+e.Inner, evil) ||
				strings.ContainsAny(e.Reason, "\n\r\x1b") || strings.Contains(e.Reason, "999.") {
				t.Errorf("kind %v, code %q, inner %q, reason %q: want %v, nothing of the body's junk", e.Kind, e.Code, e.Inner, e.Reason, tc.kind)
			}
		})
	}
}

// HTTPError, the short form, classifies as Answer does.
func TestHTTPErrorKinds(t *testing.T) {
	for inner, kind := range map[string]Kind{
		InnerForbiddenByFirewall: KindForbiddenByFirewall, InnerForbiddenByConnection: KindForbiddenByConnection,
		InnerForbiddenByRbac: KindForbidden, InnerForbiddenByPolicy: KindForbidden, InnerSecretDisabled: KindDisabled,
	} {
		if e := HTTPError("GET x", 403, "Forbidden", inner, false, 0); e.Kind != kind || e.Inner != inner || e.Transient {
			t.Errorf("%s: %v (inner %q, transient %v), want %v", inner, e.Kind, e.Inner, e.Transient, kind)
		}
	}
	if KindForbiddenByFirewall.String() != "ForbiddenByFirewall" || KindForbiddenByConnection.String() != "ForbiddenByConnection" {
		t.Errorf("kind names %v, %v", KindForbiddenByFirewall, KindForbiddenByConnection)
	}
}
