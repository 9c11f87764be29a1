package kvtest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	pageSize     = 25
	notFoundHelp = " If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"

	// Key Vault's limits on a secret besides its value (maxSecretSize): contentType
	// characters, tags, and characters of a tag's name or value.
	maxContentType = 255
	maxTags        = 15
	maxTagLength   = 512
	// invalidProperty is the message of Key Vault's 400 BadParameter for a property over
	// its limit (too many tags, a value too large, ...): it names no property.
	invalidProperty = "Property has invalid value\r\n"
)

// latestAPIVersion is the newest stable data plane version, the one Key Vault suggests
// when it does not recognize the one a request names.
const latestAPIVersion = "2026-04-01"

// apiVersions are the data plane versions the vault accepts (lowercase): every stable and
// preview version of the REST spec, which covers what the SDKs send (Go azsecrets
// 2026-04-01; Python and JS 7.x and 2025-07-01; older SDKs 7.0-7.5 and 2016-10-01).
var apiVersions = map[string]bool{
	"2015-06-01": true, "2016-10-01": true,
	"7.0-preview": true, "7.0": true, "7.1-preview": true, "7.1": true,
	"7.2-preview": true, "7.2": true, "7.3-preview": true, "7.3": true,
	"7.4-preview.1": true, "7.4": true, "7.5-preview.1": true, "7.5": true,
	"7.6-preview.1": true, "7.6-preview.2": true, "7.6": true,
	"2025-06-01-preview": true, "2025-07-01": true, "2026-01-01-preview": true,
	"2026-03-01-preview": true, "2026-04-01": true, "2026-05-01-preview": true,
	"2026-07-01-preview": true,
}

// serveHTTP is the vault's data plane: latency, challenge, token validation, routing,
// RBAC, throttling, faults, then the operation.
func (v *Vault) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s := v.srv
	if Outage(v.outage.Load()) != OutageNone {
		resetConn(r) // a connection opened before the outage breaks, as its route did
	}
	h := w.Header()
	h.Set("x-ms-request-id", newUUID())
	h.Set("x-ms-keyvault-service-version", "1.9.2488.1")
	h.Set("x-ms-keyvault-region", "kvtest")
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h.Set("x-ms-keyvault-network-info", "conn_type=Ipv4;addr="+host+";act_addr_fam=InterNetwork;")
	}
	if id := r.Header.Get("x-ms-client-request-id"); id != "" {
		h.Set("x-ms-client-request-id", id)
	}

	if d := time.Duration(v.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			panic(http.ErrAbortHandler)
		case <-s.closed:
			t.Stop()
			panic(http.ErrAbortHandler)
		}
	}

	authz := r.Header.Get("Authorization")
	if authz == "" {
		v.counters.add(OpChallenge)
		s.cfg.logger.Info("challenge sent: a request without a token is answered 401 naming the authority and resource to get one from (expected, once per client)", "vault", v.host)
		if f, ok := v.faults.take(OpChallenge); ok {
			s.serveFault(w, r, f, v.writeError)
			return
		}
		v.challenge(w, "AKV10000: Request is missing a Bearer or PoP token.") // logged above
		return
	}
	scheme, token, _ := strings.Cut(authz, " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		v.counters.add(OpUnauthorized)
		v.unauthorized(w, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	caller, err := s.validator.validate(r.Context(), token, []string{v.resource}, time.Now())
	if err != nil {
		var af *authFailure
		if errors.As(err, &af) {
			v.counters.add(OpUnauthorized)
			v.unauthorized(w, af.msg)
			return
		}
		v.writeError(w, http.StatusInternalServerError, "InternalServerError",
			"Unable to validate the bearer token: the identity provider's signing keys are unavailable.")
		return
	}

	flow := s.cfg.logger.With("vault", v.host, "identity", s.identityName(caller.oid))
	flow.Info("token validated", "issuer", caller.iss, "audience", caller.aud)
	rt, rerr := v.route(r)
	if rerr != nil {
		v.writeError(w, rerr.status, rerr.code, rerr.msg)
		return
	}
	if av := r.URL.Query().Get("api-version"); av == "" {
		v.writeError(w, http.StatusBadRequest, "BadParameter", "The 'api-version' query parameter is missing.")
		return
	} else if !apiVersions[strings.ToLower(av)] {
		v.writeError(w, http.StatusBadRequest, "BadParameter",
			"The specified version ("+av+") is not recognized. Consider using the latest supported version ("+latestAPIVersion+").")
		return
	}
	// The networking settings apply before authorization, to every caller: Key Vault's
	// ForbiddenByFirewall and ForbiddenByConnection name the caller whatever its roles.
	if inner := v.networkDenied(w, r, caller); inner != "" {
		flow.Info("network rule denied", "inner", inner)
		return
	}
	if !v.allowed(caller.oid, rt.op) {
		v.counters.add(OpForbidden)
		action, _ := dataAction(rt.op)
		flow.Info("RBAC denied", "action", action)
		v.forbidden(w, caller, rt)
		return
	}
	// Every secret transaction counts against the vault's limit, lists included.
	if ok, wait := v.throttle.take(time.Now()); !ok {
		v.counters.add(OpThrottled)
		flow.Info("throttled", "op", string(rt.op))
		if !s.cfg.noRetryAfter {
			h.Set("Retry-After", retryAfterSeconds(wait))
		}
		v.writeError(w, http.StatusTooManyRequests, "Throttled",
			"Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached")
		return
	}
	action, _ := dataAction(rt.op)
	flow.Info("RBAC allowed", "action", action)
	v.counters.add(rt.op)
	if f, ok := v.faults.take(rt.op); ok {
		s.serveFault(w, r, f, v.writeError)
		return
	}
	rt.serve(w, r, rt)
}

// route is a parsed vault request.
type route struct {
	op      Op
	name    string // secret name as requested
	version string // lowercase; "" = latest
	serve   func(http.ResponseWriter, *http.Request, route)
	res     string // the resource under the vault RBAC names, when not /secrets/{name}
}

type kvError struct {
	status    int
	code, msg string
}

func (v *Vault) route(r *http.Request) (route, *kvError) {
	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	notFound := &kvError{http.StatusNotFound, "NotFound", "The requested path was not found: " + r.URL.Path}
	badMethod := &kvError{http.StatusMethodNotAllowed, "MethodNotAllowed", "The method " + r.Method + " is not allowed on " + r.URL.Path}
	m := r.Method
	if len(segs) > 0 && (segs[0] == "certificates" || segs[0] == "deletedcertificates") {
		return v.certRoute(r, segs) // certificates_http.go
	}
	if len(segs) == 0 || (segs[0] != "secrets" && segs[0] != "deletedsecrets") {
		return route{}, notFound
	}
	if len(segs) >= 2 && segs[1] != "" && !secretNameRE.MatchString(segs[1]) {
		return route{}, &kvError{http.StatusBadRequest, "BadParameter", "The request URI contains an invalid name: " + segs[1]}
	}
	if segs[0] == "deletedsecrets" {
		switch {
		case len(segs) == 1 || (len(segs) == 2 && segs[1] == ""):
			if m != http.MethodGet {
				return route{}, badMethod
			}
			return route{op: OpListDeletedSecrets, serve: v.listDeleted}, nil
		case len(segs) == 2 || (len(segs) == 3 && segs[2] == ""):
			switch m {
			case http.MethodGet:
				return route{op: OpGetDeletedSecret, name: segs[1], serve: v.getDeleted}, nil
			case http.MethodDelete:
				return route{op: OpPurgeDeletedSecret, name: segs[1], serve: v.purgeDeleted}, nil
			}
			return route{}, badMethod
		case len(segs) == 3 && segs[2] == "recover":
			if m != http.MethodPost {
				return route{}, badMethod
			}
			return route{op: OpRecoverDeletedSecret, name: segs[1], serve: v.recoverDeleted}, nil
		}
		return route{}, notFound
	}
	switch {
	case len(segs) == 1 || (len(segs) == 2 && segs[1] == ""):
		if m != http.MethodGet {
			return route{}, badMethod
		}
		return route{op: OpListSecrets, serve: v.listSecrets}, nil
	case m == http.MethodPost && segs[1] == "restore" && (len(segs) == 2 || (len(segs) == 3 && segs[2] == "")):
		return route{op: OpRestoreSecret, serve: v.restoreSecret}, nil
	case len(segs) == 3 && segs[2] == "backup" && m == http.MethodPost:
		return route{op: OpBackupSecret, name: segs[1], serve: v.backupSecret}, nil
	case len(segs) == 2 || (len(segs) == 3 && segs[2] == ""):
		// /secrets/{name} and /secrets/{name}/: the latest version
		switch m {
		case http.MethodGet:
			return route{op: OpGetSecret, name: segs[1], serve: v.getSecret}, nil
		case http.MethodPut:
			return route{op: OpSetSecret, name: segs[1], serve: v.setSecret}, nil
		case http.MethodPatch:
			return route{op: OpUpdateSecret, name: segs[1], serve: v.updateSecret}, nil
		case http.MethodDelete:
			return route{op: OpDeleteSecret, name: segs[1], serve: v.deleteSecret}, nil
		}
		return route{}, badMethod
	case len(segs) == 3 && segs[2] == "versions":
		if m != http.MethodGet {
			return route{}, badMethod
		}
		return route{op: OpListVersions, name: segs[1], serve: v.listVersions}, nil
	case len(segs) == 3 || (len(segs) == 4 && segs[3] == ""):
		ver := strings.ToLower(segs[2])
		switch m {
		case http.MethodGet:
			return route{op: OpGetSecret, name: segs[1], version: ver, serve: v.getSecret}, nil
		case http.MethodPatch:
			return route{op: OpUpdateSecret, name: segs[1], version: ver, serve: v.updateSecret}, nil
		}
		return route{}, badMethod
	}
	return route{}, notFound
}

// writeError writes Key Vault's error body {"error":{"code","message"}}.
func (v *Vault) writeError(w http.ResponseWriter, status int, code, msg string) {
	v.writeErrorInner(w, status, code, msg, "")
}

func (v *Vault) writeErrorInner(w http.ResponseWriter, status int, code, msg, inner string) {
	// Every error answer is logged, so that a verbose emulator shows a request refused
	// before its token was validated (a bad token, route or api-version) or one that found
	// nothing. Messages name secrets and reasons, never a value.
	v.srv.cfg.logger.Info("error answered", "vault", v.host, "status", status, "code", code, "message", msg)
	v.writeJSONError(w, status, code, msg, inner)
}

func (v *Vault) writeJSONError(w http.ResponseWriter, status int, code, msg, inner string) {
	e := map[string]any{"code": code, "message": msg}
	if inner != "" {
		e["innererror"] = map[string]string{"code": inner}
	}
	writeJSON(w, status, map[string]any{"error": e})
}

// unauthorized answers 401 with the authentication challenge, as Key Vault does on every 401.
func (v *Vault) unauthorized(w http.ResponseWriter, msg string) {
	v.setChallenge(w)
	v.writeError(w, http.StatusUnauthorized, "Unauthorized", msg)
}

// challenge answers a request without a token: the expected first request of a client,
// logged as such by the caller rather than as an error.
func (v *Vault) challenge(w http.ResponseWriter, msg string) {
	v.setChallenge(w)
	v.writeJSONError(w, http.StatusUnauthorized, "Unauthorized", msg, "")
}

func (v *Vault) setChallenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate",
		fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, v.authority, v.srv.tenant, v.resource))
}

func (v *Vault) forbidden(w http.ResponseWriter, caller *verifiedToken, rt route) {
	v.mu.RLock()
	model := v.model
	v.mu.RUnlock()
	if model == PermissionAccessPolicy {
		v.policyDenied(w, caller, rt.op)
		return
	}
	action, _ := dataAction(rt.op)
	res := "/subscriptions/" + nameUUID(v.srv.tenant, "subscription") + "/resourcegroups/kvtest-rg/providers/microsoft.keyvault/vaults/" + v.name
	if rt.res != "" {
		res += rt.res
	} else if rt.name != "" {
		res += "/secrets/" + rt.name
	}
	msg := "Caller is not authorized to perform action on resource.\r\n" +
		"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" +
		"Caller: appid=" + caller.appid + ";oid=" + caller.oid + ";iss=" + caller.iss + "\r\n" +
		"Action: '" + action + "'\r\n" +
		"Resource: '" + res + "'\r\n" +
		"Assignment: (not found)\r\n" +
		"DenyAssignmentId: null\r\n" +
		"DecisionReason: null \r\n" +
		"Vault: " + v.name + ";location=kvtest\r\n"
	v.writeErrorInner(w, http.StatusForbidden, "Forbidden", msg, "ForbiddenByRbac")
}

func secretNotFound(name string) (int, string, string) {
	return http.StatusNotFound, "SecretNotFound", "A secret with (name/id) " + name + " was not found in this key vault." + notFoundHelp
}

func (v *Vault) deletedNotFound(w http.ResponseWriter, name string) {
	v.writeError(w, http.StatusNotFound, "SecretNotFound", "Deleted Secret not found: "+name)
}

// beingDeleted answers a purge or recover of a secret whose deletion (or purge) has not
// completed.
func (v *Vault) beingDeleted(w http.ResponseWriter) {
	v.writeErrorInner(w, http.StatusConflict, "Conflict", "Secret is currently being deleted.", "ObjectIsBeingDeleted")
}

// beingRecovered answers a second recover, or a purge, of a secret whose recovery has not
// completed, with the conflict Key Vault answers to operations in parallel on a
// soft-deleted object.
func (v *Vault) beingRecovered(w http.ResponseWriter, name, op string) {
	v.writeError(w, http.StatusConflict, "Conflict", "There was a conflict while "+op+" the soft-deleted secret '"+
		"https://"+v.host+"/deletedsecrets/"+name+"'. This can happen when multiple operations are performed in parallel against the soft-deleted secret. "+
		"To avoid this error, perform operations against the soft-deleted secret in a sequential manner.")
}

// purgeProtected answers a purge in a vault with purge protection.
func (v *Vault) purgeProtected(w http.ResponseWriter) {
	v.writeError(w, http.StatusForbidden, "Forbidden", `Operation "purge" is not allowed because purge protection is enabled for this vault. `+
		"Key Vault service will automatically purge it after the retention period has passed. Vault: "+v.name+";location=kvtest")
}

// restoreConflict answers a restore whose name is in use, deleted or being purged.
func (v *Vault) restoreConflict(w http.ResponseWriter, id string) {
	v.writeError(w, http.StatusConflict, "Conflict", "There was a conflict restoring the secret '"+id+"'. "+
		"This can happen if either: a second secret with the same name was created after the first secret was deleted; "+
		"thus trying to restore a secret whose name is already in use. To fix this, rename the second secret to something else so that the restore works. "+
		"The second probable cause of this exception is when multiple operations are performed in parallel against the secret. "+
		"To avoid this error, perform operations against a secret in a sequential manner.")
}

// checkLimits enforces Key Vault's limits on what a PUT or PATCH sets.
func checkLimits(body *secretBody) *kvError {
	bad := &kvError{http.StatusBadRequest, "BadParameter", invalidProperty}
	if body.Value != nil && len(*body.Value) > maxSecretSize {
		return bad
	}
	if body.ContentType != nil && utf8.RuneCountInString(*body.ContentType) > maxContentType {
		return bad
	}
	if body.Tags != nil {
		if len(*body.Tags) > maxTags {
			return bad
		}
		for k, val := range *body.Tags {
			if utf8.RuneCountInString(k) > maxTagLength || utf8.RuneCountInString(val) > maxTagLength {
				return bad
			}
		}
	}
	return nil
}

type secretAttributes struct {
	Enabled         bool   `json:"enabled"`
	NotBefore       *int64 `json:"nbf,omitempty"`
	Expires         *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
}

type secretBundle struct {
	RecoveryID         string            `json:"recoveryId,omitempty"`
	DeletedDate        int64             `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64             `json:"scheduledPurgeDate,omitempty"`
	Value              *string           `json:"value,omitempty"`
	ID                 string            `json:"id"`
	ContentType        string            `json:"contentType,omitempty"`
	Tags               map[string]string `json:"tags,omitempty"`
	Attributes         secretAttributes  `json:"attributes"`
	// A certificate's linked secret (certificates.go): managed, the key's ID on GET, and
	// the previous version on GET with api-version 2025-07-01 and later.
	KID             string `json:"kid,omitempty"`
	Managed         *bool  `json:"managed,omitempty"`
	PreviousVersion string `json:"previousVersion,omitempty"`
}

func unixPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	u := t.Unix()
	return &u
}

// bundle renders a version. The id always carries the production host, whatever host
// the client used, so the SDK can parse it. The caller holds v.mu.
func (v *Vault) bundle(s *secret, sv *secretVersion, withValue, withVersion bool) secretBundle {
	level, days := v.recoveryLevelLocked()
	b := secretBundle{
		ID:          "https://" + v.host + "/secrets/" + s.name,
		ContentType: sv.contentType,
		Tags:        maps.Clone(sv.tags),
		Attributes: secretAttributes{
			Enabled:         sv.enabled,
			NotBefore:       unixPtr(sv.nbf),
			Expires:         unixPtr(sv.exp),
			Created:         sv.created.Unix(),
			Updated:         sv.updated.Unix(),
			RecoveryLevel:   level,
			RecoverableDays: days,
		},
	}
	if withVersion {
		b.ID += "/" + sv.version
	}
	if withValue {
		val := sv.value
		b.Value = &val
	}
	if sv.cert != nil {
		managed := true
		b.Managed = &managed
	}
	return b
}

func (v *Vault) deletedBundle(d *deletedSecret, withVersion bool) secretBundle {
	b := v.bundle(d.secret, d.latest(), false, withVersion)
	b.RecoveryID = "https://" + v.host + "/deletedsecrets/" + d.name
	b.DeletedDate = d.deletedAt.Unix()
	b.ScheduledPurgeDate = d.deletedAt.AddDate(0, 0, b.Attributes.RecoverableDays).Unix()
	return b
}

func (v *Vault) getSecret(w http.ResponseWriter, r *http.Request, rt route) {
	v.mu.RLock()
	s := v.secrets[strings.ToLower(rt.name)]
	var sv *secretVersion
	var b secretBundle
	var e *kvError
	if s != nil {
		if rt.version == "" {
			sv = s.latest()
		} else {
			sv = s.find(rt.version)
		}
		if sv != nil && sv.enabled {
			b = v.bundle(s, sv, true, true)
			e = v.linkedSecretLocked(r, s, sv, &b) // certificates_http.go
		}
	}
	v.mu.RUnlock()
	switch {
	case e != nil:
		v.writeError(w, e.status, e.code, e.msg)
	case s == nil:
		st, code, msg := secretNotFound(rt.name)
		v.writeError(w, st, code, msg)
	case sv == nil:
		st, code, msg := secretNotFound(rt.name + "/" + rt.version)
		v.writeError(w, st, code, msg)
	case b.Value == nil:
		v.writeErrorInner(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
	default:
		v.srv.cfg.logger.Info("secret read", "vault", v.host, "secret", s.name, "version", sv.version)
		writeJSON(w, http.StatusOK, b)
	}
}

type attributesBody struct {
	Enabled   *bool  `json:"enabled"`
	NotBefore *int64 `json:"nbf"`
	Expires   *int64 `json:"exp"`
}

type secretBody struct {
	Value       *string            `json:"value"`
	ContentType *string            `json:"contentType"`
	Tags        *map[string]string `json:"tags"`
	Attributes  *attributesBody    `json:"attributes"`
}

func readBody(r *http.Request, into *secretBody) *kvError {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return &kvError{http.StatusBadRequest, "BadParameter", "The request body could not be read."}
	}
	if err := json.Unmarshal(b, into); err != nil {
		return &kvError{http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: " + err.Error()}
	}
	return nil
}

func (a *attributesBody) apply(sv *secretVersion) {
	if a == nil {
		return
	}
	if a.Enabled != nil {
		sv.enabled = *a.Enabled
	}
	if a.NotBefore != nil {
		t := time.Unix(*a.NotBefore, 0)
		sv.nbf = &t
	}
	if a.Expires != nil {
		t := time.Unix(*a.Expires, 0)
		sv.exp = &t
	}
}

func (v *Vault) setSecret(w http.ResponseWriter, r *http.Request, rt route) {
	var body secretBody
	if e := readBody(r, &body); e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	if body.Value == nil {
		v.writeError(w, http.StatusBadRequest, "BadParameter", "Property 'value' is required.")
		return
	}
	if e := checkLimits(&body); e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	now := time.Now().Truncate(time.Second)
	sv := &secretVersion{version: randomHex(16), value: *body.Value, enabled: true, created: now, updated: now}
	if body.ContentType != nil {
		sv.contentType = *body.ContentType
	}
	if body.Tags != nil {
		sv.tags = maps.Clone(*body.Tags)
	}
	body.Attributes.apply(sv)
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	if v.certNameLocked(key) {
		v.mu.Unlock()
		v.managedSecretConflict(w, rt.name)
		return
	}
	if d := v.deleted[key]; d != nil && d.deleting(time.Now()) {
		v.mu.Unlock()
		v.writeErrorInner(w, http.StatusConflict, "Conflict",
			"Secret "+d.name+" is currently being deleted and cannot be re-created; retry later.", "ObjectIsBeingDeleted")
		return
	}
	if p, ok := v.purgingLocked(key, time.Now()); ok {
		v.mu.Unlock()
		v.writeErrorInner(w, http.StatusConflict, "Conflict",
			"Secret "+p.name+" is currently being deleted and cannot be re-created; retry later.", "ObjectIsBeingDeleted")
		return
	}
	if r := v.recovering[key]; r != nil {
		v.mu.Unlock()
		v.writeErrorInner(w, http.StatusConflict, "Conflict",
			"Secret "+r.secret.name+" is currently being recovered and cannot be re-created; retry later.", "ObjectIsBeingRecovered")
		return
	}
	if d := v.deleted[key]; d != nil {
		v.mu.Unlock()
		v.writeErrorInner(w, http.StatusConflict, "Conflict",
			"Secret "+d.name+" is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.",
			"ObjectIsDeletedButRecoverable")
		return
	}
	v.addVersionLocked(rt.name, sv)
	b := v.bundle(v.secrets[strings.ToLower(rt.name)], sv, true, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) updateSecret(w http.ResponseWriter, r *http.Request, rt route) {
	var body secretBody
	if e := readBody(r, &body); e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	body.Value = nil // PATCH changes properties only
	if e := checkLimits(&body); e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	v.mu.Lock()
	s := v.secrets[strings.ToLower(rt.name)]
	var sv *secretVersion
	if s != nil {
		if rt.version == "" {
			sv = s.latest()
		} else {
			sv = s.find(rt.version)
		}
	}
	if sv == nil {
		v.mu.Unlock()
		id := rt.name
		if s != nil {
			id += "/" + rt.version
		}
		st, code, msg := secretNotFound(id)
		v.writeError(w, st, code, msg)
		return
	}
	if s.managed() {
		v.mu.Unlock()
		v.managedSecretConflict(w, s.name)
		return
	}
	if body.ContentType != nil {
		sv.contentType = *body.ContentType
	}
	if body.Tags != nil {
		sv.tags = maps.Clone(*body.Tags)
	}
	body.Attributes.apply(sv)
	sv.updated = time.Now().Truncate(time.Second)
	v.scheduleExpiryLocked(s, sv) // Event Grid: a changed exp reschedules the expiry events
	b := v.bundle(s, sv, false, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) deleteSecret(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	s := v.secrets[key]
	if s == nil {
		v.mu.Unlock()
		st, code, msg := secretNotFound(rt.name)
		v.writeError(w, st, code, msg)
		return
	}
	if s.managed() {
		v.mu.Unlock()
		v.managedSecretConflict(w, s.name)
		return
	}
	d := v.deleteLocked(key, s)
	b := v.deletedBundle(d, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

// getDeleted answers GET /deletedsecrets/{name}: 404 until the deletion has completed, as
// the other SDKs' delete pollers expect.
func (v *Vault) getDeleted(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	d := v.deleted[strings.ToLower(rt.name)]
	var b secretBundle
	if d != nil && d.deleting(time.Now()) {
		d = nil
	}
	if d != nil {
		b = v.deletedBundle(d, true)
	}
	v.mu.RUnlock()
	if d == nil {
		v.deletedNotFound(w, rt.name)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// purgeDeleted answers DELETE /deletedsecrets/{name}. The purge completes after the
// deletion window; until then the name cannot be reused. A vault with purge protection
// refuses it.
func (v *Vault) purgeDeleted(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	now := time.Now()
	v.mu.Lock()
	d, r := v.deleted[key], v.recovering[key]
	_, purging := v.purgingLocked(key, now)
	switch {
	case r != nil:
		v.mu.Unlock()
		v.beingRecovered(w, r.secret.name, "purging")
		return
	case d != nil && d.deleting(now), d == nil && purging:
		v.mu.Unlock()
		v.beingDeleted(w)
		return
	case d == nil:
		v.mu.Unlock()
		v.deletedNotFound(w, rt.name)
		return
	case v.purgeProtection:
		v.mu.Unlock()
		v.purgeProtected(w)
		return
	}
	delete(v.deleted, key)
	if win := v.srv.cfg.deletionWindow; win > 0 {
		v.purging[key] = purge{name: d.name, until: now.Add(win)}
	}
	v.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// recoverDeleted answers POST /deletedsecrets/{name}/recover at once; the recovery
// completes after the recovery delay ([WithRecoveryDelay]).
func (v *Vault) recoverDeleted(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	now := time.Now()
	v.mu.Lock()
	d := v.deleted[key]
	if r := v.recovering[key]; r != nil {
		v.mu.Unlock()
		v.beingRecovered(w, r.secret.name, "recovering")
		return
	}
	_, purging := v.purgingLocked(key, now)
	if (d != nil && d.deleting(now)) || (d == nil && purging) {
		v.mu.Unlock()
		v.beingDeleted(w)
		return
	}
	if d == nil {
		v.mu.Unlock()
		v.deletedNotFound(w, rt.name)
		return
	}
	if v.secrets[key] != nil {
		v.mu.Unlock()
		v.writeError(w, http.StatusConflict, "Conflict", "Secret "+rt.name+" already exists.")
		return
	}
	delete(v.deleted, key)
	v.recoverLocked(key, d)
	b := v.bundle(d.secret, d.latest(), false, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

// pageReq is a list request's position: the first item, the page size (maxresults) and,
// with short pages, the page's number.
type pageReq struct {
	start, size, num int
}

// skipToken is the decoded $skiptoken. Key Vault's holds NextMarker and TargetLocation;
// clients treat it as opaque, so the emulator adds its short pages' page number.
type skipToken struct {
	NextMarker     string `json:"NextMarker"`
	TargetLocation int    `json:"TargetLocation"`
	Page           int    `json:"kvtestPage,omitempty"`
}

// page reads maxresults and $skiptoken. A page holds at most the vault's page size
// ([WithPageSize]), whatever maxresults asks for.
func (v *Vault) page(r *http.Request) (pageReq, *kvError) {
	q := r.URL.Query()
	p := pageReq{size: pageSize}
	if m := q.Get("maxresults"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > pageSize {
			return pageReq{}, &kvError{http.StatusBadRequest, "BadParameter", "maxresults must be between 1 and 25."}
		}
		p.size = n
	}
	if limit := int(v.pageSize.Load()); limit > 0 {
		p.size = min(p.size, limit)
	}
	if tok := q.Get("$skiptoken"); tok != "" {
		var st skipToken
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err == nil {
			p.start, err = strconv.Atoi(st.NextMarker)
		}
		if err != nil || p.start < 0 || st.Page < 0 {
			return pageReq{}, &kvError{http.StatusBadRequest, "BadParameter", "The $skiptoken is invalid."}
		}
		p.num = st.Page
	}
	return p, nil
}

// writePage writes a page of items with a nextLink to the rest, if any. The nextLink names
// the host the client used, so paging works through 127.0.0.1 too. With short pages
// ([WithShortPages]), even-numbered pages are empty and odd ones hold at most half of
// maxresults; the last page is an empty one without nextLink.
func writePage[T any](v *Vault, w http.ResponseWriter, r *http.Request, items []T, p pageReq) {
	start := min(p.start, len(items))
	end := min(start+p.size, len(items))
	next, more := end, end < len(items)
	if v.srv.cfg.shortPages {
		if p.num%2 == 0 {
			end, next, more = start, start, start < len(items)
		} else {
			end = min(start+max(p.size/2, 1), len(items))
			next, more = end, true // an empty page ends the list
		}
	}
	out := map[string]any{"value": items[start:end], "nextLink": nil}
	if more {
		host := r.Host
		if _, _, err := net.SplitHostPort(host); err != nil {
			host += ":443" // as Key Vault writes it
		}
		st := skipToken{NextMarker: strconv.Itoa(next)}
		if v.srv.cfg.shortPages {
			st.Page = p.num + 1
		}
		tok, _ := json.Marshal(st)
		out["nextLink"] = "https://" + host + r.URL.Path + "?api-version=" + url.QueryEscape(r.URL.Query().Get("api-version")) +
			"&$skiptoken=" + base64.RawURLEncoding.EncodeToString(tok) + "&maxresults=" + strconv.Itoa(p.size)
	}
	writeJSON(w, http.StatusOK, out)
}

func (v *Vault) listSecrets(w http.ResponseWriter, r *http.Request, _ route) {
	p, e := v.page(r)
	if e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	v.mu.RLock()
	keys := make([]string, 0, len(v.secrets))
	for k := range v.secrets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	items := make([]secretBundle, len(keys))
	for i, k := range keys {
		s := v.secrets[k]
		items[i] = v.bundle(s, s.latest(), false, false)
	}
	v.mu.RUnlock()
	writePage(v, w, r, items, p)
}

// listVersions answers GET /secrets/{name}/versions, in the order of the versions' IDs,
// and 404 SecretNotFound, as GET does, for a secret that does not exist (or is deleted or
// being deleted or recovered).
func (v *Vault) listVersions(w http.ResponseWriter, r *http.Request, rt route) {
	p, e := v.page(r)
	if e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	v.mu.RLock()
	s := v.secrets[strings.ToLower(rt.name)]
	var items []secretBundle
	if s != nil {
		// Key Vault documents no order: list by version ID, which is random, so that a
		// client taking the first or last listed as the newest fails here too.
		vs := slices.SortedFunc(slices.Values(s.versions), func(a, b *secretVersion) int { return strings.Compare(a.version, b.version) })
		for _, sv := range vs {
			items = append(items, v.bundle(s, sv, false, true))
		}
	}
	v.mu.RUnlock()
	if s == nil {
		st, code, msg := secretNotFound(rt.name)
		v.writeError(w, st, code, msg)
		return
	}
	writePage(v, w, r, items, p)
}

// listDeleted lists the deleted secrets whose deletion has completed.
func (v *Vault) listDeleted(w http.ResponseWriter, r *http.Request, _ route) {
	p, e := v.page(r)
	if e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	now := time.Now()
	v.mu.RLock()
	keys := make([]string, 0, len(v.deleted))
	for k, d := range v.deleted {
		if !d.deleting(now) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	items := make([]secretBundle, len(keys))
	for i, k := range keys {
		items[i] = v.deletedBundle(v.deleted[k], false)
	}
	v.mu.RUnlock()
	writePage(v, w, r, items, p)
}

// Backups. A blob is opaque, as Key Vault's are: a marker, then the secret (every version
// with its properties) as JSON sealed with AES-256-GCM under a key derived from the
// tenant. It restores into any vault of a Server with the same tenant (Key Vault restores
// within the subscription and geography it was taken in), also after a restart.

// backupMarker starts every blob.
const backupMarker = "&KvtestSecretBackupV1."

type backupVersion struct {
	Version     string            `json:"version"`
	Value       string            `json:"value"`
	ContentType string            `json:"contentType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Enabled     bool              `json:"enabled"`
	NotBefore   *int64            `json:"nbf,omitempty"`
	Expires     *int64            `json:"exp,omitempty"`
	Created     int64             `json:"created"`
	Updated     int64             `json:"updated"`
}

type backupPayload struct {
	Name     string          `json:"name"`
	Versions []backupVersion `json:"versions"`
}

func (v *Vault) backupAEAD() cipher.AEAD {
	key := sha256.Sum256([]byte("kvtest secret backup v1\x00" + v.srv.tenant))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 32-byte key never fails
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

func (v *Vault) sealBackup(p backupPayload) []byte {
	plain, _ := json.Marshal(p)
	aead := v.backupAEAD()
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := append([]byte(backupMarker), nonce...)
	return aead.Seal(out, nonce, plain, []byte(backupMarker))
}

func (v *Vault) openBackup(blob []byte) (backupPayload, bool) {
	var p backupPayload
	aead := v.backupAEAD()
	rest, ok := bytes.CutPrefix(blob, []byte(backupMarker))
	if !ok || len(rest) < aead.NonceSize() {
		return p, false
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(backupMarker))
	if err != nil || json.Unmarshal(plain, &p) != nil || !secretNameRE.MatchString(p.Name) || len(p.Versions) == 0 {
		return p, false
	}
	return p, true
}

func unixTime(u *int64) *time.Time {
	if u == nil {
		return nil
	}
	t := time.Unix(*u, 0)
	return &t
}

// backupSecret answers POST /secrets/{name}/backup with {"value": "<base64url blob>"}.
func (v *Vault) backupSecret(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	s := v.secrets[strings.ToLower(rt.name)]
	if s != nil && s.managed() {
		v.mu.RUnlock()
		v.managedSecretConflict(w, s.name)
		return
	}
	var p backupPayload
	if s != nil {
		p.Name = s.name
		for _, sv := range s.versions {
			p.Versions = append(p.Versions, backupVersion{
				Version: sv.version, Value: sv.value, ContentType: sv.contentType, Tags: maps.Clone(sv.tags),
				Enabled: sv.enabled, NotBefore: unixPtr(sv.nbf), Expires: unixPtr(sv.exp),
				Created: sv.created.Unix(), Updated: sv.updated.Unix(),
			})
		}
	}
	v.mu.RUnlock()
	if s == nil {
		st, code, msg := secretNotFound(rt.name)
		v.writeError(w, st, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"value": base64.RawURLEncoding.EncodeToString(v.sealBackup(p))})
}

// restoreSecret answers POST /secrets/restore {"value": "<base64url blob>"}: the secret
// comes back with every version, unless its name is in use, deleted, being recovered or
// being purged (409).
func (v *Vault) restoreSecret(w http.ResponseWriter, r *http.Request, _ route) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		v.writeError(w, http.StatusBadRequest, "BadParameter", "The request body could not be read.")
		return
	}
	var body struct {
		Value *string `json:"value"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		v.writeError(w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON: "+err.Error())
		return
	}
	if body.Value == nil {
		v.writeError(w, http.StatusBadRequest, "BadParameter", "Property 'value' is required.")
		return
	}
	blob, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(*body.Value, "="))
	p, ok := v.openBackup(blob)
	if err != nil || !ok {
		v.writeError(w, http.StatusBadRequest, "Malformed backup blob", "Backup blob contains invalid or corrupt version.")
		return
	}
	s := &secret{name: p.Name}
	for _, bv := range p.Versions {
		s.versions = append(s.versions, &secretVersion{
			version: bv.Version, value: bv.Value, contentType: bv.ContentType, tags: maps.Clone(bv.Tags),
			enabled: bv.Enabled, nbf: unixTime(bv.NotBefore), exp: unixTime(bv.Expires),
			created: time.Unix(bv.Created, 0), updated: time.Unix(bv.Updated, 0),
		})
	}
	key := strings.ToLower(p.Name)
	v.mu.Lock()
	_, purging := v.purgingLocked(key, time.Now())
	if v.secrets[key] != nil || v.deleted[key] != nil || v.recovering[key] != nil || purging || v.certNameLocked(key) {
		v.mu.Unlock()
		v.restoreConflict(w, "https://"+v.host+"/secrets/"+p.Name+"/"+s.latest().version)
		return
	}
	v.secrets[key] = s
	for _, sv := range s.versions { // Event Grid: each restored version is a new version
		v.versionCreatedLocked(s, sv)
	}
	out := v.bundle(s, s.latest(), false, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}
