package azvault

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// The default transport cannot reach the emulator's TLS (it trusts only the system roots),
// so noRedirects(nil) is tested here on loopback http, with the headers a redirect would leak.
func TestRedirectNotFollowedByTransports(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer target.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer origin.Close()

	caller := &http.Client{}
	for name, tr := range map[string]policy.Transporter{
		"default":           noRedirects(nil),
		"typed nil client":  noRedirects((*http.Client)(nil)),
		"caller's client":   noRedirects(caller),
		"other Transporter": noRedirects(clientTransporter{&http.Client{}}),
	} {
		t.Run(name, func(t *testing.T) {
			if c, isClient := tr.(*http.Client); tr == nil || isClient && c == nil {
				t.Fatal("noRedirects returned nil")
			}
			hits.Store(0)
			req, err := http.NewRequest(http.MethodGet, origin.URL+"/token", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-IDENTITY-HEADER", "identity-secret")
			req.Header.Set("Metadata", "true")
			resp, err := tr.Do(req)
			if resp != nil {
				_ = resp.Body.Close()
			}
			if name == "other Transporter" {
				// It followed the redirect, which cannot be stopped from outside: its answer
				// must be refused.
				if err == nil || !strings.Contains(err.Error(), "redirect") {
					t.Errorf("err = %v, want the followed redirect refused", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusTemporaryRedirect {
				t.Errorf("status %d, want the 307 itself", resp.StatusCode)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("redirect target received %d request(s)", n)
			}
		})
	}
	if caller.CheckRedirect != nil {
		t.Error("the caller's *http.Client was modified")
	}
}

type clientTransporter struct{ c *http.Client }

func (c clientTransporter) Do(req *http.Request) (*http.Response, error) { return c.c.Do(req) }

// fakeTransport answers every request with respond and counts what it was asked to send.
type fakeTransport struct {
	sent    atomic.Int64
	respond func(*http.Request) *http.Response
}

func (f *fakeTransport) Do(req *http.Request) (*http.Response, error) {
	f.sent.Add(1)
	return f.respond(req), nil
}

func answer(status int, req *http.Request, hdr http.Header) *http.Response {
	if hdr == nil {
		hdr = http.Header{}
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: hdr,
		Body: io.NopCloser(strings.NewReader("{}")), Request: req}
}

// vaultGuard is what protects a vault client whose transport viperkv does not control.
func TestRedirectGuardOfVaultClient(t *testing.T) {
	const host = "v.vault.azure.net"
	pipeline := func(ft *fakeTransport) runtime.Pipeline {
		return runtime.NewPipeline("viperkv", "test", runtime.PipelineOptions{}, &policy.ClientOptions{
			Transport:        ft,
			PerRetryPolicies: []policy.Policy{vaultGuard(host)},
			// Retry every error, as fetch's shouldRetry does: a refusal must still be final.
			Retry: policy.RetryOptions{ShouldRetry: func(_ *http.Response, err error) bool { return err != nil }, RetryDelay: 1},
		})
	}
	send := func(t *testing.T, ft *fakeTransport, rawURL string) error {
		t.Helper()
		req, err := runtime.NewRequest(context.Background(), http.MethodGet, rawURL)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := pipeline(ft).Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	ok := func(req *http.Request) *http.Response { return answer(http.StatusOK, req, nil) }

	for _, u := range []string{"https://v.vault.azure.net/secrets/s", "https://V.Vault.Azure.Net:443/secrets/s"} {
		ft := &fakeTransport{respond: ok}
		if err := send(t, ft, u); err != nil || ft.sent.Load() != 1 {
			t.Errorf("%s: err %v, sent %d", u, err, ft.sent.Load())
		}
	}
	for _, u := range []string{
		"http://v.vault.azure.net/secrets/s",
		"https://other.vault.azure.net/secrets/s",
		"https://v.vault.azure.net:8443/secrets/s",
	} {
		ft := &fakeTransport{respond: ok}
		err := send(t, ft, u)
		if err == nil || ft.sent.Load() != 0 {
			t.Errorf("%s: err %v, sent %d: want refused before sending", u, err, ft.sent.Load())
		}
	}

	t.Run("3xx", func(t *testing.T) {
		ft := &fakeTransport{respond: func(req *http.Request) *http.Response {
			return answer(http.StatusFound, req, http.Header{"Location": {"https://attacker.test/x?sig=secret"}})
		}}
		err := send(t, ft, "https://"+host+"/secrets/s")
		if err == nil || !strings.Contains(err.Error(), "Key Vault never redirects") ||
			!strings.Contains(err.Error(), "https://attacker.test/x") || strings.Contains(err.Error(), "sig=secret") {
			t.Errorf("err = %v", err)
		}
		if n := ft.sent.Load(); n != 1 {
			t.Errorf("sent %d requests, want 1 (a refusal is not retried)", n)
		}
	})
	t.Run("followed elsewhere", func(t *testing.T) {
		ft := &fakeTransport{respond: func(*http.Request) *http.Response {
			return answer(http.StatusOK, &http.Request{URL: &url.URL{Scheme: "https", Host: "attacker.test", Path: "/x"}}, nil)
		}}
		err := send(t, ft, "https://"+host+"/secrets/s")
		if err == nil || !strings.Contains(err.Error(), "attacker.test") {
			t.Errorf("err = %v", err)
		}
		if n := ft.sent.Load(); n != 1 {
			t.Errorf("sent %d requests, want 1", n)
		}
	})
}
