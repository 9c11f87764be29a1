package memvault_test

import (
	"testing"
	"time"

	"github.com/viperkv/viperkv/internal/driver"
	"github.com/viperkv/viperkv/internal/driver/drivertest"
	"github.com/viperkv/viperkv/internal/driver/memvault"
)

const host = "myvault.vault.azure.net"

type harness struct{ m *memvault.Vaults }

func (h harness) Source() driver.Source { return h.m }
func (h harness) Vault() string         { return host }
func (h harness) Pages() int            { return h.m.Pages(host) }

func (h harness) Set(name, value string, a drivertest.Attrs) string {
	opts := []memvault.SecretOption{memvault.ContentType(a.ContentType), memvault.Tags(a.Tags)}
	if a.Expires != nil {
		opts = append(opts, memvault.Expires(*a.Expires))
	}
	if a.NotBefore != nil {
		opts = append(opts, memvault.NotBefore(*a.NotBefore))
	}
	return h.m.Set(host, name, value, opts...)
}

func (h harness) SetEnabled(name, version string, enabled bool) {
	if err := h.m.SetEnabled(host, name, version, enabled); err != nil {
		panic(err)
	}
}

func (h harness) Delete(name string) { h.m.Delete(host, name) }

func (h harness) Deny() {
	f := memvault.Fault{Status: 403, Code: "Forbidden", Inner: "ForbiddenByRbac"}
	h.m.FailGet(host, "", f)
	h.m.FailList(host, f)
}

// oid is the object id the in-memory vault's refusals name the caller by.
const oid = "0aa95430-9a7f-4c8e-8cf6-579278e68947"

func (h harness) Refuse(inner string) {
	f := memvault.Denied(inner, oid)
	h.m.FailGet(host, "", f)
	h.m.FailList(host, f)
}

func (h harness) fault(op drivertest.Op, f memvault.Fault) {
	if op == drivertest.OpList {
		h.m.FailList(host, f)
	} else {
		h.m.FailGet(host, "", f)
	}
}

func (h harness) Throttle(op drivertest.Op, times int, retryAfter time.Duration) {
	h.fault(op, memvault.Fault{Status: 429, RetryAfter: retryAfter, Times: times})
}

func (h harness) Fail(op drivertest.Op, status int)   { h.fault(op, memvault.Fault{Status: status}) }
func (h harness) Forge(op drivertest.Op, body string) { h.fault(op, memvault.Fault{Body: body}) }
func (h harness) Clear()                              { h.m.Clear(host, "") }

// The in-memory source passes the suite the Azure source passes on the emulator.
func TestConformance(t *testing.T) {
	drivertest.RunConformance(t, func(t *testing.T, o drivertest.Options) drivertest.Harness {
		var opts []memvault.Option
		if o.ShortPages {
			opts = append(opts, memvault.ShortPages())
		}
		return harness{memvault.New(opts...)}
	})
}
