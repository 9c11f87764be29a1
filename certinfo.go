package viperkv

import (
	"crypto/x509"
	"fmt"
	"time"
)

// CertificateInfo describes the certificate a secret holds (Key Vault keeps every
// certificate, with its private key, in a secret of the same name): who it is for, which
// one it is and when it lapses. It never holds key material. For a CA bundle (certificates
// without a key) it describes the first certificate.
type CertificateInfo struct {
	Subject  string    // the leaf's subject, for example "CN=api.example.com,O=Contoso"
	Serial   string    // the leaf's serial number, in hex
	NotAfter time.Time // the end of the leaf's validity
}

// DaysLeft is the number of whole days from now until NotAfter (negative once expired).
func (c CertificateInfo) DaysLeft(now time.Time) int {
	d := c.NotAfter.Sub(now)
	if d < 0 {
		return -int((-d + 24*time.Hour - 1) / (24 * time.Hour))
	}
	return int(d / (24 * time.Hour))
}

// String describes the certificate in one line.
func (c CertificateInfo) String() string {
	return fmt.Sprintf("%s serial %s not after %s", c.Subject, c.Serial, c.NotAfter.UTC().Format(time.RFC3339))
}

func certificateInfo(c *x509.Certificate) *CertificateInfo {
	return &CertificateInfo{Subject: c.Subject.String(), Serial: c.SerialNumber.Text(16), NotAfter: c.NotAfter}
}
