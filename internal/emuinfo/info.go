// Package emuinfo is the standalone emulator's info file: the JSON a running
// "viperkv emulator" writes so other processes can reach it, and the dialing that sends
// production host names to its listeners. kvtest writes it; the CLI and the examples
// read it.
package emuinfo

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Identity is a managed identity as the info file records it.
type Identity struct {
	// Name is "system" for the system-assigned identity, else the user-assigned name.
	Name string `json:"name"`
	// ClientID is the identity's application (client) ID, the token's appid claim.
	ClientID string `json:"client_id"`
	// ObjectID is the service principal's object ID, the token's oid claim.
	ObjectID string `json:"object_id"`
	// ResourceID is the Azure resource ID, the token's xms_mirid claim.
	ResourceID string `json:"resource_id"`
	// FederatedTokenFile holds a federated token for a federated identity (export it
	// as AZURE_FEDERATED_TOKEN_FILE; see [Info.WorkloadIdentityEnv]).
	FederatedTokenFile string `json:"federated_token_file,omitempty"`
}

// Info describes a running emulator for other processes: the standalone command writes
// it as JSON, and [Read] plus [Info.Client] let a program reach the emulator with
// production vault URLs.
type Info struct {
	// TenantID is the emulated tenant.
	TenantID string `json:"tenant_id"`
	// CAFile is the path of the emulator CA's PEM certificate.
	CAFile string `json:"ca_file"`
	// IdentityEndpoint is the App Service style managed identity endpoint: export it as
	// IDENTITY_ENDPOINT.
	IdentityEndpoint string `json:"identity_endpoint"`
	// IdentityHeader is the X-IDENTITY-HEADER secret: export it as IDENTITY_HEADER.
	IdentityHeader string `json:"identity_header"`
	// IMDSEndpoint is the IMDS style endpoint's direct URL; [Info.Client] also routes
	// 169.254.169.254:80 to it.
	IMDSEndpoint string `json:"imds_endpoint"`
	// EntraEndpoint is the Entra listener, https://127.0.0.1:PORT.
	EntraEndpoint string `json:"entra_endpoint"`
	// Authority is EntraEndpoint + "/" + TenantID.
	Authority string `json:"authority"`
	// AuthorityHost is EntraEndpoint + "/", for AZURE_AUTHORITY_HOST (or an azcore
	// cloud.Configuration's ActiveDirectoryAuthorityHost). Through [Info.Client]
	// https://login.microsoftonline.com/ reaches the same listener.
	AuthorityHost string `json:"authority_host"`
	// Issuer is the iss claim of issued tokens, https://sts.windows.net/<tenant>/.
	Issuer string `json:"issuer"`
	// OIDCDiscoveryURL is the v1 discovery document (issuer https://sts.windows.net/<tenant>/).
	OIDCDiscoveryURL string `json:"oidc_discovery_url"`
	// OIDCDiscoveryURLV2 is the v2 discovery document.
	OIDCDiscoveryURLV2 string `json:"oidc_discovery_url_v2"`
	// Vaults maps a vault's name to its direct URL https://127.0.0.1:PORT. Public cloud
	// vaults are keyed by name (myvault), others by host (x.vault.azure.cn).
	Vaults map[string]string `json:"vaults"`
	// VaultHosts maps a vault's production host to its direct URL.
	VaultHosts map[string]string `json:"vault_hosts"`
	// SystemIdentity is the system-assigned identity; nil when disabled.
	SystemIdentity *Identity `json:"system_identity,omitempty"`
	// Identities maps user-assigned identity names to their IDs.
	Identities map[string]Identity `json:"identities"`
	// ProxyURL is the emulator's HTTP proxy, http://127.0.0.1:PORT : export it as HTTPS_PROXY and HTTP_PROXY, with the CA file as
	// SSL_CERT_FILE, REQUESTS_CA_BUNDLE or NODE_EXTRA_CA_CERTS ([Info.ProxyEnv]), and any
	// SDK reaches the emulator with production URLs.
	ProxyURL string `json:"proxy_url,omitempty"`
}

// WriteFile writes the info as indented JSON, atomically (a reader never sees a partial
// file), readable by the owner only since it holds the identity header.
func (i *Info) WriteFile(path string) error {
	b, err := i.Marshal()
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b, 0o600)
}

// Marshal returns the info file's content: indented JSON ending in a newline.
func (i *Info) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(i, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding info: %w", err)
	}
	return append(b, '\n'), nil
}

// WriteFileAtomic writes data to path (mode perm) through a temporary file and a rename,
// so a reader never sees a partial file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, perm)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Read reads an info file. A relative CAFile or federated token file is taken
// relative to the file's directory.
func Read(path string) (*Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the emulator's info file: %w", err)
	}
	var in Info
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("%s is not an emulator info file: %w", path, err)
	}
	if in.CAFile != "" && !filepath.IsAbs(in.CAFile) {
		in.CAFile = filepath.Join(filepath.Dir(path), in.CAFile)
	}
	for name, id := range in.Identities {
		if id.FederatedTokenFile != "" && !filepath.IsAbs(id.FederatedTokenFile) {
			id.FederatedTokenFile = filepath.Join(filepath.Dir(path), id.FederatedTokenFile)
			in.Identities[name] = id
		}
	}
	return &in, nil
}

// Env returns IDENTITY_ENDPOINT and IDENTITY_HEADER for the App Service style endpoint.
func (i *Info) Env() map[string]string {
	return map[string]string{"IDENTITY_ENDPOINT": i.IdentityEndpoint, "IDENTITY_HEADER": i.IdentityHeader}
}

// WorkloadIdentityEnv returns the variables AKS workload identity sets in a pod for the
// federated identity name: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE
// and AZURE_AUTHORITY_HOST (the emulator's Entra listener, [Info.AuthorityHost]). With
// them azidentity.NewWorkloadIdentityCredential signs in through the emulator; with a
// transport other than [Info.Client] set DisableInstanceDiscovery, since MSAL would ask
// https://login.microsoftonline.com about the loopback authority. It fails if the
// identity is unknown or has no federated token file.
func (i *Info) WorkloadIdentityEnv(name string) (map[string]string, error) {
	id, ok := i.Identities[name]
	if !ok {
		return nil, fmt.Errorf("the emulator info has no identity %q", name)
	}
	if id.FederatedTokenFile == "" {
		return nil, fmt.Errorf("the emulator info's identity %q has no federated_token_file (not federated in the seed?)", name)
	}
	host := i.AuthorityHost
	if host == "" && i.EntraEndpoint != "" {
		host = i.EntraEndpoint + "/"
	}
	return map[string]string{
		"AZURE_CLIENT_ID":            id.ClientID,
		"AZURE_TENANT_ID":            i.TenantID,
		"AZURE_FEDERATED_TOKEN_FILE": id.FederatedTokenFile,
		"AZURE_AUTHORITY_HOST":       host,
	}, nil
}

// ProxyEnv returns the variables that send a program's Azure traffic through the
// emulator's proxy  with production URLs and challenge resource
// verification on: HTTPS_PROXY and HTTP_PROXY (ProxyURL; HTTP_PROXY carries IMDS's
// http://169.254.169.254), and the CA file under the names TLS stacks read:
// SSL_CERT_FILE (Go and .NET on Linux, OpenSSL's default paths; curl reads
// CURL_CA_BUNDLE instead), REQUESTS_CA_BUNDLE (Python's requests, so the Azure SDK for
// Python) and NODE_EXTRA_CA_CERTS (Node.js). Each of these replaces the system's roots
// except NODE_EXTRA_CA_CERTS, which adds to them.
//
// Add the variables of a managed identity source: none for the IMDS style (the SDKs'
// default), [Info.Env] for the App Service style, or [Info.WorkloadIdentityEnv] (whose
// AZURE_AUTHORITY_HOST may then also be https://login.microsoftonline.com/, as AKS sets
// it, or be left out for SDKs that default to it: through the proxy it reaches the
// emulator). NO_PROXY must not name the vault hosts,
// login.microsoftonline.com or 169.254.169.254. It fails if the info has no proxy_url
// or no ca_file.
func (i *Info) ProxyEnv() (map[string]string, error) {
	if i.ProxyURL == "" {
		return nil, errors.New("the emulator info has no proxy_url (written by an emulator without a proxy?)")
	}
	if i.CAFile == "" {
		return nil, errors.New("the emulator info has no ca_file")
	}
	return map[string]string{
		"HTTPS_PROXY":         i.ProxyURL,
		"HTTP_PROXY":          i.ProxyURL,
		"SSL_CERT_FILE":       i.CAFile,
		"REQUESTS_CA_BUNDLE":  i.CAFile,
		"NODE_EXTRA_CA_CERTS": i.CAFile,
	}, nil
}

// VaultNames returns the keys of Vaults, sorted.
func (i *Info) VaultNames() []string {
	out := make([]string, 0, len(i.Vaults))
	for k := range i.Vaults {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Client returns an *http.Client that trusts the CA file and routes as [Info.Router]
// does, refusing redirects.
func (i *Info) Client(name string) (*http.Client, error) {
	pool, err := i.CertPool()
	if err != nil {
		return nil, err
	}
	rt, err := i.Router(name)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: Transport(pool, rt),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// CertPool returns a pool holding the emulator's CA (CAFile).
func (i *Info) CertPool() (*x509.CertPool, error) {
	if i.CAFile == "" {
		return nil, errors.New("the info names no ca_file")
	}
	pem, err := os.ReadFile(i.CAFile)
	if err != nil {
		return nil, fmt.Errorf("the emulator's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", i.CAFile)
	}
	return pool, nil
}

// Router returns a router to the info's emulator: production vault hosts
// (https://myvault.vault.azure.net), 169.254.169.254:80 and the Entra ID hosts to its
// listeners, its own addresses as they are, and nothing else, so configurations keep
// production URLs and the SDK's challenge resource verification stays on. Every address
// in the info must be a loopback IP address with a port (the emulator listens on
// 127.0.0.1): anything else is an error naming it, before anything is dialed. name names
// the emulator in refusals.
func (i *Info) Router(name string) (*Router, error) {
	direct := map[string]bool{}
	addr := func(field, raw, scheme string) (string, error) {
		u, err := url.Parse(raw)
		switch {
		case err != nil || u.Host == "":
			return "", fmt.Errorf("%s %q: not a URL", field, raw)
		case u.Scheme != scheme:
			return "", fmt.Errorf("%s %q: want an %s URL", field, raw, scheme)
		case u.Port() == "":
			return "", fmt.Errorf("%s %q: no port", field, raw)
		case !Loopback(u.Host):
			return "", fmt.Errorf("%s %q: %s is not a loopback address (the emulator listens on 127.0.0.1): refusing it", field, raw, u.Host)
		}
		direct[u.Host] = true
		return u.Host, nil
	}
	rt := &Router{Name: name, Direct: func(a string) bool { return direct[a] }}
	var err error
	if rt.IMDS, err = addr("imds_endpoint", i.IMDSEndpoint, "http"); err != nil {
		return nil, err
	}
	if i.IdentityEndpoint != "" {
		if _, err := addr("identity_endpoint", i.IdentityEndpoint, "http"); err != nil {
			return nil, err
		}
	}
	if i.EntraEndpoint != "" {
		if rt.Entra, err = addr("entra_endpoint", i.EntraEndpoint, "https"); err != nil {
			return nil, err
		}
	}
	if i.ProxyURL != "" {
		if _, err := addr("proxy_url", i.ProxyURL, "http"); err != nil {
			return nil, err
		}
	}
	hosts := map[string]string{}
	for _, name := range i.VaultNames() {
		host, err := VaultHost(name)
		if err != nil {
			return nil, err
		}
		if hosts[host], err = addr("vaults."+name, i.Vaults[name], "https"); err != nil {
			return nil, err
		}
	}
	for host, raw := range i.VaultHosts {
		if hosts[strings.ToLower(host)], err = addr("vault_hosts."+host, raw, "https"); err != nil {
			return nil, err
		}
	}
	if len(hosts) == 0 {
		return nil, errors.New("the info names no vault")
	}
	rt.Vault = func(h string) (string, bool) { a, ok := hosts[h]; return a, ok }
	return rt, nil
}

// SeedError is an error in a seed given to kvtest.WithSeed: the user's mistake (a typo, an
// unknown role, a tenant that differs), not the emulator failing to start. The CLI reports
// it as a usage error.
type SeedError struct{ Err error }

func (e *SeedError) Error() string { return e.Err.Error() }
func (e *SeedError) Unwrap() error { return e.Err }
