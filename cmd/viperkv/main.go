// Command viperkv resolves Key Vault references in Viper configurations and runs a local
// emulator of Entra ID, managed identity and Key Vault.
//
//	viperkv check   --config app.yaml         one row per reference: key, vault, secret, status; never a value
//	viperkv resolve --config app.yaml         the resolved configuration, secret values masked
//	viperkv render  --template t --out f      a Go template over the resolved configuration, into a 0600 file
//	viperkv run     --config app.yaml -- CMD  run CMD with references in its environment resolved
//	viperkv emulator --seed seed.yaml         a local Entra ID + managed identity + Key Vault
//	viperkv version
//
// Exit status: 0 on success, 1 when a reference fails (or another error), 2 for usage
// errors; viperkv run passes the command's own status through.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// exitError ends the command with a status. A nil err means the command already said
// what went wrong (a table of failed references, a child's own exit status).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a mistake in how the command was called: exit status 2.
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// exitStatus ends the command with code, saying nothing more.
func exitStatus(code int) error { return &exitError{code: code} }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "viperkv",
		Short: "Key Vault references for Viper configurations",
		Long: `viperkv resolves Azure Key Vault references such as
  @KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)
in Viper configuration files and environment variables, with the machine's managed identity
(or, with --credential, the account of az login, DefaultAzureCredential or AKS workload
identity).

Against the local emulator (viperkv emulator), set VIPERKV_EMULATOR_INFO to the emulator's
info file: the commands then trust its CA, reach it for *.vault.azure.net and use its
managed identity endpoint, with no change to the configuration.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	emulator := newEmulatorCmd()
	// viperkv emulator secret: registered here until emulator.go registers it itself.
	if !slices.ContainsFunc(emulator.Commands(), func(c *cobra.Command) bool { return c.Name() == "secret" }) {
		emulator.AddCommand(newEmulatorSecretCmd())
	}
	root.AddCommand(newCheckCmd(), newResolveCmd(), newRenderCmd(), newRunCmd(), emulator, newVersionCmd())
	root.SetFlagErrorFunc(suggestFlag) // inherited by every subcommand
	return root
}

// execute runs the command line and returns the exit status. Errors returned by a
// command's RunE are runtime failures (status 1 unless an *exitError says otherwise);
// every other error comes from cobra itself (unknown command or flag, bad flag value,
// wrong number of arguments) and is a usage error (status 2).
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	markRunErrors(root)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = &exitError{code: 2, err: err}
	}
	if ee.err != nil {
		fmt.Fprintln(stderr, prefixed(ee.err))
		if ee.code == 2 {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
	}
	return ee.code
}

// prefixed returns the message of err after "viperkv: ", once: the library's errors
// already start with it.
func prefixed(err error) string { return "viperkv: " + bare(err) }

// bare returns the message of err without the library's "viperkv: " prefix, to wrap it.
func bare(err error) string { return strings.TrimPrefix(err.Error(), "viperkv: ") }

// markRunErrors wraps every RunE so that its errors are told apart from cobra's own.
func markRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := run(cmd, args)
			var ee *exitError
			if err == nil || errors.As(err, &ee) {
				return err
			}
			return &exitError{code: 1, err: err}
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}
