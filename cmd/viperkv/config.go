package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azcloud "github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/emuinfo"
)

// emulatorInfoEnv names the emulator's info file (viperkv emulator --info): when set, the
// commands reach the emulator instead of Azure.
const emulatorInfoEnv = "VIPERKV_EMULATOR_INFO"

// envKey is the configuration key under which run (and check --environ) puts the
// environment variables that hold references: "$env.0", "$env.1", ... in the order of
// envRefs.names. Indexes rather than names keep variable names out of Viper's
// case-insensitive, dot-separated key space.
const envKey = "$env"

// loadFlags are the flags that load configuration the way an app using viperkv does.
type loadFlags struct {
	configType string
	config     string
	envPrefix  string
	envKeys    []string
	credential string
	clientID   string
	cloud      string
	timeout    time.Duration
	verbose    bool
	// vaultSources are --vault-source values: VAULT[,prefix=P][,tag=NAME=VALUE]...
	vaultSources []string
	// vaultCredentials are --vault-credential values: VAULT=KIND[:CLIENT-ID].
	vaultCredentials []string

	emulatorTenant string // set by options when VIPERKV_EMULATOR_INFO names an emulator
}

// credentialChoice is a value of --credential and what it means.
type credentialChoice struct{ name, help string }

// credentials are the choices of --credential: azidentity's own credentials.
var credentials = []credentialChoice{
	{"managed-identity", "the machine's managed identity (default)"},
	{"azure-cli", "the account signed in with az login"},
	{"default", "azidentity's DefaultAzureCredential: environment, workload identity, managed identity, az, azd, PowerShell"},
	{"workload-identity", "AKS workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE"},
}

// credentialNames lists the choices of --credential: "a, b, c or d".
func credentialNames() string {
	names := make([]string, len(credentials))
	for i, c := range credentials {
		names[i] = c.name
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func (f *loadFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVarP(&f.config, "config", "c", "", "configuration file (YAML, JSON, TOML, dotenv...; the type is taken from the extension, or --config-type)")
	fs.StringVar(&f.configType, "config-type", "", "the configuration file's type when its name has no extension (a Kubernetes ConfigMap mount): yaml, json, toml, env, ...")
	fs.StringVar(&f.envPrefix, "env-prefix", "", "environment variable prefix, as viper.SetEnvPrefix (APP: APP_DATABASE_CONN overrides database.conn)")
	fs.StringSliceVar(&f.envKeys, "env-key", nil, "a key that exists only in the environment (as viperkv.WithEnvKeys); repeatable")
	fs.StringVar(&f.credential, "credential", "managed-identity", "how to authenticate to Key Vault: "+credentialNames()+
		" (azure-cli or default to run from a laptop against real Azure)")
	fs.StringVar(&f.clientID, "client-id", "", "client ID of a user-assigned managed identity (default: the system-assigned identity), or of the workload identity's app")
	fs.StringVar(&f.cloud, "cloud", "AzurePublic", "Azure cloud: AzurePublic, AzureChina or AzureUSGovernment")
	fs.DurationVar(&f.timeout, "timeout", viperkv.DefaultFetchTimeout, "how long to wait for all references")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "log each step to stderr (never a secret value)")
	fs.StringArrayVar(&f.vaultSources, "vault-source", nil, "import every secret of a vault as a key (Db--Password: db.password), as viperkv.WithVaultSource: "+
		"VAULT[,prefix=orders--][,tag=env=prod]; repeatable")
	_ = cmd.RegisterFlagCompletionFunc("cloud", cobra.FixedCompletions(
		[]cobra.Completion{"AzurePublic", "AzureChina", "AzureUSGovernment"}, cobra.ShellCompDirectiveNoFileComp))
	choices := make([]cobra.Completion, len(credentials))
	for i, c := range credentials {
		choices[i] = cobra.CompletionWithDesc(c.name, c.help)
	}
	_ = cmd.RegisterFlagCompletionFunc("credential", cobra.FixedCompletions(choices, cobra.ShellCompDirectiveNoFileComp))
	fs.StringArrayVar(&f.vaultCredentials, "vault-credential", nil, "give one vault a credential of its own (another tenant's or identity's), as viperkv.WithVaultCredential: "+
		"VAULT=KIND[:CLIENT-ID], VAULT a name or host, KIND one of --credential's (othervault=managed-identity:<client-id>); other vaults keep --credential; repeatable")
	// Once VAULT= is typed, complete the kinds as --credential does; the vault is the user's.
	_ = cmd.RegisterFlagCompletionFunc("vault-credential", func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		vault, _, ok := strings.Cut(toComplete, "=")
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		}
		out := make([]cobra.Completion, len(credentials))
		for i, c := range credentials {
			out[i] = cobra.CompletionWithDesc(vault+"="+c.name, c.help)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.MarkFlagFilename("config", "yaml", "yml", "json", "toml", "env", "dotenv", "properties", "ini", "hcl")
}

// viper reads the configuration file (if any) into a Viper set up as the README's app:
// SetEnvPrefix, SetEnvKeyReplacer(. -> _), AutomaticEnv.
func (f *loadFlags) viper() (*viper.Viper, error) {
	v := viper.New()
	if f.envPrefix != "" {
		v.SetEnvPrefix(f.envPrefix)
	}
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if f.configType != "" {
		v.SetConfigType(f.configType)
	}
	if f.config != "" {
		v.SetConfigFile(f.config)
		if err := v.ReadInConfig(); err != nil {
			var unsupported viper.UnsupportedConfigError
			if errors.As(err, &unsupported) && f.configType == "" {
				return nil, usageError("reading %s: its name has no extension that says its type: pass --config-type yaml (or json, toml, env, ...)", f.config)
			}
			return nil, usageError("reading %s: %v", f.config, err)
		}
	}
	return v, nil
}

// options returns the Provider options the flags and the environment ask for. With
// VIPERKV_EMULATOR_INFO set, it also points this process's managed identity variables at
// the emulator.
func (f *loadFlags) options(stderr io.Writer) ([]viperkv.Option, error) {
	cloud, err := viperkv.ParseCloud(f.cloud)
	if err != nil {
		return nil, usageError("--cloud: %s", bare(err))
	}
	if f.timeout <= 0 {
		return nil, usageError("--timeout must be positive")
	}
	var log *slog.Logger
	if f.verbose {
		log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		log = slog.New(slog.DiscardHandler)
	}
	if !slices.ContainsFunc(credentials, func(c credentialChoice) bool { return c.name == f.credential }) {
		return nil, usageError("--credential %q: want %s", f.credential, credentialNames())
	}
	if f.clientID != "" && (f.credential == "azure-cli" || f.credential == "default") {
		return nil, usageError("--client-id selects a managed identity or a workload identity's app; it does not apply to --credential %s", f.credential)
	}
	vaultCreds, err := parseVaultCredentials(f.vaultCredentials, cloud)
	if err != nil {
		return nil, err
	}
	opts := []viperkv.Option{viperkv.WithCloud(cloud), viperkv.WithFetchTimeout(f.timeout), viperkv.WithLogger(log)}
	for _, vs := range f.vaultSources {
		o, err := parseVaultSource(vs)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	if len(f.envKeys) > 0 {
		opts = append(opts, viperkv.WithEnvKeys(f.envKeys...))
	}
	var hc *http.Client // the emulator's, or nil for Azure
	if path := os.Getenv(emulatorInfoEnv); path != "" {
		var info *emuinfo.Info
		if info, hc, err = openEmulator(emulatorInfoEnv, path); err != nil {
			return nil, err
		}
		f.emulatorTenant = info.TenantID
		fmt.Fprintf(stderr, "viperkv: using the emulator of %s=%s, not Azure\n", emulatorInfoEnv, path)
		opts = append(opts, viperkv.WithTransport(hc))
	}
	// One credential per kind and client ID: vaults (and the default) given the same one
	// share it, and so share its token requests.
	made := map[string]azcore.TokenCredential{}
	credentialOf := func(flag, kind, clientID string) (azcore.TokenCredential, error) {
		key := kind + ":" + strings.ToLower(clientID)
		if c, ok := made[key]; ok {
			return c, nil
		}
		c, err := newCredential(flag, kind, clientID, cloud, hc)
		if err == nil {
			made[key] = c
		}
		return c, err
	}
	if f.credential == "managed-identity" {
		// The provider's own default, which guards the identity endpoint's transport itself.
		if f.clientID != "" {
			opts = append(opts, viperkv.WithManagedIdentity(azidentity.ClientID(f.clientID)))
		}
	} else {
		cred, err := credentialOf("--credential "+f.credential, f.credential, f.clientID)
		if err != nil {
			return nil, err
		}
		opts = append(opts, viperkv.WithCredential(cred))
	}
	for _, vc := range vaultCreds {
		if vc.kind == "managed-identity" {
			// Made by the provider as its default one is, through its guarded transport.
			var id azidentity.ManagedIDKind
			if vc.clientID != "" {
				id = azidentity.ClientID(vc.clientID)
			}
			opts = append(opts, viperkv.WithVaultManagedIdentity(vc.host, id))
			continue
		}
		cred, err := credentialOf(fmt.Sprintf("--vault-credential %q", vc.arg), vc.kind, vc.clientID)
		if err != nil {
			return nil, err
		}
		opts = append(opts, viperkv.WithVaultCredential(vc.host, cred))
	}
	return opts, nil
}

// vaultCredential is one --vault-credential: VAULT=KIND[:CLIENT-ID].
type vaultCredential struct {
	arg      string // as given, for errors
	host     string // the vault's host, lowercase
	kind     string // one of credentials
	clientID string
}

// parseVaultCredentials reads the --vault-credential values. A vault is a name (othervault,
// in cloud's suffix) or a host a reference could name; each vault may be given once.
func parseVaultCredentials(args []string, cloud viperkv.Cloud) ([]vaultCredential, error) {
	var out []vaultCredential
	for _, arg := range args {
		bad := func(format string, a ...any) error {
			return usageError("--vault-credential %q: %s", arg, fmt.Sprintf(format, a...))
		}
		vault, spec, ok := strings.Cut(arg, "=")
		vault = strings.ToLower(strings.TrimSpace(vault))
		if !ok || vault == "" || spec == "" {
			return nil, bad("want VAULT=KIND[:CLIENT-ID], for example othervault=managed-identity:<client-id>")
		}
		if !strings.Contains(vault, ".") {
			vault += "." + cloud.VaultSuffix()
		}
		if reason := vaultHostProblem(vault, cloud); reason != "" {
			return nil, bad("%s", reason)
		}
		kind, clientID, withID := strings.Cut(spec, ":")
		if !slices.ContainsFunc(credentials, func(c credentialChoice) bool { return c.name == kind }) {
			return nil, bad("unknown credential %q: want %s", kind, credentialNames())
		}
		switch {
		case withID && clientID == "":
			return nil, bad("empty client ID after %q", kind+":")
		case clientID != "" && (kind == "azure-cli" || kind == "default"):
			return nil, bad("a client ID selects a managed identity or a workload identity's app; it does not apply to %s", kind)
		}
		if i := slices.IndexFunc(out, func(vc vaultCredential) bool { return vc.host == vault }); i >= 0 {
			return nil, bad("vault %s already has a credential (--vault-credential %q)", vault, out[i].arg)
		}
		out = append(out, vaultCredential{arg: arg, host: vault, kind: kind, clientID: clientID})
	}
	return out, nil
}

// vaultHostProblem says why host is not a vault host a reference may name in cloud, or "".
// It asks the reference parser, so the CLI refuses exactly what the provider would.
func vaultHostProblem(host string, cloud viperkv.Cloud) string {
	if strings.ContainsAny(host, "/()@;=?#\\ :") {
		return "not a vault name or host (want othervault or othervault." + cloud.VaultSuffix() + ")"
	}
	r, err := viperkv.ParseReference("@KeyVault(SecretUri=https://"+host+"/secrets/probe)", viperkv.WithCloud(cloud))
	var re *viperkv.ReferenceError
	switch {
	case errors.As(err, &re):
		return re.Reason
	case err != nil:
		return bare(err)
	case r.Vault != host:
		return "not a vault name or host (want othervault or othervault." + cloud.VaultSuffix() + ")"
	}
	return ""
}

// openEmulator reads the emulator info file at path (given as name: VIPERKV_EMULATOR_INFO
// or --info), checks that its emulator is running, points this process's managed identity
// variables at it, and returns the info and a client that reaches it for production host
// names.
func openEmulator(name, path string) (*emuinfo.Info, *http.Client, error) {
	info, err := emuinfo.Read(path)
	if err != nil {
		return nil, nil, usageError("%s: %v", name, err)
	}
	if err := emulatorRunning(name+"="+path, info); err != nil {
		return nil, nil, err
	}
	hc, err := info.Client("the emulator of " + name + "=" + path)
	if err != nil {
		return nil, nil, usageError("%s: %v", name, err)
	}
	for k, v := range info.Env() {
		if err := os.Setenv(k, v); err != nil {
			return nil, nil, err
		}
	}
	return info, hc, nil
}

// emulatorRunning dials the emulator's identity endpoint once, so that an emulator that is
// gone (its info file left behind) is said at once, not after the SDK's retries.
func emulatorRunning(what string, info *emuinfo.Info) error {
	u, err := url.Parse(info.IdentityEndpoint)
	if err != nil || u.Host == "" {
		return usageError("%s: the info file has no identity_endpoint", what)
	}
	if err := emuinfo.Running(context.Background(), u.Host); err != nil {
		return fmt.Errorf("the emulator of %s is not running (%v)", what, err)
	}
	return nil
}

// newCredential returns the azidentity credential of a kind of --credential (other than
// managed-identity), reaching Entra ID through hc (the emulator's client) when it is set,
// and never following a redirect. flag names what asked for it in errors
// ("--credential workload-identity").
func newCredential(flag, kind, clientID string, cloud viperkv.Cloud, hc *http.Client) (azcore.TokenCredential, error) {
	co := azcore.ClientOptions{Cloud: azureClouds[cloud], Transport: noRedirects(hc)}
	var (
		cred azcore.TokenCredential
		err  error
	)
	switch kind {
	case "azure-cli":
		cred, err = azidentity.NewAzureCLICredential(nil)
	case "default":
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: co})
	case "workload-identity":
		if err := workloadIdentityEnv(flag, clientID); err != nil {
			return nil, err
		}
		// A vault of another tenant names that tenant in its challenge; the app (a
		// multi-tenant one) may get its tokens only if the standard variable allows it, as
		// DefaultAzureCredential reads it too.
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: co, ClientID: clientID,
			AdditionallyAllowedTenants: additionallyAllowedTenants()})
	}
	if err != nil {
		return nil, usageError("%s: %v", flag, err)
	}
	return cred, nil
}

// additionallyAllowedTenants reads AZURE_ADDITIONALLY_ALLOWED_TENANTS (tenant IDs separated
// by ';', or "*"), the azidentity variable DefaultAzureCredential reads.
func additionallyAllowedTenants() []string {
	var out []string
	for _, t := range strings.Split(os.Getenv("AZURE_ADDITIONALLY_ALLOWED_TENANTS"), ";") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// workloadIdentityEnv checks the variables AKS workload identity sets in a pod, so that a
// missing one is a usage error naming it (and flag, what asked for the credential) rather
// than a failed token request.
func workloadIdentityEnv(flag, clientID string) error {
	var missing []string
	for _, v := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"} {
		if os.Getenv(v) == "" && (v != "AZURE_CLIENT_ID" || clientID == "") {
			missing = append(missing, v)
		}
	}
	switch len(missing) {
	case 0:
	case 1:
		return usageError("%s: %s is not set (AKS workload identity sets it in the pod)", flag, missing[0])
	default:
		return usageError("%s: %s and %s are not set (AKS workload identity sets them in the pod)",
			flag, strings.Join(missing[:len(missing)-1], ", "), missing[len(missing)-1])
	}
	if _, err := os.Stat(os.Getenv("AZURE_FEDERATED_TOKEN_FILE")); err != nil {
		return usageError("%s: AZURE_FEDERATED_TOKEN_FILE: %v", flag, err)
	}
	return nil
}

// azureClouds are the azcore clouds (Entra ID authority hosts) of viperkv's clouds.
var azureClouds = map[viperkv.Cloud]azcloud.Configuration{
	viperkv.CloudPublic:       azcloud.AzurePublic,
	viperkv.CloudChina:        azcloud.AzureChina,
	viperkv.CloudUSGovernment: azcloud.AzureGovernment,
}

// noRedirects returns a client sending through hc's transport (the default one if hc is
// nil) that never follows a redirect: an Entra ID that redirects is an error, not a new
// place to send credentials to.
func noRedirects(hc *http.Client) *http.Client {
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if hc != nil {
		c.Transport, c.Timeout = hc.Transport, hc.Timeout
	}
	return c
}

// envRefs are the environment variables whose values hold references.
type envRefs struct {
	names []string // by index under envKey
}

// addEnvRefs puts every variable of environ holding a reference into v as a default under
// envKey, where the provider finds it.
func addEnvRefs(v *viper.Viper, environ []string) *envRefs {
	refs := &envRefs{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" || !viperkv.HasReference(value) {
			continue
		}
		v.SetDefault(envKey+"."+strconv.Itoa(len(refs.names)), value)
		refs.names = append(refs.names, name)
	}
	return refs
}

// name returns the variable a config key stands for, or "".
func (r *envRefs) name(key string) string {
	if r == nil {
		return ""
	}
	i, err := strconv.Atoi(strings.TrimPrefix(key, envKey+"."))
	if err != nil || !strings.HasPrefix(key, envKey+".") || i < 0 || i >= len(r.names) {
		return ""
	}
	return r.names[i]
}

// display names a config key for people: "$DB_CONN" for an environment variable.
func (r *envRefs) display(key string) string {
	if n := r.name(key); n != "" {
		return "$" + n
	}
	return key
}

// values returns the resolved variables, by name, from a resolved configuration.
func (r *envRefs) values(c *viper.Viper) map[string]string {
	out := map[string]string{}
	for i, n := range r.names {
		key := envKey + "." + strconv.Itoa(i)
		if !c.IsSet(key) {
			continue
		}
		if sub, ok := c.Get(key).(map[string]any); ok {
			// A secret expanded into a subtree (Format=json): a variable per leaf, named
			// after the variable that held the reference (DB becomes DB_HOST, DB_PORT).
			maps.Copy(out, envVars(sub, n))
			continue
		}
		out[n] = envValue(c.Get(key))
	}
	return out
}

// envVars flattens settings into environment variables: the key path uppercased with "."
// as "_" and the prefix in front (database.conn with prefix APP: APP_DATABASE_CONN). A
// list of plain words becomes the words separated by spaces (what Viper's GetStringSlice
// reads back from the environment); other lists, JSON. The envKey subtree is left out.
func envVars(settings map[string]any, prefix string) map[string]string {
	out := map[string]string{}
	var walk func(name string, v any)
	walk = func(name string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				walk(name+"_"+envName(k), e)
			}
			return
		case nil:
			return
		}
		if strings.ContainsAny(name, "=\x00") {
			return // not a variable name
		}
		out[name] = envValue(v)
	}
	for k, v := range settings {
		if k == envKey {
			continue
		}
		name := envName(k)
		if prefix != "" {
			name = strings.ToUpper(prefix) + "_" + name
		}
		walk(name, v)
	}
	return out
}

func envName(key string) string { return strings.ToUpper(strings.ReplaceAll(key, ".", "_")) }

func envValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte: // Decode=...: the bytes when they make text, else base64
		if utf8.Valid(x) && !bytes.ContainsRune(x, 0) {
			return string(x)
		}
		return base64.StdEncoding.EncodeToString(x)
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice {
		words := make([]string, 0, rv.Len())
		plain := true
		for i := 0; i < rv.Len() && plain; i++ {
			switch e := rv.Index(i).Interface().(type) {
			case string, bool, int, int64, float64:
				s := fmt.Sprint(e)
				plain = s != "" && !strings.ContainsAny(s, " \t\r\n\"'[]{}")
				words = append(words, s)
			default:
				plain = false
			}
		}
		if plain {
			return strings.Join(words, " ")
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// sortedEnv returns "NAME=value" lines sorted by name.
func sortedEnv(vars map[string]string) []string {
	out := make([]string, 0, len(vars))
	for n, v := range vars {
		out = append(out, n+"="+v)
	}
	sort.Strings(out)
	return out
}

// parseVaultSource reads a --vault-source: VAULT[,prefix=P][,tag=NAME=VALUE]...
func parseVaultSource(arg string) (viperkv.Option, error) {
	parts := strings.Split(arg, ",")
	vault := strings.TrimSpace(parts[0])
	if vault == "" {
		return nil, usageError("--vault-source %q: want VAULT[,prefix=P][,tag=NAME=VALUE]", arg)
	}
	var opts []viperkv.VaultSourceOption
	tags := map[string]string{}
	for _, part := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch {
		case ok && k == "prefix" && v != "":
			opts = append(opts, viperkv.SecretPrefix(v))
		case ok && k == "tag":
			name, value, ok := strings.Cut(v, "=")
			if !ok || name == "" {
				return nil, usageError("--vault-source %q: a tag is tag=NAME=VALUE", arg)
			}
			tags[name] = value
		default:
			return nil, usageError("--vault-source %q: unknown part %q (want prefix=P or tag=NAME=VALUE)", arg, part)
		}
	}
	if len(tags) > 0 {
		opts = append(opts, viperkv.SecretTags(tags))
	}
	return viperkv.WithVaultSource(vault, opts...), nil
}
