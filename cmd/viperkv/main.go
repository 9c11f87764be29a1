// Command viperkv resolves Key Vault references in Viper configurations and runs a local
// emulator of Entra ID, managed identity and Key Vault.
package main

import (
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:          "viperkv",
		Short:        "Key Vault references for Viper configurations",
		SilenceUsage: true,
	}
	root.AddCommand(newEmulatorCmd())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}
