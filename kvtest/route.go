package kvtest

import (
	"context"
	"net"
	"strings"
	"syscall"
)

// clouds lists the vault DNS suffixes with the challenge resource and authority host of
// their cloud.
var clouds = []struct {
	suffix    string // vault.azure.net
	resource  string // https://vault.azure.net
	authority string // https://login.microsoftonline.com
}{
	{"vault.azure.net", "https://vault.azure.net", "https://login.microsoftonline.com"},
	{"vault.azure.cn", "https://vault.azure.cn", "https://login.chinacloudapi.cn"},
	{"vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net", "https://login.microsoftonline.us"},
}

// entraHosts are the Entra ID hosts the router sends to the Entra listener.
var entraHosts = []string{"login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us"}

// vaultSuffix returns the cloud suffix host ends with ("" if none).
func vaultSuffix(host string) string {
	for _, c := range clouds {
		if strings.HasSuffix(host, "."+c.suffix) || host == c.suffix {
			return c.suffix
		}
	}
	return ""
}

// router is the DialContext of the emulator's transports.
type router struct {
	vault  func(host string) (addr string, ok bool)
	imds   string
	entra  string
	dialer net.Dialer
}

func (rt *router) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return rt.dialer.DialContext(ctx, network, addr)
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case h == "169.254.169.254" && port == "80" && rt.imds != "":
		return rt.dialer.DialContext(ctx, network, rt.imds)
	case isEntraHost(h) && rt.entra != "":
		if port != "443" {
			return nil, refused(network, addr)
		}
		return rt.dialer.DialContext(ctx, network, rt.entra)
	case vaultSuffix(h) != "":
		a, ok := rt.vault(h)
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
	}
	return rt.dialer.DialContext(ctx, network, addr)
}

func isEntraHost(h string) bool {
	for _, e := range entraHosts {
		if h == e {
			return true
		}
	}
	return false
}

func refused(network, addr string) error {
	return &net.OpError{Op: "dial", Net: network, Addr: stringAddr(addr), Err: syscall.ECONNREFUSED}
}

type stringAddr string

// Network implements net.Addr.
func (a stringAddr) Network() string { return "tcp" }

// String implements net.Addr.
func (a stringAddr) String() string { return string(a) }
