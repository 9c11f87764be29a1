package viperkv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/kvname"

	"github.com/spf13/viper"
)

// RemoteProviderName is the Viper remote provider name that RegisterRemoteProvider adds:
// v.AddRemoteProvider(viperkv.RemoteProviderName, "https://myvault.vault.azure.net", "app-settings").
const RemoteProviderName = "azurekeyvault"

// remoteConfigFactory has the methods of Viper's unexported interface of the same name,
// the type of viper.RemoteConfig.
type remoteConfigFactory interface {
	Get(rp viper.RemoteProvider) (io.Reader, error)
	Watch(rp viper.RemoteProvider) (io.Reader, error)
	WatchChannel(rp viper.RemoteProvider) (<-chan *viper.RemoteResponse, chan bool)
}

// remoteReg is the registration state: viper.RemoteConfig and viper.SupportedRemoteProviders
// are package-level variables of Viper, so registering is package-level too.
var remoteReg struct {
	sync.Mutex
	addedName bool               // RemoteProviderName was added to SupportedRemoteProviders by us
	ctx       context.Context    // ends the polling goroutines of WatchChannel
	cancel    context.CancelFunc // nil when not registered
}

// RegisterRemoteProvider makes Viper's remote configuration read Key Vault. After it,
//
//	v.AddRemoteProvider("azurekeyvault", "https://myvault.vault.azure.net", "app-settings")
//	v.SetConfigType("yaml")
//	err := v.ReadRemoteConfig()
//
// reads the configuration document stored in the secret app-settings (the path may also be
// "app-settings/<version>" to pin a version), with the same options, managed identity,
// host checks and fetching as [New]: an endpoint that is not a Key Vault of the configured
// cloud (or a host allowed with [WithAllowedHosts]) is refused before any request. Key
// Vault references inside the document are resolved too, with the values taken as they
// are (never scanned again); a document whose references do not all resolve is not used.
// v.WatchRemoteConfigOnChannel() polls the secret on the refresh interval
// ([WithRefreshInterval]) and hands Viper each new version (or new values of references
// inside it); v.WatchRemoteConfig() reads the current version, like Viper's own remote
// package.
//
// Call it once at start-up, before any Viper uses remote configuration: it sets the
// package-level variables viper.RemoteConfig and viper.SupportedRemoteProviders, which Viper
// reads without a lock. Calling it again replaces the options without stacking. Other
// provider names (etcd, consul, ...) are handed to the factory registered before, so
// github.com/spf13/viper/remote keeps working when imported.
//
// Viper's own remote layer has limits this package cannot lift: the goroutine
// WatchRemoteConfigOnChannel starts cannot be stopped, and it writes the new document into
// the Viper without a lock while the app reads it (a data race), keeping keys that the new
// version removed; ReadRemoteConfig reports every failure as "No Files Found" (this
// package's WithLogger says why). For hot reload without races use [New], [Provider.Load]
// and [Provider.Watch]: a reference per value rather than a document per secret.
func RegisterRemoteProvider(opts ...Option) error {
	base, err := New(viper.New(), opts...)
	if err != nil {
		return err
	}
	remoteReg.Lock()
	defer remoteReg.Unlock()
	if remoteReg.cancel == nil {
		remoteReg.ctx, remoteReg.cancel = context.WithCancel(context.Background())
	}
	f := &remoteFactory{
		opts:   slices.Clone(opts),
		base:   base,
		ctx:    remoteReg.ctx,
		served: map[string][sha256.Size]byte{},
	}
	var cur remoteConfigFactory = viper.RemoteConfig
	if prev, ok := cur.(*remoteFactory); ok {
		f.next = prev.next // registering again must not wrap ourselves
	} else {
		f.next = cur
	}
	viper.RemoteConfig = f
	if !slices.Contains(viper.SupportedRemoteProviders, RemoteProviderName) {
		viper.SupportedRemoteProviders = append(slices.Clone(viper.SupportedRemoteProviders), RemoteProviderName)
		remoteReg.addedName = true
	}
	return nil
}

// UnregisterRemoteProvider undoes RegisterRemoteProvider: it restores the factory that was
// registered before, removes "azurekeyvault" from viper.SupportedRemoteProviders (if it
// added it) and stops the polling goroutines of WatchRemoteConfigOnChannel. Viper's own
// goroutine of each such watch then waits forever, as it does with every remote provider.
// Like registering, call it when no Viper uses remote configuration.
func UnregisterRemoteProvider() {
	remoteReg.Lock()
	defer remoteReg.Unlock()
	var cur remoteConfigFactory = viper.RemoteConfig
	if f, ok := cur.(*remoteFactory); ok {
		viper.RemoteConfig = f.next
	}
	if remoteReg.addedName {
		viper.SupportedRemoteProviders = slices.DeleteFunc(slices.Clone(viper.SupportedRemoteProviders),
			func(s string) bool { return s == RemoteProviderName })
		remoteReg.addedName = false
	}
	if remoteReg.cancel != nil {
		remoteReg.cancel()
		remoteReg.ctx, remoteReg.cancel = nil, nil
	}
}

// remoteFactory serves RemoteProviderName and hands other provider names to next.
type remoteFactory struct {
	opts []Option
	base *Provider // the options, parse configuration and fetcher (with its credential) shared by every read
	next remoteConfigFactory
	ctx  context.Context

	mu     sync.Mutex
	served map[string][sha256.Size]byte // digest of the document Get last returned, by endpoint and path
}

func (f *remoteFactory) Get(rp viper.RemoteProvider) (io.Reader, error) {
	if rp.Provider() != RemoteProviderName {
		if f.next == nil {
			return nil, errNoRemoteFactory(rp)
		}
		return f.next.Get(rp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.base.opts.fetchTimeout)
	defer cancel()
	doc, err := f.read(ctx, rp)
	if err != nil {
		f.base.opts.logger.Warn("viperkv: remote config not read", "endpoint", rp.Endpoint(), "path", rp.Path(), "error", err)
		return nil, err
	}
	f.mu.Lock()
	f.served[remoteKey(rp)] = sha256.Sum256(doc.data)
	f.mu.Unlock()
	f.base.opts.logger.Info("viperkv: remote config read", "endpoint", rp.Endpoint(), "path", rp.Path(), "version", doc.version)
	return bytes.NewReader(doc.data), nil
}

// Watch reads the current version, as Viper's own remote package does: Viper's
// WatchRemoteConfig is meant to be called in the app's own polling loop.
func (f *remoteFactory) Watch(rp viper.RemoteProvider) (io.Reader, error) {
	if rp.Provider() != RemoteProviderName {
		if f.next == nil {
			return nil, errNoRemoteFactory(rp)
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
func (f *remoteFactory) WatchChannel(rp viper.RemoteProvider) (<-chan *viper.RemoteResponse, chan bool) {
	if rp.Provider() != RemoteProviderName {
		if f.next == nil {
			f.base.opts.logger.Error("viperkv: "+errNoRemoteFactory(rp).Error(), "provider", rp.Provider())
			return nil, nil
		}
		return f.next.WatchChannel(rp)
	}
	out := make(chan *viper.RemoteResponse)
	quit := make(chan bool)
	go f.poll(rp, out, quit)
	return out, quit
}

func (f *remoteFactory) poll(rp viper.RemoteProvider, out chan<- *viper.RemoteResponse, quit <-chan bool) {
	log := f.base.opts.logger
	interval := f.base.opts.refreshInterval
	f.mu.Lock()
	last, have := f.served[remoteKey(rp)]
	f.mu.Unlock()
	wait := time.Duration(0) // nothing read yet: read at once
	if have {
		wait = jitter(interval, 0.1)
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
		ctx, cancel := context.WithTimeout(f.ctx, f.base.opts.fetchTimeout)
		doc, err := f.read(ctx, rp)
		cancel()
		if f.ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			log.Warn("viperkv: remote config refresh failed; Viper keeps the last document",
				"endpoint", rp.Endpoint(), "path", rp.Path(), "error", err)
			timer.Reset(f.base.sched.backoff(fails))
			continue
		}
		fails = 0
		if sum := sha256.Sum256(doc.data); !have || sum != last {
			select {
			case out <- &viper.RemoteResponse{Value: doc.data}:
				last, have = sum, true
				log.Info("viperkv: remote config handed to Viper", "endpoint", rp.Endpoint(), "path", rp.Path(), "version", doc.version)
			case <-f.ctx.Done():
				return
			case <-quit:
				return
			}
		}
		timer.Reset(jitter(interval, 0.1))
	}
}

// remoteDoc is a document ready for Viper, its references resolved.
type remoteDoc struct {
	data    []byte
	version string // the version of the secret holding the document
}

// read fetches the document and resolves the references inside it.
func (f *remoteFactory) read(ctx context.Context, rp viper.RemoteProvider) (remoteDoc, error) {
	ref, err := f.reference(rp)
	if err != nil {
		return remoteDoc{}, err
	}
	s, _ := fetchOnce(ctx, f.base.reader, ref)
	if s.status != StatusResolved || !s.has {
		return remoteDoc{}, fmt.Errorf("viperkv: remote config %s: %s: %s", ref.ID(), s.status, s.reason)
	}
	if !HasReference(s.value) {
		return remoteDoc{data: []byte(s.value), version: s.version}, nil
	}
	format := documentFormat(s.contentType, s.value)
	if format == "" {
		return remoteDoc{}, fmt.Errorf("viperkv: remote config %s (version %s) holds references but is not JSON, YAML or TOML: "+
			"give the secret the content type of its format (application/json, application/yaml, application/toml or dotenv)", ref.ID(), s.version)
	}
	dv := viper.New()
	dv.SetConfigType(format)
	if err := dv.ReadConfig(strings.NewReader(s.value)); err != nil {
		// The parser's message is left out: it may quote the document.
		return remoteDoc{}, fmt.Errorf("viperkv: remote config %s (version %s) is not a valid %s document", ref.ID(), s.version, format)
	}
	p, err := New(dv, append(slices.Clone(f.opts), WithCredential(f.base.cred))...)
	if err != nil {
		return remoteDoc{}, err
	}
	p.reader = f.base.reader // one set of vault clients, limiters and token flights for every read
	if err := p.Load(ctx); err != nil {
		return remoteDoc{}, fmt.Errorf("viperkv: remote config %s (version %s): %w", ref.ID(), s.version, err)
	}
	ev := viper.New()
	ev.SetConfigType(format)
	if err := ev.MergeConfigMap(p.Viper().AllSettings()); err != nil {
		return remoteDoc{}, fmt.Errorf("viperkv: remote config %s: %w", ref.ID(), err)
	}
	var buf bytes.Buffer
	if err := ev.WriteConfigTo(&buf); err != nil {
		return remoteDoc{}, fmt.Errorf("viperkv: remote config %s: encoding as %s failed", ref.ID(), format)
	}
	return remoteDoc{data: buf.Bytes(), version: s.version}, nil
}

// reference checks the endpoint and path as a SecretUri reference would be checked, so the
// same hosts are allowed and refused.
func (f *remoteFactory) reference(rp viper.RemoteProvider) (Reference, error) {
	endpoint := strings.TrimRight(trimBlank(rp.Endpoint()), "/")
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	path := strings.Trim(trimBlank(rp.Path()), "/")
	if path == "" {
		return Reference{}, fmt.Errorf("viperkv: remote provider %s: the path must name the secret holding the document", RemoteProviderName)
	}
	ref, st, reason := parseSecretURI(endpoint+"/secrets/"+path, f.base.parse)
	if reason != "" {
		return Reference{}, fmt.Errorf("viperkv: remote provider %s, endpoint %s, path %s: %s: %s",
			RemoteProviderName, kvname.Quote(rp.Endpoint()), kvname.Quote(rp.Path()), st, reason)
	}
	return ref, nil
}

// documentFormat returns the Viper config type of a document: from its content type, or
// else the first of JSON, YAML and TOML that parses it into a map. "" when none does.
func documentFormat(contentType, doc string) string {
	ct, _, _ := strings.Cut(lowerASCII(contentType), ";")
	switch trimBlank(ct) {
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

func remoteKey(rp viper.RemoteProvider) string { return rp.Endpoint() + "\x00" + rp.Path() }

func errNoRemoteFactory(rp viper.RemoteProvider) error {
	return fmt.Errorf("viperkv: no remote config factory for provider %s: import _ \"github.com/spf13/viper/remote\" "+
		"(its init registers it) before calling RegisterRemoteProvider", kvname.Quote(rp.Provider()))
}
