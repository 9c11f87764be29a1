package viperkv

import (
	"context"
	"errors"
	"sync"
	"time"
)

// secretSource is where secret versions come from: Key Vault through azsecrets (keyVault)
// in production, a fake in the logic tests. It is the one place the resolver meets the
// network, so merge, schedule, back-off and expiry can be tested under simulated time.
type secretSource interface {
	// getSecret returns the version r names, or the latest when r.Version is "". A failure
	// is a *fetchError in the words of a Status; any other error counts as OtherReasons.
	getSecret(ctx context.Context, r Reference) (secretVersion, error)
	// listSecrets lists the vault's secrets with the attributes of each one's current
	// version, reading at most maxPages pages (0: all). complete is false when pages were
	// left unread. A failure is a *fetchError, as for getSecret.
	listSecrets(ctx context.Context, vault string, maxPages int) (props []secretProps, complete bool, err error)
}

// secretProps is one item of a vault's secret list: the secret's name and the attributes
// of its current version. It holds no value.
type secretProps struct {
	name                        string
	enabled                     bool
	updated, expires, notBefore *time.Time
}

// secretVersion is one version of a secret as the vault returned it.
type secretVersion struct {
	value       string
	version     string
	contentType string
	expires     *time.Time
	notBefore   *time.Time
	updated     *time.Time // when the version's attributes last changed (one-second resolution)
}

// fetchError says why a secret could not be fetched. reason names the secret, never its value.
type fetchError struct {
	status Status
	reason string
}

func (e *fetchError) Error() string { return string(e.status) + ": " + e.reason }

// secret is what the provider holds for one distinct secret: the latest outcome and the
// last good value, which a failed refresh keeps.
type secret struct {
	value       string
	version     string
	contentType string
	expires     *time.Time
	notBefore   *time.Time
	updated     *time.Time // the version's attributes' last change, as the fetch saw it
	has         bool       // value and version hold a usable (last good) value
	status      Status     // the latest outcome
	reason      string     // why, when status is not Resolved; never contains the value
	took        time.Duration
}

// fetchSecret gets one secret from src and judges it: a version outside its exp/nbf window
// is withheld (Key Vault still returns its value, for recovery and testing).
func fetchSecret(ctx context.Context, src secretSource, r Reference) *secret {
	start := time.Now()
	sv, err := src.getSecret(ctx, r)
	took := time.Since(start)
	if err != nil {
		var fe *fetchError
		if !errors.As(err, &fe) {
			fe = &fetchError{status: StatusOtherReasons, reason: "GET " + r.ID() + ": " + firstLine(err.Error())}
		}
		return &secret{status: fe.status, reason: fe.reason, took: took}
	}
	s := &secret{value: sv.value, version: sv.version, contentType: sv.contentType,
		expires: sv.expires, notBefore: sv.notBefore, updated: sv.updated, has: true, status: StatusResolved, took: took}
	now := time.Now()
	switch {
	case s.expires != nil && !now.Before(*s.expires):
		s.status, s.value, s.has = StatusSecretExpired, "", false
		s.reason = "version " + s.version + " expired at " + s.expires.UTC().Format(time.RFC3339)
	case s.notBefore != nil && now.Before(*s.notBefore):
		s.status, s.value, s.has = StatusSecretNotYetValid, "", false
		s.reason = "version " + s.version + " is not valid before " + s.notBefore.UTC().Format(time.RFC3339)
	}
	return s
}

// fetchSecrets fetches each reference once, concurrently (the source paces each vault),
// and returns the outcomes.
func fetchSecrets(ctx context.Context, src secretSource, refs []Reference) map[Reference]*secret {
	out := make(map[Reference]*secret, len(refs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range refs {
		wg.Go(func() {
			s := fetchSecret(ctx, src, r)
			mu.Lock()
			out[r] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}
