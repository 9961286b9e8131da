package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"wxlookup/internal/logtest"
	"wxlookup/internal/mariadbtest"
)

// TestServeStopsOnWrongMapping: with MySQL reachable, `wxlookup serve` with a table or
// column name that does not exist stops at once with one line naming the setting.
func TestServeStopsOnWrongMapping(t *testing.T) {
	srv := mariadbtest.Shared(t)
	dsn, _ := seededDB(t, srv, 10)
	const columns = " (columns: part_no, location, updated_at)"
	tests := []struct {
		name, setting, value string
		want                 string
	}{
		{"updated column", "WXLOOKUP_UPDATED_COLUMN", "updatd_at",
			`WXLOOKUP_UPDATED_COLUMN: no column "updatd_at" in table workpiece_location` + columns},
		{"key column", "WXLOOKUP_KEY_COLUMN", "part_number",
			`WXLOOKUP_KEY_COLUMN: no column "part_number" in table workpiece_location` + columns},
		{"value columns", "WXLOOKUP_VALUE_COLUMNS", "location,bay",
			`WXLOOKUP_VALUE_COLUMNS: no column "bay" in table workpiece_location` + columns},
		{"table", "WXLOOKUP_TABLE", "workpiece_locations",
			`WXLOOKUP_TABLE: no table "workpiece_locations" in database ` + dsnDatabase(t, dsn) + " (tables: workpiece_location)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"WXLOOKUP_MYSQL_DSN": dsn, "WXLOOKUP_TOKEN": e2eToken,
				"WXLOOKUP_LISTEN": "127.0.0.1:0", "WXLOOKUP_ADMIN_LISTEN": "127.0.0.1:0",
				tt.setting: tt.value,
			}
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"serve"}, &out, &errOut, envOf(env))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if strings.Contains(out.String(), "listening") {
				t.Fatalf("got a start banner, want none:\n%s", out.String())
			}
		})
	}
}

// TestStartMappingNotChecked: an unreachable MySQL does not stop start-up (the loader
// retries) and says so in one line; a warning of the check (no index on the updated
// column) is logged, naming the setting, and start-up goes on.
func TestStartMappingNotChecked(t *testing.T) {
	srv := mariadbtest.Shared(t)
	dsn := srv.CreateDatabase(t)
	srv.Exec(t, dsnDatabase(t, dsn), "CREATE TABLE bays (part_no VARCHAR(64) PRIMARY KEY, location VARCHAR(64), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	down, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	down.Addr = closed
	tests := []struct {
		name, dsn, table string
		want             string // the one log line
	}{
		{"MySQL unreachable", down.FormatDSN(), "", "cannot check the table mapping now; starting anyway, the loader retries"},
		{"no index on the updated column", dsn, "bays", "WXLOOKUP_UPDATED_COLUMN: updated_at has no index, so every refresh reads the whole table bays"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MySQLDSN, cfg.Token = tt.dsn, e2eToken
			if tt.table != "" {
				cfg.Table = tt.table
			}
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
			m := NewMain(cfg)
			log := &logtest.Buffer{}
			m.Logger = slog.New(slog.NewTextHandler(log, nil))
			if err := m.Run(context.Background()); err != nil {
				m.Close()
				t.Fatalf("Run: %v", err)
			}
			// It answers; and the webhook's Serve is running, which Close waits for.
			a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, OpenID: "oMapping"}
			if _, err := a.Ask(context.Background(), "?18-546"); err != nil {
				t.Errorf("Ask: %v", err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if n := strings.Count(log.String(), tt.want); n != 1 {
				t.Fatalf("got %d lines %q, want 1 in:\n%s", n, tt.want, log.String())
			}
		})
	}
}

func dsnDatabase(tb testing.TB, dsn string) string {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg.DBName
}
