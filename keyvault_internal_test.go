package viperkv

import (
	"context"
	"log/slog"
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
	tel, err := newTelemetry(options{})
	if err != nil {
		t.Fatal(err)
	}
	src := newKeyVault(srv.Credential(), srv.Client(), 4, slog.New(slog.DiscardHandler), tel)
	before := time.Now().Truncate(time.Second)
	sv, err := src.getSecret(context.Background(), Reference{Vault: "myvault.vault.azure.net", Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	switch {
	case sv.served == nil:
		t.Fatal("served is nil: the response's Date was not read")
	case sv.served.Before(before) || sv.served.After(after):
		t.Errorf("served %v, want between %v and %v", sv.served, before, after)
	case sv.updated == nil || sv.served.Before(*sv.updated):
		t.Errorf("served %v before the version's updated %v", sv.served, sv.updated)
	}
}
