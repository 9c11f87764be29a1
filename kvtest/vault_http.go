package kvtest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	recoveryLevel   = "Recoverable+Purgeable"
	recoverableDays = 90
	pageSize        = 25
	notFoundHelp    = " If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)

// serveHTTP is the vault's data plane: latency, challenge, token validation, routing,
// RBAC, throttling, faults, then the operation.
func (v *Vault) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s := v.srv
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
		s.cfg.logger.Info("challenge: 401 with authorization and resource", "vault", v.host)
		if f, ok := v.faults.take(OpChallenge); ok {
			s.serveFault(w, r, f, v.writeError)
			return
		}
		v.unauthorized(w, "AKV10000: Request is missing a Bearer or PoP token.")
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
	if r.URL.Query().Get("api-version") == "" {
		v.writeError(w, http.StatusBadRequest, "BadParameter", "The 'api-version' query parameter is missing.")
		return
	}
	if !v.allowed(caller.oid, rt.op) {
		v.counters.add(OpForbidden)
		action, _ := dataAction(rt.op)
		flow.Info("RBAC denied", "action", action)
		v.forbidden(w, caller, rt)
		return
	}
	if rt.op == OpGetSecret {
		if ok, wait := v.throttle.take(time.Now()); !ok {
			v.counters.add(OpThrottled)
			h.Set("Retry-After", retryAfterSeconds(wait))
			v.writeError(w, http.StatusTooManyRequests, "Throttled",
				"Operations per second is over the limit for this vault. For more information, please see https://aka.ms/kv-service-limits")
			return
		}
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
	e := map[string]any{"code": code, "message": msg}
	if inner != "" {
		e["innererror"] = map[string]string{"code": inner}
	}
	writeJSON(w, status, map[string]any{"error": e})
}

// unauthorized answers 401 with the authentication challenge, as Key Vault does on every 401.
func (v *Vault) unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate",
		fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, v.authority, v.srv.tenant, v.resource))
	v.writeError(w, http.StatusUnauthorized, "Unauthorized", msg)
}

func (v *Vault) forbidden(w http.ResponseWriter, caller *verifiedToken, rt route) {
	action, _ := dataAction(rt.op)
	res := "/subscriptions/" + nameUUID(v.srv.tenant, "subscription") + "/resourcegroups/kvtest-rg/providers/microsoft.keyvault/vaults/" + v.name
	if rt.name != "" {
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
}

func unixPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	u := t.Unix()
	return &u
}

// bundle renders a version. The id always carries the production host, whatever host
// the client used, so the SDK can parse it.
func (v *Vault) bundle(s *secret, sv *secretVersion, withValue, withVersion bool) secretBundle {
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
			RecoveryLevel:   recoveryLevel,
			RecoverableDays: recoverableDays,
		},
	}
	if withVersion {
		b.ID += "/" + sv.version
	}
	if withValue {
		val := sv.value
		b.Value = &val
	}
	return b
}

func (v *Vault) deletedBundle(d *deletedSecret, withVersion bool) secretBundle {
	b := v.bundle(d.secret, d.latest(), false, withVersion)
	b.RecoveryID = "https://" + v.host + "/deletedsecrets/" + d.name
	b.DeletedDate = d.deletedAt.Unix()
	b.ScheduledPurgeDate = d.deletedAt.Add(recoverableDays * 24 * time.Hour).Unix()
	return b
}

func (v *Vault) getSecret(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	s := v.secrets[strings.ToLower(rt.name)]
	var sv *secretVersion
	var b secretBundle
	if s != nil {
		if rt.version == "" {
			sv = s.latest()
		} else {
			sv = s.find(rt.version)
		}
		if sv != nil && sv.enabled {
			b = v.bundle(s, sv, true, true)
		}
	}
	v.mu.RUnlock()
	switch {
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
	if len(*body.Value) > maxSecretSize {
		v.writeError(w, http.StatusBadRequest, "BadParameter", "Secret value exceeds the maximum size of 25 KB.")
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
	v.mu.Lock()
	if d := v.deleted[strings.ToLower(rt.name)]; d != nil {
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
	if body.ContentType != nil {
		sv.contentType = *body.ContentType
	}
	if body.Tags != nil {
		sv.tags = maps.Clone(*body.Tags)
	}
	body.Attributes.apply(sv)
	sv.updated = time.Now().Truncate(time.Second)
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
	delete(v.secrets, key)
	d := &deletedSecret{secret: s, deletedAt: time.Now().Truncate(time.Second)}
	v.deleted[key] = d
	b := v.deletedBundle(d, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) getDeleted(w http.ResponseWriter, _ *http.Request, rt route) {
	v.mu.RLock()
	d := v.deleted[strings.ToLower(rt.name)]
	var b secretBundle
	if d != nil {
		b = v.deletedBundle(d, true)
	}
	v.mu.RUnlock()
	if d == nil {
		v.writeError(w, http.StatusNotFound, "SecretNotFound", "Deleted Secret not found")
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) purgeDeleted(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	d := v.deleted[key]
	delete(v.deleted, key)
	v.mu.Unlock()
	if d == nil {
		v.writeError(w, http.StatusNotFound, "SecretNotFound", "Deleted Secret not found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (v *Vault) recoverDeleted(w http.ResponseWriter, _ *http.Request, rt route) {
	key := strings.ToLower(rt.name)
	v.mu.Lock()
	d := v.deleted[key]
	if d == nil {
		v.mu.Unlock()
		v.writeError(w, http.StatusNotFound, "SecretNotFound", "Deleted Secret not found")
		return
	}
	if v.secrets[key] != nil {
		v.mu.Unlock()
		v.writeError(w, http.StatusConflict, "Conflict", "Secret "+rt.name+" already exists.")
		return
	}
	delete(v.deleted, key)
	v.secrets[key] = d.secret
	b := v.bundle(d.secret, d.latest(), false, true)
	v.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

// page reads maxresults and $skiptoken and returns the first index and page size.
func page(r *http.Request) (start, size int, e *kvError) {
	q := r.URL.Query()
	size = pageSize
	if m := q.Get("maxresults"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > pageSize {
			return 0, 0, &kvError{http.StatusBadRequest, "BadParameter", "maxresults must be between 1 and 25."}
		}
		size = n
	}
	if tok := q.Get("$skiptoken"); tok != "" {
		var st struct {
			NextMarker string `json:"NextMarker"`
		}
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err == nil {
			start, err = strconv.Atoi(st.NextMarker)
		}
		if err != nil || start < 0 {
			return 0, 0, &kvError{http.StatusBadRequest, "BadParameter", "The $skiptoken is invalid."}
		}
	}
	return start, size, nil
}

// writePage writes value[start:start+size] with a nextLink to the rest, if any. The
// nextLink names the host the client used, so paging works through 127.0.0.1 too.
func writePage[T any](w http.ResponseWriter, r *http.Request, items []T, start, size int) {
	end := min(start+size, len(items))
	start = min(start, end)
	out := map[string]any{"value": items[start:end], "nextLink": nil}
	if end < len(items) {
		host := r.Host
		if _, _, err := net.SplitHostPort(host); err != nil {
			host += ":443" // as Key Vault writes it
		}
		tok, _ := json.Marshal(map[string]any{"NextMarker": strconv.Itoa(end), "TargetLocation": 0})
		out["nextLink"] = "https://" + host + r.URL.Path + "?api-version=" + url.QueryEscape(r.URL.Query().Get("api-version")) +
			"&$skiptoken=" + base64.RawURLEncoding.EncodeToString(tok) + "&maxresults=" + strconv.Itoa(size)
	}
	writeJSON(w, http.StatusOK, out)
}

func (v *Vault) listSecrets(w http.ResponseWriter, r *http.Request, _ route) {
	start, size, e := page(r)
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
	writePage(w, r, items, start, size)
}

func (v *Vault) listVersions(w http.ResponseWriter, r *http.Request, rt route) {
	start, size, e := page(r)
	if e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	v.mu.RLock()
	s := v.secrets[strings.ToLower(rt.name)]
	var items []secretBundle
	if s != nil {
		for _, sv := range s.versions {
			items = append(items, v.bundle(s, sv, false, true))
		}
	}
	v.mu.RUnlock()
	if s == nil {
		st, code, msg := secretNotFound(rt.name)
		v.writeError(w, st, code, msg)
		return
	}
	writePage(w, r, items, start, size)
}

func (v *Vault) listDeleted(w http.ResponseWriter, r *http.Request, _ route) {
	start, size, e := page(r)
	if e != nil {
		v.writeError(w, e.status, e.code, e.msg)
		return
	}
	v.mu.RLock()
	keys := make([]string, 0, len(v.deleted))
	for k := range v.deleted {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	items := make([]secretBundle, len(keys))
	for i, k := range keys {
		items[i] = v.deletedBundle(v.deleted[k], false)
	}
	v.mu.RUnlock()
	writePage(w, r, items, start, size)
}
