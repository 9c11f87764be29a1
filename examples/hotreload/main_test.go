package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestHotReload runs the service with two rotations and checks each was served without a
// restart and that no key appears in its logs (fingerprints only).
func TestHotReload(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, log, "127.0.0.1:0", 300*time.Millisecond, 2); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if strings.Count(logs.String(), "configuration changed") < 2 {
		t.Errorf("fewer than two change events logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "key-") {
		t.Errorf("a key value appears in the logs:\n%s", logs.String())
	}
}
