package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// asMain makes the test binary run the quickstart's main instead of the tests.
const asMain = "VIPERKV_QUICKSTART_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestQuickstart runs the quickstart as the README's first command does, in a process of its
// own (MSAL Go caches managed identity tokens process-wide, so a second run in one process,
// as with go test -count=2, would take its token from the cache and not show it being
// issued), and checks its narration, its exit status, and that its status tables and masked
// configuration never show a secret value.
func TestQuickstart(t *testing.T) {
	const seedFile = "../../testdata/emulator-seed.yaml"
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-config", "../../testdata/quickstart.yaml", "-seed", seedFile)
	cmd.Env = append(os.Environ(), asMain+"=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("quickstart failed: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "quickstart: ok") {
		t.Errorf("last line = %q, want it to begin with \"quickstart: ok\"", last)
	}
	for _, step := range []string{"token issued", "signing keys fetched via OIDC discovery", "token validated", "RBAC allowed", "secret read", "RBAC denied", "AccessToKeyVaultDenied", "watcher got: Changed (poll)", "watcher got: Changed (push)", "by push, not the hourly poll"} {
		if !strings.Contains(out.String(), step) {
			t.Errorf("output does not show %q", step)
		}
	}
	b, err := os.ReadFile(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	var seed struct {
		Vaults []struct {
			Name    string
			Secrets []struct{ Name, Value string }
		}
	}
	if err := yaml.Unmarshal(b, &seed); err != nil || len(seed.Vaults) == 0 {
		t.Fatalf("seed: %v", err)
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
