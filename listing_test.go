package viperkv

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/viperkv/viperkv/internal/driver"
	"github.com/viperkv/viperkv/internal/driver/memvault"
)

// twentySecrets returns a config referencing s00..s19 of myvault, versionless.
func twentySecrets(src *fakeSource) string {
	var b strings.Builder
	b.WriteString("app:\n")
	for i := range 20 {
		src.set("myvault", fmt.Sprintf("s%02d", i), fmt.Sprintf("v%02d-1", i))
		fmt.Fprintf(&b, "  k%02d: \"@KeyVault(VaultName=myvault;SecretName=s%02d)\"\n", i, i)
	}
	return b.String()
}

func totalGets(src *fakeSource) int { return len(src.Calls()) }

// By listing, a cycle over 20 secrets of one vault costs one list page, and a rotation
// costs one GET: found within a cycle, announced once. Load's fetches, made within two
// seconds of the versions' creation, are checked by GET once more on the first cycle (the
// one-second timestamps could hide a version made in the same second).
func TestListDetectsRotationsWithOnePagePerCycle(t *testing.T) {
	for _, mode := range []VersionCheck{VersionCheckAuto, VersionCheckList} {
		t.Run(string(mode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const interval = time.Minute
				src := newFakeSource()
				doc := twentySecrets(src)
				time.Sleep(5 * time.Second) // the versions are older than the same-second window
				p := loadFake(t, src, doc, WithRefreshInterval(interval), WithVersionCheck(mode))
				rec := record(p)
				startWatch(t, p)
				afterLoad := totalGets(src)

				time.Sleep(3*interval + interval/2)
				synctest.Wait()
				if n := totalGets(src) - afterLoad; n != 0 {
					t.Errorf("%d GETs in 3 quiet cycles, want 0", n)
				}
				if n := src.pages("myvault"); n != 3 {
					t.Errorf("%d list pages in 3 cycles, want 3", n)
				}
				v2 := src.set("myvault", "s07", "v07-2")
				time.Sleep(interval + interval/10)
				synctest.Wait()
				e := rec.only(t, EventChanged)
				if e.NewVersion != v2 || p.GetString("app.k07") != "v07-2" || e.Source != SourcePoll {
					t.Errorf("event %v", e)
				}
				if n := src.count("myvault", "s07"); n < 2 || totalGets(src)-afterLoad > 2 {
					// 1 GET finds the version; one more may re-check it (fetched within 2 s of its creation).
					t.Errorf("%d GETs after the rotation (s07: %d), want 1 or 2", totalGets(src)-afterLoad, n)
				}
			})
		})
	}
}

// A version created in the same second as the one fetched lists with the same timestamp:
// the next cycle checks that secret by GET and finds it, and then stops re-checking. The
// window is measured on the vault's clock (its answers' Date), so a machine whose clock is
// off by seconds neither misses such a version (clock ahead) nor re-checks every secret for
// as long as it is behind.
func TestListFindsAVersionOfTheSameSecond(t *testing.T) {
	for _, behind := range []time.Duration{0, 30 * time.Second, -30 * time.Second} {
		t.Run(fmt.Sprintf("vault behind by %v", behind), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const interval = 5 * time.Second
				src := newFakeSource()
				src.SetClockBehind(behind)
				doc := twentySecrets(src)
				p := loadFake(t, src, doc, WithRefreshInterval(interval), WithVersionCheck(VersionCheckList))
				v2 := src.set("myvault", "s03", "v03-2") // the same (simulated) second as v1 and Load
				rec := record(p)
				startWatch(t, p)
				time.Sleep(interval * 3 / 2)
				synctest.Wait()
				if e := rec.only(t, EventChanged); e.NewVersion != v2 {
					t.Errorf("event %v, want the same-second version %s", e, v2)
				}
				// Those GETs were fetched long after the versions' change: no more re-checks.
				before := totalGets(src)
				time.Sleep(8 * interval)
				synctest.Wait()
				if n := totalGets(src) - before; n != 0 {
					t.Errorf("%d GETs in 8 quiet cycles after the re-check, want 0", n)
				}
			})
		})
	}
}

// An identity that may not list falls back to a GET per secret, says so once, and still
// finds rotations.
func TestListForbiddenFallsBackToGets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		doc := twentySecrets(src)
		src.denyList("myvault")
		time.Sleep(5 * time.Second)
		var logs logSink
		p := loadFake(t, src, doc, WithRefreshInterval(interval), WithVersionCheck(VersionCheckList),
			WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		rec := record(p)
		startWatch(t, p)
		afterLoad := totalGets(src)
		v2 := src.set("myvault", "s11", "v11-2")
		time.Sleep(3*interval + interval/2)
		synctest.Wait()
		if n := totalGets(src) - afterLoad; n != 60 {
			t.Errorf("%d GETs in 3 cycles without list permission, want 60", n)
		}
		if n := src.pages("myvault"); n != 1 {
			t.Errorf("%d list attempts, want 1 (then GETs, for an hour)", n)
		}
		if n := strings.Count(logs.String(), "may not list"); n != 1 {
			t.Errorf("the fallback was logged %d times, want once:\n%s", n, logs.String())
		}
		if e := rec.only(t, EventChanged); e.NewVersion != v2 {
			t.Errorf("event %v", e)
		}
	})
}

// A secret disabled or deleted shows in the list (disabled, or absent): a GET gives it the
// status a GET gives, it keeps its last good value, and an EventError says so.
func TestListDisabledAndDeletedSecrets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		doc := twentySecrets(src)
		time.Sleep(5 * time.Second)
		p := loadFake(t, src, doc, WithRefreshInterval(interval), WithVersionCheck(VersionCheckList))
		rec := record(p)
		startWatch(t, p)
		src.fail("myvault", "s01", StatusSecretDisabled, "GET https://myvault.vault.azure.net/secrets/s01: 403: the secret version is disabled")
		src.fail("myvault", "s02", StatusSecretNotFound, "GET https://myvault.vault.azure.net/secrets/s02: 404 SecretNotFound")
		time.Sleep(interval + interval/10)
		synctest.Wait()
		for key, want := range map[string]Status{"app.k01": StatusSecretDisabled, "app.k02": StatusSecretNotFound} {
			if st := StatusOf(t, p, key); st.Status != want {
				t.Errorf("%s: %s, want %s", key, st.Status, want)
			}
		}
		if p.GetString("app.k01") != "v01-1" || p.GetString("app.k02") != "v02-1" {
			t.Error("a disabled or deleted secret lost its last good value")
		}
		if n := len(rec.all(EventError)); n != 2 {
			t.Errorf("%d error events, want 2: %v", n, rec.all())
		}
		if n := src.count("myvault", "s05"); n != 1 {
			t.Errorf("an unchanged secret was fetched %d times, want only by Load", n)
		}
	})
}

// auto lists a small vault, but not a big shared one where three GETs are cheaper: its
// first list stops after two pages, and it is not listed again for an hour.
func TestAutoChoosesByVaultSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		src.set("small", "a", "a1")
		src.set("small", "b", "b1")
		src.set("small", "c", "c1")
		src.set("shared", "x", "x1")
		src.set("shared", "y", "y1")
		src.set("shared", "z", "z1")
		src.grow("shared", 2000)
		time.Sleep(5 * time.Second)
		p := loadFake(t, src, `
s: {a: "@KeyVault(VaultName=small;SecretName=a)", b: "@KeyVault(VaultName=small;SecretName=b)", c: "@KeyVault(VaultName=small;SecretName=c)"}
b: {x: "@KeyVault(VaultName=shared;SecretName=x)", y: "@KeyVault(VaultName=shared;SecretName=y)", z: "@KeyVault(VaultName=shared;SecretName=z)"}
`, WithRefreshInterval(interval))
		startWatch(t, p)
		time.Sleep(5*interval + interval/2)
		synctest.Wait()
		if n := src.pages("small"); n != 5 {
			t.Errorf("small vault: %d list pages in 5 cycles, want 5", n)
		}
		if n := src.count("small", "a"); n != 1 {
			t.Errorf("small vault: a fetched %d times, want once (Load)", n)
		}
		if n := src.pages("shared"); n != 2 {
			t.Errorf("shared vault: %d list pages, want 2 (one probe, cut short)", n)
		}
		if n := src.count("shared", "x"); n != 5 {
			// The probe's two pages showed x, y and z unchanged; after it, a GET a cycle.
			t.Errorf("shared vault: x fetched %d times in 5 cycles, want 5 (Load and 4 cycles by GET)", n)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := src.pages("shared"); n != 4 {
			t.Errorf("shared vault: %d list pages after an hour, want a second probe (4)", n)
		}
	})
}

func TestWithChangeDetectionRejectsUnknownModes(t *testing.T) {
	_, err := New(YAMLViper(t, "a: b\n"), withSource(newFakeSource()), WithVersionCheck("sometimes"))
	if err == nil || !strings.Contains(err.Error(), `WithVersionCheck("sometimes")`) {
		t.Errorf("New = %v", err)
	}
}

// A throttled list does not turn into a GET per secret (that would multiply the load that
// throttles the vault): the check waits out the back-off, and the values stay.
func TestThrottledListIsNotAmplified(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		doc := twentySecrets(src)
		time.Sleep(5 * time.Second)
		p := loadFake(t, src, doc, WithRefreshInterval(interval), WithVersionCheck(VersionCheckList),
			WithRetryBackoff(10*time.Second, time.Minute))
		rec := record(p)
		startWatch(t, p)
		afterLoad := totalGets(src)
		src.FailList(vaultHost("myvault"), memvault.Fault{Err: &driver.Error{Kind: driver.KindThrottled,
			Reason: "GET https://myvault.vault.azure.net/secrets (list): 429 Throttled", Transient: true}})
		time.Sleep(3 * interval)
		synctest.Wait()
		if n := totalGets(src) - afterLoad; n != 0 {
			t.Errorf("%d GETs while the list was throttled, want 0", n)
		}
		if n := src.pages("myvault"); n < 3 {
			t.Errorf("%d list attempts in 3 intervals with a back-off of 10 s..1 min, want it retried", n)
		}
		if evs := rec.all(); len(evs) != 0 {
			t.Errorf("events while only the check failed: %v", evs)
		}
		src.Clear(vaultHost("myvault"), "")
		v2 := src.set("myvault", "s04", "v04-2")
		time.Sleep(2 * interval)
		synctest.Wait()
		if e := rec.only(t, EventChanged); e.NewVersion != v2 {
			t.Errorf("event %v after the throttling ended", e)
		}
	})
}

// A vault source and version checks share one list of the vault a cycle: importing the
// vault's secrets as keys does not list it twice.
func TestVaultSourceListsOncePerCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		src := newFakeSource()
		for i := range 20 {
			src.set("myvault", fmt.Sprintf("App--K%02d", i), fmt.Sprintf("v%02d", i))
		}
		time.Sleep(5 * time.Second)
		p := newFakeProvider(t, src, YAMLViper(t, "a: b\n"), WithRefreshInterval(interval), WithVaultSource("myvault"))
		if err := p.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := p.GetString("app.k07"); got != "v07" {
			t.Fatalf("app.k07 = %q", got)
		}
		afterLoad, pagesAtLoad := totalGets(src), src.pages("myvault")
		startWatch(t, p)
		time.Sleep(10*interval + interval/2)
		synctest.Wait()
		if n := src.pages("myvault") - pagesAtLoad; n < 9 || n > 12 {
			t.Errorf("%d list pages in 10 intervals, want about 10 (one a cycle)", n)
		}
		if n := totalGets(src) - afterLoad; n != 0 {
			t.Errorf("%d GETs in quiet cycles, want 0", n)
		}
	})
}
