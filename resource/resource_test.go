package resource_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
	"github.com/viperkv/viperkv/resource"
)

// testClient stands for a pool or a client built from a secret.
type testClient struct {
	gen      int
	key      string
	released atomic.Int32
}

// clientFactory builds testClients, failing for values that start with "bad", and records
// what it built and released.
type clientFactory struct {
	mu       sync.Mutex
	built    []*testClient
	attempts int
	failNext int // transient failures to simulate
	released chan *testClient
}

func newFactory() *clientFactory { return &clientFactory{released: make(chan *testClient, 1000)} }

func (f *clientFactory) build(_ context.Context, c *viper.Viper) (*testClient, error) {
	key := c.GetString("upstream.api_key")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if strings.HasPrefix(key, "bad") {
		return nil, errors.New("the upstream refused the key")
	}
	if f.failNext > 0 {
		f.failNext--
		return nil, errors.New("the upstream is unreachable")
	}
	tc := &testClient{gen: len(f.built) + 1, key: key}
	f.built = append(f.built, tc)
	return tc, nil
}

func (f *clientFactory) release(tc *testClient) {
	if tc.released.Add(1) != 1 {
		panic("released twice")
	}
	f.released <- tc
}

func (f *clientFactory) builds() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.built)
}

func (f *clientFactory) tries() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

const resourceConfig = `
upstream:
  url: https://api.example.com
  api_key: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/api-key/)"
other: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/other/)"
`

// resourceSetup loads resourceConfig on an emulator and makes a Resource for keys.
func resourceSetup(t *testing.T, keys ...string) (*kvtest.Vault, *viperkv.Provider, *clientFactory, *resource.Resource[*testClient]) {
	t.Helper()
	return resourceSetupWith(t, keys, viperkv.WithRetryBackoff(10*time.Millisecond, 40*time.Millisecond))
}

func resourceSetupWith(t *testing.T, keys []string, opts ...viperkv.Option) (*kvtest.Vault, *viperkv.Provider, *clientFactory, *resource.Resource[*testClient]) {
	t.Helper()
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("api-key", "key-1")
	kv.SetSecret("other", "other-1")
	p, err := load(t, srv, yamlViper(t, resourceConfig), opts...)
	if err != nil {
		t.Fatal(err)
	}
	f := newFactory()
	r, err := resource.New(context.Background(), p, keys, f.build, f.release)
	if err != nil {
		t.Fatal(err)
	}
	return kv, p, f, r
}

func refresh(t *testing.T, p *viperkv.Provider) {
	t.Helper()
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waitGen waits until Acquire returns generation gen.
func waitGen(t *testing.T, r *resource.Resource[*testClient], gen int) *testClient {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, done := r.Acquire()
		done()
		if c != nil && c.gen == gen {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %d never served; last %+v, Err %v", gen, c, r.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitReleased(t *testing.T, f *clientFactory, gen int) {
	t.Helper()
	select {
	case c := <-f.released:
		if c.gen != gen {
			t.Fatalf("released generation %d, want %d", c.gen, gen)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("generation %d never released", gen)
	}
}

func TestResourceSwapsOnRotationAndReleasesAfterLastLease(t *testing.T) {
	kv, p, f, r := resourceSetup(t, "upstream.api_key")
	defer r.Close()

	old, done := r.Acquire() // in flight across the rotations
	if old.gen != 1 || old.key != "key-1" {
		t.Fatalf("first value %+v", old)
	}
	kv.SetSecret("api-key", "key-2")
	refresh(t, p)
	cur := waitGen(t, r, 2)
	if cur.key != "key-2" || r.Err() != nil {
		t.Fatalf("after rotation: %+v, Err %v", cur, r.Err())
	}
	// A second rotation retires generation 2, which no one holds. Its release comes a
	// rotation after generation 1 was retired: had leases not held generation 1 back, it
	// would have been released first (waitReleased fails on it).
	kv.SetSecret("api-key", "key-3")
	refresh(t, p)
	waitGen(t, r, 3)
	waitReleased(t, f, 2)
	if old.released.Load() != 0 {
		t.Fatal("the old value was released while a lease on it was held")
	}
	done()
	done() // extra calls do nothing
	waitReleased(t, f, 1)
}

func TestResourceKeepsServingWhenBuildFails(t *testing.T) {
	kv, p, f, r := resourceSetup(t, "upstream.api_key")
	defer r.Close()

	bad := kv.SetSecret("api-key", "bad-sentinel-4711")
	refresh(t, p)
	deadline := time.Now().Add(10 * time.Second)
	for r.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	err := r.Err()
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "the upstream refused the key") {
		t.Fatalf("Err = %v, want the failed version %s and the cause", err, bad)
	}
	if strings.Contains(err.Error(), "sentinel") {
		t.Fatalf("Err shows the value: %v", err)
	}
	if c, done := r.Acquire(); c.gen != 1 {
		t.Fatalf("serving %+v after a failed rebuild, want generation 1", c)
	} else {
		done()
	}

	// A newer good version recovers.
	kv.SetSecret("api-key", "key-3")
	refresh(t, p)
	waitGen(t, r, 2)
	if r.Err() != nil {
		t.Fatalf("Err after recovery: %v", r.Err())
	}
	waitReleased(t, f, 1)

	// A bad version followed by one with the value in use: nothing to rebuild, Err clears.
	kv.SetSecret("api-key", "bad-again")
	refresh(t, p)
	for r.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	kv.SetSecret("api-key", "key-3")
	refresh(t, p)
	for r.Err() != nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.Err() != nil || f.builds() != 2 {
		t.Fatalf("Err %v and %d builds, want nil and 2", r.Err(), f.builds())
	}
}

// TestResourceRetriesAFailedBuild: a build that fails for a passing reason (the database
// restarting) is retried on the provider's back-off, with no new version needed.
func TestResourceRetriesAFailedBuild(t *testing.T) {
	kv, p, f, r := resourceSetup(t, "upstream.api_key")
	defer r.Close()
	f.mu.Lock()
	f.failNext = 3
	f.mu.Unlock()
	v := kv.SetSecret("api-key", "key-2")
	refresh(t, p)
	cur := waitGen(t, r, 2)
	if cur.key != "key-2" || r.Err() != nil || f.tries() != 1+4 {
		t.Fatalf("after retries: %+v, Err %v, %d build attempts; want key-2, nil, 5", cur, r.Err(), f.tries())
	}
	waitReleased(t, f, 1)
	t.Logf("version %s served after 3 failed builds", v)
}

// TestResourceCloseCancelsARetry: Close does not wait for a retry scheduled far ahead.
func TestResourceCloseCancelsARetry(t *testing.T) {
	kv, p, f, r := resourceSetupWith(t, []string{"upstream.api_key"}, viperkv.WithRetryBackoff(time.Hour, time.Hour))
	kv.SetSecret("api-key", "bad-1")
	refresh(t, p)
	deadline := time.Now().Add(10 * time.Second)
	for r.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.Err() == nil {
		t.Fatal("the bad version did not fail")
	}
	start := time.Now()
	r.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v with a retry scheduled in an hour", d)
	}
	waitReleased(t, f, 1)
}

func TestResourceRebuildsOnlyForItsKeys(t *testing.T) {
	for _, key := range []string{"upstream.api_key", "upstream", "UPSTREAM.API_KEY"} {
		t.Run(key, func(t *testing.T) {
			kv, p, f, r := resourceSetup(t, key)
			defer r.Close()
			kv.SetSecret("other", "other-2")
			refresh(t, p)
			kv.SetSecret("api-key", "key-2")
			refresh(t, p)
			waitGen(t, r, 2) // events arrive in order: the other secret's came first
			waitReleased(t, f, 1)
			if f.builds() != 2 {
				t.Fatalf("%d builds, want 2: the other secret's rotation rebuilt", f.builds())
			}
		})
	}
}

func TestResourceFirstBuildFails(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("api-key", "bad-1")
	kv.SetSecret("other", "other-1")
	p, err := load(t, srv, yamlViper(t, resourceConfig))
	if err != nil {
		t.Fatal(err)
	}
	f := newFactory()
	r, err := resource.New(context.Background(), p, []string{"upstream.api_key"}, f.build, f.release)
	if r != nil || err == nil || !strings.Contains(err.Error(), "the upstream refused the key") {
		t.Fatalf("New = %v, %v; want an error", r, err)
	}
	kv.SetSecret("api-key", "key-2")
	refresh(t, p)
	// A working Resource over the same key, subscribed after the failed one, rebuilds on a
	// later rotation: by then both rotations were published to every watcher, the failed
	// one's too had it stayed subscribed, and the first a whole refresh earlier.
	f2 := newFactory()
	r2, err := resource.New(context.Background(), p, []string{"upstream.api_key"}, f2.build, f2.release)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	kv.SetSecret("api-key", "key-3")
	refresh(t, p)
	waitGen(t, r2, 2)
	if n := f.tries(); n != 1 {
		t.Fatalf("a Resource that failed to start still rebuilds: %d build attempts, want the first one", n)
	}
	if _, err := resource.New(context.Background(), p, nil, f.build, f.release); err == nil {
		t.Fatal("New without keys did not fail")
	}
}

func TestResourceCloseWaitsForLeases(t *testing.T) {
	_, _, f, r := resourceSetup(t, "upstream.api_key")
	c, done := r.Acquire()
	// Close returns only once the value is released, which the lease holds back: whether it
	// was is read the moment Close returns, not after a wait a slow machine can outlast.
	released := make(chan int32, 1)
	go func() { r.Close(); released <- c.released.Load() }()
	// Acquire gives the zero value once Close has taken the value out of service: from then
	// on Close has nothing left to do but wait for the lease.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, d := r.Acquire()
		d()
		if got == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Acquire after Close = %+v, want the zero value", got)
		}
		time.Sleep(time.Millisecond)
	}
	done()
	select {
	case n := <-released:
		if n != 1 {
			t.Fatal("Close returned while a lease was held, before releasing the current value")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the lease ended")
	}
	waitReleased(t, f, 1)
	r.Close() // twice is fine
}

// TestResourceStress rotates 100 times while 16 goroutines use the value continuously, and
// checks that no one ever uses a released value and that each value is released once.
func TestResourceStress(t *testing.T) {
	kv, p, f, r := resourceSetup(t, "upstream.api_key")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var uses, misuse atomic.Int64
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, done := r.Acquire()
				if c.released.Load() != 0 {
					misuse.Add(1)
				}
				uses.Add(1)
				runtime.Gosched() // hold the lease a moment, as work would
				if c.released.Load() != 0 {
					misuse.Add(1)
				}
				done()
			}
		})
	}
	const rotations = 100
	for i := range rotations {
		kv.SetSecret("api-key", "key-"+string(rune('a'+i%26))+time.Now().Format("150405.000000"))
		refresh(t, p)
		waitGen(t, r, i+2)
	}
	cancel()
	wg.Wait()
	r.Close()
	if misuse.Load() != 0 {
		t.Fatalf("%d uses of a released value", misuse.Load())
	}
	if len(f.released) != rotations+1 {
		t.Fatalf("%d values released, want %d", len(f.released), rotations+1)
	}
	t.Logf("%d uses across %d rotations", uses.Load(), rotations)
}

// Defect: events name a list's elements ("hosts[1]") and a resource over the list matched
// only "hosts" and "hosts.": it served the old secret for good with Err nil. A rotated
// element rebuilds it.
func TestResourceOverAListRebuilds(t *testing.T) {
	srv := newEmulator(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("h2", "host-two-v1")
	p, err := load(t, srv, yamlViper(t, "hosts:\n  - plain-host\n  - \"@KeyVault(VaultName=myvault;SecretName=h2)\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	built := make(chan []string, 4)
	r, err := resource.New(context.Background(), p, []string{"hosts"}, func(_ context.Context, c *viper.Viper) ([]string, error) {
		hs := c.GetStringSlice("hosts")
		built <- hs
		return hs, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if hs := <-built; len(hs) != 2 || hs[1] != "host-two-v1" {
		t.Fatalf("first build from %q", hs)
	}
	v2 := kv.SetSecret("h2", "host-two-v2")
	if err := p.Notify(context.Background(), viperkv.Notice{Type: viperkv.NoticeNewVersion, Vault: "myvault", Name: "h2", Version: v2}); err != nil {
		t.Fatal(err)
	}
	select {
	case hs := <-built:
		if len(hs) != 2 || hs[1] != "host-two-v2" {
			t.Errorf("rebuilt from %q, want the rotated element", hs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a rotated list element did not rebuild the resource over the list")
	}
	// The build has returned its value (it sent it first); the Resource puts it in service
	// right after: wait for that, not for a guess at how long it takes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, done := r.Acquire()
		done()
		if len(got) == 2 && got[1] == "host-two-v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serving %q, Err %v; want the rebuilt list", got, r.Err())
		}
		time.Sleep(time.Millisecond) // a hang guard: the swap follows the build at once
	}
	if err := r.Err(); err != nil {
		t.Errorf("Err %v after a good rebuild", err)
	}
}
