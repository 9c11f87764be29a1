package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReducedRun runs every approach on a small workload (100 references to 80 secrets in
// 2 vaults) and checks the counts that do not depend on the machine's speed: viperkv makes
// one GET per distinct secret and one token request, the others one GET per reference,
// nothing fails without throttling, and viperkv, the sequential loop and the client told
// the bucket resolve everything under throttling, against the bucket's floor.
func TestReducedRun(t *testing.T) {
	cfg := config{
		refs:          100,
		distinct:      80,
		vaults:        2,
		latency:       2 * time.Millisecond,
		runs:          1,
		throttleLimit: 20,
		throttlePer:   100 * time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := run(ctx, cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String() + rep.summary())

	if rep.vaultGets != 80 || rep.viperkv.gets != 80 {
		t.Errorf("viperkv vault GETs = %d (median run %d), want 80", rep.vaultGets, rep.viperkv.gets)
	}
	if rep.tokenCount != 1 {
		t.Errorf("viperkv token requests = %d, want 1", rep.tokenCount)
	}
	if rep.viperkv.challenges != int64(cfg.vaults) {
		t.Errorf("viperkv challenge round trips = %d, want one per vault (%d)", rep.viperkv.challenges, cfg.vaults)
	}
	for _, r := range []result{rep.sequential, rep.unbounded} {
		if r.gets != 100 {
			t.Errorf("%s vault GETs = %d, want 100", r.name, r.gets)
		}
	}
	for _, r := range []result{rep.sequential, rep.unbounded, rep.viperkv, rep.viperkvT} {
		if r.failed != 0 {
			t.Errorf("%s: %d references failed", r.name, r.failed)
		}
	}
	if rep.viperkvT.throttled == 0 {
		t.Error("the throttled viperkv run saw no 429: the throttle is not exercised")
	}
	if rep.viperkvT.gets != 80 {
		t.Errorf("throttled viperkv vault GETs = %d, want 80", rep.viperkvT.gets)
	}

	// Throttled: the sequential loop and the client told the bucket resolve everything, the
	// floor is the bucket's arithmetic: 40 distinct secrets a vault, 20 beyond the burst at
	// 200/s, and two round trips of 2 ms.
	for _, r := range []result{rep.sequentialT, rep.told} {
		if r.failed != 0 {
			t.Errorf("throttled %s: %d references failed", r.name, r.failed)
		}
	}
	if rep.floor != 104*time.Millisecond {
		t.Errorf("floor = %v, want 104ms", rep.floor)
	}
	if rep.told.gets != 80 {
		t.Errorf("the client told the bucket made %d vault GETs, want 80", rep.told.gets)
	}

	summary := regexp.MustCompile(`^resolve: viperkv_ms=\d+ sequential_ms=\d+ unbounded_ms=\d+ vault_gets=80 token_requests=1 throttled_failed_viperkv=0 throttled_failed_unbounded=\d+ throttled_ms=\d+ throttled_floor_ms=104$`)
	if s := rep.summary(); !summary.MatchString(s) {
		t.Errorf("summary line %q does not match %v", s, summary)
	}
	// Secret values are "v-" and 24 hex digits; none may be printed.
	if v := regexp.MustCompile(`v-[0-9a-f]{24}`).FindString(out.String()); v != "" {
		t.Errorf("output shows a secret value")
	}
	for _, col := range []string{"sequential", "unbounded", "viperkv", "told the bucket", "floor", "wall ms", "vault GETs", "challenges", "token requests", "failed refs", "the floor", "the wall time of a sequential loop"} {
		if !strings.Contains(out.String(), col) {
			t.Errorf("table lacks %q", col)
		}
	}
}
