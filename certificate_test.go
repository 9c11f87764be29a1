package viperkv

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/viperkv/viperkv/internal/certparse"
	"github.com/viperkv/viperkv/internal/certtest"
	"github.com/viperkv/viperkv/internal/driver/memvault"
	"github.com/viperkv/viperkv/internal/logtest"
)

// keyBody is a line of a private key's PEM: what a leak of the key would show.
func keyBody(c *certtest.Issued) string { return strings.Split(c.KeyPEM(), "\n")[1] }

// TestCertificateNeverReplacedByAWorseOne: a certificate's secret (its content type says
// so) whose new version does not parse, has another certificate's key, is not valid yet,
// has expired, has a broken chain or is stored as something else is withheld: the key
// keeps the good certificate, the status says CertificateInvalid and why, one EventError
// names the key, and no key material of either version shows in logs, errors, statuses or
// events. A good new version then serves again.
func TestCertificateNeverReplacedByAWorseOne(t *testing.T) {
	synctest.Test(t, certificateNeverReplacedByAWorseOne)
}

func certificateNeverReplacedByAWorseOne(t *testing.T) {
	root := certtest.New(nil, certtest.Options{CommonName: "root", IsCA: true})
	good := certtest.New(root, certtest.Options{CommonName: "good.example"})
	other := certtest.New(root, certtest.Options{CommonName: "other.example"})
	stranger := certtest.New(nil, certtest.Options{CommonName: "stranger", IsCA: true})
	future := certtest.New(root, certtest.Options{CommonName: "future.example", NotBefore: time.Now().Add(time.Hour)})
	expired := certtest.New(root, certtest.Options{CommonName: "expired.example", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	mismatch := &certtest.Issued{Chain: good.Chain, Key: other.Key}
	broken := &certtest.Issued{Chain: []*x509.Certificate{good.Leaf(), stranger.Leaf()}, Key: good.Key}
	renewed := certtest.New(root, certtest.Options{CommonName: "good.example"})

	pkcs12 := memvault.ContentType(certparse.ContentTypePKCS12)
	pemType := memvault.ContentType(certparse.ContentTypePEM)
	src := newFakeSource()
	src.set("myvault", "tls", good.PKCS12(), pkcs12)
	var logs logtest.Buffer
	p := loadFake(t, src, "server:\n  tls: \"@KeyVault(VaultName=myvault;SecretName=tls)\"\n",
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	rec := record(p)
	ctx := context.Background()
	if got := p.GetString("server.tls"); got != good.PKCS12() {
		t.Fatal("the good certificate was not served")
	}
	var seen strings.Builder
	for _, tc := range []struct {
		name  string
		value string
		opt   memvault.SecretOption
		want  string
	}{
		{"does not parse", "not a certificate", pkcs12, "not base64 PKCS#12"},
		{"another certificate's key", mismatch.PEM(), pemType, "the private key does not match"},
		{"not valid yet", future.PEM(), pemType, "is not valid before"},
		{"expired", expired.PKCS12(), pkcs12, "expired at"},
		{"broken chain", broken.PEM(), pemType, "broken chain"},
		{"stored as something else", other.PEM(), memvault.ContentType("text/plain"), `has content type "text/plain", not a certificate's`},
	} {
		before := len(rec.all(EventError))
		version := src.set("myvault", "tls", tc.value, tc.opt)
		err := p.Refresh(ctx)
		if got := p.GetString("server.tls"); got != good.PKCS12() {
			t.Errorf("%s: the good certificate was replaced", tc.name)
		}
		st := p.Status()[0]
		if st.Status != StatusCertificateInvalid || !strings.Contains(st.Reason, tc.want) || !strings.Contains(st.Reason, version) || !st.HasValue {
			t.Errorf("%s: status %s %q (has value %v), want CertificateInvalid naming version %s and %q", tc.name, st.Status, st.Reason, st.HasValue, version, tc.want)
		}
		synctest.Wait() // the watchers have had the events
		errs := rec.all(EventError)
		if len(errs) != before+1 || !slices.Contains(errs[len(errs)-1].Keys, "server.tls") || !strings.Contains(fmt.Sprint(errs[len(errs)-1].Err), tc.want) {
			t.Errorf("%s: %d new error events, want one naming server.tls and the reason", tc.name, len(errs)-before)
		} else if c := errs[len(errs)-1].Certificate; c == nil || c.Serial != good.Leaf().SerialNumber.Text(16) || c.Subject != "CN=good.example" {
			t.Errorf("%s: the error event describes certificate %v, want the good one it keeps", tc.name, c)
		}
		if c := st.Certificate; c == nil || c.Serial != good.Leaf().SerialNumber.Text(16) {
			t.Errorf("%s: the status describes certificate %v, want the good one it keeps", tc.name, c)
		}
		for _, e := range rec.all() {
			fmt.Fprintf(&seen, "%v %v\n", e, e.Err)
		}
		fmt.Fprintf(&seen, "%v %s %v\n", err, st.Reason, st)
		src.heal("myvault", "tls")
		// Back to the good version for the next case, so each refusal is judged against it.
		src.set("myvault", "tls", good.PKCS12(), pkcs12)
		if err := p.Refresh(ctx); err != nil {
			t.Fatalf("%s: back to the good certificate: %v", tc.name, err)
		}
	}
	src.set("myvault", "tls", renewed.PEM(), pemType)
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.GetString("server.tls"); got != renewed.PEM() || p.Status()[0].Status != StatusResolved {
		t.Error("a good renewal was not served")
	}
	synctest.Wait()
	changed := rec.all(EventChanged)
	if c := changed[len(changed)-1]; c.Certificate == nil || c.Certificate.Serial != renewed.Leaf().SerialNumber.Text(16) ||
		c.Certificate.DaysLeft(c.Time) < 0 || !strings.Contains(c.String(), "serial "+c.Certificate.Serial) {
		t.Errorf("the renewal's event %v describes certificate %v, want the renewed one", c, c.Certificate)
	}
	all := seen.String() + logs.String()
	for _, c := range []*certtest.Issued{good, other, future, expired, renewed} {
		if strings.Contains(all, keyBody(c)) {
			t.Errorf("key material of %s shows in errors, statuses or logs", c.Leaf().Subject.CommonName)
		}
	}
	if !strings.Contains(logs.String(), "CertificateInvalid") {
		t.Errorf("no log line says CertificateInvalid:\n%s", logs.String())
	}
}

// TestCertificateNearExpiryFromItsNotAfter: a certificate's secret whose version carries
// no expiry still warns before the certificate itself expires (a vault that forgot to
// renew is noticed before clients fail).
func TestCertificateNearExpiryFromItsNotAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		notAfter := time.Now().Add(3 * 24 * time.Hour).Truncate(time.Second)
		c := certtest.New(nil, certtest.Options{CommonName: "soon.example", NotAfter: notAfter})
		src := newFakeSource()
		src.set("myvault", "tls", c.PEM(), memvault.ContentType(certparse.ContentTypePEM)) // no exp attribute
		p := loadFake(t, src, "tls: \"@KeyVault(VaultName=myvault;SecretName=tls)\"\n", WithRefreshInterval(time.Hour))
		rec := record(p)
		startWatch(t, p)
		time.Sleep(time.Minute)
		synctest.Wait()
		e := rec.only(t, EventNearExpiry)
		if !e.Expires.Equal(notAfter) || !slices.Contains(e.Keys, "tls") {
			t.Errorf("near expiry event %v, want the certificate's NotAfter %v", e, notAfter)
		}
		if ci := e.Certificate; ci == nil || ci.Subject != "CN=soon.example" || ci.Serial != c.Leaf().SerialNumber.Text(16) ||
			!ci.NotAfter.Equal(notAfter) || ci.DaysLeft(e.Time) != 3 || !strings.Contains(e.String(), "(3 days left)") {
			t.Errorf("near expiry event %q describes certificate %v, want CN=soon.example, 3 days left", e, ci)
		}
	})
}

func TestCertificateInfoDaysLeft(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		notAfter time.Time
		want     int
	}{
		{now.Add(14 * 24 * time.Hour), 14},
		{now.Add(14*24*time.Hour - time.Second), 13},
		{now.Add(time.Hour), 0},
		{now, 0},
		{now.Add(-time.Hour), -1},
		{now.Add(-24 * time.Hour), -1},
		{now.Add(-25 * time.Hour), -2},
	} {
		if got := (CertificateInfo{NotAfter: tc.notAfter}).DaysLeft(now); got != tc.want {
			t.Errorf("DaysLeft with NotAfter now%+v = %d, want %d", tc.notAfter.Sub(now), got, tc.want)
		}
	}
}
