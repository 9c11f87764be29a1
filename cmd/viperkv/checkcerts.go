package main

import (
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/certparse"
)

// certInfo describes the certificate a reference resolved to (never its key).
type certInfo struct {
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
	// TooSoon: it expires within --min-validity.
	TooSoon bool `json:"expires_too_soon,omitempty"`
}

// certificates describes the certificate of each resolved reference whose secret is a
// certificate (by its content type), by config key: the leaf of a certificate with its
// key, or the first certificate of a CA bundle.
func certificates(status []viperkv.ReferenceStatus, resolved *viper.Viper, minValidity time.Duration, now time.Time) map[string]*certInfo {
	out := map[string]*certInfo{}
	for _, st := range status {
		if st.Status != viperkv.StatusResolved || !certparse.IsCertificate(st.ContentType) || !resolved.IsSet(st.Key) {
			continue
		}
		value := resolved.GetString(st.Key)
		var leaf *x509.Certificate
		if c, err := certparse.Parse(value, st.ContentType, now); err == nil {
			leaf = c.Leaf
		} else if _, certs, err := certparse.ParsePool(value); err == nil {
			leaf = certs[0]
		}
		if leaf == nil {
			continue // inside a longer string, or not one the provider judged
		}
		left := leaf.NotAfter.Sub(now)
		out[st.Key] = &certInfo{Subject: leaf.Subject.String(), Serial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter.UTC(),
			DaysLeft: int(math.Floor(left.Hours() / 24)), TooSoon: minValidity > 0 && left < minValidity}
	}
	return out
}

// writeCertificates prints a row per certificate: subject, expiry and days left.
func writeCertificates(out io.Writer, certs map[string]*certInfo, order []viperkv.ReferenceStatus, refs *envRefs) error {
	if len(certs) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tSUBJECT\tSERIAL\tNOT AFTER\tDAYS LEFT")
	for _, st := range order {
		c := certs[st.Key]
		if c == nil {
			continue
		}
		days := strconv.Itoa(c.DaysLeft)
		if c.TooSoon {
			days += " (too soon)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", refs.display(st.Key), c.Subject, c.Serial, c.NotAfter.Format(time.RFC3339), days)
	}
	return tw.Flush()
}

// parseMinValidity reads --min-validity: days ("14d") or a Go duration ("336h").
func parseMinValidity(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, usageError("--min-validity %q: want days (14d) or a duration (336h)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usageError("--min-validity %q: want days (14d) or a duration (336h)", s)
	}
	return d, nil
}
