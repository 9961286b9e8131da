package main

// What the end-to-end tests of the package share: a database seeded with the demo rows, the
// whole service running on loopback, its admin listener, and waiting for an outcome.

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

// seededDB creates a database on srv holding the default table with rows demo rows
// (store.Seed), and returns its root DSN and a pool on it, closed when the test ends.
func seededDB(tb testing.TB, srv *mariadbtest.Server, rows int) (string, *sql.DB) {
	tb.Helper()
	dsn := srv.CreateDatabase(tb)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := store.Seed(context.Background(), db, rows); err != nil {
		tb.Fatal(err)
	}
	return dsn, db
}

// startMain runs the whole service on 127.0.0.1:0, waits for the first load, and closes
// it when the test ends.
func startMain(tb testing.TB, cfg Config) *Main {
	tb.Helper()
	m, _ := openMain(tb, cfg)
	return m
}

// openMain is startMain for a test that closes the service itself: closeMain closes it
// once and returns Close's error; the end of the test closes it only if closeMain did not.
func openMain(tb testing.TB, cfg Config) (m *Main, closeMain func() error) {
	tb.Helper()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	m = NewMain(cfg)
	m.Logger = testLogger(tb)
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		tb.Fatal(err)
	}
	closeMain = sync.OnceValue(m.Close)
	tb.Cleanup(func() {
		if err := closeMain(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.WaitReady(ctx); err != nil {
		tb.Fatalf("first load: %v", err)
	}
	return m, closeMain
}

// testLogger sends the service's log to the test's log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// webhookURL is the URL of path on the service's webhook listener.
func webhookURL(m *Main, path string) string { return "http://" + m.WebhookAddr.String() + path }

// adminGet fetches an admin path, with the admin token when the service has one.
func adminGet(tb testing.TB, m *Main, path string) (int, string) {
	tb.Helper()
	return adminDo(tb, m, http.MethodGet, path)
}

// reloadConfig posts to /admin/reload-config and returns the status and body.
func reloadConfig(tb testing.TB, m *Main) (int, string) {
	tb.Helper()
	return adminDo(tb, m, http.MethodPost, "/admin/reload-config")
}

// adminDo sends a request without a body to the admin listener, with the admin token when
// the service has one, and returns the status and body.
func adminDo(tb testing.TB, m *Main, method, path string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, "http://"+m.AdminAddr.String()+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if m.Config.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+m.Config.AdminToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue reads one sample from /metrics: name with its labels as written, e.g.
// `wxlookup_rejected_total{reason="signature"}`.
func metricValue(tb testing.TB, m *Main, series string) string {
	tb.Helper()
	_, body := adminGet(tb, m, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// eventually polls cond every 10 ms until it holds, or fails the test after 30 s saying
// what it waited for.
func eventually(tb testing.TB, what func() string, cond func() bool) {
	tb.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); !cond(); <-tick.C {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting: %s", what())
		}
	}
}

// waitAnswer asks text until the reply is want.
func waitAnswer(tb testing.TB, a Asker, text, want string) {
	tb.Helper()
	var got string
	var err error
	eventually(tb, func() string { return fmt.Sprintf("%q: still %q %v, want %q", text, got, err, want) }, func() bool {
		var r Reply
		r, err = a.Ask(context.Background(), text)
		got = r.Content
		return err == nil && got == want
	})
}

// waitLine polls the cache of query q until key's line is want, or fails the test after
// 30 s: the loader applies a change on its own schedule (the refresh interval, or the
// binary log), so a test waits for the outcome rather than asks for a step.
func waitLine(tb testing.TB, m *Main, q, key, want string) {
	tb.Helper()
	c := m.QueryCache(q)
	if c == nil {
		tb.Fatalf("no query %q", q)
	}
	k := cache.AppendKey(nil, []byte(key))
	var got string
	var err error
	eventually(tb, func() string { return fmt.Sprintf("query %s, key %q: line %q %v, want %q", q, key, got, err, want) }, func() bool {
		var line []byte
		line, _, _, err = c.Lookup(context.Background(), k)
		got = string(line)
		return err == nil && got == want
	})
}
