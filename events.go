package viperkv

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// EventKind says what an [Event] reports.
type EventKind string

// Event kinds.
const (
	// EventChanged: keys now hold new values (a new secret version, or an edited file).
	EventChanged EventKind = "Changed"
	// EventError: a refresh failed. The keys keep their last good values; Status says why.
	EventError EventKind = "Error"
	// EventRecovered: a reference that was failing resolves again.
	EventRecovered EventKind = "Recovered"
	// EventNearExpiry: the secret version in use expires within the warning window.
	EventNearExpiry EventKind = "NearExpiry"
)

// Source says what caused an [Event].
type Source string

// Event sources.
const (
	SourcePoll    Source = "poll"    // the refresh schedule of Watch
	SourceFile    Source = "file"    // the config file changed
	SourceRefresh Source = "refresh" // an explicit Refresh or Load
	SourcePush    Source = "push"    // a change Key Vault reported: Notify or the Event Grid handler
)

// Event tells a watcher what changed. It never holds a secret value: read values from
// Current (and Previous, to drain what used the old ones). Both are read-only.
type Event struct {
	Kind   EventKind
	Source Source
	Time   time.Time
	// Keys are the config keys affected, sorted.
	Keys []string
	// Secret is the secret concerned; zero for a file event.
	Secret Reference
	// OldVersion and NewVersion are the secret versions before and after a change.
	OldVersion, NewVersion string
	// Status is the secret's status after the event.
	Status Status
	// Err says what failed, for EventError. It names keys and secrets, never values.
	Err error
	// Expires is the expiry of the version in use, for EventNearExpiry and SecretExpired.
	Expires time.Time
	// ServedBy is the vault that served the value after the event: the secret's own, or a
	// secondary of WithVaultFailover. "" when no value is held.
	ServedBy string
	// Certificate describes the certificate the key holds after the event, when the secret
	// holds one: the renewal for EventChanged, the one kept for EventError, the one
	// lapsing for EventNearExpiry.
	Certificate *CertificateInfo
	// Previous and Current are the resolved configurations before and after the event.
	Previous, Current *viper.Viper
}

// String describes the event in one line, without values.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)", e.Kind, e.Source)
	if e.Secret.Name != "" {
		fmt.Fprintf(&b, " secret %s/%s", e.Secret.Vault, e.Secret.Name)
	}
	switch {
	case e.OldVersion == e.NewVersion && e.NewVersion != "":
		fmt.Fprintf(&b, " version %s", e.NewVersion) // kept (an error) or the one expiring
	case e.OldVersion != "" || e.NewVersion != "":
		fmt.Fprintf(&b, " version %s -> %s", orDash(e.OldVersion), orDash(e.NewVersion))
	}
	if len(e.Keys) > 0 {
		fmt.Fprintf(&b, " keys %s", strings.Join(e.Keys, ","))
	}
	if !e.Expires.IsZero() {
		fmt.Fprintf(&b, " expires %s", e.Expires.UTC().Format(time.RFC3339))
	}
	if c := e.Certificate; c != nil {
		fmt.Fprintf(&b, " certificate %q serial %s not after %s (%d days left)", c.Subject, c.Serial,
			c.NotAfter.UTC().Format(time.RFC3339), c.DaysLeft(e.Time))
	}
	switch {
	case e.Err != nil:
		// The error names the status itself; saying it twice reads as two problems.
		fmt.Fprintf(&b, ": %s", strings.TrimPrefix(e.Err.Error(), "viperkv: "))
	case e.Status != "" && e.Status != StatusResolved:
		fmt.Fprintf(&b, " status %s", e.Status)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// OnChange registers fn to be called with every event, in order, on a goroutine of its
// own: a slow fn delays only its own later events, and a panic in fn is logged and the
// event skipped. Events carry no values; read them from Event.Current (and Event.Previous).
// The returned func unregisters fn; events not yet delivered to it are dropped.
func (p *Provider) OnChange(fn func(Event)) (cancel func()) {
	return p.notify.Subscribe(fn)
}

// announce completes events (keys, the configurations before and after), logs and
// publishes them. The caller holds updateMu, so watchers see configurations in order.
func (p *Provider) announce(evs []Event, prev, cur *snapshot) {
	if len(evs) == 0 {
		return
	}
	byRef := cur.scan.keysByRef()
	for i := range evs {
		e := &evs[i]
		if e.Keys == nil && e.Secret.Name != "" {
			e.Keys = byRef[e.Secret]
		}
		if re, ok := e.Err.(*ReferenceError); ok && len(e.Keys) > 0 && re.Key != strings.Join(e.Keys, ", ") {
			named := *re // name the config keys, as Load's errors do
			named.Key = strings.Join(e.Keys, ", ")
			e.Err = &named
		}
		if prev != nil { // nil for the first configuration's own events (served from a snapshot)
			e.Previous = prev.v
		}
		e.Current = cur.v
		p.logEvent(*e)
	}
	p.notify.Publish(evs)
}

// logEvent logs an event without values.
func (p *Provider) logEvent(e Event) {
	// Only what the event says: no empty keys or status (a file that fails to parse has
	// neither), and one version when it did not change (a failed refresh of it).
	attrs := []any{"source", e.Source}
	if len(e.Keys) > 0 {
		attrs = append(attrs, "keys", e.Keys)
	}
	if e.Secret.Name != "" {
		attrs = append(attrs, "vault", e.Secret.Vault, "secret", e.Secret.Name)
		switch {
		case e.OldVersion == e.NewVersion && e.NewVersion != "":
			attrs = append(attrs, "version", e.NewVersion)
		case e.OldVersion != e.NewVersion:
			attrs = append(attrs, "old_version", e.OldVersion, "new_version", e.NewVersion)
		}
	}
	if c := e.Certificate; c != nil {
		attrs = append(attrs, slog.Group("certificate", "subject", c.Subject, "serial", c.Serial,
			"not_after", c.NotAfter, "days_left", c.DaysLeft(e.Time)))
	}
	log := p.opts.logger
	switch e.Kind {
	case EventError:
		if e.Status != "" {
			attrs = append(attrs, "status", e.Status)
		}
		log.Warn("viperkv: update failed; keeping the last good value", append(attrs, "error", e.Err)...)
	case EventNearExpiry:
		log.Warn("viperkv: secret version expires soon", append(attrs, "expires", e.Expires)...)
	default:
		log.Info("viperkv: "+strings.ToLower(string(e.Kind)), attrs...)
	}
}

// eventAttrs is what a log line about a watcher says of the event it was handling: never
// a value.
func eventAttrs(e Event) []any { return []any{"event", e.Kind, "source", e.Source, "keys", e.Keys} }
