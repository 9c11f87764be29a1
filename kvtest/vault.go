package kvtest

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
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
	authority string // challenge authority host: https://login.windows.net in the public cloud
	ln        *listener

	latency  atomic.Int64 // nanoseconds
	outage   atomic.Int32 // an Outage: how clients fail to reach the vault (outage.go)
	faults   faultSet
	throttle *bucket
	counters counters

	pageSize atomic.Int32 // the longest page a list answers (WithPageSize); 0 = pageSize

	mu              sync.RWMutex
	secrets         map[string]*secret // lowercase name -> secret
	deleted         map[string]*deletedSecret
	purging         map[string]purge         // lowercase name -> a purge still completing
	recovering      map[string]*recovery     // lowercase name -> a recovery still completing
	recoveriesDone  bool                     // Close stopped the recoveries: new ones complete at once
	grants          map[string]map[Role]bool // object ID -> roles in effect
	pendingRBAC     []rbacChange             // role changes still propagating, by when they apply
	purgeProtection bool                     // WithPurgeProtection
	retentionDays   int                      // WithRetentionDays
	network         NetworkAccess            // SetNetworkAccess (network.go)
	model           PermissionModel          // SetPermissionModel; "" is PermissionRBAC
	events          vaultEvents              // Event Grid: subscriptions and expiry timers (eventgrid.go)
	certs           certStore                // certificates (certificates.go)
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
	cert        *certVersion // a certificate's linked secret: the version it backs; nil for a plain secret
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

// recovery is a recovered secret whose recovery has not completed yet (see
// [WithRecoveryDelay]): it becomes a secret again when its timer fires.
type recovery struct {
	secret *secret
	timer  *time.Timer
}

// recoverLocked starts the recovery of the deleted secret d, which the caller has removed
// from v.deleted: the secret is back after the server's recovery delay. The caller holds
// v.mu for writing.
func (v *Vault) recoverLocked(key string, d *deletedSecret) {
	delay := v.srv.cfg.recoveryDelay
	if delay <= 0 || v.recoveriesDone {
		v.secrets[key] = d.secret
		return
	}
	r := &recovery{secret: d.secret}
	r.timer = time.AfterFunc(delay, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.recovering[key] == r {
			v.completeRecoveryLocked(key)
		}
	})
	v.recovering[key] = r
}

// completeRecoveryLocked ends the recovery of key at once, if one is in progress: the
// secret is a secret again. The caller holds v.mu for writing.
func (v *Vault) completeRecoveryLocked(key string) {
	r := v.recovering[key]
	if r == nil {
		return
	}
	r.timer.Stop()
	delete(v.recovering, key)
	v.secrets[key] = r.secret
}

// closeRecoveries stops the timers of the recoveries in progress. [Server.Close] calls it.
func (v *Vault) closeRecoveries() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.recoveriesDone = true
	for _, r := range v.recovering {
		r.timer.Stop()
	}
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

// DefaultRetentionDays is the soft delete retention of a vault made without
// [WithRetentionDays], Key Vault's default.
const DefaultRetentionDays = 90

// Key Vault's range of soft delete retention (softDeleteRetentionInDays), in days.
const (
	minRetentionDays = 7
	maxRetentionDays = 90
)

// VaultOption configures a vault made by [Server.AddVault].
type VaultOption func(*vaultConfig)

type vaultConfig struct {
	purgeProtection bool
	retentionDays   *int // nil: unchanged
	pageSize        *int // nil: unchanged
}

// WithPurgeProtection turns on the vault's purge protection, as
// enablePurgeProtection does on Azure: purging a deleted secret answers 403 Forbidden
// ("Operation "purge" is not allowed because purge protection is enabled for this
// vault. ..."), and secrets report recoveryLevel "Recoverable" ("CustomizedRecoverable"
// with a retention under 90 days) instead of "Recoverable+Purgeable". As on Azure, it
// cannot be turned off again. [Vault.SetSecret], the Go control, still purges at once.
func WithPurgeProtection() VaultOption {
	return func(c *vaultConfig) { c.purgeProtection = true }
}

// WithRetentionDays sets the vault's soft delete retention (softDeleteRetentionInDays),
// 7 to 90 days (default [DefaultRetentionDays]): secrets report it as recoverableDays, a
// deleted secret's scheduledPurgeDate is its deletedDate plus that many days, and under 90
// days recoveryLevel is "CustomizedRecoverable+Purgeable" (or "CustomizedRecoverable" with
// [WithPurgeProtection]). [Server.AddVault] panics on a value outside 7-90.
func WithRetentionDays(days int) VaultOption {
	return func(c *vaultConfig) { c.retentionDays = &days }
}

// WithPageSize makes the vault's lists (secrets, versions, deleted secrets) answer at most
// n items a page (1-25; Key Vault's default and largest is 25), whatever maxresults a
// client asks for, so even a small vault answers several pages with a nextLink each, as a
// large one does on Azure. [Server.AddVault] panics on a value outside 1-25.
// [WithShortPages] applies on top of it.
func WithPageSize(n int) VaultOption {
	return func(c *vaultConfig) { c.pageSize = &n }
}

// check validates the options.
func (c *vaultConfig) check() error {
	if d := c.retentionDays; d != nil && (*d < minRetentionDays || *d > maxRetentionDays) {
		return fmt.Errorf("kvtest: retention of %d days: Key Vault keeps deleted secrets %d to %d days", *d, minRetentionDays, maxRetentionDays)
	}
	if n := c.pageSize; n != nil && (*n < 1 || *n > pageSize) {
		return fmt.Errorf("kvtest: page size %d: Key Vault pages hold 1 to %d items", *n, pageSize)
	}
	return nil
}

// AddVault creates a vault and starts its listener. name is a vault name, which gets the
// public cloud suffix ("myvault" -> myvault.vault.azure.net), or a full host of any of
// the three clouds ("x.vault.azure.cn"). Adding an existing vault returns it, with opts
// applied to it. It panics on an invalid name or option, or if the listener cannot start.
func (s *Server) AddVault(name string, opts ...VaultOption) *Vault {
	host, err := emuinfo.VaultHost(name)
	if err != nil {
		panic(err)
	}
	var vc vaultConfig
	for _, o := range opts {
		o(&vc)
	}
	if err := vc.check(); err != nil {
		panic(err)
	}
	s.mu.Lock()
	if v := s.vaults[host]; v != nil && !s.isClosed() {
		s.mu.Unlock()
		v.configure(vc)
		return v
	}
	defer s.mu.Unlock()
	if s.isClosed() {
		panic(errClosed)
	}
	suffix := emuinfo.VaultSuffix(host)
	v := &Vault{
		srv:           s,
		name:          strings.TrimSuffix(host, "."+suffix),
		host:          host,
		throttle:      newBucket(DefaultThrottleLimit, DefaultThrottlePeriod),
		counters:      newCounters(),
		secrets:       map[string]*secret{},
		deleted:       map[string]*deletedSecret{},
		purging:       map[string]purge{},
		recovering:    map[string]*recovery{},
		grants:        map[string]map[Role]bool{},
		retentionDays: DefaultRetentionDays,
	}
	for _, c := range cloud.All() {
		if c.VaultSuffix == suffix {
			v.resource, v.authority = c.Resource(), "https://"+c.AuthorityHost
		}
	}
	if suffix == cloud.Public().VaultSuffix {
		// Key Vault's challenges in the public cloud name the older host of Entra ID.
		v.authority = "https://" + emuinfo.LegacyAuthorityHost
	}
	v.configure(vc)
	if v.ln, err = s.listen(http.HandlerFunc(v.serveHTTP), true); err != nil {
		panic(err)
	}
	s.vaults[host] = v
	return v
}

// configure applies checked options.
func (v *Vault) configure(vc vaultConfig) {
	if vc.pageSize != nil {
		v.pageSize.Store(int32(*vc.pageSize))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.purgeProtection = v.purgeProtection || vc.purgeProtection
	if vc.retentionDays != nil {
		v.retentionDays = *vc.retentionDays
	}
}

// recoveryLevelLocked returns the recoveryLevel and recoverableDays the vault's secrets
// report: Azure's DeletionRecoveryLevel for a vault with soft delete (always on), with or
// without purge protection, and a retention of 90 days or less. The caller holds v.mu.
func (v *Vault) recoveryLevelLocked() (string, int) {
	level := "Recoverable"
	if v.retentionDays < maxRetentionDays {
		level = "CustomizedRecoverable"
	}
	if !v.purgeProtection {
		level += "+Purgeable"
	}
	return level, v.retentionDays
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

// WithUpdated makes the version as if it had been set at t: its created and updated
// timestamps are t, truncated to the second as Key Vault's are, and GET, the lists of
// secrets and of versions, and backups report them. It is for tests that need versions
// older than the current second (which a client may treat as not yet settled, since a
// version of the same second lists the same) or a given order of updates, without
// waiting for the clock: kv.SetSecret("a", "x", kvtest.WithUpdated(time.Now().Add(-time.Minute))).
//
// Only the timestamps change: the version still becomes the latest, whatever t, and its
// SecretNewVersionCreated event is dated when SetSecret publishes it. A later change
// (SetSecret without it, [Vault.SetEnabled]) is stamped with the current time.
func WithUpdated(t time.Time) SecretOption {
	return func(sv *secretVersion) { t := t.Truncate(time.Second); sv.created, sv.updated = t, t }
}

// SetSecret creates a new version of the secret, which becomes the latest, and returns
// the version (32 lowercase hex). Unlike the wire PUT, it first purges a deleted secret
// of the same name, at once, even one whose deletion or purge has not completed or whose
// vault has purge protection, and completes a recovery of the name in progress. It panics
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
	if v.certNameLocked(strings.ToLower(name)) {
		panic(fmt.Sprintf("kvtest: secret %q is a certificate's linked secret: use the certificate's API", name))
	}
	delete(v.deleted, strings.ToLower(name))
	delete(v.purging, strings.ToLower(name))
	v.completeRecoveryLocked(strings.ToLower(name))
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
	if s.managed() {
		return fmt.Errorf("kvtest: secret %s is a certificate's linked secret: update the certificate", name)
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
	if s.managed() {
		return fmt.Errorf("kvtest: secret %s is a certificate's linked secret: delete the certificate", name)
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

// Versions returns the versions of a secret, oldest first. GET /secrets/{name}/versions
// lists them in another order (by version ID): Key Vault documents no order, so the
// emulator's differs from creation order.
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

// Role is an Azure RBAC role on a vault's secrets and certificates.
type Role string

// Roles with the data actions of Azure's built-in roles, as far as secrets and
// certificates go.
const (
	// RoleSecretsUser ("Key Vault Secrets User") reads secret values and metadata.
	RoleSecretsUser Role = "Key Vault Secrets User"
	// RoleSecretsOfficer ("Key Vault Secrets Officer") may do anything with secrets.
	RoleSecretsOfficer Role = "Key Vault Secrets Officer"
	// RoleReader ("Key Vault Reader") reads metadata (lists) but not secret values; its
	// Microsoft.KeyVault/vaults/*/read reads certificates (their public part) too.
	RoleReader Role = "Key Vault Reader"
	// RoleAdministrator ("Key Vault Administrator") may do anything.
	RoleAdministrator Role = "Key Vault Administrator"
	// RoleCertificatesOfficer ("Key Vault Certificates Officer") may do anything with
	// certificates (certificates/*) but reads no secret, not even a certificate's linked
	// secret.
	RoleCertificatesOfficer Role = "Key Vault Certificates Officer"
	// RoleCertificateUser ("Key Vault Certificate User") reads certificates and, as
	// Azure's role grants secrets/getSecret/action and secrets/readMetadata/action, every
	// secret's value and metadata: a certificate's private key is read through its linked
	// secret.
	RoleCertificateUser Role = "Key Vault Certificate User"
)

// ParseRole accepts a role's full name or a short alias (secrets-user, user,
// secrets-officer, officer, reader, administrator, admin, certificates-officer,
// certificate-user), in any letter case.
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
	case "key vault certificates officer", "certificates-officer", "certificate-officer", "certificatesofficer":
		return RoleCertificatesOfficer, nil
	case "key vault certificate user", "certificate-user", "certificates-user", "certificateuser":
		return RoleCertificateUser, nil
	}
	return "", fmt.Errorf("kvtest: unknown role %q", s)
}

// dataAction is the RBAC data action an operation needs, with the roles granting it.
func dataAction(op Op) (action string, roles []Role) {
	if action, roles, ok := certDataAction(op); ok {
		return action, roles
	}
	switch op {
	case OpGetSecret:
		return "Microsoft.KeyVault/vaults/secrets/getSecret/action", []Role{RoleSecretsUser, RoleSecretsOfficer, RoleAdministrator, RoleCertificateUser}
	case OpListSecrets, OpListVersions:
		return "Microsoft.KeyVault/vaults/secrets/readMetadata/action", []Role{RoleReader, RoleSecretsUser, RoleSecretsOfficer, RoleAdministrator, RoleCertificateUser}
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

// rbacChange is a role assignment or removal that applies at a given time (see
// [WithRBACPropagationDelay]).
type rbacChange struct {
	at    time.Time
	oid   string // lowercase object ID
	role  Role   // the role granted; "" with a revoke
	grant bool   // false: every role of oid removed
}

// apply makes the change take effect in grants.
func (c rbacChange) apply(grants map[string]map[Role]bool) {
	if !c.grant {
		delete(grants, c.oid)
		return
	}
	if grants[c.oid] == nil {
		grants[c.oid] = map[Role]bool{}
	}
	grants[c.oid][c.role] = true
}

// Grant assigns role on this vault to the identity (keyed by its object ID). It applies
// at once, or after the server's [WithRBACPropagationDelay].
func (v *Vault) Grant(id Identity, role Role) {
	v.changeRBAC(rbacChange{oid: strings.ToLower(id.ObjectID), role: role, grant: true}, v.srv.cfg.rbacDelay)
}

// Revoke removes every role the identity has on this vault. It applies at once, or after
// the server's [WithRBACPropagationDelay].
func (v *Vault) Revoke(id Identity) {
	v.changeRBAC(rbacChange{oid: strings.ToLower(id.ObjectID)}, v.srv.cfg.rbacDelay)
}

// changeRBAC records the change c, which takes effect after delay, after every change
// made before it.
func (v *Vault) changeRBAC(c rbacChange, delay time.Duration) {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.settleRBACLocked(now)
	c.at = now.Add(delay)
	if n := len(v.pendingRBAC); n > 0 {
		c.at = later(c.at, v.pendingRBAC[n-1].at) // never before an earlier change
	}
	if !now.Before(c.at) {
		c.apply(v.grants)
		return
	}
	v.pendingRBAC = append(v.pendingRBAC, c)
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// settleRBACLocked applies the pending changes due at now. The caller holds v.mu for
// writing.
func (v *Vault) settleRBACLocked(now time.Time) {
	n := 0
	for n < len(v.pendingRBAC) && !now.Before(v.pendingRBAC[n].at) {
		v.pendingRBAC[n].apply(v.grants)
		n++
	}
	v.pendingRBAC = slices.Delete(v.pendingRBAC, 0, n)
}

// rolesLocked returns the roles oid (lowercase) has at now: the assignments in effect with
// the pending changes due by now applied. The caller holds v.mu and must not modify the
// result.
func (v *Vault) rolesLocked(oid string, now time.Time) map[Role]bool {
	have := v.grants[oid]
	for _, c := range v.pendingRBAC {
		if now.Before(c.at) {
			break
		}
		if c.oid != oid {
			continue
		}
		if !c.grant {
			have = nil
			continue
		}
		have = maps.Clone(have)
		if have == nil {
			have = map[Role]bool{}
		}
		have[c.role] = true
	}
	return have
}

func (v *Vault) allowed(oid string, op Op) bool {
	_, roles := dataAction(op)
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	have := v.rolesLocked(strings.ToLower(oid), now)
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
// stopped there: OpChallenge, OpUnauthorized, OpNetworkDenied, OpForbidden, OpThrottled.
func (v *Vault) Count(op Op) int64 { return v.counters.get(op) }

// ResetCounters sets the vault's counters to zero.
func (v *Vault) ResetCounters() { v.counters.reset() }
