package fanout

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/viperkv/viperkv/internal/logtest"
)

type event struct{ key string }

func attrs(e event) []any { return []any{"key", e.key} }

// A subscriber stuck in a call does not pin every event published after it: its queue
// keeps the newest MaxQueued events, and the drop is logged once.
func TestStuckSubscriberQueueIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logtest.Buffer
		n := New(slog.New(slog.NewTextHandler(&logs, nil)), attrs)
		release := make(chan struct{})
		n.Subscribe(func(event) { <-release })
		for i := range 5000 {
			n.Publish([]event{{key: fmt.Sprint(i)}})
		}
		synctest.Wait()
		n.mu.Lock()
		s := n.subs[0]
		n.mu.Unlock()
		s.mu.Lock()
		queued, last := len(s.queue), s.queue[len(s.queue)-1].key
		s.mu.Unlock()
		if queued > MaxQueued || last != "4999" {
			t.Errorf("%d events queued for a stuck subscriber (newest %s), want at most %d, the newest kept", queued, last, MaxQueued)
		}
		if n := strings.Count(logs.String(), "not keeping up"); n != 1 {
			t.Errorf("%d warnings about the subscriber, want 1:\n%s", n, logs.String())
		}
		close(release)
		n.Close()
	})
}

// Events reach each subscriber in order; a panicking subscriber is logged with attrs
// only (never the panic value) and keeps receiving; a cancelled one receives nothing
// more; after Close nothing is delivered and no goroutine is left.
func TestDeliveryOrderPanicsCancelAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs logtest.Buffer
		n := New(slog.New(slog.NewTextHandler(&logs, nil)), attrs)
		var mu sync.Mutex
		var got, other []string
		n.Subscribe(func(e event) {
			mu.Lock()
			got = append(got, e.key)
			mu.Unlock()
			if e.key == "b" {
				panic("SENTINEL-PANIC-VALUE")
			}
		})
		cancel := n.Subscribe(func(e event) {
			mu.Lock()
			other = append(other, e.key)
			mu.Unlock()
		})
		n.Publish([]event{{"a"}, {"b"}, {"c"}})
		synctest.Wait()
		cancel()
		n.Publish([]event{{"d"}})
		synctest.Wait()
		n.Close()
		n.Publish([]event{{"e"}})
		late := false
		n.Subscribe(func(event) { late = true })
		n.Publish([]event{{"f"}})
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(got, "") != "abcd" || strings.Join(other, "") != "abc" || late {
			t.Errorf("delivered %q and %q (late %v), want \"abcd\" and \"abc\" and nothing after Close", got, other, late)
		}
		if l := logs.String(); !strings.Contains(l, "panicked") || !strings.Contains(l, "key=b") || strings.Contains(l, "SENTINEL") {
			t.Errorf("panic log:\n%s", l)
		}
	})
}
