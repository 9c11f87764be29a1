package kvtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/viperkv/viperkv/internal/cloud"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// ProxyURL returns the URL of the emulator's HTTP proxy, http://127.0.0.1:PORT, starting
// it on the first call. Through it, programs that take no transport option (SDKs of other
// languages, tools, libraries that build their own HTTP client) reach the emulator with
// production URLs and the SDK's challenge resource verification on, configured by
// environment variables alone:
//
//	HTTPS_PROXY=<ProxyURL>   https://<vault>.vault.azure.net, login.microsoftonline.com
//	HTTP_PROXY=<ProxyURL>    http://169.254.169.254 (IMDS style managed identity)
//	SSL_CERT_FILE, REQUESTS_CA_BUNDLE or NODE_EXTRA_CA_CERTS: a file holding [Server.CACertPEM]
//
// The proxy tunnels CONNECT <vault>.vault.azure.net:443 (and the .vault.azure.cn and
// .vault.usgovcloudapi.net suffixes) to that vault's listener and the Entra ID hosts
// (login.microsoftonline.com, login.chinacloudapi.cn, login.microsoftonline.us, and
// login.windows.net, the authority Key Vault's challenges name) and the
// host of Event Grid's validation URLs (rp-kvtest.eventgrid.azure.net, see
// [EventSubscription.ManualValidationWindow]) on port 443 to the Entra listener; the
// emulator's certificate is valid for those names, so TLS is end to end between the
// client and the emulator. It forwards plain HTTP requests for
// http://169.254.169.254 to the IMDS style endpoint. The emulator's own loopback
// addresses pass too, so a NO_PROXY without 127.0.0.1 does no harm. It is not an open
// proxy: every other host or port answers 403 Forbidden, and a vault host the emulator
// does not have 502 Bad Gateway, each with a plain-text body saying why, and the proxy
// never dials the address a client names, only the emulator's listeners.
//
// Go's http.ProxyFromEnvironment reads the variables once per process and never proxies
// loopback addresses, which keeps the emulator's direct URLs working alongside. A proxy
// URL never changes during the life of a Server; Close stops the proxy and its tunnels.
// After Close, ProxyURL returns "" if the proxy never started. It panics if the proxy
// cannot listen, as [NewServer] does.
func (s *Server) ProxyURL() string {
	s.proxyMu.Lock()
	defer s.proxyMu.Unlock()
	if s.proxy == nil {
		if s.isClosed() {
			return ""
		}
		p := &proxy{srv: s, tunnels: map[net.Conn]struct{}{}}
		p.fwd = &http.Transport{
			Proxy:               nil,
			DialContext:         p.dialer.DialContext,
			DisableCompression:  true, // the client's Accept-Encoding passes unchanged
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		}
		ln, err := s.listen(p, false)
		if err != nil {
			panic(fmt.Sprintf("kvtest: starting the proxy: %v", err))
		}
		p.ln = ln
		s.proxy = p
	}
	return "http://" + s.proxy.ln.addr
}

// closeProxy stops the proxy, if it started, and ends its tunnels.
func (s *Server) closeProxy() {
	s.proxyMu.Lock()
	p := s.proxy
	s.proxyMu.Unlock()
	if p == nil {
		return
	}
	p.ln.close()
	p.fwd.CloseIdleConnections()
	p.mu.Lock()
	p.closed = true
	for c := range p.tunnels {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// proxy is the emulator's HTTP proxy (see [Server.ProxyURL]).
type proxy struct {
	srv    *Server
	ln     *listener
	dialer net.Dialer
	fwd    *http.Transport // plain HTTP forwarding, to the emulator's listeners only

	mu      sync.Mutex
	closed  bool
	tunnels map[net.Conn]struct{} // both ends of every open tunnel
}

// proxyRefusal is why the proxy does not route a request.
type proxyRefusal struct {
	status int
	msg    string
}

// proxiedHosts describes what the proxy routes, for refusal messages.
const proxiedHosts = "it routes only CONNECT <vault>.vault.azure.net:443 (also .vault.azure.cn, .vault.usgovcloudapi.net), " +
	"CONNECT login.microsoftonline.com:443 (also login.windows.net, login.chinacloudapi.cn, login.microsoftonline.us), " +
	"CONNECT " + emuinfo.EventGridHost + ":443 (Event Grid's validation URLs) and " +
	"http://169.254.169.254 (IMDS) to the emulator; it is not an open proxy"

// proxyTarget returns the emulator listener that hostport reaches through the proxy: a
// tunnel (CONNECT) when tunnel, else a forwarded plain HTTP request. It never returns an
// address other than one of the emulator's own listeners.
func (s *Server) proxyTarget(hostport string, tunnel bool) (string, *proxyRefusal) {
	refuse := func(format string, a ...any) (string, *proxyRefusal) {
		return "", &proxyRefusal{http.StatusForbidden, "kvtest proxy: refusing " + fmt.Sprintf(format, a...) + ": " + proxiedHosts + ".\n"}
	}
	what := "CONNECT " + hostport
	if !tunnel {
		what = "http://" + hostport
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || port == "" {
		return refuse("%s (not host:port)", what)
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case h == "169.254.169.254":
		if port != "80" {
			return refuse("%s (IMDS listens on port 80 only)", what)
		}
		return s.imds.addr, nil
	case cloud.IsAuthorityHost(h) || h == emuinfo.LegacyAuthorityHost:
		if !tunnel {
			return refuse("%s (Entra ID is HTTPS only: use https://%s)", what, h)
		}
		if port != "443" {
			return refuse("%s (Entra ID listens on port 443 only)", what)
		}
		return s.entra.addr, nil
	case h == emuinfo.EventGridHost:
		if !tunnel {
			return refuse("%s (Event Grid's validation URLs are HTTPS only: use https://%s)", what, h)
		}
		if port != "443" {
			return refuse("%s (Event Grid listens on port 443 only)", what)
		}
		return s.entra.addr, nil
	case emuinfo.VaultSuffix(h) != "":
		if !tunnel {
			return refuse("%s (Key Vault is HTTPS only: use https://%s)", what, h)
		}
		if port != "443" {
			return refuse("%s (Key Vault listens on port 443 only)", what)
		}
		addr, ok := s.vaultAddr(h)
		if !ok {
			return "", &proxyRefusal{http.StatusBadGateway, fmt.Sprintf(
				"kvtest proxy: no such host %s: the emulator has no vault %s (it has %s).\n", h, h, strings.Join(s.vaultHosts(), ", "))}
		}
		return addr, nil
	}
	// The emulator's own listeners, named by their loopback address, for clients that
	// proxy loopback too (Python's requests without NO_PROXY, for IDENTITY_ENDPOINT).
	if h == "127.0.0.1" || h == "localhost" {
		own := []string{s.appService.addr, s.imds.addr}
		if tunnel {
			own = append(own, s.entra.addr)
			for _, v := range s.Vaults() {
				own = append(own, v.ln.addr)
			}
		}
		if addr := "127.0.0.1:" + port; slices.Contains(own, addr) {
			return addr, nil
		}
		return refuse("%s (not one of the emulator's listeners)", what)
	}
	return refuse("%s", what)
}

// vaultHosts returns the production hosts of the server's vaults, sorted.
func (s *Server) vaultHosts() []string {
	var out []string
	for _, v := range s.Vaults() {
		out = append(out, v.host)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

func (p *proxy) refuse(w http.ResponseWriter, r *proxyRefusal) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Connection", "close")
	w.WriteHeader(r.status)
	_, _ = io.WriteString(w, r.msg)
}

// ServeHTTP implements http.Handler: CONNECT tunnels and absolute-form plain HTTP requests.
func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		p.connect(w, r)
	case r.URL.IsAbs():
		p.forward(w, r)
	default:
		p.refuse(w, &proxyRefusal{http.StatusBadRequest,
			"kvtest proxy: this is an HTTP proxy (CONNECT host:443, or GET http://169.254.169.254/...); " +
				"set HTTPS_PROXY and HTTP_PROXY to its URL instead of requesting it.\n"})
	}
}

// connect tunnels a CONNECT to the emulator's listener for the requested host.
func (p *proxy) connect(w http.ResponseWriter, r *http.Request) {
	addr, no := p.srv.proxyTarget(r.Host, true)
	if no != nil {
		p.srv.cfg.logger.Info("proxy refused", "connect", r.Host, "status", no.status)
		p.refuse(w, no)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	up, err := p.dialer.DialContext(ctx, "tcp", addr)
	cancel()
	if err != nil {
		p.refuse(w, &proxyRefusal{http.StatusBadGateway, fmt.Sprintf("kvtest proxy: CONNECT %s: %v\n", r.Host, err)})
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = up.Close()
		p.refuse(w, &proxyRefusal{http.StatusHTTPVersionNotSupported, "kvtest proxy: CONNECT needs HTTP/1.1.\n"})
		return
	}
	down, rw, err := hj.Hijack()
	if err != nil {
		_ = up.Close()
		return
	}
	if !p.track(down, up) {
		return
	}
	p.srv.cfg.logger.Info("proxy tunnel", "connect", r.Host, "to", addr)
	go p.splice(down, rw.Reader, up)
}

// track records a tunnel's two connections so Close can end them; it closes both and
// returns false if the proxy is closed.
func (p *proxy) track(down, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = down.Close()
		_ = up.Close()
		return false
	}
	p.tunnels[down] = struct{}{}
	p.tunnels[up] = struct{}{}
	return true
}

// splice answers 200 to the CONNECT and copies bytes both ways until both sides are done.
func (p *proxy) splice(down net.Conn, buffered *bufio.Reader, up net.Conn) {
	defer func() {
		_ = down.Close()
		_ = up.Close()
		p.mu.Lock()
		delete(p.tunnels, down)
		delete(p.tunnels, up)
		p.mu.Unlock()
	}()
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst net.Conn, src io.Reader) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	// Bytes the client sent right after the CONNECT (a TLS ClientHello) may sit in the
	// server's read buffer: read through it.
	go pipe(up, io.MultiReader(io.LimitReader(buffered, int64(buffered.Buffered())), down))
	go pipe(down, up)
	<-done
	<-done
}

// hopHeaders are the hop-by-hop headers a proxy does not pass on (RFC 9110, 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// forward passes a plain HTTP request (GET http://169.254.169.254/...) to the emulator's
// listener for its host. It adds no X-Forwarded-For or Via: IMDS refuses requests with
// X-Forwarded-For, and the emulator's answers are what the client would get directly.
func (p *proxy) forward(w http.ResponseWriter, r *http.Request) {
	if r.URL.Scheme != "http" {
		p.refuse(w, &proxyRefusal{http.StatusBadRequest, "kvtest proxy: only http:// URLs are forwarded; https goes through CONNECT.\n"})
		return
	}
	hostport := r.URL.Host
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "80")
	}
	addr, no := p.srv.proxyTarget(hostport, false)
	if no != nil {
		p.srv.cfg.logger.Info("proxy refused", "url", r.URL.Scheme+"://"+r.URL.Host, "status", no.status)
		p.refuse(w, no)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), r.Body)
	if err != nil {
		p.refuse(w, &proxyRefusal{http.StatusBadRequest, fmt.Sprintf("kvtest proxy: %v\n", err)})
		return
	}
	out.Host = r.Host
	if out.Host == "" {
		out.Host = r.URL.Host
	}
	out.ContentLength = r.ContentLength
	if r.ContentLength == 0 {
		out.Body = nil
	}
	out.Header = r.Header.Clone()
	removeHopHeaders(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // send none rather than Go's
	}
	resp, err := p.fwd.RoundTrip(out)
	if err != nil {
		p.refuse(w, &proxyRefusal{http.StatusBadGateway, fmt.Sprintf("kvtest proxy: %s: %v\n", r.URL.Redacted(), err)})
		return
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
