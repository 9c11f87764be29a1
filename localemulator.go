package viperkv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// WithLocalEmulator makes the provider talk to a running standalone emulator (viperkv
// emulator --info infoPath) instead of Azure, keeping the configuration's production URLs
// (https://myvault.vault.azure.net): it is how a service runs on a laptop against the
// emulator without importing kvtest into its binary.
//
// It is an explicit opt-in for development, never a default. A service enables it itself,
// for example only when a variable of its own is set:
//
//	if path := os.Getenv("MYAPP_KEYVAULT_EMULATOR"); path != "" {
//		opts = append(opts, viperkv.WithLocalEmulator(path))
//	}
//
// New reads the info file and then:
//   - trusts only the emulator's CA (its ca_file) for TLS;
//   - sends the vault hosts of the info file, the Entra ID hosts
//     (login.microsoftonline.com and the sovereign ones) and the managed identity's IMDS
//     address (169.254.169.254:80) to the emulator's ports, and refuses every other
//     destination, so nothing reaches Azure or any other host;
//   - gets the managed identity's tokens (system-assigned, or the one WithManagedIdentity
//     names) from the emulator's IMDS style endpoint, without reading or changing the
//     process environment (leave IDENTITY_ENDPOINT and MSI_ENDPOINT unset, or set to the
//     emulator's own endpoint: azidentity prefers them to IMDS).
//
// Every address in the info file must be a loopback IP address (127.0.0.0/8 or ::1):
// anything else is an error from New naming it, before any request. It excludes
// WithTransport. WithCredential still replaces the managed identity, with the caller's
// own transport.
//
// Every Load logs at Warn that the provider is not talking to Azure, to the provider's
// logger or, when its logs are discarded (no WithLogger), to slog.Default().
func WithLocalEmulator(infoPath string) Option {
	return func(o *options) { o.localEmulator = &localEmulator{path: infoPath} }
}

// emulatorInfo is the part of the standalone emulator's info file (kvtest.Info) the
// provider uses.
type emulatorInfo struct {
	CAFile           string            `json:"ca_file"`
	IdentityEndpoint string            `json:"identity_endpoint"`
	IMDSEndpoint     string            `json:"imds_endpoint"`
	EntraEndpoint    string            `json:"entra_endpoint"`
	Vaults           map[string]string `json:"vaults"`      // name (or host) -> https://127.0.0.1:PORT
	VaultHosts       map[string]string `json:"vault_hosts"` // host -> https://127.0.0.1:PORT
}

// localEmulator routes a provider's connections to a standalone emulator.
type localEmulator struct {
	path   string
	log    *slog.Logger
	vaults map[string]string   // lowercase vault host -> 127.0.0.1:PORT
	imds   string              // 127.0.0.1:PORT
	entra  string              // 127.0.0.1:PORT, or "" when the info names none
	direct map[string]struct{} // the emulator's own addresses, reachable as they are
	dialer net.Dialer
}

// entraHosts are the Entra ID hosts of the three clouds.
var entraHosts = []string{"login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us"}

// imdsAddr is where azidentity sends IMDS token requests.
const imdsAddr = "169.254.169.254:80"

// apply reads the info file and sets o up to reach the emulator.
func (e *localEmulator) apply(o *options) error {
	wrap := func(err error) error { return fmt.Errorf("viperkv: New: WithLocalEmulator(%s): %w", e.path, err) }
	if o.transport != nil {
		return wrap(errors.New("WithTransport cannot be combined with it"))
	}
	b, err := os.ReadFile(e.path)
	if err != nil {
		return wrap(err)
	}
	var in emulatorInfo
	if err := json.Unmarshal(b, &in); err != nil {
		return wrap(fmt.Errorf("not an emulator info file: %w", err))
	}
	// Every address is checked before the CA file is read or anything is dialed.
	e.vaults, e.direct = map[string]string{}, map[string]struct{}{}
	addr := func(field, raw, scheme string) (string, error) {
		a, err := loopbackAddr(raw, scheme)
		if err != nil {
			return "", fmt.Errorf("%s %q: %w", field, raw, err)
		}
		e.direct[a] = struct{}{}
		return a, nil
	}
	if e.imds, err = addr("imds_endpoint", in.IMDSEndpoint, "http"); err != nil {
		return wrap(err)
	}
	if in.IdentityEndpoint != "" {
		if _, err := addr("identity_endpoint", in.IdentityEndpoint, "http"); err != nil {
			return wrap(err)
		}
	}
	if in.EntraEndpoint != "" {
		if e.entra, err = addr("entra_endpoint", in.EntraEndpoint, "https"); err != nil {
			return wrap(err)
		}
	}
	for _, field := range []string{"vaults", "vault_hosts"} {
		m := in.Vaults
		if field == "vault_hosts" {
			m = in.VaultHosts
		}
		for _, key := range slices.Sorted(maps.Keys(m)) {
			host := strings.ToLower(key)
			if !strings.Contains(host, ".") {
				host += "." + CloudPublic.VaultSuffix()
			}
			a, err := addr(field+"."+key, m[key], "https")
			if err != nil {
				return wrap(err)
			}
			e.vaults[host] = a
		}
	}
	if len(e.vaults) == 0 {
		return wrap(errors.New("the info file names no vault"))
	}
	pool, err := readCA(e.path, in.CAFile)
	if err != nil {
		return wrap(err)
	}

	tr := defaultTransport()
	tr.Proxy = nil // a proxy from the environment must not see this traffic
	tr.DialContext = e.dial
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	o.transport = &http.Client{Transport: tr, CheckRedirect: useLastResponse}
	e.log = o.logger
	if e.log.Handler() == slog.DiscardHandler {
		e.log = slog.Default()
	}
	return nil
}

// loopbackAddr returns the host:port of raw, a URL of the given scheme whose host must be
// a loopback IP address with a port.
func loopbackAddr(raw, scheme string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", errors.New("not a URL")
	}
	if u.Scheme != scheme {
		return "", fmt.Errorf("want an %s URL", scheme)
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil || !ip.IsLoopback() {
		return "", fmt.Errorf("%s is not a loopback address (the emulator listens on 127.0.0.1): refusing it", u.Host)
	}
	if u.Port() == "" {
		return "", errors.New("no port")
	}
	return u.Host, nil
}

// readCA reads the emulator's CA certificate; a relative path is relative to the info file.
func readCA(infoPath, caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, errors.New("the info file names no ca_file")
	}
	if !filepath.IsAbs(caFile) {
		caFile = filepath.Join(filepath.Dir(infoPath), caFile)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("the emulator's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// dial connects to the emulator's listener for addr, or refuses.
func (e *localEmulator) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	target := ""
	switch {
	case h+":"+port == imdsAddr:
		target = e.imds
	case port == "443" && slices.Contains(entraHosts, h):
		target = e.entra
	case port == "443" && e.vaults[h] != "":
		target = e.vaults[h]
	case port == "443" && isVaultHost(h):
		// What a resolver says of a vault that does not exist.
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
	}
	if _, ok := e.direct[addr]; ok && target == "" {
		target = addr
	}
	if target == "" {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf(
			"viperkv: local emulator: refusing to connect to %s: not an address of the emulator of %s "+
				"(is IDENTITY_ENDPOINT or MSI_ENDPOINT set for another endpoint?)", addr, e.path)}
	}
	return e.dialer.DialContext(ctx, network, target)
}

// warn says, on every Load, that the provider is not talking to Azure. e may be nil.
func (e *localEmulator) warn() {
	if e != nil {
		e.log.Warn("viperkv: NOT TALKING TO AZURE: secrets come from the local emulator (WithLocalEmulator); never use this in production",
			"info", e.path)
	}
}

func isVaultHost(h string) bool {
	for _, c := range []Cloud{CloudPublic, CloudChina, CloudUSGovernment} {
		if strings.HasSuffix(h, "."+c.VaultSuffix()) {
			return true
		}
	}
	return false
}
