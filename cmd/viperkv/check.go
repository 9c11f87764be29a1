package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/viperkv/viperkv"
)

func newCheckCmd() *cobra.Command {
	var (
		lf         loadFlags
		output     string
		environ    bool
		allowEmpty bool
		// minValidityFlag is --min-validity as given: days (14d) or a duration.
		minValidityFlag string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Resolve every Key Vault reference and report its status, never its value",
		Long: `Load the configuration the way an app using viperkv does (the file, then environment
variables under --env-prefix, and --env-key keys that exist only in the environment),
resolve every Key Vault reference with the managed identity, and print one row per
reference: config key, vault, secret, version, status and the time taken. Secret values
are never printed.

Statuses are App Service's (Resolved, SecretNotFound, AccessToKeyVaultDenied,
MSINotEnabled, ...) plus HostNotAllowed, SecretDisabled, Throttled, SecretExpired,
SecretNotYetValid, ForbiddenByFirewall (the vault's firewall refuses this network) and
ForbiddenByConnection (the vault takes only its private endpoint); each reason names the
fix.

Against Azure, check also looks up the DNS of each vault host (DNS only: nothing is sent
to the vault). A host whose CNAME chain goes through <vault>.privatelink.vaultcore.azure.net
(the vault has a private endpoint) but that resolves to a public address gets a warning:
the private DNS zone is not linked to this network. Warnings do not change the exit status.

Nothing to check is an error, so that a deployment gate does not pass because its flags
were forgotten or name the wrong file: without --config, --environ, --env-key or
--vault-source, or when the configuration (and, with --environ, the environment) holds no
reference at all and no --vault-source matched a secret (a misspelled prefix), check
exits 2. Pass --allow-empty when no reference is expected: check then exits 0.

A reference whose secret is a certificate (Key Vault's PKCS#12 or PEM) gets a row with
its subject, serial, expiry and days left; --min-validity 14d fails the check (exit 1)
for a certificate that expires sooner.

Exit status: 0 when every reference resolves, 1 when any fails, 2 for usage errors
(unknown flag, unreadable configuration file, unknown --credential, nothing to check).`,
		Example: `  # Before deploying: does this identity reach every secret?
  viperkv check --config config.yaml --env-prefix APP --env-key api.key

  # Before deploying: every certificate valid for two more weeks?
  viperkv check --config config.yaml --min-validity 14d

  # Machine-readable, for a pipeline
  viperkv check --config config.yaml --output json

  # From a laptop, against real Azure, as the account of az login
  viperkv check --config config.yaml --credential azure-cli

  # Against the local emulator (viperkv emulator --info /tmp/kv.json)
  VIPERKV_EMULATOR_INFO=/tmp/kv.json viperkv check --config testdata/quickstart.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usageError("--output %q: want table or json", output)
			}
			if lf.config == "" && !environ && len(lf.envKeys) == 0 && len(lf.vaultSources) == 0 && !allowEmpty {
				return usageError("nothing to check: pass --config FILE, --environ, --vault-source VAULT (or --env-key KEY), or --allow-empty to accept an empty check")
			}
			minValidity, err := parseMinValidity(minValidityFlag)
			if err != nil {
				return err
			}
			return runCheck(cmd, &lf, output, environ, allowEmpty, minValidity)
		},
	}
	lf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&environ, "environ", false, "also check references in every environment variable (what viperkv run resolves)")
	cmd.Flags().StringVar(&minValidityFlag, "min-validity", "", "fail when a certificate expires sooner than this: days (14d) or a duration (336h)")
	cmd.Flags().BoolVar(&allowEmpty, "allow-empty", false, "exit 0 when there is nothing to check (no flag naming a source, or no reference found) instead of 2")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]cobra.Completion{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runCheck(cmd *cobra.Command, lf *loadFlags, output string, environ, allowEmpty bool, minValidity time.Duration) error {
	out := cmd.OutOrStdout()
	v, err := lf.viper()
	if err != nil {
		return err
	}
	var refs *envRefs
	if environ {
		refs = addEnvRefs(v, os.Environ())
	}
	p, err := lf.provider(cmd, v)
	if err != nil {
		return err
	}
	if err := loadInterruptibly(cmd, p, "nothing checked"); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		// Otherwise a *LoadError: the statuses say everything it says; VaultSources the rest.
	}
	status := p.Status()
	sources := p.VaultSources()
	imported := 0
	for _, vs := range sources {
		imported += vs.Imported
		if vs.Err != nil {
			imported++ // a source that failed to list is something to report
		}
	}
	if len(status) == 0 && imported == 0 && !allowEmpty {
		return usageError("nothing to check: no Key Vault reference in %s; pass --allow-empty if none is expected", checkedSources(lf, environ))
	}
	failed := 0
	for _, st := range status {
		if st.Status != viperkv.StatusResolved && !st.OptionalMissing() {
			failed++
		}
	}
	sourcesFailed := 0
	for _, vs := range sources {
		if vs.Err != nil {
			sourcesFailed++
		}
	}
	certs := certificates(status, p.Viper(), minValidity, time.Now())
	tooSoon := 0
	for _, c := range certs {
		if c.TooSoon {
			tooSoon++
		}
	}
	var dns []dnsWarning
	if lf.emulatorTenant == "" { // the emulator routes vault hosts itself: their DNS would say nothing of it
		dns = diagnoseVaultDNS(cmd.Context(), dialNameServer, vaultHosts(status, sources))
	}
	if output == "json" {
		err = writeCheckJSON(out, status, refs, failed, certs, dns)
	} else {
		err = writeCheckTable(out, status, refs, failed)
		if err == nil {
			err = writeDNSWarnings(out, dns)
		}
		if err == nil {
			err = writeCertificates(out, certs, status, refs)
		}
		if err == nil && tooSoon > 0 {
			_, err = fmt.Fprintf(out, "\n%d certificate(s) expire within --min-validity %s.\n", tooSoon, minValidity)
		}
		if err == nil && len(sources) > 0 {
			err = writeVaultSources(out, sources)
		}
	}
	if err != nil {
		return err
	}
	if failed > 0 || sourcesFailed > 0 || tooSoon > 0 {
		return exitStatus(1)
	}
	return nil
}

// checkedSources names where check looked for references, for people.
func checkedSources(lf *loadFlags, environ bool) string {
	var where []string
	if lf.config != "" {
		where = append(where, lf.config)
	}
	if len(lf.envKeys) > 0 {
		where = append(where, "--env-key "+strings.Join(lf.envKeys, ", "))
	}
	if environ {
		where = append(where, "the environment")
	}
	for _, vs := range lf.vaultSources {
		// A vault source that imports nothing is most often a misspelled prefix or tag.
		where = append(where, "--vault-source "+vs+" (no secret matched)")
	}
	if len(where) > 1 {
		return strings.Join(where[:len(where)-1], ", ") + " or " + where[len(where)-1]
	}
	return strings.Join(where, "")
}

func writeCheckTable(out io.Writer, status []viperkv.ReferenceStatus, refs *envRefs, failed int) error {
	if len(status) == 0 {
		_, err := fmt.Fprintln(out, "No Key Vault references found.")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVAULT\tSECRET\tVERSION\tSTATUS\tTOOK")
	left := 0 // optional references left out: warnings
	for _, st := range status {
		shown := string(st.Status)
		if st.OptionalMissing() {
			shown += " (optional: left out)"
			left++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", refs.display(st.Key), dash(st.Reference.Vault), dash(st.Reference.Name),
			dash(st.Version), shown, st.Took.Round(100*time.Microsecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	if left > 0 {
		fmt.Fprintf(out, "%d optional reference(s) left out (a warning, not a failure):\n", left)
		for _, st := range status {
			if st.OptionalMissing() {
				fmt.Fprintf(out, "  %s: %s: %s\n", refs.display(st.Key), st.Status, st.Reason)
			}
		}
	}
	if failed == 0 {
		_, err := fmt.Fprintf(out, "%d of %d references resolved.\n", len(status)-left, len(status))
		return err
	}
	fmt.Fprintf(out, "%d of %d references failed:\n", failed, len(status))
	for _, st := range status {
		if st.Status != viperkv.StatusResolved && !st.OptionalMissing() {
			fmt.Fprintf(out, "  %s: %s: %s\n", refs.display(st.Key), st.Status, st.Reason)
		}
	}
	return nil
}

// writeVaultSources prints a row per --vault-source: what it listed, imported and skipped.
func writeVaultSources(out io.Writer, sources []viperkv.VaultSourceStatus) error {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VAULT SOURCE\tLISTED\tIMPORTED\tSKIPPED")
	for _, vs := range sources {
		var skipped []string
		for _, why := range slices.Sorted(maps.Keys(vs.Skipped)) {
			skipped = append(skipped, fmt.Sprintf("%d %s", vs.Skipped[why], why))
		}
		if vs.Err != nil {
			skipped = append(skipped, "list failed: "+strings.TrimPrefix(vs.Err.Error(), "viperkv: "))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", vs.Vault, vs.Listed, vs.Imported, dash(strings.Join(skipped, ", ")))
	}
	return tw.Flush()
}

// checkRow is one reference in check's JSON output.
type checkRow struct {
	Key string `json:"key"`
	// Env is the environment variable holding the reference, for --environ rows.
	Env string `json:"env,omitempty"`
	// Reference is the reference as written in the configuration.
	Reference     string  `json:"reference"`
	Vault         string  `json:"vault"`
	Secret        string  `json:"secret"`
	PinnedVersion string  `json:"pinned_version"`
	Version       string  `json:"version"`
	Status        string  `json:"status"`
	Reason        string  `json:"reason"`
	TookMS        float64 `json:"took_ms"`
	// Certificate describes the certificate the reference resolved to, if it is one.
	Certificate *certInfo `json:"certificate,omitempty"`
	// Optional is the reference's Optional=true; LeftOut says its secret is missing,
	// disabled or forbidden, so its key was left out: a warning, not a failure.
	Optional bool `json:"optional,omitempty"`
	LeftOut  bool `json:"left_out,omitempty"`
}

func writeCheckJSON(out io.Writer, status []viperkv.ReferenceStatus, refs *envRefs, failed int, certs map[string]*certInfo, dns []dnsWarning) error {
	doc := struct {
		References []checkRow `json:"references"`
		Resolved   int        `json:"resolved"`
		Failed     int        `json:"failed"`
		// DNSWarnings are vault hosts whose private endpoint this network's DNS misses.
		DNSWarnings []dnsWarning `json:"dns_warnings,omitempty"`
	}{References: []checkRow{}, Resolved: resolvedCount(status), Failed: failed, DNSWarnings: dns}
	for _, st := range status {
		doc.References = append(doc.References, checkRow{
			Key:           refs.display(st.Key),
			Env:           refs.name(st.Key),
			Reference:     st.Written,
			Vault:         st.Reference.Vault,
			Secret:        st.Reference.Name,
			PinnedVersion: st.Reference.Version,
			Version:       st.Version,
			Status:        string(st.Status),
			Reason:        st.Reason,
			TookMS:        math.Round(float64(st.Took)/float64(time.Millisecond)*10) / 10,
			Certificate:   certs[st.Key],
			Optional:      st.Optional,
			LeftOut:       st.OptionalMissing(),
		})
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// resolvedCount counts the references that resolved.
func resolvedCount(status []viperkv.ReferenceStatus) int {
	n := 0
	for _, st := range status {
		if st.Status == viperkv.StatusResolved {
			n++
		}
	}
	return n
}
