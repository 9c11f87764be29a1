package main

import (
	"bytes"
	"context"
	"iter"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv/kvtest"
)

// summary is the last line's form.
var summary = regexp.MustCompile(`^mtls: renewals=(\d+) handshakes=(\d+) requests=(\d+) failed_handshakes=(\d+) failed_requests=(\d+)$`)

// TestRenewalsUnderLoad is `go run ./examples/mtls` with certificates valid for 10 s and
// renewed at 30% of that, every 3 s: two renewals of the server's and the client's
// certificate under load, with no failed handshake or request, every renewed certificate
// seen in new handshakes, and no key material in the output.
//
// It takes about 8 s. Its times are margins, not estimates: a renewal reaches the services by
// push in milliseconds (up to a second seen on a loaded 2-core machine under -race), or by
// polling within 2.5 s, and the certificate it replaces stays valid 7 s longer, so a slow
// pickup is not a failed handshake; the example waits for the renewed serials up to 15 s.
func TestRenewalsUnderLoad(t *testing.T) {
	cfg := defaultConfig()
	cfg.Validity, cfg.RenewAt, cfg.Renewals = 10*time.Second, 30, 2
	var secrets []string
	cfg.after = func(kv *kvtest.Vault) {
		for _, name := range []string{serverCert.name, clientCert.name} {
			for _, version := range kv.Versions(name) {
				v, _ := kv.SecretValue(name, version)
				secrets = append(secrets, v)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	err := run(ctx, cfg, &out)
	t.Logf("run in %s:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatal(err)
	}

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	m := summary.FindStringSubmatch(lines[len(lines)-1])
	if m == nil {
		t.Fatalf("last line %q is not the summary", lines[len(lines)-1])
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	if n(1) < 2 || n(2) == 0 || n(3) == 0 || n(4) != 0 || n(5) != 0 {
		t.Errorf("summary %q: want renewals >= 2, handshakes and requests made, none failed", m[0])
	}
	for _, cert := range []string{serverCert.name, clientCert.name} {
		for _, r := range []string{"renewal 1 of " + cert, "renewal 2 of " + cert} {
			if !strings.Contains(out.String(), r+": serial ") {
				t.Errorf("the output does not show %q", r)
			}
		}
	}

	// Never key material: no PEM block, no part of a certificate's secret (PKCS#12 or PEM).
	if len(secrets) < 6 {
		t.Fatalf("%d certificate versions in the vault, want 3 of each", len(secrets))
	}
	if strings.Contains(out.String(), "-----BEGIN") {
		t.Error("the output shows a PEM block")
	}
	for _, s := range secrets {
		for chunk := range slicesOf(strings.Join(strings.Fields(s), ""), 32) {
			if strings.Contains(out.String(), chunk) {
				t.Fatalf("the output shows part of a certificate's secret")
			}
		}
	}
}

// slicesOf yields s in pieces of n characters.
func slicesOf(s string, n int) iter.Seq[string] {
	return func(yield func(string) bool) {
		for len(s) >= n {
			if !yield(s[:n]) {
				return
			}
			s = s[n:]
		}
	}
}

// TestConfigValidate: flags that cannot make a run are refused before anything starts.
func TestConfigValidate(t *testing.T) {
	for _, c := range []func(*config){
		func(c *config) { c.Renewals = 0 },
		func(c *config) { c.Validity = time.Second },
		func(c *config) { c.RenewAt = 100 },
		func(c *config) { c.Validity, c.RenewAt = 2*time.Second, 10 },
		func(c *config) { c.Conns = 0 },
	} {
		cfg := defaultConfig()
		c(&cfg)
		if err := run(context.Background(), cfg, &bytes.Buffer{}); err == nil || err == errChecks {
			t.Errorf("%+v: run returned %v, want a configuration error", cfg, err)
		}
	}
}
