package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/viperkv/viperkv/internal/emuinfo"
	"github.com/viperkv/viperkv/kvtest"
)

type emulatorFlags struct {
	seed, info, caFile string
	tokenLifetime      time.Duration
	deletionWindow     time.Duration
	recoveryDelay      time.Duration
	verbose            bool
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
sign in through its Entra ID token endpoint.

With --verbose it logs to stderr, one line each, what it serves: tokens issued (identity,
resource, endpoint), challenges, tokens validated, RBAC decisions (allowed or denied, with
the data action), secrets read (name and version), Event Grid handshakes, events
published and deliveries (status, attempt), and what the proxy tunnels or refuses. It
never logs a secret value, a token or the identity header. Without --verbose it prints
only the instructions above.

An emulator owns its --info path while it runs: a second emulator given the same path
refuses to start (exit status 1) and names the running one's pid and address, instead of
replacing the files the first one's users read. The lock is PATH.lock beside the info
file, held with flock(2) and removed on exit; the kernel releases it when the process
dies, so an info file left by a killed emulator does not block a new start. The existing
info file is also probed (its Entra listener must answer over TLS with its CA), which
catches an emulator that holds no lock (and is the only check on Windows).

"viperkv emulator secret" changes and reads the secrets of a running emulator.`,
		Example: `  viperkv emulator --seed testdata/emulator-seed.yaml --info /tmp/kv.json

  # log every token, RBAC decision, secret read and Event Grid delivery to stderr
  viperkv emulator --seed testdata/emulator-seed.yaml --info /tmp/kv.json --verbose 2>emulator.log

  # a second emulator on the same --info refuses (exit status 1):
  viperkv emulator --info /tmp/kv.json
  # viperkv: --info /tmp/kv.json belongs to a running emulator (pid 4242, proxy http://127.0.0.1:41234): ...`,
		Args: subcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runEmulator(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	cmd.Flags().StringVar(&f.seed, "seed", "", "YAML seed with vaults, secrets, identities and grants")
	cmd.Flags().StringVar(&f.info, "info", "", "where to write the info JSON (default: a temporary directory)")
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "where to write the CA certificate PEM (default: next to the info file, named after it: info.json -> info.ca.pem)")
	cmd.Flags().DurationVar(&f.tokenLifetime, "token-lifetime", kvtest.DefaultTokenLifetime,
		"lifetime of issued tokens; 5m or less makes MSAL fetch a new token for every call")
	cmd.Flags().DurationVar(&f.deletionWindow, "deletion-window", kvtest.DefaultDeletionWindow,
		"how long a DELETE or a purge takes, as on Key Vault: meanwhile purge, recover and re-create answer 409 ObjectIsBeingDeleted (0: instant)")
	cmd.Flags().DurationVar(&f.recoveryDelay, "recovery-delay", kvtest.DefaultRecoveryDelay,
		"how long a recover takes, as on Key Vault: meanwhile GET answers 404 (0: instant)")
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false,
		"log each token issued, RBAC decision, secret read and Event Grid handshake or delivery to stderr (never a secret value)")
	return cmd
}

// runEmulator starts the emulator and serves until ctx ends. The instructions go to out;
// with --verbose, the emulator's log goes to errOut.
func runEmulator(ctx context.Context, out, errOut io.Writer, f emulatorFlags) error {
	for name, d := range map[string]time.Duration{"deletion-window": f.deletionWindow, "recovery-delay": f.recoveryDelay} {
		if d < 0 {
			return usageError("--%s must not be negative", name)
		}
	}
	opts := []kvtest.Option{kvtest.WithTokenLifetime(f.tokenLifetime), kvtest.WithDeletionWindow(f.deletionWindow),
		kvtest.WithRecoveryDelay(f.recoveryDelay)}
	if f.verbose {
		// kvtest logs names, versions, identities, actions and statuses: never a value, a
		// token or the identity header.
		h := slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelInfo})
		opts = append(opts, kvtest.WithLogger(slog.New(h)), kvtest.WithErrorLog(slog.NewLogLogger(h, slog.LevelWarn)))
	}
	if f.seed != "" {
		seed, err := os.ReadFile(f.seed)
		if err != nil {
			return seedError(f.seed, err)
		}
		opts = append(opts, kvtest.WithSeed(seed))
	}
	if f.info != "" {
		// Before the listeners start: a refused emulator touches nothing. Released after
		// srv.Close has removed the files (deferred calls run last first).
		release, err := claimInfo(f.info)
		if err != nil {
			return err
		}
		defer release()
	}
	srv, err := kvtest.Start(opts...)
	if err != nil {
		if se := (*emuinfo.SeedError)(nil); errors.As(err, &se) {
			return seedError(f.seed, err)
		}
		return fmt.Errorf("emulator: %w", err)
	}
	// Close removes every file WriteInfo wrote: the CA and the tokens die with the
	// process, and an info file left behind would point at ports nobody serves.
	defer srv.Close()

	infoPath := f.info
	if infoPath == "" {
		// Only a directory the emulator chose itself is removed on exit.
		dir, err := os.MkdirTemp("", "viperkv-emulator-")
		if err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
		defer func() { _ = os.RemoveAll(dir) }()
		infoPath = filepath.Join(dir, "info.json")
	}
	if err := srv.WriteInfo(infoPath, f.caFile); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	info, err := emuinfo.Read(infoPath)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	if infoPath, err = filepath.Abs(infoPath); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	printInstructions(out, info, infoPath, srv)
	<-ctx.Done()
	fmt.Fprintln(out, "\nviperkv emulator: shutting down")
	return nil
}

// seedError is a seed that cannot be read or used: the user's mistake, like an unreadable
// configuration (exit status 2).
func seedError(path string, err error) error {
	return usageError("--seed %s: %s", path, strings.TrimPrefix(err.Error(), "kvtest: "))
}

// printInstructions tells the user how to reach the emulator. It never prints secret values.
func printInstructions(out io.Writer, info *emuinfo.Info, infoPath string, srv *kvtest.Server) {
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
	p("   Go:   p, _ := viperkv.New(v, viperkv.WithEmulatorInfo(%q))", infoPath)
	p("         (an explicit opt-in: refuses non-loopback addresses and warns on every Load)")
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
		p("   Go:   azidentity.NewWorkloadIdentityCredential through the proxy (2.), or with")
		p("         DisableInstanceDiscovery: true and a transport trusting the CA file.")
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
