package kvtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// seedSpec is a seed's content (see [WithSeed]).
type seedSpec struct {
	// TenantID must match the Server's tenant; pass it to [WithTenantID] when starting.
	TenantID string `yaml:"tenant_id,omitempty"`
	// DisableSystemIdentity starts the app without a system-assigned identity.
	DisableSystemIdentity bool `yaml:"disable_system_identity,omitempty"`
	// Identities are user-assigned identities to add.
	Identities []seedIdentity `yaml:"identities,omitempty"`
	// Vaults to create.
	Vaults []seedVault `yaml:"vaults,omitempty"`
}

// seedIdentity is a user-assigned identity of a [seedSpec].
type seedIdentity struct {
	// Name of the identity; "system" is reserved.
	Name string `yaml:"name"`
	// ClientID, if set, fixes the client ID (a GUID).
	ClientID string `yaml:"client_id,omitempty"`
	// Federated gives the identity a federated identity credential ([WithFederated]), so
	// it can sign in with [Server.FederatedToken] as an AKS workload identity. The
	// standalone emulator writes such a token to a file for each federated identity.
	Federated bool `yaml:"federated,omitempty"`
	// ClientSecret, if set, gives the identity a client secret ([WithClientSecret]), as
	// an app registration has one, so ClientSecretCredential (tenant, client ID, secret)
	// signs in with it at the emulator's Entra ID. It must not be empty.
	ClientSecret *string `yaml:"client_secret,omitempty"`
}

// seedVault is a vault of a [seedSpec].
type seedVault struct {
	// Name is a vault name (public cloud) or a full vault host.
	Name string `yaml:"name"`
	// PurgeProtection turns on purge protection ([WithPurgeProtection]).
	PurgeProtection bool `yaml:"purge_protection,omitempty"`
	// RetentionDays is the soft delete retention, 7 to 90 days ([WithRetentionDays]);
	// default 90.
	RetentionDays *int `yaml:"retention_days,omitempty"`
	// PageSize is the most items a list page holds, 1 to 25 ([WithPageSize]); default 25.
	PageSize *int `yaml:"page_size,omitempty"`
	// PublicNetworkAccess is enabled (default) or disabled: disabled answers every request
	// 403 ForbiddenByConnection ([NetworkAccess].PublicAccessDisabled).
	PublicNetworkAccess string `yaml:"public_network_access,omitempty"`
	// Firewall is the firewall's default action, allow (default) or deny: deny answers every
	// request 403 ForbiddenByFirewall ([NetworkAccess].FirewallDeny).
	Firewall string `yaml:"firewall,omitempty"`
	// PermissionModel is rbac (default) or access_policy: how a denied request is answered
	// (403 ForbiddenByRbac or ForbiddenByPolicy, [Vault.SetPermissionModel]).
	PermissionModel string `yaml:"permission_model,omitempty"`
	// Secrets to create, one version each (list a name twice for two versions).
	Secrets []seedSecret `yaml:"secrets,omitempty"`
	// Certificates to issue or import, after the secrets (certificates_seed.go).
	Certificates []seedCertificate `yaml:"certificates,omitempty"`
	// Issuers are certificate issuers with their CAs, added before the certificates, which
	// name them in issuer (certificates_seed.go).
	Issuers []seedIssuer `yaml:"issuers,omitempty"`
	// Grants are role assignments on the vault.
	Grants []seedGrant `yaml:"grants,omitempty"`
	// EventSubscriptions are Event Grid webhook subscriptions on the vault's system topic,
	// made after the secrets, so the seed's own secrets publish nothing to them.
	EventSubscriptions []seedEventSubscription `yaml:"event_subscriptions,omitempty"`
}

// seedEventSubscription is an Event Grid subscription of a [seedVault] (see
// [EventSubscription]).
type seedEventSubscription struct {
	// Name defaults to "sub-<n>".
	Name string `yaml:"name,omitempty"`
	// Endpoint is the webhook's http or https URL.
	Endpoint string `yaml:"endpoint"`
	// Schema is eventgrid (default) or cloudevents.
	Schema string `yaml:"schema,omitempty"`
	// EventTypes filter the events (default the three secret events).
	EventTypes []string `yaml:"event_types,omitempty"`
	// Audience turns on Microsoft Entra protected delivery.
	Audience string `yaml:"audience,omitempty"`
	// Roles are the roles claim of the Entra tokens.
	Roles []string `yaml:"roles,omitempty"`
	// Headers are custom delivery properties.
	Headers map[string]string `yaml:"headers,omitempty"`
	// MaxEventsPerBatch defaults to 1.
	MaxEventsPerBatch int `yaml:"max_events_per_batch,omitempty"`
}

// seedSecret is a secret of a [seedVault].
type seedSecret struct {
	// Name is the secret name: 1-127 letters, digits and dashes.
	Name string `yaml:"name"`
	// Value is the secret value.
	Value string `yaml:"value"`
	// ContentType is optional.
	ContentType string `yaml:"content_type,omitempty"`
	// Enabled defaults to true.
	Enabled *bool `yaml:"enabled,omitempty"`
	// Expires is the optional exp attribute.
	Expires *time.Time `yaml:"expires,omitempty"`
	// NotBefore is the optional nbf attribute.
	NotBefore *time.Time `yaml:"not_before,omitempty"`
	// Tags are optional.
	Tags map[string]string `yaml:"tags,omitempty"`
}

// seedGrant assigns a role to an identity ("system" or a user-assigned identity's name).
type seedGrant struct {
	// Identity is "system" or the name of an identity of the seed.
	Identity string `yaml:"identity"`
	// Role is a role name accepted by [ParseRole].
	Role string `yaml:"role"`
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// parseSeed reads a YAML seed and validates it. Unknown fields are errors, so typos show;
// errors name the field, the secret (vault, identity) it is in and the line, in the seed's
// own words, and never quote a value.
func parseSeed(r io.Reader) (*seedSpec, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(r).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &seedSpec{}, nil
		}
		return nil, fmt.Errorf("kvtest: invalid seed: %w", err)
	}
	var s seedSpec
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return &s, nil // comments only
		}
		root = root.Content[0]
	}
	if errs := decodeSeedNode(root, reflect.ValueOf(&s).Elem(), "the seed"); len(errs) > 0 {
		return nil, fmt.Errorf("kvtest: invalid seed: %w", errors.Join(errs...))
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// decodeSeedNode decodes the mapping n into the struct dst field by field, so that each
// problem is reported with the field's name, what holds it ("secret \"db-conn\"") and
// its line.
func decodeSeedNode(n *yaml.Node, dst reflect.Value, what string) []error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("%s (line %d): want a mapping", what, n.Line)}
	}
	fields := map[string]int{}
	for i := range dst.NumField() {
		name, _, _ := strings.Cut(dst.Type().Field(i).Tag.Get("yaml"), ",")
		fields[name] = i
	}
	var errs []error
	seen := map[string]int{} // field -> line
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		fi, ok := fields[key.Value]
		if !ok || key.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("unknown field %q in %s (line %d)", key.Value, what, key.Line))
			continue
		}
		if line, dup := seen[key.Value]; dup {
			errs = append(errs, fmt.Errorf("field %q appears twice in %s (lines %d and %d)", key.Value, what, line, key.Line))
			continue
		}
		seen[key.Value] = key.Line
		fv := dst.Field(fi)
		if fv.Kind() != reflect.Slice || fv.Type().Elem().Kind() != reflect.Struct {
			if err := val.Decode(fv.Addr().Interface()); err != nil {
				errs = append(errs, fmt.Errorf("field %q in %s (line %d): want %s", key.Value, what, val.Line, seedKind(fv.Type())))
			}
			continue
		}
		// A list of identities, vaults, secrets or grants.
		if isNull(val) {
			continue
		}
		if val.Kind != yaml.SequenceNode {
			errs = append(errs, fmt.Errorf("field %q in %s (line %d): want a list", key.Value, what, val.Line))
			continue
		}
		noun := seedNouns[key.Value]
		list := reflect.MakeSlice(fv.Type(), len(val.Content), len(val.Content))
		for j, item := range val.Content {
			errs = append(errs, decodeSeedNode(item, list.Index(j), itemName(item, noun, j, what))...)
		}
		fv.Set(list)
	}
	return errs
}

// itemName says which item of a list a message is about: `secret "db-conn"` when the item
// has a name, else `grant 2 of vault "myvault"`.
func itemName(item *yaml.Node, noun string, i int, parent string) string {
	if item.Kind == yaml.MappingNode {
		for k := 0; k+1 < len(item.Content); k += 2 {
			if item.Content[k].Value == "name" && item.Content[k+1].Kind == yaml.ScalarNode && item.Content[k+1].Value != "" {
				return fmt.Sprintf("%s %q", noun, item.Content[k+1].Value)
			}
		}
	}
	if parent == "the seed" {
		return fmt.Sprintf("%s %d", noun, i+1)
	}
	return fmt.Sprintf("%s %d of %s", noun, i+1, parent)
}

// seedNouns name one item of each list of a seed.
var seedNouns = map[string]string{"identities": "identity", "vaults": "vault", "secrets": "secret", "grants": "grant",
	"event_subscriptions": "event subscription", "certificates": "certificate", "issuers": "issuer"}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// seedKind says what a field of type t wants, for people.
func seedKind(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[*time.Time]():
		return "a time such as 2030-01-01T00:00:00Z"
	case t.Kind() == reflect.Pointer:
		return seedKind(t.Elem())
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Map:
		return "a mapping of strings"
	case t.Kind() == reflect.Slice:
		return "a list of strings"
	case t.Kind() == reflect.Int:
		return "a whole number"
	}
	return "a string"
}

// validate checks names, roles and references between identities and grants.
func (sd *seedSpec) validate() error {
	var errs []error
	if sd.TenantID != "" && !guidRE.MatchString(sd.TenantID) {
		errs = append(errs, fmt.Errorf("tenant_id %q is not a GUID", sd.TenantID))
	}
	ids := map[string]bool{SystemIdentityName: true}
	for i, id := range sd.Identities {
		switch key := strings.ToLower(id.Name); {
		case id.Name == "":
			errs = append(errs, fmt.Errorf("identities[%d]: name is required", i))
		case key == SystemIdentityName:
			errs = append(errs, fmt.Errorf("identities[%d]: %q is reserved for the system-assigned identity", i, id.Name))
		case ids[key]:
			errs = append(errs, fmt.Errorf("identities[%d]: duplicate name %q", i, id.Name))
		default:
			ids[key] = true
		}
		if id.ClientID != "" && !guidRE.MatchString(id.ClientID) {
			errs = append(errs, fmt.Errorf("identities[%d]: client_id %q is not a GUID", i, id.ClientID))
		}
		if id.ClientSecret != nil && *id.ClientSecret == "" {
			errs = append(errs, fmt.Errorf("identities[%d]: client_secret is empty", i))
		}
	}
	vaults := map[string]bool{}
	for i, v := range sd.Vaults {
		host, err := emuinfo.VaultHost(v.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("vaults[%d]: invalid vault name %q", i, v.Name))
		} else if vaults[host] {
			errs = append(errs, fmt.Errorf("vaults[%d]: duplicate vault %q", i, v.Name))
		}
		vaults[host] = true
		if d := v.RetentionDays; d != nil && (*d < minRetentionDays || *d > maxRetentionDays) {
			errs = append(errs, fmt.Errorf("vaults[%d]: retention_days %d is out of range (%d to %d)", i, *d, minRetentionDays, maxRetentionDays))
		}
		if n := v.PageSize; n != nil && (*n < 1 || *n > pageSize) {
			errs = append(errs, fmt.Errorf("vaults[%d]: page_size %d is out of range (1 to %d)", i, *n, pageSize))
		}
		if _, err := v.networkAccess(); err != nil {
			errs = append(errs, fmt.Errorf("vaults[%d]: %w", i, err))
		}
		if _, err := ParsePermissionModel(v.PermissionModel); err != nil {
			errs = append(errs, fmt.Errorf("vaults[%d]: permission_model %q: want rbac or access_policy", i, v.PermissionModel))
		}
		secretNames := map[string]bool{}
		for j, s := range v.Secrets {
			secretNames[strings.ToLower(s.Name)] = true
			if !secretNameRE.MatchString(s.Name) {
				errs = append(errs, fmt.Errorf("vaults[%d].secrets[%d]: invalid secret name %q (1-127 letters, digits, dashes)", i, j, s.Name))
			}
			if len(s.Value) > maxSecretSize {
				errs = append(errs, fmt.Errorf("vaults[%d].secrets[%d]: value exceeds 25 KB", i, j))
			}
		}
		for j, g := range v.Grants {
			if !ids[strings.ToLower(g.Identity)] {
				errs = append(errs, fmt.Errorf("vaults[%d].grants[%d]: unknown identity %q", i, j, g.Identity))
			}
			if _, err := ParseRole(g.Role); err != nil {
				errs = append(errs, fmt.Errorf("vaults[%d].grants[%d]: unknown role %q", i, j, g.Role))
			}
		}
		errs = append(errs, validateSeedCertificates(i, v.Issuers, v.Certificates, secretNames)...)
		errs = append(errs, validateSeedSubscriptions(i, v.EventSubscriptions)...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("kvtest: invalid seed: %w", errors.Join(errs...))
	}
	return nil
}

// networkAccess reads the vault's public_network_access and firewall.
func (sv *seedVault) networkAccess() (NetworkAccess, error) {
	var na NetworkAccess
	switch strings.ToLower(strings.TrimSpace(sv.PublicNetworkAccess)) {
	case "", "enabled":
	case "disabled":
		na.PublicAccessDisabled = true
	default:
		return na, fmt.Errorf("public_network_access %q: want enabled or disabled", sv.PublicNetworkAccess)
	}
	switch strings.ToLower(strings.TrimSpace(sv.Firewall)) {
	case "", "allow":
	case "deny":
		na.FirewallDeny = true
	default:
		return na, fmt.Errorf("firewall %q: want allow or deny", sv.Firewall)
	}
	return na, nil
}

// validateSeedSubscriptions checks the event subscriptions of vaults[i]. It never quotes
// an endpoint, which may carry a key, nor a header value.
func validateSeedSubscriptions(i int, subs []seedEventSubscription) []error {
	var errs []error
	names := map[string]bool{}
	for j, es := range subs {
		at := fmt.Sprintf("vaults[%d].event_subscriptions[%d]", i, j)
		switch key := strings.ToLower(es.Name); {
		case es.Name != "" && !subscriptionNameRE.MatchString(es.Name):
			errs = append(errs, fmt.Errorf("%s: invalid name %q (3-64 letters, digits, dashes)", at, es.Name))
		case es.Name != "" && names[key]:
			errs = append(errs, fmt.Errorf("%s: duplicate name %q", at, es.Name))
		default:
			names[key] = true
		}
		if es.Endpoint == "" {
			errs = append(errs, fmt.Errorf("%s: endpoint is required", at))
		} else if checkEndpoint(es.Endpoint) != nil {
			errs = append(errs, fmt.Errorf("%s: endpoint is not an http or https URL", at))
		}
		if _, err := parseEventSchema(es.Schema); err != nil {
			errs = append(errs, fmt.Errorf("%s: unknown schema %q (want eventgrid or cloudevents)", at, es.Schema))
		}
		for _, t := range es.EventTypes {
			if !knownEventType(t) {
				errs = append(errs, fmt.Errorf("%s: unknown event type %q (want a Microsoft.KeyVault event type such as %s)", at, t, EventSecretNewVersionCreated))
			}
		}
		if es.MaxEventsPerBatch < 0 || es.MaxEventsPerBatch > 5000 {
			errs = append(errs, fmt.Errorf("%s: max_events_per_batch must be between 1 and 5000", at))
		}
	}
	return errs
}

// WithSeed fills the server, when it starts, from a YAML seed: the same file the
// standalone emulator takes (viperkv emulator --seed), so a test and a person trying the
// CLI by hand can share one fixture. Unknown fields are errors naming their line:
//
//	tenant_id: 8f5c6a3e-2b1d-4e7a-9c0f-6d4b2a1e3f57   # optional
//	identities:                                       # user-assigned identities
//	  - name: batch
//	    client_id: 6a1f0c3e-...                       # optional, derived from the name if absent
//	    federated: true                               # optional: AKS workload identity
//	    client_secret: "local-only"                   # optional: for ClientSecretCredential
//	vaults:
//	  - name: myvault                                 # or a full host: x.vault.azure.cn
//	    purge_protection: true                        # optional: purge answers 403
//	    retention_days: 7                             # optional, 7-90, default 90
//	    page_size: 2                                  # optional, 1-25: items per list page
//	    public_network_access: disabled               # optional: enabled (default) or disabled: 403 ForbiddenByConnection
//	    firewall: deny                                # optional: allow (default) or deny: 403 ForbiddenByFirewall
//	    permission_model: access_policy               # optional: rbac (default) or access_policy: denials answer ForbiddenByPolicy
//	    secrets:
//	      - name: db-conn
//	        value: "Server=db;..."
//	        content_type: text/plain                  # optional
//	        enabled: true                             # optional, default true
//	        expires: 2030-01-01T00:00:00Z             # optional
//	        not_before: 2024-01-01T00:00:00Z          # optional
//	        tags: {env: dev}                          # optional
//	    certificates:                                 # self-signed, or imported (import_pem_file)
//	      - name: api-tls
//	        subject: CN=api.example.com               # optional, default CN=<name>
//	        dns_names: [api.example.com]              # optional; emails, upns too
//	        key_type: EC                              # optional: RSA (default, key_size) or EC (curve)
//	        content_type: pem                         # optional: pkcs12 (default) or pem
//	        validity: 2m                              # optional: a duration, or validity_months
//	        renew_at_percentage: 50                   # optional AutoRenew trigger (default 80%)
//	    grants:
//	      - identity: system                          # the system-assigned identity
//	        role: Key Vault Secrets User              # or secrets-user, secrets-officer, reader, certificate-user
//	    event_subscriptions:                          # Event Grid webhooks, see Vault.Subscribe
//	      - name: app-push                            # optional, default sub-<n>
//	        endpoint: https://localhost:8443/events   # http or https
//	        schema: eventgrid                         # optional: eventgrid (default) or cloudevents
//	        event_types:                              # optional, default the three secret events
//	          - Microsoft.KeyVault.SecretNewVersionCreated
//	        audience: api://my-webhook-app            # optional: Entra protected delivery
//	        roles: [AzureEventGridSecureWebhookSubscriber]  # optional, the default
//	        headers: {X-Api-Key: local-only}          # optional custom delivery properties
//	        max_events_per_batch: 1                   # optional, default 1
//
// The seed's tenant_id, when given, is the server's tenant; with [WithTenantID] too, both
// must agree. A seed that does not parse or names an unknown identity or role fails
// [Start] (and panics [NewServer] and [NewServerT]). Event subscriptions are made after
// the vault's secrets, so the seed's secrets publish no SecretNewVersionCreated to them
// (their expiry events still come); each starts its validation handshake at once.
func WithSeed(yaml []byte) Option {
	return func(c *config) { c.seed = bytes.Clone(yaml) }
}

// applySeed adds the seed's identities, vaults, secrets, grants and event subscriptions
// to the server.
func (s *Server) applySeed(sd *seedSpec) error {
	if sd == nil {
		return nil
	}
	if err := sd.validate(); err != nil {
		return err
	}
	if sd.TenantID != "" && !strings.EqualFold(sd.TenantID, s.tenant) {
		return fmt.Errorf("kvtest: seed tenant %s differs from the server's %s; give WithTenantID the same tenant", sd.TenantID, s.tenant)
	}
	if sd.DisableSystemIdentity {
		s.SetSystemIdentityEnabled(false)
	}
	ids := map[string]Identity{SystemIdentityName: s.SystemIdentity()}
	for _, si := range sd.Identities {
		var opts []IdentityOption
		if si.ClientID != "" {
			opts = append(opts, WithClientID(si.ClientID))
		}
		if si.Federated {
			opts = append(opts, WithFederated())
		}
		if si.ClientSecret != nil {
			opts = append(opts, WithClientSecret(*si.ClientSecret))
		}
		id, err := s.addUserIdentity(si.Name, opts...)
		if err != nil {
			return err
		}
		ids[strings.ToLower(si.Name)] = id
	}
	for _, sv := range sd.Vaults {
		var vopts []VaultOption
		if sv.PurgeProtection {
			vopts = append(vopts, WithPurgeProtection())
		}
		if sv.RetentionDays != nil {
			vopts = append(vopts, WithRetentionDays(*sv.RetentionDays))
		}
		if sv.PageSize != nil {
			vopts = append(vopts, WithPageSize(*sv.PageSize))
		}
		v := s.AddVault(sv.Name, vopts...)
		na, _ := sv.networkAccess()                          // validated above
		model, _ := ParsePermissionModel(sv.PermissionModel) // validated above
		v.SetNetworkAccess(na)
		v.SetPermissionModel(model)
		for _, sec := range sv.Secrets {
			var opts []SecretOption
			if sec.ContentType != "" {
				opts = append(opts, WithContentType(sec.ContentType))
			}
			if sec.Enabled != nil {
				opts = append(opts, WithEnabled(*sec.Enabled))
			}
			if sec.Expires != nil {
				opts = append(opts, WithExpires(*sec.Expires))
			}
			if sec.NotBefore != nil {
				opts = append(opts, WithNotBefore(*sec.NotBefore))
			}
			if sec.Tags != nil {
				opts = append(opts, WithTags(sec.Tags))
			}
			v.SetSecret(sec.Name, sec.Value, opts...)
		}
		if err := v.applySeedCertificates(sv.Issuers, sv.Certificates); err != nil {
			return err
		}
		for _, g := range sv.Grants {
			role, _ := ParseRole(g.Role) // validated above
			// At once, even with WithRBACPropagationDelay: the seed is the starting state.
			v.changeRBAC(rbacChange{oid: strings.ToLower(ids[strings.ToLower(g.Identity)].ObjectID), role: role, grant: true}, 0)
		}
		for _, es := range sv.EventSubscriptions {
			schema, _ := parseEventSchema(es.Schema) // validated above
			v.Subscribe(EventSubscription{Name: es.Name, Endpoint: es.Endpoint, Schema: schema, EventTypes: es.EventTypes,
				Audience: es.Audience, Roles: es.Roles, Headers: es.Headers, MaxEventsPerBatch: es.MaxEventsPerBatch})
		}
	}
	return nil
}
