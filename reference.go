package viperkv

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/viperkv/viperkv/internal/kvname"
)

// Grammar:
//
//	ref     = "@" ( "KeyVault(" | "Microsoft.KeyVault(" ) params ")"   ; prefix case-insensitive
//	params  = param *( ";" param ) [ ";" ]                              ; blanks allowed around ";" "="
//	param   = ( "SecretUri" | "VaultName" | "SecretName" | "SecretVersion" ) "=" value
//
// with either SecretUri=https://<vault>.<suffix>/secrets/<name>[/<version>][/] alone (or
// /certificates/<name>[/<version>]: a Key Vault certificate, read through the secret of the
// same name and version that holds it with its private key), or
// VaultName and SecretName (and optionally SecretVersion). "@@" right before a prefix
// stands for a literal "@", so that prefix is plain text; other "@@" stay as they are.
//
// Which status a malformed reference gets:
//
//   - StatusHostNotAllowed: the text is a well-formed URL but names a destination that no
//     token may go to: a scheme other than https, user info ("user@host"), a port other
//     than 443, an IP address, a host that is not <vault>.<suffix> of the configured cloud
//     (look-alikes, trailing dot, non-ASCII or punycode, bad vault label) unless the exact
//     host is allowed, or a cloud without a known vault suffix.
//   - StatusInvalidSyntax: everything else: a missing ')', unknown, duplicate, empty or
//     conflicting parameters, a SecretUri that is not an absolute URL or has an empty host,
//     an empty or non-numeric port, a query or fragment, a path other than exactly
//     /secrets/<name>[/<version>][/] (dot segments, "//", percent-escapes, backslashes,
//     extra segments), a bad secret name, version or VaultName.
//
// Host problems are checked before the path, so a reference that is wrong in both ways
// reports HostNotAllowed: the security finding is the one an operator must see.

const (
	// The prefixes after their '@', lowercase for ASCII case folding.
	prefixShort = "keyvault("
	prefixLong  = "microsoft.keyvault("
)

// Reference is one parsed Key Vault secret reference. Its fields are canonical: the URL the
// resolver requests is rebuilt from them, never taken from the config text.
type Reference struct {
	// Vault is the vault's host, lowercase, such as "myvault.vault.azure.net". It carries a
	// ":port" only for an explicitly allowed "host:port".
	Vault string
	// Name is the secret's name as written (Key Vault compares names case-insensitively).
	Name string
	// Version is the pinned version in lowercase hex, or "" for the latest version.
	Version string
}

// VaultURL returns the vault's base URL, such as "https://myvault.vault.azure.net".
func (r Reference) VaultURL() string { return "https://" + r.Vault }

// ID returns the secret's identifier URL: VaultURL + "/secrets/<name>[/<version>]".
func (r Reference) ID() string {
	id := r.VaultURL() + "/secrets/" + r.Name
	if r.Version != "" {
		id += "/" + r.Version
	}
	return id
}

// String returns the reference in canonical form, "@KeyVault(SecretUri=<ID>)", or "" for
// the zero Reference (a malformed reference has none: see ReferenceStatus.Written).
func (r Reference) String() string {
	if r == (Reference{}) {
		return ""
	}
	return "@KeyVault(SecretUri=" + r.ID() + ")"
}

// key returns r with the name lowercased: Key Vault secret names are case-insensitive, so
// "DB-Conn" and "db-conn" are one secret and must be fetched once.
func (r Reference) key() Reference {
	r.Name = lowerASCII(r.Name)
	return r
}

// ReferenceError reports a malformed or refused reference. Reason names the parameter,
// secret name or host involved but never quotes the whole config value, which may hold
// other sensitive text.
type ReferenceError struct {
	// Key is the config key whose value holds the reference ("" from ParseReference).
	Key string
	// Status is StatusInvalidSyntax or StatusHostNotAllowed.
	Status Status
	// Reason says what is wrong, for people.
	Reason string
	// Written is the reference as written, from its prefix to its ')' (or the prefix
	// alone when the ')' is missing, so no text after it is quoted).
	Written string
}

// Error formats the error as `viperkv: config key "db.conn": InvalidSyntax: <reason>`.
func (e *ReferenceError) Error() string {
	if e.Key == "" {
		return "viperkv: " + string(e.Status) + ": " + e.Reason
	}
	return "viperkv: config key " + strconv.Quote(e.Key) + ": " + string(e.Status) + ": " + e.Reason
}

// ParseReference parses s as exactly one reference making up the whole value (surrounding
// blanks are ignored), as a Provider with the same options would: for the public cloud
// unless WithCloud says otherwise, and with the hosts of WithAllowedHosts; other options
// are ignored. The error is a *ReferenceError with an empty Key.
func ParseReference(s string, opts ...Option) (Reference, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	t, err := parseTemplate("", trimBlank(s), o.parseConfig())
	if err != nil {
		return Reference{}, err
	}
	if len(t.parts) != 1 || t.parts[0].ref == nil {
		return Reference{}, &ReferenceError{Status: StatusInvalidSyntax,
			Reason: "not a single reference (want the whole value to be @KeyVault(...))"}
	}
	return *t.parts[0].ref, nil
}

// parseConfig is what parsing depends on: the cloud whose vault hosts are accepted and
// extra exact hosts (lowercase, optionally "host:port") the user allowed.
type parseConfig struct {
	cloud        Cloud
	allowedHosts map[string]bool
}

// newParseConfig builds a parseConfig, normalizing the allowed hosts as the parser
// compares them (lowercase, blanks trimmed).
func newParseConfig(cloud Cloud, allowedHosts ...string) parseConfig {
	pc := parseConfig{cloud: cloud}
	pc.allow(allowedHosts...)
	return pc
}

func (pc *parseConfig) allow(hosts ...string) {
	for _, h := range hosts {
		if h = lowerASCII(trimBlank(h)); h != "" {
			if pc.allowedHosts == nil {
				pc.allowedHosts = map[string]bool{}
			}
			pc.allowedHosts[h] = true
		}
	}
}

// cloudOrDefault treats the zero parseConfig as the public cloud, like the Provider.
func (pc parseConfig) cloudOrDefault() Cloud {
	if pc.cloud == "" {
		return CloudPublic
	}
	return pc.cloud
}

// template is one config string cut into literal text and references.
type template struct {
	// parts alternate literal text (with "@@" escapes applied) and references; adjacent
	// literals are merged and none is empty. nil when the string needs no rendering.
	parts []part
	// src is the whole string when parts is nil, kept so render needs no allocation.
	src string
}

// part is a literal (ref == nil) or a reference, with text the reference as written and
// shape what it asks of the value (Property, Format, Decode, Optional).
type part struct {
	lit   string
	ref   *Reference
	text  string
	shape shape
}

// maxWritten bounds how much of a reference as written a status or error quotes.
const maxWritten = 200

// written returns a reference's text for statuses, bounded.
func written(s string) string {
	if len(s) > maxWritten {
		return s[:maxWritten] + "..."
	}
	return s
}

// parseTemplate finds the references in s, the value of config key. A string without a
// reference prefix costs one scan and no allocation. The error is a *ReferenceError.
func parseTemplate(key, s string, pc parseConfig) (template, error) {
	first := strings.IndexByte(s, '@')
	if first < 0 {
		return template{src: s}, nil
	}
	if text := appConfigReference(s[first:]); text != "" {
		// Passed through, its text would be read as the value.
		return template{}, &ReferenceError{Key: key, Status: StatusAppConfigurationNotSupported, Written: text,
			Reason: "an App Configuration reference (@Microsoft.AppConfiguration(...)) is recognised but not resolved: " +
				"viperkv resolves Key Vault references; read the value with the App Configuration provider, " +
				"or reference its Key Vault secret with @KeyVault(...)"}
	}
	// An upper bound on references (escapes are counted too) sizes both slices once, so
	// the pointers into refs stay valid.
	n := 0
	for i := first; i < len(s); i++ {
		if s[i] == '@' && prefixLen(s, i) > 0 {
			n++
		}
	}
	if n == 0 {
		return template{src: s}, nil
	}
	refs := make([]Reference, 0, n)
	parts := make([]part, 0, 2*n+1)
	var pending string // literal text before an "@@" escape, not yet in parts
	litStart := 0
	for i := first; i < len(s); {
		j := strings.IndexByte(s[i:], '@')
		if j < 0 {
			break
		}
		j += i
		if j+1 < len(s) && s[j+1] == '@' && prefixLen(s, j+1) > 0 {
			// "@@KeyVault(": keep one '@'; the prefix after it is plain text.
			pending += s[litStart : j+1]
			litStart = j + 2
			i = j + 2
			continue
		}
		pl := prefixLen(s, j)
		if pl == 0 {
			i = j + 1
			continue
		}
		name := "@KeyVault("
		if pl > 1+len(prefixShort) {
			name = "@Microsoft.KeyVault("
		}
		end := strings.IndexByte(s[j+pl:], ')')
		if end < 0 {
			return template{}, &ReferenceError{Key: key, Status: StatusInvalidSyntax,
				Reason: "missing closing ')' after " + name, Written: s[j:j+pl] + "..."}
		}
		text := s[j : j+pl+end+1]
		ref, sh, st, reason := parseParams(s[j+pl:j+pl+end], pc, pl > 1+len(prefixShort))
		if reason != "" {
			return template{}, &ReferenceError{Key: key, Status: st, Reason: reason, Written: written(text)}
		}
		if lit := pending + s[litStart:j]; lit != "" {
			parts = append(parts, part{lit: lit})
		}
		pending = ""
		refs = append(refs, ref)
		parts = append(parts, part{ref: &refs[len(refs)-1], text: text, shape: sh})
		i = j + pl + end + 1
		litStart = i
	}
	lit := pending + s[litStart:]
	if len(parts) == 0 && pending == "" {
		return template{src: s}, nil
	}
	if lit != "" {
		parts = append(parts, part{lit: lit})
	}
	if len(parts) > 1 {
		for _, p := range parts {
			if p.ref != nil && p.shape.wholeValue() {
				return template{}, &ReferenceError{Key: key, Status: StatusInvalidSyntax, Written: written(p.text),
					Reason: "a reference with Decode, or with Format and no Property, must be the whole value: " +
						"its bytes or subtree cannot be part of a text"}
			}
		}
	}
	return template{parts: parts}, nil
}

// appConfigPrefix is App Service's App Configuration reference, after its '@', lowercase.
const appConfigPrefix = "microsoft.appconfiguration("

// appConfigReference returns the first App Configuration reference in s (not escaped by
// "@@"), as written, or "".
func appConfigReference(s string) string {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] != '@':
		case i+1 < len(s) && s[i+1] == '@':
			i++ // "@@": a literal '@'
		case hasPrefixFold(s[i+1:], appConfigPrefix):
			text := s[i:]
			if end := strings.IndexByte(text, ')'); end >= 0 {
				return written(text[:end+1])
			}
			return s[i:i+1+len(appConfigPrefix)] + "..."
		}
	}
	return ""
}

// hasRefs reports whether the string holds at least one reference.
func (t template) hasRefs() bool {
	for _, p := range t.parts {
		if p.ref != nil {
			return true
		}
	}
	return false
}

// needsRender reports whether render's result differs from the input string: it holds a
// reference or an "@@" escape. A resolver that keeps only hasRefs templates would leave
// "@@KeyVault(...)" unescaped.
func (t template) needsRender() bool { return t.parts != nil }

// refs returns the references in order of appearance, duplicates included.
func (t template) refs() []Reference {
	var out []Reference
	for _, p := range t.parts {
		if p.ref != nil {
			out = append(out, *p.ref)
		}
	}
	return out
}

// written returns each reference as written, in the order of refs.
func (t template) written() []string {
	var out []string
	for _, p := range t.parts {
		if p.ref != nil {
			out = append(out, written(p.text))
		}
	}
	return out
}

// render substitutes lookup's value for each reference. It reports false (and "") when
// lookup lacks any of them, so a partial value never passes for a whole one. Values are
// copied as they are, never scanned: a secret holding "@KeyVault(...)" stays literal.
func (t template) render(lookup func(Reference) (string, bool)) (string, bool) {
	if t.parts == nil {
		return t.src, true
	}
	if len(t.parts) == 1 {
		if p := t.parts[0]; p.ref != nil {
			return lookup(*p.ref) // whole-value reference: no copy
		}
		return t.parts[0].lit, true
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.ref == nil {
			b.WriteString(p.lit)
			continue
		}
		v, ok := lookup(*p.ref)
		if !ok {
			return "", false
		}
		b.WriteString(v)
	}
	return b.String(), true
}

// prefixLen returns the length of the reference prefix ("@KeyVault(" or
// "@Microsoft.KeyVault(", any ASCII case) at s[i:], or 0.
func prefixLen(s string, i int) int {
	if i >= len(s) || s[i] != '@' {
		return 0
	}
	switch rest := s[i+1:]; {
	case hasPrefixFold(rest, prefixShort):
		return 1 + len(prefixShort)
	case hasPrefixFold(rest, prefixLong):
		return 1 + len(prefixLong)
	}
	return 0
}

// Parameters, as bits of params.seen.
const (
	paramSecretURI = 1 << iota
	paramVaultName
	paramSecretName
	paramSecretVersion
	paramProperty
	paramFormat
	paramDecode
	paramOptional
)

// paramNames lists the parameters: App Service's four, then viperkv's own (shape.go),
// which only the @KeyVault(...) form takes.
var paramNames = [...]struct {
	bit  int
	name string
}{
	{paramSecretURI, "SecretUri"},
	{paramVaultName, "VaultName"},
	{paramSecretName, "SecretName"},
	{paramSecretVersion, "SecretVersion"},
	{paramProperty, "Property"},
	{paramFormat, "Format"},
	{paramDecode, "Decode"},
	{paramOptional, "Optional"},
}

// appServiceParams is how many of paramNames App Service's @Microsoft.KeyVault(...) takes.
const appServiceParams = 4

// parseParams parses the text between the parentheses; appService says the reference is
// written @Microsoft.KeyVault(...), which keeps to App Service's grammar. It returns a
// non-empty reason on error; the caller builds the error so the success path allocates
// nothing.
func parseParams(body string, pc parseConfig, appService bool) (Reference, shape, Status, string) {
	if strings.IndexByte(body, '(') >= 0 {
		return badShape("unexpected '(' inside the reference (a ')' missing before it?)")
	}
	var seen int
	var val [len(paramNames)]string
	rest := body
	for {
		seg, after, more := strings.Cut(rest, ";")
		seg = trimBlank(seg)
		if seg == "" {
			if !more && seen != 0 {
				break // a trailing ';' is tolerated
			}
			if seen == 0 && trimBlank(after) == "" {
				return badShape(emptyReason(pc))
			}
			return badShape("empty parameter (';' with nothing before it)")
		}
		name, v, ok := strings.Cut(seg, "=")
		if !ok {
			return badShape(fmt.Sprintf("parameter %s has no '=' (want Name=value)", kvname.Quote(seg)))
		}
		name, v = trimBlank(name), trimBlank(v)
		idx := -1
		for k, p := range paramNames {
			if equalFold(name, p.name) {
				idx = k
				break
			}
		}
		switch {
		case name == "":
			return badShape("parameter name missing before '='")
		case idx < 0:
			want := "SecretUri, VaultName, SecretName, SecretVersion"
			if !appService {
				want += ", Property, Format, Decode, Optional"
			}
			return badShape(fmt.Sprintf("unknown parameter %s (want %s)", kvname.Quote(name), want))
		case appService && idx >= appServiceParams:
			return badShape(paramNames[idx].name + " is not a parameter of App Service's @Microsoft.KeyVault(...): " +
				"write @KeyVault(...) to use it (App Service would not understand it)")
		case seen&paramNames[idx].bit != 0:
			return badShape("duplicate parameter " + paramNames[idx].name)
		case v == "":
			return badShape("parameter " + paramNames[idx].name + " has an empty value")
		}
		seen |= paramNames[idx].bit
		val[idx] = v
		if !more {
			break
		}
		rest = after
	}
	sh, reason := parseShape(val[appServiceParams:])
	if reason != "" {
		return badShape(reason)
	}
	r, st, reason := secretParams(seen, val[:appServiceParams], pc)
	return r, sh, st, reason
}

// secretParams builds the Reference from the parameters that name the secret.
func secretParams(seen int, val []string, pc parseConfig) (Reference, Status, string) {
	if seen&paramSecretURI != 0 {
		for _, p := range paramNames[1:appServiceParams] {
			if seen&p.bit != 0 {
				return bad("SecretUri cannot be combined with " + p.name + " (use one form or the other)")
			}
		}
		return parseSecretURI(val[0], pc)
	}
	switch {
	case seen&paramVaultName == 0:
		return bad("missing VaultName (want VaultName=<vault>;SecretName=<name>, or SecretUri=...)")
	case seen&paramSecretName == 0:
		return bad("missing SecretName")
	}
	if r := kvname.VaultNameProblem(val[1]); r != "" {
		if strings.IndexByte(val[1], '.') >= 0 {
			r += "; VaultName takes the bare name such as \"myvault\", a full URL goes in SecretUri"
		}
		return bad(r)
	}
	if r := kvname.SecretNameProblem(val[2]); r != "" {
		return bad(r)
	}
	version := val[3]
	if version != "" {
		if r := kvname.VersionProblem(version); r != "" {
			return bad(r)
		}
	}
	c := pc.cloudOrDefault()
	suffix := c.VaultSuffix()
	if suffix == "" {
		return refused(fmt.Sprintf("cloud %s has no known Key Vault suffix", kvname.Quote(string(c))))
	}
	return Reference{Vault: lowerASCII(val[1]) + "." + suffix, Name: val[2], Version: lowerASCII(version)}, "", ""
}

func emptyReason(pc parseConfig) string {
	suffix := pc.cloudOrDefault().VaultSuffix()
	if suffix == "" {
		suffix = CloudPublic.VaultSuffix()
	}
	return "empty reference (want SecretUri=https://<vault>." + suffix + "/secrets/<name> or VaultName=<vault>;SecretName=<name>)"
}

func bad(reason string) (Reference, Status, string) {
	return Reference{}, StatusInvalidSyntax, reason
}

func badShape(reason string) (Reference, shape, Status, string) {
	return Reference{}, shape{}, StatusInvalidSyntax, reason
}

func refused(reason string) (Reference, Status, string) {
	return Reference{}, StatusHostNotAllowed, reason
}

// parseSecretURI checks a SecretUri value by hand rather than with net/url, which accepts
// (and normalizes) far more than a vault URL: every piece is checked, and the Reference is
// rebuilt from the checked pieces so nothing unchecked reaches a request.
func parseSecretURI(u string, pc parseConfig) (Reference, Status, string) {
	k := strings.Index(u, "://")
	if k <= 0 || !isScheme(u[:k]) {
		// No quote: text without a scheme may be "user:password@host".
		return bad("SecretUri is not an absolute URL (want https://<vault>." +
			nonEmpty(pc.cloudOrDefault().VaultSuffix(), CloudPublic.VaultSuffix()) + "/secrets/<name>)")
	}
	if scheme := u[:k]; !equalFold(scheme, "https") {
		return refused(fmt.Sprintf("SecretUri scheme %s is refused: tokens are sent over https only", kvname.Quote(scheme)))
	}
	rest := u[k+3:]
	// '\' ends the authority as it does for browsers, so "evil.test\@vault..." is judged
	// by the host a URL parser of that kind would contact.
	authority, path := rest, ""
	if i := strings.IndexAny(rest, "/?#\\"); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if authority == "" {
		return bad("SecretUri has no host")
	}
	if strings.IndexByte(authority, '@') >= 0 {
		// Never quoted: the part before '@' may be a password.
		return refused("SecretUri has user info (text and '@' before the host), refused: the request would go to the host after '@'")
	}
	host, port := authority, ""
	if authority[0] == '[' {
		if i := strings.IndexByte(authority, ']'); i >= 0 {
			host, port = authority[:i+1], authority[i+1:]
		}
	} else if i := strings.LastIndexByte(authority, ':'); i >= 0 && strings.IndexByte(authority, ':') == i {
		host, port = authority[:i], authority[i:]
	}
	if host == "" {
		return bad("SecretUri has no host")
	}
	host = lowerASCII(host)
	vault := host
	switch {
	case port == "":
	case port == ":":
		return bad("SecretUri has an empty port after ':'")
	case port[0] != ':' || !kvname.AllDigits(port[1:]):
		return bad(fmt.Sprintf("SecretUri port %s is not a number", kvname.Quote(strings.TrimPrefix(port, ":"))))
	case port == ":443":
	case pc.allowedHosts[host+port]:
		vault = host + port
	default:
		return refused(fmt.Sprintf("port %s is refused (Key Vault listens on 443)", kvname.Quote(port[1:])))
	}
	if vault == host && !pc.allowedHosts[host] {
		if r := vaultHostProblem(host, pc.cloudOrDefault()); r != "" {
			return refused(r)
		}
	}
	name, version, reason := parseSecretPath(path)
	if reason != "" {
		return bad(reason)
	}
	return Reference{Vault: vault, Name: name, Version: lowerASCII(version)}, "", ""
}

// parseSecretPath accepts exactly /secrets/<name>[/<version>][/], and the same under
// /certificates/: a certificate's secret has its name and version.
func parseSecretPath(p string) (name, version, reason string) {
	switch {
	case strings.IndexByte(p, '?') >= 0:
		return "", "", "SecretUri has a query ('?'), which a reference cannot carry"
	case strings.IndexByte(p, '#') >= 0:
		return "", "", "SecretUri has a fragment ('#'), which a reference cannot carry"
	case strings.IndexByte(p, '%') >= 0:
		return "", "", "SecretUri path has a percent-escape ('%'); write names and versions plainly"
	case strings.IndexByte(p, '\\') >= 0:
		return "", "", "SecretUri path has a backslash"
	case p == "" || p == "/":
		return "", "", "SecretUri has no path (want /secrets/<name>[/<version>])"
	}
	body := strings.TrimSuffix(p[1:], "/")
	var seg [3]string
	n := 0
	for {
		s, after, more := strings.Cut(body, "/")
		switch {
		case s == "":
			return "", "", "SecretUri path has an empty segment ('//')"
		case s == "." || s == "..":
			return "", "", "SecretUri path has a dot segment ('" + s + "')"
		case n == len(seg):
			return "", "", "SecretUri path has extra segments (want /secrets/<name>[/<version>])"
		}
		seg[n] = s
		n++
		if !more {
			break
		}
		body = after
	}
	if !equalFold(seg[0], "secrets") && !equalFold(seg[0], "certificates") {
		return "", "", fmt.Sprintf("SecretUri path starts with /%s/, want /secrets/<name>[/<version>] (only secrets and certificates can be referenced)", quoteBare(seg[0]))
	}
	if n < 2 {
		return "", "", "SecretUri has no secret name (want /secrets/<name>)"
	}
	if r := kvname.SecretNameProblem(seg[1]); r != "" {
		return "", "", r
	}
	if n == 3 {
		if r := kvname.VersionProblem(seg[2]); r != "" {
			return "", "", r
		}
	}
	return seg[1], seg[2], ""
}

// vaultHostProblem checks that host (lowercase, no port) is <vault>.<suffix> of cloud c.
func vaultHostProblem(host string, c Cloud) string {
	suffix := c.VaultSuffix()
	if suffix == "" {
		return fmt.Sprintf("cloud %s has no known Key Vault suffix, and host %s is not allowed explicitly", kvname.Quote(string(c)), kvname.Quote(host))
	}
	notVault := func(what string) string {
		return fmt.Sprintf("host %s %sis not a Key Vault host of cloud %s (*.%s)", kvname.Quote(host), what, c, suffix)
	}
	if isIPLike(host) {
		return notVault("is an IP address: it ")
	}
	for i := 0; i < len(host); i++ {
		if ch := host[i]; !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '-') {
			return notVault("has " + kvname.DescribeByte(host, i) + ": it ")
		}
	}
	if strings.HasSuffix(host, ".") {
		return notVault("ends with '.': it ")
	}
	label, ok := strings.CutSuffix(host, suffix)
	if !ok || !strings.HasSuffix(label, ".") || strings.IndexByte(label[:len(label)-1], '.') >= 0 || len(label) == 1 {
		r := notVault("")
		for _, other := range [...]Cloud{CloudPublic, CloudChina, CloudUSGovernment} {
			if other != c && strings.HasSuffix(host, "."+other.VaultSuffix()) {
				r += fmt.Sprintf(" but of cloud %s; select that cloud", other)
			}
		}
		return r
	}
	if r := kvname.VaultNameProblem(label[:len(label)-1]); r != "" {
		return fmt.Sprintf("host %s is not a valid vault host: %s", kvname.Quote(host), r)
	}
	return ""
}

// isIPLike reports hosts that are IP addresses in any form a resolver accepts, including
// inet_aton's "127.1", "2130706433" and "0x7f000001": their last label is numeric.
func isIPLike(host string) bool {
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	if strings.IndexByte(host, ':') >= 0 {
		// Only IPv6 has ':' (a port was split off). ParseAddr is kept off the common path:
		// it allocates an error for every host name.
		_, err := netip.ParseAddr(host)
		return err == nil
	}
	last := strings.TrimSuffix(host, ".")
	if i := strings.LastIndexByte(last, '.'); i >= 0 {
		last = last[i+1:]
	}
	if kvname.AllDigits(last) {
		return true
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		return kvname.IsHex(last[2:])
	}
	return false
}

func isScheme(s string) bool {
	if s == "" || !kvname.IsLetter(s[0]) || len(s) > 32 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !kvname.IsLetter(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// quoteBare is quote without the quotation marks, for text inside a path.
func quoteBare(s string) string {
	q := kvname.Quote(s)
	if strings.HasSuffix(q, "...") {
		return q[1:len(q)-4] + "..."
	}
	return q[1 : len(q)-1]
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// trimBlank trims the blanks the grammar tolerates. ASCII only, like the rest of the
// grammar: Unicode spaces are not blanks here.
func trimBlank(s string) string {
	isBlank := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(s) > 0 && isBlank(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isBlank(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// hasPrefixFold reports whether s starts with the lowercase ASCII prefix, ignoring ASCII
// case only. strings.EqualFold is not used on purpose: it folds Unicode, so "\u212A"
// (Kelvin sign) would match 'k' and "\u017F" (long s) would match 's'.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// equalFold is an ASCII-only strings.EqualFold (see hasPrefixFold).
func equalFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if a >= 'A' && a <= 'Z' {
			a += 'a' - 'A'
		}
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// lowerASCII lowercases ASCII letters only, and allocates only when s has an uppercase one.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
