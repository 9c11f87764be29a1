package kvtest

// Outage is how a vault is out of reach, as a regional outage looks to a client: a vault
// that answers with an error is a Fault instead (InjectFault, for example 503).
type Outage int32

// Outages.
const (
	// OutageNone: the vault is reachable.
	OutageNone Outage = iota
	// OutageRefused: connections to the vault are refused (ECONNREFUSED), as when nothing
	// listens at its address.
	OutageRefused
	// OutageUnresolvable: the vault's host name does not resolve, as when its DNS records
	// are gone or the resolver cannot be reached.
	OutageUnresolvable
)

// refusingAddr is a loopback address where nothing listens: port 1 (tcpmux) is reserved
// and never served on a test machine, so a dial is refused at once.
const refusingAddr = "127.0.0.1:1"

// SetOutage makes clients of the emulator (Server.Client, NewClient and its proxy) fail to
// reach the vault as o says, until SetOutage(OutageNone): new connections fail to dial,
// and a request on a connection opened before the outage gets the connection reset.
func (v *Vault) SetOutage(o Outage) { v.outage.Store(int32(o)) }
