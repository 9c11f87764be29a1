package viperkv

// Helpers the tests of both packages share: package viperkv_test reaches these exported
// names because this file is compiled into the package under test (and only then).

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

// YAMLViper returns a Viper holding the YAML document doc, as an app reads its config.
func YAMLViper(t *testing.T, doc string) *viper.Viper {
	t.Helper()
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(doc)); err != nil {
		t.Fatal(err)
	}
	return v
}

// StatusOf returns p's status row for key, failing the test when there is none.
func StatusOf(t *testing.T, p *Provider, key string) ReferenceStatus {
	t.Helper()
	for _, st := range p.Status() {
		if st.Key == key {
			return st
		}
	}
	t.Fatalf("no status for key %q in %+v", key, p.Status())
	return ReferenceStatus{}
}

// LeakCheck gathers what a provider shows people (statuses, errors, events, the masked
// view, logs) and checks that a secret value appears nowhere in it.
type LeakCheck struct {
	texts []string
}

// Status adds p's status rows.
func (c *LeakCheck) Status(p *Provider) {
	for _, st := range p.Status() {
		c.texts = append(c.texts, fmt.Sprintf("%+v", st))
	}
}

// Err adds err, if any, as text and in detail.
func (c *LeakCheck) Err(err error) {
	if err != nil {
		c.texts = append(c.texts, err.Error(), fmt.Sprintf("%+v", err))
	}
}

// Events adds everything an event shows.
func (c *LeakCheck) Events(evs []Event) {
	for _, e := range evs {
		c.texts = append(c.texts, e.String(), strings.Join(e.Keys, ","), e.Secret.String(), e.OldVersion, e.NewVersion)
		c.Err(e.Err)
	}
}

// Check adds p's masked view and the logs, and fails the test if sentinel appears in any
// text gathered. The logs must mention each of mention, or the check would prove nothing.
func (c *LeakCheck) Check(t *testing.T, p *Provider, sentinel, logs string, mention ...string) {
	t.Helper()
	for _, m := range mention {
		if !strings.Contains(logs, m) {
			t.Fatalf("the logs do not mention %q; the check would prove nothing:\n%s", m, logs)
		}
	}
	texts := append(c.texts, fmt.Sprint(p.MaskedSettings()))
	for _, text := range append(texts, strings.Split(logs, "\n")...) {
		if strings.Contains(text, sentinel) {
			t.Errorf("the secret value leaks: %s", text)
		}
	}
}

// ContainsLine is containsLine, for the external tests.
var ContainsLine = containsLine
