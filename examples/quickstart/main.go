// Command quickstart resolves Key Vault references in a Viper configuration through managed
// identity, end to end, on the built-in emulator: no Azure subscription, no credential.
//
//	go run ./examples/quickstart
//
// It starts the kvtest emulator (Entra ID, the App Service managed identity endpoint and two
// vaults seeded from testdata/emulator-seed.yaml), sets the environment App Service sets,
// loads testdata/quickstart.yaml plus one reference from an environment variable, and
// resolves it with the real azidentity.ManagedIdentityCredential and azsecrets clients.
// Each step ends with a line summing up what the emulator served for it; -v shows each
// request instead (tokens issued and validated, RBAC decisions, secrets read, Event Grid
// deliveries), never a value. The last line is "quickstart: ok" when every check passed;
// otherwise the program exits with status 1.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
	"github.com/viperkv/viperkv/kvtest"
)

// apiKeyRef is the reference the quickstart passes through the environment.
const apiKeyRef = "@KeyVault(VaultName=myvault;SecretName=api-key)"

func main() {
	config := flag.String("config", "testdata/quickstart.yaml", "configuration file to resolve")
	seed := flag.String("seed", "testdata/emulator-seed.yaml", "emulator seed: vaults, secrets, identities, grants")
	verbose := flag.Bool("v", false, "show each request the emulator serves, not one summary line a step")
	quiet := flag.Bool("quiet", false, "do not show the emulator's side of the flow at all")
	flag.Parse()

	trace := traceSummary
	switch {
	case *quiet:
		trace = traceNone
	case *verbose:
		trace = traceEach
	}
	if err := run(context.Background(), os.Stdout, *config, *seed, trace); err != nil {
		fmt.Fprintln(os.Stdout, "quickstart: FAILED:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, configFile, seedFile string, trace traceMode) error {
	out = &syncWriter{w: out} // the emulator narrates from its handler goroutines
	flow := &flowLog{w: out, mode: trace}
	say := func(format string, args ...any) { flow.step(); fmt.Fprintf(out, "quickstart: "+format+"\n", args...) }

	// 1. The emulator, narrating its side of the flow.
	seed, err := os.ReadFile(seedFile)
	if err != nil {
		return fmt.Errorf("emulator seed (run from the repository root): %w", err)
	}
	srv, err := kvtest.Start(kvtest.WithLogger(slog.New(&narrator{log: flow})), kvtest.WithSeed(seed))
	if err != nil {
		return err
	}
	defer srv.Close()
	say("emulator up: tenant %s, vaults %s%s", srv.TenantID(), vaultNames(srv), trace.hint())
	flow.started() // the seed's events show after that line, not before it

	// 2. The environment App Service gives an app with a managed identity, plus one
	// reference in an environment variable.
	env := srv.Env()
	for k, v := range env {
		os.Setenv(k, v)
	}
	os.Setenv("APP_API_KEY", apiKeyRef)
	say("environment: IDENTITY_ENDPOINT=%s IDENTITY_HEADER=<set> APP_API_KEY=%s", env["IDENTITY_ENDPOINT"], apiKeyRef)

	// 3. Viper as the service configures it.
	v := viper.New()
	v.SetConfigFile(configFile)
	v.SetEnvPrefix("APP")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := v.ReadInConfig(); err != nil {
		return fmt.Errorf("reading %s (run from the repository root): %w", configFile, err)
	}

	// 4. Resolve with the system-assigned identity. srv.Client() reaches the emulator for
	// the production host names in the file; on Azure, leave WithTransport out.
	say("resolving %s with the system-assigned managed identity", configFile)
	p, err := viperkv.New(v, viperkv.WithTransport(srv.Client()), viperkv.WithEnvKeys("api.key"),
		viperkv.WithRefreshInterval(300*time.Millisecond)) // default 5 min; short for the demo
	if err != nil {
		return err
	}
	start := time.Now()
	if err := p.Load(ctx); err != nil {
		return err
	}
	say("resolved in %s:", time.Since(start).Round(time.Millisecond))
	printStatus(out, p.Status())
	masked, err := yaml.Marshal(p.MaskedSettings())
	if err != nil {
		return err
	}
	say("resolved configuration, secret values masked:")
	fmt.Fprint(out, indent(string(masked)))
	if err := check(srv, p, masked); err != nil {
		return err
	}

	// 5. Rotation: Watch re-checks versionless references and tells watchers.
	if err := rotate(ctx, say, srv, p); err != nil {
		return err
	}

	// 6. Push: Key Vault's Event Grid event reaches a replica that polls only hourly.
	if err := push(ctx, say, srv, v); err != nil {
		return err
	}

	// 7. The same configuration read by an identity with no role on the vaults.
	noaccess, ok := srv.UserIdentity("noaccess")
	if !ok {
		return errors.New(`seed has no identity "noaccess"`)
	}
	say("resolving again as user-assigned identity %q (client ID %s), which has no role on the vaults", noaccess.Name, noaccess.ClientID)
	denied, err := viperkv.New(v, viperkv.WithTransport(srv.Client()), viperkv.WithEnvKeys("api.key"),
		viperkv.WithManagedIdentity(azidentity.ClientID(noaccess.ClientID)))
	if err != nil {
		return err
	}
	err = denied.Load(ctx)
	var le *viperkv.LoadError
	if !errors.As(err, &le) {
		return fmt.Errorf("identity without access: Load returned %v, want a *LoadError", err)
	}
	flow.step()
	printStatus(out, denied.Status())
	for _, st := range denied.Status() {
		if st.Status != viperkv.StatusAccessToKeyVaultDenied {
			return fmt.Errorf("identity without access: %s is %s, want %s", st.Key, st.Status, viperkv.StatusAccessToKeyVaultDenied)
		}
	}
	if denied.Viper().IsSet("database.conn") {
		return errors.New("identity without access: database.conn is set; a failed key must be absent")
	}

	say("ok: %d references resolved through managed identity, a rotation reached the watcher by polling and one by push, an identity without access got %s",
		len(p.Status()), viperkv.StatusAccessToKeyVaultDenied)
	return nil
}

// rotate publishes a new version of db-conn while the provider watches, and waits for the
// watcher's event.
func rotate(ctx context.Context, say func(string, ...any), srv *kvtest.Server, p *viperkv.Provider) error {
	changed := make(chan viperkv.Event, 1)
	cancelWatcher := p.OnChange(func(e viperkv.Event) {
		if e.Kind == viperkv.EventChanged {
			select {
			case changed <- e:
			default:
			}
		}
	})
	defer cancelWatcher()
	wctx, stop := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() { watched <- p.Watch(wctx) }()
	defer func() { stop(); <-watched }()

	kv := srv.Vault("myvault")
	rotated := "Server=db.internal;Database=app;User Id=app;Password=rotated-" + time.Now().Format("150405.000")
	version := kv.SetSecret("db-conn", rotated)
	say("watching; the operator rotates db-conn in the vault to version %s", version)
	select {
	case e := <-changed:
		if e.NewVersion != version || e.Previous.GetString("database.conn") == e.Current.GetString("database.conn") {
			return fmt.Errorf("the event does not carry the rotation to %s", version)
		}
		if p.GetString("database.conn") != rotated {
			return errors.New("database.conn does not hold the rotated value")
		}
		say("watcher got: %s; database.conn now holds the new version, no restart", e)
	case <-time.After(10 * time.Second):
		return errors.New("rotation not picked up within 10 s")
	}
	return nil
}

// push serves an Event Grid handler for a replica that polls only hourly, subscribes it to
// the vault's events (Microsoft Entra authentication, as on Azure), rotates api-key and
// waits for the watcher's event.
func push(ctx context.Context, say func(string, ...any), srv *kvtest.Server, v *viper.Viper) error {
	p, err := viperkv.New(v, viperkv.WithTransport(srv.Client()), viperkv.WithEnvKeys("api.key"),
		viperkv.WithRefreshInterval(time.Hour))
	if err != nil {
		return err
	}
	if err := p.Load(ctx); err != nil {
		return err
	}
	const audience = "api://quickstart-webhook" // the webhook app's ID URI
	h, err := eventgrid.NewHandler(p, eventgrid.Entra(srv.TenantID(), audience))
	if err != nil {
		return err
	}
	webhook := httptest.NewServer(h)
	defer webhook.Close()
	kv := srv.Vault("myvault")
	sub := kv.Subscribe(kvtest.EventSubscription{Endpoint: webhook.URL, Audience: audience, Schema: kvtest.CloudEventSchema})
	defer sub.Close()
	if err := sub.WaitValidated(ctx); err != nil {
		return fmt.Errorf("the Event Grid subscription: %w", err)
	}
	say("a second replica polls hourly; Event Grid (CloudEvents, Entra-authenticated) delivers the vault's events to its handler at %s", webhook.URL)

	changed := make(chan viperkv.Event, 1)
	cancelWatcher := p.OnChange(func(e viperkv.Event) {
		if e.Kind == viperkv.EventChanged {
			select {
			case changed <- e:
			default:
			}
		}
	})
	defer cancelWatcher()
	start := time.Now()
	version := kv.SetSecret("api-key", "rotated-api-key-"+time.Now().Format("150405.000"))
	select {
	case e := <-changed:
		took := time.Since(start)
		if e.Source != viperkv.SourcePush || e.NewVersion != version {
			return fmt.Errorf("the pushed rotation arrived as %s", e)
		}
		say("watcher got: %s, %s after the new version (by push, not the hourly poll)", e, took.Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		return errors.New("the pushed rotation did not arrive within 10 s")
	}
	return nil
}

// check verifies what the quickstart claims: each key holds the vault's value, and no
// value appears in the masked view.
func check(srv *kvtest.Server, p *viperkv.Provider, masked []byte) error {
	value := func(vault, name string) string {
		s, _ := srv.Vault(vault).SecretValue(name, "")
		return s
	}
	dbPassword := value("myvault", "db-password")
	want := map[string]string{
		"database.conn":  value("myvault", "db-conn"),
		"cache.url":      "rediss://cache.internal:6380?password=" + dbPassword + "&db=0",
		"features.flags": value("othervault", "feature-flags"),
		"api.key":        value("myvault", "api-key"),
		"app.name":       "quickstart",
	}
	for key, w := range want {
		if got := p.GetString(key); got != w {
			return fmt.Errorf("%s does not hold the vault's value", key)
		}
	}
	if p.Viper().GetInt("database.pool_size") != 10 {
		return errors.New("database.pool_size, a sibling of a reference, was lost")
	}
	for _, st := range p.Status() {
		if st.Status != viperkv.StatusResolved {
			return fmt.Errorf("%s: %s", st.Key, st.Status)
		}
	}
	for _, name := range []string{"db-conn", "db-password", "api-key"} {
		if bytes.Contains(masked, []byte(value("myvault", name))) {
			return fmt.Errorf("the masked configuration shows the value of %s", name)
		}
	}
	return nil
}

func printStatus(out io.Writer, status []viperkv.ReferenceStatus) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  KEY\tVAULT\tSECRET\tVERSION\tSTATUS\tTOOK")
	for _, st := range status {
		version := st.Version
		if version == "" {
			version = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", st.Key, st.Reference.Vault, st.Reference.Name,
			version, st.Status, st.Took.Round(100*time.Microsecond))
	}
	tw.Flush()
}

func vaultNames(srv *kvtest.Server) string {
	var names []string
	for _, v := range srv.Vaults() {
		names = append(names, v.Host())
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

// syncWriter serialises writes from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// traceMode is how much of the emulator's side of the flow the quickstart shows.
type traceMode int

const (
	traceSummary traceMode = iota // one line a step: what the emulator served, counted
	traceEach                     // each request (-v)
	traceNone                     // nothing (-quiet)
)

func (m traceMode) hint() string {
	if m == traceSummary {
		return " (-v shows each request it serves)"
	}
	return ""
}

// flowLog collects the emulator's log records and shows them as the mode says: each one
// as it comes (held until the emulator is announced), or one summary line a step.
type flowLog struct {
	w    io.Writer
	mode traceMode

	mu     sync.Mutex
	live   bool           // the emulator has been announced
	held   []string       // records before that (the seed's events), for -v
	counts map[string]int // records of the current step, by message
	order  []string       // their messages, first seen first
}

func (f *flowLog) record(msg, line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.mode == traceEach && !f.live:
		f.held = append(f.held, line)
	case f.mode == traceEach:
		io.WriteString(f.w, line)
	case f.mode == traceSummary && f.live:
		if f.counts == nil {
			f.counts = map[string]int{}
		}
		if f.counts[msg] == 0 {
			f.order = append(f.order, msg)
		}
		f.counts[msg]++
	}
}

// started marks the emulator announced: -v shows what it held, the summary starts counting.
func (f *flowLog) started() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live = true
	if f.mode == traceEach {
		for _, line := range f.held {
			io.WriteString(f.w, line)
		}
		f.held = nil
	}
}

// step ends a step: in summary mode, one line counting what the emulator served for it.
func (f *flowLog) step() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.order) == 0 {
		return
	}
	parts := make([]string, len(f.order))
	for i, msg := range f.order {
		short, _, _ := strings.Cut(msg, ":") // "challenge sent: ..." -> "challenge sent"
		parts[i] = fmt.Sprintf("%s (%d)", short, f.counts[msg])
	}
	fmt.Fprintf(f.w, "  emulator: %s\n", strings.Join(parts, ", "))
	f.counts, f.order = nil, nil
}

// narrator turns the emulator's log records into lines of a flowLog.
type narrator struct {
	log   *flowLog
	attrs []slog.Attr
}

func (n *narrator) Enabled(context.Context, slog.Level) bool { return n.log.mode != traceNone }

func (n *narrator) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("  emulator | ")
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range n.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	n.log.record(r.Message, b.String())
	return nil
}

func (n *narrator) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &narrator{log: n.log, attrs: append(n.attrs[:len(n.attrs):len(n.attrs)], attrs...)}
}

func (n *narrator) WithGroup(string) slog.Handler { return n }
