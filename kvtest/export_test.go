package kvtest

// Token forging helpers for kvtest's own tests of token validation. They are not part of
// the package's API: a user's test gets tokens the way an app does, through an identity.

func IssueToken(s *Server, id Identity, resource string) string { return s.issueToken(id, resource) }

func TokenClaims(s *Server, id Identity, resource string) map[string]any {
	return s.tokenClaims(id, resource)
}

func SignToken(s *Server, claims map[string]any) string { return s.signToken(claims) }

func KeyID(s *Server) string { return s.keyID() }

func FederatedTokenClaims(s *Server, id Identity) map[string]any { return s.federatedTokenClaims(id) }
