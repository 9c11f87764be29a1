package certificate

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
)

// follower holds what keys hold, built anew on each change the Provider announces; a
// change that does not build leaves the last good value in place.
type follower[T any] struct {
	what     string // "certificate" or "CA bundle", for messages
	keys     []string
	build    func(c *viper.Viper) (*T, error)
	describe func(*T) string // for the log line of a renewal

	log         *slog.Logger
	cur         atomic.Pointer[T]
	unsubscribe func()
	mu          sync.Mutex // serialises rebuilds; guards err
	err         error
}

// start builds the first value from p's current configuration and follows p's changes.
func (f *follower[T]) start(p *viperkv.Provider) error {
	if p == nil {
		return errors.New("certificate: nil *viperkv.Provider")
	}
	if len(f.keys) == 0 {
		return errors.New("certificate: no configuration key given")
	}
	c := p.Viper()
	if c == nil {
		return errors.New("certificate: the provider has no configuration yet: call Load first")
	}
	v, err := f.build(c)
	if err != nil {
		return err
	}
	f.log = p.Logger()
	f.cur.Store(v)
	f.unsubscribe = p.OnChange(f.onEvent)
	return nil
}

func (f *follower[T]) onEvent(e viperkv.Event) {
	if e.Kind != viperkv.EventChanged || e.Current == nil || !f.names(e.Keys) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.build(e.Current)
	if err != nil {
		f.err = err
		f.log.Warn("viperkv: "+f.what+" not renewed; the last good one keeps serving", "error", err)
		return
	}
	f.err = nil
	f.cur.Store(v)
	f.log.Info("viperkv: "+f.what+" renewed", "keys", f.keys, "now", f.describe(v))
}

func (f *follower[T]) names(keys []string) bool {
	for _, k := range keys {
		for _, mine := range f.keys {
			if strings.EqualFold(k, mine) {
				return true
			}
		}
	}
	return false
}

func (f *follower[T]) lastErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *follower[T]) close() {
	if f.unsubscribe != nil {
		f.unsubscribe()
	}
}

// value returns key's value in c, or an error when c lacks it.
func value(c *viper.Viper, what, key string) (string, error) {
	if !c.IsSet(key) {
		return "", fmt.Errorf("%s %q: the configuration has no such key (did its reference fail? see the provider's Status)", what, key)
	}
	return c.GetString(key), nil
}
