package resource_test

import (
	"context"
	"fmt"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/resource"
)

// upstreamClient stands for anything built from a secret: a database pool, an API client.
type upstreamClient struct {
	name string
	key  string
}

// A client that carries an API key is rebuilt when the key is rotated. Requests hold a
// lease while they use the client; the old client is released after the last one ends.
func ExampleNew() {
	srv, kv, stop := exampleEmulator()
	defer stop()
	kv.SetSecret("api-key", "key-1")

	v := exampleViper(`upstream: {api_key: "@KeyVault(VaultName=myvault;SecretName=api-key)"}`)
	ctx := context.Background()
	p, err := viperkv.New(v, viperkv.WithTransport(srv.Client()))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Load(ctx); err != nil {
		fmt.Println(err)
		return
	}

	built := 0
	released := make(chan string, 2)
	clients, err := resource.New(ctx, p, []string{"upstream.api_key"},
		func(ctx context.Context, c *viper.Viper) (*upstreamClient, error) {
			// Build the new client and check it works; an error keeps the old one serving.
			built++
			return &upstreamClient{name: fmt.Sprintf("client %d", built), key: c.GetString("upstream.api_key")}, nil
		},
		func(old *upstreamClient) { released <- old.name }, // close connections here
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer clients.Close()

	c, done := clients.Acquire() // per request
	fmt.Println("using", c.name)
	done()

	kv.SetSecret("api-key", "key-2") // the operator rotates the key
	_ = p.Refresh(ctx)               // Watch would notice on its next poll
	fmt.Println("released", <-released)

	c, done = clients.Acquire()
	fmt.Println("using", c.name)
	done()
	// Output:
	// using client 1
	// released client 1
	// using client 2
}
