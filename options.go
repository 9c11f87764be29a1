package viperkv

import (
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/viperkv/viperkv/internal/driver"
)

// Defaults for the options.
const (
	// DefaultMaxInflight is the default number of requests in flight per vault. Key Vault
	// allows 4,000 GETs per 10 s per vault; the window narrows on 429 and widens again.
	DefaultMaxInflight = 256
	// DefaultFetchTimeout bounds one Load's fetches when the context has no earlier deadline.
	DefaultFetchTimeout = 60 * time.Second
	// DefaultRefreshInterval is how often Watch re-checks versionless references.
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultRetryMin and DefaultRetryMax bound the back-off between retries of a failing
	// reference during Watch.
	DefaultRetryMin = time.Second
	DefaultRetryMax = 5 * time.Minute
	// DefaultExpiryWarning is how long before a secret version's expiry Watch raises
	// EventNearExpiry.
	DefaultExpiryWarning = 7 * 24 * time.Hour
)

// Option configures a Provider.
type Option func(*options)

type options struct {
	cred         azcore.TokenCredential
	identity     azidentity.ManagedIDKind
	vaultCreds   []vaultCredential // WithVaultCredential and WithVaultManagedIdentity, in order
	failovers    []failoverSpec    // WithVaultFailover, in order
	snapshot     *snapshotSpec     // WithSnapshot
	transport    policy.Transporter
	cloud        Cloud
	allowedHosts []string
	maxInflight  int
	fetchTimeout time.Duration
	envKeys      []string
	envKeyPaths  [][]string // WithEnvKeysFrom's keys, by level: joined with the Viper's delimiter
	logger       *slog.Logger

	refreshInterval    time.Duration
	retryMin, retryMax time.Duration
	expiryWarning      time.Duration
	watchFile          bool
	pushDelay          time.Duration
	versionCheck       VersionCheck
	vaultSources       []*vaultSource
	meterProvider      metric.MeterProvider
	tracerProvider     trace.TracerProvider

	source driver.Source // replaces Key Vault in the logic tests; never set by users

	localEmulator *localEmulator // WithEmulatorInfo; New applies it
}

// parseConfig is what the reference parser needs of the options.
func (o options) parseConfig() parseConfig { return newParseConfig(o.cloud, o.allowedHosts...) }

// withSource makes the provider fetch from src instead of Key Vault: the seam the logic
// tests use to run merge, schedule and expiry under simulated time.
func withSource(src driver.Source) Option {
	return func(o *options) { o.source = src }
}

func defaultOptions() options {
	return options{
		cloud:        CloudPublic,
		maxInflight:  DefaultMaxInflight,
		fetchTimeout: DefaultFetchTimeout,
		logger:       slog.New(slog.DiscardHandler),

		refreshInterval: DefaultRefreshInterval,
		retryMin:        DefaultRetryMin,
		retryMax:        DefaultRetryMax,
		expiryWarning:   DefaultExpiryWarning,
		watchFile:       true,
		versionCheck:    VersionCheckAuto,
	}
}

// WithCredential makes the provider authenticate with cred instead of the default
// system-assigned managed identity. Use it for workload identity on AKS
// (azidentity.NewWorkloadIdentityCredential) or a developer's az login.
func WithCredential(cred azcore.TokenCredential) Option {
	return func(o *options) { o.cred = cred }
}

// Emulator is what WithEmulator needs of an emulator running in the process:
// *kvtest.Server has both methods.
type Emulator interface {
	// Credential returns a credential that gets the emulator's tokens.
	Credential() azcore.TokenCredential
	// Client returns a client that reaches the emulator for production host names and
	// refuses every other host.
	Client() *http.Client
}

// WithEmulator makes the provider talk to an emulator in the process (kvtest.NewServer)
// instead of Azure, with its credential and its client, so configurations keep production
// vault URLs and nothing reaches Azure. It is for tests; for a standalone emulator see
// WithEmulatorInfo.
func WithEmulator(e Emulator) Option {
	return func(o *options) { o.cred, o.transport = e.Credential(), e.Client() }
}

// WithManagedIdentity selects a user-assigned managed identity by client ID, object ID or
// resource ID: azidentity.ClientID("..."), azidentity.ObjectID("...") or
// azidentity.ResourceID("/subscriptions/.../userAssignedIdentities/name").
func WithManagedIdentity(id azidentity.ManagedIDKind) Option {
	return func(o *options) { o.identity = id }
}

// WithVaultCredential makes requests to one vault use cred; every other vault keeps the
// default credential (WithCredential, or the managed identity). It is how one
// configuration reads vaults of several tenants or identities. vaultHost is the vault's host
// as Reference.Vault names it ("other.vault.azure.net"): a vault host of the configured
// cloud or one of WithAllowedHosts, else New fails naming this option, as it does for a
// host given a credential twice. cred is shared as the default credential is: concurrent
// requests for a token share one call, and vaults given the same cred share its tokens.
// Key Vault's challenge names the vault's tenant, and cred is asked for a token of that
// tenant, so cred must be able to get one there (for azidentity's credentials with a
// tenant of their own, list it in AdditionallyAllowedTenants). The token is sent to that
// vault only.
func WithVaultCredential(vaultHost string, cred azcore.TokenCredential) Option {
	return func(o *options) {
		o.vaultCreds = append(o.vaultCreds, vaultCredential{option: "WithVaultCredential", host: vaultHost, cred: cred})
	}
}

// WithVaultManagedIdentity makes requests to one vault use the managed identity id names
// (azidentity.ClientID("..."), ObjectID or ResourceID; nil for the system-assigned one),
// made as the default managed identity is, through the provider's transport. vaultHost is
// as WithVaultCredential's. A managed identity gets tokens of its own tenant only.
func WithVaultManagedIdentity(vaultHost string, id azidentity.ManagedIDKind) Option {
	return func(o *options) {
		o.vaultCreds = append(o.vaultCreds, vaultCredential{option: "WithVaultManagedIdentity", host: vaultHost, identity: id, managed: true})
	}
}

// WithTransport sends every request (identity endpoint and vault) through t. An
// *http.Client satisfies policy.Transporter; kvtest.Server.Client returns one that reaches
// the emulator for production vault host names. Redirects are never followed (Key Vault
// and the identity endpoints never redirect): an *http.Client is used through a copy that
// refuses them. Another Transporter that follows redirects itself cannot be stopped from
// sending, but whatever it brings back from another host or over http is refused.
func WithTransport(t policy.Transporter) Option {
	return func(o *options) { o.transport = t }
}

// WithCloud selects the Azure cloud whose Key Vault DNS suffix references may name and
// which the VaultName form uses. The default is CloudPublic. ParseReference takes it too.
func WithCloud(c Cloud) Option {
	return func(o *options) { o.cloud = c }
}

// WithAllowedHosts allows references to name these exact vault hosts in addition to the
// configured cloud's vaults (for example a private-link alias). Tokens are sent to them.
// ParseReference takes it too.
func WithAllowedHosts(hosts ...string) Option {
	return func(o *options) { o.allowedHosts = append(o.allowedHosts, hosts...) }
}

// WithMaxInflight sets how many requests may be in flight to one vault (default
// DefaultMaxInflight). The provider narrows this window when the vault throttles.
func WithMaxInflight(n int) Option {
	return func(o *options) { o.maxInflight = n }
}

// WithFetchTimeout bounds the fetches of one Load, Refresh or refresh cycle (default
// DefaultFetchTimeout), Load's and Refresh's retries of transient failures included; a ctx
// deadline that comes earlier bounds them instead. It must be positive: New refuses 0. A reference still unresolved at the
// deadline keeps the status of its last failure, or gets StatusFetchTimedOut when its first
// attempt was still waiting.
func WithFetchTimeout(d time.Duration) Option {
	return func(o *options) { o.fetchTimeout = d }
}

// WithEnvKeys names configuration keys that may exist only in the environment through
// Viper's AutomaticEnv, so that references in them are found: Viper's AllKeys cannot list
// such keys. Plain values of AutomaticEnv keys need no naming: the resolved configuration
// reads the environment as the app's Viper does. A key named here is listed by the
// resolved Viper's AllKeys and AllSettings once its reference resolves.
func WithEnvKeys(keys ...string) Option {
	return func(o *options) { o.envKeys = append(o.envKeys, keys...) }
}

// WithEnvKeysFrom names, as WithEnvKeys does, every key of a configuration struct the app
// unmarshals into: each field of cfg (a struct or a pointer to one) by its mapstructure
// tag, or else its name in lower case, a nested struct giving keys below its own (",squash"
// keeps them at its level, "-" skips a field). It spares listing keys by hand, as Viper's
// ExperimentalBindStruct does for Unmarshal.
func WithEnvKeysFrom(cfg any) Option {
	var paths [][]string
	var walk func(t reflect.Type, prefix []string)
	walk = func(t reflect.Type, prefix []string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opt, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() && (opt == "squash" || f.Anonymous && name == strings.ToLower(f.Name)):
				walk(ft, prefix)
			case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]():
				walk(ft, append(slices.Clone(prefix), strings.ToLower(name)))
			default:
				paths = append(paths, append(slices.Clone(prefix), strings.ToLower(name)))
			}
		}
	}
	if t := reflect.TypeOf(cfg); t != nil && (t.Kind() == reflect.Struct || t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct) {
		walk(t, nil)
	}
	return func(o *options) { o.envKeyPaths = append(o.envKeyPaths, paths...) }
}

// WithLogger sends the provider's logs to l. Logs name config keys, vaults, secrets,
// versions and statuses, never secret values. The default (and nil) discards logs.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithRefreshInterval sets how often Watch re-checks versionless references for a new
// version (default DefaultRefreshInterval). Each wait is jittered by +/-10% so a fleet does
// not poll in step. Pinned versions are never re-checked.
func WithRefreshInterval(d time.Duration) Option {
	return func(o *options) { o.refreshInterval = d }
}

// WithRetryBackoff bounds the exponential back-off (with jitter) between retries of a
// reference whose refresh failed (defaults DefaultRetryMin and DefaultRetryMax).
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *options) { o.retryMin, o.retryMax = min, max }
}

// WithExpiryWarning sets how long before a secret version expires Watch raises
// EventNearExpiry (default DefaultExpiryWarning).
func WithExpiryWarning(d time.Duration) Option {
	return func(o *options) { o.expiryWarning = d }
}

// WithoutFileWatch stops Watch from watching the Viper's config file.
func WithoutFileWatch() Option {
	return func(o *options) { o.watchFile = false }
}

// WithPushDelay makes Notify and the Event Grid handler wait a random time in [0, max]
// before fetching a secret Key Vault reported as changed (default 0: fetch at once). A
// fleet sets it so that one rotation does not make every replica GET the secret in the
// same instant: 1,000 replicas with a 10 s delay spread their GETs over 10 s.
func WithPushDelay(max time.Duration) Option {
	return func(o *options) { o.pushDelay = max }
}
