package viperkv_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/logtest"
	"github.com/viperkv/viperkv/kvtest"
)

// TestListingOnTheEmulator: version checks by listing through the real SDK's pager,
// against a vault that pages as Key Vault may (short and empty pages with a nextLink):
// quiet cycles cost list pages and no GET; a rotation costs a GET; a 403 on list falls
// back to GETs and says so once. Real time, generous deadlines; nothing depends on how
// long a cycle takes.
func TestListingOnTheEmulator(t *testing.T) {
	srv := kvtest.NewServerT(t, kvtest.WithShortPages())
	kv := srv.AddVault("myvault")
	kv.Grant(srv.SystemIdentity(), kvtest.RoleSecretsUser)
	var doc strings.Builder
	doc.WriteString("app:\n")
	// Fetches within two seconds of a version's last change are checked again by GET on
	// the next cycle (one-second timestamps): the versions are made a minute old, past
	// that window, so that quiet cycles cost no GET.
	settled := kvtest.WithUpdated(time.Now().Add(-time.Minute))
	for i := range 30 {
		kv.SetSecret(fmt.Sprintf("s%02d", i), fmt.Sprintf("value-%02d", i), settled)
		if i < 20 {
			fmt.Fprintf(&doc, "  k%02d: \"@KeyVault(VaultName=myvault;SecretName=s%02d)\"\n", i, i)
		}
	}
	logs := &logtest.Buffer{}
	p, err := viperkv.New(yamlViper(t, doc.String()), viperkv.WithEmulator(srv),
		viperkv.WithoutFileWatch(), viperkv.WithRefreshInterval(100*time.Millisecond), viperkv.WithVersionCheck(viperkv.VersionCheckAuto),
		viperkv.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	changed := make(chan viperkv.Event, 16)
	p.OnChange(func(e viperkv.Event) { changed <- e })
	kv.ResetCounters()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Watch(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20 s (lists %d, GETs %d)", what, kv.Count(kvtest.OpListSecrets), kv.Count(kvtest.OpGetSecret))
			}
		}
	}
	waitFor("list cycles", func() bool { return kv.Count(kvtest.OpListSecrets) >= 12 })
	if n := kv.Count(kvtest.OpGetSecret); n != 0 {
		t.Errorf("%d GETs in quiet cycles by listing, want 0", n)
	}

	v2 := kv.SetSecret("s07", "value-07-rotated")
	select {
	case e := <-changed:
		if e.NewVersion != v2 || p.GetString("app.k07") != "value-07-rotated" {
			t.Errorf("event %v", e)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the rotation was not found within 20 s")
	}
	if n := kv.Count(kvtest.OpGetSecret); n < 1 || n > 2 {
		t.Errorf("%d GETs for one rotation, want 1 (or 2: a re-check of a same-second fetch)", n)
	}

	// A version made in the same second as the one just fetched lists with the same
	// timestamp; the re-check by GET finds it. (The fetch comes from Notify, so it is
	// certainly within the second; retried if the clock crossed a second meanwhile.)
	for attempt := 0; ; attempt++ {
		created := time.Now()
		va := kv.SetSecret("s09", "value-09-a")
		if err := p.Notify(context.Background(), viperkv.Notice{Type: viperkv.NoticeNewVersion, Vault: "myvault", Name: "s09", Version: va}); err != nil {
			t.Fatal(err)
		}
		vb := kv.SetSecret("s09", "value-09-b")
		if time.Now().Truncate(time.Second).Equal(created.Truncate(time.Second)) {
			waitFor("the same-second version", func() bool { return p.GetString("app.k09") == "value-09-b" })
			if st := statusOf(t, p, "app.k09"); st.Version != vb {
				t.Errorf("app.k09 holds version %s, want %s", st.Version, vb)
			}
			break
		}
		if attempt == 5 {
			t.Fatal("could not make two versions within one second")
		}
		waitFor("the retried version", func() bool { return p.GetString("app.k09") == "value-09-b" })
	}

	// A list that shows a version within its second waits the second out before its GET:
	// a version made after that list, in the same second, lists the same, and is the one
	// held in the end. (Retried if the clock crossed a second meanwhile.)
	for attempt := 0; ; attempt++ {
		created := time.Now()
		kv.SetSecret("s11", "value-11-a")
		lists := kv.Count(kvtest.OpListSecrets)
		waitFor("lists after the change", func() bool { return kv.Count(kvtest.OpListSecrets) >= lists+2 })
		vb := kv.SetSecret("s11", "value-11-b")
		holds := func() bool { return statusOf(t, p, "app.k11").Version == vb && p.GetString("app.k11") == "value-11-b" }
		if time.Now().Truncate(time.Second).Equal(created.Truncate(time.Second)) {
			waitFor("the version made after the list", holds)
			break
		}
		if attempt == 5 {
			t.Fatal("could not list between two versions within one second")
		}
		waitFor("the retried version", holds)
	}

	// Disabled and deleted secrets: the list shows them (disabled, absent) and a GET gives
	// the status it gives.
	if err := kv.SetEnabled("s12", "", false); err != nil {
		t.Fatal(err)
	}
	if err := kv.DeleteSecret("s13"); err != nil {
		t.Fatal(err)
	}
	waitFor("disabled and deleted statuses", func() bool {
		return statusOf(t, p, "app.k12").Status == viperkv.StatusSecretDisabled && statusOf(t, p, "app.k13").Status == viperkv.StatusSecretNotFound
	})
	if p.GetString("app.k12") != "value-12" || p.GetString("app.k13") != "value-13" {
		t.Error("a disabled or deleted secret lost its last good value")
	}
	if err := kv.SetEnabled("s12", "", true); err != nil {
		t.Fatal(err)
	}

	kv.InjectFault(kvtest.OpListSecrets, kvtest.Fault{Status: 403})
	gets := kv.Count(kvtest.OpGetSecret)
	waitFor("GET fallback", func() bool { return kv.Count(kvtest.OpGetSecret) >= gets+40 })
	if n := strings.Count(logs.String(), "may not list"); n != 1 {
		t.Errorf("the fallback was logged %d times, want once:\n%s", n, logs.String())
	}
	waitFor("s12 enabled again", func() bool { return statusOf(t, p, "app.k12").Status == viperkv.StatusResolved })
	for _, st := range p.Status() {
		if st.Status != viperkv.StatusResolved && st.Key != "app.k13" {
			t.Errorf("%s: %s after the list was refused", st.Key, st.Status)
		}
	}
}
