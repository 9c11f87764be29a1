package azvault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv/internal/driver"
)

// classify and classifyCredentialError decide transience from the error's structure.
func TestClassifyTransience(t *testing.T) {
	const r, pinned = false, true
	resp := func(code int, body string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "https://myvault.vault.azure.net/secrets/s", nil)
		return &http.Response{StatusCode: code, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)), Request: req}
	}
	vault := func(code int, inner string) error {
		body := fmt.Sprintf(`{"error":{"code":"Code","innererror":{"code":%q}}}`, inner)
		return &azcore.ResponseError{StatusCode: code, RawResponse: resp(code, body)}
	}
	dial := func(errno syscall.Errno) error {
		return &url.Error{Op: "Get", URL: "https://myvault.vault.azure.net/secrets/s",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}}
	}
	managed := func(err error) error { return &credentialError{err: err, managed: true} }
	other := func(err error) error { return &credentialError{err: err} }
	answered := func(code int) error { return &azidentity.AuthenticationFailedError{RawResponse: resp(code, "{}")} }
	noAnswer := &azidentity.AuthenticationFailedError{} // azidentity's error for a connection refused or reset

	for _, tc := range []struct {
		name      string
		pinned    bool
		err       error
		kind      driver.Kind
		transient bool
	}{
		{"vault 500", r, vault(500, ""), driver.KindOther, true},
		{"vault 502", r, vault(502, ""), driver.KindOther, true},
		{"vault 503", r, vault(503, ""), driver.KindOther, true},
		{"vault 504", r, vault(504, ""), driver.KindOther, true},
		{"vault 408", r, vault(408, ""), driver.KindOther, true},
		{"vault 429 beyond the limiter", r, vault(429, ""), driver.KindThrottled, true},
		{"connection refused", r, dial(syscall.ECONNREFUSED), driver.KindOther, true},
		{"connection reset", r, dial(syscall.ECONNRESET), driver.KindOther, true},
		{"bare connection reset", r, syscall.ECONNRESET, driver.KindOther, true},
		{"stream cut (HTTP/2 reset)", r, &url.Error{Op: "Get", URL: "https://x", Err: io.ErrUnexpectedEOF}, driver.KindOther, true},
		{"dial timeout", r, &url.Error{Op: "Get", URL: "https://x", Err: &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}}, driver.KindOther, true},
		{"DNS server not answering", r, &url.Error{Op: "Get", URL: "https://x", Err: &net.DNSError{Err: "i/o timeout", IsTimeout: true}}, driver.KindOther, true},
		{"a deadline of its own", r, context.DeadlineExceeded, driver.KindTimeout, true},

		{"vault 403", r, vault(403, "ForbiddenByRbac"), driver.KindForbidden, false},
		{"vault 403 by access policy", r, vault(403, "ForbiddenByPolicy"), driver.KindForbidden, false},
		{"vault 403 by firewall", r, vault(403, "ForbiddenByFirewall"), driver.KindForbiddenByFirewall, false},
		{"vault 403 by private link", r, vault(403, "ForbiddenByConnection"), driver.KindForbiddenByConnection, false},
		{"secret disabled", r, vault(403, "SecretDisabled"), driver.KindDisabled, false},
		{"vault 401", r, vault(401, ""), driver.KindUnauthorized, false},
		{"secret not found", r, vault(404, ""), driver.KindNotFound, false},
		{"version not found", pinned, vault(404, ""), driver.KindVersionNotFound, false},
		{"vault 400", r, vault(400, ""), driver.KindOther, false},
		{"vault host does not resolve", r, &url.Error{Op: "Get", URL: "https://x", Err: &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", IsNotFound: true}}}, driver.KindVaultNotFound, false},
		{"untrusted certificate", r, &url.Error{Op: "Get", URL: "https://x", Err: x509.UnknownAuthorityError{}}, driver.KindOther, false},
		{"redirect refused", r, &refusedError{msg: "refused a redirect"}, driver.KindOther, false},
		{"canceled", r, context.Canceled, driver.KindTimeout, false},
		{"unknown error", r, errors.New("boom"), driver.KindOther, false},

		{"identity endpoint refuses or resets", r, managed(noAnswer), driver.KindNoIdentity, true},
		{"identity endpoint 500", r, managed(answered(500)), driver.KindOther, true},
		{"identity endpoint 503", r, managed(answered(503)), driver.KindOther, true},
		{"identity endpoint 429", r, managed(answered(429)), driver.KindOther, true},
		{"token request timed out", r, &credentialError{err: noAnswer, managed: true, timedOut: true}, driver.KindTimeout, true},
		{"identity not assigned (400)", r, managed(answered(400)), driver.KindNoIdentity, false},
		{"identity not found (404)", r, managed(answered(404)), driver.KindNoIdentity, false},
		{"identity endpoint 403", r, managed(answered(403)), driver.KindUnauthorized, false},
		{"system identity off", r, managed(errors.New("ManagedIdentityCredential: failed to authenticate a system assigned identity")), driver.KindNoIdentity, false},
		{"identity endpoint redirect", r, managed(answered(302)), driver.KindOther, false},

		{"Entra ID 503", r, other(answered(503)), driver.KindOther, true},
		{"Entra ID unreachable, chain kept", r, other(fmt.Errorf("custom credential: %w", dial(syscall.ECONNREFUSED))), driver.KindOther, true},
		{"credential timed out", r, &credentialError{err: errors.New("x"), timedOut: true}, driver.KindTimeout, true},
		{"Entra ID refuses (401)", r, other(answered(401)), driver.KindUnauthorized, false},
		{"Entra ID refuses (400)", r, other(answered(400)), driver.KindUnauthorized, false},
		{"az login missing", r, other(errors.New("AzureCLICredential: executable not found on path")), driver.KindOther, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := classify("GET https://myvault.vault.azure.net/secrets/s", tc.pinned, "myvault.vault.azure.net", tc.err)
			if e.Kind != tc.kind || e.Transient != tc.transient || e.Reason == "" {
				t.Errorf("classify = %v, transient %v (%q); want %v, transient %v", e.Kind, e.Transient, e.Reason, tc.kind, tc.transient)
			}
		})
	}
}
