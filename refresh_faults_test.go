package viperkv_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/kvtest"
)

// faultEnv is what a fault table row acts on.
type faultEnv struct {
	srv *kvtest.Server
	kv  *kvtest.Vault
	id  kvtest.Identity
}

type faultCase struct {
	name string
	// ownServer runs the row on a server of its own whose tokens live 2 s, authenticating
	// as a fresh user-assigned identity: MSAL then caches nothing (a token needs 5 minutes
	// left) and azcore's bearer policy must fetch a new token once each one expires, so
	// identity endpoint faults (which apply to a whole server) reach the refresh.
	ownServer bool
	opts      []viperkv.Option
	inject    func(*faultEnv)
	want      viperkv.Status
	// heal ends the fault. It returns the new version and value when it rotated the secret.
	heal func(*faultEnv) (version, value string)
}

// faultFetchTimeout ends the fetches of the rows that hang or wait out a Retry-After. It
// is far beyond one request to the local emulator, so it never cuts a healthy fetch short.
const faultFetchTimeout = 1500 * time.Millisecond

// TestRefreshFaultTable runs every refresh fault through the real SDK against the emulator:
// the vault's (or identity endpoint's) real answers must map to the right status, the last
// good value must stay, one Error event must be sent, and the value must recover once the
// fault clears. Real time, because the point is the wire: azcore's retries, the limiter's
// Retry-After, MSAL's token cache, a reset connection. It asserts outcomes, not timings
// (the back-off's timing is tested in TestRefreshFailureKeepsLastGoodValue).
func TestRefreshFaultTable(t *testing.T) {
	rotate := func(e *faultEnv) (string, string) {
		val := "good-v2-" + randomSuffix()
		return e.kv.SetSecret("conn", val), val
	}
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	short := []viperkv.Option{viperkv.WithFetchTimeout(faultFetchTimeout)}
	cases := []faultCase{
		{
			name: "identity endpoint 403", ownServer: true,
			inject: func(e *faultEnv) { e.srv.InjectIdentityFault(kvtest.Fault{Status: http.StatusForbidden}) },
			want:   viperkv.StatusUnauthorizedClient,
			heal:   func(e *faultEnv) (string, string) { e.srv.ClearIdentityFaults(); return rotate(e) },
		},
		{
			// A hung token request must not pin token acquisition after its callers gave up.
			name: "identity endpoint hangs", ownServer: true, opts: short,
			inject: func(e *faultEnv) { e.srv.InjectIdentityFault(kvtest.Fault{Hang: true}) },
			want:   viperkv.StatusFetchTimedOut,
			heal:   func(e *faultEnv) (string, string) { e.srv.ClearIdentityFaults(); return "", "" },
		},
		{
			// azcore retries a 500 three times within one fetch; then the status says what the
			// vault answered.
			name: "vault 500",
			inject: func(e *faultEnv) {
				e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusInternalServerError})
			},
			want: viperkv.StatusOtherReasons,
			heal: func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return rotate(e) },
		},
		{
			// The fetcher waits out Retry-After through the vault's limiter; a fetch deadline
			// shorter than Retry-After ends the wait, and the status still says the vault
			// throttled (not that it was slow).
			name: "vault 429 with Retry-After", opts: short,
			inject: func(e *faultEnv) {
				e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Status: http.StatusTooManyRequests, RetryAfter: 2 * time.Second})
			},
			want: viperkv.StatusThrottled,
			heal: func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return "", "" },
		},
		{
			name: "vault hangs", opts: short,
			inject: func(e *faultEnv) { e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Hang: true}) },
			want:   viperkv.StatusFetchTimedOut,
			heal:   func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return rotate(e) },
		},
		{
			name:   "connection reset",
			inject: func(e *faultEnv) { e.kv.InjectFault(kvtest.OpGetSecret, kvtest.Fault{Reset: true}) },
			want:   viperkv.StatusOtherReasons,
			heal:   func(e *faultEnv) (string, string) { e.kv.ClearFaults(); return "", "" },
		},
		{
			name:   "secret disabled",
			inject: func(e *faultEnv) { must(e.kv.SetEnabled("conn", "", false)) },
			want:   viperkv.StatusSecretDisabled,
			heal:   func(e *faultEnv) (string, string) { must(e.kv.SetEnabled("conn", "", true)); return "", "" },
		},
		{
			name:   "secret deleted",
			inject: func(e *faultEnv) { must(e.kv.DeleteSecret("conn")) },
			want:   viperkv.StatusSecretNotFound,
			heal:   rotate, // re-created: a new version
		},
		{
			name:   "access revoked",
			inject: func(e *faultEnv) { e.kv.Revoke(e.id) },
			want:   viperkv.StatusAccessToKeyVaultDenied,
			heal:   func(e *faultEnv) (string, string) { e.kv.Grant(e.id, kvtest.RoleSecretsUser); return "", "" },
		},
	}

	// Every row runs at the same time as the others: they mostly wait on the network, and
	// -parallel (GOMAXPROCS, 2 on CI) would serialise them. Tokens come from IMDS, which
	// each server's transport reaches at its fixed address, so no row depends on the
	// process environment: the App Service variables are cleared for the whole table.
	for _, k := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "IMDS_ENDPOINT"} {
		t.Setenv(k, "")
	}
	srv := kvtest.NewServer()
	t.Cleanup(srv.Close)
	// One Load first puts the system identity's token in MSAL's cache, so the rows' own
	// Loads (some with a short fetch timeout) are one GET each.
	warm := srv.AddVault("warmvault")
	warm.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	warm.SetSecret("s", "x")
	if _, err := load(t, srv, yamlViper(t, `s: "@KeyVault(VaultName=warmvault;SecretName=s)"`)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Go(func() {
			t.Run(tc.name, func(t *testing.T) {
				if tc.ownServer {
					own := kvtest.NewServer(kvtest.WithTokenLifetime(2 * time.Second))
					t.Cleanup(own.Close)
					runFaultCase(t, own, newIdentity(t, own), "faultvault", tc)
					return
				}
				runFaultCase(t, srv, srv.SystemIdentity(), fmt.Sprintf("faultvault%d", i), tc)
			})
		})
	}
	wg.Wait()
}

func runFaultCase(t *testing.T, srv *kvtest.Server, id kvtest.Identity, vault string, tc faultCase) {
	kv := srv.AddVault(vault)
	kv.Grant(id, kvtest.RoleSecretsUser)
	goodValue := "good-v1-" + randomSuffix()
	v1 := kv.SetSecret("conn", goodValue)
	env := &faultEnv{srv: srv, kv: kv, id: id}

	opts := append([]viperkv.Option{
		viperkv.WithRefreshInterval(100 * time.Millisecond),
		viperkv.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond),
	}, tc.opts...)
	if id.Name != kvtest.SystemIdentityName {
		opts = append(opts, viperkv.WithManagedIdentity(azidentity.ClientID(id.ClientID)))
	}
	p, err := load(t, srv, yamlViper(t, fmt.Sprintf(`
db:
  conn: "@KeyVault(SecretUri=https://%s.vault.azure.net/secrets/conn/)"
  pool: 10
`, vault)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.GetString("db.conn"); got != goodValue {
		t.Fatalf("db.conn = %q after Load", got)
	}
	evs := collect(p)
	watch(t, p)

	isConn := func(e viperkv.Event) bool { return e.Secret.Name == "conn" }
	tc.inject(env)
	errEv, errAt := evs.waitFor(t, 0, "Error "+string(tc.want), func(e viperkv.Event) bool {
		return isConn(e) && e.Kind == viperkv.EventError
	})
	var re *viperkv.ReferenceError
	if errEv.Status != tc.want || !errors.As(errEv.Err, &re) || re.Status != tc.want || re.Reason == "" {
		t.Fatalf("error event %v (Err %#v), want status %s with a reason", errEv, errEv.Err, tc.want)
	}
	if errEv.Source != viperkv.SourcePoll || errEv.OldVersion != v1 || !slices.Equal(errEv.Keys, []string{"db.conn"}) {
		t.Errorf("error event = %v, want source poll, old version %s, keys [db.conn]", errEv, v1)
	}
	// The last good value stays; the status says why.
	c := p.Viper()
	if c.GetString("db.conn") != goodValue || c.GetInt("db.pool") != 10 || errEv.Current.GetString("db.conn") != goodValue {
		t.Errorf("during the fault: db.conn = %q, db.pool = %v; want the last good value and its sibling", c.GetString("db.conn"), c.Get("db.pool"))
	}
	if st := statusOf(t, p, "db.conn"); st.Status != tc.want || st.Reason == "" || st.Version != v1 {
		t.Errorf("during the fault: status = %+v, want %s with a reason, serving version %s", st, tc.want, v1)
	}

	newVersion, newValue := tc.heal(env)
	evs.waitFor(t, errAt+1, "Recovered", func(e viperkv.Event) bool {
		return isConn(e) && e.Kind == viperkv.EventRecovered && e.Err == nil && e.Status == viperkv.StatusResolved
	})
	want, wantVersion := goodValue, v1
	if newVersion != "" {
		want, wantVersion = newValue, newVersion
		evs.waitFor(t, errAt+1, "Changed", func(e viperkv.Event) bool {
			return isConn(e) && e.Kind == viperkv.EventChanged && e.NewVersion == newVersion
		})
	}
	if st := statusOf(t, p, "db.conn"); p.GetString("db.conn") != want || st.Status != viperkv.StatusResolved || st.Version != wantVersion {
		t.Errorf("after recovery: db.conn = %q, status %+v; want %q Resolved at %s", p.GetString("db.conn"), st, want, wantVersion)
	}
	// One error event for the whole fault: status transitions only.
	if n := count(evs.all(), func(e viperkv.Event) bool { return isConn(e) && e.Kind == viperkv.EventError }); n != 1 {
		t.Errorf("%d error events for one fault, want 1: %v", n, evs.all())
	}
}
