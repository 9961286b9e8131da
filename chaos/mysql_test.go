package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

const (
	chaosToken = "chaos-token-3f9a1c"
	chaosAppID = "wx5f0c1e2d3b4a6978"
	chaosKey   = "k7Qm2Xv9Rb4Tz1Hn8Lc5Wd3Fg6Jp0Ys2Ue7Ai4Oo9Qz"
	seedRows   = 2000
	loadKeys   = 200 // the load asks DemoRow(0 … loadKeys-1); updates go to rows after them
)

// seededDatabase starts a private MariaDB with a database of seedRows demo rows and returns
// the server, a root DSN selecting the database, and a connection as root.
func seededDatabase(t *testing.T) (*mariadbtest.Server, string, *sql.DB) {
	t.Helper()
	srv := mariadbtest.Start(t)
	dsn := srv.CreateDatabase(t)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := store.Seed(ctx, db, seedRows); err != nil {
		t.Fatal(err)
	}
	return srv, dsn, db
}

// askRows returns a load function asking for DemoRow(0 … loadKeys-1) in turn, half the
// workers in safe mode, and checking every reply's content.
func askRows(plain, safe *wxClient) func(ctx context.Context, worker, seq int) error {
	return func(ctx context.Context, worker, seq int) error {
		i := (worker*7919 + seq) % loadKeys
		k, v := store.DemoRow(i)
		c := plain
		if worker%2 == 1 {
			c = safe
		}
		got, err := c.ask(ctx, fmt.Sprintf("oChaos%d", worker), "?"+k)
		if err != nil {
			return err
		}
		if want := found(k, v); got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
}

// loaderErrors sums wxlookup_loader_errors_total.
func loaderErrors(s *service) float64 { return s.metric("wxlookup_loader_errors_total") }

// TestMySQLKilledUnderLoad: MariaDB is killed (SIGKILL) and restarted three times while
// signed requests flow. Every reply is answered correctly from the cache; each outage is
// counted in wxlookup_loader_errors_total; after each restart the loader recovers
// (staleness back under a second) and a row updated after the restart becomes visible.
func TestMySQLKilledUnderLoad(t *testing.T) {
	t.Parallel()
	srv, dsn, db := seededDatabase(t)
	svc := startService(t, "wxlookup", map[string]string{
		"WXLOOKUP_MYSQL_DSN": dsn, "WXLOOKUP_TOKEN": chaosToken, "WXLOOKUP_APPID": chaosAppID,
		"WXLOOKUP_AES_KEY": chaosKey, "WXLOOKUP_REQUIRE_ENCRYPTION": "false", "WXLOOKUP_REFRESH_INTERVAL": "200ms", "WXLOOKUP_RATE_LIMIT": "0",
	})
	svc.waitReady(time.Minute)
	plain := newClient(svc.Webhook, chaosToken, chaosAppID, "")
	safe := newClient(svc.Webhook, chaosToken, chaosAppID, chaosKey)

	cycles := 3
	if longRun() {
		cycles = 10
	}
	l := startLoad(loadConfig{Rate: 200, Workers: 4, MaxSent: 200_000, MaxTime: 5 * time.Minute}, askRows(plain, safe))
	var recoveries []time.Duration
	for c := range cycles {
		if !l.waitSent(50, 10*time.Second) {
			t.Fatalf("cycle %d: the load stalled", c)
		}
		before := loaderErrors(svc)
		srv.Kill(t)
		svc.waitFor(15*time.Second, "a loader error counted for the outage", func() bool { return loaderErrors(svc) > before })
		if !l.waitSent(100, 15*time.Second) {
			t.Fatalf("cycle %d: the load stalled while MySQL was down", c)
		}
		srv.Restart(t)
		up := time.Now()
		svc.waitFor(15*time.Second, "staleness under 1s after the restart", func() bool {
			return svc.metric("wxlookup_loader_staleness_seconds") < 1
		})
		recoveries = append(recoveries, time.Since(up))

		// A row changed after the restart reaches the replies.
		k, _ := store.DemoRow(loadKeys + c)
		loc := fmt.Sprintf("故障后第%d次更新", c+1)
		if _, err := db.Exec("UPDATE workpiece_location SET location = ? WHERE part_no = ?", loc, k); err != nil {
			t.Fatalf("cycle %d: update: %v", c, err)
		}
		var got string
		svc.waitFor(10*time.Second, "the update in the replies", func() bool {
			got, _ = plain.ask(context.Background(), "oChaosCheck", "?"+k)
			return got == found(k, loc)
		})
	}
	f := l.Stop()
	errs := loaderErrors(svc)
	report(t, "mysql-kill-restart", f, fmt.Sprintf("cycles=%d loader_errors=%.0f recovered_in=%v", cycles, errs, roundAll(recoveries)))
	if errs < float64(cycles) {
		t.Errorf("wxlookup_loader_errors_total = %v, want at least one per outage (%d)", errs, cycles)
	}
	if p99 := f.P99; p99 > 250*time.Millisecond {
		t.Errorf("p99 %s across the outages, want replies unaffected (< 250ms)", p99)
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// faultProxy is a toxiproxy TCP proxy on loopback in front of upstream, stopped when the
// test ends.
func faultProxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(api, "mysql", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// addToxic adds a toxic to p, e.g. {"name":"slow","type":"latency","attributes":{…}}.
func addToxic(t *testing.T, p *toxiproxy.Proxy, js string) {
	t.Helper()
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatalf("add toxic %s: %v", js, err)
	}
}

func removeToxic(t *testing.T, p *toxiproxy.Proxy, name string) {
	t.Helper()
	if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// goroutines reads the service's goroutine count from /debug/pprof/goroutine.
func goroutines(s *service) int {
	s.tb.Helper()
	code, body, err := s.get("/debug/pprof/goroutine?debug=1")
	if err != nil || code != 200 {
		s.tb.Fatalf("goroutine profile: %d %v", code, err)
	}
	var n int
	if _, err := fmt.Sscanf(body, "goroutine profile: total %d", &n); err != nil {
		s.tb.Fatalf("goroutine profile: %v: %.80q", err, body)
	}
	return n
}

// TestMySQLSlowAndBlackholed: a TCP fault proxy between wxlookup and MariaDB first slows
// every reply from MySQL by 300ms, then swallows all traffic (a black hole: connections
// stay open, nothing arrives). Replies stay fast and correct throughout; the loader's
// queries time out (readTimeout=1s in the DSN) and are retried, each failure counted; the
// service's goroutine count stays bounded; when the proxy heals, the loader recovers and a
// change made meanwhile reaches the replies.
func TestMySQLSlowAndBlackholed(t *testing.T) {
	t.Parallel()
	srv, rootDSN, db := seededDatabase(t)
	proxy := faultProxy(t, srv.Addr)
	cfg, err := mysql.ParseDSN(rootDSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = proxy.Listen
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = time.Second, time.Second, time.Second
	svc := startService(t, "wxlookup", map[string]string{
		"WXLOOKUP_MYSQL_DSN": cfg.FormatDSN(), "WXLOOKUP_TOKEN": chaosToken, "WXLOOKUP_APPID": chaosAppID,
		"WXLOOKUP_AES_KEY": chaosKey, "WXLOOKUP_REQUIRE_ENCRYPTION": "false", "WXLOOKUP_REFRESH_INTERVAL": "200ms", "WXLOOKUP_RATE_LIMIT": "0",
	})
	svc.waitReady(time.Minute)
	plain := newClient(svc.Webhook, chaosToken, chaosAppID, "")
	safe := newClient(svc.Webhook, chaosToken, chaosAppID, chaosKey)
	l := startLoad(loadConfig{Rate: 200, Workers: 4, MaxSent: 200_000, MaxTime: 5 * time.Minute}, askRows(plain, safe))
	if !l.waitSent(200, 10*time.Second) {
		t.Fatal("the load stalled")
	}
	steady := goroutines(svc)

	// Slow: every packet from MySQL 300ms late. Refreshes still succeed, slowly.
	addToxic(t, proxy, `{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":300,"jitter":20}}`)
	last := svc.metric("wxlookup_loader_last_success_timestamp_seconds")
	for range 2 {
		svc.waitFor(15*time.Second, "a refresh through the slow proxy", func() bool {
			v := svc.metric("wxlookup_loader_last_success_timestamp_seconds")
			if v > last {
				last = v
				return true
			}
			return false
		})
	}
	removeToxic(t, proxy, "slow")

	// Black hole: nothing gets through in either direction.
	before := loaderErrors(svc)
	addToxic(t, proxy, `{"name":"hole_up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
	addToxic(t, proxy, `{"name":"hole_down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	k, _ := store.DemoRow(loadKeys)
	if _, err := db.Exec("UPDATE workpiece_location SET location = '黑洞期间的更新' WHERE part_no = ?", k); err != nil {
		t.Fatal(err)
	}
	svc.waitFor(30*time.Second, "5 loader errors while black-holed", func() bool { return loaderErrors(svc)-before >= 5 })
	if !l.waitSent(100, 10*time.Second) {
		t.Fatal("the load stalled while MySQL was black-holed")
	}
	during := goroutines(svc)
	holeErrors := loaderErrors(svc) - before
	if stale := svc.metric("wxlookup_loader_staleness_seconds"); stale < 1 {
		t.Errorf("staleness %.2fs while black-holed, want it to show the outage", stale)
	}
	removeToxic(t, proxy, "hole_up")
	removeToxic(t, proxy, "hole_down")

	healed := time.Now()
	svc.waitFor(15*time.Second, "staleness under 1s after the proxy healed", func() bool {
		return svc.metric("wxlookup_loader_staleness_seconds") < 1
	})
	recovered := time.Since(healed)
	svc.waitFor(10*time.Second, "the change made during the black hole in the replies", func() bool {
		got, _ := plain.ask(context.Background(), "oChaosCheck", "?"+k)
		return got == found(k, "黑洞期间的更新")
	})
	f := l.Stop()
	after := goroutines(svc)
	report(t, "mysql-slow-blackhole", f, fmt.Sprintf("loader_errors=%.0f goroutines=%d/%d/%d recovered_in=%s",
		holeErrors, steady, during, after, recovered.Round(time.Millisecond)))
	// The pool holds at most 4 connections and the loader runs one query at a time: a
	// black hole must not pile up goroutines (a stuck query per retry would).
	if during > steady+20 || after > steady+10 {
		t.Errorf("goroutines: %d steady, %d black-holed, %d after; want no pile-up", steady, during, after)
	}
	if f.P99 > 250*time.Millisecond {
		t.Errorf("p99 %s across the slow and black-holed database, want replies unaffected (< 250ms)", f.P99)
	}
}
