package eventgrid_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/kvtest"
)

// exampleViper returns a Viper holding the YAML document doc.
func exampleViper(doc string) *viper.Viper {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		panic(err)
	}
	return v
}

// Rotations by push: Key Vault publishes a SecretNewVersionCreated event to Event Grid,
// Event Grid delivers it to the service's webhook, and the handler refreshes exactly that
// secret. Here the emulator plays Key Vault and Event Grid, with Microsoft Entra protected
// delivery as on Azure; polling is left at an hour, as the safety net.
func ExampleNewHandler() {
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("api-key", "key-one")

	v := exampleViper(`api: {key: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/api-key/)"}`)
	p, err := viperkv.New(v, viperkv.WithEmulator(srv),
		viperkv.WithRefreshInterval(time.Hour))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Load(context.Background()); err != nil {
		fmt.Println(err)
		return
	}

	// The webhook app's ID URI is the audience of the tokens Event Grid presents.
	h, err := eventgrid.NewHandler(p, eventgrid.Entra(srv.TenantID(), "api://orders-webhook"))
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/keyvault-events", h) // on the service's own server
	webhook := httptest.NewServer(mux)
	defer webhook.Close()

	sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: webhook.URL + "/keyvault-events", Audience: "api://orders-webhook"})
	defer sub.Close()
	if err := sub.WaitValidated(context.Background()); err != nil {
		fmt.Println(err)
		return
	}

	changed := make(chan viperkv.Event, 1)
	p.OnChange(func(e viperkv.Event) { changed <- e })
	kv.SetSecret("api-key", "key-two") // the rotation
	e := <-changed
	fmt.Println(e.Kind, e.Source, e.Keys)
	fmt.Println(p.GetString("api.key"))
	// Output:
	// Changed push [api.key]
	// key-two
}

// A fleet hears of rotations through a Service Bus topic that Event Grid forwards the
// vault's events to, one subscription per instance. Each message's body is one event in
// the subscription's schema; ParseNotices reads it and Notify refreshes the secret.
func ExampleParseNotices() {
	// A message body, as Event Grid writes it in the CloudEvents schema.
	body := []byte(`{"specversion":"1.0","type":"Microsoft.KeyVault.SecretNewVersionCreated",
		"source":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/myvault",
		"subject":"db-conn","id":"2b8e4f34-7d0c-4b8a-9f47-1f1f3b2e6f4a","time":"2026-12-01T12:00:00Z",
		"data":{"Id":"https://myvault.vault.azure.net/secrets/db-conn/4d7bcfe3b7a54ad4a9d6b1a7e1b6d2c1",
		"VaultName":"myvault","ObjectType":"Secret","ObjectName":"db-conn",
		"Version":"4d7bcfe3b7a54ad4a9d6b1a7e1b6d2c1","NBF":null,"EXP":null}}`)
	changes, err := eventgrid.ParseNotices(body)
	if err != nil {
		fmt.Println(err) // dead-letter the message: it will not parse next time either
		return
	}
	for _, c := range changes {
		fmt.Println(c.Type, c.Vault, c.Name, c.Version)
		// Then: if p.Notify(ctx, c) fails, abandon the message (Service Bus redelivers it);
		// else complete it.
	}
	// Output: Microsoft.KeyVault.SecretNewVersionCreated myvault.vault.azure.net db-conn 4d7bcfe3b7a54ad4a9d6b1a7e1b6d2c1
}
