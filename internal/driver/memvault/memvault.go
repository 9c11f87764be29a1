// Package memvault is an in-memory Key Vault behind the driver contract: the source the
// core's logic tests run against under testing/synctest, where the network cannot go.
//
// It answers as the Azure source does after the SDK's own retries: ids as URLs, 25 items a
// page with nextLinks, 403 SecretDisabled for a disabled version, 404 for a missing secret,
// the vault's one-second timestamps and Date. Failures are injected as the vault's HTTP
// answers (mapped to kinds by the same function the Azure source uses) or as the kinds of
// failure that have no HTTP answer (an identity endpoint, a network). The conformance suite
// (drivertest) runs against it and the Azure source alike. It waits only on channels and
// timers, so its latency and hangs take simulated time inside a synctest bubble.
package memvault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/driver"
)

// Vaults is an in-memory Key Vault service: vaults by host, created on first use. Its
// methods are safe for concurrent use.
type Vaults struct {
	shortPages bool

	mu     sync.Mutex
	vaults map[string]*vault
	made   int // versions made, for unique version ids
	behind time.Duration
	calls  []Call
	busy   int
	closed bool
}

type vault struct {
	secrets   map[string]*secret // by lowercase name
	deleted   map[string]*secret
	extra     int // unnamed secrets that make the vault bigger
	pages     int // list pages served
	listFault *active
	getFault  *active // every secret's GETs
}

type secret struct {
	name     string
	versions []*version // oldest first
	fault    *active
}

type version struct {
	id          string
	value       string
	contentType string
	tags        map[string]string
	enabled     bool
	created     time.Time
	updated     time.Time
	expires     *time.Time
	notBefore   *time.Time
}

// Call records one Get: what it asked for, when it started and ended.
type Call struct {
	Vault, Name, Version string // the name in lower case
	Start, End           time.Time
}

// Option configures New.
type Option func(*Vaults)

// ShortPages makes lists page as a real vault sometimes does: even-numbered pages are
// empty and odd ones hold at most half a page; the last page is an empty one.
func ShortPages() Option { return func(m *Vaults) { m.shortPages = true } }

// New returns an empty service.
func New(opts ...Option) *Vaults {
	m := &Vaults{vaults: map[string]*vault{}}
	for _, o := range opts {
		o(m)
	}
	return m
}

// vault returns the vault of host, creating it. The caller holds m.mu.
func (m *Vaults) vault(host string) *vault {
	v := m.vaults[host]
	if v == nil {
		v = &vault{secrets: map[string]*secret{}, deleted: map[string]*secret{}}
		m.vaults[host] = v
	}
	return v
}

// now is the vault's clock, to the second as Key Vault's timestamps and Date headers are.
// The caller holds m.mu.
func (m *Vaults) now() time.Time { return time.Now().Add(-m.behind).Truncate(time.Second) }

// SetClockBehind makes the vault's clock run d behind this machine's (ahead when
// negative): it stamps versions and answers.
func (m *Vaults) SetClockBehind(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.behind = d
}

// SecretOption sets an attribute of a new version.
type SecretOption func(*version)

// Expires sets the version's expiry.
func Expires(t time.Time) SecretOption { return func(v *version) { v.expires = &t } }

// NotBefore sets the version's not-before time.
func NotBefore(t time.Time) SecretOption { return func(v *version) { v.notBefore = &t } }

// Enabled sets whether the version is enabled (default true).
func Enabled(on bool) SecretOption { return func(v *version) { v.enabled = on } }

// Tags sets the version's tags.
func Tags(tags map[string]string) SecretOption {
	return func(v *version) { v.tags = maps.Clone(tags) }
}

// ContentType sets the version's content type.
func ContentType(ct string) SecretOption { return func(v *version) { v.contentType = ct } }

// Set makes value the latest version of the secret (of the vault host) and returns the
// new version's id.
func (m *Vaults) Set(host, name, value string, opts ...SecretOption) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.made++
	now := m.now()
	ver := &version{id: fmt.Sprintf("%032x", m.made), value: value, enabled: true, created: now, updated: now}
	for _, o := range opts {
		o(ver)
	}
	v := m.vault(host)
	key := strings.ToLower(name)
	s := v.secrets[key]
	if s == nil {
		s = &secret{name: name}
		v.secrets[key] = s
	}
	s.versions = append(s.versions, ver)
	return ver.id
}

// SetEnabled enables or disables a version ("" for the latest), as Key Vault's PATCH does:
// its updated time moves.
func (m *Vaults) SetEnabled(host, name, versionID string, enabled bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.vault(host).secrets[strings.ToLower(name)]
	if s == nil {
		return fmt.Errorf("memvault: no secret %s in %s", name, host)
	}
	for i, ver := range s.versions {
		if versionID == ver.id || versionID == "" && i == len(s.versions)-1 {
			ver.enabled, ver.updated = enabled, m.now()
			return nil
		}
	}
	return fmt.Errorf("memvault: secret %s has no version %s", name, versionID)
}

// Delete deletes the secret: GETs answer 404 and lists leave it out until Recover.
func (m *Vaults) Delete(host, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vault(host)
	key := strings.ToLower(name)
	if s := v.secrets[key]; s != nil {
		v.deleted[key] = s
		delete(v.secrets, key)
	}
}

// Recover brings a deleted secret back with its versions.
func (m *Vaults) Recover(host, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vault(host)
	key := strings.ToLower(name)
	if s := v.deleted[key]; s != nil {
		v.secrets[key] = s
		delete(v.deleted, key)
	}
}

// Grow adds n secrets that nothing references to the vault, for its size as listed.
func (m *Vaults) Grow(host string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vault(host).extra += n
}

// Fault is a failure to inject.
type Fault struct {
	// Status, Code and Inner are the vault's HTTP answer (403 with inner ForbiddenByRbac,
	// 503, 429, ...), mapped to a kind as the Azure source maps it.
	Status      int
	Code, Inner string
	// Message is the answer's error.message, read as the Azure source reads it (for a
	// 403, the caller's object id and the firewall's client address). [Denied] fills it.
	Message string
	// RetryAfter is what a 429 asks for; 0: no Retry-After, which the client reads as 1 s.
	RetryAfter time.Duration
	// Err is a failure without an HTTP answer (an identity endpoint refusing, a reset
	// connection), returned as it is.
	Err *driver.Error
	// Hang holds the request until its context ends.
	Hang bool
	// Latency delays the answer (or the failure).
	Latency time.Duration
	// Body answers with this JSON as the vault would send it: a secret bundle for a GET,
	// a page ({"value": [...], "nextLink": ...}) for a list. It forges data.
	Body string
	// Times is how many requests the fault affects; 0: until cleared.
	Times int
	// Until, when set, ends the fault for requests starting at or after it.
	Until time.Time
}

// Denied is the fault of a vault refusing the caller for the reason inner names
// (driver.InnerForbiddenByRbac, InnerForbiddenByPolicy, InnerForbiddenByFirewall or
// InnerForbiddenByConnection): 403 Forbidden with Key Vault's message for it, which names
// the caller by its object id oid (and, from the firewall, its address as 203.0.113.7).
func Denied(inner, oid string) Fault {
	const iss = "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
	caller := "appid=" + "00000000-0000-0000-0000-000000000000" + ";oid=" + oid + ";iss=" + iss
	var msg string
	switch inner {
	case driver.InnerForbiddenByFirewall:
		msg = "Client address is not authorized and caller is not a trusted service.\r\nClient address: 203.0.113.7\r\n" +
			"Caller: " + caller + "\r\nVault: memvault;location=memory"
	case driver.InnerForbiddenByConnection:
		msg = "Public network access is disabled and request is not from a trusted service nor via an approved private link.\r\n" +
			"Caller: " + caller + "\r\nVault: memvault;location=memory"
	case driver.InnerForbiddenByPolicy:
		msg = "The user, group or application '" + caller + "' does not have secrets get permission on key vault " +
			"'memvault;location=memory'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
	default:
		msg = "Caller is not authorized to perform action on resource.\r\nCaller: " + caller +
			"\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nAssignment: (not found)\r\nVault: memvault;location=memory"
	}
	return Fault{Status: 403, Code: "Forbidden", Inner: inner, Message: msg}
}

type active struct {
	f    Fault
	left int
}

// take applies the fault *a, consuming one use (and clearing *a after its last): it
// reports whether the fault holds for a request starting at t.
func take(a **active, t time.Time) (Fault, bool) {
	f := *a
	if f == nil || (!f.f.Until.IsZero() && !t.Before(f.f.Until)) {
		return Fault{}, false
	}
	if f.left > 0 {
		if f.left--; f.left == 0 {
			*a = nil
		}
	}
	return f.f, true
}

func newActive(f Fault) *active { return &active{f: f, left: max(f.Times, 0)} }

// FailGet makes GETs of the secret fail with f; name "" makes every GET of the vault fail.
func (m *Vaults) FailGet(host, name string, f Fault) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vault(host)
	if name == "" {
		v.getFault = newActive(f)
		return
	}
	key := strings.ToLower(name)
	s := v.secrets[key]
	if s == nil {
		s = &secret{name: name}
		v.secrets[key] = s
	}
	s.fault = newActive(f)
}

// FailList makes the vault's list pages fail with f (or, with f.Body, answer forged pages).
func (m *Vaults) FailList(host string, f Fault) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vault(host).listFault = newActive(f)
}

// Clear ends the faults of the secret (name "" : of every GET of the vault and its list).
func (m *Vaults) Clear(host, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vault(host)
	if name == "" {
		v.getFault, v.listFault = nil, nil
		return
	}
	if s := v.secrets[strings.ToLower(name)]; s != nil {
		s.fault = nil
	}
}

// Calls returns every Get in the order they ended.
func (m *Vaults) Calls() []Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// Pages returns the list pages the vault served (or failed).
func (m *Vaults) Pages(host string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vault(host).pages
}

// InFlight returns the Gets in progress.
func (m *Vaults) InFlight() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busy
}

// Close makes later calls fail.
func (m *Vaults) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// fail applies a fault to a request (what) to the vault host: its latency or hang, then
// its failure (nil for a forged body).
func fail(ctx context.Context, what, host string, pinned bool, f Fault) *driver.Error {
	if f.Hang {
		<-ctx.Done()
		return timedOut(ctx, what)
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return timedOut(ctx, what)
		}
	}
	switch {
	case f.Err != nil:
		e := *f.Err
		return &e
	case f.Status != 0:
		after := f.RetryAfter
		if after <= 0 {
			after = time.Second // what the Azure source reads a 429 without Retry-After as
		}
		a := driver.Answer{Status: f.Status, Code: orDefault(f.Code, f.Status), Inner: f.Inner, Message: f.Message, RetryAfter: after}
		return a.Classify(what, host, pinned)
	}
	return nil
}

// orDefault is Key Vault's error code for status when none is given.
func orDefault(code string, status int) string {
	if code != "" {
		return code
	}
	switch status {
	case 400:
		return "BadParameter"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "SecretNotFound"
	case 429:
		return "Throttled"
	}
	return "Status" + strconv.Itoa(status)
}

// timedOut is what the Azure source reports for a request whose context ended.
func timedOut(ctx context.Context, what string) *driver.Error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &driver.Error{Kind: driver.KindTimeout, Reason: what + ": canceled"}
	}
	return &driver.Error{Kind: driver.KindTimeout, Reason: what + ": timed out", Transient: true}
}

// Get answers a GET of a secret version.
func (m *Vaults) Get(ctx context.Context, host, name, versionID string) (b driver.Bundle, err error) {
	what := "GET " + driver.SecretURL(host, name, versionID)
	call := Call{Vault: host, Name: strings.ToLower(name), Version: versionID, Start: time.Now()}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return b, &driver.Error{Kind: driver.KindOther, Reason: what + ": " + driver.ErrClosed.Error()}
	}
	m.busy++
	v := m.vault(host)
	s := v.secrets[call.Name]
	f, faulty := take(&v.getFault, call.Start)
	if s != nil && !faulty {
		f, faulty = take(&s.fault, call.Start)
	}
	m.mu.Unlock()
	defer func() {
		call.End = time.Now()
		m.mu.Lock()
		m.busy--
		m.calls = append(m.calls, call)
		m.mu.Unlock()
	}()
	if ctx.Err() != nil {
		return b, timedOut(ctx, what)
	}
	if faulty {
		if f.Body != "" {
			return forgedBundle(f.Body)
		}
		if e := fail(ctx, what, host, versionID != "", f); e != nil {
			return b, e
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s = m.vault(host).secrets[call.Name]
	var ver *version
	if s != nil && len(s.versions) > 0 {
		ver = s.versions[len(s.versions)-1]
		if versionID != "" {
			ver = nil
			for _, x := range s.versions {
				if strings.EqualFold(x.id, versionID) {
					ver = x
				}
			}
		}
	}
	switch {
	case ver == nil:
		return b, driver.HTTPError(what, 404, "SecretNotFound", "", versionID != "", 0)
	case !ver.enabled:
		return b, driver.HTTPError(what, 403, "Forbidden", driver.InnerSecretDisabled, versionID != "", 0)
	}
	date := m.now()
	value := ver.value
	return driver.Bundle{ID: driver.SecretURL(host, s.name, ver.id), Value: &value, ContentType: ver.contentType,
		Tags: maps.Clone(ver.tags), Attributes: ver.attributes(), Date: &date}, nil
}

func (v *version) attributes() driver.Attributes {
	enabled, created, updated := v.enabled, v.created, v.updated
	return driver.Attributes{Enabled: &enabled, Created: &created, Updated: &updated, Expires: v.expires, NotBefore: v.notBefore}
}

// List starts a list of the vault's secrets.
func (m *Vaults) List(host string) driver.Pager { return &pager{m: m, host: host, first: true} }

type pager struct {
	m     *Vaults
	host  string
	first bool
	next  string // the link the last page named; "" before the first page
	num   int    // pages read
}

const pageSize = 25

// NextPage answers the page the pager is at, as the vault does for the link.
func (p *pager) NextPage(ctx context.Context) (driver.Page, error) {
	what := "GET https://" + p.host + "/secrets (list)"
	m := p.m
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return driver.Page{}, &driver.Error{Kind: driver.KindOther, Reason: what + ": " + driver.ErrClosed.Error()}
	}
	v := m.vault(p.host)
	v.pages++
	f, faulty := take(&v.listFault, time.Now())
	m.mu.Unlock()
	if faulty {
		if f.Body != "" {
			return forged(f.Body)
		}
		if e := fail(ctx, what, p.host, false, f); e != nil {
			return driver.Page{}, e
		}
	}
	if !p.first && p.next == "" {
		return driver.Page{}, &driver.Error{Kind: driver.KindOther, Reason: what + ": no more pages"}
	}
	start := 0
	if !p.first {
		u, err := url.Parse(p.next)
		if err != nil {
			return driver.Page{}, &driver.Error{Kind: driver.KindOther, Reason: what + ": the $skiptoken is invalid"}
		}
		// The token carries the page number too: with short pages an empty page names the
		// same start as the page before it, and a link that repeats is a loop.
		at, _, _ := strings.Cut(u.Query().Get("$skiptoken"), ".")
		start, err = strconv.Atoi(at)
		if err != nil || start < 0 {
			return driver.Page{}, driver.HTTPError(what, 400, "BadParameter", "", false, 0)
		}
	}
	m.mu.Lock()
	items := v.items(p.host)
	m.mu.Unlock()
	start = min(start, len(items))
	end := min(start+pageSize, len(items))
	more := end < len(items)
	if m.shortPages {
		if p.num%2 == 0 {
			end, more = start, start < len(items)
		} else {
			end, more = min(start+pageSize/2, len(items)), true // an empty page ends the list
		}
	}
	p.first, p.num = false, p.num+1
	page := driver.Page{Items: items[start:end]}
	p.next = ""
	if more {
		p.next = "https://" + p.host + ":443/secrets?api-version=2026-04-01&$skiptoken=" + strconv.Itoa(end) + "." + strconv.Itoa(p.num) + "&maxresults=25"
		page.NextLink = p.next
	}
	return page, nil
}

// items lists the vault's secrets with their latest version's attributes, by name, then
// the unnamed extra ones. The caller holds m.mu.
func (v *vault) items(host string) []driver.Item {
	var out []driver.Item
	for _, key := range slices.Sorted(maps.Keys(v.secrets)) {
		s := v.secrets[key]
		if len(s.versions) == 0 {
			continue
		}
		cur := s.versions[len(s.versions)-1]
		out = append(out, driver.Item{ID: "https://" + host + "/secrets/" + s.name, Attributes: cur.attributes(),
			Tags: maps.Clone(cur.tags), ContentType: cur.contentType})
	}
	for i := range v.extra {
		enabled := true
		out = append(out, driver.Item{ID: fmt.Sprintf("https://%s/secrets/zz-extra-%d", host, i), Attributes: driver.Attributes{Enabled: &enabled}})
	}
	return out
}

// wireAttributes and wireItem are Key Vault's JSON of attributes and of a list item.
type wireAttributes struct {
	Enabled   *bool  `json:"enabled"`
	Created   *int64 `json:"created"`
	Updated   *int64 `json:"updated"`
	Expires   *int64 `json:"exp"`
	NotBefore *int64 `json:"nbf"`
}

func (a wireAttributes) attributes() driver.Attributes {
	return driver.Attributes{Enabled: a.Enabled, Created: unix(a.Created), Updated: unix(a.Updated),
		Expires: unix(a.Expires), NotBefore: unix(a.NotBefore)}
}

type wireItem struct {
	ID          *string           `json:"id"`
	Value       *string           `json:"value"`
	Attributes  wireAttributes    `json:"attributes"`
	Tags        map[string]string `json:"tags"`
	ContentType string            `json:"contentType"`
}

// forgedBundle decodes a GET's answer as the vault would send it.
func forgedBundle(body string) (driver.Bundle, error) {
	var it wireItem
	if err := json.Unmarshal([]byte(body), &it); err != nil {
		return driver.Bundle{}, &driver.Error{Kind: driver.KindOther, Reason: "GET: the answer is not JSON"}
	}
	b := driver.Bundle{Value: it.Value, Tags: it.Tags, ContentType: it.ContentType, Attributes: it.Attributes.attributes()}
	if it.ID != nil {
		b.ID = *it.ID
	}
	return b, nil
}

// forged decodes a page as the vault would send it.
func forged(body string) (driver.Page, error) {
	var raw struct {
		Value    []wireItem `json:"value"`
		NextLink *string    `json:"nextLink"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		return driver.Page{}, &driver.Error{Kind: driver.KindOther, Reason: "GET (list): the answer is not JSON"}
	}
	var page driver.Page
	for _, it := range raw.Value {
		item := driver.Item{Tags: it.Tags, ContentType: it.ContentType, Attributes: it.Attributes.attributes()}
		if it.ID != nil {
			item.ID = *it.ID
		}
		page.Items = append(page.Items, item)
	}
	if raw.NextLink != nil {
		page.NextLink = *raw.NextLink
	}
	return page, nil
}

func unix(s *int64) *time.Time {
	if s == nil {
		return nil
	}
	t := time.Unix(*s, 0)
	return &t
}
