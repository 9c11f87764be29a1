package kvtest

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/viperkv/viperkv/internal/cloud"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// Vault is one emulated key vault with its own TLS listener. All methods are safe for
// concurrent use.
type Vault struct {
	srv       *Server
	name      string // first DNS label: myvault
	host      string // myvault.vault.azure.net
	resource  string // challenge resource and token audience: https://vault.azure.net
	authority string // https://login.microsoftonline.com
	ln        *listener

	latency  atomic.Int64 // nanoseconds
	faults   faultSet
	throttle *bucket
	counters counters

	mu      sync.RWMutex
	secrets map[string]*secret // lowercase name -> secret
	deleted map[string]*deletedSecret
	purging map[string]purge         // lowercase name -> a purge still completing
	grants  map[string]map[Role]bool // object ID -> roles
	events  vaultEvents              // Event Grid: subscriptions and expiry timers (eventgrid.go)
}

type secret struct {
	name     string // as first created
	versions []*secretVersion
}

type secretVersion struct {
	version     string
	value       string
	contentType string
	tags        map[string]string
	enabled     bool
	nbf, exp    *time.Time
	created     time.Time
	updated     time.Time
}

type deletedSecret struct {
	*secret
	deletedAt time.Time // as reported: whole seconds
	readyAt   time.Time // when the deletion completes (the deletion window)
}

// deleting reports whether the deletion has not completed yet at now.
func (d *deletedSecret) deleting(now time.Time) bool { return now.Before(d.readyAt) }

// purge is a purged name whose purge has not completed yet: it cannot be reused until.
type purge struct {
	name  string
	until time.Time
}

// purgingLocked reports whether the name's purge is still completing at now, forgetting
// purges that have completed. The caller holds v.mu for writing.
func (v *Vault) purgingLocked(key string, now time.Time) (purge, bool) {
	p, ok := v.purging[key]
	if ok && !now.Before(p.until) {
		delete(v.purging, key)
		ok = false
	}
	return p, ok
}

// deleteLocked turns the secret into a deleted secret whose deletion completes after the
// server's deletion window. The caller holds v.mu for writing.
func (v *Vault) deleteLocked(key string, s *secret) *deletedSecret {
	now := time.Now()
	delete(v.secrets, key)
	d := &deletedSecret{secret: s, deletedAt: now.Truncate(time.Second), readyAt: now.Add(v.srv.cfg.deletionWindow)}
	v.deleted[key] = d
	return d
}

func (s *secret) latest() *secretVersion { return s.versions[len(s.versions)-1] }

func (s *secret) find(version string) *secretVersion {
	for _, v := range s.versions {
		if v.version == version {
			return v
		}
	}
	return nil
}

var (
	secretNameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	errNoSecret  = errors.New("kvtest: no such secret")
	errNoVersion = errors.New("kvtest: no such secret version")
)

// maxSecretSize is Key Vault's limit on a secret value.
const maxSecretSize = 25 * 1024

// AddVault creates a vault and starts its listener. name is a vault name, which gets the
// public cloud suffix ("myvault" -> myvault.vault.azure.net), or a full host of any of
// the three clouds ("x.vault.azure.cn"). Adding an existing vault returns it. It panics
// on an invalid name or if the listener cannot start.
func (s *Server) AddVault(name string) *Vault {
	host, err := emuinfo.VaultHost(name)
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed() {
		panic(errClosed)
	}
	if v := s.vaults[host]; v != nil {
		return v
	}
	suffix := emuinfo.VaultSuffix(host)
	v := &Vault{
		srv:      s,
		name:     strings.TrimSuffix(host, "."+suffix),
		host:     host,
		throttle: newBucket(DefaultThrottleLimit, DefaultThrottlePeriod),
		counters: newCounters(),
		secrets:  map[string]*secret{},
		deleted:  map[string]*deletedSecret{},
		purging:  map[string]purge{},
		grants:   map[string]map[Role]bool{},
	}
	for _, c := range cloud.All() {
		if c.VaultSuffix == suffix {
			v.resource, v.authority = c.Resource(), "https://"+c.AuthorityHost
		}
	}
	if v.ln, err = s.listen(http.HandlerFunc(v.serveHTTP), true); err != nil {
		panic(err)
	}
	s.vaults[host] = v
	return v
}

// Vault returns the vault of that name or host, or nil.
func (s *Server) Vault(name string) *Vault {
	host, err := emuinfo.VaultHost(name)
	if err != nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.vaults[host]
}

// Name returns the vault's name, the first label of its host (myvault).
func (v *Vault) Name() string { return v.name }

// Host returns the vault's production host, myvault.vault.azure.net.
func (v *Vault) Host() string { return v.host }

// URL returns the vault's production URL, https://myvault.vault.azure.net, which
// [Server.Client] routes to the vault's listener.
func (v *Vault) URL() string { return "https://" + v.host }

// DirectURL returns the listener's URL, https://127.0.0.1:PORT. The SDK needs
// DisableChallengeResourceVerification for it, since an IP does not end in the
// challenge resource's host.
func (v *Vault) DirectURL() string { return "https://" + v.ln.addr }

// Resource returns the vault's challenge resource and token audience, for example
// https://vault.azure.net (https://vault.azure.cn in Azure China).
func (v *Vault) Resource() string { return v.resource }

// SecretOption sets a property of a secret version created by [Vault.SetSecret].
type SecretOption func(*secretVersion)

// WithContentType sets the secret's content type.
func WithContentType(ct string) SecretOption {
	return func(sv *secretVersion) { sv.contentType = ct }
}

// WithTags sets the secret's tags.
func WithTags(tags map[string]string) SecretOption {
	return func(sv *secretVersion) { sv.tags = maps.Clone(tags) }
}

// WithExpires sets the secret's expiry (exp). Key Vault still returns expired secrets.
func WithExpires(t time.Time) SecretOption {
	return func(sv *secretVersion) { t := t.Truncate(time.Second); sv.exp = &t }
}

// WithNotBefore sets the secret's activation time (nbf). Key Vault still returns
// secrets that are not yet active.
func WithNotBefore(t time.Time) SecretOption {
	return func(sv *secretVersion) { t := t.Truncate(time.Second); sv.nbf = &t }
}

// WithEnabled sets whether the version is enabled (default true). Getting a disabled
// version fails with 403 SecretDisabled.
func WithEnabled(enabled bool) SecretOption {
	return func(sv *secretVersion) { sv.enabled = enabled }
}

// SetSecret creates a new version of the secret, which becomes the latest, and returns
// the version (32 lowercase hex). Unlike the wire PUT, it first purges a deleted secret
// of the same name, at once, even one whose deletion or purge has not completed. It panics
// on an invalid secret name.
func (v *Vault) SetSecret(name, value string, opts ...SecretOption) (version string) {
	if !secretNameRE.MatchString(name) {
		panic(fmt.Sprintf("kvtest: invalid secret name %q", name))
	}
	now := time.Now().Truncate(time.Second)
	sv := &secretVersion{version: randomHex(16), value: value, enabled: true, created: now, updated: now}
	for _, o := range opts {
		o(sv)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.deleted, strings.ToLower(name))
	delete(v.purging, strings.ToLower(name))
	v.addVersionLocked(name, sv)
	return sv.version
}

func (v *Vault) addVersionLocked(name string, sv *secretVersion) {
	key := strings.ToLower(name)
	s := v.secrets[key]
	if s == nil {
		s = &secret{name: name}
		v.secrets[key] = s
	}
	s.versions = append(s.versions, sv)
	v.versionCreatedLocked(s, sv) // Event Grid: SecretNewVersionCreated, expiry timers
}

// SetEnabled enables or disables one version of a secret ("" = the latest).
func (v *Vault) SetEnabled(name, version string, enabled bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil {
		return fmt.Errorf("%w: %s", errNoSecret, name)
	}
	sv := s.latest()
	if version != "" {
		if sv = s.find(strings.ToLower(version)); sv == nil {
			return fmt.Errorf("%w: %s/%s", errNoVersion, name, version)
		}
	}
	sv.enabled = enabled
	sv.updated = time.Now().Truncate(time.Second)
	return nil
}

// DeleteSecret deletes the secret (every version), as DELETE /secrets/{name} does: it
// becomes a deleted, recoverable secret once the deletion window has passed (see
// [WithDeletionWindow]).
func (v *Vault) DeleteSecret(name string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := strings.ToLower(name)
	s := v.secrets[key]
	if s == nil {
		return fmt.Errorf("%w: %s", errNoSecret, name)
	}
	v.deleteLocked(key, s)
	return nil
}

// SecretValue returns the value of a version of a secret ("" = the latest), for
// assertions on what a client wrote.
func (v *Vault) SecretValue(name, version string) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil {
		return "", false
	}
	sv := s.latest()
	if version != "" {
		if sv = s.find(strings.ToLower(version)); sv == nil {
			return "", false
		}
	}
	return sv.value, true
}

// SecretNames returns the names of the vault's secrets (not deleted ones), sorted.
func (v *Vault) SecretNames() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]string, 0, len(v.secrets))
	for _, s := range v.secrets {
		out = append(out, s.name)
	}
	sort.Strings(out)
	return out
}

// Versions returns the versions of a secret, oldest first.
func (v *Vault) Versions(name string) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil {
		return nil
	}
	out := make([]string, len(s.versions))
	for i, sv := range s.versions {
		out[i] = sv.version
	}
	return out
}

// Role is an Azure RBAC role on a vault's secrets.
type Role string

// Roles with the data actions of Azure's built-in roles, as far as secrets go.
const (
	// RoleSecretsUser ("Key Vault Secrets User") reads secret values and metadata.
	RoleSecretsUser Role = "Key Vault Secrets User"
	// RoleSecretsOfficer ("Key Vault Secrets Officer") may do anything with secrets.
	RoleSecretsOfficer Role = "Key Vault Secrets Officer"
	// RoleReader ("Key Vault Reader") reads metadata (lists) but not secret values.
	RoleReader Role = "Key Vault Reader"
	// RoleAdministrator ("Key Vault Administrator") may do anything.
	RoleAdministrator Role = "Key Vault Administrator"
)

// ParseRole accepts a role's full name or a short alias (secrets-user, user,
// secrets-officer, officer, reader, administrator, admin), in any letter case.
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "key vault secrets user", "secrets-user", "secretsuser", "user":
		return RoleSecretsUser, nil
	case "key vault secrets officer", "secrets-officer", "secretsofficer", "officer":
		return RoleSecretsOfficer, nil
	case "key vault reader", "reader":
		return RoleReader, nil
	case "key vault administrator", "administrator", "admin":
		return RoleAdministrator, nil
	}
	return "", fmt.Errorf("kvtest: unknown role %q", s)
}

// dataAction is the RBAC data action an operation needs, with the roles granting it.
func dataAction(op Op) (action string, roles []Role) {
	switch op {
	case OpGetSecret:
		return "Microsoft.KeyVault/vaults/secrets/getSecret/action", []Role{RoleSecretsUser, RoleSecretsOfficer, RoleAdministrator}
	case OpListSecrets, OpListVersions:
		return "Microsoft.KeyVault/vaults/secrets/readMetadata/action", []Role{RoleReader, RoleSecretsUser, RoleSecretsOfficer, RoleAdministrator}
	case OpSetSecret:
		return "Microsoft.KeyVault/vaults/secrets/setSecret/action", []Role{RoleSecretsOfficer, RoleAdministrator}
	case OpUpdateSecret:
		return "Microsoft.KeyVault/vaults/secrets/update/action", []Role{RoleSecretsOfficer, RoleAdministrator}
	case OpDeleteSecret:
		return "Microsoft.KeyVault/vaults/secrets/delete", []Role{RoleSecretsOfficer, RoleAdministrator}
	case OpGetDeletedSecret, OpListDeletedSecrets:
		return "Microsoft.KeyVault/vaults/deletedSecrets/readMetadata/action", []Role{RoleReader, RoleSecretsOfficer, RoleAdministrator}
	case OpRecoverDeletedSecret:
		return "Microsoft.KeyVault/vaults/deletedSecrets/recover/action", []Role{RoleSecretsOfficer, RoleAdministrator}
	case OpPurgeDeletedSecret:
		return "Microsoft.KeyVault/vaults/deletedSecrets/delete", []Role{RoleSecretsOfficer, RoleAdministrator}
	case OpBackupSecret:
		return "Microsoft.KeyVault/vaults/secrets/backup/action", []Role{RoleSecretsOfficer, RoleAdministrator}
	case OpRestoreSecret:
		return "Microsoft.KeyVault/vaults/secrets/restore/action", []Role{RoleSecretsOfficer, RoleAdministrator}
	}
	return "", nil
}

// Grant assigns role on this vault to the identity (keyed by its object ID).
func (v *Vault) Grant(id Identity, role Role) {
	v.mu.Lock()
	defer v.mu.Unlock()
	oid := strings.ToLower(id.ObjectID)
	if v.grants[oid] == nil {
		v.grants[oid] = map[Role]bool{}
	}
	v.grants[oid][role] = true
}

// Revoke removes every role the identity has on this vault.
func (v *Vault) Revoke(id Identity) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.grants, strings.ToLower(id.ObjectID))
}

func (v *Vault) allowed(oid string, op Op) bool {
	_, roles := dataAction(op)
	v.mu.RLock()
	defer v.mu.RUnlock()
	have := v.grants[strings.ToLower(oid)]
	for _, r := range roles {
		if have[r] {
			return true
		}
	}
	return false
}

// SetLatency delays every response of the vault, the challenge included, by d.
func (v *Vault) SetLatency(d time.Duration) { v.latency.Store(int64(d)) }

// SetThrottle sets the vault's token bucket on secret transactions: limit requests per
// period (default 4000 per 10 s, Key Vault's limit); limit <= 0 turns throttling off. The
// bucket starts full. Every authenticated, authorized request of an operation counts
// (GET, PUT, PATCH, DELETE, each list page, backup, restore, recover, purge, the deleted
// secrets' reads); challenges, rejected tokens and RBAC denials do not. Throttled requests
// use no token and get 429 Throttled with Key Vault's text ("... Reason:
// VaultRequestTypeLimitReached") and Retry-After, unless [WithoutThrottleRetryAfter].
func (v *Vault) SetThrottle(limit int, per time.Duration) { v.throttle.configure(limit, per) }

// InjectFault makes requests for op fail as f describes, replacing any fault for op.
// Faults apply after authentication, so the challenge still works, except for
// OpChallenge, which targets the unauthenticated challenge round trip itself.
func (v *Vault) InjectFault(op Op, f Fault) { v.faults.set(op, f) }

// ClearFaults removes every fault of the vault.
func (v *Vault) ClearFaults() { v.faults.clear() }

// Count returns how many times op happened at this vault. Operations (OpGetSecret...)
// count authenticated requests that passed RBAC and throttling, including ones answered
// by an injected fault or with 404 or 403 SecretDisabled; outcomes count the requests
// stopped there: OpChallenge, OpUnauthorized, OpForbidden, OpThrottled.
func (v *Vault) Count(op Op) int64 { return v.counters.get(op) }

// ResetCounters sets the vault's counters to zero.
func (v *Vault) ResetCounters() { v.counters.reset() }
