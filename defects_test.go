package viperkv

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spf13/viper"
)

// Defect: WithFetchTimeout(0) made every Load fail (a zero deadline); it is refused by New,
// naming the option.
func TestWithFetchTimeoutZeroIsRefused(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		if _, err := New(viper.New(), WithFetchTimeout(d)); err == nil || !strings.Contains(err.Error(), "WithFetchTimeout") {
			t.Errorf("New with WithFetchTimeout(%v): %v, want an error naming the option", d, err)
		}
	}
}

// Defect: WithLogger(nil) panicked at the first log line; nil discards logs.
func TestWithLoggerNilDiscards(t *testing.T) {
	src := newFakeSource()
	src.set("myvault", "s", "v")
	p := newFakeProvider(t, src, YAMLViper(t, "k: \"@KeyVault(VaultName=myvault;SecretName=s)\"\nbad: \"@KeyVault(VaultName=x)\"\n"), WithLogger(nil))
	if err := p.Load(context.Background()); err == nil {
		t.Fatal("Load with a malformed reference: no error (the Warn path was not taken)")
	}
	if p.GetString("k") != "v" {
		t.Errorf("k = %q", p.GetString("k"))
	}
}

// Defect: LoadError.Error() carried NUL bytes and invalid UTF-8 from the configuration
// verbatim into logs. Keys and references that are not printable are quoted with escapes.
func TestLoadErrorIsPrintable(t *testing.T) {
	src := newFakeSource()
	v := viper.New()
	v.Set("nul\x00key\xff", "@KeyVault(VaultName=myvault;SecretName=absent)")
	v.Set("esc\x1b[31m", "@KeyVault(VaultName=x)")
	p := newFakeProvider(t, src, v)
	err := p.Load(context.Background())
	var le *LoadError
	if !errors.As(err, &le) || len(le.Failed) != 2 {
		t.Fatalf("Load = %v, want a LoadError for both keys", err)
	}
	msg := err.Error()
	if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\x00\x1b") {
		t.Errorf("the error carries control characters or invalid UTF-8: %q", msg)
	}
	if !strings.Contains(msg, `"nul\x00key`) {
		t.Errorf("the key is not named, escaped: %q", msg)
	}
}

// Defect: Notify kept every event id whole: the memory for recent ids was bounded by their
// count (4,096), not their size, so long ids pinned megabytes. It keeps digests.
func TestNoticeIDsAreSizeBounded(t *testing.T) {
	src, p, v1 := pushSetup(t)
	_ = src
	long := strings.Repeat("x", 64<<10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1000 {
		// The version held: remembered as handled, without a fetch.
		if err := p.Notify(context.Background(), Notice{Type: NoticeNewVersion, ID: fmt.Sprint(i, long),
			Vault: "myvault", Name: "conn", Version: v1}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 16<<20 {
		t.Errorf("1,000 notices with 64 KB ids keep %d MB: ids are held whole", grew>>20)
	}
	if !p.push.SeenID(fmt.Sprint(999, long)) || p.push.SeenID(fmt.Sprint(1000, long)) {
		t.Error("a remembered id is not recognized (or an unseen one is)")
	}
}
