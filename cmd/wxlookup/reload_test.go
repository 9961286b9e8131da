package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"wxlookup/internal/logtest"
	"wxlookup/server"
)

// csvQueries writes the CSV files of three queries and returns the config files' query
// entries by name: stock (#), order (regex) and location (catch-all, last).
func csvQueries(tb testing.TB) map[string]string {
	tb.Helper()
	loc := writeFile(tb, "loc.csv", "part_no,location\n18-546,车体新厂房3号\nA7-001,总装车间A区12排\n")
	stock := writeFile(tb, "stock.csv", "sku,qty,bin\nP-100,120,A-01-03\n")
	orders := writeFile(tb, "orders.csv", "order_no,status\n0042,在制\n")
	return map[string]string{
		"stock": "  - name: stock\n    prefix: [\"#\"]\n    csv: " + stock +
			"\n    key_column: sku\n    value_columns: [qty, bin]\n    found: \"[{{.Key}}] 库存{{.Column.qty}}件\"\n",
		"order": "  - name: order\n    match: '^wo(\\d{4})$'\n    csv: " + orders +
			"\n    key_column: order_no\n    value_columns: [status]\n    found: \"工单{{.Key}}：{{.Value}}\"\n",
		"location": "  - name: location\n    csv: " + loc + "\n    key_column: part_no\n    value_columns: [location]\n",
	}
}

// queriesFile is a config file with the named entries of qs, in order.
func queriesFile(qs map[string]string, names ...string) string {
	s := "queries:\n"
	for _, n := range names {
		s += qs[n]
	}
	return s
}

// startFromFile runs Main on the configuration file content, with ReloadConfig reading
// that file again.
func startFromFile(tb testing.TB, content string) (*Main, string) {
	tb.Helper()
	path := writeFile(tb, "wxlookup.yaml", content)
	env := map[string]string{"WXLOOKUP_TOKEN": e2eToken, "WXLOOKUP_ADMIN_TOKEN": "admin-secret", "WXLOOKUP_RATE_LIMIT": "0",
		"WXLOOKUP_LISTEN": "127.0.0.1:0", "WXLOOKUP_ADMIN_LISTEN": "127.0.0.1:0"}
	cfg, err := LoadConfig(path, envOf(env))
	if err != nil {
		tb.Fatal(err)
	}
	m := startMain(tb, cfg)
	m.ConfigPath, m.Getenv = path, envOf(env)
	return m, path
}

// TestConfigReloadUnderLoad: while many senders post signed messages (a fresh nonce each)
// to every query, POST /admin/reload-config adds a query and removes another: no request
// fails, the added query answers once its first load completes, and the removed one no
// longer does.
func TestConfigReloadUnderLoad(t *testing.T) {
	qs := csvQueries(t)
	m, path := startFromFile(t, queriesFile(qs, "stock", "location"))
	base := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken}

	const senders, perSender = 8, 150
	var failures, answered atomic.Int64
	var first sync.Once
	var firstFailure string
	var wg sync.WaitGroup
	stop := make(chan struct{})
	deadline := time.Now().Add(45 * time.Second)
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := base
			a.Client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
			defer a.Client.CloseIdleConnections()
			asks := []string{"?18-546", "#P-100", "WO0042"}
			for j := 0; j < perSender && time.Now().Before(deadline); j++ {
				select {
				case <-stop:
					return
				default:
				}
				a.OpenID = fmt.Sprintf("oReload%02d_%04d", i, j)
				r, err := a.Ask(context.Background(), asks[j%len(asks)])
				if err != nil || refusals[r.Outcome] || r.Outcome == "" {
					failures.Add(1)
					first.Do(func() { firstFailure = fmt.Sprintf("%q %s %v", r.Content, r.Outcome, err) })
					continue
				}
				answered.Add(1)
			}
		}()
	}
	// Let the senders get going, then change the set.
	eventually(t, func() string { return "the senders' first 50 answers" }, func() bool { return answered.Load() >= 50 })
	if err := os.WriteFile(path, []byte(queriesFile(qs, "order", "location")), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := reloadConfig(t, m)
	var change server.ConfigChange
	if err := json.Unmarshal([]byte(body), &change); code != http.StatusOK || err != nil ||
		strings.Join(change.Added, ",") != "order" || strings.Join(change.Removed, ",") != "stock" || strings.Join(change.Unchanged, ",") != "location" {
		t.Fatalf("reload-config: %d %s, want 200 with order added, stock removed, location unchanged", code, body)
	}
	waitAnswer(t, base, "WO0042", "工单0042：在制")
	if r, err := base.Ask(context.Background(), "#P-100"); err != nil || r.Content != "[#P-100]未找到，请核对工件号。" {
		t.Errorf("the removed query: got %q %v, want the catch-all's not-found", r.Content, err)
	}
	wg.Wait()
	close(stop)
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the reload, the first: %s", n, n+answered.Load(), firstFailure)
	}
	if names := statusQueries(t, m); strings.Join(names, ",") != "order,location" {
		t.Errorf("/status.json queries %q, want order, location", names)
	}
	if got := metricValue(t, m, `wxlookup_cache_entries{query="order"}`); got != "1" {
		t.Errorf(`wxlookup_cache_entries{query="order"} = %q, want 1`, got)
	}
	if got := metricValue(t, m, `wxlookup_cache_entries{query="stock"}`); got != "" {
		t.Errorf(`wxlookup_cache_entries{query="stock"} = %q after its removal, want no series`, got)
	}
}

// TestConfigReloadRefused: a file that does not validate, or whose new query cannot be
// opened, is refused with one line (the admin route's 400 body, and the log), and the
// running queries stay; a changed query is answered by its old version until the new one
// has loaded, then by the new one.
func TestConfigReloadRefused(t *testing.T) {
	qs := csvQueries(t)
	m, path := startFromFile(t, queriesFile(qs, "stock", "location"))
	log := &logtest.Buffer{}
	m.Logger = slog.New(slog.NewTextHandler(log, nil))
	a := Asker{URL: webhookURL(m, "/wx"), Token: e2eToken}
	tests := []struct {
		name, file, want string
	}{
		{"overlapping prefixes", queriesFile(qs, "stock") + strings.Replace(qs["order"], "match: '^wo(\\d{4})$'", "prefix: [\"＃\"]", 1) + qs["location"],
			`config: query "order": prefix: "#" overlaps "#" of query "stock"`},
		{"a CSV file that is not there", queriesFile(qs, "stock") + strings.Replace(qs["order"], "orders.csv", "nowhere.csv", 1) + qs["location"],
			`query "order": store: open csv:`},
		{"not YAML", "queries: [\n", "config: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			log.Reset()
			code, body := reloadConfig(t, m)
			if code != http.StatusBadRequest || !strings.Contains(body, tt.want) || strings.Count(strings.TrimSpace(body), "\n") > 0 {
				t.Errorf("got %d %q, want 400 and one line with %q", code, body, tt.want)
			}
			if n := strings.Count(log.String(), "config reload refused"); n != 1 {
				t.Errorf("logged %d refusals, want 1:\n%s", n, log.String())
			}
			if r, err := a.Ask(context.Background(), "#P-100"); err != nil || r.Content != "[P-100] 库存120件" {
				t.Errorf("after the refusal: %q %v, want the running stock query's answer", r.Content, err)
			}
		})
	}
	// A change: the old version answers until the new one is live.
	changed := strings.Replace(qs["stock"], "库存{{.Column.qty}}件", "现有{{.Column.qty}}件", 1)
	if err := os.WriteFile(path, []byte("queries:\n"+changed+qs["location"]), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := reloadConfig(t, m); code != http.StatusOK || !strings.Contains(body, `"changed":["stock"]`) {
		t.Fatalf("reload-config: %d %s, want stock changed", code, body)
	}
	waitAnswer(t, a, "#P-100", "[P-100] 现有120件")
}

// TestSIGHUPReloadsQueries: `wxlookup serve` re-reads its file on SIGHUP: a query added
// there answers once loaded; an invalid file is refused with one log line, and the running
// queries stay.
func TestSIGHUPReloadsQueries(t *testing.T) {
	qs := csvQueries(t)
	path := writeFile(t, "wxlookup.yaml", queriesFile(qs, "location"))
	env := map[string]string{"WXLOOKUP_TOKEN": e2eToken, "WXLOOKUP_LISTEN": "127.0.0.1:0", "WXLOOKUP_ADMIN_LISTEN": "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &logtest.Buffer{}, &logtest.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", path}, stdout, stderr, envOf(env)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	url := regexp.MustCompile(`webhook: (http://\S+)`)
	eventually(t, func() string { return "the banner:\n" + stdout.String() + stderr.String() },
		func() bool { return url.MatchString(stdout.String()) })
	a := Asker{URL: url.FindStringSubmatch(stdout.String())[1], Token: e2eToken}
	waitAnswer(t, a, "18-546", "[18-546]的工作台位为[车体新厂房3号]")

	if err := os.WriteFile(path, []byte(queriesFile(qs, "stock", "location")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, a, "#P-100", "[P-100] 库存120件")

	if err := os.WriteFile(path, []byte(queriesFile(qs, "location", "stock")), 0o600); err != nil { // catch-all not last
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() string { return "a refusal logged:\n" + stderr.String() },
		func() bool { return strings.Contains(stderr.String(), "config reload refused") })
	if n := strings.Count(stderr.String(), "config reload refused"); n != 1 {
		t.Errorf("%d refusal lines, want 1", n)
	}
	if !strings.Contains(stderr.String(), `query \"location\": prefix: a query with neither prefix nor match`) {
		t.Errorf("the refusal does not say why:\n%s", stderr.String())
	}
	waitAnswer(t, a, "#P-100", "[P-100] 库存120件")
}
