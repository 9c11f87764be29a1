package viperkv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/viperkv/viperkv/internal/logtest"
)

const pushDoc = "db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\n" +
	"pinned: \"@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/conn/%s)\"\n" +
	"other: \"@KeyVault(VaultName=myvault;SecretName=other)\"\n"

// pushSetup loads a provider whose db.conn references myvault/conn (versionless), pinned
// the first version of it, and other myvault/other.
func pushSetup(t *testing.T, opts ...Option) (*fakeSource, *Provider, string) {
	t.Helper()
	src := newFakeSource()
	v1 := src.set("myvault", "conn", "conn-v1")
	src.set("myvault", "other", "other-v1")
	doc := strings.Replace(pushDoc, "%s", v1, 1)
	p := loadFake(t, src, doc, append([]Option{WithRefreshInterval(time.Hour)}, opts...)...)
	return src, p, v1
}

func newVersion(vault, name, version string) Notice {
	return Notice{Type: NoticeNewVersion, ID: "ev-" + version, Vault: vault, Name: name, Version: version}
}

// A new version fetches that one secret once and announces it from SourcePush; the pinned
// reference to the same secret and the other secret are not fetched.
func TestNotifyFetchesOnlyTheChangedSecret(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, p, v1 := pushSetup(t)
		rec := record(p)
		before := src.callCount()
		v2 := src.set("myvault", "conn", "conn-v2")
		if err := p.Notify(context.Background(), newVersion("myvault", "conn", v2)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		after := src.callCount()
		conn := Reference{Vault: vaultHost("myvault"), Name: "conn"}
		if after[conn]-before[conn] != 1 {
			t.Errorf("%d GETs of conn, want 1", after[conn]-before[conn])
		}
		for r, n := range after {
			if r != conn && n != before[r] {
				t.Errorf("%v fetched %d more times", r, n-before[r])
			}
		}
		e := rec.only(t, EventChanged)
		if e.Source != SourcePush || e.OldVersion != v1 || e.NewVersion != v2 || p.GetString("db.conn") != "conn-v2" {
			t.Errorf("event %v, db.conn %q", e, p.GetString("db.conn"))
		}
		if p.GetString("pinned") != "conn-v1" {
			t.Errorf("pinned = %q, want the pinned version's value", p.GetString("pinned"))
		}
	})
}

// Duplicates (the same id, a version already held, an older version arriving after a newer
// one, the same change delivered concurrently) fetch nothing more and announce nothing.
func TestNotifyIgnoresDuplicatesAndLateEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, p, v1 := pushSetup(t, WithPushDelay(time.Second))
		rec := record(p)
		count := func() int { return src.count("myvault", "conn") }
		start := count()

		v2 := src.set("myvault", "conn", "conn-v2")
		var wg sync.WaitGroup
		for range 5 { // one delivery, redelivered while the first waits its delay
			wg.Go(func() {
				if err := p.Notify(context.Background(), newVersion("myvault", "conn", v2)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := count() - start; n != 1 {
			t.Fatalf("%d GETs for one change delivered 5 times, want 1", n)
		}
		ctx := context.Background()
		for _, c := range []Notice{
			newVersion("myvault", "conn", v2), // same id again
			{Type: NoticeNewVersion, ID: "x", Vault: "myvault", Name: "CONN", Version: strings.ToUpper(v2)}, // held version, other id
			newVersion("myvault", "conn", v1), // late: older than the one held
			{Type: NoticeNewVersion, ID: "y", Vault: "https://MyVault.vault.azure.net/", Name: " conn ", Version: v1},
		} {
			if err := p.Notify(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if n := count() - start; n != 1 {
			t.Errorf("%d GETs after duplicates and a late event, want still 1", n)
		}
		synctest.Wait()
		if evs := rec.all(); len(evs) != 1 || p.GetString("db.conn") != "conn-v2" {
			t.Errorf("events %v, db.conn %q", evs, p.GetString("db.conn"))
		}
	})
}

// The fetch waits a random delay in [0, WithPushDelay] (simulated time), and a context that
// ends during it fetches nothing.
func TestNotifyDelaySpreadsFetches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxDelay = 10 * time.Second
		src, p, _ := pushSetup(t, WithPushDelay(maxDelay))
		var waits []time.Duration
		for range 20 {
			v := src.set("myvault", "conn", "v")
			start := time.Now()
			if err := p.Notify(context.Background(), newVersion("myvault", "conn", v)); err != nil {
				t.Fatal(err)
			}
			waits = append(waits, time.Since(start))
		}
		lo, hi := maxDelay, time.Duration(0)
		for _, w := range waits {
			if w < 0 || w > maxDelay {
				t.Fatalf("waited %v, want within [0, %v]", w, maxDelay)
			}
			lo, hi = min(lo, w), max(hi, w)
		}
		if hi-lo < maxDelay/4 {
			t.Errorf("20 delays all within %v..%v: not spread", lo, hi)
		}

		v := src.set("myvault", "conn", "late")
		before := src.count("myvault", "conn")
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		err := p.Notify(ctx, newVersion("myvault", "conn", v))
		if err == nil && src.count("myvault", "conn") != before {
			t.Error("a Notify whose context ended during the delay fetched")
		}
	})
}

// Near-expiry and expiry notices for the version in use change the status and send the
// events the poll path sends, without a fetch; for an unknown version they fetch.
func TestNotifyExpiryWithoutFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		exp := time.Now().Add(20 * 24 * time.Hour) // outside the default 7-day warning
		v1 := src.set("myvault", "conn", "conn-v1", expiresAt(exp))
		p := loadFake(t, src, "db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\n", WithRefreshInterval(time.Hour))
		rec := record(p)
		before := src.count("myvault", "conn")
		ctx := context.Background()

		c := Notice{Type: NoticeNearExpiry, ID: "n1", Vault: "myvault", Name: "conn", Version: v1, Expires: exp}
		if err := p.Notify(ctx, c); err != nil {
			t.Fatal(err)
		}
		c.ID = "n2" // a second notice of the same version says nothing new
		if err := p.Notify(ctx, c); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // watchers are told on their own goroutines
		if e := rec.only(t, EventNearExpiry); e.Source != SourcePush || !e.Expires.Equal(exp) || e.NewVersion != v1 {
			t.Errorf("near-expiry event %v", e)
		}
		if err := p.Notify(ctx, Notice{Type: NoticeExpired, ID: "x1", Vault: "myvault", Name: "conn", Version: v1, Expires: exp}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		e := rec.only(t, EventError)
		if e.Status != StatusSecretExpired || e.Source != SourcePush {
			t.Errorf("expired event %v", e)
		}
		if st := StatusOf(t, p, "db.conn"); st.Status != StatusSecretExpired || p.GetString("db.conn") != "conn-v1" {
			t.Errorf("status %v, value %q: want SecretExpired, still serving", st.Status, p.GetString("db.conn"))
		}
		if n := src.count("myvault", "conn") - before; n != 0 {
			t.Errorf("%d GETs for expiry notices of the version in use, want 0", n)
		}

		// A notice about a version the provider has not seen: fetch the latest.
		v2 := src.set("myvault", "conn", "conn-v2")
		if err := p.Notify(ctx, Notice{Type: NoticeNearExpiry, ID: "n3", Vault: "myvault", Name: "conn", Version: v2}); err != nil {
			t.Fatal(err)
		}
		if p.GetString("db.conn") != "conn-v2" || src.count("myvault", "conn")-before != 1 {
			t.Errorf("db.conn %q after a notice of an unseen version", p.GetString("db.conn"))
		}
	})
}

// Changes for secrets no versionless reference names, before Load, or with fields missing.
func TestNotifyEdges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		v1 := src.set("myvault", "conn", "conn-v1")
		src.set("myvault", "other", "other-v1")
		var logs logtest.Buffer
		p := newFakeProvider(t, src, YAMLViper(t, strings.Replace(pushDoc, "%s", v1, 1)),
			WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
		ctx := context.Background()
		if err := p.Notify(ctx, newVersion("myvault", "conn", "abc")); err == nil || !strings.Contains(err.Error(), "no configuration loaded") {
			t.Errorf("Notify before Load: %v", err)
		}
		if err := p.Load(ctx); err != nil {
			t.Fatal(err)
		}
		before := len(src.Calls())
		for _, c := range []Notice{
			newVersion("othervault", "conn", "abc"),
			newVersion("myvault", "unreferenced", "abc"),
		} {
			if err := p.Notify(ctx, c); err != nil {
				t.Errorf("Notify(%+v) = %v, want nil (ignored)", c, err)
			}
		}
		if len(src.Calls()) != before {
			t.Errorf("changes to unreferenced secrets made %d GETs", len(src.Calls())-before)
		}
		for c, want := range map[Notice]string{
			{Type: NoticeNewVersion, Name: "conn", Version: "a"}:                            "no Vault",
			{Type: NoticeNewVersion, Vault: "myvault", Version: "a"}:                        "no Name",
			{Type: NoticeNewVersion, Vault: "myvault", Name: "conn"}:                        "no Version",
			{Type: "Microsoft.KeyVault.SecretDeleted", Vault: "v", Name: "n", Version: "a"}: "unknown change type",
		} {
			if err := p.Notify(ctx, c); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Notify(%+v) = %v, want %q", c, err, want)
			}
		}
		if !strings.Contains(logs.String(), "no versionless reference") || strings.Contains(logs.String(), "conn-v1") {
			t.Errorf("logs do not say why a change was ignored, or show a value:\n%s", logs.String())
		}
	})
}

// Notices are untrusted: a change naming a secret a vault source does not hold costs at
// most one request (a GET that finds whether it exists), never a list of the vault, and
// the early lists that genuine new secrets ask for are rate-limited.
func TestForgedNoticesDoNotAmplify(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		for i := range 120 {
			src.set("myvault", fmt.Sprintf("App--K%03d", i), fmt.Sprintf("v%03d", i))
		}
		time.Sleep(5 * time.Second) // past Key Vault's one-second timestamps: a list can vouch for them
		p := newFakeProvider(t, src, YAMLViper(t, "a: b\n"), WithRefreshInterval(time.Hour), WithVaultSource("myvault"))
		if err := p.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		startWatch(t, p)
		synctest.Wait()
		pages, gets := src.pages("myvault"), totalGets(src)
		for i := range 25 {
			c := Notice{Type: NoticeNewVersion, ID: fmt.Sprintf("forged-%d", i), Vault: "myvault",
				Name: fmt.Sprintf("App--Forged%02d", i), Version: fmt.Sprintf("%032x", 1000+i)}
			if err := p.Notify(t.Context(), c); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second) // spaced out, so no two notices share a cycle
		}
		// Names no source takes, or no secret can have, cost nothing.
		for _, name := range []string{"Trailing--", "x)@KeyVault(VaultName=other;SecretName=admin", ""} {
			_ = p.Notify(t.Context(), Notice{Type: NoticeNewVersion, Vault: "myvault", Name: name, Version: fmt.Sprintf("%032x", 7)})
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		dPages, dGets := src.pages("myvault")-pages, totalGets(src)-gets
		if dPages+dGets > 25 {
			t.Errorf("25 forged notices cost %d list pages and %d GETs, want at most one request each", dPages, dGets)
		}
		if dPages != 0 {
			t.Errorf("forged notices listed the vault (%d pages)", dPages)
		}

		// Genuine new secrets are imported within the rate limit of early lists, and a
		// burst of them lists the vault once or twice, not once per notice.
		pages = src.pages("myvault")
		for i := range 10 {
			name := fmt.Sprintf("App--New%02d", i)
			v := src.set("myvault", name, "new")
			if err := p.Notify(t.Context(), Notice{Type: NoticeNewVersion, ID: "new-" + name, Vault: "myvault", Name: name, Version: v}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(minEarlyImport)
		synctest.Wait()
		if got := p.GetString("app.new09"); got != "new" {
			t.Errorf("app.new09 = %q %v after its notice, want it imported", got, minEarlyImport)
		}
		if lists := (src.pages("myvault") - pages) / 6; lists > 2 {
			t.Errorf("a burst of 10 new secrets listed the vault %d times (6 pages each), want at most 2", lists)
		}
	})
}
