package azvault

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// slowCredential answers each token request after latency, or fails it when its context
// ends first (as azidentity does).
type slowCredential struct {
	latency time.Duration // 0: never answers
	calls   atomic.Int64
}

func (c *slowCredential) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	n := c.calls.Add(1)
	var after <-chan time.Time
	if c.latency > 0 {
		timer := time.NewTimer(c.latency)
		defer timer.Stop()
		after = timer.C
	}
	select {
	case <-after:
		return azcore.AccessToken{Token: "token-" + strconv.FormatInt(n, 10), ExpiresOn: time.Now().Add(time.Hour)}, nil
	case <-ctx.Done():
		return azcore.AccessToken{}, ctx.Err()
	}
}

var vaultScope = policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}

// Defect 5: sharedCredential's deadline started with the shared flight, and overlapping
// callers kept one flight alive: after 30 s of overlap every token call failed. Callers
// overlapping for two minutes must all get tokens, sharing calls; a hung call still ends
// at the per-call deadline, and no goroutine outlives the callers.
func TestSharedCredentialUnderSustainedLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := &slowCredential{latency: time.Second}
		c := &sharedCredential{cred: slow}
		// Twenty callers, each asking again as soon as it has its token, as vault requests
		// do under load: some caller always waits, so the flight's record never empties.
		var calls, failed atomic.Int64
		var firstFailure atomic.Value
		var wg sync.WaitGroup
		start := time.Now()
		for range 20 {
			wg.Go(func() {
				for time.Since(start) < 2*time.Minute {
					calls.Add(1)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := c.GetToken(ctx, vaultScope)
					cancel()
					if err != nil && failed.Add(1) == 1 {
						firstFailure.Store(fmt.Sprintf("%v after %v", err, time.Since(start)))
					}
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Errorf("%d of %d overlapping token calls failed; the first: %v", n, calls.Load(), firstFailure.Load())
		}
		if n := slow.calls.Load(); n < 100 || n >= calls.Load() {
			t.Errorf("%d calls to the credential for %d token requests over 2 minutes, want them shared (fewer) and renewed", n, calls.Load())
		}

		hung := &sharedCredential{cred: &slowCredential{}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		began := time.Now()
		_, err := hung.GetToken(ctx, vaultScope)
		if took := time.Since(began); !errors.Is(err, context.DeadlineExceeded) || took != tokenTimeout {
			t.Errorf("hung token call: %v after %v, want DeadlineExceeded after %v", err, took, tokenTimeout)
		}

		// A caller that gives up ends the shared call it alone waited for.
		ctx, cancel = context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := hung.GetToken(ctx, vaultScope); done <- err }()
		time.Sleep(time.Second)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled token call: %v", err)
		}
		// The bubble ends only when its goroutines have: a shared call left behind by the
		// callers would fail the test as a deadlock.
	})
}
