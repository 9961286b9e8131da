package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/internal/mariadbtest"
)

// TestBinlogFeedEndToEnd: with WXLOOKUP_CHANGE_FEED=binlog the service follows the row
// binary log: inserts, updates and deletes committed in MySQL are answered without any
// refresh being asked for, and /status.json says where the feed is.
func TestBinlogFeedEndToEnd(t *testing.T) {
	srv := mariadbtest.SharedBinlog(t)
	dsn, db := seededDB(t, srv, 200) // root: SELECT and the replication grants
	cfg := DefaultConfig()
	cfg.MySQLDSN, cfg.Token, cfg.ChangeFeed = dsn, e2eToken, feedBinlog
	cfg.UpdatedColumn = "no_such_column" // the binlog feed needs no updated column
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	ctx := context.Background()
	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken, OpenID: "oBinlog"}
	for _, stmt := range []string{
		"UPDATE workpiece_location SET location = '新位置' WHERE part_no = '18-546'",
		"INSERT INTO workpiece_location (part_no, location) VALUES ('ZZ-001', '新库位')",
		"DELETE FROM workpiece_location WHERE part_no = 'A7-001'",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ ask, want string }{
		{"18-546", "[18-546]的工作台位为[新位置]"},
		{"zz-001", "[ZZ-001]的工作台位为[新库位]"},
		{"A7-001", "[A7-001]未找到，请核对工件号。"},
	} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := a.Ask(ctx, tt.ask)
			if err != nil {
				t.Fatal(err)
			}
			if r.Content == tt.want || strings.HasPrefix(r.Content, tt.want+"\n您是不是要找：") {
				break // a not-found reply may go on with suggestions
			}
			if time.Now().After(deadline) {
				t.Fatalf("ask %q: got %q 10s after the commit, want %q", tt.ask, r.Content, tt.want)
			}
		}
	}
	if got := metricValue(t, m, `wxlookup_changefeed_events_total{op="delete",query="location"}`); got != "1" {
		t.Errorf("got %q deletes applied, want 1", got)
	}
	_, body := adminGet(t, m, "/status.json")
	var doc struct {
		Queries []struct {
			Name     string `json:"name"`
			Feed     string `json:"change_feed"`
			Position string `json:"position"`
		} `json:"queries"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || len(doc.Queries) != 1 || doc.Queries[0].Name != "location" {
		t.Fatalf("status.json: %v, want the one query location:\n%s", err, body)
	}
	if st := doc.Queries[0]; st.Feed != "binlog" || !strings.Contains(st.Position, ":") {
		t.Errorf("status.json: got change feed %q, position %q; want binlog and a file:pos", st.Feed, st.Position)
	}
}

// TestBinlogFeedRefusedWithoutBinlog: against a server whose binary log is off, `wxlookup
// serve` with the binlog feed stops at start-up with one line that says what to change.
func TestBinlogFeedRefusedWithoutBinlog(t *testing.T) {
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 10)
	var on string
	if err := db.QueryRow("SELECT @@log_bin").Scan(&on); err != nil {
		t.Fatal(err)
	}
	if on != "0" {
		t.Fatalf("the shared test server has log_bin=%s; this test needs one without a binary log", on)
	}
	env := map[string]string{
		"WXLOOKUP_MYSQL_DSN": dsn, "WXLOOKUP_TOKEN": e2eToken, "WXLOOKUP_CHANGE_FEED": "binlog",
		"WXLOOKUP_LISTEN": "127.0.0.1:0", "WXLOOKUP_ADMIN_LISTEN": "127.0.0.1:0",
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve"}, &out, &errOut, envOf(env))
	if err == nil || !strings.HasPrefix(err.Error(), "WXLOOKUP_CHANGE_FEED=binlog: ") || !strings.Contains(err.Error(), "log_bin") {
		t.Fatalf("got %v, want a start-up error naming WXLOOKUP_CHANGE_FEED=binlog and log_bin", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

// TestQueriesShareOneBinlogStream: with the binlog feed, the queries over two tables follow
// one replication connection (SPEC section 10): the server shows one binlog dump, and a
// commit to either table reaches its query.
func TestQueriesShareOneBinlogStream(t *testing.T) {
	srv := mariadbtest.SharedBinlog(t)
	dsn, db := seededDB(t, srv, 50)
	ctx := context.Background()
	for _, stmt := range []string{
		`CREATE TABLE stock (sku VARCHAR(64) NOT NULL PRIMARY KEY, qty INT NOT NULL, bin VARCHAR(32) NOT NULL)`,
		`INSERT INTO stock (sku, qty, bin) VALUES ('P-100', 120, 'A-01-03')`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	path := writeFile(t, "c.yaml", `
queries:
  - name: location
    prefix: ["?"]
    table: workpiece_location
    key_column: part_no
    value_columns: [location]
  - name: stock
    prefix: ["#"]
    table: stock
    key_column: sku
    value_columns: [qty, bin]
    found: "[{{.Key}}] 库存{{.Column.qty}}件，货位{{.Column.bin}}"
`)
	// A replication account of its own, so that its dump connections can be counted
	// whatever else follows the shared server.
	srv.Exec(t, "", "CREATE USER IF NOT EXISTS 'wxt_stream'@'%' IDENTIFIED BY 'stream-pass'",
		"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'wxt_stream'@'%'")
	repl, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	repl.User, repl.Passwd = "wxt_stream", "stream-pass"
	cfg, err := LoadConfig(path, envOf(map[string]string{"WXLOOKUP_MYSQL_DSN": dsn, "WXLOOKUP_TOKEN": e2eToken,
		"WXLOOKUP_CHANGE_FEED": "binlog", "WXLOOKUP_BINLOG_SERVER_ID": "4242", "WXLOOKUP_BINLOG_DSN": repl.FormatDSN()}))
	if err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken}
	for _, stmt := range []string{
		"UPDATE workpiece_location SET location = '流' WHERE part_no = '18-546'",
		"UPDATE stock SET qty = 7 WHERE sku = 'P-100'",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ ask, want string }{
		{"?18-546", "[18-546]的工作台位为[流]"},
		{"#P-100", "[P-100] 库存7件，货位A-01-03"},
	} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := a.Ask(ctx, tt.ask)
			if err != nil {
				t.Fatal(err)
			}
			if r.Content == tt.want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ask %q: got %q 10s after the commit, want %q", tt.ask, r.Content, tt.want)
			}
		}
	}
	var dumps int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'wxt_stream' AND COMMAND LIKE 'Binlog Dump%'").Scan(&dumps); err != nil {
		t.Fatal(err)
	}
	if dumps != 1 {
		t.Errorf("got %d binlog dump connections for two queries, want 1", dumps)
	}
}
