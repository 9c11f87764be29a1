package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/cloud"
)

// The DNS diagnosis of check: a vault with a private endpoint has its host CNAMEd to
// <vault>.privatelink.vaultcore.azure.net (each cloud has its zone, internal/cloud), which
// a private DNS zone linked to the app's virtual network answers with the endpoint's
// private address. Where the zone is not linked, the same name resolves through public DNS
// to the vault's public address, and the vault, its public access disabled, answers 403
// ForbiddenByConnection. check says so, from DNS alone: it sends nothing to the vault.

// dnsTimeout bounds the whole diagnosis: a name server that does not answer must not hold
// check up for long.
const dnsTimeout = 5 * time.Second

// maxCNAMEs bounds a CNAME chain (real ones have three or four links): a loop ends there.
const maxCNAMEs = 8

// dialFunc dials a name server, as net.Resolver.Dial does.
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// dialNameServer dials the name server the system's configuration names.
func dialNameServer(ctx context.Context, network, address string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, network, address)
}

// dnsWarning is a vault host whose DNS goes through its private endpoint's name but ends
// at a public address.
type dnsWarning struct {
	Host string `json:"host"`
	// Chain is the CNAME chain from Host, in order.
	Chain []string `json:"cname_chain"`
	// Addresses are the public addresses Host resolves to.
	Addresses []string `json:"addresses"`
	// Zone is the private DNS zone that should answer for Host.
	Zone    string `json:"private_dns_zone"`
	Warning string `json:"warning"`
}

// vaultHosts returns the vault hosts of the configuration's references and vault sources
// that are vaults of a known cloud (only they have a privatelink zone), sorted.
func vaultHosts(status []viperkv.ReferenceStatus, sources []viperkv.VaultSourceStatus) []string {
	seen := map[string]bool{}
	add := func(h string) {
		h = strings.ToLower(h)
		if _, ok := cloud.ByVaultHost(h); ok && h != "" {
			seen[h] = true
		}
	}
	for _, st := range status {
		if st.Status != viperkv.StatusHostNotAllowed && st.Status != viperkv.StatusInvalidSyntax {
			add(st.Reference.Vault)
		}
	}
	for _, vs := range sources {
		add(vs.Vault)
	}
	out := make([]string, 0, len(seen))
	for h := range seen {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// diagnoseVaultDNS looks up each host's addresses with Go's resolver, through dial, and
// returns a warning for each host whose CNAME chain goes through its vault's name in a
// privatelink zone but which resolves to a public address. It sends nothing but DNS
// queries; a host that does not resolve gives no warning (its references say
// VaultNotFound).
func diagnoseVaultDNS(ctx context.Context, dial dialFunc, hosts []string) []dnsWarning {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	o := &dnsObserver{cname: map[string]string{}}
	r := o.resolver(dial)
	found := make([]*dnsWarning, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { found[i] = diagnoseHost(ctx, r, o, h) })
	}
	wg.Wait()
	var out []dnsWarning
	for _, w := range found {
		if w != nil {
			out = append(out, *w)
		}
	}
	return out
}

// diagnoseHost diagnoses one vault host; nil: nothing to say.
func diagnoseHost(ctx context.Context, r *net.Resolver, o *dnsObserver, host string) *dnsWarning {
	c, ok := cloud.ByVaultHost(host)
	if !ok {
		return nil
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	vault, _, _ := strings.Cut(host, ".")
	chain := o.chain(host)
	through := ""
	for _, name := range chain {
		// Any cloud's zone: a vault host of one cloud is not CNAMEd into another's, but
		// a chain that is says the same.
		for _, other := range cloud.All() {
			if name == vault+"."+other.PrivateLinkZone {
				through, c = name, other
			}
		}
	}
	if through == "" {
		return nil // no private endpoint: public access is the vault's own business
	}
	var public []string
	for _, a := range addrs {
		if !privateAddr(a) {
			public = append(public, a.Unmap().String())
		}
	}
	if len(public) == 0 {
		return nil // the private zone answers: the endpoint is reached
	}
	slices.Sort(public)
	public = slices.Compact(public)
	return &dnsWarning{Host: host, Chain: chain, Addresses: public, Zone: c.PrivateLinkZone,
		Warning: fmt.Sprintf("resolves to the public address %s through %s: the vault has a private endpoint, but this network's DNS "+
			"does not answer %s with its private address (the private DNS zone %s is not linked to this network); link the zone "+
			"to the app's virtual network, or forward your DNS servers to Azure DNS (168.63.129.16) from inside it",
			strings.Join(public, ", "), through, through, c.PrivateLinkZone)}
}

// dnsObserver records the CNAME records of the answers a resolver reads. Go's resolver
// reads a recursive name server's answer to A or AAAA, which holds every CNAME on the way
// to the addresses (RFC 1034 4.3.1), but keeps only the addresses; LookupCNAME gives the
// first link or the last name, whichever answer came first. The chain is read here.
type dnsObserver struct {
	mu    sync.Mutex
	cname map[string]string // owner -> target, as the first answer naming the owner said
}

// resolver returns Go's resolver, dialing through dial, with o reading its UDP answers.
// Answers over TCP (a truncated one retried) are not read: a CNAME chain fits in UDP.
func (o *dnsObserver) resolver(dial dialFunc) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		if pc, ok := c.(packetConn); ok {
			// Still a PacketConn: Go's resolver speaks datagrams to those, streams to others.
			return &observedConn{packetConn: pc, o: o}, nil
		}
		return c, nil
	}}
}

// chain follows the recorded CNAMEs from host, up to maxCNAMEs, stopping at a loop.
func (o *dnsObserver) chain(host string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var chain []string
	seen := map[string]bool{host: true}
	for name := host; len(chain) < maxCNAMEs; {
		next, ok := o.cname[name]
		if !ok || seen[next] {
			break
		}
		seen[next] = true
		chain = append(chain, next)
		name = next
	}
	return chain
}

// packetConn is a datagram connection, which Go's resolver sees as one.
type packetConn interface {
	net.Conn
	net.PacketConn
}

// observedConn hands the answers to the query written on it to its observer.
type observedConn struct {
	packetConn
	o     *dnsObserver
	id    uint16
	q     dnsmessage.Question
	asked bool
}

// Write notes the query, to read only the answers to it.
func (c *observedConn) Write(b []byte) (int, error) {
	var p dnsmessage.Parser
	if h, err := p.Start(b); err == nil {
		if q, err := p.Question(); err == nil {
			c.id, c.q, c.asked = h.ID, q, true
		}
	}
	return c.packetConn.Write(b)
}

// Read reads a datagram and records the CNAMEs of an answer to the query.
func (c *observedConn) Read(b []byte) (int, error) {
	n, err := c.packetConn.Read(b)
	if n > 0 && c.asked {
		c.o.record(c.id, c.q, b[:n])
	}
	return n, err
}

// record reads the CNAME records of msg, if it answers the query (id, q) as Go's
// resolver checks an answer: others (a late or forged datagram) are ignored. Names that
// are not host names are not recorded: they are the network's, and end up in the output.
func (o *dnsObserver) record(id uint16, q dnsmessage.Question, msg []byte) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || !h.Response || h.ID != id {
		return
	}
	aq, err := p.Question()
	if err != nil || aq.Type != q.Type || aq.Class != q.Class || !strings.EqualFold(aq.Name.String(), q.Name.String()) {
		return
	}
	if p.SkipAllQuestions() != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		rh, err := p.AnswerHeader()
		if err != nil {
			return
		}
		if rh.Type != dnsmessage.TypeCNAME {
			if p.SkipAnswer() != nil {
				return
			}
			continue
		}
		cn, err := p.CNAMEResource()
		if err != nil {
			return
		}
		owner, target := hostName(rh.Name), hostName(cn.CNAME)
		if _, seen := o.cname[owner]; owner != "" && target != "" && !seen {
			o.cname[owner] = target
		}
	}
}

// hostNameRE is a host name in lowercase, without the final dot.
var hostNameRE = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$`)

// hostName returns n in lowercase without its final dot, or "" if it is not a host name.
func hostName(n dnsmessage.Name) string {
	s := strings.ToLower(strings.TrimSuffix(n.String(), "."))
	if len(s) > 253 || !hostNameRE.MatchString(s) {
		return ""
	}
	return s
}

// cgnat is the shared address space (RFC 6598), which virtual networks may use privately.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// privateAddr reports whether a is an address a private endpoint may have: RFC 1918 or
// RFC 4193, the shared address space, loopback or link-local.
func privateAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || cgnat.Contains(a)
}

// writeDNSWarnings prints the DNS diagnosis's warnings, if any.
func writeDNSWarnings(out io.Writer, warnings []dnsWarning) error {
	if len(warnings) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "%d DNS warning(s):\n", len(warnings))
	for _, w := range warnings {
		if _, err := fmt.Fprintf(out, "  %s: %s\n", w.Host, w.Warning); err != nil {
			return err
		}
	}
	return nil
}
