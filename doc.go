// Package viperkv resolves Azure Key Vault references in a Viper configuration through the
// application's managed identity, and keeps them fresh.
//
// A configuration value anywhere Viper gets values (a file, an environment variable, a
// default) may hold a reference:
//
//	db:
//	  conn: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)"
//	  dsn:  "host=db user=app password=@Microsoft.KeyVault(VaultName=myvault;SecretName=db-pw)"
//
// [New] and [Provider.Load] find every reference, authenticate with the managed identity
// (no credential in code or config), fetch each distinct secret once, concurrently, and
// publish a resolved configuration that readers use through [Provider.Viper] or
// [Provider.GetString]: a copy of the app's Viper, with everything it knows (key delimiter,
// environment settings, decode hook, merged files, the layer each value came from), in
// which each secret sits where its reference was, so every key answers as the app's Viper
// would. The Viper passed to [New] is read only inside Load, on the app's goroutine, and
// never written, so the app may keep using it.
// [Provider.Status] reports each reference with App Service's status names.
//
// [Provider.Watch] keeps the configuration current: it polls versionless references,
// re-reads the config file, retries failures with back-off, and tells [Provider.OnChange]
// watchers what changed; a failed refresh keeps the last good value. Load may be called
// again at any time, and Watch and Refresh run a Load first if none has run.
//
// Tokens go only to hosts under the configured cloud's Key Vault DNS suffix: a reference to
// any other host fails with [StatusHostNotAllowed] before a request is made.
//
// The kvtest package is a local emulator of Entra ID, the managed identity endpoint and Key
// Vault that the real Azure SDK talks to, for local development and for tests.
package viperkv
