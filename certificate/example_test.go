package certificate_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/certificate"
	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/certtest"
	"github.com/viperkv/viperkv/kvtest"
)

// An HTTPS server whose certificate is a Key Vault certificate's secret, on the emulator.
func ExampleNew() {
	srv := kvtest.NewServer()
	defer srv.Close()
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	cert := certtest.New(nil, certtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, EC: true})
	kv.SetSecret("web-tls", cert.PKCS12(), kvtest.WithContentType(certparse.ContentTypePKCS12))

	v := viper.New()
	v.SetConfigType("yaml")
	_ = v.ReadConfig(strings.NewReader(`tls: "@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/web-tls/)"`))
	p, err := viperkv.New(v, viperkv.WithEmulator(srv))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	if err := p.Load(context.Background()); err != nil {
		panic(err)
	}

	certs, err := certificate.New(p, "tls")
	if err != nil {
		panic(err)
	}
	defer certs.Close()
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }))
	web.TLS = &tls.Config{GetCertificate: certs.GetCertificate}
	web.StartTLS()
	defer web.Close()

	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf()) // the client trusts the certificate's issuer (here, itself)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	resp, err := c.Get(web.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	fmt.Println("served with", resp.TLS.PeerCertificates[0].Subject.CommonName)
	// Output: served with localhost
}
