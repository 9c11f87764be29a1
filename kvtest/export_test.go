package kvtest

import (
	"io"

	"github.com/viperkv/viperkv/internal/emuinfo"
)

// Token forging helpers for kvtest's own tests of token validation. They are not part of
// the package's API: a user's test gets tokens the way an app does, through an identity.

func IssueToken(s *Server, id Identity, resource string) string { return s.issueToken(id, resource) }

func TokenClaims(s *Server, id Identity, resource string) map[string]any {
	return s.tokenClaims(id, resource)
}

func SignToken(s *Server, claims map[string]any) string { return s.signToken(claims) }

func KeyID(s *Server) string { return s.keyID() }

func FederatedTokenClaims(s *Server, id Identity) map[string]any { return s.federatedTokenClaims(id) }

// The emulator's own addresses and its seed and info plumbing, for kvtest's tests of the
// endpoints themselves; users reach the endpoints with production URLs.

func IdentityEndpoint(s *Server) string { return s.identityEndpoint() }
func IdentityHeader(s *Server) string   { return s.identityHeader }
func IMDSEndpoint(s *Server) string     { return s.imdsEndpoint() }
func EntraURL(s *Server) string         { return s.entraURL() }
func AuthorityURL(s *Server) string     { return s.authorityURL() }
func OIDCDiscoveryURL(s *Server) string { return s.oidcDiscoveryURL() }

type Seed = seedSpec

func ParseSeed(r io.Reader) (*Seed, error)       { return parseSeed(r) }
func ApplySeed(s *Server, sd *Seed) error        { return s.applySeed(sd) }
func Info(s *Server, caFile string) emuinfo.Info { return s.info(caFile) }

// Event Grid internals for kvtest's tests of event delivery.

func Subscriptions(v *Vault) []*Subscription           { return v.subscriptions() }
func PendingExpiryTimers(v *Vault) int                 { return v.pendingExpiryTimers() }
func SubscriptionDone(s *Subscription) <-chan struct{} { return s.done }
func EventGridObjectID(s *Server) string               { return s.eventGridObjectID() }
