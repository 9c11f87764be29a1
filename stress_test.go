package viperkv

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestAtomicSwapUnderReaders rotates two secrets together 1,000 times while 32 readers read
// every key through the documented read path (p.Viper(), then reads). Each reader must see
// both secrets from the same generation, never go back a generation, and never see a
// sibling vanish; at the end the configuration must hold the source's latest versions.
// Real time and real parallelism, not a bubble: what it tests is readers racing the
// publisher on real cores, with the race detector watching. The publisher rotates again
// only once a reader has seen the last generation, so every generation is read however
// the scheduler runs them (GOMAXPROCS=1 included); no clock is involved.
func TestAtomicSwapUnderReaders(t *testing.T) {
	rotations := 1000
	if testing.Short() {
		rotations = 100
	}
	src := newFakeSource()
	src.set("myvault", "user", "gen-0")
	src.set("myvault", "password", "gen-0")
	p := loadFake(t, src, `
db:
  user: "@KeyVault(VaultName=myvault;SecretName=user)"
  password: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/password/)"
  dsn: "user=@KeyVault(VaultName=myvault;SecretName=user) password=@KeyVault(VaultName=myvault;SecretName=password)"
  pool: 10
name: app
`)

	gen := func(s string) int {
		var n int
		if _, err := fmt.Sscanf(s, "gen-%d", &n); err != nil {
			return -1
		}
		return n
	}
	var stop atomic.Bool
	var reads, seen atomic.Int64 // seen: the newest generation a reader saw
	var wg sync.WaitGroup
	errs := make(chan string, 32)
	for range 32 {
		wg.Go(func() {
			last := 0
			for !stop.Load() {
				c := p.Viper()
				user, password, dsn := c.GetString("db.user"), c.GetString("db.password"), c.GetString("db.dsn")
				g := gen(user)
				switch {
				case g < 0 || gen(password) != g:
					errs <- fmt.Sprintf("torn read: user %q, password %q", user, password)
					return
				case dsn != "user="+user+" password="+password:
					errs <- fmt.Sprintf("dsn %q does not match user %q and password %q", dsn, user, password)
					return
				case g < last:
					errs <- fmt.Sprintf("went back from generation %d to %d", last, g)
					return
				case c.GetInt("db.pool") != 10 || c.GetString("name") != "app":
					errs <- "a sibling key vanished"
					return
				}
				last = g
				reads.Add(1)
				for {
					if s := seen.Load(); int64(g) <= s || seen.CompareAndSwap(s, int64(g)) {
						break
					}
				}
				// Readers spin; yielding keeps 32 of them on 2 cores from starving the
				// publisher of time slices.
				runtime.Gosched()
			}
		})
	}
	var versions map[string]string
	for i := 1; i <= rotations; i++ {
		versions = map[string]string{
			"user":     src.set("myvault", "user", fmt.Sprintf("gen-%d", i)),
			"password": src.set("myvault", "password", fmt.Sprintf("gen-%d", i)),
		}
		if err := p.Refresh(context.Background()); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		for seen.Load() < int64(i) && len(errs) == 0 { // a reader that failed stops reading
			runtime.Gosched()
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for name, version := range versions {
		if got, st := p.GetString("db."+name), StatusOf(t, p, "db."+name); got != fmt.Sprintf("gen-%d", rotations) || st.Version != version {
			t.Errorf("db.%s = %q at version %s, the source's latest is gen-%d at %s", name, got, st.Version, rotations, version)
		}
	}
	t.Logf("%d rotations, %d consistent reads", rotations, reads.Load())
}
