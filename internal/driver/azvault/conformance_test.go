package azvault_test

import (
	"testing"
	"time"

	"github.com/viperkv/viperkv/internal/driver"
	"github.com/viperkv/viperkv/internal/driver/azvault"
	"github.com/viperkv/viperkv/internal/driver/drivertest"
	"github.com/viperkv/viperkv/kvtest"
)

type harness struct {
	srv *kvtest.Server
	kv  *kvtest.Vault
	src *azvault.Source
}

func (h harness) Source() driver.Source { return h.src }
func (h harness) Vault() string         { return h.kv.Host() }
func (h harness) Pages() int            { return int(h.kv.Count(kvtest.OpListSecrets)) }

func (h harness) Set(name, value string, a drivertest.Attrs) string {
	opts := []kvtest.SecretOption{kvtest.WithContentType(a.ContentType), kvtest.WithTags(a.Tags)}
	if a.Expires != nil {
		opts = append(opts, kvtest.WithExpires(*a.Expires))
	}
	if a.NotBefore != nil {
		opts = append(opts, kvtest.WithNotBefore(*a.NotBefore))
	}
	return h.kv.SetSecret(name, value, opts...)
}

func (h harness) SetEnabled(name, version string, enabled bool) {
	if err := h.kv.SetEnabled(name, version, enabled); err != nil {
		panic(err)
	}
}

func (h harness) Delete(name string) {
	if err := h.kv.DeleteSecret(name); err != nil {
		panic(err)
	}
}

func (h harness) Deny() { h.kv.Revoke(h.srv.SystemIdentity()) }

// Refuse sets the emulated vault up as Azure's that answers each refusal: no role, an
// access policy vault, a firewall, public network access disabled.
func (h harness) Refuse(inner string) {
	var na kvtest.NetworkAccess
	model := kvtest.PermissionRBAC
	h.kv.Grant(h.srv.SystemIdentity(), kvtest.RoleSecretsUser)
	switch inner {
	case driver.InnerForbiddenByRbac:
		h.kv.Revoke(h.srv.SystemIdentity())
	case driver.InnerForbiddenByPolicy:
		model = kvtest.PermissionAccessPolicy
		h.kv.Revoke(h.srv.SystemIdentity())
	case driver.InnerForbiddenByFirewall:
		na.FirewallDeny = true
	case driver.InnerForbiddenByConnection:
		na.PublicAccessDisabled = true
	}
	h.kv.SetPermissionModel(model)
	h.kv.SetNetworkAccess(na)
}

func (h harness) op(op drivertest.Op) kvtest.Op {
	if op == drivertest.OpList {
		return kvtest.OpListSecrets
	}
	return kvtest.OpGetSecret
}

func (h harness) Throttle(op drivertest.Op, times int, retryAfter time.Duration) {
	h.kv.InjectFault(h.op(op), kvtest.Fault{Status: 429, RetryAfter: retryAfter, Times: times})
}

func (h harness) Fail(op drivertest.Op, status int) {
	h.kv.InjectFault(h.op(op), kvtest.Fault{Status: status})
}

func (h harness) Forge(op drivertest.Op, body string) {
	h.kv.InjectFault(h.op(op), kvtest.Fault{Body: body})
}

func (h harness) Clear() { h.kv.ClearFaults() }

// The Azure source, with the real azsecrets and azidentity clients over HTTPS to the
// emulator, passes the suite the in-memory source passes.
func TestConformance(t *testing.T) {
	drivertest.RunConformance(t, func(t *testing.T, o drivertest.Options) drivertest.Harness {
		var opts []kvtest.Option
		if o.ShortPages {
			opts = append(opts, kvtest.WithShortPages())
		}
		srv := kvtest.NewServerT(t, opts...)
		kv := srv.AddVault("myvault")
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
		src, err := azvault.New(azvault.Config{Credential: srv.Credential(), Transport: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		return harness{srv: srv, kv: kv, src: src}
	})
}
