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
// issued), and checks its narration (one screen by default, the wire trace with -v), its exit
// status, and that its status tables and masked configuration never show a secret value.
func TestQuickstart(t *testing.T) {
	const seedFile = "../../testdata/emulator-seed.yaml"
	quickstart := func(args ...string) string {
		var out bytes.Buffer
		cmd := exec.Command(os.Args[0], append([]string{"-config", "../../testdata/quickstart.yaml", "-seed", seedFile}, args...)...)
		cmd.Env = append(os.Environ(), asMain+"=1")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("quickstart %v failed: %v\n%s", args, err, out.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "quickstart: ok") {
			t.Errorf("quickstart %v: last line = %q, want it to begin with \"quickstart: ok\"", args, last)
		}
		if !strings.HasPrefix(lines[0], "quickstart: emulator up") {
			t.Errorf("quickstart %v: first line = %q, want the emulator announced before anything it says", args, lines[0])
		}
		return out.String()
	}

	// By default the story fits one screen: each step's requests summed up in one line.
	story := quickstart()
	if n := strings.Count(story, "\n"); n > 40 {
		t.Errorf("the default output is %d lines, want at most 40:\n%s", n, story)
	}
	if strings.Contains(story, "emulator |") {
		t.Errorf("the default output shows the wire trace:\n%s", story)
	}
	for _, step := range []string{"token issued (1)", "token validated", "RBAC allowed", "secret read", "RBAC denied (4)", "events delivered (1)",
		"AccessToKeyVaultDenied", "watcher got: Changed (poll)", "watcher got: Changed (push)", "by push, not the hourly poll", "-v shows each request"} {
		if !strings.Contains(story, step) {
			t.Errorf("the default output does not show %q", step)
		}
	}

	// -v: each request, in order, with its identity and action.
	trace := quickstart("-v")
	for _, step := range []string{"emulator | token issued identity=system", "signing keys fetched via OIDC discovery", "emulator | token validated",
		"RBAC allowed", "secret read", "RBAC denied vault=myvault.vault.azure.net identity=noaccess", "challenge sent", "events delivered"} {
		if !strings.Contains(trace, step) {
			t.Errorf("-v does not show %q", step)
		}
	}
	out := story + trace
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
	if strings.Contains(out, "Password=rotated-") {
		t.Error("output shows the rotated connection string")
	}
	for _, v := range seed.Vaults {
		for _, s := range v.Secrets {
			if strings.Contains(out, s.Value) {
				t.Errorf("output shows the value of %s/%s", v.Name, s.Name)
			}
		}
	}
}
