package grammar

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/viperkv/viperkv/internal/cloud"
	"github.com/viperkv/viperkv/internal/kvname"
)

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

// params parses the text between the parentheses; appService says the reference is
// written @Microsoft.KeyVault(...), which keeps to App Service's grammar. It returns a
// non-empty reason on error; the caller builds the error so the success path allocates
// nothing.
func params(body string, pc Config, appService bool) (Ref, Shape, Status, string) {
	if strings.IndexByte(body, '(') >= 0 {
		return badShape("unexpected '(' inside the reference (a ')' missing before it?)")
	}
	var seen int
	var val [len(paramNames)]string
	rest := body
	for {
		seg, after, more := strings.Cut(rest, ";")
		seg = TrimBlank(seg)
		if seg == "" {
			if !more && seen != 0 {
				break // a trailing ';' is tolerated
			}
			if seen == 0 && TrimBlank(after) == "" {
				return badShape(emptyReason(pc))
			}
			return badShape("empty parameter (';' with nothing before it)")
		}
		name, v, ok := strings.Cut(seg, "=")
		if !ok {
			return badShape(fmt.Sprintf("parameter %s has no '=' (want Name=value)", kvname.Quote(seg)))
		}
		name, v = TrimBlank(name), TrimBlank(v)
		idx := -1
		for k, p := range paramNames {
			if EqualFold(name, p.name) {
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

// secretParams builds the Ref from the parameters that name the secret.
func secretParams(seen int, val []string, pc Config) (Ref, Status, string) {
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
	c, suffix := pc.cloudOrDefault(), pc.Suffix()
	if suffix == "" {
		return refused(fmt.Sprintf("cloud %s has no known Key Vault suffix", kvname.Quote(c)))
	}
	return Ref{Vault: LowerASCII(val[1]) + "." + suffix, Name: val[2], Version: LowerASCII(version)}, "", ""
}

func emptyReason(pc Config) string {
	suffix := nonEmpty(pc.Suffix(), cloud.Public().VaultSuffix)
	return "empty reference (want SecretUri=https://<vault>." + suffix + "/secrets/<name> or VaultName=<vault>;SecretName=<name>)"
}

func bad(reason string) (Ref, Status, string) {
	return Ref{}, InvalidSyntax, reason
}

func badShape(reason string) (Ref, Shape, Status, string) {
	return Ref{}, Shape{}, InvalidSyntax, reason
}

func refused(reason string) (Ref, Status, string) {
	return Ref{}, HostNotAllowed, reason
}

// parseSecretURI checks a SecretUri value by hand rather than with net/url, which accepts
// (and normalizes) far more than a vault URL: every piece is checked, and the Ref is
// rebuilt from the checked pieces so nothing unchecked reaches a request.
func parseSecretURI(u string, pc Config) (Ref, Status, string) {
	k := strings.Index(u, "://")
	if k <= 0 || !isScheme(u[:k]) {
		// No quote: text without a scheme may be "user:password@host".
		return bad("SecretUri is not an absolute URL (want https://<vault>." +
			nonEmpty(pc.Suffix(), cloud.Public().VaultSuffix) + "/secrets/<name>)")
	}
	if scheme := u[:k]; !EqualFold(scheme, "https") {
		return refused(fmt.Sprintf("SecretUri scheme %s is refused: tokens are sent over https only", kvname.Quote(scheme)))
	}
	rest := u[k+3:]
	// '\' ends the authority as it does for browsers, so "evil.test\@vault..." is judged
	// by the host a URL parser of that kind would contact.
	authority, path := rest, ""
	if i := strings.IndexAny(rest, "/?#\\"); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	vault, st, reason := checkAuthority(authority, pc)
	if reason != "" {
		return Ref{}, st, reason
	}
	name, version, reason := parseSecretPath(path)
	if reason != "" {
		return bad(reason)
	}
	return Ref{Vault: vault, Name: name, Version: LowerASCII(version)}, "", ""
}

// checkAuthority checks the authority of a SecretUri ("host" or "host:port") and returns
// the vault it names: lowercase, with the port only when "host:port" is explicitly allowed.
func checkAuthority(authority string, pc Config) (vault string, st Status, reason string) {
	if authority == "" {
		return "", InvalidSyntax, "SecretUri has no host"
	}
	if strings.IndexByte(authority, '@') >= 0 {
		// Never quoted: the part before '@' may be a password.
		return "", HostNotAllowed, "SecretUri has user info (text and '@' before the host), refused: the request would go to the host after '@'"
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
		return "", InvalidSyntax, "SecretUri has no host"
	}
	host = LowerASCII(host)
	vault = host
	switch {
	case port == "":
	case port == ":":
		return "", InvalidSyntax, "SecretUri has an empty port after ':'"
	case port[0] != ':' || !kvname.AllDigits(port[1:]):
		return "", InvalidSyntax, fmt.Sprintf("SecretUri port %s is not a number", kvname.Quote(strings.TrimPrefix(port, ":")))
	case port == ":443":
	case pc.AllowedHosts[host+port]:
		vault = host + port
	default:
		return "", HostNotAllowed, fmt.Sprintf("port %s is refused (Key Vault listens on 443)", kvname.Quote(port[1:]))
	}
	if vault == host && !pc.AllowedHosts[host] {
		if r := vaultHostProblem(host, pc.cloudOrDefault()); r != "" {
			return "", HostNotAllowed, r
		}
	}
	return vault, "", ""
}

// VaultHost checks a vault's host as the user configured it (a host, "host:port" when
// allowed, or a bare vault name, which gets the cloud's suffix) and returns the vault as
// references name it. The error names the problem, with HostNotAllowed or InvalidSyntax.
func VaultHost(host string, pc Config) (string, *Error) {
	if host != "" && strings.IndexByte(host, '.') < 0 && strings.IndexByte(host, ':') < 0 {
		host += "." + pc.Suffix()
	}
	if i := strings.IndexAny(host, "/?#\\"); i >= 0 {
		return "", &Error{Status: InvalidSyntax, Reason: "a vault host has no path, query or fragment: want <vault>." + nonEmpty(pc.Suffix(), cloud.Public().VaultSuffix)}
	}
	vault, st, reason := checkAuthority(host, pc)
	if reason != "" {
		return "", &Error{Status: st, Reason: reason}
	}
	return vault, nil
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
	if !EqualFold(seg[0], "secrets") && !EqualFold(seg[0], "certificates") {
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
func vaultHostProblem(host, c string) string {
	t, _ := cloud.ByName(c)
	suffix := t.VaultSuffix
	if suffix == "" {
		return fmt.Sprintf("cloud %s has no known Key Vault suffix, and host %s is not allowed explicitly", kvname.Quote(c), kvname.Quote(host))
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
		for _, other := range cloud.All() {
			if other.Name != t.Name && strings.HasSuffix(host, "."+other.VaultSuffix) {
				r += fmt.Sprintf(" but of cloud %s; select that cloud", other.Name)
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
