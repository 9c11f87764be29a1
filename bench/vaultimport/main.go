// Command vaultimport measures loading whole vaults as configuration (WithVaultSource) on
// the kvtest emulator, against a list-then-sequential-GET loop (koanf's azkeyvault
// provider's approach), and prints a table. Run it with "go run ./bench/vaultimport".
//
// The workload is 800 secrets across 4 vaults, every vault request delayed by 10 ms. Both
// approaches use the real azsecrets client through an HTTP client of their own and the
// same credential; wall time covers creating the clients (or the Provider) and fetching.
//
// The last line is
//
//	vaultimport: viperkv_ms=<n> sequential_ms=<n> list_pages=<n> gets=<n> failed=<n>
//
// (list pages and GETs are viperkv's). With -check it exits 1 unless viperkv is at least
// 30x faster than the loop, with 800 GETs and no failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

const (
	vaults   = 4
	perVault = 200
	latency  = 10 * time.Millisecond
)

func main() {
	check := flag.Bool("check", false, "exit 1 when a target is missed")
	flag.Parse()
	ok, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vaultimport:", err)
		os.Exit(1)
	}
	if *check && !ok {
		os.Exit(1)
	}
}

func run() (bool, error) {
	srv, err := kvtest.Start()
	if err != nil {
		return false, err
	}
	defer srv.Close()
	var kvs []*kvtest.Vault
	for i := range vaults {
		kv := srv.AddVault(fmt.Sprintf("vault%d", i))
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
		for j := range perVault {
			kv.SetSecret(fmt.Sprintf("App%d--Section%02d--Key%03d", i, j%10, j), fmt.Sprintf("value-%d-%d", i, j))
		}
		kv.SetLatency(latency)
		kvs = append(kvs, kv)
	}
	count := func(op kvtest.Op) int64 {
		var n int64
		for _, kv := range kvs {
			n += kv.Count(op)
		}
		return n
	}
	// Warm the emulator once (its signing keys, the credential's token), as a real vault is.
	if _, err := srv.Credential().GetToken(context.Background(), tokenScope()); err != nil {
		return false, err
	}

	// viperkv: every vault as a source.
	for _, kv := range kvs {
		kv.ResetCounters()
	}
	start := time.Now()
	opts := []viperkv.Option{viperkv.WithCredential(srv.Credential()), viperkv.WithTransport(srv.NewClient()), viperkv.WithoutFileWatch()}
	for i := range vaults {
		opts = append(opts, viperkv.WithVaultSource(fmt.Sprintf("vault%d", i)))
	}
	p, err := viperkv.New(viper.New(), opts...)
	if err != nil {
		return false, err
	}
	lerr := p.Load(context.Background())
	viperkvWall := time.Since(start)
	pages, gets := count(kvtest.OpListSecrets), count(kvtest.OpGetSecret)
	failed := 0
	for _, st := range p.Status() {
		if st.Status != viperkv.StatusResolved {
			failed++
		}
	}
	if lerr != nil && failed == 0 {
		return false, lerr
	}
	if got := len(p.Status()); got != vaults*perVault {
		return false, fmt.Errorf("viperkv imported %d keys, want %d", got, vaults*perVault)
	}

	// The loop: list each vault, then GET each secret, one after another.
	start = time.Now()
	seqFailed, err := sequential(srv)
	if err != nil {
		return false, err
	}
	seqWall := time.Since(start)

	speedup := float64(seqWall) / float64(viperkvWall)
	ok := speedup >= 30 && gets == vaults*perVault && failed == 0 && seqFailed == 0
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "APPROACH\tWALL\tLIST PAGES\tGETS\tFAILED\n")
	fmt.Fprintf(tw, "viperkv (WithVaultSource x %d)\t%d ms\t%d\t%d\t%d\n", vaults, viperkvWall.Milliseconds(), pages, gets, failed)
	fmt.Fprintf(tw, "list, then sequential GETs (koanf)\t%d ms\t%d\t%d\t%d\n", seqWall.Milliseconds(), vaults*((perVault+24)/25), vaults*perVault, seqFailed)
	fmt.Fprintf(tw, "speed-up\t%.1fx\t\t\t(target >= 30x, 800 GETs, 0 failed)\n", speedup)
	tw.Flush()
	fmt.Printf("vaultimport: viperkv_ms=%d sequential_ms=%d list_pages=%d gets=%d failed=%d\n",
		viperkvWall.Milliseconds(), seqWall.Milliseconds(), pages, gets, failed)
	return ok, nil
}

// sequential lists each vault and GETs its secrets one after another, as koanf's
// azkeyvault provider does.
func sequential(srv *kvtest.Server) (int, error) {
	hc := srv.NewClient()
	failed := 0
	for i := range vaults {
		c, err := azsecrets.NewClient(fmt.Sprintf("https://vault%d.vault.azure.net", i), srv.Credential(),
			&azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hc}})
		if err != nil {
			return 0, err
		}
		pager := c.NewListSecretPropertiesPager(nil)
		var names []string
		for pager.More() {
			page, err := pager.NextPage(context.Background())
			if err != nil {
				return 0, err
			}
			for _, item := range page.Value {
				names = append(names, item.ID.Name())
			}
		}
		for _, n := range names {
			if _, err := c.GetSecret(context.Background(), n, "", nil); err != nil {
				failed++
			}
		}
	}
	return failed, nil
}

func tokenScope() policy.TokenRequestOptions {
	return policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}
}
