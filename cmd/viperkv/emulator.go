package main

import (
	"context"
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
prints how to point applications at it, and serves until interrupted (Ctrl+C or SIGTERM).`,
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
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "where to write the CA certificate PEM (default: emulator-ca.pem next to the info file)")
	cmd.Flags().DurationVar(&f.tokenLifetime, "token-lifetime", kvtest.DefaultTokenLifetime,
		"lifetime of issued tokens; 5m or less makes MSAL fetch a new token for every call")
	return cmd
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
	opts := []kvtest.Option{kvtest.WithTokenLifetime(f.tokenLifetime)}
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
		caPath = filepath.Join(filepath.Dir(infoPath), "emulator-ca.pem")
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
	if err := os.WriteFile(caPath, srv.CACertPEM(), 0o644); err != nil {
		return fmt.Errorf("emulator: writing CA: %w", err)
	}
	info := srv.Info(caPath)
	// The info file is written last, so a program waiting for it finds the CA in place.
	if err := info.WriteFile(infoPath); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	printInstructions(out, &info, infoPath, srv)

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
	p("2. Any Azure SDK: use a vault URL above (https://127.0.0.1:PORT) and trust the CA file.")
	p("   Go:       azsecrets.ClientOptions{DisableChallengeResourceVerification: true} (the host is an IP,")
	p("             so it cannot match the challenge resource) and a transport trusting the CA file,")
	p("             or SSL_CERT_FILE=%s (Linux)", info.CAFile)
	p("   Python:   REQUESTS_CA_BUNDLE=%s (and verify_challenge_resource=False)", info.CAFile)
	p("   Node.js:  NODE_EXTRA_CA_CERTS=%s (and disableChallengeResourceVerification: true)", info.CAFile)
	p("   .NET/Java: add the CA to the trust store and disable challenge resource verification.")
	p("")
	p("3. viperkv apps, with no config edits (references keep https://<vault>.vault.azure.net):")
	p("   Go:   c, _ := kvtest.ReadInfo(%q)", infoPath)
	p("         hc, _ := c.Client()")
	p("         p, _ := viperkv.New(v, viperkv.WithTransport(hc))")
	p("   CLI:  VIPERKV_EMULATOR_INFO=%s viperkv ...", infoPath)
	p("")
	p("OpenID Connect discovery: %s", info.OIDCDiscoveryURL)
	p("Press Ctrl+C to stop.")
}
