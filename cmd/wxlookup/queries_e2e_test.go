package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"wxlookup/internal/mariadbtest"
)

// threeQueries configures location and stock over two MySQL tables, and order over the
// CSV file at ORDERS, selected by a regular expression.
const threeQueries = `
queries:
  - name: location
    prefix: ["?", "？"]
    table: workpiece_location
    key_column: part_no
    value_columns: [location]
    help: "?工件号：查工作台位"
  - name: stock
    prefix: ["#", "＃"]
    table: stock
    key_column: sku
    value_columns: [qty, bin]
    help: "#零件号：查库存"
    found: "[{{.Key}}] 库存{{.Column.qty}}件，货位{{.Column.bin}}"
  - name: order
    match: '^wo(\d{4})$'
    csv: ORDERS
    key_column: order_no
    value_columns: [status]
    help: "WO+工单号：查工单"
    found: "工单{{.Key}}：{{.Value}}"
`

// TestQueriesEndToEnd: two queries over two tables of a private MariaDB and one over a CSV
// file, through Main: each answers by its prefix or regex, the help lists them, each has its
// own metrics (query label), status section and freshness, and a change to the second table
// shows in its query.
func TestQueriesEndToEnd(t *testing.T) {
	srv := mariadbtest.Shared(t)
	ctx := context.Background()
	dsn, db := seededDB(t, srv, 100)
	for _, stmt := range []string{
		`CREATE TABLE stock (sku VARCHAR(64) NOT NULL PRIMARY KEY, qty INT NOT NULL, bin VARCHAR(32) NOT NULL,
		  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated_at))`,
		`INSERT INTO stock (sku, qty, bin) VALUES ('P-100', 120, 'A-01-03'), ('P-101', 45, 'A-01-04')`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	orders := writeFile(t, "orders.csv", "order_no,status\n0042,在制\n0043,完工\n")
	path := writeFile(t, "c.yaml", strings.Replace(threeQueries, "ORDERS", orders, 1))
	cfg, err := LoadConfig(path, envOf(map[string]string{"WXLOOKUP_MYSQL_DSN": dsn, "WXLOOKUP_TOKEN": e2eToken}))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RefreshInterval = 200 * time.Millisecond
	m := startMain(t, cfg)
	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken}
	help := "可以发送以下查询，一次可查多个，用空格、逗号或换行分开（最多10个）：\n?工件号：查工作台位\n#零件号：查库存\nWO+工单号：查工单"
	for _, tt := range []struct{ ask, want string }{
		{"?18-546", "[18-546]的工作台位为[车体新厂房3号]"},
		{"＃p-100 P-101", "[P-100] 库存120件，货位A-01-03\n[P-101] 库存45件，货位A-01-04"},
		{"#P-999", "[P-999]未找到，请核对工件号。"},
		{"WO0042", "工单0042：在制"},
		{"18-546", help},
	} {
		r, err := a.Ask(ctx, tt.ask)
		if err != nil || r.Content != tt.want {
			t.Errorf("%q: got %q %v, want %q", tt.ask, r.Content, err, tt.want)
		}
	}
	for _, tt := range []struct{ series, want string }{
		{`wxlookup_lookups_total{query="stock",result="found"}`, "2"},
		{`wxlookup_lookups_total{query="stock",result="not_found"}`, "1"},
		{`wxlookup_not_found_total{query="stock"}`, "1"},
		{`wxlookup_lookups_total{query="order",result="found"}`, "1"},
		{`wxlookup_lookups_total{query="location",result="found"}`, "1"},
		{`wxlookup_cache_entries{query="location"}`, "100"},
		{`wxlookup_cache_entries{query="stock"}`, "2"},
		{`wxlookup_cache_entries{query="order"}`, "2"},
	} {
		if got := metricValue(t, m, tt.series); got != tt.want {
			t.Errorf("%s = %q, want %s", tt.series, got, tt.want)
		}
	}
	if code, body := adminGet(t, m, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %q, want 200", code, body)
	}
	if names := statusQueries(t, m); !slices.Equal(names, []string{"location", "stock", "order"}) {
		t.Errorf("/status.json queries %q, want location, stock, order", names)
	}

	// A change to the stock table shows in the stock query.
	if _, err := db.Exec("UPDATE stock SET qty = 7 WHERE sku = 'P-100'"); err != nil {
		t.Fatal(err)
	}
	waitLine(t, m, "stock", "P-100", "[P-100] 库存7件，货位A-01-03")
	if r, err := a.Ask(ctx, "#P-100"); err != nil || r.Content != "[P-100] 库存7件，货位A-01-03" {
		t.Fatalf("after the stock change: got %q %v, want %q", r.Content, err, "[P-100] 库存7件，货位A-01-03")
	}
}

// statusQueries returns the names of the queries /status.json shows, in order.
func statusQueries(tb testing.TB, m *Main) []string {
	tb.Helper()
	_, body := adminGet(tb, m, "/status.json")
	var doc struct {
		Queries []struct {
			Name string `json:"name"`
			Live bool   `json:"live"`
		} `json:"queries"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		tb.Fatalf("/status.json: %v\n%s", err, body)
	}
	var names []string
	for _, q := range doc.Queries {
		names = append(names, q.Name)
	}
	return names
}

// TestDemoAnswersBothQueries is `make run` then `wxlookup ask "#P-100"` and `ask
// "?18-546"`: the demo's stock query and the implicit location query, both embedded.
func TestDemoAnswersBothQueries(t *testing.T) {
	cfg, err := LoadConfig("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	m := startMain(t, cfg)
	for _, tt := range []struct{ ask, want string }{
		{"#P-100", "[P-100]库存120件，货位A-01-03\n"},
		{"?18-546", "[18-546]的工作台位为[车体新厂房3号]\n"},
		{"18-546", "[18-546]的工作台位为[车体新厂房3号]\n"},
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{"ask", "--url", webhookURL(m, "/wx"), tt.ask}, &out, &errOut, envOf(nil)); err != nil {
			t.Fatalf("ask %q: %v\n%s", tt.ask, err, errOut.String())
		}
		if out.String() != tt.want {
			t.Errorf("ask %q: got %q, want %q", tt.ask, out.String(), tt.want)
		}
	}
	var banner bytes.Buffer
	m.printBanner(&banner)
	if !strings.Contains(banner.String(), "'#P-100'") {
		t.Errorf("the banner does not show the second query:\n%s", banner.String())
	}
}

// TestAuditLogEndToEnd: with WXLOOKUP_AUDIT_LOG the service writes one JSON line per
// answered message, flushed when it stops; with WXLOOKUP_AUDIT_HASH_KEY the OpenID is
// hashed. Nothing it started outlives Close but lumberjack's one goroutine (see
// server.NewAuditLog).
func TestAuditLogEndToEnd(t *testing.T) {
	t.Cleanup(func() {
		goleak.VerifyNone(t, goleak.IgnoreCurrent(),
			goleak.IgnoreTopFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
			goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
	})
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg, err := LoadConfig("", envOf(map[string]string{"WXLOOKUP_AUDIT_LOG": path, "WXLOOKUP_AUDIT_HASH_KEY": "k3y"}))
	if err != nil {
		t.Fatal(err)
	}
	m, closeMain := openMain(t, cfg)
	a := Asker{URL: webhookURL(m, "/wx"), Token: "demo", OpenID: "oAuditE2E"}
	for _, ask := range []string{"?18-546", "#P-100 #P-999", "帮助"} {
		if _, err := a.Ask(context.Background(), ask); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeMain(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type line struct {
		Query      string   `json:"query"`
		OpenID     *string  `json:"openid"`
		OpenIDHash string   `json:"openid_hash"`
		Text       string   `json:"text"`
		Keys       []string `json:"keys"`
		Result     string   `json:"result"`
	}
	var got []line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, l)
	}
	want := []line{
		{Query: "location", Text: "?18-546", Keys: []string{"18-546"}, Result: "found"},
		{Query: "stock", Text: "#P-100 #P-999", Keys: []string{"p-100", "p-999"}, Result: "not_found"},
		{Query: "", Text: "帮助", Keys: []string{}, Result: "help"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Query != w.Query || g.Text != w.Text || !slices.Equal(g.Keys, w.Keys) || g.Result != w.Result {
			t.Errorf("line %d: got %+v, want %+v", i, g, w)
		}
		if g.OpenID != nil || len(g.OpenIDHash) != 32 {
			t.Errorf("line %d: openid %v, hash %q; want only a 32-digit hash", i, g.OpenID, g.OpenIDHash)
		}
	}
}
