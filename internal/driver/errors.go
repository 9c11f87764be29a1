package driver

import (
	"errors"
	"fmt"
	"net/http"
	"time"
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
	// KindForbidden: the identity may not do this (403).
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
)

var kindNames = [...]string{"Other", "NotFound", "VersionNotFound", "Forbidden", "Disabled", "Unauthorized",
	"Throttled", "VaultNotFound", "Timeout", "NoIdentity", "Malformed"}

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
func HTTPError(what string, status int, code, inner string, pinned bool, retryAfter time.Duration) *Error {
	e := &Error{Kind: KindOther, Reason: fmt.Sprintf("%s: %d %s", what, status, code), Transient: TransientStatus(status),
		Code: code, Inner: inner}
	if inner != "" {
		e.Reason += " (" + inner + ")"
	}
	switch status {
	case http.StatusNotFound:
		e.Kind = KindNotFound
		if pinned {
			e.Kind = KindVersionNotFound
		}
	case http.StatusForbidden:
		e.Kind = KindForbidden
		if inner == "SecretDisabled" {
			e.Kind = KindDisabled
			e.Reason = fmt.Sprintf("%s: %d: the secret version is disabled", what, status)
		}
	case http.StatusUnauthorized:
		e.Kind = KindUnauthorized
	case http.StatusTooManyRequests:
		e.Kind, e.RetryAfter = KindThrottled, retryAfter
	}
	return e
}
