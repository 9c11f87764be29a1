package viperkv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// Every secret of a vault whose name starts with "orders--" becomes a key: "--" is the key
// delimiter, the prefix is stripped. A value in the config file gives way to the vault's.
func ExampleWithVaultSource() {
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("orders--Database--Password", "s3cret")
	kv.SetSecret("billing--Database--Password", "not-ours")

	v := exampleViper("database:\n  host: db.internal\n  password: from-the-file\n")
	p, err := viperkv.New(v, viperkv.WithEmulator(srv),
		viperkv.WithVaultSource("https://myvault.vault.azure.net", viperkv.SecretPrefix("orders--")))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Load(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.GetString("database.host"), p.GetString("database.password"))
	for _, vs := range p.VaultSources() {
		fmt.Println(vs.Vault, "listed", vs.Listed, "imported", vs.Imported, "filtered", vs.Skipped["filtered"])
	}
	// Output:
	// db.internal s3cret
	// myvault.vault.azure.net listed 2 imported 1 filtered 1
}

// A readiness probe: 200 while every reference has a value, 503 naming the keys that have
// none (never a value).
func ExampleProvider_HealthHandler() {
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("db-password", "s3cret")

	v := viper.New()
	v.Set("db.password", "@KeyVault(VaultName=myvault;SecretName=db-password)")
	v.Set("cache.password", "@KeyVault(VaultName=myvault;SecretName=missing)")
	p, err := viperkv.New(v, viperkv.WithEmulator(srv))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = p.Load(context.Background()) // a *LoadError: cache.password has no value

	rec := httptest.NewRecorder()
	p.HealthHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	var body struct {
		Status  string `json:"status"`
		Failing []struct {
			Key, Status  string
			MakesUnready bool `json:"makes_unready"`
		} `json:"failing"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	fmt.Println(rec.Code, body.Status)
	for _, f := range body.Failing {
		fmt.Println(f.Key, f.Status, "makes unready:", f.MakesUnready)
	}
	// Output:
	// 503 unavailable
	// cache.password SecretNotFound makes unready: true
}
