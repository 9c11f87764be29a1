package azvault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
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
	// label names the credential in the failures it causes (see blame): its kind and, for a
	// managed identity, its ID, never a secret. Empty when every vault shares one
	// credential, as there is then nothing to tell apart.
	label string

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

// VaultCredential is the credential of one vault (Config.Vaults): Credential, or when it is
// nil the managed identity Identity names (system-assigned when nil), made as the default
// one is, through the source's transport.
type VaultCredential struct {
	Credential azcore.TokenCredential
	Identity   azidentity.ManagedIDKind
}

// newManagedIdentity returns the managed identity credential id names (system-assigned
// when nil), reaching the identity endpoint through tr. Every managed identity of a
// source, the default and each vault's, is made here so they all ride out a starting
// endpoint alike.
func newManagedIdentity(tr policy.Transporter, id azidentity.ManagedIDKind) (*azidentity.ManagedIdentityCredential, error) {
	return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		// Short retries: a starting identity endpoint is ridden out by Load's own
		// retries up to its deadline, not by one token request waiting ~9 s.
		ClientOptions: azcore.ClientOptions{Transport: tr,
			Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: time.Second}},
		ID: id,
	})
}

// vaultCredentials wraps each vault's own credential as the default one is wrapped, so each
// gets its own shared token requests and the "one token request per identity and scope"
// rule holds per credential. Vaults given the same credential (the same value, or the same
// managed identity) share one wrapper, and so one token request, as vaults on the default
// credential do; a vault given the default's own credential or identity shares the default's.
func (s *Source) vaultCredentials(cfg Config) (map[string]*sharedCredential, error) {
	type made struct {
		cred   azcore.TokenCredential // as given; nil for a managed identity made here
		id     string                 // identityKey, for a managed identity made here
		shared *sharedCredential
	}
	var all []made
	if cfg.Credential == nil {
		all = append(all, made{id: identityKey(cfg.Identity), shared: s.cred})
	} else {
		all = append(all, made{cred: cfg.Credential, shared: s.cred})
	}
	out := make(map[string]*sharedCredential, len(cfg.Vaults))
	for _, host := range slices.Sorted(maps.Keys(cfg.Vaults)) {
		vc := cfg.Vaults[host]
		key := identityKey(vc.Identity)
		i := slices.IndexFunc(all, func(m made) bool {
			if vc.Credential == nil {
				return m.cred == nil && m.id == key
			}
			return sameCredential(m.cred, vc.Credential)
		})
		if i >= 0 {
			out[host] = all[i].shared
			continue
		}
		cred := vc.Credential
		if cred == nil {
			mi, err := newManagedIdentity(s.transport, vc.Identity)
			if err != nil {
				return nil, fmt.Errorf("vault %s: %w", host, err)
			}
			cred = mi
		}
		sc := &sharedCredential{cred: cred, label: "this vault's own (" + credentialKind(vc.Credential, vc.Identity) + ")"}
		all = append(all, made{cred: vc.Credential, id: key, shared: sc})
		out[host] = sc
	}
	return out, nil
}

// sameCredential reports whether a and b are the same credential. A credential whose
// dynamic type cannot be compared (a struct holding a map, say) is never the same as
// another: comparing it would panic.
func sameCredential(a, b azcore.TokenCredential) bool {
	if a == nil || b == nil {
		return false
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta.Comparable() && a == b
}

// identityKey names a managed identity selector: its kind and ID ("" for system-assigned).
func identityKey(id azidentity.ManagedIDKind) string {
	if id == nil {
		return ""
	}
	return fmt.Sprintf("%T=%s", id, strings.ToLower(id.String()))
}

// credentialKind describes a credential for people: the managed identity and its ID (IDs
// are not secrets, and say which identity a role is missing for), or the credential's Go
// type (*azidentity.AzureCLICredential), never anything it holds.
func credentialKind(cred azcore.TokenCredential, id azidentity.ManagedIDKind) string {
	if cred != nil {
		return fmt.Sprintf("%T", cred)
	}
	switch id := id.(type) {
	case nil:
		return "system-assigned managed identity"
	case azidentity.ClientID:
		return "managed identity, client ID " + string(id)
	case azidentity.ObjectID:
		return "managed identity, object ID " + string(id)
	case azidentity.ResourceID:
		return "managed identity " + string(id)
	}
	return "managed identity " + id.String()
}

// blame adds to e (what err was classified as) which credential served the vault, when
// the failure is the credential's doing (no token, or the vault refusing the identity
// with 401 or 403) and vaults have different credentials: "which identity was that?" is
// then the first question. c may be nil.
func (c *sharedCredential) blame(err error, e *driver.Error) *driver.Error {
	if c == nil || c.label == "" || e == nil {
		return e
	}
	var ce *credentialError
	if errors.As(err, &ce) || e.Kind == driver.KindForbidden || e.Kind == driver.KindUnauthorized {
		e.Reason += "; credential: " + c.label
	}
	return e
}
