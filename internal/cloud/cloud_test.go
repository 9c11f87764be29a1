package cloud

import "testing"

func TestLookups(t *testing.T) {
	for name, want := range map[string]string{"AzurePublic": "vault.azure.net", " azurecloud ": "vault.azure.net",
		"CHINA": "vault.azure.cn", "AzureChinaCloud": "vault.azure.cn", "usgov": "vault.usgovcloudapi.net"} {
		if c, ok := ByName(name); !ok || c.VaultSuffix != want {
			t.Errorf("ByName(%q) = %+v, %v; want suffix %s", name, c, ok, want)
		}
	}
	if _, ok := ByName("mars"); ok {
		t.Error("ByName found an unknown cloud")
	}
	if c, ok := ByVaultHost("x.vault.azure.cn"); !ok || c.Name != "AzureChina" || c.Resource() != "https://vault.azure.cn" {
		t.Errorf("ByVaultHost: %+v %v", c, ok)
	}
	if _, ok := ByVaultHost("x.vault.azure.net.evil.test"); ok {
		t.Error("a look-alike host matched a cloud")
	}
	if got := Public().V1Issuer("t"); got != "https://sts.windows.net/t/" {
		t.Errorf("V1Issuer = %s", got)
	}
	if !IsAuthorityHost("login.microsoftonline.us") || IsAuthorityHost("login.example.com") {
		t.Error("IsAuthorityHost")
	}
	if n := testing.AllocsPerRun(100, func() { ByName("AzurePublic") }); n != 0 {
		t.Errorf("ByName allocates %v times; the parser calls it per reference", n)
	}
}
