package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

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
	if f.credential == "managed-identity" {
		// The provider's own default, which guards the identity endpoint's transport itself.
		if f.clientID != "" {
			opts = append(opts, viperkv.WithManagedIdentity(azidentity.ClientID(f.clientID)))
		}
		return opts, nil
	}
	cred, err := f.newCredential(cloud, hc)
	if err != nil {
		return nil, err
	}
	return append(opts, viperkv.WithCredential(cred)), nil
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

// newCredential returns the azidentity credential --credential names (other than
// managed-identity), reaching Entra ID through hc (the emulator's client) when it is set,
// and never following a redirect.
func (f *loadFlags) newCredential(cloud viperkv.Cloud, hc *http.Client) (azcore.TokenCredential, error) {
	co := azcore.ClientOptions{Cloud: azureClouds[cloud], Transport: noRedirects(hc)}
	var (
		cred azcore.TokenCredential
		err  error
	)
	switch f.credential {
	case "azure-cli":
		cred, err = azidentity.NewAzureCLICredential(nil)
	case "default":
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: co})
	case "workload-identity":
		if err := workloadIdentityEnv(f.clientID); err != nil {
			return nil, err
		}
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: co, ClientID: f.clientID})
	}
	if err != nil {
		return nil, usageError("--credential %s: %v", f.credential, err)
	}
	return cred, nil
}

// workloadIdentityEnv checks the variables AKS workload identity sets in a pod, so that a
// missing one is a usage error naming it rather than a failed token request.
func workloadIdentityEnv(clientID string) error {
	var missing []string
	for _, v := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"} {
		if os.Getenv(v) == "" && (v != "AZURE_CLIENT_ID" || clientID == "") {
			missing = append(missing, v)
		}
	}
	switch len(missing) {
	case 0:
	case 1:
		return usageError("--credential workload-identity: %s is not set (AKS workload identity sets it in the pod)", missing[0])
	default:
		return usageError("--credential workload-identity: %s and %s are not set (AKS workload identity sets them in the pod)",
			strings.Join(missing[:len(missing)-1], ", "), missing[len(missing)-1])
	}
	if _, err := os.Stat(os.Getenv("AZURE_FEDERATED_TOKEN_FILE")); err != nil {
		return usageError("--credential workload-identity: AZURE_FEDERATED_TOKEN_FILE: %v", err)
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
		if c.IsSet(key) {
			out[n] = c.GetString(key)
		}
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
