package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/spf13/cobra"

	"github.com/viperkv/viperkv/internal/emuinfo"
	"github.com/viperkv/viperkv/kvtest"
)

// ctlFlags are the flags of viperkv emulator secret: which emulator, as whom.
type ctlFlags struct {
	info     string
	identity string
	timeout  time.Duration
}

// newEmulatorSecretCmd returns "secret", the subcommands that change the secrets of a
// running standalone emulator. They go through the emulator's own Key Vault API, with the
// real SDK and a managed identity of the emulator that may write secrets (Key Vault
// Secrets Officer), as a rotation job on Azure would.
func newEmulatorSecretCmd() *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Set, disable, enable or delete a secret in a running emulator",
		Long: `Change a secret of a running emulator (viperkv emulator --info FILE), to watch
viperkv run --watch or an app's hot reload react: a new version, a disabled or re-enabled
version, a deleted secret.

The commands find the emulator through its info file (--info, default
$VIPERKV_EMULATOR_INFO) and talk to its Key Vault API with the Azure SDK as a managed
identity of the emulator (--identity, default rotator), which needs the role Key Vault
Secrets Officer on the vault (testdata/emulator-seed.yaml gives it to rotator).

VAULT is a vault's name (myvault), host (myvault.vault.azure.net) or URL. Nothing here
prints a secret value.`,
		Example: `  export VIPERKV_EMULATOR_INFO=/tmp/kv.json
  viperkv emulator secret set myvault db-conn -            # the value from stdin (not in shell history)
  viperkv emulator secret set myvault db-conn --from-file conn.txt --content-type text/plain
  viperkv emulator secret disable myvault db-conn          # the latest version (or --version)
  viperkv emulator secret enable myvault db-conn
  viperkv emulator secret delete myvault db-conn`,
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.info, "info", "", "the emulator's info file (default $"+emulatorInfoEnv+")")
	pf.StringVar(&f.identity, "identity", "rotator", "the emulator's user-assigned identity to act as (\"system\" for the system-assigned one); it needs Key Vault Secrets Officer")
	pf.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the emulator")
	_ = cmd.MarkPersistentFlagFilename("info", "json")
	cmd.AddCommand(newSecretSetCmd(&f), newSecretEnabledCmd(&f, true), newSecretEnabledCmd(&f, false), newSecretDeleteCmd(&f))
	return cmd
}

func newSecretSetCmd(f *ctlFlags) *cobra.Command {
	var fromFile, contentType string
	cmd := &cobra.Command{
		Use:   "set VAULT NAME [VALUE | -]",
		Short: "Store a new version of a secret",
		Long: `Store a new version of a secret (the secret is created if it does not exist). The value
is VALUE, or stdin with "-" or --from-file -, or a file's content with --from-file PATH,
taken exactly as it is (a trailing newline included: use printf '%s', not echo).

A value on the command line lands in the shell's history and in the process list: prefer
"-" or --from-file for anything but throwaway values. The value is never printed.`,
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
			value, err := secretValue(cmd, args, fromFile)
			if err != nil {
				return err
			}
			return f.do(cmd, args[0], func(ctx context.Context, c *azsecrets.Client, host string) (string, error) {
				p := azsecrets.SetSecretParameters{Value: &value}
				if cmd.Flags().Changed("content-type") {
					p.ContentType = &contentType
				}
				r, err := c.SetSecret(ctx, args[1], p, nil)
				if err != nil {
					return "", err
				}
				msg := fmt.Sprintf("%s/%s: new version %s", host, args[1], r.ID.Version())
				if r.ContentType != nil && *r.ContentType != "" {
					msg += " (content type " + *r.ContentType + ")"
				}
				return msg, nil
			})
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", `read the value from this file ("-": stdin)`)
	cmd.Flags().StringVar(&contentType, "content-type", "", "the version's content type, such as text/plain or application/json")
	return cmd
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
		Long:  short + ". Without --version, the latest version.",
		Args:  cobra.ExactArgs(2),
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
		Args:  cobra.ExactArgs(2),
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

// do reaches the emulator's vault as f.identity, runs op and prints what it says.
func (f *ctlFlags) do(cmd *cobra.Command, vault string, op func(context.Context, *azsecrets.Client, string) (string, error)) error {
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
	msg, err := op(ctx, c, host)
	if err != nil {
		return fmt.Errorf("%s as %s: %s", cmd.Name(), f.identity, ctlReason(err))
	}
	fmt.Fprintln(cmd.OutOrStdout(), msg)
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
		if re.StatusCode == http.StatusForbidden && body.Error.InnerError.Code != "SecretDisabled" {
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
