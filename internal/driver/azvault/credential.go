package azvault

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"golang.org/x/sync/singleflight"

	"github.com/viperkv/viperkv/internal/driver"
)

// tokenTimeout bounds each token request made on behalf of waiting callers, so a hung
// identity endpoint cannot pin the shared flight forever. It starts with each request, not
// with the flight: under sustained load callers overlap and one flight lives on for good.
const tokenTimeout = 30 * time.Second

// sharedCredential makes concurrent token requests for the same scopes share one call.
// Each vault has its own azsecrets client and so its own bearer-token policy; without this,
// N vaults starting at once would send N requests to the identity endpoint. After the first
// token, the underlying credential's cache (MSAL's, for managed identity) answers.
//
// A shared call outlives the caller that started it while others still wait, and is
// cancelled when the last of them gives up: a hung identity endpoint then neither keeps a
// goroutine running after its callers (and Watch) are gone, nor makes the next caller join
// a call that can no longer succeed.
type sharedCredential struct {
	cred  azcore.TokenCredential
	group singleflight.Group

	mu      sync.Mutex
	flights map[string]*tokenFlight // by key: the context of the shared call and who waits on it
}

type tokenFlight struct {
	ctx     context.Context // cancelled when the last waiter leaves; no deadline of its own
	cancel  context.CancelFunc
	waiters int
}

func (c *sharedCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	key := strings.Join(opts.Scopes, " ") + "|" + opts.TenantID + "|" + opts.Claims + "|" + strconv.FormatBool(opts.EnableCAE)
	c.mu.Lock()
	f := c.flights[key]
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &tokenFlight{ctx: fctx, cancel: cancel}
		if c.flights == nil {
			c.flights = map[string]*tokenFlight{}
		}
		c.flights[key] = f
	}
	f.waiters++
	// A new call (if none is in progress) runs under f's context: the one callers wait on.
	ch := c.group.DoChan(key, func() (any, error) {
		tctx, cancel := context.WithTimeout(f.ctx, tokenTimeout)
		defer cancel()
		tok, err := c.cred.GetToken(tctx, opts)
		if err != nil {
			_, managed := c.cred.(*azidentity.ManagedIdentityCredential)
			// azidentity's errors do not wrap the context's: tell a request cut short by
			// tokenTimeout from here.
			timedOut := errors.Is(tctx.Err(), context.DeadlineExceeded) && f.ctx.Err() == nil
			return azcore.AccessToken{}, &credentialError{err: err, managed: managed, timedOut: timedOut}
		}
		return tok, nil
	})
	c.mu.Unlock()
	defer c.leave(key, f)
	select {
	case r := <-ch:
		return r.Val.(azcore.AccessToken), r.Err
	case <-ctx.Done():
		return azcore.AccessToken{}, ctx.Err()
	}
}

// leave ends a caller's wait on f; the last one to leave cancels the call and makes the
// next caller start a new one.
func (c *sharedCredential) leave(key string, f *tokenFlight) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.waiters--; f.waiters > 0 {
		return
	}
	f.cancel()
	if c.flights[key] == f {
		delete(c.flights, key)
		c.group.Forget(key)
	}
}

// credentialError marks a failure to obtain a token, as opposed to a failure at the vault.
// managed says the credential is a managed identity, whose failures App Service's status
// names describe (MSINotEnabled); other credentials (az login, workload identity) are named
// by their own errors. timedOut says the token request outlived tokenTimeout.
type credentialError struct {
	err      error
	managed  bool
	timedOut bool
}

func (e *credentialError) Error() string {
	if e.managed {
		return "managed identity: " + e.err.Error()
	}
	return "credential: " + e.err.Error()
}
func (e *credentialError) Unwrap() error { return e.err }

// NonRetriable tells azcore's retry policy not to retry: the credential already retried.
func (e *credentialError) NonRetriable() {}

// classifyCredentialError maps a token failure to a kind, a short reason, and whether it is
// transient (see driver.Error): the identity endpoint or Entra ID not answering, or answering
// 408, 429 or 5xx, as while an App Service or AKS node starts, is; a refusal or an unknown
// identity is not.
//
// azidentity's errors do not wrap the transport's, so for a managed identity "no response"
// (an *azidentity.AuthenticationFailedError without RawResponse: connection refused or reset,
// a timeout) is the structural sign of an endpoint not answering yet; the other managed
// identity failures without a response (the endpoint saying the system-assigned identity is
// off) are not *AuthenticationFailedError. For other credentials no response says nothing
// certain (az login's failures have none either), so only a network error the credential
// kept in its chain counts.
func classifyCredentialError(err *credentialError) (driver.Kind, string, bool) {
	var afe *azidentity.AuthenticationFailedError
	isAFE := errors.As(err.err, &afe)
	if !err.managed {
		switch {
		case err.timedOut || errors.Is(err.err, context.DeadlineExceeded):
			return driver.KindTimeout, "the credential did not get a token in time", true
		case isAFE && afe.RawResponse != nil && driver.TransientStatus(afe.RawResponse.StatusCode):
			return driver.KindOther, "Entra ID answered " + strconv.Itoa(afe.RawResponse.StatusCode) + ": " + firstLine(err.err.Error()), true
		case isAFE && afe.RawResponse != nil:
			return driver.KindUnauthorized, "Entra ID refused the credential (" + strconv.Itoa(afe.RawResponse.StatusCode) + "): " + firstLine(err.err.Error()), false
		}
		return driver.KindOther, "the credential could not get a token: " + firstLine(err.err.Error()), transientError(err.err)
	}
	if isAFE && afe.RawResponse != nil {
		code := afe.RawResponse.StatusCode
		switch {
		case code == http.StatusBadRequest, code == http.StatusNotFound:
			// The endpoint exists but knows no such identity: it is not assigned to this resource.
			return driver.KindNoIdentity, "identity endpoint answered " + strconv.Itoa(code) + ": the managed identity is not enabled or not assigned", false
		case code == http.StatusUnauthorized, code == http.StatusForbidden:
			return driver.KindUnauthorized, "identity endpoint answered " + strconv.Itoa(code) + ": the client is not authorized to get tokens", false
		}
		return driver.KindOther, "identity endpoint answered " + strconv.Itoa(code), driver.TransientStatus(code)
	}
	if err.timedOut || errors.Is(err.err, context.DeadlineExceeded) {
		return driver.KindTimeout, "identity endpoint did not answer in time", true
	}
	if isAFE {
		// No response at all: the endpoint refused or dropped the connection, or timed out.
		return driver.KindNoIdentity, "no managed identity endpoint is available: " + firstLine(err.err.Error()), true
	}
	// The credential gave up without asking (for example the endpoint said the system-assigned
	// identity is off).
	return driver.KindNoIdentity, "no managed identity is available: " + firstLine(err.err.Error()), false
}

// firstLine keeps error details to one line: azcore's errors span many lines of response dump.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
