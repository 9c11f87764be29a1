package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/spf13/cobra"

	"github.com/viperkv/viperkv/internal/emuinfo"
	"github.com/viperkv/viperkv/internal/suggest"
	"github.com/viperkv/viperkv/kvtest"
)

// ctlFlags are the flags of viperkv emulator secret: which emulator, as whom.
type ctlFlags struct {
	info     string
	identity string
	timeout  time.Duration
}

// ctlPoll is how often recover and purge ask the vault again while a deletion or a
// recovery completes.
const ctlPoll = 200 * time.Millisecond

// newEmulatorSecretCmd returns "secret", the subcommands that read and change the secrets
// of a running standalone emulator. They go through the emulator's own Key Vault API, with
// the real SDK and a managed identity of the emulator that may write secrets (Key Vault
// Secrets Officer), as a rotation job on Azure would.
func newEmulatorSecretCmd() *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "List, read, set, disable, enable, delete, recover or purge a secret in a running emulator",
		Long: `Read or change the secrets of a running emulator (viperkv emulator --info FILE), to
watch viperkv run --watch or an app's hot reload react: a new version, a disabled or
re-enabled version, a deleted, recovered or purged secret.

The commands find the emulator through its info file (--info, default
$VIPERKV_EMULATOR_INFO) and talk to its Key Vault API with the Azure SDK as a managed
identity of the emulator (--identity, default rotator), which needs the role Key Vault
Secrets Officer on the vault (testdata/emulator-seed.yaml gives it to rotator).

VAULT is a vault's name (myvault), host (myvault.vault.azure.net) or URL. Only get prints
a secret value; list and versions show names, attributes, content types and tags.

Exit status: 0 on success, 1 when the vault refuses (the reason is printed: status, error
code, message), 2 for a mistake in the command line (an unknown command, vault or
identity, a missing argument).`,
		Example: `  export VIPERKV_EMULATOR_INFO=/tmp/kv.json
  viperkv emulator secret list myvault
  viperkv emulator secret set myvault db-conn -            # the value from stdin (not in shell history)
  viperkv emulator secret set myvault db-conn --from-file conn.txt --content-type text/plain --tag env=dev
  viperkv emulator secret versions myvault db-conn
  viperkv emulator secret get myvault db-conn              # prints the value
  viperkv emulator secret disable myvault db-conn          # the latest version (or --version)
  viperkv emulator secret enable myvault db-conn
  viperkv emulator secret delete myvault db-conn
  viperkv emulator secret recover myvault db-conn          # waits until it is readable again
  viperkv emulator secret delete myvault db-conn && viperkv emulator secret purge myvault db-conn`,
		Args: subcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.info, "info", "", "the emulator's info file (default $"+emulatorInfoEnv+")")
	pf.StringVar(&f.identity, "identity", "rotator", "the emulator's user-assigned identity to act as (\"system\" for the system-assigned one); it needs Key Vault Secrets Officer")
	pf.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the emulator, including recover's and purge's waits")
	_ = cmd.MarkPersistentFlagFilename("info", "json")
	cmd.AddCommand(newSecretListCmd(&f), newSecretVersionsCmd(&f), newSecretGetCmd(&f), newSecretSetCmd(&f),
		newSecretEnabledCmd(&f, true), newSecretEnabledCmd(&f, false), newSecretDeleteCmd(&f),
		newSecretRecoverCmd(&f), newSecretPurgeCmd(&f))
	return cmd
}

// subcommandArgs refuses arguments to a command whose arguments are subcommands: an
// unknown one is a usage error (exit status 2) that suggests the nearest name, where cobra
// would print the help and exit 0.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	switch best := suggest.Nearest(args[0], names, 2); {
	case best != "":
		msg += " (did you mean " + best + "?)"
	case len(names) > 0:
		msg += " (its commands: " + strings.Join(names, ", ") + ")"
	}
	return errors.New(msg)
}

func newSecretSetCmd(f *ctlFlags) *cobra.Command {
	var fromFile, contentType string
	var tags []string
	cmd := &cobra.Command{
		Use:   "set VAULT NAME [VALUE | -]",
		Short: "Store a new version of a secret",
		Long: `Store a new version of a secret (the secret is created if it does not exist). The value
is VALUE, or stdin with "-" or --from-file -, or a file's content with --from-file PATH,
taken exactly as it is (a trailing newline included: use printf '%s', not echo).

--content-type and --tag (KEY=VALUE, repeatable) set the new version's content type and
tags; like Key Vault, a version without them has none (they are not carried over from
the previous version).

A value on the command line lands in the shell's history and in the process list: prefer
"-" or --from-file for anything but throwaway values. The value is never printed.`,
		Example: `  printf '%s' "$NEW_CONN" | viperkv emulator secret set myvault db-conn -
  viperkv emulator secret set myvault db-conn --from-file conn.txt --content-type text/plain
  viperkv emulator secret set myvault api-key - --tag env=dev --tag owner=team-a < key.txt`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) < 2 || len(args) > 3:
				return fmt.Errorf("want VAULT NAME [VALUE | -], got %d argument(s)", len(args))
			case len(args) == 3 && fromFile != "":
				return errors.New("give the value as an argument or with --from-file, not both")
			case len(args) == 2 && fromFile == "":
				return errors.New("missing the value: VALUE, - (stdin) or --from-file PATH")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			tagMap, err := parseTags(tags)
			if err != nil {
				return err
			}
			value, err := secretValue(cmd, args, fromFile)
			if err != nil {
				return err
			}
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				p := azsecrets.SetSecretParameters{Value: &value, Tags: tagMap}
				if cmd.Flags().Changed("content-type") {
					p.ContentType = &contentType
				}
				r, err := c.SetSecret(ctx, args[1], p, nil)
				if err != nil {
					return "", err
				}
				msg := fmt.Sprintf("%s/%s: new version %s", host, args[1], r.ID.Version())
				var notes []string
				if r.ContentType != nil && *r.ContentType != "" {
					notes = append(notes, "content type "+*r.ContentType)
				}
				if len(r.Tags) > 0 {
					notes = append(notes, "tags "+formatTags(r.Tags))
				}
				if len(notes) > 0 {
					msg += " (" + strings.Join(notes, "; ") + ")"
				}
				return msg, nil
			})
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", `read the value from this file ("-": stdin)`)
	cmd.Flags().StringVar(&contentType, "content-type", "", "the version's content type, such as text/plain or application/json")
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "a tag of the version, KEY=VALUE; repeatable")
	return cmd
}

// parseTags parses --tag KEY=VALUE values; nil for none.
func parseTags(tags []string) (map[string]*string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	out := make(map[string]*string, len(tags))
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		switch {
		case !ok || strings.TrimSpace(k) == "":
			return nil, usageError("--tag %q: want KEY=VALUE", t)
		case out[k] != nil:
			return nil, usageError("--tag %s: given twice", k)
		}
		out[k] = to.Ptr(v)
	}
	return out, nil
}

// formatTags renders tags as k=v pairs sorted by key, comma-separated, quoting a key or
// value that holds a blank, a comma, an equals sign, a quote or a control character.
func formatTags(tags map[string]*string) string {
	if len(tags) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := ""
		if tags[k] != nil {
			v = *tags[k]
		}
		parts[i] = quoteField(k) + "=" + quoteField(v)
	}
	return strings.Join(parts, ",")
}

// quoteField quotes s (Go syntax) when it would not read back as one field of a table
// or a k=v list.
func quoteField(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || r == ',' || r == '=' || r == '"' || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

// newSecretListCmd returns "list VAULT": the secrets' names and attributes, never values.
func newSecretListCmd(f *ctlFlags) *cobra.Command {
	var deleted bool
	cmd := &cobra.Command{
		Use:   "list VAULT",
		Short: "List a vault's secrets: name, enabled, updated, content type, tags (never a value)",
		Long: `List a vault's secrets, one row each, sorted by name: the name, and the latest version's
enabled flag, last update (UTC), content type and tags. No value is read.

With --deleted, list the deleted secrets instead (those recover and purge act on): the
name, when it was deleted and when Key Vault would purge it. A secret whose deletion is
still completing (see viperkv emulator --deletion-window) is in neither list yet.`,
		Example: `  viperkv emulator secret list myvault
  # NAME     ENABLED  UPDATED               CONTENT-TYPE  TAGS
  # api-key  true     2026-05-04T10:00:00Z  -             -
  # db-conn  true     2026-05-04T10:02:13Z  text/plain    env=dev,owner=team-a
  viperkv emulator secret list myvault --deleted`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				if deleted {
					return listDeleted(ctx, c, host)
				}
				var rows []*azsecrets.SecretProperties
				for pager := c.NewListSecretPropertiesPager(nil); pager.More(); {
					page, err := pager.NextPage(ctx)
					if err != nil {
						return "", err
					}
					rows = append(rows, page.Value...)
				}
				if len(rows) == 0 {
					return host + ": no secrets", nil
				}
				slices.SortFunc(rows, func(a, b *azsecrets.SecretProperties) int { return strings.Compare(idName(a.ID), idName(b.ID)) })
				return table([]string{"NAME", "ENABLED", "UPDATED", "CONTENT-TYPE", "TAGS"}, len(rows), func(i int) []string {
					r := rows[i]
					var enabled *bool
					var updated *time.Time
					if r.Attributes != nil {
						enabled, updated = r.Attributes.Enabled, r.Attributes.Updated
					}
					return []string{quoteField(idName(r.ID)), formatBool(enabled), formatTime(updated), formatString(r.ContentType), formatTags(r.Tags)}
				}), nil
			})
		},
	}
	cmd.Flags().BoolVar(&deleted, "deleted", false, "list the deleted secrets (which recover and purge act on) instead")
	return cmd
}

// listDeleted is list --deleted: the deleted secrets, sorted by name.
func listDeleted(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
	var rows []*azsecrets.DeletedSecretProperties
	for pager := c.NewListDeletedSecretPropertiesPager(nil); pager.More(); {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return "", err
		}
		rows = append(rows, page.Value...)
	}
	if len(rows) == 0 {
		return host + ": no deleted secrets", nil
	}
	slices.SortFunc(rows, func(a, b *azsecrets.DeletedSecretProperties) int { return strings.Compare(idName(a.ID), idName(b.ID)) })
	return table([]string{"NAME", "DELETED", "SCHEDULED-PURGE"}, len(rows), func(i int) []string {
		r := rows[i]
		return []string{quoteField(idName(r.ID)), formatTime(r.DeletedDate), formatTime(r.ScheduledPurgeDate)}
	}), nil
}

// newSecretVersionsCmd returns "versions VAULT NAME": a secret's versions, never values.
func newSecretVersionsCmd(f *ctlFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "versions VAULT NAME",
		Short: "List a secret's versions: version, enabled, created, expires (never a value)",
		Long: `List every version of a secret, oldest first: the version ID, whether it is enabled, when
it was created and when it expires (UTC; "-" for never). Key Vault keeps creation times
to the second, so versions created within one second come in the vault's order. No
value is read. The version IDs are what disable, enable and get take as --version.`,
		Example: `  viperkv emulator secret versions myvault db-conn
  # VERSION                           ENABLED  CREATED               EXPIRES
  # 0f1e2d3c4b5a69788796a5b4c3d2e1f0  false    2026-05-04T10:00:00Z  -
  # 8a7b6c5d4e3f20112233445566778899  true     2026-05-04T10:02:13Z  2027-01-01T00:00:00Z`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				var rows []*azsecrets.SecretProperties
				for pager := c.NewListSecretPropertiesVersionsPager(args[1], nil); pager.More(); {
					page, err := pager.NextPage(ctx)
					if err != nil {
						return "", err
					}
					rows = append(rows, page.Value...)
				}
				if len(rows) == 0 {
					return fmt.Sprintf("%s/%s: no versions", host, args[1]), nil
				}
				created := func(p *azsecrets.SecretProperties) int64 {
					if p.Attributes == nil || p.Attributes.Created == nil {
						return 0
					}
					return p.Attributes.Created.UnixNano()
				}
				slices.SortStableFunc(rows, func(a, b *azsecrets.SecretProperties) int { return cmp.Compare(created(a), created(b)) })
				return table([]string{"VERSION", "ENABLED", "CREATED", "EXPIRES"}, len(rows), func(i int) []string {
					r := rows[i]
					a := r.Attributes
					if a == nil {
						a = &azsecrets.SecretAttributes{}
					}
					version := "-"
					if r.ID != nil {
						version = r.ID.Version()
					}
					return []string{version, formatBool(a.Enabled), formatTime(a.Created), formatTime(a.Expires)}
				}), nil
			})
		},
	}
}

// newSecretGetCmd returns "get VAULT NAME": the one command that prints a value.
func newSecretGetCmd(f *ctlFlags) *cobra.Command {
	var version string
	cmd := &cobra.Command{
		Use:   "get VAULT NAME",
		Short: "Print a secret's value (the only command that shows one)",
		Long: `Print the value of a secret's latest version (or --version's) to stdout, exactly as it is
stored: no newline is added unless stdout is a terminal, so $(...) and pipes get the
value itself. Nothing else is printed on success. A disabled version answers 403
SecretDisabled, a missing secret 404 SecretNotFound (exit status 1).`,
		Example: `  viperkv emulator secret get myvault db-conn
  viperkv emulator secret get myvault db-conn --version 8a7b6c5d4e3f20112233445566778899 > conn.txt`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, _ string) error {
				r, err := c.GetSecret(ctx, args[1], version, nil)
				if err != nil {
					return err
				}
				value := ""
				if r.Value != nil {
					value = *r.Value
				}
				out := cmd.OutOrStdout()
				if terminal(out) && !strings.HasSuffix(value, "\n") {
					value += "\n"
				}
				_, err = io.WriteString(out, value)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&version, "version", "", "the version to read (default: the latest)")
	return cmd
}

// terminal reports whether w is a terminal.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// secretValue returns the value set is given: the third argument, stdin ("-") or a file.
func secretValue(cmd *cobra.Command, args []string, fromFile string) (string, error) {
	src := fromFile
	if len(args) == 3 {
		if args[2] != "-" {
			return args[2], nil
		}
		src = "-"
	}
	if src == "-" {
		in := cmd.InOrStdin()
		if f, ok := in.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "viperkv: reading the value from stdin; end it with Ctrl+D")
			}
		}
		b, err := io.ReadAll(in)
		if err != nil {
			return "", fmt.Errorf("reading the value from stdin: %w", err)
		}
		return string(b), nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", usageError("--from-file: %v", err)
	}
	return string(b), nil
}

func newSecretEnabledCmd(f *ctlFlags, enabled bool) *cobra.Command {
	verb, past, short := "disable", "disabled", "Disable a version of a secret (reading it then answers 403 SecretDisabled)"
	if enabled {
		verb, past, short = "enable", "enabled", "Enable a disabled version of a secret again"
	}
	var version string
	cmd := &cobra.Command{
		Use:   verb + " VAULT NAME",
		Short: short,
		Long: short + `. Without --version, the latest version; the version IDs are in
"viperkv emulator secret versions VAULT NAME".`,
		Example: "  viperkv emulator secret " + verb + " myvault db-conn\n" +
			"  viperkv emulator secret " + verb + " myvault db-conn --version 8a7b6c5d4e3f20112233445566778899",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				p := azsecrets.UpdateSecretPropertiesParameters{SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(enabled)}}
				r, err := c.UpdateSecretProperties(ctx, args[1], version, p, nil)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("%s/%s: version %s %s", host, args[1], r.ID.Version(), past), nil
			})
		},
	}
	cmd.Flags().StringVar(&version, "version", "", "the version to "+verb+" (default: the latest)")
	return cmd
}

func newSecretDeleteCmd(f *ctlFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete VAULT NAME",
		Short: "Delete a secret, every version (soft delete: it stays recoverable)",
		Long: `Delete a secret, every version. As on Key Vault with soft delete, the secret becomes a
deleted secret that recover brings back and purge removes for good. The deletion takes
--deletion-window (of viperkv emulator, default 2s) to complete, as on Key Vault; recover
and purge wait for it.`,
		Example: `  viperkv emulator secret delete myvault db-conn`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				r, err := c.DeleteSecret(ctx, args[1], nil)
				if err != nil {
					return "", err
				}
				msg := fmt.Sprintf("%s/%s: deleted", host, args[1])
				if r.ScheduledPurgeDate != nil {
					msg += "; recoverable until " + r.ScheduledPurgeDate.UTC().Format(time.RFC3339)
				}
				return msg, nil
			})
		},
	}
}

// newSecretRecoverCmd returns "recover VAULT NAME", which waits until the secret is
// readable again: on Key Vault a recovery completes asynchronously.
func newSecretRecoverCmd(f *ctlFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "recover VAULT NAME",
		Short: "Recover a deleted secret, every version, and wait until it is readable again",
		Long: `Recover a deleted secret with every version, as they were (enabled or not, tags, content
types). On Key Vault a recovery completes asynchronously: the request is accepted at
once, and reading the secret answers 404 until it is back. recover waits for that (it
reads the secret every 200ms, never printing the value) and returns once the secret
answers, so the next command sees it. While the deletion itself is still completing
(409 ObjectIsBeingDeleted, right after delete) it waits too. Both waits end at --timeout
(default 30s), with exit status 1.

The identity needs the role Key Vault Secrets Officer (recover and get). A secret that is
not deleted answers 404 (exit status 1); see list --deleted.`,
		Example: `  viperkv emulator secret delete myvault db-conn
  viperkv emulator secret recover myvault db-conn
  # myvault.vault.azure.net/db-conn: recovered (latest version 8a7b...); readable again`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				name := args[1]
				var r azsecrets.RecoverDeletedSecretResponse
				err := whileBeingDeleted(ctx, func() (err error) {
					r, err = c.RecoverDeletedSecret(ctx, name, nil)
					return err
				})
				if err != nil {
					return "", err
				}
				msg := fmt.Sprintf("%s/%s: recovered", host, name)
				if r.ID != nil && r.ID.Version() != "" {
					msg += " (latest version " + r.ID.Version() + ")"
				}
				note, err := untilReadable(ctx, c, name)
				if err != nil {
					return "", fmt.Errorf("%s/%s: the vault accepted the recovery, but %w", host, name, err)
				}
				return msg + "; " + note, nil
			})
		},
	}
}

// newSecretPurgeCmd returns "purge VAULT NAME".
func newSecretPurgeCmd(f *ctlFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "purge VAULT NAME",
		Short: "Purge a deleted secret: remove it for good (it cannot be recovered)",
		Long: `Purge a deleted secret: every version is gone for good and recover answers 404. Only a
deleted secret can be purged (delete it first). Right after delete, while the deletion
completes, the vault answers 409 ObjectIsBeingDeleted: purge waits for it, up to --timeout.
As on Key Vault the purge itself completes after a moment (--deletion-window): until
then, setting a secret of that name answers 409 too.`,
		Example: `  viperkv emulator secret delete myvault db-conn
  viperkv emulator secret purge myvault db-conn`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				err := whileBeingDeleted(ctx, func() error {
					_, err := c.PurgeDeletedSecret(ctx, args[1], nil)
					return err
				})
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("%s/%s: purged (it cannot be recovered)", host, args[1]), nil
			})
		},
	}
}

// whileBeingDeleted calls op until the vault stops answering 409 ObjectIsBeingDeleted (a
// deletion or a purge still completing) or ctx ends, and returns op's last error.
func whileBeingDeleted(ctx context.Context, op func() error) error {
	for {
		err := op()
		if _, inner := vaultError(err); inner != "ObjectIsBeingDeleted" {
			return err
		}
		select {
		case <-ctx.Done():
			return err // the 409 says why
		case <-time.After(ctlPoll):
		}
	}
}

// untilReadable reads the secret name until the vault no longer answers 404 (a recovery
// completes asynchronously on Key Vault), or ctx ends. The value read is dropped. note
// says what the last answer was.
func untilReadable(ctx context.Context, c *azsecrets.Client, name string) (note string, err error) {
	began := time.Now()
	for {
		_, err := c.GetSecret(ctx, name, "", nil)
		status, inner := vaultError(err)
		switch {
		case err == nil:
			return "readable again", nil
		case status == http.StatusForbidden && inner == "SecretDisabled":
			return "its latest version is disabled (403 SecretDisabled), as it was before the deletion", nil
		case status == http.StatusForbidden:
			return "not confirmed: reading it answered 403 (" + ctlReason(err) + ")", nil
		case status != http.StatusNotFound && status != 0:
			return "", fmt.Errorf("reading it answered: %s", ctlReason(err))
		case status == 0 && ctx.Err() == nil:
			return "", fmt.Errorf("reading it failed: %s", ctlReason(err))
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("it was still not readable (404) after %s (--timeout): the recovery has not completed", time.Since(began).Round(100*time.Millisecond))
		case <-time.After(ctlPoll):
		}
	}
}

// vaultError returns the HTTP status and inner error code of a vault's error answer:
// 0 and "" for nil or an error that is no answer.
func vaultError(err error) (status int, inner string) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return 0, ""
	}
	if re.RawResponse != nil {
		var body struct {
			Error struct{ InnerError struct{ Code string } }
		}
		if b, err := azruntime.Payload(re.RawResponse); err == nil && json.Unmarshal(b, &body) == nil {
			inner = body.Error.InnerError.Code
		}
	}
	return re.StatusCode, inner
}

// table renders n rows under header, aligned, without a trailing newline.
func table(header []string, n int, row func(int) []string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for i := range n {
		fmt.Fprintln(tw, strings.Join(row(i), "\t"))
	}
	_ = tw.Flush()
	return strings.TrimSuffix(b.String(), "\n")
}

// idName is a secret ID's name, "-" when there is none.
func idName(id *azsecrets.ID) string {
	if id == nil || id.Name() == "" {
		return "-"
	}
	return id.Name()
}

// formatBool renders an attribute that may be missing ("-").
func formatBool(b *bool) string {
	if b == nil {
		return "-"
	}
	return strconv.FormatBool(*b)
}

// formatTime renders a time in UTC, RFC 3339, or "-" when there is none.
func formatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// formatString renders a string attribute, "-" when empty, quoted as quoteField does.
func formatString(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return quoteField(*s)
}

// do reaches the emulator's vault as f.identity, runs op and prints the line it returns.
func (f *ctlFlags) do(cmd *cobra.Command, vault string, op func(context.Context, *azsecrets.Client, string) (string, error)) error {
	return f.run(cmd, vault, func(ctx context.Context, c *azsecrets.Client, host string) error {
		msg, err := op(ctx, c, host)
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), msg)
		return nil
	})
}

// run reaches the emulator's vault as f.identity and runs op, which prints what it has to;
// an error of op is said in one line, with the vault's reason.
func (f *ctlFlags) run(cmd *cobra.Command, vault string, op func(context.Context, *azsecrets.Client, string) error) error {
	name, path := "--info", f.info
	if path == "" {
		name, path = emulatorInfoEnv, os.Getenv(emulatorInfoEnv)
	}
	if path == "" {
		return usageError("which emulator? give --info FILE or set %s (viperkv emulator --info FILE writes it)", emulatorInfoEnv)
	}
	if f.timeout <= 0 {
		return usageError("--timeout must be positive")
	}
	info, hc, err := openEmulator(name, path)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	host, err := emulatorVault(info, vault)
	if err != nil {
		return err
	}
	id, err := emulatorIdentity(info, f.identity)
	if err != nil {
		return err
	}
	co := azcore.ClientOptions{Transport: noRedirects(hc)}
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: co, ID: id})
	if err != nil {
		return fmt.Errorf("managed identity: %w", err)
	}
	c, err := azsecrets.NewClient("https://"+host, cred, &azsecrets.ClientOptions{ClientOptions: co})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	if err := op(ctx, c, host); err != nil {
		reason := ctlReason(err)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			reason = fmt.Sprintf("no answer within --timeout %s", f.timeout)
		}
		return fmt.Errorf("%s as %s: %s", cmd.Name(), f.identity, reason)
	}
	return nil
}

// emulatorVault returns the production host of the emulator's vault that arg names.
func emulatorVault(info *emuinfo.Info, arg string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(arg), "https://"), "/"))
	if _, ok := info.Vaults[h]; ok && !strings.Contains(h, ".") {
		h += ".vault.azure.net"
	}
	if _, ok := info.VaultHosts[h]; ok {
		return h, nil
	}
	return "", usageError("vault %q: the emulator has no such vault (it has %s)", arg, strings.Join(info.VaultNames(), ", "))
}

// emulatorIdentity returns the managed identity ID of the emulator's identity name.
func emulatorIdentity(info *emuinfo.Info, name string) (azidentity.ManagedIDKind, error) {
	if name == kvtest.SystemIdentityName {
		if info.SystemIdentity == nil {
			return nil, usageError("--identity system: the emulator's system-assigned identity is disabled")
		}
		return nil, nil // the default: system-assigned
	}
	if id, ok := info.Identities[name]; ok && id.ClientID != "" {
		return azidentity.ClientID(id.ClientID), nil
	}
	names := []string{kvtest.SystemIdentityName}
	for n := range info.Identities {
		names = append(names, n)
	}
	slices.Sort(names)
	return nil, usageError("--identity %s: the emulator has no such identity (it has %s); a seed identity with role Key Vault Secrets Officer on the vault may change secrets",
		name, strings.Join(names, ", "))
}

// ctlReason says why a request failed in one line: the vault's status, error codes and
// message, or the credential's first line. Neither holds a secret value.
func ctlReason(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("the vault answered %d %s", re.StatusCode, re.ErrorCode)
		var body struct {
			Error struct {
				Message    string
				InnerError struct{ Code string }
			}
		}
		if re.RawResponse != nil {
			if b, err := azruntime.Payload(re.RawResponse); err == nil && json.Unmarshal(b, &body) == nil {
				if c := body.Error.InnerError.Code; c != "" {
					msg += " (" + c + ")"
				}
				if m := body.Error.Message; m != "" {
					msg += ": " + strings.TrimSuffix(firstLine(m), ".")
				}
			}
		}
		// Not for a disabled version, nor a purge the vault's purge protection refuses.
		if re.StatusCode == http.StatusForbidden && (body.Error.InnerError.Code == "ForbiddenByRbac" ||
			body.Error.InnerError.Code == "" && strings.Contains(body.Error.Message, "not authorized")) {
			msg += "; the identity needs the role Key Vault Secrets Officer on the vault"
		}
		return msg
	}
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) {
		return "no token from the emulator's identity endpoint: " + firstLine(err.Error())
	}
	return firstLine(err.Error())
}

// firstLine keeps an SDK error to its first line: the rest is a response dump.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}
