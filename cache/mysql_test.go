package cache_test

// The loader end to end against real MariaDB (a private mariadbd shared by this test binary,
// or WXLOOKUP_TEST_MYSQL_DSN; see internal/mariadbtest): store.MySQL as the Source, the
// Cache's loader warming, refreshing and reconciling from it. The fake-source unit tests
// beside this file prove the loader's logic; these prove it holds with the real driver,
// the real clock of the database and real failures.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/cache"
	"wxlookup/internal/logtest"
	"wxlookup/internal/mariadbtest"
	"wxlookup/internal/metrictest"
	"wxlookup/store"
)

// TestMySQLWarm100k: 100,000 seeded rows warm completely, and every key is found with its
// own line, also when asked in another case; a key that is not there is a definitive
// not-found answered from memory.
func TestMySQLWarm100k(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 100_000
	dsn, _ := seeded(t, mariadbtest.Shared(t), n)
	src := watch(openMySQL(t, dsn, store.MySQLConfig{})).quiet()
	c := newCache(t, src, cache.Config{})
	startReady(t, c)

	st := c.Status()
	if !st.Complete || st.Entries != n || st.Errors != 0 {
		t.Fatalf("got complete %v, entries %d, errors %d; want true, %d, 0", st.Complete, st.Entries, st.Errors, n)
	}
	ctx := context.Background()
	var key []byte
	for i := range n {
		k, v := store.DemoRow(i)
		key = cache.AppendKey(key[:0], []byte(k))
		line, canon, found, err := c.Lookup(ctx, key)
		if err != nil || !found || string(line) != demoLine(k, v) || canon != k {
			t.Fatalf("row %d: Lookup(%q) got %q, %q, found %v, err %v; want %q, %q",
				i, key, line, canon, found, err, demoLine(k, v), k)
		}
	}
	mustFind(t, c, "a7-001", "[A7-001] 总装车间A区12排")
	mustFind(t, c, "Ａ７－００１", "[A7-001] 总装车间A区12排") // full width
	mustMiss(t, c, "ZZ-404")
	if got := src.gets.Load(); got != 0 {
		t.Errorf("got %d source reads, want 0: a complete cache answers misses from memory", got)
	}
}

// TestMySQLRefresh: an update, an insert and a delete in MySQL reach the cache at the next
// refresh (the delete at the next reconcile, since MySQL cannot report deletes as changes),
// while the other rows stay.
func TestMySQLRefresh(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	dsn, db := seeded(t, mariadbtest.Shared(t), 1000)
	c := newCache(t, watch(openMySQL(t, dsn, store.MySQLConfig{PageSize: 100})).quiet(), cache.Config{})
	startReady(t, c)
	k5, _ := store.DemoRow(5)
	k6, _ := store.DemoRow(6)
	k7, v7 := store.DemoRow(7)

	tests := []struct {
		name      string
		stmt      string
		args      []any
		reconcile bool
		key, want string // want "" for not found
	}{
		{"update", "UPDATE workpiece_location SET location = ? WHERE part_no = ?", []any{"焊装车间9号", k5}, false,
			k5, demoLine(k5, "焊装车间9号")},
		{"insert", "INSERT INTO workpiece_location (part_no, location) VALUES (?, ?)", []any{"Z9-001", "成品库1号"}, false,
			"z9-001", demoLine("Z9-001", "成品库1号")},
		{"delete", "DELETE FROM workpiece_location WHERE part_no = ?", []any{k6}, true, k6, ""},
		{"update again", "UPDATE workpiece_location SET location = ? WHERE part_no = ?", []any{"备件库2号", k5}, false,
			k5, demoLine(k5, "备件库2号")},
		{"re-insert the deleted", "INSERT INTO workpiece_location (part_no, location) VALUES (?, ?)", []any{k6, "物流中心3号"}, false,
			k6, demoLine(k6, "物流中心3号")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exec(t, db, tt.stmt, tt.args...)
			mustRefresh(t, c, tt.reconcile)
			if tt.want == "" {
				mustMiss(t, c, tt.key)
			} else {
				mustFind(t, c, tt.key, tt.want)
			}
			mustFind(t, c, k7, demoLine(k7, v7)) // untouched rows stay
		})
	}
	if st := c.Status(); st.Entries != 1001 || !st.Complete {
		t.Errorf("got %d entries, complete %v; want 1001, true", st.Entries, st.Complete)
	}
}

// TestMySQLTickerRefresh: with nothing but the loader's own tickers (100 ms), an update,
// an insert and a delete are visible within two intervals of their commit. No sleeps:
// each completed Changes or Keys call of the loader is an event, and the test looks the
// row up after each until it shows the change or the deadline passes.
func TestMySQLTickerRefresh(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const (
		interval = 100 * time.Millisecond
		slack    = 400 * time.Millisecond // scheduling and the queries, under -race on 2 busy cores
	)
	dsn, db := seeded(t, mariadbtest.Shared(t), 1000)
	src := watch(openMySQL(t, dsn, store.MySQLConfig{}))
	c := newCache(t, src, cache.Config{RefreshInterval: interval, ReconcileInterval: interval})
	startReady(t, c) // the warm reads Snapshot only: no events yet

	k3, _ := store.DemoRow(3)
	k4, v4 := store.DemoRow(4)
	tests := []struct {
		name      string
		stmt      string
		args      []any
		key, want string // want "" for not found
	}{
		{"update", "UPDATE workpiece_location SET location = ? WHERE part_no = ?", []any{"涂装车间7号", k3},
			k3, demoLine(k3, "涂装车间7号")},
		{"insert", "INSERT INTO workpiece_location (part_no, location) VALUES (?, ?)", []any{"Z8-002", "冲压车间2号"},
			"Z8-002", demoLine("Z8-002", "冲压车间2号")},
		{"delete", "DELETE FROM workpiece_location WHERE part_no = ?", []any{k4}, k4, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "" {
				mustFind(t, c, k4, demoLine(k4, v4)) // there before the delete
			}
			exec(t, db, tt.stmt, tt.args...)
			committed := time.Now()
			deadline := time.NewTimer(2*interval + slack)
			defer deadline.Stop()
			for events := 0; ; events++ {
				line, _, found, err := lookup(c, tt.key)
				if err != nil {
					t.Fatalf("Lookup(%q): %v", tt.key, err)
				}
				if (tt.want == "" && !found) || (tt.want != "" && line == tt.want) {
					t.Logf("visible %v after the commit, at loader event %d", time.Since(committed).Round(time.Millisecond), events)
					return
				}
				select {
				case <-src.changes:
				case <-src.keys:
				case <-deadline.C:
					t.Fatalf("Lookup(%q) after %d loader events: got %q (found %v), want %q within %v of the commit",
						tt.key, events, line, found, tt.want, 2*interval+slack)
				}
			}
		})
	}
}

// TestMySQLEqualTimestamps: rows that share one updated_at, on either side of a refresh
// boundary, all reach the cache. The overlap is cut to 1 µs and pages to 2 rows, so only
// the inclusive bound and keyset paging on (updated_at, key) save them: rows stamped
// exactly with the watermark of the previous refresh (the lower bound of the next one),
// and rows stamped exactly with the watermark of this refresh but committed after it ran.
func TestMySQLEqualTimestamps(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	dsn, db := seeded(t, mariadbtest.Shared(t), 100)
	src := watch(openMySQL(t, dsn, store.MySQLConfig{PageSize: 2, Overlap: time.Microsecond})).quiet()
	c := newCache(t, src, cache.Config{})
	startReady(t, c)
	insert := func(t *testing.T, stamp time.Time, keys ...string) {
		t.Helper()
		for _, k := range keys {
			exec(t, db, "INSERT INTO workpiece_location (part_no, location, updated_at) VALUES (?, ?, ?)", k, "at "+k, stamp)
		}
	}

	mustRefresh(t, c, false)
	w0 := src.watermark()
	// Committed before the next refresh, stamped with its lower bound.
	insert(t, w0, "E0-003", "E0-001", "E0-002")
	mustRefresh(t, c, false)
	w1 := src.watermark()
	if !w1.After(w0) {
		t.Fatalf("got watermarks %v then %v, want them increasing", w0, w1)
	}
	// Stamped with the watermark of the refresh that just ran, committed after it: as if
	// their transaction stamped them in the microsecond the refresh read the clock.
	insert(t, w1, "E1-002", "E1-003", "E1-001", "E1-004", "E1-005")
	mustRefresh(t, c, false)

	for _, k := range []string{"E0-001", "E0-002", "E0-003", "E1-001", "E1-002", "E1-003", "E1-004", "E1-005"} {
		mustFind(t, c, k, demoLine(k, "at "+k))
	}
	if st := c.Status(); st.Entries != 108 {
		t.Errorf("got %d entries, want 108", st.Entries)
	}
}

// TestMySQLLateCommit: a transaction stamps its rows (updated_at = NOW(6)) when its
// statements run but commits after a refresh has read past that stamp; the next refresh,
// within the overlap, still picks the rows up.
func TestMySQLLateCommit(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	dsn, db := seeded(t, mariadbtest.Shared(t), 100)
	src := watch(openMySQL(t, dsn, store.MySQLConfig{Overlap: 5 * time.Second})).quiet()
	c := newCache(t, src, cache.Config{})
	startReady(t, c)
	k9, _ := store.DemoRow(9)

	tx, err := db.BeginTx(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, q := range []struct {
		stmt string
		args []any
	}{
		{"INSERT INTO workpiece_location (part_no, location) VALUES (?, ?)", []any{"L1-001", "晚到的行"}},
		{"UPDATE workpiece_location SET location = ? WHERE part_no = ?", []any{"晚到的更新", k9}},
	} {
		if _, err := tx.ExecContext(testCtx(t), q.stmt, q.args...); err != nil {
			t.Fatalf("%s: %v", q.stmt, err)
		}
	}
	var stamped time.Time
	if err := tx.QueryRowContext(testCtx(t), "SELECT updated_at FROM workpiece_location WHERE part_no = 'L1-001'").Scan(&stamped); err != nil {
		t.Fatal(err)
	}

	mustRefresh(t, c, false) // runs while the transaction is open: sees neither row
	if wm := src.watermark(); !wm.After(stamped) {
		t.Fatalf("got watermark %v, want it after the rows' stamp %v (else the test proves nothing)", wm, stamped)
	}
	mustMiss(t, c, "L1-001")
	mustFind(t, c, k9, demoLine(k9, func() string { _, v := store.DemoRow(9); return v }()))

	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	mustRefresh(t, c, false)
	mustFind(t, c, "L1-001", demoLine("L1-001", "晚到的行"))
	mustFind(t, c, k9, demoLine(k9, "晚到的更新"))
}

// TestMySQLOutage: MariaDB is killed in the middle of a refresh and later restarted.
// Throughout, lookups of every known key keep answering from memory (zero misses or
// errors); the failed steps are counted in Status and wxlookup_loader_errors_total and
// staleness grows; after the restart the loader recovers by itself (an update made then
// becomes visible without Reload or Refresh) and staleness falls back.
func TestMySQLOutage(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const (
		rows     = 2000
		interval = 200 * time.Millisecond
		slack    = 2 * time.Second // under -race on 2 busy cores
	)
	srv := mariadbtest.Start(t)
	dsn, db := seeded(t, srv, rows)
	src := watch(openMySQL(t, dsn, store.MySQLConfig{PageSize: 50, QueryTimeout: 2 * time.Second}))
	reg := prometheus.NewRegistry()
	var logs logtest.Buffer
	c := newCache(t, src, cache.Config{
		RefreshInterval: interval,
		Registerer:      reg,
		Logger:          slog.New(slog.NewTextHandler(&logs, nil)),
	})
	startReady(t, c)

	// Look every key up, over and over, until told to stop (or for at most a minute).
	type want struct{ key, line string }
	const changed = 11 // the row updated after the restart
	var keys []want
	for i := range rows {
		if i != changed {
			k, v := store.DemoRow(i)
			keys = append(keys, want{cache.Key(k), demoLine(k, v)})
		}
	}
	var lookups, bad atomic.Int64
	var firstBad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		end := time.Now().Add(time.Minute)
		for i := 0; time.Now().Before(end); i++ {
			select {
			case <-stop:
				return
			default:
			}
			w := keys[i%len(keys)]
			line, _, found, err := c.Lookup(context.Background(), []byte(w.key))
			lookups.Add(1)
			if err != nil || !found || string(line) != w.line {
				if bad.Add(1) == 1 {
					firstBad.Store(fmt.Sprintf("Lookup(%q): got %q, found %v, err %v; want %q", w.key, line, found, err, w.line))
				}
			}
		}
	})
	stopLookups := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLookups()

	// Every row changes, so the next refresh reads 40 pages; hold it after its first row
	// until the server is dead.
	inside, killed := make(chan struct{}), make(chan struct{})
	var held sync.Once
	src.setOnRow(func(ctx context.Context) {
		held.Do(func() {
			close(inside)
			select {
			case <-killed:
			case <-ctx.Done():
			}
		})
	})
	exec(t, db, "UPDATE workpiece_location SET updated_at = NOW(6)")
	events := func(what string, deadline time.Time, ok func(call) bool) call {
		t.Helper()
		return await(t, src.changes, deadline, what, ok)
	}
	// Take events until the held refresh is inside its first page (events of refreshes
	// that began before the update may come first).
	for waiting := true; waiting; {
		select {
		case <-src.changes:
		case <-inside:
			waiting = false
		case <-time.After(30 * time.Second):
			t.Fatal("no refresh read the updated rows")
		}
	}
	srv.Kill(t)
	src.setOnRow(nil)
	close(killed)
	atKill := lookups.Load()
	failed := events("the interrupted refresh to fail", time.Now().Add(30*time.Second), func(ev call) bool { return ev.err != nil })
	t.Logf("interrupted refresh failed: %v", failed.err)

	// Retries fail while the server is down; staleness grows past two intervals.
	var st cache.Status
	for n := 1; ; n++ {
		events("a retry to fail", time.Now().Add(30*time.Second), func(ev call) bool { return ev.err != nil })
		if st = c.Status(); n >= 3 && st.Staleness > 2*interval {
			break
		}
	}
	// A step is recorded after its Changes call returned, so after the next call's event
	// every failure seen so far (at least 4) is counted.
	events("another retry", time.Now().Add(30*time.Second), func(call) bool { return true })
	st = c.Status()
	metricErrors := metrictest.Value(t, reg, "wxlookup_loader_errors_total")
	if st.Errors < 4 || metricErrors < 4 {
		t.Errorf("got Status.Errors %d and wxlookup_loader_errors_total %v, want both ≥ 4", st.Errors, metricErrors)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_step_errors_total", "step", "refresh"); got < 4 {
		t.Errorf("got wxlookup_loader_step_errors_total{step=refresh} %v, want ≥ 4", got)
	}
	if len(st.RecentErrors) == 0 || st.RecentErrors[0].Step != "refresh" {
		t.Errorf("got recent errors %+v, want a refresh error first", st.RecentErrors)
	}
	if stale := metrictest.Value(t, reg, "wxlookup_loader_staleness_seconds"); stale < (2 * interval).Seconds() {
		t.Errorf("got wxlookup_loader_staleness_seconds %v during the outage, want > %v", stale, (2 * interval).Seconds())
	}
	if during := lookups.Load() - atKill; during == 0 {
		t.Errorf("got no lookups while the server was down, want some (the test proves nothing)")
	}

	restarting := time.Now() // a step may succeed before Restart returns
	srv.Restart(t)
	restarted := time.Now()
	k11, _ := store.DemoRow(changed)
	exec(t, db, "UPDATE workpiece_location SET location = ? WHERE part_no = ?", "重启后的位置", k11)
	recovered := events("the loader to recover", restarted.Add(2*interval+slack), func(ev call) bool { return ev.err == nil })
	t.Logf("recovered %v after the restart", recovered.ended.Sub(restarted).Round(time.Millisecond))
	for line := ""; line != demoLine(k11, "重启后的位置"); {
		line, _, _, _ = lookup(c, k11)
		if line != demoLine(k11, "重启后的位置") {
			events("the update after the restart to be read", restarted.Add(2*interval+slack), func(ev call) bool { return ev.err == nil })
		}
	}
	// The loader records a step after its Changes call returns: the next call's event
	// comes after that.
	events("the step after recovery", time.Now().Add(30*time.Second), func(call) bool { return true })
	// Cleared: staleness now counts from a success after the restart began, so it is less
	// than the time since then (during the outage it counted from before the kill). Under
	// load a step can take seconds, so no fixed bound would be robust.
	if st, since := c.Status(), time.Since(restarting); st.Staleness >= since || !st.LastSuccess.After(restarting) {
		t.Errorf("got staleness %v, last success %v after recovery; want < %v, after the restart began at %v",
			st.Staleness, st.LastSuccess, since, restarting)
	}

	stopLookups()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d of %d lookups failed during the outage; first: %s", n, lookups.Load(), firstBad.Load())
	}
	if !strings.Contains(logs.String(), "loader step failed") || !strings.Contains(logs.String(), "loader recovered") {
		t.Errorf("log does not tell the story:\n%s", logs.String())
	}
	t.Logf("%d lookups, %d while the server was down or restarting", lookups.Load(), lookups.Load()-atKill)
}

// testClock is a Config.Now that tests move by hand.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestMySQLOverBudget: a table ten times the budget is cached partially. The cache says
// so (Status, wxlookup_cache_complete 0, a log line naming the setting), and misses read
// through MySQL: found keys answer with their own line, not-found keys answer not found and
// are remembered for NegativeTTL, then asked again.
func TestMySQLOverBudget(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const (
		rows = 20_000
		// An entry of the demo rows costs about 220 bytes (160 of them fixed overhead):
		// this budget holds about a tenth of the table.
		budget = rows * 220 / 10
		ttl    = 10 * time.Second
	)
	dsn, _ := seeded(t, mariadbtest.Shared(t), rows)
	src := watch(openMySQL(t, dsn, store.MySQLConfig{})).quiet()
	reg := prometheus.NewRegistry()
	var logs logtest.Buffer
	var clock testClock
	c := newCache(t, src, cache.Config{
		MaxBytes:    budget,
		NegativeTTL: ttl,
		Registerer:  reg,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
		Now:         clock.Now,
	})
	startReady(t, c)

	st := c.Status()
	if st.Complete || st.Entries == 0 || st.Entries > rows/5 || st.CostBytes > budget {
		t.Errorf("got complete %v, %d entries costing %d; want false, 1…%d entries within %d bytes",
			st.Complete, st.Entries, st.CostBytes, rows/5, budget)
	}
	if got := metrictest.Value(t, reg, "wxlookup_cache_complete"); got != 0 {
		t.Errorf("got wxlookup_cache_complete %v, want 0", got)
	}
	if log := logs.String(); !strings.Contains(log, "exceeds WXLOOKUP_CACHE_MAX_BYTES") || !strings.Contains(log, "20000 rows") {
		t.Errorf("got log %q, want it to say the 20000 rows exceed WXLOOKUP_CACHE_MAX_BYTES", log)
	}

	// Every 7th key: held or read through, each answers with its own line.
	g0 := src.gets.Load()
	for i := 0; i < rows; i += 7 {
		k, v := store.DemoRow(i)
		mustFind(t, c, k, demoLine(k, v))
	}
	asked := src.gets.Load() - g0
	if asked == 0 {
		t.Fatalf("got no read-through for %d keys of which the cache holds at most %d", rows/7, st.Entries)
	}
	t.Logf("%d of %d lookups read through", asked, rows/7+1)

	// A found row read through is offered to the cache, but ristretto's admission policy
	// decides whether a full table keeps it, so that is not asserted. A not-found is
	// remembered beside ristretto for NegativeTTL:
	tests := []struct {
		name    string
		key     string
		advance time.Duration
		reads   int64 // source reads the lookup makes
	}{
		{"first miss reads through", "ZZ-404", 0, 1},
		{"second miss is remembered", "zz-404", 0, 0},
		{"still remembered", "ＺＺ－４０４", ttl - time.Second, 0},
		{"forgotten after the ttl", "ZZ-404", 2 * time.Second, 1},
		{"remembered again", "ZZ-404", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Advance(tt.advance)
			before := src.gets.Load()
			mustMiss(t, c, tt.key)
			if got := src.gets.Load() - before; got != tt.reads {
				t.Errorf("got %d source reads, want %d", got, tt.reads)
			}
		})
	}
}

// TestMySQLReadOnlyAccount: the loader needs nothing but SELECT on the table. With an
// account granted only that, warm, refresh and reconcile all work (and the account really
// cannot write, so the test proves what it claims).
func TestMySQLReadOnlyAccount(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	root, db := seeded(t, srv, 500)
	cfg, err := mysql.ParseDSN(root)
	if err != nil {
		t.Fatal(err)
	}
	user := "ro_" + cfg.DBName
	srv.Exec(t, "",
		"CREATE USER '"+user+"'@'%' IDENTIFIED BY 'Only-Select-1'",
		"GRANT SELECT ON `"+cfg.DBName+"`.`workpiece_location` TO '"+user+"'@'%'")
	t.Cleanup(func() { srv.Exec(t, "", "DROP USER IF EXISTS '"+user+"'@'%'") })
	cfg.User, cfg.Passwd = user, "Only-Select-1"
	dsn := cfg.FormatDSN()

	src := openMySQL(t, dsn, store.MySQLConfig{PageSize: 64})
	if _, err := src.DB().ExecContext(testCtx(t), "DELETE FROM workpiece_location"); err == nil {
		t.Fatal("the read-only account could delete rows")
	}
	c := newCache(t, src, cache.Config{})
	startReady(t, c)
	if st := c.Status(); !st.Complete || st.Entries != 500 {
		t.Fatalf("got complete %v, %d entries; want true, 500", st.Complete, st.Entries)
	}
	k1, _ := store.DemoRow(1)
	k2, _ := store.DemoRow(2)
	exec(t, db, "UPDATE workpiece_location SET location = ? WHERE part_no = ?", "只读账号看到的更新", k1)
	exec(t, db, "DELETE FROM workpiece_location WHERE part_no = ?", k2)
	mustRefresh(t, c, true)
	mustFind(t, c, k1, demoLine(k1, "只读账号看到的更新"))
	mustMiss(t, c, k2)
	if st := c.Status(); st.Errors != 0 || st.Entries != 499 {
		t.Errorf("got %d errors, %d entries; want 0, 499 (recent: %+v)", st.Errors, st.Entries, st.RecentErrors)
	}
}
