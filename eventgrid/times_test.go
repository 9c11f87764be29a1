package eventgrid_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
)

// azureSecretNewVersionCreated is Azure's documented sample of
// Microsoft.KeyVault.SecretNewVersionCreated in the Event Grid schema ("Azure Key Vault
// as Event Grid source"), as published: NBF and EXP are strings, "objectName " has a
// trailing space and the version a leading one.
const azureSecretNewVersionCreated = `[
   {
      "id":"00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
      "topic":"/subscriptions/{subscription-id}/resourceGroups/sample-rg/providers/Microsoft.KeyVault/vaults/sample-kv",
      "subject":"newsecret",
      "eventType":"Microsoft.KeyVault.SecretNewVersionCreated",
      "eventTime":"2019-07-25T01:08:33.1036736Z",
      "data":{
         "Id":"https://sample-kv.vault.azure.net/secrets/newsecret/ee059b2bb5bc48398a53b168c6cdcb10",
         "vaultName":"sample-kv",
         "objectType":"Secret",
         "objectName ":"newsecret",
         "version":" ee059b2bb5bc48398a53b168c6cdcb10",
         "nbf":"1559081980",
         "exp":"1559082102"
      },
      "dataVersion":"1",
      "metadataVersion":"1"
   }
]`

// azureSecretNearExpiryCloudEvent is the same shape for Microsoft.KeyVault.SecretNearExpiry
// in the CloudEvents schema, with the field names in the case Key Vault delivers them.
const azureSecretNearExpiryCloudEvent = `{
   "id":"00eccf70-95a7-4e7c-8299-2eb17ee9ad65",
   "source":"/subscriptions/{subscription-id}/resourceGroups/sample-rg/providers/Microsoft.KeyVault/vaults/sample-kv",
   "subject":"newsecret",
   "type":"Microsoft.KeyVault.SecretNearExpiry",
   "time":"2019-07-25T01:08:33.1036736Z",
   "data":{
      "Id":"https://sample-kv.vault.azure.net/secrets/newsecret/ee059b2bb5bc48398a53b168c6cdcb10",
      "VaultName":"sample-kv",
      "ObjectType":"Secret",
      "ObjectName":"newsecret",
      "Version":"ee059b2bb5bc48398a53b168c6cdcb10",
      "NBF":"1559081980",
      "EXP":"1559082102"
   },
   "specversion":"1.0"
}`

// TestParseNoticesNBFAndEXP: NBF and EXP are read from numbers and from numeric strings,
// as Azure's documented samples send them; any other value leaves the time zero and the
// notice, and the rest of the delivery, as they were.
func TestParseNoticesNBFAndEXP(t *testing.T) {
	nbf, exp := time.Unix(1559081980, 0), time.Unix(1559082102, 0)
	for _, tc := range []struct {
		name, body string
		typ        viperkv.NoticeType
	}{
		{"EventGridSample", azureSecretNewVersionCreated, viperkv.NoticeNewVersion},
		{"CloudEventsNearExpiry", azureSecretNearExpiryCloudEvent, viperkv.NoticeNearExpiry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notices, err := eventgrid.ParseNotices([]byte(tc.body))
			if err != nil || len(notices) != 1 {
				t.Fatalf("ParseNotices = %+v, %v", notices, err)
			}
			n := notices[0]
			if n.Type != tc.typ || n.Vault != "sample-kv.vault.azure.net" || n.Name != "newsecret" || n.Version != "ee059b2bb5bc48398a53b168c6cdcb10" {
				t.Errorf("notice %+v", n)
			}
			if !n.NotBefore.Equal(nbf) || !n.Expires.Equal(exp) {
				t.Errorf("NotBefore %v, Expires %v; want %v, %v", n.NotBefore, n.Expires, nbf, exp)
			}
		})
	}

	for _, tc := range []struct {
		value string // EXP's JSON
		want  time.Time
	}{
		{`1559082102`, exp},
		{`1559082102.0`, exp},
		{`"1559082102"`, exp},
		{`" 1559082102 "`, exp},
		{`"1.559082102e9"`, exp},
		{`null`, time.Time{}},
		{`""`, time.Time{}},
		{`"soon"`, time.Time{}},
		{`"1559082102s"`, time.Time{}},
		{`"0x5CEE3A76"`, time.Time{}},
		{`"null"`, time.Time{}},
		{`"\"1559082102\""`, time.Time{}},
		{`true`, time.Time{}},
		{`{"seconds":1559082102}`, time.Time{}},
		{`[1559082102]`, time.Time{}},
		{`0`, time.Time{}},
		{`"-1559082102"`, time.Time{}},
		{`"1e300"`, time.Time{}},
	} {
		body := fmt.Sprintf(`[{"id":"e","eventType":"Microsoft.KeyVault.SecretNearExpiry","data":`+
			`{"Id":"https://sample-kv.vault.azure.net/secrets/newsecret/v1","ObjectName":"newsecret","Version":"v1","NBF":null,"EXP":%s}}]`, tc.value)
		notices, err := eventgrid.ParseNotices([]byte(body))
		if err != nil || len(notices) != 1 {
			t.Errorf("EXP %s: ParseNotices = %+v, %v; want the notice", tc.value, notices, err)
			continue
		}
		if got := notices[0].Expires; !got.Equal(tc.want) {
			t.Errorf("EXP %s: Expires %v, want %v", tc.value, got, tc.want)
		}
	}
}

// TestEventGridNearExpiryStringEXP: a SecretNearExpiry delivered with EXP as a string, in
// either schema, tells watchers when the version in use expires.
func TestEventGridNearExpiryStringEXP(t *testing.T) {
	for _, tc := range []struct {
		name, contentType string
		body              func(e map[string]any) any
	}{
		{"EventGridSchema", "application/json", func(e map[string]any) any { return []any{e} }},
		{"CloudEvents", "application/cloudevents+json; charset=utf-8", func(e map[string]any) any {
			ce := ceEvent(e["id"].(string), e["eventType"].(string), "db", "")
			ce["data"] = e["data"]
			return ce
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newEGFixture(t)
			exp := time.Now().Add(29 * 24 * time.Hour).Truncate(time.Second)
			near := egEvent("near-"+tc.name, string(viperkv.NoticeNearExpiry), "db", f.v1)
			near["data"].(map[string]any)["NBF"] = strconv.FormatInt(exp.Add(-365*24*time.Hour).Unix(), 10)
			near["data"].(map[string]any)["EXP"] = strconv.FormatInt(exp.Unix(), 10)
			if st, out := f.post(t, f.token(t, nil), tc.contentType, tc.body(near)); st != 200 {
				t.Fatalf("delivery: %d %s", st, out)
			}
			deadline := time.After(15 * time.Second)
			for {
				select {
				case e := <-f.events:
					if e.Kind != viperkv.EventNearExpiry {
						continue
					}
					if e.Secret.Name != "db" || e.Source != viperkv.SourcePush || !e.Expires.Equal(exp) {
						t.Errorf("event %v, want db near expiry at %v", e, exp)
					}
					return
				case <-deadline:
					t.Fatal("no EventNearExpiry within 15 s")
				}
			}
		})
	}
}
