package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

func newResolveCmd() *cobra.Command {
	var (
		lf     loadFlags
		format string
		reveal bool
	)
	cmd := &cobra.Command{
		Use:   "resolve",
		Short: "Print the resolved configuration (secret values masked unless --reveal)",
		Long: `Load the configuration as check does, resolve every Key Vault reference and print the
resolved configuration as YAML, JSON, TOML or environment variables. Secret values are
shown as ****** unless --reveal is given; a reference inside a longer string masks only
the secret ("Password=******;").

With --format env, each key becomes a variable: the key path uppercased with "." as "_",
after --env-prefix (database.conn with --env-prefix APP: APP_DATABASE_CONN), values quoted
for a POSIX shell.

When a reference does not resolve, nothing is printed and the exit status is 1 (run
viperkv check to see why).`,
		Example: `  viperkv resolve --config config.yaml
  viperkv resolve --config config.yaml --format json
  # Export into the current shell (values revealed: mind your terminal's scrollback)
  eval "$(viperkv resolve --config config.yaml --format env --env-prefix APP --reveal)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "yaml", "yml", "json", "toml", "env":
			default:
				return usageError("--format %q: want yaml, json, toml or env", format)
			}
			return runResolve(cmd, &lf, format, reveal)
		},
	}
	lf.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "yaml", "output format: yaml, json, toml or env")
	cmd.Flags().BoolVar(&reveal, "reveal", false, "print secret values instead of masking them")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]cobra.Completion{"yaml", "json", "toml", "env"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runResolve(cmd *cobra.Command, lf *loadFlags, format string, reveal bool) error {
	v, err := lf.viper()
	if err != nil {
		return err
	}
	p, err := lf.provider(cmd, v)
	if err != nil {
		return err
	}
	if err := loadInterruptibly(cmd, p, "nothing printed"); err != nil {
		return incomplete(err, "nothing printed: the configuration is incomplete")
	}
	settings := p.MaskedSettings()
	if reveal {
		settings = p.Viper().AllSettings()
	}
	return writeSettings(cmd.OutOrStdout(), settings, format, lf.envPrefix)
}

// writeSettings prints settings in a Viper config format, or as shell variables.
func writeSettings(out io.Writer, settings map[string]any, format, prefix string) error {
	if format == "env" {
		for _, line := range sortedEnv(envVars(settings, prefix)) {
			name, value, _ := strings.Cut(line, "=")
			if _, err := fmt.Fprintf(out, "%s=%s\n", name, shellQuote(value)); err != nil {
				return err
			}
		}
		return nil
	}
	switch format {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false) // "a&b" stays "a&b"
		enc.SetIndent("", "  ")
		return enc.Encode(settings)
	case "yaml", "yml":
		enc := yaml.NewEncoder(out)
		enc.SetIndent(2)
		if err := enc.Encode(settings); err != nil {
			return err
		}
		return enc.Close()
	}
	ev := viper.New()
	ev.SetConfigType(format)
	if err := ev.MergeConfigMap(settings); err != nil {
		return err
	}
	return ev.WriteConfigTo(out)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-./:@%+,=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
