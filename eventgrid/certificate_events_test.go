package eventgrid_test

import (
	"testing"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/eventgrid"
)

// TestCertificateEventsAreNoticesOfTheirSecret: a certificate's renewal, near expiry and
// expiry (as Key Vault publishes them) become notices of the secret of the same name and
// version, the one a configuration references; a key's event, and a certificate event
// about another object type, stay skipped.
func TestCertificateEventsAreNoticesOfTheirSecret(t *testing.T) {
	body := `[
{"id":"1","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/myvault","subject":"web-tls",
 "eventType":"Microsoft.KeyVault.CertificateNewVersionCreated","eventTime":"2026-12-07T00:00:00Z","dataVersion":"1","metadataVersion":"1",
 "data":{"Id":"https://myvault.vault.azure.net/certificates/web-tls/0123456789abcdef0123456789abcdef","VaultName":"myvault","ObjectType":"Certificate",
  "ObjectName":"web-tls","Version":"0123456789abcdef0123456789abcdef","NBF":"1765065600","EXP":"1767657600"}},
{"id":"2","topic":"t","subject":"web-tls","eventType":"Microsoft.KeyVault.CertificateNearExpiry","eventTime":"2026-12-07T00:00:00Z","dataVersion":"1","metadataVersion":"1",
 "data":{"Id":"https://myvault.vault.azure.net/certificates/web-tls/0123456789abcdef0123456789abcdef","VaultName":"myvault","ObjectType":"Certificate",
  "ObjectName":"web-tls","Version":"0123456789abcdef0123456789abcdef","NBF":null,"EXP":1767657600}},
{"id":"3","topic":"t","subject":"web-tls","eventType":"Microsoft.KeyVault.CertificateExpired","eventTime":"2026-12-07T00:00:00Z","dataVersion":"1","metadataVersion":"1",
 "data":{"Id":"https://myvault.vault.azure.net/certificates/web-tls/0123456789abcdef0123456789abcdef","VaultName":"myvault","ObjectType":"Certificate",
  "ObjectName":"web-tls","Version":"0123456789abcdef0123456789abcdef"}},
{"id":"4","topic":"t","subject":"k","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","eventTime":"2026-12-07T00:00:00Z","dataVersion":"1","metadataVersion":"1",
 "data":{"Id":"https://myvault.vault.azure.net/keys/k/1","VaultName":"myvault","ObjectType":"Key","ObjectName":"k","Version":"1"}},
{"id":"5","topic":"t","subject":"x","eventType":"Microsoft.KeyVault.CertificateNewVersionCreated","eventTime":"2026-12-07T00:00:00Z","dataVersion":"1","metadataVersion":"1",
 "data":{"Id":"https://myvault.vault.azure.net/keys/x/1","VaultName":"myvault","ObjectType":"Key","ObjectName":"x","Version":"1"}}
]`
	notices, err := eventgrid.ParseNotices([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := []viperkv.NoticeType{viperkv.NoticeNewVersion, viperkv.NoticeNearExpiry, viperkv.NoticeExpired}
	if len(notices) != len(want) {
		t.Fatalf("%d notices, want %d: %+v", len(notices), len(want), notices)
	}
	for i, n := range notices {
		if n.Type != want[i] || n.Name != "web-tls" || n.Vault != "myvault.vault.azure.net" || n.Version != "0123456789abcdef0123456789abcdef" {
			t.Errorf("notice %d: %+v", i, n)
		}
	}
	if notices[0].Expires.Unix() != 1767657600 || notices[1].Expires.Unix() != 1767657600 {
		t.Errorf("expiries %v %v", notices[0].Expires, notices[1].Expires)
	}
}
