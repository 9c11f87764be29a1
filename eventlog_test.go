package viperkv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/viperkv/viperkv/internal/logtest"
)

// TestEventLogLinesSayOnlyWhatHappened: a failed refresh logs the one version it keeps
// (not old_version=X new_version=X), a file that does not parse logs no empty keys or
// status, and a rotation logs both versions.
func TestEventLogLinesSayOnlyWhatHappened(t *testing.T) {
	var logs logtest.Buffer
	src := newFakeSource()
	src.set("myvault", "pw", "pw-v1")
	p := loadFake(t, src, "db:\n  pw: \"@KeyVault(VaultName=myvault;SecretName=pw)\"\n",
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	v1 := p.Status()[0].Version
	ctx := context.Background()

	src.fail("myvault", "pw", StatusAccessToKeyVaultDenied, "GET pw: 403 Forbidden (ForbiddenByRbac)")
	_ = p.Refresh(ctx)
	src.heal("myvault", "pw")
	src.set("myvault", "pw", "pw-v2")
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	v2 := p.Status()[0].Version
	err := p.loadFile(ctx, []byte("db: [\n  unclosed\n"))
	if err == nil {
		t.Fatal("a file that does not parse loaded")
	}
	p.fileError(&fileWatcher{path: "config.yaml"}, fmt.Errorf("config file config.yaml: %w", err))
	p.notify.Close() // every event logged

	var failed, rotated, file string
	for _, line := range strings.Split(logs.String(), "\n") {
		switch {
		case strings.Contains(line, "update failed") && strings.Contains(line, "secret=pw"):
			failed = line
		case strings.Contains(line, "update failed") && strings.Contains(line, "config.yaml"):
			file = line
		case strings.Contains(line, "msg=\"viperkv: changed\""):
			rotated = line
		}
	}
	if !strings.Contains(failed, "version="+v1) || strings.Contains(failed, "old_version") || !strings.Contains(failed, "status=AccessToKeyVaultDenied") {
		t.Errorf("failed refresh logged as\n%s\nwant version=%s once and the status", failed, v1)
	}
	if file == "" || strings.Contains(file, "keys=") || strings.Contains(file, "status=") {
		t.Errorf("file error logged as\n%s\nwant neither empty keys nor an empty status", file)
	}
	if !strings.Contains(rotated, "old_version="+v1) || !strings.Contains(rotated, "new_version="+v2) || !strings.Contains(rotated, "keys=[db.pw]") {
		t.Errorf("rotation logged as\n%s\nwant both versions and the key", rotated)
	}
}
