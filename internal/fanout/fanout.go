// Package fanout delivers events to subscribers. Each subscriber has its own queue, drained
// by a goroutine that exists only while the queue is non-empty: a slow subscriber delays
// only itself, a panicking one is logged and skipped, and an idle Fanout runs nothing. A
// queue holds at most MaxQueued events: a subscriber stuck in a call would otherwise pin
// every event published after it.
package fanout

import (
	"log/slog"
	"sync"
)

// MaxQueued bounds a subscriber's queue; beyond it the oldest events are dropped.
const MaxQueued = 1024

// Fanout delivers events of type E to subscribers. Close stops every goroutine it started.
type Fanout[E any] struct {
	log   *slog.Logger
	attrs func(E) []any // what a log line may say of an event: never a value

	mu     sync.Mutex
	subs   []*subscriber[E]
	closed bool
	drains sync.WaitGroup
}

type subscriber[E any] struct {
	fn func(E)

	mu      sync.Mutex
	queue   []E
	running bool
	removed bool
	dropped int // events dropped since the subscriber last kept up
}

// New returns a Fanout that logs to log, describing an event in a log line by attrs.
func New[E any](log *slog.Logger, attrs func(E) []any) *Fanout[E] {
	return &Fanout[E]{log: log, attrs: attrs}
}

// Subscribe registers fn. The returned func unregisters it; events not yet delivered to it
// are dropped. After Close, fn is never called.
func (n *Fanout[E]) Subscribe(fn func(E)) (cancel func()) {
	s := &subscriber[E]{fn: fn}
	n.mu.Lock()
	if n.closed {
		s.removed = true
	} else {
		n.subs = append(n.subs, s)
	}
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		for i, x := range n.subs {
			if x == s {
				n.subs = append(n.subs[:i:i], n.subs[i+1:]...)
				break
			}
		}
		s.mu.Lock()
		s.removed, s.queue = true, nil
		s.mu.Unlock()
	}
}

// Publish queues evs for every subscriber and returns at once.
func (n *Fanout[E]) Publish(evs []E) {
	if len(evs) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.subs {
		s.mu.Lock()
		if !s.removed {
			s.queue = append(s.queue, evs...)
			if over := len(s.queue) - MaxQueued; over > 0 {
				if s.dropped == 0 {
					n.log.Warn("viperkv: a change watcher is not keeping up; its oldest events are dropped", "queued", MaxQueued)
				}
				clear(s.queue[:over]) // let what they hold go
				s.queue, s.dropped = s.queue[over:], s.dropped+over
			}
			if !s.running {
				s.running = true
				n.drains.Add(1)
				go func() { defer n.drains.Done(); n.drain(s) }()
			}
		}
		s.mu.Unlock()
	}
}

// Close stops delivery: queued events are dropped, and it returns when every subscriber
// has returned from the event it was handling.
func (n *Fanout[E]) Close() {
	n.mu.Lock()
	n.closed = true
	for _, s := range n.subs {
		s.mu.Lock()
		s.removed, s.queue = true, nil
		s.mu.Unlock()
	}
	n.subs = nil
	n.mu.Unlock()
	n.drains.Wait()
}

func (n *Fanout[E]) drain(s *subscriber[E]) {
	var zero E
	for {
		s.mu.Lock()
		if len(s.queue) == 0 || s.removed {
			s.running, s.dropped = false, 0
			s.mu.Unlock()
			return
		}
		e := s.queue[0]
		s.queue[0] = zero // let what it holds go
		s.queue = s.queue[1:]
		s.mu.Unlock()
		n.call(s, e)
	}
}

func (n *Fanout[E]) call(s *subscriber[E], e E) {
	defer func() {
		if r := recover(); r != nil {
			// The panic value is the subscriber's own; it is not logged, as it might hold a value.
			n.log.Error("viperkv: a change watcher panicked; the event is skipped", n.attrs(e)...)
		}
	}()
	s.fn(e)
}
