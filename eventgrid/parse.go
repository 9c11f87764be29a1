package eventgrid

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"

	"github.com/viperkv/viperkv"
)

const subscriptionValidationEvent = "Microsoft.EventGrid.SubscriptionValidationEvent"

// deliveredEvent is one event of a delivery, in either schema.
type deliveredEvent struct {
	id, typ string
	data    map[string]json.RawMessage // keys trimmed and lowercased
}

// field returns data's string field key ("" when absent or not a string), trimmed.
func (e deliveredEvent) field(key string) string {
	var s string
	if json.Unmarshal(e.data[key], &s) != nil {
		return ""
	}
	return strings.TrimSpace(s)
}

// maxUnix is the last second of year 9999: a larger NBF or EXP is not a time.
const maxUnix = 253402300799

// unix returns data's field key, Unix seconds, as a time. Key Vault's events carry NBF and
// EXP as numbers or, as Azure's documented samples do, as numeric strings ("1559082102");
// both are read. Anything else (absent, null, a string that is no number, a bool, an
// object, a time out of range) is zero: the notice goes on without it.
func (e deliveredEvent) unix(key string) time.Time {
	raw := e.data[key]
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = []byte(strings.TrimSpace(s)) // read the string's text as a JSON number
	}
	var f *float64
	if json.Unmarshal(raw, &f) != nil || f == nil || *f <= 0 || *f > maxUnix {
		return time.Time{}
	}
	return time.Unix(int64(*f), 0)
}

// noticeTypes maps the Key Vault event types a notice comes from (lower case) to the notice
// and the object type the event must be about. A certificate's event is about the secret of
// the same name and version, which holds the certificate with its key: a renewal is a new
// version of that secret.
var noticeTypes = map[string]struct {
	typ    viperkv.NoticeType
	object string
}{
	"microsoft.keyvault.secretnewversioncreated":      {viperkv.NoticeNewVersion, "secret"},
	"microsoft.keyvault.secretnearexpiry":             {viperkv.NoticeNearExpiry, "secret"},
	"microsoft.keyvault.secretexpired":                {viperkv.NoticeExpired, "secret"},
	"microsoft.keyvault.certificatenewversioncreated": {viperkv.NoticeNewVersion, "certificate"},
	"microsoft.keyvault.certificatenearexpiry":        {viperkv.NoticeNearExpiry, "certificate"},
	"microsoft.keyvault.certificateexpired":           {viperkv.NoticeExpired, "certificate"},
}

// notice returns the Notice a Key Vault secret or certificate event carries.
func (e deliveredEvent) notice() (viperkv.Notice, bool) {
	t, ok := noticeTypes[strings.ToLower(e.typ)]
	if !ok {
		return viperkv.Notice{}, false
	}
	typ := t.typ
	if ot := e.field("objecttype"); ot != "" && !strings.EqualFold(ot, t.object) {
		return viperkv.Notice{}, false
	}
	vault := e.field("vaultname")
	if u, err := url.Parse(e.field("id")); err == nil && u.Scheme == "https" && u.Host != "" {
		vault = u.Host // the full host: right in every cloud and for allowed private hosts
	}
	return viperkv.Notice{Type: typ, ID: e.id, Vault: vault, Name: e.field("objectname"), Version: e.field("version"),
		NotBefore: e.unix("nbf"), Expires: e.unix("exp")}, true
}

// ParseNotices reads the Key Vault secret events of an Event Grid delivery or message body,
// for apps that receive Key Vault's events other than through [NewHandler]: the body of a Service Bus message (Event Grid to a Service Bus
// topic with a subscription per instance is how every replica of a fleet hears of a
// rotation), an Event Hubs event, or a webhook of the app's own. It reads both of Event
// Grid's schemas: an Event Grid schema event or array, a CloudEvents 1.0 event or batch.
// A certificate's events (CertificateNewVersionCreated, CertificateNearExpiry,
// CertificateExpired) become notices of the secret that holds the certificate, of the same
// name and version. Events of other types (keys, a subscription validation) are skipped; a
// body that is neither schema, or whose event data names a field twice (in any case), is an
// error. A notice's NotBefore and Expires come from the data's NBF and EXP, Unix seconds
// as a number or a numeric string (Azure's samples send "1559082102"); any other value
// leaves them zero. Hand each notice to [viperkv.Provider.Notify] (or Enqueue), which ignores
// duplicates and secrets the configuration does not reference.
//
// It authenticates nothing: the body must come from a channel that did (a Service Bus
// receiver signed in with the app's identity, for example). A forged notice can cost a
// GET of a referenced secret, never change a value.
func ParseNotices(body []byte) ([]viperkv.Notice, error) {
	events, err := parseDelivery("", body)
	if err != nil {
		return nil, fmt.Errorf("eventgrid: not an Event Grid or CloudEvents body: %w", err)
	}
	var out []viperkv.Notice
	for _, e := range events {
		if n, ok := e.notice(); ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// parseDelivery reads a delivery's events: CloudEvents 1.0 structured
// (application/cloudevents+json) or batched (application/cloudevents-batch+json), or an
// Event Grid schema array (application/json).
func parseDelivery(contentType string, body []byte) ([]deliveredEvent, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	type wire struct {
		ID          string          `json:"id"`
		EventType   string          `json:"eventType"`   // Event Grid schema
		Type        string          `json:"type"`        // CloudEvents
		SpecVersion string          `json:"specversion"` // CloudEvents
		Data        json.RawMessage `json:"data"`
	}
	var raw []wire
	body = bytes.TrimSpace(body)
	switch {
	case bytes.Equal(body, []byte("null")):
		return nil, errors.New("the body is null")
	case mt == "application/cloudevents+json" || (len(body) > 0 && body[0] == '{'):
		var one wire
		if err := json.Unmarshal(body, &one); err != nil {
			return nil, err
		}
		raw = []wire{one}
	default:
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, err
		}
	}
	out := make([]deliveredEvent, 0, len(raw))
	for i, w := range raw {
		e := deliveredEvent{id: strings.TrimSpace(w.ID), typ: strings.TrimSpace(w.EventType)}
		if w.SpecVersion != "" || e.typ == "" {
			e.typ = strings.TrimSpace(w.Type)
		}
		if e.typ == "" {
			return nil, fmt.Errorf("event %d has no type", i)
		}
		var data map[string]json.RawMessage
		if len(w.Data) > 0 && string(w.Data) != "null" {
			if err := json.Unmarshal(w.Data, &data); err != nil {
				return nil, fmt.Errorf("event %d: data: %w", i, err)
			}
		}
		e.data = make(map[string]json.RawMessage, len(data))
		for k, v := range data {
			key := strings.ToLower(strings.TrimSpace(k))
			if _, dup := e.data[key]; dup {
				// Which of the two counts would be up to map order: refuse both.
				return nil, fmt.Errorf("event %d: data names %q twice", i, key)
			}
			e.data[key] = v
		}
		out = append(out, e)
	}
	return out, nil
}
