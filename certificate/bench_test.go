package certificate_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/viperkv/viperkv/certificate"
)

// handshake runs one TLS handshake over an in-memory connection.
func handshake(b *testing.B, server, client *tls.Config) {
	c, s := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- tls.Server(s, server).Handshake()
	}()
	cl := tls.Client(c, client)
	if err := cl.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	c.Close() // the raw pipe: a TLS close_notify would wait for a reader
	s.Close()
}

// BenchmarkTLSHandshake compares a server handshake with a static certificate and with the
// hot-swapped one (GetCertificate reading an atomic pointer), alternating them in one loop
// so that both see the same machine: ratio is hot-swapped time over static time.
func BenchmarkTLSHandshake(b *testing.B) {
	rig := newTLSRig(b, 0)
	certs, err := certificate.New(rig.p, "server.tls")
	if err != nil {
		b.Fatal(err)
	}
	defer certs.Close()
	client := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
	static := &tls.Config{Certificates: []tls.Certificate{*certs.Certificate("server.tls")}}
	swapped := &tls.Config{GetCertificate: certs.GetCertificate}
	var staticTime, swappedTime time.Duration
	for b.Loop() {
		start := time.Now()
		handshake(b, static, client)
		mid := time.Now()
		handshake(b, swapped, client)
		staticTime += mid.Sub(start)
		swappedTime += time.Since(mid)
	}
	b.ReportMetric(float64(staticTime.Nanoseconds())/float64(b.N), "static-ns/handshake")
	b.ReportMetric(float64(swappedTime.Nanoseconds())/float64(b.N), "swapped-ns/handshake")
	b.ReportMetric(float64(swappedTime)/float64(staticTime), "ratio")
}
