package viperkv

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/viperkv/viperkv/internal/driver/memvault"
)

// Defect: with SecretTags, a rotation whose new version lacked the tag was served by a
// running provider, while a freshly started one had no such key: two replicas disagreed,
// and the filter, a boundary for some users, was bypassed. The rule: a version without the
// tags is never served, and the key goes at once (EventChanged); a version that has them
// again brings the key back. A running and a fresh provider agree at every step, by list
// and by push.
func TestVaultSourceTagsAreABoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		prod := memvault.Tags(map[string]string{"env": "prod"})
		dev := memvault.Tags(map[string]string{"env": "dev"})
		src := newFakeSource()
		src.set("myvault", "App--Key", "v1-prod", prod)
		src.set("myvault", "App--Other", "other", prod)
		time.Sleep(5 * time.Second)
		opts := []Option{WithRefreshInterval(interval), WithVaultSource("myvault", SecretTags(map[string]string{"env": "prod"}))}
		running := newFakeProvider(t, src, YAMLViper(t, "a: b\n"), opts...)
		if err := running.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		rec := record(running)
		startWatch(t, running)
		agree := func(when, want string) {
			t.Helper()
			fresh := newFakeProvider(t, src, YAMLViper(t, "a: b\n"), opts...)
			if err := fresh.Load(t.Context()); err != nil {
				t.Fatal(err)
			}
			got, freshGot := running.GetString("app.key"), fresh.GetString("app.key")
			if got != want || freshGot != want || running.Viper().IsSet("app.key") != (want != "") {
				t.Errorf("%s: the running provider serves %q, a fresh one %q; want %q from both", when, got, freshGot, want)
			}
			if running.GetString("app.other") != "other" {
				t.Errorf("%s: app.other = %q", when, running.GetString("app.other"))
			}
		}
		agree("at start", "v1-prod")

		// By list: a rotation without the tag removes the key at the next cycle.
		src.set("myvault", "App--Key", "v2-dev", dev)
		time.Sleep(interval + interval/5)
		synctest.Wait()
		agree("after a rotation without the tag", "")
		removed := false
		for _, e := range rec.all(EventChanged) {
			removed = removed || slices.Contains(e.Keys, "app.key")
		}
		if !removed {
			t.Errorf("no EventChanged names app.key, which the untagged version removed: %v", rec.all())
		}
		// A version with the tag again brings it back.
		src.set("myvault", "App--Key", "v3-prod", prod)
		time.Sleep(interval + interval/5)
		synctest.Wait()
		agree("after a rotation with the tag", "v3-prod")

		// By push: the fetched version without the tag is never served.
		v4 := src.set("myvault", "App--Key", "v4-dev", dev)
		if err := running.Notify(t.Context(), Notice{Type: NoticeNewVersion, Vault: "myvault", Name: "App--Key", Version: v4}); err != nil {
			t.Logf("Notify: %v", err)
		}
		if got := running.GetString("app.key"); got == "v4-dev" {
			t.Errorf("a pushed version without the tag is served")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		agree("after a pushed rotation without the tag", "")
	})
}
