package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/viperkv/viperkv/kvtest"
)

type emulatorFlags struct {
	seed, info, caFile string
	tokenLifetime      time.Duration
	deletionWindow     time.Duration
}

func newEmulatorCmd() *cobra.Command {
	var f emulatorFlags
	cmd := &cobra.Command{
		Use:   "emulator",
		Short: "Run a local Entra ID, managed identity and Key Vault emulator",
		Long: `Run a local emulator of Entra ID (OpenID Connect and token signing), the Azure managed
identity endpoint and the Key Vault secrets data plane, on 127.0.0.1.

The emulator loads the vaults, secrets, identities and role assignments of a YAML seed,
writes its CA certificate and an info file (JSON: endpoints, vault ports, identities),
prints how to point applications at it, and serves until interrupted (Ctrl+C or SIGTERM).
On shutdown it removes the files it wrote (the info file, the CA and the federated token
files), so a stale info file never points at a stopped emulator.

Its HTTP proxy (proxy_url in the info file) lets any SDK or tool reach it with production
URLs and challenge resource verification on, configured by environment variables only:
HTTPS_PROXY and HTTP_PROXY name the proxy, and the CA file goes in the variable of the
language's TLS stack (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS). The proxy
routes https://<vault>.vault.azure.net, https://login.microsoftonline.com and IMDS's
http://169.254.169.254 to the emulator and refuses every other host.

For each identity with "federated: true" it also writes a Kubernetes service account
token next to the info file (recorded as identities.<name>.federated_token_file) and
prints the variables AKS workload identity sets in a pod, so that
azidentity.NewWorkloadIdentityCredential and "viperkv --credential workload-identity"
sign in through its Entra ID token endpoint.`,
		Example: `  viperkv emulator --seed testdata/emulator-seed.yaml --info /tmp/kv/info.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runEmulator(ctx, cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().StringVar(&f.seed, "seed", "", "YAML seed with vaults, secrets, identities and grants")
	cmd.Flags().StringVar(&f.info, "info", "", "where to write the info JSON (default: a temporary directory)")
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "where to write the CA certificate PEM (default: next to the info file, named after it: info.json -> info.ca.pem)")
	cmd.Flags().DurationVar(&f.tokenLifetime, "token-lifetime", kvtest.DefaultTokenLifetime,
		"lifetime of issued tokens; 5m or less makes MSAL fetch a new token for every call")
	cmd.Flags().DurationVar(&f.deletionWindow, "deletion-window", kvtest.DefaultDeletionWindow,
		"how long a DELETE or a purge takes, as on Key Vault: meanwhile purge, recover and re-create answer 409 ObjectIsBeingDeleted (0: instant)")
	return cmd
}

// ownedFiles are the files the emulator wrote, with what it last wrote there, so that it
// removes them on exit unless another process replaced them since (a second emulator
// given the same --info).
type ownedFiles struct {
	paths []string
	data  map[string][]byte
}

// write writes data to path atomically (mode perm) and records it as the emulator's.
func (o *ownedFiles) write(path string, data []byte, perm os.FileMode) error {
	if err := writeAtomic(path, data, perm); err != nil {
		return err
	}
	if o.data == nil {
		o.data = map[string][]byte{}
	}
	if _, ok := o.data[path]; !ok {
		o.paths = append(o.paths, path)
	}
	o.data[path] = data
	return nil
}

// removeAll removes the files still holding what the emulator wrote, newest first (the
// info file, written last, goes first).
func (o *ownedFiles) removeAll() {
	for i := len(o.paths) - 1; i >= 0; i-- {
		p := o.paths[i]
		if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, o.data[p]) {
			_ = os.Remove(p)
		}
	}
}

// runEmulator starts the emulator and serves until ctx ends.
func runEmulator(ctx context.Context, out io.Writer, f emulatorFlags) error {
	var seed *kvtest.Seed
	if f.seed != "" {
		r, err := os.Open(f.seed)
		if err != nil {
			return seedError(f.seed, err)
		}
		seed, err = kvtest.ParseSeed(r)
		_ = r.Close() // read-only file: a close error changes nothing
		if err != nil {
			return seedError(f.seed, err)
		}
	}
	if f.deletionWindow < 0 {
		return usageError("--deletion-window must not be negative")
	}
	opts := []kvtest.Option{kvtest.WithTokenLifetime(f.tokenLifetime), kvtest.WithDeletionWindow(f.deletionWindow)}
	if seed != nil && seed.TenantID != "" {
		opts = append(opts, kvtest.WithTenantID(seed.TenantID))
	}
	srv, err := kvtest.Start(opts...)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	defer srv.Close()
	if err := srv.ApplySeed(seed); err != nil {
		return seedError(f.seed, err)
	}

	infoPath, caPath := f.info, f.caFile
	if infoPath == "" {
		// Only files the emulator chose itself are removed on exit.
		dir, err := os.MkdirTemp("", "viperkv-emulator-")
		if err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
		defer func() { _ = os.RemoveAll(dir) }()
		infoPath = filepath.Join(dir, "info.json")
	}
	if caPath == "" {
		// Named after the info file, so emulators sharing a directory keep their own CA.
		caPath = strings.TrimSuffix(infoPath, filepath.Ext(infoPath)) + ".ca.pem"
	}
	if infoPath, err = filepath.Abs(infoPath); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	if caPath, err = filepath.Abs(caPath); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	for _, dir := range []string{filepath.Dir(caPath), filepath.Dir(infoPath)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
	}
	// Every file written is removed on exit: the CA and the tokens die with the process,
	// and an info file left behind would point at ports nobody serves.
	var files ownedFiles
	defer files.removeAll()
	if err := files.write(caPath, srv.CACertPEM(), 0o644); err != nil {
		return fmt.Errorf("emulator: writing CA: %w", err)
	}
	info := srv.Info(caPath)
	tokens, err := writeFederatedTokens(srv, seed, &info, infoPath, &files)
	if err != nil {
		return err
	}
	// The info file is written last, so a program waiting for it finds the CA (and the
	// federated token files) in place.
	infoJSON, err := json.MarshalIndent(&info, "", "  ")
	if err != nil {
		return fmt.Errorf("emulator: encoding info: %w", err)
	}
	if err := files.write(infoPath, append(infoJSON, '\n'), 0o600); err != nil {
		return fmt.Errorf("emulator: writing info: %w", err)
	}
	printInstructions(out, &info, infoPath, srv)

	// Kubernetes rotates projected service account tokens before they expire (they live
	// an hour); so does the emulator, well before azidentity rereads the file (every 10 min).
	tick := time.NewTicker(federatedTokenRefresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "\nviperkv emulator: shutting down")
			return nil
		case <-tick.C:
			for _, ft := range tokens {
				if err := files.write(ft.path, []byte(srv.FederatedToken(ft.id)), 0o600); err != nil {
					fmt.Fprintf(out, "viperkv emulator: rotating %s: %v\n", ft.path, err)
				}
			}
		}
	}
}

// federatedTokenRefresh is how often the emulator rewrites the federated token files.
const federatedTokenRefresh = 5 * time.Minute

// federatedToken is a federated identity's token file.
type federatedToken struct {
	id   kvtest.Identity
	path string
}

// writeFederatedTokens writes a service account token file for each federated identity of
// the seed, next to the info file and named after it (info.json: info.<identity>.token),
// and records the files in info.
func writeFederatedTokens(srv *kvtest.Server, seed *kvtest.Seed, info *kvtest.Info, infoPath string, files *ownedFiles) ([]federatedToken, error) {
	if seed == nil {
		return nil, nil
	}
	base := strings.TrimSuffix(filepath.Base(infoPath), filepath.Ext(infoPath))
	var out []federatedToken
	for _, si := range seed.Identities {
		if !si.Federated {
			continue
		}
		id, ok := srv.UserIdentity(si.Name)
		if !ok {
			return nil, fmt.Errorf("emulator: identity %q missing", si.Name)
		}
		path := filepath.Join(filepath.Dir(infoPath), base+"."+fileSafe(id.Name)+".token")
		if err := files.write(path, []byte(srv.FederatedToken(id)), 0o600); err != nil {
			return nil, fmt.Errorf("emulator: federated token of %s: %w", id.Name, err)
		}
		id.FederatedTokenFile = path
		info.Identities[id.Name] = id
		out = append(out, federatedToken{id: id, path: path})
	}
	return out, nil
}

// fileSafe keeps letters, digits, dots, dashes and underscores of name; others become "_".
func fileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, name)
}

// writeAtomic writes data to path (mode perm) through a temporary file and a rename, so
// a reader never sees a partial file.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Close(), os.Chmod(tmp, perm)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// seedError is a seed that cannot be read or used: the user's mistake, like an unreadable
// configuration (exit status 2).
func seedError(path string, err error) error {
	return usageError("--seed %s: %s", path, strings.TrimPrefix(err.Error(), "kvtest: "))
}

// printInstructions tells the user how to reach the emulator. It never prints secret values.
func printInstructions(out io.Writer, info *kvtest.Info, infoPath string, srv *kvtest.Server) {
	p := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	p("viperkv emulator is running (tenant %s).", info.TenantID)
	p("")
	p("Vaults (production URL -> local listener):")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, name := range info.VaultNames() {
		v := srv.Vault(name)
		fmt.Fprintf(tw, "  %s\t%s\t-> %s\tsecrets: %d\n", name, v.URL(), info.Vaults[name], len(v.SecretNames()))
	}
	_ = tw.Flush()
	p("")
	p("Identities:")
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if info.SystemIdentity != nil {
		fmt.Fprintf(tw, "  system-assigned\tclient_id=%s\tobject_id=%s\n", info.SystemIdentity.ClientID, info.SystemIdentity.ObjectID)
	} else {
		fmt.Fprintf(tw, "  system-assigned\t(disabled)\n")
	}
	names := make([]string, 0, len(info.Identities))
	for n := range info.Identities {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		id := info.Identities[n]
		fmt.Fprintf(tw, "  %s\tclient_id=%s\tobject_id=%s\n", n, id.ClientID, id.ObjectID)
	}
	_ = tw.Flush()
	p("")
	p("Files:")
	p("  info     %s", infoPath)
	p("  CA cert  %s", info.CAFile)
	p("")
	p("1. Managed identity (App Service style). In the shell that runs your app:")
	p("     export IDENTITY_ENDPOINT=%s", info.IdentityEndpoint)
	p("     export IDENTITY_HEADER=%s", info.IdentityHeader)
	p("   A user-assigned identity is chosen by its client_id (Go: azidentity.ClientID(\"...\")).")
	p("   IMDS style endpoint: %s (header Metadata: true).", info.IMDSEndpoint)
	p("")
	step := 2
	if info.ProxyURL != "" {
		p("2. Any SDK or tool, with production URLs and challenge resource verification on, through")
		p("   the emulator's proxy. In the shell that runs your app:")
		p("     export HTTPS_PROXY=%s", info.ProxyURL)
		p("     export HTTP_PROXY=%s", info.ProxyURL)
		p("   and the CA file in the variable of your language's TLS stack:")
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "     export SSL_CERT_FILE=%s\t# Go, .NET (Linux), OpenSSL defaults; curl: CURL_CA_BUNDLE\n", info.CAFile)
		fmt.Fprintf(tw, "     export REQUESTS_CA_BUNDLE=%s\t# Python (azure-identity, azure-keyvault-*)\n", info.CAFile)
		fmt.Fprintf(tw, "     export NODE_EXTRA_CA_CERTS=%s\t# Node.js (@azure/identity, @azure/keyvault-*)\n", info.CAFile)
		_ = tw.Flush()
		p("   https://<vault>.vault.azure.net, https://login.microsoftonline.com and IMDS's")
		p("   http://169.254.169.254 (managed identity with IDENTITY_ENDPOINT unset) then reach the")
		p("   emulator; the proxy refuses every other host. NO_PROXY must not name those hosts")
		p("   (127.0.0.1 and localhost may stay). SSL_CERT_FILE and REQUESTS_CA_BUNDLE replace the")
		p("   system's roots for the process; Java: -Dhttps.proxyHost/-Dhttps.proxyPort and a trust store.")
		p("")
		step++
	}
	p("%d. Without the proxy: use a vault URL above (https://127.0.0.1:PORT) and trust the CA file.", step)
	step++
	p("   Go:       azsecrets.ClientOptions{DisableChallengeResourceVerification: true} (the host is an IP,")
	p("             so it cannot match the challenge resource) and a transport trusting the CA file,")
	p("             or SSL_CERT_FILE=%s (Linux)", info.CAFile)
	p("   Python:   REQUESTS_CA_BUNDLE=%s (and verify_challenge_resource=False)", info.CAFile)
	p("   Node.js:  NODE_EXTRA_CA_CERTS=%s (and disableChallengeResourceVerification: true)", info.CAFile)
	p("   .NET/Java: add the CA to the trust store and disable challenge resource verification.")
	p("")
	p("%d. viperkv apps, with no config edits (references keep https://<vault>.vault.azure.net):", step)
	step++
	p("   Go:   c, _ := kvtest.ReadInfo(%q)", infoPath)
	p("         hc, _ := c.Client()")
	p("         p, _ := viperkv.New(v, viperkv.WithTransport(hc))")
	p("   CLI:  VIPERKV_EMULATOR_INFO=%s viperkv ...", infoPath)
	p("")
	for _, n := range names {
		env, err := info.WorkloadIdentityEnv(n)
		if err != nil {
			continue // not federated
		}
		p("%d. AKS workload identity as %q (a service account token the emulator signs, renewed", step, n)
		step++
		p("   every few minutes). In the shell that runs your app, as in the pod:")
		for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"} {
			p("     export %s=%s", k, env[k])
		}
		p("   Go:   azidentity.NewWorkloadIdentityCredential with the transport of kvtest.Info.Client()")
		p("         (or DisableInstanceDiscovery: true and a transport trusting the CA file).")
		if info.ProxyURL != "" {
			p("   Any SDK through the proxy (2.): these variables, or AZURE_AUTHORITY_HOST as AKS sets it,")
			p("         https://login.microsoftonline.com/, which reaches the emulator through the proxy.")
		}
		p("   CLI:  VIPERKV_EMULATOR_INFO=%s viperkv check --credential workload-identity ...", infoPath)
		p("")
	}
	p("OpenID Connect discovery: %s", info.OIDCDiscoveryURL)
	p("Press Ctrl+C to stop.")
}
