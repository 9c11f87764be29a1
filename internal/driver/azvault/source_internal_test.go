package azvault

import (
	"context"
	"testing"
	"time"

	"github.com/viperkv/viperkv/kvtest"
)

// A GET through the real SDK reports the vault's clock (its Date header), which the
// same-second re-check measures by, and the version's updated on the same clock.
func TestGetSecretReportsTheVaultsClock(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", "sentinel-value")
	src, err := New(Config{Credential: srv.Credential(), Transport: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Second)
	b, err := src.Get(context.Background(), "myvault.vault.azure.net", "db", "")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	switch {
	case b.Date == nil:
		t.Fatal("Date is nil: the response's Date was not read")
	case b.Date.Before(before) || b.Date.After(after):
		t.Errorf("Date %v, want between %v and %v", b.Date, before, after)
	case b.Attributes.Updated == nil || b.Date.Before(*b.Attributes.Updated):
		t.Errorf("Date %v before the version's updated %v", b.Date, b.Attributes.Updated)
	}
}

// Defect: the first request to a vault held a mutex that later callers waited on whatever
// their own context said. A caller whose context ends while another's first request hangs
// returns at once.
func TestFirstRequestDoesNotHoldOthersPastTheirContext(t *testing.T) {
	srv := kvtest.NewServerT(t)
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db", "v")
	kv.InjectFault(kvtest.OpChallenge, kvtest.Fault{Hang: true, Times: 1})
	src, err := New(Config{Credential: srv.Credential(), Transport: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	first, cancelFirst := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelFirst()
	firstDone := make(chan error, 1)
	go func() { _, err := src.Get(first, "myvault.vault.azure.net", "db", ""); firstDone <- err }()
	for kv.Count(kvtest.OpChallenge) == 0 { // the first request is out, and hangs
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = src.Get(ctx, "myvault.vault.azure.net", "db", "")
	if took := time.Since(start); err == nil || took > 5*time.Second {
		t.Errorf("a Get with a 100 ms deadline returned %v after %v, while another's first request hung", err, took)
	}
	cancelFirst()
	<-firstDone
	// The hung first request never answered: the next caller takes the turn and succeeds.
	if b, err := src.Get(context.Background(), "myvault.vault.azure.net", "db", ""); err != nil || b.Value == nil || *b.Value != "v" {
		t.Errorf("after the hung first request: %+v, %v", b, err)
	}
}
