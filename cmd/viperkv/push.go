package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
)

// eventGridHeaderValueEnv holds the value of --eventgrid-header: a secret, so never a flag
// (the command line is visible to every user of the machine) and never passed on to the
// command.
const eventGridHeaderValueEnv = "VIPERKV_EVENTGRID_HEADER_VALUE"

// pushFlags are run's flags for taking Key Vault's events from Event Grid.
type pushFlags struct {
	listen, path        string
	certFile, keyFile   string
	tenant, role        string
	audiences           []string
	header, headerValue string
	delay               time.Duration
}

func (f *pushFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "with --watch: take Key Vault's Event Grid events on this address (host:port) so rotations arrive by push")
	fl.StringVar(&f.path, "listen-path", "/", "with --listen: the path Event Grid posts to")
	fl.StringVar(&f.certFile, "listen-cert", "", "with --listen: TLS certificate file (PEM) to serve HTTPS, as Event Grid requires; without it plain HTTP, for a TLS-terminating proxy")
	fl.StringVar(&f.keyFile, "listen-key", "", "with --listen-cert: its private key file (PEM)")
	fl.StringVar(&f.tenant, "eventgrid-tenant", "", "with --eventgrid-audience: the Microsoft Entra tenant whose tokens Event Grid presents (default $AZURE_TENANT_ID, or the emulator's)")
	fl.StringSliceVar(&f.audiences, "eventgrid-audience", nil, "accept Event Grid's Entra ID tokens for this audience: the webhook app's application ID or ID URI (repeatable)")
	fl.StringVar(&f.role, "eventgrid-role", eventgrid.DefaultRole, "with --eventgrid-audience: the app role the token must hold")
	fl.StringVar(&f.header, "eventgrid-header", "", "accept deliveries carrying this header (an Event Grid delivery property) with the value in $"+eventGridHeaderValueEnv)
	fl.DurationVar(&f.delay, "push-delay", 0, "with --listen: wait a random time up to this before fetching a changed secret (spreads a fleet's GETs)")
}

// check validates the flags, reading the header value from the environment.
func (f *pushFlags) check(watch bool) error {
	if f.listen == "" {
		for _, set := range []bool{len(f.audiences) > 0, f.header != "", f.certFile != "", f.delay != 0} {
			if set {
				return usageError("--eventgrid-audience, --eventgrid-header, --listen-cert and --push-delay need --listen")
			}
		}
		return nil
	}
	switch {
	case !watch:
		return usageError("--listen needs --watch: pushed rotations restart the command")
	case len(f.audiences) == 0 && f.header == "":
		return usageError("--listen needs authentication: --eventgrid-audience (Microsoft Entra ID) and/or --eventgrid-header")
	case (f.certFile == "") != (f.keyFile == ""):
		return usageError("--listen-cert and --listen-key go together")
	case f.delay < 0:
		return usageError("--push-delay must not be negative")
	case !strings.HasPrefix(f.path, "/"):
		return usageError("--listen-path must start with /")
	}
	if f.header != "" {
		f.headerValue = os.Getenv(eventGridHeaderValueEnv)
		if f.headerValue == "" {
			return usageError("--eventgrid-header %s: set its value in $%s", f.header, eventGridHeaderValueEnv)
		}
	}
	if len(f.audiences) > 0 && f.tenant == "" {
		f.tenant = os.Getenv("AZURE_TENANT_ID")
	}
	return nil
}

// pushListener serves the Event Grid handler until closed.
type pushListener struct {
	srv  *http.Server
	done chan struct{}
}

// start listens on --listen and serves p's Event Grid handler there.
func (f *pushFlags) start(p *viperkv.Provider, tenant string, say func(string, ...any)) (*pushListener, error) {
	var opts []eventgrid.Option
	if len(f.audiences) > 0 {
		if f.tenant == "" {
			f.tenant = tenant
		}
		if f.tenant == "" {
			return nil, usageError("--eventgrid-audience needs --eventgrid-tenant (or $AZURE_TENANT_ID)")
		}
		opts = append(opts, eventgrid.Entra(f.tenant, f.audiences...), eventgrid.Role(f.role))
	}
	if f.header != "" {
		opts = append(opts, eventgrid.Header(f.header, f.headerValue))
	}
	h, err := eventgrid.NewHandler(p, opts...)
	if err != nil {
		return nil, usageError("%s", strings.TrimPrefix(err.Error(), "viperkv: "))
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, usageError("--listen %s: %v", f.listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle(f.path, h)
	l := &pushListener{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}, done: make(chan struct{})}
	scheme := "http"
	if f.certFile != "" {
		scheme = "https"
	}
	go func() {
		defer close(l.done)
		var err error
		if f.certFile != "" {
			err = l.srv.ServeTLS(ln, f.certFile, f.keyFile)
		} else {
			err = l.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			say("warning: --listen: %v; rotations arrive by polling only", err)
		}
	}()
	auth := []string{}
	if len(f.audiences) > 0 {
		auth = append(auth, "Entra ID (tenant "+f.tenant+", audience "+strings.Join(f.audiences, ", ")+")")
	}
	if f.header != "" {
		auth = append(auth, "header "+f.header)
	}
	say("listening for Event Grid deliveries on %s://%s%s (%s)", scheme, ln.Addr(), f.path, strings.Join(auth, " and "))
	return l, nil
}

func (l *pushListener) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.srv.Shutdown(ctx)
	<-l.done
}

// withoutVar returns environ without the variable name.
func withoutVar(environ []string, name string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
