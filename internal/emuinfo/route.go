package emuinfo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/viperkv/viperkv/internal/cloud"
)

// VaultSuffix returns the cloud suffix host ends with ("" if none).
func VaultSuffix(host string) string {
	c, _ := cloud.ByVaultHost(host)
	return c.VaultSuffix
}

// EventGridHost is the host of the validationUrl in the emulator's Event Grid handshakes
// (https://rp-kvtest.eventgrid.azure.net/eventsubscriptions/<name>/validate?...). It is
// Event Grid's host, not the webhook's: the Entra listener serves it, on port 443 only,
// and the emulator's certificate is valid for it.
const EventGridHost = "rp-kvtest.eventgrid.azure.net"

// LegacyAuthorityHost is the public cloud's older Entra ID host, the authority Key Vault's
// 401 challenges name (authorization="https://login.windows.net/<tenant>"). The emulator's
// Entra listener serves it too, so a client that signs in where the challenge says
// reaches it.
const LegacyAuthorityHost = "login.windows.net"

// Router dials production hosts to the emulator's listeners: vault hosts (by Vault; an
// unknown vault host is a name that does not resolve), 169.254.169.254:80 to IMDS, and the
// Entra ID hosts, [LegacyAuthorityHost] and [EventGridHost] to Entra. It fails closed:
// any other address is refused unless Direct allows it, so nothing routed through it
// reaches Azure or any host the emulator does not stand for.
type Router struct {
	Vault func(host string) (addr string, ok bool)
	IMDS  string // 127.0.0.1:PORT
	Entra string // 127.0.0.1:PORT
	// Direct reports the addresses dialed as they are (nil: none), such as the
	// emulator's own listeners or, for a test's client, its own loopback servers.
	Direct func(addr string) bool
	// Name names the emulator in refusals, such as the info file's path.
	Name   string
	dialer net.Dialer
}

// Dial is an http.Transport's DialContext.
func (rt *Router) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, rt.refuse(network, addr)
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case h == "169.254.169.254" && port == "80" && rt.IMDS != "":
		return rt.dialer.DialContext(ctx, network, rt.IMDS)
	case (cloud.IsAuthorityHost(h) || h == LegacyAuthorityHost || h == EventGridHost) && rt.Entra != "":
		if port != "443" {
			return nil, refused(network, addr)
		}
		return rt.dialer.DialContext(ctx, network, rt.Entra)
	case VaultSuffix(h) != "":
		a, ok := rt.Vault(h)
		if !ok {
			// What a resolver says for a vault that does not exist.
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{
				Err: "no such host", Name: host, IsNotFound: true,
			}}
		}
		if port != "443" {
			return nil, refused(network, addr)
		}
		return rt.dialer.DialContext(ctx, network, a)
	case rt.Direct != nil && rt.Direct(addr):
		return rt.dialer.DialContext(ctx, network, addr)
	}
	return nil, rt.refuse(network, addr)
}

// refuse is the error for an address the emulator does not stand for.
func (rt *Router) refuse(network, addr string) error {
	name := rt.Name
	if name == "" {
		name = "the emulator"
	}
	return &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf(
		"refusing to connect to %s: not an address of %s (is IDENTITY_ENDPOINT or MSI_ENDPOINT set for another endpoint?)", addr, name)}
}

// Loopback reports whether addr is a loopback IP address with a port, as a test's own
// servers are: a Direct for clients that must reach them.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func refused(network, addr string) error {
	return &net.OpError{Op: "dial", Net: network, Addr: stringAddr(addr), Err: syscall.ECONNREFUSED}
}

type stringAddr string

// Network implements net.Addr.
func (a stringAddr) Network() string { return "tcp" }

// String implements net.Addr.
func (a stringAddr) String() string { return string(a) }

// Transport returns a transport trusting pool; rt, when non-nil, routes production host
// names to the emulator's listeners.
func Transport(pool *x509.CertPool, rt *Router) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // a proxy from the environment must not see the emulator's traffic
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	// Without a cap, a burst of concurrent first requests dials (and TLS-handshakes) one
	// connection each before HTTP/2 takes over; 16 connections carry 16,000 streams.
	t.MaxConnsPerHost = 16
	if rt != nil {
		t.DialContext = rt.Dial
	}
	return t
}

// VaultHost normalizes a vault name ("myvault") or host ("x.vault.azure.cn", with or
// without https:// and a trailing slash) to its lowercase host.
func VaultHost(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "https://")
	n = strings.TrimSuffix(n, "/")
	if !strings.Contains(n, ".") {
		n += "." + cloud.Public().VaultSuffix
	}
	suffix := VaultSuffix(n)
	label := strings.TrimSuffix(n, "."+suffix)
	if suffix == "" || strings.Contains(label, ".") || !vaultLabelRE.MatchString(label) {
		return "", fmt.Errorf("invalid vault name %q", name)
	}
	return n, nil
}

var vaultLabelRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

// Running dials addr (an emulator's listener) once, bounded by a second, so that an
// emulator that is gone (its info file left behind) is said at once instead of after an
// SDK's retries. The error says why in a few words: "connection refused at ADDR".
func Running(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		why := err.Error()
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			why = "connection refused"
		case errors.As(err, &ne) && ne.Timeout():
			why = "no answer within 1s"
		}
		return fmt.Errorf("%s at %s", why, addr)
	}
	_ = c.Close() // only the dial mattered
	return nil
}
