package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/kvname"
)

// maxThrottleRetries bounds how often one request is retried after 429s. Each retry first
// waits out the vault's Retry-After, so this is a budget of many seconds.
const maxThrottleRetries = 30

// MaxListPages bounds one list of a vault: 25,000 pages hold 625,000 secrets, far more than
// a vault holds, so only a list whose nextLinks never end (each one new) reaches it.
const MaxListPages = 25_000

// ErrClosed is returned by a Reader's methods after Close.
var ErrClosed = errors.New("the provider is closed")

// Reader is what the core reads vaults through. It paces each vault with a limiter of its
// own (a concurrency window and a token bucket that learns the vault's rate from its 429s),
// retries a throttled request after the Retry-After the vault asked of it, and checks every
// answer before it goes further. Its methods are safe for concurrent use.
type Reader struct {
	src      Source
	inflight int
	log      *slog.Logger

	mu     sync.Mutex
	vaults map[string]*limiter
	closed bool
}

// NewReader reads src with at most inflight requests in flight to each vault.
func NewReader(src Source, inflight int, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{src: src, inflight: inflight, log: log, vaults: map[string]*limiter{}}
}

func (r *Reader) limiter(vault string) (*limiter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, &Error{Kind: KindOther, Reason: ErrClosed.Error()}
	}
	l := r.vaults[vault]
	if l == nil {
		l = newLimiter(r.inflight)
		r.vaults[vault] = l
	}
	return l, nil
}

// Get fetches a version of a secret (the latest when version is ""), paced by the vault's
// limiter and retried after 429s, and checks the answer: its id must name this secret of
// this vault and a version (the one asked for, if any). A failure is an *Error.
func (r *Reader) Get(ctx context.Context, vault, name, version string) (Version, error) {
	what := "GET " + SecretURL(vault, name, version)
	lim, err := r.limiter(vault)
	if err != nil {
		return Version{}, err
	}
	for attempt := 0; ; attempt++ {
		start, err := lim.acquire(ctx)
		if err != nil {
			return Version{}, waitError(what, err)
		}
		b, err := r.src.Get(ctx, vault, name, version)
		e := asError(err)
		lim.release(start, e != nil && e.Kind == KindThrottled, retryAfter(e))
		switch {
		case e == nil:
			return checkBundle(what, vault, name, version, b)
		case e.Kind != KindThrottled || attempt >= maxThrottleRetries || ctx.Err() != nil:
			return Version{}, e
		}
		r.log.Debug("viperkv: vault throttled the request; retrying",
			"vault", vault, "secret", name, "retry_after", retryAfter(e), "attempt", attempt+1)
		if err := lim.waitOut(ctx, retryAfter(e)); err != nil {
			return Version{}, waitError(what, err)
		}
	}
}

// List lists the vault's secrets, reading at most maxPages pages (0: all). Items whose id
// names no secret of the vault are left out and counted. A list whose nextLink repeats,
// leads anywhere but the vault's list, or does not end within MaxListPages fails with
// KindMalformed. A throttled page restarts the list after its Retry-After (a failed page
// ends a pager).
func (r *Reader) List(ctx context.Context, vault string, maxPages int) (Listing, error) {
	lim, err := r.limiter(vault)
	if err != nil {
		return Listing{}, err
	}
	for attempt := 0; ; attempt++ {
		l, err := r.list(ctx, lim, vault, maxPages)
		e := asError(err)
		if e == nil || e.Kind != KindThrottled || attempt >= maxThrottleRetries || ctx.Err() != nil {
			if e != nil {
				return Listing{}, e
			}
			return l, nil
		}
		r.log.Debug("viperkv: vault throttled a list; retrying", "vault", vault, "retry_after", retryAfter(e), "attempt", attempt+1)
		if err := lim.waitOut(ctx, retryAfter(e)); err != nil {
			return Listing{}, waitError("GET https://"+vault+"/secrets (list)", err)
		}
	}
}

func (r *Reader) list(ctx context.Context, lim *limiter, vault string, maxPages int) (Listing, error) {
	what := "GET https://" + vault + "/secrets (list)"
	var out Listing
	pager := r.src.List(vault)
	seen := map[string]bool{}
	for pages := 0; ; pages++ {
		if maxPages > 0 && pages == maxPages {
			return out, nil
		}
		if pages == MaxListPages {
			return Listing{}, malformed(what, fmt.Sprintf("the list did not end after %d pages", MaxListPages))
		}
		start, err := lim.acquire(ctx)
		if err != nil {
			return Listing{}, waitError(what, err)
		}
		page, err := pager.NextPage(ctx)
		e := asError(err)
		lim.release(start, e != nil && e.Kind == KindThrottled, retryAfter(e))
		if e != nil {
			return Listing{}, e
		}
		for _, item := range page.Items {
			p, ok := checkItem(vault, item)
			if !ok {
				out.Malformed++
				continue
			}
			out.Props = append(out.Props, p)
		}
		if page.NextLink == "" {
			out.Complete = true
			return out, nil
		}
		// The pager follows NextLink as given: check it first. A link seen before would
		// loop for ever; one that leaves the vault's list would send the token elsewhere or
		// read something that is not this list.
		if reason := nextLinkProblem(vault, page.NextLink); reason != "" {
			return Listing{}, malformed(what, reason)
		}
		if seen[page.NextLink] {
			return Listing{}, malformed(what, "a nextLink repeats: the pages loop")
		}
		seen[page.NextLink] = true
	}
}

// Windows returns each vault's concurrency window, for a gauge.
func (r *Reader) Windows() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.vaults))
	for host, l := range r.vaults {
		out[host] = l.window()
	}
	return out
}

// Close closes the source. Calls made after it fail with ErrClosed's words; calls in
// flight end as their source's requests do.
func (r *Reader) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	return r.src.Close()
}

// SecretURL returns a secret's identifier URL: https://<vault>/secrets/<name>[/<version>].
func SecretURL(vault, name, version string) string {
	u := "https://" + vault + "/secrets/" + name
	if version != "" {
		u += "/" + version
	}
	return u
}

func asError(err error) *Error {
	if err == nil {
		return nil
	}
	return AsError(err)
}

func retryAfter(e *Error) time.Duration {
	if e != nil && e.Kind == KindThrottled {
		return e.RetryAfter
	}
	return 0
}

// waitError is the failure of a request that never went out: its context ended while it
// waited for the limiter.
func waitError(what string, err error) *Error {
	if errors.Is(err, errThrottleWait) {
		return &Error{Kind: KindThrottled, Reason: what + ": " + errThrottleWait.Error(), Transient: true}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Kind: KindTimeout, Reason: what + ": canceled"}
	}
	return &Error{Kind: KindTimeout, Reason: what + ": timed out", Transient: true}
}

func malformed(what, reason string) *Error {
	return &Error{Kind: KindMalformed, Reason: what + ": " + reason}
}

// checkBundle checks a Get's answer and returns it as a Version.
func checkBundle(what, vault, name, version string, b Bundle) (Version, error) {
	gotName, gotVersion, ok := secretIDParts(vault, b.ID)
	switch {
	case !ok || gotVersion == "":
		return Version{}, malformed(what, "the answer's id is not a version of a secret of the vault")
	case !strings.EqualFold(gotName, name):
		return Version{}, malformed(what, "the answer's id names another secret")
	case version != "" && !strings.EqualFold(gotVersion, version):
		return Version{}, malformed(what, "the answer's id names another version")
	case b.Value == nil:
		return Version{}, malformed(what, "the answer has no value")
	}
	a := b.Attributes
	return Version{Name: gotName, Version: strings.ToLower(gotVersion), Value: *b.Value, ContentType: b.ContentType,
		Tags: b.Tags, Updated: a.Updated, Expires: a.Expires, NotBefore: a.NotBefore, Served: b.Date}, nil
}

// checkItem checks a list item and returns it as Props.
func checkItem(vault string, item Item) (Props, bool) {
	name, version, ok := secretIDParts(vault, item.ID)
	if !ok || version != "" {
		return Props{}, false
	}
	p := Props{Name: name, Enabled: true, Tags: item.Tags, ContentType: item.ContentType,
		Updated: item.Attributes.Updated, Expires: item.Attributes.Expires, NotBefore: item.Attributes.NotBefore}
	if item.Attributes.Enabled != nil {
		p.Enabled = *item.Attributes.Enabled
	}
	return p, true
}

// secretIDParts splits a secret id of vault, https://<vault>/secrets/<name>[/<version>],
// checking every piece: this vault's origin, no escapes, query, fragment or user info, a
// name and version of Key Vault's grammar. An id is data from the network.
func secretIDParts(vault, id string) (name, version string, ok bool) {
	if strings.ContainsAny(id, "%\\") {
		return "", "", false // Key Vault never escapes a name
	}
	u, err := url.Parse(id)
	if err != nil || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || !sameOrigin(u, vault) {
		return "", "", false
	}
	rest, ok := strings.CutPrefix(u.Path, "/secrets/")
	if !ok {
		return "", "", false
	}
	name, version, _ = strings.Cut(rest, "/")
	if kvname.SecretNameProblem(name) != "" || version != "" && kvname.VersionProblem(version) != "" {
		return "", "", false
	}
	return name, version, true
}

// nextLinkProblem says why a list page's nextLink must not be followed: it must continue
// the vault's own list, https://<vault>/secrets?..., and nothing else.
func nextLinkProblem(vault, next string) string {
	u, err := url.Parse(next)
	switch {
	case err != nil:
		return "a nextLink does not parse"
	case u.User != nil || !sameOrigin(u, vault):
		return "a nextLink leads away from https://" + vault + " (to " + Redacted(u) + ")"
	case strings.TrimSuffix(u.Path, "/") != "/secrets":
		return "a nextLink leads away from the list of secrets (to " + Redacted(u) + ")"
	}
	return ""
}

// sameOrigin reports whether u is https://<vault>, with the default port filled in.
func sameOrigin(u *url.URL, vault string) bool {
	return SameOrigin(u, &url.URL{Scheme: "https", Host: vault})
}

// SameOrigin reports whether u is on a's scheme, host and port, with the scheme's default
// port filled in, so "host" and "host:443" are the same https origin.
func SameOrigin(u, a *url.URL) bool {
	return strings.EqualFold(u.Scheme, a.Scheme) &&
		strings.EqualFold(u.Hostname(), a.Hostname()) &&
		portOf(u) == portOf(a)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

// Redacted renders u without user info, query or fragment: a reason names where a link
// pointed without repeating anything a URL might carry as a credential.
func Redacted(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
