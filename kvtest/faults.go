package kvtest

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Op names a kind of request the emulator serves, or an outcome it counts.
type Op string

// Operations and outcomes counted by [Server.Count] and [Vault.Count], and the operations
// [Vault.InjectFault] can target.
const (
	// OpToken counts token requests answered 200: the managed identity endpoints (both
	// styles) and the Entra token endpoint (client secret, client assertion).
	OpToken Op = "token"
	// OpChallenge counts vault requests without an Authorization header, answered with the
	// 401 authentication challenge. They are not counted under the operation they named.
	OpChallenge Op = "challenge"
	// OpGetSecret counts authenticated, authorized GET /secrets/{name}[/{version}] requests.
	OpGetSecret Op = "getSecret"
	// OpSetSecret counts PUT /secrets/{name}.
	OpSetSecret Op = "setSecret"
	// OpUpdateSecret counts PATCH /secrets/{name}/{version}.
	OpUpdateSecret Op = "updateSecret"
	// OpDeleteSecret counts DELETE /secrets/{name}.
	OpDeleteSecret Op = "deleteSecret"
	// OpListSecrets counts GET /secrets pages.
	OpListSecrets Op = "listSecrets"
	// OpListVersions counts GET /secrets/{name}/versions pages.
	OpListVersions Op = "listVersions"
	// OpGetDeletedSecret counts GET /deletedsecrets/{name}.
	OpGetDeletedSecret Op = "getDeletedSecret"
	// OpListDeletedSecrets counts GET /deletedsecrets pages.
	OpListDeletedSecrets Op = "listDeletedSecrets"
	// OpPurgeDeletedSecret counts DELETE /deletedsecrets/{name}.
	OpPurgeDeletedSecret Op = "purgeDeletedSecret"
	// OpRecoverDeletedSecret counts POST /deletedsecrets/{name}/recover.
	OpRecoverDeletedSecret Op = "recoverDeletedSecret"
	// OpBackupSecret counts POST /secrets/{name}/backup.
	OpBackupSecret Op = "backupSecret"
	// OpRestoreSecret counts POST /secrets/restore.
	OpRestoreSecret Op = "restoreSecret"
	// OpThrottled counts secret transactions (any of the operations above) answered 429 by
	// the vault's token bucket.
	OpThrottled Op = "throttled"
	// OpUnauthorized counts vault requests whose token was rejected (401).
	OpUnauthorized Op = "unauthorized"
	// OpForbidden counts vault requests denied by RBAC (403 ForbiddenByRbac) or, on a vault
	// with [PermissionAccessPolicy], by its access policies (403 ForbiddenByPolicy).
	OpForbidden Op = "forbidden"
	// OpNetworkDenied counts vault requests its networking settings refused
	// ([Vault.SetNetworkAccess]: 403 ForbiddenByFirewall or ForbiddenByConnection).
	OpNetworkDenied Op = "networkDenied"
	// OpDiscovery counts OpenID Connect discovery documents served by the Entra listener.
	OpDiscovery Op = "discovery"
	// OpJWKS counts JSON Web Key Sets served by the Entra listener.
	OpJWKS Op = "jwks"
)

var allOps = []Op{
	OpToken, OpChallenge, OpGetSecret, OpSetSecret, OpUpdateSecret, OpDeleteSecret,
	OpListSecrets, OpListVersions, OpGetDeletedSecret, OpListDeletedSecrets,
	OpPurgeDeletedSecret, OpRecoverDeletedSecret, OpBackupSecret, OpRestoreSecret, OpThrottled, OpUnauthorized,
	OpForbidden, OpNetworkDenied, OpDiscovery, OpJWKS,
}

// allCounted are the operations and outcomes counted: allOps and the certificates'.
func allCounted() []Op { return append(slices.Clone(allOps), certificateOps()...) }

// counters holds one atomic counter per Op. The map is filled at creation and never
// written again, so concurrent lookups need no lock.
type counters map[Op]*atomic.Int64

func newCounters() counters {
	ops := allCounted()
	c := make(counters, len(ops))
	for _, op := range ops {
		c[op] = new(atomic.Int64)
	}
	return c
}

func (c counters) add(op Op) {
	if n := c[op]; n != nil {
		n.Add(1)
	}
}

func (c counters) get(op Op) int64 {
	if n := c[op]; n != nil {
		return n.Load()
	}
	return 0
}

func (c counters) reset() {
	for _, n := range c {
		n.Store(0)
	}
}

// Fault describes a failure to inject. The zero Status means 500.
type Fault struct {
	// Status is the HTTP status to answer with (default 500).
	Status int
	// Code and Message fill the error body. Code defaults to the conventional code for
	// Status (for example 503 -> "ServiceUnavailable"), Message to the status text.
	Code, Message string
	// RetryAfter, when positive, adds a Retry-After header (whole seconds, rounded up).
	RetryAfter time.Duration
	// Hang blocks the request until the client gives up (its context ends) or the
	// server closes; no response is written.
	Hang bool
	// Reset closes the TCP connection abruptly (RST) without a response. Over HTTP/2 this
	// fails every request in flight on that connection, as a real reset would.
	Reset bool
	// Location, when set, answers with a redirect to it instead of an error body: Status
	// then defaults to 302 and must be a 3xx. Key Vault and the identity endpoints never
	// redirect, so this stands in for a hostile proxy or a hijacked endpoint, to test that a
	// client follows no redirect with its token or identity header.
	Location string
	// Body, when set, answers with this body as JSON instead of an error: Status then
	// defaults to 200. It forges what a vault could never say (a list page whose items
	// name no secret, a nextLink that loops or points elsewhere), to test that a client
	// treats the vault's answers as untrusted data.
	Body string
	// Times is how many requests the fault affects; 0 means until cleared.
	Times int
}

type activeFault struct {
	f    Fault
	left int // remaining uses; 0 = unlimited
}

// faultSet holds at most one active fault per Op.
type faultSet struct {
	mu sync.Mutex
	m  map[Op]*activeFault
}

func (fs *faultSet) set(op Op, f Fault) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.m == nil {
		fs.m = make(map[Op]*activeFault)
	}
	fs.m[op] = &activeFault{f: f, left: max(f.Times, 0)}
}

func (fs *faultSet) clear() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.m = nil
}

// take returns the fault for op, consuming one use of it.
func (fs *faultSet) take(op Op) (Fault, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	a := fs.m[op]
	if a == nil {
		return Fault{}, false
	}
	if a.left > 0 {
		a.left--
		if a.left == 0 {
			delete(fs.m, op)
		}
	}
	return a.f, true
}

// resolved fills a fault's defaults.
func (f Fault) resolved() (status int, code, msg string) {
	status = f.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	code = f.Code
	if code == "" {
		code = defaultErrorCode(status)
	}
	msg = f.Message
	if msg == "" {
		msg = http.StatusText(status)
	}
	return status, code, msg
}

func defaultErrorCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "BadParameter"
	case http.StatusTooManyRequests:
		return "Throttled"
	default:
		return strings.ReplaceAll(http.StatusText(status), " ", "")
	}
}

// retryAfterSeconds renders d as whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	return strconv.FormatInt(max(s, 1), 10)
}

// serveFault answers r according to f. Hang and Reset never return normally.
func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, f Fault, writeErr func(w http.ResponseWriter, status int, code, msg string)) {
	if f.Hang {
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
		// Nothing may be written: the client already gave up or the server is closing.
		panic(http.ErrAbortHandler)
	}
	if f.Reset {
		resetConn(r)
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(f.RetryAfter))
	}
	if f.Location != "" {
		status := f.Status
		if status == 0 {
			status = http.StatusFound
		}
		w.Header().Set("Location", f.Location)
		w.WriteHeader(status)
		return
	}
	if f.Body != "" {
		status := f.Status
		if status == 0 {
			status = http.StatusOK
		}
		h := w.Header()
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(status)
		_, _ = w.Write([]byte(f.Body))
		return
	}
	status, code, msg := f.resolved()
	writeErr(w, status, code, msg)
}

// DefaultThrottleLimit and DefaultThrottlePeriod are Key Vault's documented service limit
// for secret transactions per vault: GET, PUT, PATCH, DELETE, list pages, backup,
// restore, recover and purge all count; 429s do not.
const (
	DefaultThrottleLimit  = 4000
	DefaultThrottlePeriod = 10 * time.Second
)

// bucket is a token bucket: capacity limit, refilled at limit per period.
type bucket struct {
	mu     sync.Mutex
	limit  int
	per    time.Duration
	tokens float64
	last   time.Time
}

func newBucket(limit int, per time.Duration) *bucket {
	b := &bucket{}
	b.configure(limit, per)
	return b
}

func (b *bucket) configure(limit int, per time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if per <= 0 {
		per = time.Second
	}
	b.limit, b.per = limit, per
	b.tokens = float64(limit)
	b.last = time.Now()
}

// take consumes a token. When none is left it returns false and how long until one is.
func (b *bucket) take(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit <= 0 {
		return true, 0
	}
	rate := float64(b.limit) / b.per.Seconds() // tokens per second
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(b.limit), b.tokens+el*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
	return false, wait
}
