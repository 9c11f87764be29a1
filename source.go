package viperkv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// secretSource is where secret versions come from: Key Vault through azsecrets (keyVault)
// in production, a fake in the logic tests. It is the one place the resolver meets the
// network, so merge, schedule, back-off and expiry can be tested under simulated time.
type secretSource interface {
	// getSecret returns the version r names, or the latest when r.Version is "". A failure
	// is a *fetchError in the words of a Status; any other error counts as OtherReasons.
	getSecret(ctx context.Context, r Reference) (secretVersion, error)
	// listSecrets lists the vault's secrets with the attributes of each one's current
	// version, reading at most maxPages pages (0: all). Items that name no secret of the
	// vault are left out and counted. A list that cannot finish (its nextLinks loop or
	// lead elsewhere) fails. A failure is a *fetchError, as for getSecret.
	listSecrets(ctx context.Context, vault string, maxPages int) (vaultListing, error)
}

// vaultListing is what one list of a vault found.
type vaultListing struct {
	props     []secretProps
	complete  bool // false when pages were left unread (maxPages)
	malformed int  // items left out: their id names no secret of the vault
}

// secretProps is one item of a vault's secret list: the secret's name and the attributes
// of its current version. It holds no value.
type secretProps struct {
	name                        string
	enabled                     bool
	updated, expires, notBefore *time.Time
	tags                        map[string]string
}

// secretVersion is one version of a secret as the vault returned it.
type secretVersion struct {
	value       string
	version     string
	contentType string
	tags        map[string]string
	expires     *time.Time
	notBefore   *time.Time
	updated     *time.Time // when the version's attributes last changed (one-second resolution)
	served      *time.Time // the vault's clock when it answered (its Date header); nil: unknown
}

// fetchError says why a secret could not be fetched. reason names the secret, never its value.
// transient says the same request may well succeed in a moment (a connection refused or
// reset, a 5xx, a 429 that outlasted the limiter, an identity endpoint not answering yet), as
// opposed to an answer that will not change within a Load (403, 404, a vault name that does
// not resolve, an identity the endpoint does not know). Load and Refresh retry transient
// failures until their deadline.
type fetchError struct {
	status    Status
	reason    string
	transient bool
}

func (e *fetchError) Error() string { return string(e.status) + ": " + e.reason }

// transientStatus reports whether an HTTP status is worth another try: 408, 429 and 5xx.
func transientStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 && code < 600
}

// transientError reports whether err is a failure of the exchange rather than an answer: a
// connection refused, reset or closed mid-response, a timeout, a name server not answering.
// A certificate the client does not trust, TLS spoken to a plain server, a vault name that
// does not exist, or an error azcore was told not to retry are not: none of them changes
// within a Load.
func transientError(err error) bool {
	var (
		final interface{ NonRetriable() }
		cv    *tls.CertificateVerificationError
		ua    x509.UnknownAuthorityError
		hn    x509.HostnameError
		ci    x509.CertificateInvalidError
		rh    tls.RecordHeaderError
		dns   *net.DNSError
		ne    net.Error
	)
	switch {
	case errors.As(err, &final), errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn),
		errors.As(err, &ci), errors.As(err, &rh):
		return false
	case errors.As(err, &dns):
		return !dns.IsNotFound
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true
	}
	// *url.Error (the HTTP client's exchange failed), *net.OpError, a timeout.
	return errors.As(err, &ne)
}

// secret is what the provider holds for one distinct secret: the latest outcome and the
// last good value, which a failed refresh keeps.
type secret struct {
	value       string
	version     string
	contentType string
	expires     *time.Time
	notBefore   *time.Time
	updated     *time.Time // the version's attributes' last change, as the fetch saw it
	served      *time.Time // the vault's clock when it answered; nil: unknown
	has         bool       // value and version hold a usable (last good) value
	status      Status     // the latest outcome
	reason      string     // why, when status is not Resolved; never contains the value
	took        time.Duration
}

// fetchSecret gets one secret from src and judges it: a version outside its exp/nbf window
// is withheld (Key Vault still returns its value, for recovery and testing).
func fetchSecret(ctx context.Context, src secretSource, r Reference) *secret {
	s, _ := fetchOnce(ctx, src, r)
	return s
}

// fetchOnce is fetchSecret, also reporting whether a failure is transient (worth another try).
func fetchOnce(ctx context.Context, src secretSource, r Reference) (*secret, bool) {
	start := time.Now()
	sv, err := src.getSecret(ctx, r)
	took := time.Since(start)
	if err != nil {
		var fe *fetchError
		if !errors.As(err, &fe) {
			fe = &fetchError{status: StatusOtherReasons, reason: "GET " + r.ID() + ": " + firstLine(err.Error())}
		}
		return &secret{status: fe.status, reason: fe.reason, took: took}, fe.transient
	}
	s := &secret{value: sv.value, version: sv.version, contentType: sv.contentType,
		expires: sv.expires, notBefore: sv.notBefore, updated: sv.updated, served: sv.served, has: true, status: StatusResolved, took: took}
	now := time.Now()
	switch {
	case s.expires != nil && !now.Before(*s.expires):
		s.status, s.value, s.has = StatusSecretExpired, "", false
		s.reason = "version " + s.version + " expired at " + s.expires.UTC().Format(time.RFC3339)
	case s.notBefore != nil && now.Before(*s.notBefore):
		s.status, s.value, s.has = StatusSecretNotYetValid, "", false
		s.reason = "version " + s.version + " is not valid before " + s.notBefore.UTC().Format(time.RFC3339)
	}
	return s, false
}

// fetchSecrets fetches each reference concurrently (the source paces each vault), retrying
// transient failures as rt says, and returns the outcomes.
func fetchSecrets(ctx context.Context, src secretSource, refs []Reference, rt fetchRetry) map[Reference]*secret {
	out := make(map[Reference]*secret, len(refs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range refs {
		wg.Go(func() {
			s := fetchRetrying(ctx, src, r, rt)
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
	log  *slog.Logger
	keys func() map[Reference][]string // the config keys naming each secret, for the logs
}

// retryFor returns how update retries the fetches it makes for src over the settings sc.
func (p *Provider) retryFor(src Source, sc *scan) fetchRetry {
	if src != SourceRefresh || sc == nil {
		return fetchRetry{}
	}
	return fetchRetry{log: p.opts.logger, keys: sync.OnceValue(sc.keysByRef)}
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
func fetchRetrying(ctx context.Context, src secretSource, r Reference, rt fetchRetry) *secret {
	start := time.Now()
	s, transient := fetchOnce(ctx, src, r)
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
		s, transient = fetchOnce(ctx, src, r)
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
