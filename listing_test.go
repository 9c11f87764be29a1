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
	"github.com/viperkv/viperkv/internal/logtest"
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

// nextCheck returns when the provider next checks a secret (its next list).
func nextCheck(p *Provider) time.Time {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	var next time.Time
	for _, st := range p.sched.polls {
		if next.IsZero() || st.next.Before(next) {
			next = st.next
		}
	}
	return next
}

// rotateBeforeList sleeps to just before the provider's next list, at a time that shares
// one second of the vault's clock (behind this machine's by behind) with that list, sets
// a new version of name there and sleeps to the list. It returns the version and that
// second.
func rotateBeforeList(t *testing.T, src *fakeSource, p *Provider, behind time.Duration, name, value string) (string, time.Time) {
	t.Helper()
	const before = 50 * time.Millisecond
	for range 50 {
		synctest.Wait()
		next := nextCheck(p)
		at := next.Add(-behind) // by the vault's clock
		if off := at.Sub(at.Truncate(time.Second)); off >= 2*before && off < time.Second-before {
			pages := src.pages("myvault")
			time.Sleep(time.Until(next) - before)
			v := src.set("myvault", name, value)
			time.Sleep(before)
			synctest.Wait()
			if src.pages("myvault") == pages {
				t.Fatal("no list at the time the schedule said")
			}
			return v, at.Truncate(time.Second)
		}
		time.Sleep(time.Until(next) + time.Millisecond) // too near a second's edge: the next one
	}
	t.Fatal("no list away from a second's edge in 50 cycles")
	return "", time.Time{}
}

// A list that shows a version made less than two seconds ago, by the vault's clock, GETs
// it only once that time has passed: the one GET finds the version made after the list in
// the same second (which lists the same as the one before it), and no re-check follows.
// The vault's clock is learned from the Date of its answers, so this holds with it ahead
// of this machine's or behind, by whole seconds or not.
func TestListWaitsOutTheSecondOfAChange(t *testing.T) {
	for _, behind := range []time.Duration{0, 30 * time.Second, -30 * time.Second, 1500 * time.Millisecond, -1500 * time.Millisecond} {
		t.Run(fmt.Sprintf("vault behind by %v", behind), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const interval = 5 * time.Second
				src := newFakeSource()
				src.SetClockBehind(behind)
				doc := twentySecrets(src)
				time.Sleep(5 * time.Second) // the versions are older than the same-second window
				p := loadFake(t, src, doc, WithRefreshInterval(interval), WithVersionCheck(VersionCheckList))
				rec := record(p)
				startWatch(t, p)
				gets := totalGets(src)

				_, second := rotateBeforeList(t, src, p, behind, "s03", "v03-2")
				// The list showed v03-2; a version made after it in the same second lists the same.
				v3 := src.set("myvault", "s03", "v03-3")
				if n := totalGets(src) - gets; n != 0 {
					t.Errorf("%d GETs at the list, within the second of the change; want none yet", n)
				}
				pages := src.pages("myvault")
				time.Sleep(3 * time.Second)
				synctest.Wait()
				if n := src.pages("myvault") - pages; n != 0 {
					t.Errorf("%d list pages while waiting, want the GET alone", n)
				}
				calls := src.callsOf("myvault", "s03")[1:] // after Load's
				if len(calls) != 1 || totalGets(src)-gets != 1 {
					t.Fatalf("%d GETs of s03 (%d in all) after the change, want 1", len(calls), totalGets(src)-gets)
				}
				if at := calls[0].start.Add(-behind); at.Before(second.Add(sameSecond)) {
					t.Errorf("GET at %v by the vault's clock, within %v of the change at %v", at, sameSecond, second)
				}
				if e := rec.only(t, EventChanged); e.NewVersion != v3 || p.GetString("app.k03") != "v03-3" {
					t.Errorf("event %v, value %q; want the version made after the list, %s", e, p.GetString("app.k03"), v3)
				}
				time.Sleep(4 * interval)
				synctest.Wait()
				if n := totalGets(src) - gets; n != 1 {
					t.Errorf("%d GETs in all after 4 more cycles, want the one (no re-check)", n)
				}
			})
		})
	}
}

// The wait rests on the vault's clock as its answers dated it. When that clock moves
// back afterwards, the wait is too short and the GET lands within the second of the
// change: the GET's own Date says so, and the next cycle checks by GET once more, finding
// the version made after it in that second.
func TestListWaitTooShortIsRechecked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 5 * time.Second
		src := newFakeSource()
		doc := twentySecrets(src)
		time.Sleep(5 * time.Second)
		p := loadFake(t, src, doc, WithRefreshInterval(interval), WithVersionCheck(VersionCheckList))
		rec := record(p)
		startWatch(t, p)
		const behind = 30 * time.Second
		src.SetClockBehind(behind) // after the provider learned it
		gets := totalGets(src)

		_, second := rotateBeforeList(t, src, p, behind, "s03", "v03-2")
		if n := totalGets(src) - gets; n != 1 {
			t.Fatalf("%d GETs at the list, want 1 (the vault's clock seems past the change's second)", n)
		}
		v3 := src.set("myvault", "s03", "v03-3") // after the GET, in its second
		if !time.Now().Add(-behind).Truncate(time.Second).Equal(second) {
			t.Fatal("the test left the change's second")
		}
		time.Sleep(interval * 3 / 2)
		synctest.Wait()
		if p.GetString("app.k03") != "v03-3" {
			t.Errorf("app.k03 = %q after the re-check, want v03-3 (%s)", p.GetString("app.k03"), v3)
		}
		if evs := rec.all(EventChanged); len(evs) != 2 || evs[1].NewVersion != v3 {
			t.Errorf("events %v, want v03-2 then %s", evs, v3)
		}
		before := totalGets(src)
		time.Sleep(4 * interval)
		synctest.Wait()
		if n := totalGets(src) - before; n != 0 {
			t.Errorf("%d GETs in 4 quiet cycles after the re-check, want 0", n)
		}
	})
}

// settle bounds the vault's clock by the list itself (served after its newest change)
// and by its answers' Date, whichever says more; noteClock keeps the tightest bound the
// Dates give, for an hour.
func TestSettle(t *testing.T) {
	var s schedule
	local := func(sec, ms int) time.Time { return time.Date(2030, 1, 1, 12, 0, sec, ms*1e6, time.UTC) }
	vault := func(sec int) time.Time { return time.Date(2030, 1, 1, 11, 0, sec, 0, time.UTC) } // an hour behind
	read, u := local(5, 0), vault(4)
	if at := s.settle("v", u, u, read); !at.Equal(read.Add(sameSecond)) {
		t.Errorf("no Date known, the change the newest listed: %v, want the list's time + %v", at, sameSecond)
	}
	if at := s.settle("v", u, u.Add(time.Second), read); !at.Equal(read.Add(time.Second)) {
		t.Errorf("no Date known, a change a second newer listed: %v, want the list's time + 1 s", at)
	}
	if at := s.settle("v", vault(-60), u, read); !at.Before(read) {
		t.Errorf("a change a minute old: %v, want no wait", at)
	}
	s.noteClock("v", vault(-10), local(0, 0))   // an answer read 10 s after its Date: a loose bound
	s.noteClock("v", vault(-1), local(-1, 600)) // read 0.6 s after its Date
	s.noteClock("v", vault(-3), local(-1, 700)) // looser: the tighter is kept
	if c := s.clocks["v"]; c.ahead != -time.Hour-600*time.Millisecond {
		t.Errorf("the vault's clock ahead by %v, want the tightest bound, -1h0.6s", c.ahead)
	}
	if at, want := s.settle("v", u, u, read), local(6, 600); !at.Equal(want) {
		t.Errorf("with the Date known: %v, want %v (the vault's clock surely past the change + %v)", at, want, sameSecond)
	}
	later := local(-1, 600).Add(relist)
	s.noteClock("v", vault(-60).Add(relist), later) // an hour on: starts afresh, even looser
	if c, want := s.clocks["v"], vault(-60).Sub(local(-1, 600)); c.ahead != want {
		t.Errorf("an hour later, the vault's clock ahead by %v, want the new bound %v", c.ahead, want)
	}
}

// record learns a vault's clock from the Date of that vault's own answers, not from a
// failover vault's, whose clock may differ.
func TestRecordLearnsTheVaultsClock(t *testing.T) {
	s := testSchedule()
	now := time.Unix(1_700_000_000, 0)
	r := Reference{Vault: "v.vault.azure.net", Name: "a"}
	updated, served := now.Add(-time.Hour), now.Add(-30*time.Second)
	other := served.Add(time.Minute)
	fromFailover := &secret{has: true, status: StatusResolved, version: "1", updated: &updated, served: &other, servedBy: "w.vault.azure.net"}
	s.record(map[Reference]*secret{r: fromFailover}, map[Reference]*secret{r: fromFailover}, now)
	if c, ok := s.clocks[r.Vault]; ok {
		t.Errorf("a failover vault's Date taken for the vault's clock: %v ahead", c.ahead)
	}
	own := &secret{has: true, status: StatusResolved, version: "1", updated: &updated, served: &served}
	s.record(map[Reference]*secret{r: own}, map[Reference]*secret{r: own}, now)
	if c := s.clocks[r.Vault]; c.ahead != -30*time.Second {
		t.Errorf("the vault's clock %v ahead, want -30s", c.ahead)
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
		var logs logtest.Buffer
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
