package kvtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/viperkv/viperkv/internal/cloud"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// tlsDNSNames returns the names the emulator's one leaf certificate is valid for: every
// vault and the Entra ID host of each cloud, login.windows.net (the authority Key Vault's
// challenges name), and the host of Event Grid's validation URLs, so clients keep
// production URLs.
func tlsDNSNames() []string {
	names := []string{emuinfo.EventGridHost, emuinfo.LegacyAuthorityHost, "localhost"}
	for _, c := range cloud.All() {
		names = append(names, "*."+c.VaultSuffix, c.AuthorityHost)
	}
	return names
}

// pki is the emulator's certificate authority and the leaf certificate it issued.
type pki struct {
	caPEM []byte
	pool  *x509.CertPool
	leaf  tls.Certificate
}

func newPKI() (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kvtest: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "kvtest emulator CA", Organization: []string{"viperkv kvtest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("kvtest: CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("kvtest: CA certificate: %w", err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kvtest: leaf key: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "*.vault.azure.net", Organization: []string{"viperkv kvtest"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(397 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     tlsDNSNames(),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("kvtest: leaf certificate: %w", err)
	}
	leafCert, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, fmt.Errorf("kvtest: leaf certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &pki{
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pool:  pool,
		leaf:  tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey, Leaf: leafCert},
	}, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(err)
	}
	return n
}

// connKey is the context key under which every listener stores the request's connection,
// so a Reset fault can close it even over HTTP/2, where Hijack is not available.
type connKey struct{}

func saveConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// resetConn closes the request's TCP connection with an RST and aborts the handler.
func resetConn(r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0) // linger 0 makes Close send RST instead of FIN
	}
	if c != nil {
		_ = c.Close()
	}
	panic(http.ErrAbortHandler)
}

// listener is one running HTTP(S) server of the emulator.
type listener struct {
	hs   *http.Server
	ln   net.Listener
	addr string // 127.0.0.1:PORT
}

// close stops the server and its port. The listener is closed here too: a Close that comes
// before the serving goroutine has started would otherwise leave the port accepting
// connections into its backlog, so a client would find a stopped emulator still there.
func (l *listener) close() {
	_ = l.hs.Close()
	_ = l.ln.Close()
}

// listen starts h on a fresh loopback port, over TLS (HTTP/2 and HTTP/1.1) when tlsOn.
func (s *Server) listen(h http.Handler, tlsOn bool) (*listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("kvtest: listen: %w", err)
	}
	hs := &http.Server{
		Handler:           h,
		ConnContext:       saveConn,
		ErrorLog:          s.cfg.errorLog,
		ReadHeaderTimeout: 30 * time.Second,
	}
	l := &listener{hs: hs, ln: ln, addr: ln.Addr().String()}
	if tlsOn {
		hs.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{s.pki.leaf},
			NextProtos:   []string{"h2", "http/1.1"},
			MinVersion:   tls.VersionTLS12,
		}
		// Tests send thousands of concurrent requests on few connections.
		hs.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
		go func() { _ = hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { _ = hs.Serve(ln) }()
	}
	return l, nil
}
