package viperkv

// Status is the state of one Key Vault reference. The names follow App Service's Key Vault
// reference statuses where one fits, so operators see the words they already know; the
// names App Service lacks (HostNotAllowed, SecretDisabled, Throttled, SecretExpired,
// SecretNotYetValid, CertificateInvalid, EnvKeyNotNamed, ForbiddenByFirewall,
// ForbiddenByConnection, ServedFromSnapshot, PropertyNotFound, SecretFormatInvalid,
// DecodeFailed, AppConfigurationNotSupported) are documented in docs/references.md.
type Status string

// Statuses a reference can have.
const (
	// StatusInitialized: the reference was found but not fetched yet.
	StatusInitialized Status = "Initialized"
	// StatusResolved: the secret was fetched and substituted.
	StatusResolved Status = "Resolved"
	// StatusInvalidSyntax: the reference does not follow the grammar.
	StatusInvalidSyntax Status = "InvalidSyntax"
	// StatusMSINotEnabled: no managed identity is available to this process.
	StatusMSINotEnabled Status = "MSINotEnabled"
	// StatusVaultNotFound: the vault's host name does not resolve.
	StatusVaultNotFound Status = "VaultNotFound"
	// StatusSecretNotFound: the vault has no secret of that name.
	StatusSecretNotFound Status = "SecretNotFound"
	// StatusSecretVersionNotFound: the secret exists but not the pinned version.
	StatusSecretVersionNotFound Status = "SecretVersionNotFound"
	// StatusAccessToKeyVaultDenied: the identity lacks permission to get the secret: no role
	// assignment allows it (403 ForbiddenByRbac: grant Key Vault Secrets User) or, on an
	// access policy vault, no access policy does (403 ForbiddenByPolicy: add Get to the
	// identity's secret permissions). The reason says which, and the identity's object id
	// when the vault named it.
	StatusAccessToKeyVaultDenied Status = "AccessToKeyVaultDenied"
	// StatusForbiddenByFirewall: the vault's firewall refuses the caller's network (403
	// ForbiddenByFirewall), whatever the identity may do: allow the app's outbound IP or
	// virtual network in the vault's networking settings, or reach the vault through a
	// private endpoint.
	StatusForbiddenByFirewall Status = "ForbiddenByFirewall"
	// StatusForbiddenByConnection: the vault's public network access is disabled and the
	// request did not come through its private endpoint (403 ForbiddenByConnection): reach
	// the vault through the endpoint, with its host resolving to the endpoint's private
	// address (the privatelink.vaultcore.azure.net zone linked to the app's network).
	StatusForbiddenByConnection Status = "ForbiddenByConnection"
	// StatusOtherReasons: any failure no other status describes.
	StatusOtherReasons Status = "OtherReasons"
	// StatusFetchTimedOut: the fetch did not finish before its deadline.
	StatusFetchTimedOut Status = "FetchTimedOut"
	// StatusUnauthorizedClient: the identity endpoint or the vault rejected the identity.
	StatusUnauthorizedClient Status = "UnauthorizedClient"
	// StatusHostNotAllowed: the reference names a host that is not a vault of the
	// configured cloud (or an explicitly allowed host), so no token is sent to it.
	StatusHostNotAllowed Status = "HostNotAllowed"
	// StatusSecretDisabled: the secret (or version) is disabled.
	StatusSecretDisabled Status = "SecretDisabled"
	// StatusThrottled: the vault kept answering 429 until the retry budget ran out.
	StatusThrottled Status = "Throttled"
	// StatusSecretExpired: the secret's expiry time has passed.
	StatusSecretExpired Status = "SecretExpired"
	// StatusSecretNotYetValid: the secret's not-before time is in the future.
	StatusSecretNotYetValid Status = "SecretNotYetValid"
	// StatusCertificateInvalid: the secret is a certificate (its content type is
	// application/x-pkcs12 or application/x-pem-file, as Key Vault gives a certificate's
	// secret) that must not be served: it does not parse, its private key is not its leaf's,
	// it is not valid now, its chain is broken, or a certificate's new version is stored as
	// something else. The certificate held, if any, keeps serving.
	StatusCertificateInvalid Status = "CertificateInvalid"
	// StatusServedFromSnapshot: no vault answered the first Load, and the value is the one
	// WithSnapshot's encrypted snapshot held; the first fetch that succeeds replaces it. A
	// warning, not a failure of Load.
	StatusServedFromSnapshot Status = "ServedFromSnapshot"
	// StatusPropertyNotFound: the secret is a document, but has no value (or null) where
	// the reference's Property points.
	StatusPropertyNotFound Status = "PropertyNotFound"
	// StatusSecretFormatInvalid: the reference reads the secret as a JSON or YAML document
	// (Property or Format), and it is not one.
	StatusSecretFormatInvalid Status = "SecretFormatInvalid"
	// StatusDecodeFailed: the value is not the base64, base64url or hex the reference's
	// Decode says.
	StatusDecodeFailed Status = "DecodeFailed"
	// StatusAppConfigurationNotSupported: the value holds an App Service App Configuration
	// reference, @Microsoft.AppConfiguration(...). viperkv recognises it so the raw text is
	// never passed off as the value, but does not resolve it.
	StatusAppConfigurationNotSupported Status = "AppConfigurationNotSupported"
	// StatusEnvKeyNotNamed: a warning, not a failure. An environment variable under the
	// Viper's prefix holds a reference, but no configuration key reads it (Viper does not
	// list AutomaticEnv keys): name the key with WithEnvKeys. Load logs it and does not
	// count it in a *LoadError; viperkv check fails on it.
	StatusEnvKeyNotNamed Status = "EnvKeyNotNamed"
)
