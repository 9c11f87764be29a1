package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/viperkv/viperkv/kvtest"
)

// TestQuickstart runs the quickstart as the README's first command does and checks that its
// narration, status tables and masked configuration never show a secret value.
func TestQuickstart(t *testing.T) {
	const seedFile = "../../testdata/emulator-seed.yaml"
	var out bytes.Buffer
	if err := run(context.Background(), &out, "../../testdata/quickstart.yaml", seedFile, false); err != nil {
		t.Fatalf("quickstart failed: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "quickstart: ok") {
		t.Errorf("last line = %q, want it to begin with \"quickstart: ok\"", last)
	}
	for _, step := range []string{"token issued", "signing keys fetched via OIDC discovery", "token validated", "RBAC allowed", "secret read", "RBAC denied", "AccessToKeyVaultDenied", "watcher got: Changed (poll)"} {
		if !strings.Contains(out.String(), step) {
			t.Errorf("output does not show %q", step)
		}
	}
	f, err := os.Open(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seed, err := kvtest.ParseSeed(f)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "Password=rotated-") {
		t.Error("output shows the rotated connection string")
	}
	for _, v := range seed.Vaults {
		for _, s := range v.Secrets {
			if strings.Contains(out.String(), s.Value) {
				t.Errorf("output shows the value of %s/%s", v.Name, s.Name)
			}
		}
	}
}
