package viperkv

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// An event's one-line description names its status once and a kept version once: it used
// to read "version X -> X ... status SecretDisabled: ...: SecretDisabled: ...(SecretDisabled)".
func TestEventStringSaysEachThingOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		v1 := src.set("myvault", "conn", "good-v1")
		p := loadFake(t, src, "db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\n",
			WithRefreshInterval(time.Minute))
		rec := record(p)
		src.fail("myvault", "conn", StatusSecretDisabled, "GET https://myvault.vault.azure.net/secrets/conn: 403: the secret version is disabled")
		startWatch(t, p)
		time.Sleep(2 * time.Minute)
		synctest.Wait()

		s := rec.only(t, EventError).String()
		if n := strings.Count(s, string(StatusSecretDisabled)); n != 1 {
			t.Errorf("%q names SecretDisabled %d times, want once", s, n)
		}
		if n := strings.Count(s, v1); n != 1 || strings.Contains(s, "->") {
			t.Errorf("%q: the kept version %s should appear once, with no arrow", s, v1)
		}
		for _, want := range []string{"Error (poll)", "myvault.vault.azure.net/conn", "db.conn", "disabled"} {
			if !strings.Contains(s, want) {
				t.Errorf("%q lacks %q", s, want)
			}
		}

		v2 := src.set("myvault", "conn", "good-v2")
		src.heal("myvault", "conn")
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if s := rec.only(t, EventChanged).String(); !strings.Contains(s, "version "+v1+" -> "+v2) {
			t.Errorf("changed event %q, want version %s -> %s", s, v1, v2)
		}
	})
}
