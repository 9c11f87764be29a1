package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/viperkv/viperkv/internal/cloud"
)

// Kind says what went wrong, in the contract's words. The core maps each kind to a status.
type Kind int

// The kinds of failure.
const (
	// KindOther is any failure no other kind describes.
	KindOther Kind = iota
	// KindNotFound: the vault has no secret of that name (404).
	KindNotFound
	// KindVersionNotFound: the secret has no such version (404 for a pinned version).
	KindVersionNotFound
	// KindForbidden: the identity may not do this (403): no role allows it
	// (ForbiddenByRbac), no access policy does (ForbiddenByPolicy), or another 403. Inner
	// tells them apart; the reason names the fix.
	KindForbidden
	// KindDisabled: the secret version is disabled (403 SecretDisabled).
	KindDisabled
	// KindUnauthorized: the vault or Entra ID refused the identity (401).
	KindUnauthorized
	// KindThrottled: the vault kept answering 429.
	KindThrottled
	// KindVaultNotFound: the vault's host name does not resolve.
	KindVaultNotFound
	// KindTimeout: the request did not finish before its context ended.
	KindTimeout
	// KindNoIdentity: no managed identity is available to the process.
	KindNoIdentity
	// KindMalformed: the vault's answer breaks the protocol (an id that names another
	// secret, a list whose nextLinks loop).
	KindMalformed
	// KindForbiddenByFirewall: the vault's firewall refuses the caller's network (403
	// ForbiddenByFirewall), whatever the identity may do.
	KindForbiddenByFirewall
	// KindForbiddenByConnection: the vault's public network access is disabled and the
	// request did not come through its private endpoint (403 ForbiddenByConnection).
	KindForbiddenByConnection
)

var kindNames = [...]string{"Other", "NotFound", "VersionNotFound", "Forbidden", "Disabled", "Unauthorized",
	"Throttled", "VaultNotFound", "Timeout", "NoIdentity", "Malformed", "ForbiddenByFirewall", "ForbiddenByConnection"}

// Key Vault's inner error codes (error.innererror.code) of a 403, which tell its causes
// apart. The shapes are the service's own: for example
//
//	{"error":{"code":"Forbidden","message":"Client address is not authorized and caller is not a
//	trusted service.\r\nClient address: ...\r\nCaller: appid=...;oid=...;iss=...\r\nVault: v;location=...",
//	"innererror":{"code":"ForbiddenByFirewall"}}}
//
// as recorded in microsoft/AzureTRE#3789 (ForbiddenByFirewall), microsoft/multimodal-ai#171
// ("Public network access is disabled and request is not from a trusted service nor via an
// approved private link.", ForbiddenByConnection), piyushsachdeva/Terraform_AKS#2 ("Caller is
// not authorized to perform action on resource. ...", ForbiddenByRbac), and Azure/azure-sdk-for-net's
// CertificateClientTests ("The user, group or application '...' does not have secrets get
// permission on key vault '...'", ForbiddenByPolicy).
const (
	InnerSecretDisabled        = "SecretDisabled"
	InnerForbiddenByRbac       = "ForbiddenByRbac"
	InnerForbiddenByPolicy     = "ForbiddenByPolicy"
	InnerForbiddenByFirewall   = "ForbiddenByFirewall"
	InnerForbiddenByConnection = "ForbiddenByConnection"
)

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is a failure of a Source or a Reader. Its Reason names vaults, secrets and status
// codes, never a value.
type Error struct {
	Kind Kind
	// Reason says what failed, in one line.
	Reason string
	// Transient says the same request may well succeed in a moment (a connection refused
	// or reset, a 5xx, a 429, an identity endpoint not answering yet), as opposed to an
	// answer that will not change soon (403, 404, a vault name that does not resolve).
	Transient bool
	// RetryAfter is how long a throttling vault asked the client to wait.
	RetryAfter time.Duration
	// Code and Inner are Key Vault's error code and inner error code, when it answered
	// with one (for example Forbidden and ForbiddenByRbac).
	Code, Inner string
}

func (e *Error) Error() string { return e.Kind.String() + ": " + e.Reason }

// AsError returns err's *Error, or an *Error of KindOther carrying err's text.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: KindOther, Reason: err.Error()}
}

// TransientStatus reports whether an HTTP status is worth another try: 408, 429 and 5xx.
func TransientStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 && code < 600
}

// HTTPError maps the vault's answer to a request to an *Error. what names the request
// ("GET https://v.vault.azure.net/secrets/s"), pinned says it asked for a version, code and
// inner are the body's error.code and error.innererror.code, retryAfter what a 429 asked.
// An answer whose message matters (a 403's) goes through [Answer] instead.
func HTTPError(what string, status int, code, inner string, pinned bool, retryAfter time.Duration) *Error {
	return Answer{Status: status, Code: code, Inner: inner, RetryAfter: retryAfter}.Classify(what, "", pinned)
}

// Answer is a vault's error answer as the classification reads it. Every field but Status
// and RetryAfter comes from the body, which is untrusted: Classify keeps the codes only when
// they look like codes, never quotes Message, and takes from it only the caller's object
// id and client address, each when it parses as one.
type Answer struct {
	Status int
	// Code and Inner are the body's error.code and error.innererror.code.
	Code, Inner string
	// Message is the body's error.message.
	Message string
	// RetryAfter is what a 429 asked for.
	RetryAfter time.Duration
}

// maxErrorBody bounds how much of an error body is read: Key Vault's are under 2 KB.
const maxErrorBody = 64 << 10

// ParseAnswer reads a vault's error body ({"error":{"code","message","innererror":{"code"}}}).
// A body that is not one leaves the codes and message empty.
func ParseAnswer(status int, body []byte, retryAfter time.Duration) Answer {
	a := Answer{Status: status, RetryAfter: retryAfter}
	if len(body) > maxErrorBody {
		return a
	}
	var e struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return a
	}
	a.Code, a.Inner, a.Message = e.Error.Code, e.Error.InnerError.Code, e.Error.Message
	return a
}

// codeRE is what an error code looks like; anything else in the body's code fields is not
// repeated, so that a hostile answer cannot write into a reason (and from there into logs).
var codeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.]{0,63}$`)

// safeCode returns code if it looks like an error code, else "".
func safeCode(code string) string {
	if codeRE.MatchString(code) {
		return code
	}
	return ""
}

var (
	// oidRE finds the caller's object id in a 403's message ("Caller: appid=...;oid=<guid>;iss=...",
	// "The user, group or application 'appid=...;oid=<guid>;...'").
	oidRE = regexp.MustCompile(`(?:^|[;'\s])oid=([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})(?:$|[;'\s])`)
	// clientAddrRE finds the address a firewall saw ("Client address: 203.0.113.7").
	clientAddrRE = regexp.MustCompile(`Client address: ([0-9A-Fa-f.:]{2,45})`)
)

// maxMessageScan bounds how much of a message the detail lookups read.
const maxMessageScan = 4096

// callerObjectID returns the caller's object id the message names, or "".
func (a Answer) callerObjectID() string {
	m := oidRE.FindStringSubmatch(prefix(a.Message, maxMessageScan))
	if m == nil {
		return ""
	}
	return strings.ToLower(m[1])
}

// clientAddr returns the client address a firewall's message names, when it is an IP, or "".
func (a Answer) clientAddr() string {
	m := clientAddrRE.FindStringSubmatch(prefix(a.Message, maxMessageScan))
	if m == nil {
		return ""
	}
	ip, err := netip.ParseAddr(m[1])
	if err != nil {
		return ""
	}
	return ip.String()
}

func prefix(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Classify maps the answer to a request to an *Error. what names the request ("GET
// https://v.vault.azure.net/secrets/s", or "... (list)" for a list page), vault is the
// vault's host ("" if unknown), pinned says it asked for a version. A 403's reason says
// which rule refused and what to change, in that rule's words.
func (a Answer) Classify(what, vault string, pinned bool) *Error {
	code, inner := safeCode(a.Code), safeCode(a.Inner)
	e := &Error{Kind: KindOther, Reason: fmt.Sprintf("%s: %d", what, a.Status), Transient: TransientStatus(a.Status),
		Code: code, Inner: inner}
	if code != "" {
		e.Reason += " " + code
	}
	if inner != "" {
		e.Reason += " (" + inner + ")"
	}
	switch a.Status {
	case http.StatusNotFound:
		e.Kind = KindNotFound
		if pinned {
			e.Kind = KindVersionNotFound
		}
	case http.StatusForbidden:
		e.Kind = KindForbidden
		e.forbidden(what, vault, a)
	case http.StatusUnauthorized:
		e.Kind = KindUnauthorized
	case http.StatusTooManyRequests:
		e.Kind, e.RetryAfter = KindThrottled, a.RetryAfter
	}
	return e
}

// forbidden fills in the kind and reason of a 403 by its inner code.
func (e *Error) forbidden(what, vault string, a Answer) {
	// A list page needs the List permission (RBAC's readMetadata), a GET the Get permission.
	verb, perm := "read", "Get"
	if strings.HasSuffix(what, "(list)") {
		verb, perm = "list", "List"
	}
	oid := a.callerObjectID()
	switch e.Inner {
	case InnerSecretDisabled:
		e.Kind = KindDisabled
		e.Reason = fmt.Sprintf("%s: %d: the secret version is disabled", what, a.Status)
	case InnerForbiddenByFirewall:
		e.Kind = KindForbiddenByFirewall
		ip := "the app's outbound IP"
		if addr := a.clientAddr(); addr != "" {
			ip += " (the vault saw " + addr + ")"
		}
		e.Reason = fmt.Sprintf("%s: %d: the vault's firewall refuses this caller (ForbiddenByFirewall): allow %s or virtual network "+
			"in the vault's networking settings, or reach it through a private endpoint", what, a.Status, ip)
	case InnerForbiddenByConnection:
		e.Kind = KindForbiddenByConnection
		host, zone := vault, "its privatelink zone"
		if host == "" {
			host = "the vault's host"
		}
		if c, ok := cloud.ByVaultHost(vault); ok {
			zone = c.PrivateLinkZone
		}
		e.Reason = fmt.Sprintf("%s: %d: the vault's public network access is disabled (ForbiddenByConnection): reach the vault "+
			"through its private endpoint; check that %s resolves to a private address (%s)", what, a.Status, host, zone)
	case InnerForbiddenByRbac:
		identity := "the identity"
		if oid != "" {
			identity += " (object id " + oid + ")"
		}
		e.Reason = fmt.Sprintf("%s: %d: no role assignment lets the identity %s secrets: grant %s Key Vault Secrets User "+
			"on the vault or secret (ForbiddenByRbac)", what, a.Status, verb, identity)
	case InnerForbiddenByPolicy:
		detail := "ForbiddenByPolicy"
		if oid != "" {
			detail = "object id " + oid + "; " + detail
		}
		e.Reason = fmt.Sprintf("%s: %d: the vault's access policies do not let the identity %s secrets: add %s to the secret "+
			"permissions of an access policy for this identity (%s)", what, a.Status, strings.ToLower(perm), perm, detail)
	}
}
