package viperkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/driver"
)

// statusOf maps a failure of the driver to the status that names it.
func statusOf(k driver.Kind) Status {
	switch k {
	case driver.KindNotFound:
		return StatusSecretNotFound
	case driver.KindVersionNotFound:
		return StatusSecretVersionNotFound
	case driver.KindForbidden:
		return StatusAccessToKeyVaultDenied
	case driver.KindForbiddenByFirewall:
		return StatusForbiddenByFirewall
	case driver.KindForbiddenByConnection:
		return StatusForbiddenByConnection
	case driver.KindDisabled:
		return StatusSecretDisabled
	case driver.KindUnauthorized:
		return StatusUnauthorizedClient
	case driver.KindThrottled:
		return StatusThrottled
	case driver.KindVaultNotFound:
		return StatusVaultNotFound
	case driver.KindTimeout:
		return StatusFetchTimedOut
	case driver.KindNoIdentity:
		return StatusMSINotEnabled
	}
	return StatusOtherReasons
}

// secret is what the provider holds for one distinct secret: the latest outcome and the
// last good value, which a failed refresh keeps.
type secret struct {
	value       string
	version     string
	contentType string
	tags        map[string]string // the version's tags, for the vault sources' filters
	expires     *time.Time
	notBefore   *time.Time
	updated     *time.Time // the version's attributes' last change, as the fetch saw it
	served      *time.Time // the vault's clock when it answered; nil: unknown
	has         bool       // value and version hold a usable (last good) value
	status      Status     // the latest outcome
	reason      string     // why, when status is not Resolved; never contains the value
	took        time.Duration
	cert        *CertificateInfo // the certificate the value holds, if it is one
	servedBy    string           // a failover vault that served the value; "" for the reference's own
	undecodable bool             // a PKCS#12 certificate our decoder cannot read: ask the vault for PEM
	transient   bool             // the failure was the vault or the network not answering, not an answer
	snapshotAt  time.Time        // for StatusServedFromSnapshot: when the value was last confirmed current
}

// fetchOnce gets one secret and judges it: a version outside its exp/nbf window is
// withheld (Key Vault still returns its value, for recovery and testing). It also reports
// whether a failure is transient (worth another try).
func fetchOnce(ctx context.Context, rd *driver.Reader, r Reference, fo failover) (*secret, bool) {
	if fo != nil {
		return fetchFailingOver(ctx, rd, r, fo)
	}
	s, transient, _ := fetchFrom(ctx, rd, r, r.Vault)
	return s, transient
}

// fetchFrom gets r's secret from the vault host (r's own, or a failover vault) and judges
// it; a failure comes with the driver's error.
func fetchFrom(ctx context.Context, rd *driver.Reader, r Reference, host string) (*secret, bool, *driver.Error) {
	start := time.Now()
	sv, err := rd.Get(ctx, host, r.Name, r.Version)
	took := time.Since(start)
	if err != nil {
		e := driver.AsError(err)
		return &secret{status: statusOf(e.Kind), reason: e.Reason, took: took, transient: e.Transient}, e.Transient, e
	}
	s := &secret{value: sv.Value, version: sv.Version, contentType: sv.ContentType, tags: sv.Tags,
		expires: sv.Expires, notBefore: sv.NotBefore, updated: sv.Updated, served: sv.Served, has: true, status: StatusResolved, took: took}
	judge(s, time.Now())
	if s.undecodable {
		return convertedToPEM(ctx, rd, r, host, s), false, nil
	}
	return s, false, nil
}

// convertedToPEM asks the vault for a certificate our PKCS#12 decoder cannot read (an
// algorithm it does not know) as PEM, which Key Vault converts itself (outContentType, API
// 2025-07-01), and serves that version if it is good. Decoding PKCS#12 here first costs no
// second request for the certificates it can read, which are all that Key Vault makes;
// a vault or an API version that does not convert leaves the first verdict standing.
func convertedToPEM(ctx context.Context, rd *driver.Reader, r Reference, host string, s *secret) *secret {
	sv, err := rd.Get(driver.WithPEM(ctx), host, r.Name, s.version)
	if err != nil || sv.Version != s.version || !certparse.IsCertificate(sv.ContentType) || !strings.HasPrefix(strings.TrimSpace(sv.Value), "-----BEGIN") {
		return s
	}
	c := &secret{value: sv.Value, version: sv.Version, contentType: certparse.ContentTypePEM, tags: sv.Tags,
		expires: sv.Expires, notBefore: sv.NotBefore, updated: sv.Updated, served: sv.Served, has: true, status: StatusResolved, took: s.took}
	judge(c, time.Now())
	if c.status != StatusResolved {
		return s
	}
	return c
}

// judge withholds a version that must not be served: outside its exp/nbf window (Key Vault
// still returns its value, for recovery and testing), or a certificate worse than none.
func judge(s *secret, now time.Time) {
	switch {
	case s.expires != nil && !now.Before(*s.expires):
		s.status, s.value, s.has = StatusSecretExpired, "", false
		s.reason = "version " + s.version + " expired at " + s.expires.UTC().Format(time.RFC3339)
	case s.notBefore != nil && now.Before(*s.notBefore):
		s.status, s.value, s.has = StatusSecretNotYetValid, "", false
		s.reason = "version " + s.version + " is not valid before " + s.notBefore.UTC().Format(time.RFC3339)
	case certparse.IsCertificate(s.contentType):
		judgeCertificate(s, now)
	}
}

// judgeCertificate withholds a certificate's secret (its content type says it is one) that
// would be worse than the one held: one that does not parse, whose key is not its leaf's,
// that is not valid now, or whose chain is broken. Certificates without a key are a CA
// bundle: they need only parse. A good certificate expires, for the schedule's
// near-expiry warning, no later than its leaf does.
func judgeCertificate(s *secret, now time.Time) {
	c, err := certparse.Parse(s.value, s.contentType, now)
	if errors.Is(err, certparse.ErrNoKey) {
		if _, certs, perr := certparse.ParsePool(s.value); perr == nil {
			s.cert = certificateInfo(certs[0])
			return // certificates without a key: a CA bundle, whose members may expire on their own
		}
	}
	if err != nil {
		s.undecodable = errors.Is(err, certparse.ErrPKCS12)
		s.status, s.value, s.has = StatusCertificateInvalid, "", false
		s.reason = "version " + s.version + ": " + err.Error()
		return
	}
	s.cert = certificateInfo(c.Leaf)
	if na := c.Leaf.NotAfter; s.expires == nil || na.Before(*s.expires) {
		s.expires = &na
	}
}

// fetchSecrets fetches each reference concurrently (the source paces each vault), retrying
// transient failures as rt says, and returns the outcomes.
func fetchSecrets(ctx context.Context, rd *driver.Reader, refs []Reference, rt fetchRetry) map[Reference]*secret {
	out := make(map[Reference]*secret, len(refs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range refs {
		wg.Go(func() {
			s := fetchRetrying(ctx, rd, r, rt)
			mu.Lock()
			out[r] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// The back-off between the attempts of one fetch: capped exponential with equal jitter (half
// fixed, half random), so the first retry comes within 100-200 ms and a long outage is
// tried every 1.5-3 s, and a fleet starting together does not retry in step.
const (
	retryFirst = 200 * time.Millisecond
	retryCap   = 3 * time.Second
)

// fetchRetry says how fetchSecrets retries transient failures: not at all when log is nil.
// Load and Refresh retry until the fetch deadline (the earlier of ctx's and
// WithFetchTimeout), so a container that starts before its identity endpoint answers, or
// while a vault sheds load, still loads. Watch's poll cycles and Notify do not: the
// schedule already backs failing secrets off across cycles, and a cycle must not hold
// updateMu for long.
type fetchRetry struct {
	log      *slog.Logger
	keys     func() map[Reference][]string // the config keys naming each secret, for the logs
	failover failover                      // WithVaultFailover's vaults, for every fetch
}

// retryFor returns how update retries the fetches it makes for src over the settings sc.
func (p *Provider) retryFor(src Source, sc *scan) fetchRetry {
	if src != SourceRefresh || sc == nil {
		return fetchRetry{failover: p.failover}
	}
	return fetchRetry{log: p.opts.logger, keys: sync.OnceValue(sc.keysByRef), failover: p.failover}
}

// retryBackoff is the wait after failed attempt n (n >= 1).
func retryBackoff(n int) time.Duration {
	d := retryCap
	if n < 16 {
		d = min(retryFirst<<(n-1), retryCap)
	}
	return d/2 + rand.N(d/2+1)
}

// fetchRetrying fetches r, retrying a transient failure with back-off until ctx's deadline
// and stopping at once when ctx ends. A wait that would end past the deadline is not begun.
// When it gives up, the outcome is the last failure the source reported, with its reason,
// not the deadline that cut a later attempt short: "the identity endpoint refused the
// connection" says more than "timed out".
func fetchRetrying(ctx context.Context, rd *driver.Reader, r Reference, rt fetchRetry) *secret {
	start := time.Now()
	s, transient := fetchOnce(ctx, rd, r, rt.failover)
	if rt.log == nil {
		return s
	}
	var last *secret // the last failure that was an answer, not the deadline
	for attempt := 1; ; attempt++ {
		if s.status == StatusResolved || !transient {
			if s.status == StatusResolved && attempt > 1 {
				rt.log.Debug("viperkv: fetch succeeded after retries", rt.attrs(r, "attempts", attempt, "took", time.Since(start))...)
			}
			s.took = time.Since(start)
			return s
		}
		if ctx.Err() != nil {
			if last != nil && s.status == StatusFetchTimedOut {
				s = last // the deadline cut the attempt short; the failure before it says why
			}
			return gaveUp(ctx, s, attempt, start)
		}
		last = s
		wait := retryBackoff(attempt)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return gaveUp(ctx, s, attempt, start)
		}
		rt.log.Debug("viperkv: fetch failed; retrying",
			rt.attrs(r, "status", s.status, "reason", s.reason, "attempt", attempt, "retry_in", wait)...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return gaveUp(ctx, s, attempt, start)
		case <-t.C:
		}
		s, transient = fetchOnce(ctx, rd, r, rt.failover)
	}
}

// attrs returns the log attributes naming r and the keys that use it, then more.
func (rt fetchRetry) attrs(r Reference, more ...any) []any {
	attrs := []any{"key", strings.Join(rt.keys()[r.key()], ","), "vault", r.Vault, "secret", r.Name}
	if r.Version != "" {
		attrs = append(attrs, "version", r.Version)
	}
	return append(attrs, more...)
}

// gaveUp returns the failure s of a fetch that ends after attempts tries, saying so when
// there was more than one.
func gaveUp(ctx context.Context, s *secret, attempts int, start time.Time) *secret {
	out := *s
	out.took = time.Since(start)
	if attempts > 1 {
		why := "before the fetch deadline"
		if errors.Is(ctx.Err(), context.Canceled) {
			why = "before the fetch was canceled"
		}
		out.reason += fmt.Sprintf(" (tried %d times %s)", attempts, why)
	}
	return &out
}
