package eventgrid

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// tenantKeys serves a tenant's OpenID Connect metadata and JWKS, whose keys a test can roll
// and whose JWKS answers a test can hold back.
type tenantKeys struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []jose.JSONWebKey
	hold    chan struct{} // while non-nil, JWKS requests wait for it to close
	fetches atomic.Int64
}

func newTenantKeys(t *testing.T) *tenantKeys {
	tk := &tenantKeys{}
	mux := http.NewServeMux()
	mux.HandleFunc("/tenant/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": "https://login.example/tenant/v2.0", "jwks_uri": tk.srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		tk.fetches.Add(1)
		tk.mu.Lock()
		hold, keys := tk.hold, tk.keys
		tk.mu.Unlock()
		if hold != nil {
			<-hold
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: keys})
	})
	tk.srv = httptest.NewTLSServer(mux)
	t.Cleanup(tk.srv.Close)
	return tk
}

// roll makes the tenant sign with a new key, which alone it publishes.
func (tk *tenantKeys) roll(t *testing.T, kid string) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tk.mu.Lock()
	tk.keys = []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}}
	tk.mu.Unlock()
	return k
}

func token(t *testing.T, key *rsa.PrivateKey, kid string, now time.Time) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	claims, _ := json.Marshal(map[string]any{"iss": "https://sts.windows.net/tenant/", "tid": "tenant", "aud": "api://hook",
		"appid": eventGridAppID, "roles": []string{DefaultRole}, "iat": now.Unix(), "nbf": now.Unix() - 60, "exp": now.Unix() + 3600})
	jws, err := s.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cancelFirst is a transport on which a cancelled request fails even when its answer came:
// a real transport races the two, which would let a fetch tied to a request that hung up
// pass now and then.
type cancelFirst struct{ base http.RoundTripper }

func (c cancelFirst) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err == nil && r.Context().Err() != nil {
		resp.Body.Close()
		return nil, r.Context().Err()
	}
	return resp, err
}

func bearer(ctx context.Context, tok string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/events", nil).WithContext(ctx)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

// Defect: a forged token made the handler fetch the tenant's keys on the forger's request,
// and stamped the attempt before fetching; the forger hung up, the fetch was cancelled, and
// for the next five minutes no refetch was allowed. Repeated every five minutes, it kept
// the keys stale for good: after Entra rolled its keys, every genuine delivery got 401.
// The fetch now outlives the request that started it, so the keys are current.
func TestForgedTokenAndHangUpCannotKeepKeysStale(t *testing.T) {
	tk := newTenantKeys(t)
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	a := &entraAuth{tenant: "tenant", audiences: []string{"api://hook"}, role: DefaultRole,
		discovery: tk.srv.URL + "/tenant/v2.0/.well-known/openid-configuration", v1Issuer: "https://sts.windows.net/tenant/",
		client: &http.Client{Transport: cancelFirst{tk.srv.Client().Transport}}, now: now}

	old := tk.roll(t, "old")
	if err := a.check(context.Background(), bearer(context.Background(), token(t, old, "old", now()))); err != nil {
		t.Fatalf("a genuine token: %v", err)
	}
	newKey := tk.roll(t, "new") // Entra rolls its keys
	advance(keyRefetchFloor + time.Minute)

	// The forger's request starts a refetch and hangs up while the JWKS answer is slow.
	tk.mu.Lock()
	tk.hold = make(chan struct{})
	tk.mu.Unlock()
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ctx, hangUp := context.WithCancel(context.Background())
	refused := make(chan error, 1)
	before := tk.fetches.Load()
	go func() { refused <- a.check(ctx, bearer(ctx, token(t, forger, "forged", now()))) }()
	for tk.fetches.Load() == before {
		time.Sleep(time.Millisecond)
	}
	hangUp() // before the keys come: cancelFirst fails a fetch the hang-up reaches
	tk.mu.Lock()
	close(tk.hold)
	tk.hold = nil
	tk.mu.Unlock()
	if err := <-refused; err == nil {
		t.Fatal("a forged token was accepted")
	}

	// A genuine delivery signed with the new key, moments later.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := a.check(context.Background(), bearer(context.Background(), token(t, newKey, "new", now())))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a genuine token signed with the rolled key: %v: the forger kept the keys stale", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := tk.fetches.Load() - before; n > 2 {
		t.Errorf("%d key fetches after the forgery, want the one it started (and at most one more)", n)
	}
}

// Suspected in review, confirmed: the key fetch ran under the lock, so every delivery
// waited for a slow fetch (up to 10 s) whatever its own deadline. A caller that arrives
// during a fetch waits for it only as long as its own context allows.
func TestSlowKeyFetchHoldsNoOneBeyondTheirContext(t *testing.T) {
	tk := newTenantKeys(t)
	key := tk.roll(t, "k")
	tk.mu.Lock()
	tk.hold = make(chan struct{})
	tk.mu.Unlock()
	a := &entraAuth{tenant: "tenant", audiences: []string{"api://hook"}, role: DefaultRole,
		discovery: tk.srv.URL + "/tenant/v2.0/.well-known/openid-configuration", v1Issuer: "https://sts.windows.net/tenant/",
		client: tk.srv.Client(), now: time.Now}
	first := make(chan error, 1)
	go func() {
		first <- a.check(context.Background(), bearer(context.Background(), token(t, key, "k", time.Now())))
	}()
	for tk.fetches.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := a.check(ctx, bearer(ctx, token(t, key, "k", time.Now())))
	if took := time.Since(start); err == nil || took > 3*time.Second {
		t.Errorf("a delivery with a 100 ms deadline during a slow key fetch: %v after %v", err, took)
	}
	tk.mu.Lock()
	close(tk.hold)
	tk.hold = nil
	tk.mu.Unlock()
	if err := <-first; err != nil {
		t.Errorf("the delivery that started the fetch: %v", err)
	}
}
