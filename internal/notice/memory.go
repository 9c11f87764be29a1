// Package notice holds what a receiver of change notices (Event Grid's, or any push)
// remembers between them, with its memory bounded however many or however long the
// notices' ids are.
package notice

import (
	"crypto/sha256"
	"slices"
	"sync"
)

// Memory is what a receiver of change notices remembers between them, per secret K: recent
// notice ids, the versions each secret held before (so a late notice for an older version
// is recognised without a GET) and the changes being handled. The zero Memory is ready;
// its methods are safe for concurrent use.
type Memory[K comparable] struct {
	mu       sync.Mutex
	ids      map[idDigest]struct{} // digests, so memory is bounded however long ids are
	idOrder  []idDigest
	history  map[K][]string
	inflight map[K][]string
}

// Bounds of a Memory: enough for any burst of redeliveries.
const (
	MaxIDs      = 4096
	maxVersions = 16
)

// idDigest identifies a notice's id: the first 16 bytes of its SHA-256.
type idDigest [16]byte

func digestOf(id string) idDigest {
	sum := sha256.Sum256([]byte(id))
	return idDigest(sum[:16])
}

// SeenID reports whether the notice id was remembered; never for "".
func (s *Memory[K]) SeenID(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[digestOf(id)]
	return id != "" && ok
}

// RememberID remembers the notice id, forgetting the oldest beyond MaxIDs.
func (s *Memory[K]) RememberID(id string) {
	if id == "" {
		return
	}
	d := digestOf(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[idDigest]struct{}{}
	}
	if _, ok := s.ids[d]; ok {
		return
	}
	s.ids[d] = struct{}{}
	s.idOrder = append(s.idOrder, d)
	if len(s.idOrder) > MaxIDs {
		delete(s.ids, s.idOrder[0])
		s.idOrder = s.idOrder[1:]
	}
}

// HeldBefore records that key held version until now.
func (s *Memory[K]) HeldBefore(key K, version string) {
	if version == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.history == nil {
		s.history = map[K][]string{}
	}
	h := s.history[key]
	if slices.Contains(h, version) {
		return
	}
	h = append(h, version)
	if len(h) > maxVersions {
		h = h[1:]
	}
	s.history[key] = h
}

// WasHeld reports whether key held version before.
func (s *Memory[K]) WasHeld(key K, version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.history[key], version)
}

// Start marks a change as being handled; false when it already is.
func (s *Memory[K]) Start(key K, version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.inflight[key], version) {
		return false
	}
	if s.inflight == nil {
		s.inflight = map[K][]string{}
	}
	s.inflight[key] = append(s.inflight[key], version)
	return true
}

// Finish marks a change as handled.
func (s *Memory[K]) Finish(key K, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight[key] = slices.DeleteFunc(s.inflight[key], func(v string) bool { return v == version })
	if len(s.inflight[key]) == 0 {
		delete(s.inflight, key)
	}
}
