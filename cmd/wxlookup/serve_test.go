package main

import (
	"context"
	"strings"
	"testing"
)

// runOn runs the demo service with the webhook on listen (the admin listener on a free
// loopback port) and returns Run's error; a Main that started is closed when the test ends.
func runOn(t *testing.T, listen string, reusePort bool) (*Main, error) {
	t.Helper()
	cfg, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.AdminListen, cfg.ReusePort = listen, "127.0.0.1:0", reusePort
	m := NewMain(cfg)
	m.Logger = testLogger(t)
	err = m.Run(context.Background())
	t.Cleanup(func() { m.Close() })
	return m, err
}

// TestSecondServerOnSamePort: a second `wxlookup serve` on a port in use fails with
// "address already in use", naming WXLOOKUP_LISTEN, unless both set WXLOOKUP_REUSE_PORT
// (a zero-downtime handover), when both listen.
func TestSecondServerOnSamePort(t *testing.T) {
	tests := []struct {
		name      string
		reusePort bool
		wantErr   string // "" when the second must start
	}{
		{"default refuses", false, "address already in use"},
		{"reuse port shares", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, err := runOn(t, "127.0.0.1:0", tt.reusePort)
			if err != nil {
				t.Fatalf("first server: %v", err)
			}
			_, err = runOn(t, first.WebhookAddr.String(), tt.reusePort)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("second server with WXLOOKUP_REUSE_PORT: got %v, want it to share the port", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("second server on %s started, want %q", first.WebhookAddr, tt.wantErr)
			case tt.wantErr != "" && (!strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "WXLOOKUP_LISTEN")):
				t.Fatalf("got %q, want an error naming WXLOOKUP_LISTEN and %q", err, tt.wantErr)
			}
		})
	}
}

// TestAdminPortNeverShared: the admin listener never shares its port, even with
// WXLOOKUP_REUSE_PORT (a successor uses another admin port, docs/OPERATIONS.md).
func TestAdminPortNeverShared(t *testing.T) {
	first, err := runOn(t, "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.AdminListen, cfg.ReusePort = "127.0.0.1:0", first.AdminAddr.String(), true
	m := NewMain(cfg)
	m.Logger = testLogger(t)
	err = m.Run(context.Background())
	t.Cleanup(func() { m.Close() })
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "WXLOOKUP_ADMIN_LISTEN") {
		t.Fatalf("got %v, want an error naming WXLOOKUP_ADMIN_LISTEN and address already in use", err)
	}
}
