package azvault

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/viperkv/viperkv/internal/driver"
)

// Key Vault and the managed identity endpoints never answer with a redirect, but Go's
// http.Client follows redirects by default: it copies custom headers (X-IDENTITY-HEADER,
// Metadata) to any host, and Authorization to the same host name even when the scheme drops
// to http. A redirect is therefore a hostile or broken hop, and nothing that carries a token
// or an identity header may follow one.

// noRedirects returns a transport that does not follow redirects, for the vault clients and
// the managed identity credential; the 3xx comes back as the response (vaultGuard refuses it).
//   - nil: a client configured like azcore's default transport, whose client cannot be reused
//     because azcore does not export it.
//   - *http.Client: a shallow copy, so the caller's client keeps its own redirect policy while
//     the connection pool stays shared.
//   - any other Transporter may follow redirects on its own, which cannot be stopped from
//     outside; its responses are refused when the request that produced them went to another
//     scheme or host than the one sent, so a redirected answer is at least never used.
func noRedirects(t policy.Transporter) policy.Transporter {
	switch c := t.(type) {
	case nil:
		return &http.Client{Transport: defaultTransport(), CheckRedirect: useLastResponse}
	case *http.Client:
		if c == nil {
			return &http.Client{Transport: defaultTransport(), CheckRedirect: useLastResponse}
		}
		cp := *c
		cp.CheckRedirect = useLastResponse
		return &cp
	default:
		return sameOriginTransport{next: t}
	}
}

// useLastResponse is a CheckRedirect that hands the 3xx back instead of following it.
func useLastResponse(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// defaultTransport mirrors azcore's default transport (sdk/internal/transport, not importable):
// proxy from the environment, its dial, pool and handshake timeouts, TLS 1.2 at least, and
// HTTP/2 health-check pings, so leaving WithTransport out behaves as azcore would.
func defaultTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   10,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig: &tls.Config{
			MinVersion:    tls.VersionTLS12,
			Renegotiation: tls.RenegotiateFreelyAsClient,
		},
		HTTP2: &http.HTTP2Config{SendPingTimeout: 10 * time.Second, PingTimeout: 5 * time.Second},
	}
}

// sameOriginTransport refuses a response produced by a request to another scheme or host than
// the one sent: the wrapped transport followed a redirect.
type sameOriginTransport struct{ next policy.Transporter }

func (s sameOriginTransport) Do(req *http.Request) (*http.Response, error) {
	resp, err := s.next.Do(req)
	if err != nil || resp == nil || resp.Request == nil || resp.Request.URL == nil {
		return resp, err
	}
	if !driver.SameOrigin(resp.Request.URL, req.URL) {
		runtime.Drain(resp)
		return nil, &refusedError{msg: "refused the response from " + driver.Redacted(resp.Request.URL) +
			": the transport followed a redirect away from " + origin(req.URL) +
			" (Key Vault and the identity endpoints never redirect)"}
	}
	return resp, nil
}

// vaultGuard returns a per-retry policy for the client of vault host (as parsed from the
// reference, "name.vault.azure.net" or an allowed "host[:port]"). It runs below the bearer
// token policy, so it sees each request with its token: one bound anywhere but https://host is
// not sent, and a 3xx, or a response a transport fetched from elsewhere, is refused.
func vaultGuard(host string) policy.Policy {
	return vaultGuardPolicy{host: host, want: &url.URL{Scheme: "https", Host: host}}
}

type vaultGuardPolicy struct {
	host string
	want *url.URL
}

func (g vaultGuardPolicy) Do(req *policy.Request) (*http.Response, error) {
	if u := req.Raw().URL; !driver.SameOrigin(u, g.want) {
		return nil, &refusedError{msg: "refused to send a request for vault " + g.host + " to " +
			driver.Redacted(u) + ": only " + origin(g.want) + " may receive its token"}
	}
	resp, err := req.Next()
	if err != nil {
		return resp, err
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		to := "no location"
		if loc, lerr := resp.Location(); lerr == nil {
			to = driver.Redacted(loc)
		}
		e := &refusedError{msg: fmt.Sprintf("refused a redirect (%d %s) to %s: Key Vault never redirects",
			resp.StatusCode, http.StatusText(resp.StatusCode), to)}
		runtime.Drain(resp)
		return nil, e
	}
	if r := resp.Request; r != nil && r.URL != nil && !driver.SameOrigin(r.URL, g.want) {
		runtime.Drain(resp)
		return nil, &refusedError{msg: "refused the response from " + driver.Redacted(r.URL) +
			": the transport followed a redirect away from " + origin(g.want) + " (Key Vault never redirects)"}
	}
	return resp, nil
}

// refusedError is a request or response the redirect rules refused. It is non-retriable
// (azcore's retry policy looks for the NonRetriable method): the answer would not change, and
// a retry would hand the token to the same hop again.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// NonRetriable marks the error as final for azcore's retry policy.
func (*refusedError) NonRetriable() {}

func origin(u *url.URL) string { return u.Scheme + "://" + u.Host }
