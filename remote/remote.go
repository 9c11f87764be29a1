// Package remote makes Viper's remote configuration read a document stored in a Key Vault
// secret, with the Key Vault references inside it resolved: a Viper remote provider named
// "azurekeyvault", built on viperkv Providers.
//
// After Register,
//
//	v.AddRemoteProvider("azurekeyvault", "https://myvault.vault.azure.net", "app-settings")
//	v.SetConfigType("yaml")
//	err := v.ReadRemoteConfig()
//
// reads the configuration document stored in the secret app-settings (the path may also be
// "app-settings/<version>" to pin a version). For hot reload without Viper's remote layer
// and its limits (below), use a viperkv.Provider directly.
package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
)

// ProviderName is the Viper remote provider name Register adds.
const ProviderName = "azurekeyvault"

// configFactory has the methods of Viper's unexported interface of the same name, the type
// of viper.RemoteConfig.
type configFactory interface {
	Get(rp viper.RemoteProvider) (io.Reader, error)
	Watch(rp viper.RemoteProvider) (io.Reader, error)
	WatchChannel(rp viper.RemoteProvider) (<-chan *viper.RemoteResponse, chan bool)
}

// registration is the registration state: viper.RemoteConfig and
// viper.SupportedRemoteProviders are package-level variables of Viper, so registering is
// package-level too. It is this module's one piece of package-level mutable state.
var registration struct {
	sync.Mutex
	addedName bool     // ProviderName was added to SupportedRemoteProviders by us
	current   *factory // nil when not registered
}

// Register makes Viper's remote configuration read Key Vault, with the same options,
// managed identity, host checks and fetching as viperkv.New: an endpoint that is not a Key
// Vault of the configured cloud (or a host allowed with viperkv.WithAllowedHosts) is
// refused before any request. Key Vault references inside the document are resolved too,
// with the values taken as they are (never scanned again); a document whose references do
// not all resolve is not used. v.WatchRemoteConfigOnChannel() polls the secret on the
// refresh interval (viperkv.WithRefreshInterval) and hands Viper each new version (or new
// values of references inside it); v.WatchRemoteConfig() reads the current version, like
// Viper's own remote package. Each endpoint and path is read through Providers of its own,
// kept between reads and closed by Unregister.
//
// Call it once at start-up, before any Viper uses remote configuration: it sets the
// package-level variables viper.RemoteConfig and viper.SupportedRemoteProviders, which Viper
// reads without a lock. Calling it again replaces the options (closing what the previous
// registration held) without stacking. Other provider names (etcd, consul, ...) are handed
// to the factory registered before, so github.com/spf13/viper/remote keeps working when
// imported.
//
// Viper's own remote layer has limits this package cannot lift: the goroutine
// WatchRemoteConfigOnChannel starts cannot be stopped, and it writes the new document into
// the Viper without a lock while the app reads it (a data race), keeping keys that the new
// version removed; ReadRemoteConfig reports every failure as "No Files Found" (the options'
// viperkv.WithLogger says why).
func Register(opts ...viperkv.Option) error {
	probe, err := viperkv.New(viper.New(), opts...) // the options are checked once, here
	if err != nil {
		return err
	}
	_ = probe.Close()
	f := &factory{opts: slices.Clone(opts), log: probe.Logger(), interval: probe.RefreshInterval(), docs: map[string]*document{}}
	f.ctx, f.cancel = context.WithCancel(context.Background())

	registration.Lock()
	defer registration.Unlock()
	var cur configFactory = viper.RemoteConfig
	if prev, ok := cur.(*factory); ok {
		f.next = prev.next // registering again must not wrap ourselves
	} else {
		f.next = cur
	}
	if registration.current != nil {
		registration.current.close()
	}
	registration.current = f
	viper.RemoteConfig = f
	if !slices.Contains(viper.SupportedRemoteProviders, ProviderName) {
		viper.SupportedRemoteProviders = append(slices.Clone(viper.SupportedRemoteProviders), ProviderName)
		registration.addedName = true
	}
	return nil
}

// Unregister undoes Register: it restores the factory that was registered before, removes
// "azurekeyvault" from viper.SupportedRemoteProviders (if Register added it), stops the
// polling goroutines of WatchRemoteConfigOnChannel and closes the Providers it kept. Viper's
// own goroutine of each such watch then waits forever, as it does with every remote
// provider. Like registering, call it when no Viper uses remote configuration.
func Unregister() {
	registration.Lock()
	defer registration.Unlock()
	var cur configFactory = viper.RemoteConfig
	if f, ok := cur.(*factory); ok {
		viper.RemoteConfig = f.next
	}
	if registration.addedName {
		viper.SupportedRemoteProviders = slices.DeleteFunc(slices.Clone(viper.SupportedRemoteProviders),
			func(s string) bool { return s == ProviderName })
		registration.addedName = false
	}
	if registration.current != nil {
		registration.current.close()
		registration.current = nil
	}
}

// factory serves ProviderName and hands other provider names to next.
type factory struct {
	opts     []viperkv.Option
	log      *slog.Logger
	next     configFactory
	ctx      context.Context // ends the polling goroutines and the reads in progress
	cancel   context.CancelFunc
	interval time.Duration // how often WatchChannel polls
	polls    sync.WaitGroup

	mu     sync.Mutex
	docs   map[string]*document         // by endpoint and path
	served map[string][sha256.Size]byte // digest of the document Get last returned, by endpoint and path
	closed bool
}

// document reads one endpoint and path: src reads the secret holding the document, refs
// resolves the references inside its current version.
type document struct {
	mu      sync.Mutex // one read at a time
	src     *viperkv.Provider
	refs    *viperkv.Provider // nil when the document holds no reference
	version string            // the document version refs was made for
}

func (f *factory) Get(rp viper.RemoteProvider) (io.Reader, error) {
	if rp.Provider() != ProviderName {
		if f.next == nil {
			return nil, errNoFactory(rp)
		}
		return f.next.Get(rp)
	}
	doc, err := f.read(f.ctx, rp) // the Providers bound their fetches (WithFetchTimeout)
	if err != nil {
		f.log.Warn("viperkv: remote config not read", "endpoint", rp.Endpoint(), "path", rp.Path(), "error", err)
		return nil, err
	}
	f.mu.Lock()
	if f.served == nil {
		f.served = map[string][sha256.Size]byte{}
	}
	f.served[key(rp)] = sha256.Sum256(doc.data)
	f.mu.Unlock()
	f.log.Info("viperkv: remote config read", "endpoint", rp.Endpoint(), "path", rp.Path(), "version", doc.version)
	return bytes.NewReader(doc.data), nil
}

// Watch reads the current version, as Viper's own remote package does: Viper's
// WatchRemoteConfig is meant to be called in the app's own polling loop.
func (f *factory) Watch(rp viper.RemoteProvider) (io.Reader, error) {
	if rp.Provider() != ProviderName {
		if f.next == nil {
			return nil, errNoFactory(rp)
		}
		return f.next.Watch(rp)
	}
	return f.Get(rp)
}

// WatchChannel polls the secret and sends each document that differs from the last one
// sent (or returned by Get). The channel is never closed: Viper's receiving goroutine
// would dereference the nil a closed channel yields. Failures are logged and not sent
// (Viper would decode an error response's empty value), so Viper keeps its last document.
// Sending true on (or closing) the returned quit channel stops the polling.
func (f *factory) WatchChannel(rp viper.RemoteProvider) (<-chan *viper.RemoteResponse, chan bool) {
	if rp.Provider() != ProviderName {
		if f.next == nil {
			f.log.Error("viperkv: "+errNoFactory(rp).Error(), "provider", rp.Provider())
			return nil, nil
		}
		return f.next.WatchChannel(rp)
	}
	out := make(chan *viper.RemoteResponse)
	quit := make(chan bool)
	f.mu.Lock()
	if !f.closed {
		f.polls.Add(1)
		go func() { defer f.polls.Done(); f.poll(rp, out, quit) }()
	}
	f.mu.Unlock()
	return out, quit
}

func (f *factory) poll(rp viper.RemoteProvider, out chan<- *viper.RemoteResponse, quit <-chan bool) {
	f.mu.Lock()
	last, have := f.served[key(rp)]
	f.mu.Unlock()
	wait := time.Duration(0) // nothing read yet: read at once
	if have {
		wait = jitter(f.interval)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	fails := 0
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-quit:
			return
		case <-timer.C:
		}
		doc, err := f.read(f.ctx, rp)
		if f.ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			f.log.Warn("viperkv: remote config refresh failed; Viper keeps the last document",
				"endpoint", rp.Endpoint(), "path", rp.Path(), "error", err)
			timer.Reset(backoff(fails))
			continue
		}
		fails = 0
		if sum := sha256.Sum256(doc.data); !have || sum != last {
			select {
			case out <- &viper.RemoteResponse{Value: doc.data}:
				last, have = sum, true
				f.log.Info("viperkv: remote config handed to Viper", "endpoint", rp.Endpoint(), "path", rp.Path(), "version", doc.version)
			case <-f.ctx.Done():
				return
			case <-quit:
				return
			}
		}
		timer.Reset(jitter(f.interval))
	}
}

// close stops the polling goroutines and closes the documents' Providers.
func (f *factory) close() {
	f.mu.Lock()
	f.closed = true
	docs := f.docs
	f.docs = nil
	f.mu.Unlock()
	f.cancel()
	f.polls.Wait()
	for _, d := range docs {
		d.mu.Lock()
		_ = d.src.Close()
		if d.refs != nil {
			_ = d.refs.Close()
		}
		d.mu.Unlock()
	}
}

// loaded is a document ready for Viper, its references resolved.
type loaded struct {
	data    []byte
	version string // the version of the secret holding the document
}

// documentKey is the key the document's secret is read under.
const documentKey = "document"

// read fetches the document and resolves the references inside it.
func (f *factory) read(ctx context.Context, rp viper.RemoteProvider) (loaded, error) {
	ref, err := f.reference(rp)
	if err != nil {
		return loaded{}, err
	}
	d, err := f.document(rp, ref)
	if err != nil {
		return loaded{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = d.src.Load(ctx) // its status says what failed
	st := statusOf(d.src, documentKey)
	if st.Status != viperkv.StatusResolved {
		return loaded{}, fmt.Errorf("viperkv: remote config %s: %s: %s", ref.ID(), st.Status, st.Reason)
	}
	value := d.src.GetString(documentKey)
	if !viperkv.HasReference(value) {
		d.closeRefs()
		return loaded{data: []byte(value), version: st.Version}, nil
	}
	format := documentFormat(st.ContentType, value)
	if format == "" {
		return loaded{}, fmt.Errorf("viperkv: remote config %s (version %s) holds references but is not JSON, YAML or TOML: "+
			"give the secret the content type of its format (application/json, application/yaml, application/toml or dotenv)", ref.ID(), st.Version)
	}
	if d.refs == nil || d.version != st.Version {
		dv := viper.New()
		dv.SetConfigType(format)
		if err := dv.ReadConfig(strings.NewReader(value)); err != nil {
			// The parser's message is left out: it may quote the document.
			return loaded{}, fmt.Errorf("viperkv: remote config %s (version %s) is not a valid %s document", ref.ID(), st.Version, format)
		}
		refs, err := viperkv.New(dv, append(slices.Clone(f.opts), viperkv.WithoutFileWatch())...)
		if err != nil {
			return loaded{}, err
		}
		d.closeRefs()
		d.refs, d.version = refs, st.Version
	}
	if err := d.refs.Load(ctx); err != nil {
		return loaded{}, fmt.Errorf("viperkv: remote config %s (version %s): %w", ref.ID(), st.Version, err)
	}
	ev := viper.New()
	ev.SetConfigType(format)
	if err := ev.MergeConfigMap(d.refs.Viper().AllSettings()); err != nil {
		return loaded{}, fmt.Errorf("viperkv: remote config %s: %w", ref.ID(), err)
	}
	var buf bytes.Buffer
	if err := ev.WriteConfigTo(&buf); err != nil {
		return loaded{}, fmt.Errorf("viperkv: remote config %s: encoding as %s failed", ref.ID(), format)
	}
	return loaded{data: buf.Bytes(), version: st.Version}, nil
}

func (d *document) closeRefs() {
	if d.refs != nil {
		_ = d.refs.Close()
		d.refs, d.version = nil, ""
	}
}

// document returns the Providers of rp, making them on first use.
func (f *factory) document(rp viper.RemoteProvider, ref viperkv.Reference) (*document, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("viperkv: remote provider unregistered")
	}
	if d, ok := f.docs[key(rp)]; ok {
		return d, nil
	}
	v := viper.New()
	v.Set(documentKey, ref.String()) // the canonical form of a reference already checked
	src, err := viperkv.New(v, append(slices.Clone(f.opts), viperkv.WithoutFileWatch())...)
	if err != nil {
		return nil, err
	}
	d := &document{src: src}
	f.docs[key(rp)] = d
	return d, nil
}

// reference checks the endpoint and path as a SecretUri reference would be checked, so the
// same hosts are allowed and refused, and the whole of it must be one reference.
func (f *factory) reference(rp viper.RemoteProvider) (viperkv.Reference, error) {
	endpoint := strings.TrimRight(strings.TrimSpace(rp.Endpoint()), "/")
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	path := strings.Trim(strings.TrimSpace(rp.Path()), "/")
	if path == "" {
		return viperkv.Reference{}, fmt.Errorf("viperkv: remote provider %s: the path must name the secret holding the document", ProviderName)
	}
	ref, err := viperkv.ParseReference("@KeyVault(SecretUri="+endpoint+"/secrets/"+path+")", f.opts...)
	if err != nil {
		var re *viperkv.ReferenceError
		if errors.As(err, &re) {
			return viperkv.Reference{}, fmt.Errorf("viperkv: remote provider %s, endpoint %s, path %s: %s: %s",
				ProviderName, quote(rp.Endpoint()), quote(rp.Path()), re.Status, re.Reason)
		}
		return viperkv.Reference{}, err
	}
	return ref, nil
}

// statusOf returns p's status row for key.
func statusOf(p *viperkv.Provider, key string) viperkv.ReferenceStatus {
	for _, st := range p.Status() {
		if st.Key == key {
			return st
		}
	}
	return viperkv.ReferenceStatus{Key: key, Status: viperkv.StatusInitialized, Reason: "not read"}
}

// documentFormat returns the Viper config type of a document: from its content type, or
// else the first of JSON, YAML and TOML that parses it into a map. "" when none does.
func documentFormat(contentType, doc string) string {
	ct, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	switch strings.TrimSpace(ct) {
	case "application/json", "text/json", "json":
		return "json"
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "yaml", "yml":
		return "yaml"
	case "application/toml", "text/toml", "toml":
		return "toml"
	case "dotenv", "env", "text/x-dotenv", "application/x-dotenv":
		return "dotenv"
	}
	for _, format := range [...]string{"json", "yaml", "toml"} {
		v := viper.New()
		v.SetConfigType(format)
		if v.ReadConfig(strings.NewReader(doc)) == nil {
			return format
		}
	}
	return ""
}

func key(rp viper.RemoteProvider) string { return rp.Endpoint() + "\x00" + rp.Path() }

func errNoFactory(rp viper.RemoteProvider) error {
	return fmt.Errorf("viperkv: no remote config factory for provider %s: import _ \"github.com/spf13/viper/remote\" "+
		"(its init registers it) before calling Register", quote(rp.Provider()))
}

// quote quotes text of the app's for an error, cut to 64 bytes.
func quote(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

// jitter returns d scaled by a random factor in [0.9, 1.1], so replicas do not poll in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// backoff is the wait after failed poll n: 1 s doubling up to 5 minutes, with equal jitter.
func backoff(n int) time.Duration {
	d := 5 * time.Minute
	if n < 9 {
		d = min(time.Second<<(n-1), d)
	}
	return d/2 + rand.N(d/2+1)
}
