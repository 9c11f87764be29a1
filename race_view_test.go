package viperkv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// Defect: a file reload copied the app's Viper by value on Watch's goroutine, sharing its
// maps, so an app calling v.Set while Watch reloaded the file raced (the README invites Set
// then Load at any time). The app's Viper is read only inside Load, on the app's goroutine:
// under -race, Set in a loop beside reloads is no data race, and each reload keeps what the
// app had Set at the last Load.
func TestAppSetsWhileWatchReloads(t *testing.T) {
	src := newFakeSource()
	src.set("myvault", "conn", "conn-value")
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	write := func(n int) {
		doc := fmt.Sprintf("db:\n  conn: \"@KeyVault(VaultName=myvault;SecretName=conn)\"\n  gen: %d\n", n)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	v := viper.New()
	v.SetConfigFile(path)
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	v.Set("app.mode", "first")
	p, err := New(v, withSource(src.Vaults), WithRefreshInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- p.Watch(ctx) }()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the app, writing its own Viper as it likes
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v.Set("app.counter", i)
			v.SetDefault("app.default", i)
		}
	})
	for n := 1; n <= 5; n++ {
		write(n)
		deadline := time.Now().Add(10 * time.Second)
		for p.Viper().GetInt("db.gen") != n {
			if time.Now().After(deadline) {
				t.Fatalf("edit %d not reloaded within 10 s", n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if p.GetString("app.mode") != "first" || p.GetString("db.conn") != "conn-value" {
			t.Errorf("after reload %d: app.mode %q, db.conn resolved %v", n, p.GetString("app.mode"), p.GetString("db.conn") == "conn-value")
		}
	}
	close(stop)
	wg.Wait()
	cancel()
	<-watched
}
