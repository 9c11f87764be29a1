package viperkv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// exampleEmulator starts an emulator with one vault the system-assigned identity may read,
// and sets the managed identity variables App Service would set. stop undoes both.
func exampleEmulator() (srv *kvtest.Server, kv *kvtest.Vault, stop func()) {
	srv = kvtest.NewServer()
	for k, v := range srv.Env() {
		os.Setenv(k, v)
	}
	kv = srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	return srv, kv, func() {
		for k := range srv.Env() {
			os.Unsetenv(k)
		}
		srv.Close()
	}
}

func exampleViper(doc string) *viper.Viper {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		panic(err)
	}
	return v
}

// Keeping a rotating secret current: Watch re-checks versionless references every refresh
// interval (5 minutes by default; short here) and OnChange tells the app which keys
// changed. Event.Current holds the new values, Event.Previous the old ones.
func ExampleProvider_Watch() {
	srv, kv, stop := exampleEmulator()
	defer stop()
	kv.SetSecret("api-key", "key-one")

	v := exampleViper(`api: {key: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/api-key/)"}`)
	p, err := viperkv.New(v, viperkv.WithTransport(srv.Client()),
		viperkv.WithRefreshInterval(50*time.Millisecond), viperkv.WithoutFileWatch())
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Load(ctx); err != nil {
		fmt.Println(err)
		return
	}

	changed := make(chan viperkv.Event, 1)
	p.OnChange(func(e viperkv.Event) {
		if e.Kind == viperkv.EventChanged {
			select {
			case changed <- e:
			default: // this example reads one
			}
		}
	})
	go p.Watch(ctx) // runs until ctx ends

	kv.SetSecret("api-key", "key-two") // the secret rotates
	e := <-changed
	fmt.Println(e.Kind, e.Source, e.Keys)
	fmt.Println(e.Previous.GetString("api.key"), "->", e.Current.GetString("api.key"))
	fmt.Println(p.GetString("api.key"))
	// Output:
	// Changed poll [api.key]
	// key-one -> key-two
	// key-two
}

// A Load that fails names every reference that did not resolve, with its status, never a
// value. The references that did resolve are in place all the same.
func ExampleLoadError() {
	srv, kv, stop := exampleEmulator()
	defer stop()
	kv.SetSecret("db-conn", "Server=db;Password=s3cret")
	kv.SetSecret("old-key", "retired")
	if err := kv.SetEnabled("old-key", "", false); err != nil {
		fmt.Println(err)
		return
	}

	v := exampleViper(`
db: {conn: "@KeyVault(VaultName=myvault;SecretName=db-conn)"}
api: {key: "@KeyVault(VaultName=myvault;SecretName=api-key)"}
legacy: {key: "@KeyVault(VaultName=myvault;SecretName=old-key)"}
`)
	p, err := viperkv.New(v, viperkv.WithTransport(srv.Client()))
	if err != nil {
		fmt.Println(err)
		return
	}
	err = p.Load(context.Background())

	var le *viperkv.LoadError
	if errors.As(err, &le) {
		for _, f := range le.Failed {
			fmt.Println(f.Key, f.Reference.Name, f.Status)
		}
	}
	fmt.Println(p.GetString("db.conn") != "")
	// Output:
	// api.key api-key SecretNotFound
	// legacy.key old-key SecretDisabled
	// true
}

// Notify is the same targeted refresh for events that arrive another way, for example
// from a Service Bus subscription that Event Grid forwards the vault's events to.
func ExampleProvider_Notify() {
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	kv.SetSecret("api-key", "key-one")
	p, err := viperkv.New(exampleViper(`api: {key: "@KeyVault(VaultName=myvault;SecretName=api-key)"}`),
		viperkv.WithEmulator(srv))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Load(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	version := kv.SetSecret("api-key", "key-two")

	// The fields of the event's data: VaultName, ObjectName, Version.
	err = p.Notify(context.Background(), viperkv.Notice{
		Type: viperkv.NoticeNewVersion, ID: "the event's id", Vault: "myvault", Name: "api-key", Version: version,
	})
	fmt.Println(err, p.GetString("api.key"))
	// Output: <nil> key-two
}
