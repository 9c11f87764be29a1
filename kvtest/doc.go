// Package kvtest is a local emulator of Azure's secret path, for tests and local runs,
// in the spirit of net/http/httptest: Entra ID (OpenID Connect discovery, JWKS, RS256
// tokens), the managed identity endpoints (App Service and IMDS style) and the Key Vault
// secrets data plane over TLS. The real, unmodified azidentity.ManagedIdentityCredential
// and azsecrets.Client work against it over real HTTP(S):
//
//	srv := kvtest.NewServer()
//	defer srv.Close()
//	for k, v := range srv.Env() { // IDENTITY_ENDPOINT, IDENTITY_HEADER
//		t.Setenv(k, v)
//	}
//	kv := srv.AddVault("myvault")
//	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
//	kv.SetSecret("db-conn", "Server=db;...")
//
//	opts := azcore.ClientOptions{Transport: srv.Client()}
//	cred, _ := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts})
//	client, _ := azsecrets.NewClient("https://myvault.vault.azure.net", cred, &azsecrets.ClientOptions{ClientOptions: opts})
//	resp, _ := client.GetSecret(ctx, "db-conn", "", nil)
//
// [Server.Client] routes production host names (myvault.vault.azure.net:443,
// 169.254.169.254:80, login.microsoftonline.com:443 and login.windows.net:443) to the
// emulator's loopback listeners
// and trusts its CA, so URLs keep their production form and the SDK's challenge resource
// verification stays on.
//
// # What is emulated
//
//   - Key Vault: the 401 challenge (WWW-Authenticate with the tenant's authority, which in
//     the public cloud is https://login.windows.net/<tenant> as in Key Vault's recorded
//     challenges, and the cloud's resource), token validation from the Entra listener's
//     discovery document and JWKS (signature, algorithm, audience, issuer, expiry, with 5
//     minutes of clock skew), RBAC per identity and vault (with a propagation delay on
//     request, [WithRBACPropagationDelay]), secrets with versions, attributes and tags, soft
//     delete with a deletion window ([WithDeletionWindow]) and a recovery that completes
//     asynchronously ([WithRecoveryDelay]), purge protection and soft delete retention per
//     vault ([WithPurgeProtection], [WithRetentionDays]: purge refused with 403,
//     recoveryLevel, recoverableDays and scheduledPurgeDate to match), paged lists (short
//     pages on request, [WithShortPages], and a page size per vault, [WithPageSize]),
//     versions listed by version ID rather than oldest first (Key Vault documents no
//     order), 404 SecretNotFound for the versions of a missing secret, backup and restore,
//     limits and api-version checks, the error bodies of the real service, and a token
//     bucket of 4,000 secret transactions per 10 s per vault answering 429 Throttled with
//     Retry-After.
//   - Managed identity: App Service style (IDENTITY_ENDPOINT, X-IDENTITY-HEADER,
//     api-version 2019-08-01, mi_res_id) and IMDS style (Metadata: true, api-version
//     2018-02-01, msi_res_id); system-assigned and user-assigned identities by client,
//     object or resource ID; the real endpoints' error statuses.
//   - Event Grid: each vault is a system topic; [Vault.Subscribe] delivers Key Vault's
//     secret events (new version, near expiry 30 days ahead, expired) to a webhook in the
//     Event Grid or CloudEvents schema, after the validation handshake, with Entra tokens or
//     custom headers, retries on Event Grid's schedule, batching, and duplicated or
//     reordered deliveries on request.
//   - Test controls: counters per operation, latency, fault injection (status, hang,
//     connection reset), throttling limits.
//
// # Tokens and MSAL's process-wide cache
//
// MSAL Go caches managed identity tokens in one cache per process, keyed only by identity
// and resource, never by endpoint. A token a test got from one Server is therefore handed
// to the next test's Server. So that it verifies there, as it would in one real tenant,
// every Server of a process signs with the same key (generated once per process), uses
// [DefaultTenantID] and derives identity IDs from the tenant and the identity's name. For
// exact token counts use a user-assigned identity with a fresh name, or
// [WithTokenLifetime] of 5 minutes or less, which MSAL never reuses.
//
// # Standalone
//
// The viperkv command's "emulator" subcommand runs a Server filled [WithSeed] and writes
// its files with [Server.WriteInfo]; other processes reach it through the proxy the info
// file names, or with the library's WithEmulatorInfo option.
package kvtest
