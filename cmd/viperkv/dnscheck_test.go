package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// dnsServer is a recursive name server in miniature, on loopback UDP: it answers A and
// AAAA queries with the CNAME chain from the name asked and the last name's addresses,
// and CNAME queries with the one CNAME record, as a resolver that recursed would.
type dnsServer struct {
	cname map[string]string       // name -> target, names without the final dot
	addrs map[string][]netip.Addr // name -> addresses

	mu      sync.Mutex
	queries []string // "TypeA name", in order
}

// startDNS serves s on a loopback UDP port and returns a dial function for a
// net.Resolver that asks it alone.
func startDNS(t *testing.T, s *dnsServer) dialFunc {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := s.answer(buf[:n]); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
	addr := pc.LocalAddr().String()
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}
}

func (s *dnsServer) asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.queries)
}

func (s *dnsServer) answer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	s.mu.Lock()
	s.queries = append(s.queries, q.Type.String()+" "+name)
	s.mu.Unlock()

	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	var answers []dnsmessage.Resource
	rr := func(owner string, typ dnsmessage.Type, body dnsmessage.ResourceBody) {
		answers = append(answers, dnsmessage.Resource{Header: dnsmessage.ResourceHeader{
			Name: dnsmessage.MustNewName(owner + "."), Type: typ, Class: dnsmessage.ClassINET, TTL: 60}, Body: body})
	}
	_, known := s.addrs[name]
	_, aliased := s.cname[name]
	switch {
	case !known && !aliased:
		rh.RCode = dnsmessage.RCodeNameError
	case q.Type == dnsmessage.TypeCNAME:
		if target, ok := s.cname[name]; ok {
			rr(name, dnsmessage.TypeCNAME, &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target + ".")})
		}
	case q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeAAAA:
		at := name
		for range 10 {
			target, ok := s.cname[at]
			if !ok {
				break
			}
			rr(at, dnsmessage.TypeCNAME, &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target + ".")})
			at = target
		}
		for _, a := range s.addrs[at] {
			switch {
			case a.Is4() && q.Type == dnsmessage.TypeA:
				rr(at, dnsmessage.TypeA, &dnsmessage.AResource{A: a.As4()})
			case a.Is6() && q.Type == dnsmessage.TypeAAAA:
				rr(at, dnsmessage.TypeAAAA, &dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil
	}
	for _, a := range answers {
		var err error
		switch body := a.Body.(type) {
		case *dnsmessage.CNAMEResource:
			err = b.CNAMEResource(a.Header, *body)
		case *dnsmessage.AResource:
			err = b.AResource(a.Header, *body)
		case *dnsmessage.AAAAResource:
			err = b.AAAAResource(a.Header, *body)
		}
		if err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// azureDNS is DNS as Azure's public resolvers and a linked private zone answer it: a vault
// with a private endpoint is a CNAME of <vault>.privatelink.vaultcore.azure.net, which
// public DNS points at the vault's public front end, and a linked private zone at the
// endpoint's private address.
func azureDNS() *dnsServer {
	return &dnsServer{
		cname: map[string]string{
			// A private endpoint, but the zone is not linked: public DNS answers.
			"unlinked.vault.azure.net":                 "unlinked.privatelink.vaultcore.azure.net",
			"unlinked.privatelink.vaultcore.azure.net": "data-prod-weu.vaultcore.azure.net",
			"data-prod-weu.vaultcore.azure.net":        "data-prod-weu-region.cloudapp.azure.net",
			// A private endpoint and a linked zone: the private address.
			"linked.vault.azure.net": "linked.privatelink.vaultcore.azure.net",
			// No private endpoint: public, as the vault is meant to be.
			"public.vault.azure.net": "data-prod-weu.vaultcore.azure.net",
			// US Government, unlinked, on IPv6 as well.
			"gov.vault.usgovcloudapi.net":                 "gov.privatelink.vaultcore.usgovcloudapi.net",
			"gov.privatelink.vaultcore.usgovcloudapi.net": "data-prod-usgv.vaultcore.usgovcloudapi.net",
			// Another vault's private name in the chain says nothing of this one.
			"other.vault.azure.net":                   "someone.privatelink.vaultcore.azure.net",
			"someone.privatelink.vaultcore.azure.net": "data-prod-weu.vaultcore.azure.net",
			// A CNAME loop ends.
			"loop.vault.azure.net":                 "loop.privatelink.vaultcore.azure.net",
			"loop.privatelink.vaultcore.azure.net": "loop.vault.azure.net",
		},
		addrs: map[string][]netip.Addr{
			"data-prod-weu-region.cloudapp.azure.net":    addrs("20.38.1.2"),
			"linked.privatelink.vaultcore.azure.net":     addrs("10.1.2.3"),
			"data-prod-usgv.vaultcore.usgovcloudapi.net": addrs("52.227.1.2", "2001:db8::7"),
		},
	}
}

// check's DNS diagnosis warns for exactly the hosts whose chain goes through their
// vault's privatelink name and that resolve to a public address, naming the address, the
// zone and the fix; a host that does not resolve, a loop, a vault without a private
// endpoint and one whose private zone answers get nothing.
func TestDNSDiagnosis(t *testing.T) {
	t.Parallel()
	s := azureDNS()
	r := startDNS(t, s)
	hosts := []string{"unlinked.vault.azure.net", "linked.vault.azure.net", "public.vault.azure.net", "gov.vault.usgovcloudapi.net",
		"other.vault.azure.net", "loop.vault.azure.net", "missing.vault.azure.net"}
	got := diagnoseVaultDNS(context.Background(), r, hosts)
	if len(got) != 2 {
		t.Fatalf("%d warnings, want 2 (unlinked, gov): %+v\nqueries: %v", len(got), got, s.asked())
	}
	w := got[0]
	if w.Host != "unlinked.vault.azure.net" || !slices.Equal(w.Addresses, []string{"20.38.1.2"}) || w.Zone != "privatelink.vaultcore.azure.net" ||
		!slices.Equal(w.Chain, []string{"unlinked.privatelink.vaultcore.azure.net", "data-prod-weu.vaultcore.azure.net", "data-prod-weu-region.cloudapp.azure.net"}) {
		t.Errorf("unlinked: %+v", w)
	}
	want := "resolves to the public address 20.38.1.2 through unlinked.privatelink.vaultcore.azure.net: the vault has a private endpoint, " +
		"but this network's DNS does not answer unlinked.privatelink.vaultcore.azure.net with its private address (the private DNS zone " +
		"privatelink.vaultcore.azure.net is not linked to this network); link the zone to the app's virtual network, or forward your DNS " +
		"servers to Azure DNS (168.63.129.16) from inside it"
	if w.Warning != want {
		t.Errorf("warning\n%q\nwant\n%q", w.Warning, want)
	}
	g := got[1]
	if g.Host != "gov.vault.usgovcloudapi.net" || g.Zone != "privatelink.vaultcore.usgovcloudapi.net" ||
		!slices.Equal(g.Addresses, []string{"2001:db8::7", "52.227.1.2"}) || !strings.Contains(g.Warning, "the private DNS zone privatelink.vaultcore.usgovcloudapi.net") {
		t.Errorf("gov: %+v", g)
	}

	var out bytes.Buffer
	if err := writeDNSWarnings(&out, got); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "\n2 DNS warning(s):\n  unlinked.vault.azure.net: resolves to the public address 20.38.1.2 through ") {
		t.Errorf("printed:\n%s", out.String())
	}
	if out.Reset(); writeDNSWarnings(&out, nil) != nil || out.Len() != 0 {
		t.Errorf("no warnings printed %q", out.String())
	}
}

// The diagnosis asks DNS and nothing else: with every vault it looks at served by an
// emulator, the emulator sees no token request, no challenge and no request at all, while
// the name server sees the lookups.
func TestDNSDiagnosisSendsNothingToTheVault(t *testing.T) {
	t.Parallel()
	srv := kvtest.NewServerT(t)
	for _, v := range []string{"unlinked", "linked", "public"} {
		kv := srv.AddVault(v)
		kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
		kv.SetSecret("s", "DNS-SENTINEL-0c4e")
	}
	srv.ResetCounters()
	s := azureDNS()
	got := diagnoseVaultDNS(context.Background(), startDNS(t, s), []string{"unlinked.vault.azure.net", "linked.vault.azure.net", "public.vault.azure.net"})
	if len(got) != 1 || got[0].Host != "unlinked.vault.azure.net" {
		t.Errorf("warnings %+v, want one for unlinked", got)
	}
	for _, op := range []kvtest.Op{kvtest.OpToken, kvtest.OpChallenge, kvtest.OpUnauthorized, kvtest.OpGetSecret, kvtest.OpListSecrets,
		kvtest.OpForbidden, kvtest.OpNetworkDenied, kvtest.OpDiscovery} {
		if n := srv.Count(op); n != 0 {
			t.Errorf("the emulator counted %d %s during the DNS diagnosis, want none", n, op)
		}
	}
	// The chain comes with the answers to A and AAAA: those are all it asks (a search
	// domain of this machine's resolv.conf may add names of its own).
	asked := s.asked()
	for _, h := range []string{"unlinked.vault.azure.net", "linked.vault.azure.net", "public.vault.azure.net"} {
		for _, q := range []string{"TypeA " + h, "TypeAAAA " + h} {
			if !slices.Contains(asked, q) {
				t.Errorf("the name server was not asked %q", q)
			}
		}
	}
	for _, q := range asked {
		if !strings.HasPrefix(q, "TypeA ") && !strings.HasPrefix(q, "TypeAAAA ") {
			t.Errorf("the name server was asked %q: want A and AAAA queries only", q)
		}
	}
}

// Only the hosts of vaults of a known cloud are looked up: not a host the provider refused
// or a reference that did not parse.
func TestVaultHosts(t *testing.T) {
	t.Parallel()
	st := func(vault string, s viperkv.Status) viperkv.ReferenceStatus {
		return viperkv.ReferenceStatus{Reference: viperkv.Reference{Vault: vault}, Status: s}
	}
	got := vaultHosts([]viperkv.ReferenceStatus{
		st("b.vault.azure.net", viperkv.StatusForbiddenByConnection),
		st("A.vault.azure.net", viperkv.StatusResolved),
		st("b.vault.azure.net", viperkv.StatusResolved),
		st("x.vault.azure.net.evil.test", viperkv.StatusHostNotAllowed),
		st("kv.internal.example", viperkv.StatusResolved),
		st("", viperkv.StatusInvalidSyntax),
	}, []viperkv.VaultSourceStatus{{Vault: "c.vault.azure.cn"}})
	if want := []string{"a.vault.azure.net", "b.vault.azure.net", "c.vault.azure.cn"}; !slices.Equal(got, want) {
		t.Errorf("vaultHosts = %v, want %v", got, want)
	}
}

// Private endpoint addresses: RFC 1918, RFC 4193, the shared address space; the rest is
// public.
func TestPrivateAddr(t *testing.T) {
	t.Parallel()
	for a, want := range map[string]bool{
		"10.1.2.3": true, "172.16.0.4": true, "192.168.1.1": true, "100.64.0.9": true, "fd00::1": true, "127.0.0.1": true,
		"::ffff:10.0.0.1": true, "169.254.1.1": true,
		"20.38.1.2": false, "52.227.1.2": false, "2603:1030::1": false, "100.128.0.1": false,
	} {
		if got := privateAddr(netip.MustParseAddr(a)); got != want {
			t.Errorf("privateAddr(%s) = %v, want %v", a, got, want)
		}
	}
}

// The observer reads only answers to the query it saw, as Go's resolver does: a datagram
// with another ID, a question of its own or no response bit is not read, and names that
// are not host names (the network's bytes, bound for the output) are not recorded.
func TestDNSObserverReadsOnlyAnswers(t *testing.T) {
	t.Parallel()
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("v.vault.azure.net."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	answer := func(id uint16, response bool, question dnsmessage.Question, owner, target string) []byte {
		m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, Response: response}, Questions: []dnsmessage.Question{question},
			Answers: []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(owner), Type: dnsmessage.TypeCNAME,
				Class: dnsmessage.ClassINET}, Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target)}}}}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other := q
	other.Name = dnsmessage.MustNewName("w.vault.azure.net.")
	o := &dnsObserver{cname: map[string]string{}}
	o.record(7, q, answer(8, true, q, "v.vault.azure.net.", "forged.example."))
	o.record(7, q, answer(7, false, q, "v.vault.azure.net.", "forged.example."))
	o.record(7, q, answer(7, true, other, "v.vault.azure.net.", "forged.example."))
	o.record(7, q, answer(7, true, q, "v.vault.azure.net.", "bad\x1b[31m.example."))
	o.record(7, q, []byte("not DNS"))
	if len(o.cname) != 0 {
		t.Errorf("recorded %v from answers to nothing asked, or names that are not host names", o.cname)
	}
	o.record(7, q, answer(7, true, q, "V.Vault.Azure.Net.", "v.privatelink.vaultcore.azure.net."))
	o.record(7, q, answer(7, true, q, "v.vault.azure.net.", "second.example."))
	if got := o.chain("v.vault.azure.net"); !slices.Equal(got, []string{"v.privatelink.vaultcore.azure.net"}) {
		t.Errorf("chain %v, want the first answer's link", got)
	}
}
