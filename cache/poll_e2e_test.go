package cache_test

// End to end in poll mode: store.MySQL over a real MariaDB as the source, the Cache's
// loader warming from its snapshot, refreshing by the updated column and reconciling key
// ranges by checksum. The tests drive every step with Refresh and Reconcile (the loader's
// own tickers are an hour apart), so each step's work can be counted, and after each the
// full compare (e2e_test.go) finds zero differences.

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
	"wxlookup/internal/metrictest"
	"wxlookup/store"
)

// countedSource is the MySQL source with the loader's work on it counted: Checksum and
// ReadRange calls, and the rows ReadRange and Changes delivered.
type countedSource struct {
	*store.MySQL
	checksums, reads, rangeRows, changed atomic.Int64
}

func (s *countedSource) Checksum(ctx context.Context, r cache.KeyRange) (cache.RangeSum, error) {
	s.checksums.Add(1)
	return s.MySQL.Checksum(ctx, r)
}

func (s *countedSource) ReadRange(ctx context.Context, r cache.KeyRange, fn func(cache.Row) error) error {
	s.reads.Add(1)
	return s.MySQL.ReadRange(ctx, r, func(row cache.Row) error {
		s.rangeRows.Add(1)
		return fn(row)
	})
}

func (s *countedSource) Changes(ctx context.Context, since time.Time, fn func(cache.Row) error) (time.Time, error) {
	return s.MySQL.Changes(ctx, since, func(row cache.Row) error {
		s.changed.Add(1)
		return fn(row)
	})
}

// pollFixture is a poll-mode cache over a database.
type pollFixture struct {
	rdb   *sql.DB // the compare's reads
	query string  // the compare's SELECT
	src   *countedSource
	c     *cache.Cache
	reg   *prometheus.Registry
}

// openPoll opens a counted source on dsn and a poll-mode cache over it (not started); query
// is the compare's SELECT of the mapped columns.
func openPoll(tb testing.TB, dsn, query string, mcfg store.MySQLConfig, cfg cache.Config) *pollFixture {
	tb.Helper()
	fx := &pollFixture{rdb: readerDB(tb, dsn), query: query, reg: prometheus.NewRegistry()}
	fx.src = &countedSource{MySQL: openMySQL(tb, dsn, mcfg)}
	cfg.Mode = cache.ModePoll
	cfg.Registerer = fx.reg
	cfg.Logger = failureLog(tb)
	fx.c = newCache(tb, fx.src, cfg)
	return fx
}

// equal is the full compare of the cache with the table.
func (fx *pollFixture) equal(tb testing.TB, gone ...string) int {
	tb.Helper()
	return mustEqualTable(tb, fx.c, fx.rdb, fx.query, gone...)
}

// checks returns wxlookup_loader_reconcile_checks_total{result}.
func (fx *pollFixture) checks(tb testing.TB, result string) float64 {
	tb.Helper()
	return metrictest.Value(tb, fx.reg, "wxlookup_loader_reconcile_checks_total", "result", result)
}

// reconcile runs a refresh and a whole reconcile pass, and returns how many ranges it found
// different (and re-read) and how many ReadRange calls it made.
func (fx *pollFixture) reconcile(tb testing.TB) (differ, reads int) {
	tb.Helper()
	d0, r0 := fx.checks(tb, "differ"), fx.src.reads.Load()
	mustRefresh(tb, fx.c, true)
	return int(fx.checks(tb, "differ") - d0), int(fx.src.reads.Load() - r0)
}

// TestPollE2EReconcile: inserts, updates, deletes, a key change and a change of a key's
// case, in six of ten key ranges; one refresh and one reconcile pass later the cache
// equals the table, the deleted rows gone. The pass compares every range and re-reads
// exactly the ranges whose rows the refresh could not account for (deletes, inserts, the
// key changes), not the one that only saw an update; the pass after re-reads none.
func TestPollE2EReconcile(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n, per = 500, 50
	dsn, db := seeded(t, mariadbtest.Shared(t), n)
	fx := openPoll(t, dsn, defaultTable, store.MySQLConfig{PageSize: 100}, cache.Config{RangeRows: per})
	startReady(t, fx.c)
	if st := fx.c.Status(); st.Ranges != n/per {
		t.Fatalf("got %d ranges, want %d", st.Ranges, n/per)
	}
	keys := sortedKeys(t, fx.rdb) // range i holds keys[per*i : per*(i+1)]
	for _, s := range []sqlStmt{
		{"DELETE FROM workpiece_location WHERE part_no = ?", []any{keys[10]}},                                         // range 0
		{"DELETE FROM workpiece_location WHERE part_no IN (?, ?)", []any{keys[125], keys[130]}},                       // range 2
		{"INSERT INTO workpiece_location (part_no, location) VALUES (?, '新插入')", []any{keys[260] + "X"}},              // range 5
		{"UPDATE workpiece_location SET part_no = ? WHERE part_no = ?", []any{strings.ToLower(keys[360]), keys[360]}}, // range 7
		{"UPDATE workpiece_location SET location = '只是更新' WHERE part_no = ?", []any{keys[410]}},                       // range 8
		{"UPDATE workpiece_location SET part_no = ? WHERE part_no = ?", []any{keys[460] + "Y", keys[460]}},            // range 9
	} {
		exec(t, db, s.q, s.args...)
	}
	checked := fx.src.checksums.Load()
	differ, reads := fx.reconcile(t)
	if differ != 5 || reads != 5 {
		t.Errorf("got %d ranges differing and %d re-read, want 5 and 5 (ranges 0, 2, 5, 7 and 9)", differ, reads)
	}
	if got := fx.src.checksums.Load() - checked; got != n/per {
		t.Errorf("got %d checksums, want %d: one per range", got, n/per)
	}
	fx.equal(t, keys[10], keys[125], keys[130], keys[460])
	mustFind(t, fx.c, keys[410], demoLine(keys[410], "只是更新"))
	if _, canon, _, _ := lookup(fx.c, keys[360]); canon != strings.ToLower(keys[360]) {
		t.Errorf("Lookup(%q): got canonical key %q, want %q", keys[360], canon, strings.ToLower(keys[360]))
	}

	ranges := fx.c.Status().Ranges
	checked = fx.src.checksums.Load()
	if differ, reads := fx.reconcile(t); differ != 0 || reads != 0 {
		t.Errorf("the pass after: got %d ranges differing and %d re-read, want 0 and 0", differ, reads)
	}
	if got := fx.src.checksums.Load() - checked; got != int64(ranges) {
		t.Errorf("the pass after: got %d checksums, want %d: one per range", got, ranges)
	}
}

// TestPollE2ENoRereadAfterWarm: a reconcile pass right after the warm finds every range
// equal and re-reads none, so the checksum the loader computes for a row (cache.RowSum
// over the values the snapshot read) is the one MySQL computes — for the default table and
// for one with an INT key, DECIMAL, DATETIME(6), TIMESTAMP, NULL values and Chinese text.
// Otherwise every pass would re-read every range, forever. After changes (applied by the
// refresh, or found by the pass) the next pass is quiet again.
func TestPollE2ENoRereadAfterWarm(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	t.Run("default table", func(t *testing.T) {
		dsn, _ := seeded(t, srv, 500)
		fx := openPoll(t, dsn, defaultTable, store.MySQLConfig{PageSize: 100}, cache.Config{RangeRows: 50})
		startReady(t, fx.c)
		if differ, reads := fx.reconcile(t); differ != 0 || reads != 0 {
			t.Errorf("got %d ranges differing and %d re-read, want 0 and 0", differ, reads)
		}
		if got := fx.checks(t, "equal"); got != 10 {
			t.Errorf("got %v ranges equal, want 10", got)
		}
		fx.equal(t)
	})
	for _, z := range typedZones {
		t.Run("typed table in "+z.name, func(t *testing.T) {
			dsn, loc, db := typedTable(t, srv, 300, z)
			mcfg := store.MySQLConfig{PageSize: 100, Mapping: typedMapping}
			fx := openPoll(t, dsn, typedQuery, mcfg, cache.Config{RangeRows: 50}) // ranges [1, 51), [51, 101), … [251, end)
			startReady(t, fx.c)
			if differ, reads := fx.reconcile(t); differ != 0 || reads != 0 {
				t.Errorf("after the warm: got %d ranges differing and %d re-read, want 0 and 0", differ, reads)
			}
			fx.equal(t)
			for _, i := range []int{1, 2, 16, 77, 133} {
				mustFind(t, fx.c, strconv.Itoa(i), typedLine(i, loc))
			}

			for _, q := range []string{
				"UPDATE parts SET price = 12.5, seen = '2030-12-31 23:59:59', code = 'X' WHERE id = 120", // refreshed, range 2
				"UPDATE parts SET name = NULL, made = NULL WHERE id = 180",                               // refreshed, range 3
				"DELETE FROM parts WHERE id = 9",                                                         // range 0
				"INSERT INTO parts (id, name) VALUES (1000, '新零件')",                                      // range 5
			} {
				exec(t, db, q)
			}
			if differ, reads := fx.reconcile(t); differ != 2 || reads != 2 {
				t.Errorf("after changes: got %d ranges differing and %d re-read, want 2 and 2 (the delete's and the insert's)", differ, reads)
			}
			fx.equal(t, "9")
			if differ, reads := fx.reconcile(t); differ != 0 || reads != 0 {
				t.Errorf("the pass after: got %d ranges differing and %d re-read, want 0 and 0", differ, reads)
			}
		})
	}
}

// TestPollE2ESwap: two keys of equal length swap their values (A1→X1, B2→Y2 become A1→Y2,
// B2→X1) without touching the updated column, so no refresh sees it; an XOR of the rows'
// CRC-32s does not change either. The reconcile pass finds the range different, re-reads
// it, and the cache equals the table.
func TestPollE2ESwap(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	sum := func(k, v string) uint32 { return cache.RowSum(k, []string{v}) }
	if sum("A1", "X1")^sum("B2", "Y2") != sum("A1", "Y2")^sum("B2", "X1") {
		t.Fatal("the swap changes an XOR of CRC-32s: this test would prove less than it says")
	}
	dsn, db := seeded(t, mariadbtest.Shared(t), 200)
	// Stamped long ago, outside any refresh's overlap window.
	exec(t, db, "UPDATE workpiece_location SET updated_at = '2020-01-01 00:00:00'")
	exec(t, db, "INSERT INTO workpiece_location (part_no, location, updated_at) VALUES ('A1', 'X1', '2020-01-01'), ('B2', 'Y2', '2020-01-01')")
	fx := openPoll(t, dsn, defaultTable, store.MySQLConfig{}, cache.Config{}) // one range
	startReady(t, fx.c)
	if differ, _ := fx.reconcile(t); differ != 0 {
		t.Fatalf("got %d ranges differing after the warm, want 0", differ)
	}

	exec(t, db, "UPDATE workpiece_location SET location = CASE part_no WHEN 'A1' THEN 'Y2' ELSE 'X1' END, updated_at = updated_at WHERE part_no IN ('A1', 'B2')")
	mustRefresh(t, fx.c, false)
	mustFind(t, fx.c, "A1", "[A1] X1") // the refresh cannot see the swap
	if differ, reads := fx.reconcile(t); differ != 1 || reads != 1 {
		t.Errorf("got %d ranges differing and %d re-read, want 1 and 1", differ, reads)
	}
	mustFind(t, fx.c, "A1", "[A1] Y2")
	mustFind(t, fx.c, "B2", "[B2] X1")
	fx.equal(t)
}

// TestPollE2EKilled: MariaDB is killed. While it is down the loader's steps fail (a reload
// too), no write can be made, and the cache answers every row it holds; after the restart
// and writes made right after, the loader converges to the table at its next step (the
// snapshot the failed reload left to do, then a reconcile pass). A private server, as
// it is killed.
func TestPollE2EKilled(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 500
	srv := mariadbtest.Start(t)
	dsn, db := seeded(t, srv, n)
	fx := openPoll(t, dsn, defaultTable, store.MySQLConfig{PageSize: 100, QueryTimeout: 2 * time.Second}, cache.Config{RangeRows: 50})
	startReady(t, fx.c)
	lines := map[string]string{}
	var keys []string
	for i := range n {
		keys = append(keys, demoKey(i))
		lines[demoKey(i)] = demoLine(demoKey(i), demoValue(i))
	}
	loop := startLookups(t, fx.c, keys, func(key, line string, found bool, err error) bool {
		return err == nil && found && line == lines[key]
	})

	srv.Kill(t)
	atKill := loop.n.Load()
	if err := fx.c.Refresh(testCtx(t)); err == nil {
		t.Error("Refresh succeeded while the server was down")
	}
	if err := fx.c.Reconcile(testCtx(t)); err == nil {
		t.Error("Reconcile succeeded while the server was down")
	}
	if err := fx.c.Reload(testCtx(t)); err == nil {
		t.Error("Reload succeeded while the server was down")
	}
	if _, err := db.ExecContext(testCtx(t), "DELETE FROM workpiece_location WHERE part_no = ?", keys[2]); err == nil {
		t.Fatal("a write succeeded while the server was down")
	}
	if st := fx.c.Status(); st.Errors < 3 || !st.Ready {
		t.Errorf("got %d errors, ready %v during the outage; want ≥ 3, true", st.Errors, st.Ready)
	}

	srv.Restart(t)
	loop.halt()
	if loop.bad != 0 {
		t.Errorf("%d of %d lookups failed; first: %s", loop.bad, loop.n.Load(), loop.first)
	}
	if loop.n.Load() == atKill {
		t.Error("no lookup ran while the server was down (the test proves nothing)")
	}
	exec(t, db, "UPDATE workpiece_location SET location = '重启之后' WHERE part_no = ?", keys[3])
	exec(t, db, "INSERT INTO workpiece_location (part_no, location) VALUES ('NP-001', '重启之后插入')")
	exec(t, db, "DELETE FROM workpiece_location WHERE part_no = ?", keys[4])
	waitUntil(t, 30*time.Second, "a reconcile to succeed after the restart", func() (bool, string) {
		err := fx.c.Reconcile(testCtx(t))
		return err == nil, fmt.Sprint(err)
	})
	fx.equal(t, keys[4])
}

// TestPollE2EBulkLoad: 100,000 rows loaded in bulk are read about once by the refreshes
// that follow within the overlap window (30 s here): the first reads them, the others see
// from the window's checksum that they have them.
func TestPollE2EBulkLoad(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const (
		small, bulk = 500, 100_000
		overlap     = 30 * time.Second
	)
	dsn, db := seeded(t, mariadbtest.Shared(t), small)
	fx := openPoll(t, dsn, defaultTable, store.MySQLConfig{Overlap: overlap}, cache.Config{})
	startReady(t, fx.c)
	mustRefresh(t, fx.c, false) // reads the seeded rows in its window once: not the bulk load's business

	loaded := time.Now()
	if err := store.Seed(testCtx(t), db, small+bulk); err != nil {
		t.Fatalf("bulk load: %v", err)
	}
	var read []int64
	for range 3 {
		before := fx.src.changed.Load()
		mustRefresh(t, fx.c, false)
		read = append(read, fx.src.changed.Load()-before)
	}
	if took := time.Since(loaded); took >= overlap {
		t.Fatalf("the load and refreshes took %s, not within the overlap of %s: the test proves nothing", took, overlap)
	}
	total := read[0] + read[1] + read[2]
	t.Logf("rows read by the three refreshes after the load: %v", read)
	if total < bulk || total > bulk+bulk/20 || read[0] < bulk {
		t.Errorf("got %v rows read by three refreshes within the overlap, want the %d loaded read about once, by the first", read, bulk)
	}
	fx.equal(t)
}

// TestPollE2EReloadUnderLookups: a reload in place (three, the first bringing deletes,
// updates and inserts made since the warm) while another goroutine looks keys up: no
// lookup of a key present before and after ever misses, each answers its old or its new
// line, and afterwards the cache equals the table.
func TestPollE2EReloadUnderLookups(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 2000
	dsn, db := seeded(t, mariadbtest.Shared(t), n)
	fx := openPoll(t, dsn, defaultTable, store.MySQLConfig{PageSize: 100}, cache.Config{RangeRows: 200})
	startReady(t, fx.c)

	var gone, stay []string
	lines := map[string][]string{} // the lines a key may answer
	for i := range n {
		k := demoKey(i)
		switch {
		case i%40 == 7:
			gone = append(gone, k)
			exec(t, db, "DELETE FROM workpiece_location WHERE part_no = ?", k)
			continue
		case i%20 == 5:
			exec(t, db, "UPDATE workpiece_location SET location = '重载之后' WHERE part_no = ?", k)
			lines[k] = []string{demoLine(k, demoValue(i)), demoLine(k, "重载之后")}
		default:
			lines[k] = []string{demoLine(k, demoValue(i))}
		}
		stay = append(stay, k)
	}
	exec(t, db, "INSERT INTO workpiece_location (part_no, location) SELECT CONCAT('NL-', part_no), location FROM workpiece_location WHERE part_no LIKE 'K%'")

	loop := startLookups(t, fx.c, stay, func(key, line string, found bool, err error) bool {
		for _, l := range lines[key] {
			if err == nil && found && line == l {
				return true
			}
		}
		return false
	})
	var during int64
	for range 3 {
		before := loop.n.Load()
		if err := fx.c.Reload(testCtx(t)); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		during += loop.n.Load() - before
	}
	loop.halt()
	if loop.bad != 0 {
		t.Errorf("%d of %d lookups failed; first: %s", loop.bad, loop.n.Load(), loop.first)
	}
	if during == 0 {
		t.Error("no lookup ran during the reloads (the test proves nothing)")
	}
	t.Logf("%d lookups during three reloads", during)
	fx.equal(t, gone...)
}

// TestPollE2EConcurrentWrites: the loader runs on its own tickers (a refresh every 20 ms,
// a reconcile pass every 300 ms), and reloads in place twice, while a writer changes the
// table at random. Rows the writer never touches answer throughout; once it stops, one
// refresh and one reconcile pass bring the cache to the table.
func TestPollE2EConcurrentWrites(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 300
	dsn, db := seeded(t, mariadbtest.Shared(t), n)
	fx := openPoll(t, dsn, defaultTable, store.MySQLConfig{PageSize: 50}, cache.Config{
		RefreshInterval:   20 * time.Millisecond,
		ReconcileInterval: 300 * time.Millisecond,
		RangeRows:         40,
	})
	startReady(t, fx.c)
	pool, stable := churnPool(n)
	loop := lookupStable(t, fx.c, stable)
	ch := startChurn(t, db, pool, uint64(time.Now().UnixNano()))
	for i := int64(1); i <= 2; i++ {
		waitWrites(t, ch, 700*i)
		if err := fx.c.Reload(testCtx(t)); err != nil {
			t.Fatalf("Reload: %v", err)
		}
	}
	waitWrites(t, ch, 2000)
	ch.halt()
	if ch.err != nil {
		t.Fatalf("writer: %v", ch.err)
	}
	loop.halt()
	if loop.bad != 0 {
		t.Errorf("%d of %d lookups of rows the writer never touched failed; first: %s", loop.bad, loop.n.Load(), loop.first)
	}
	if got := fx.checks(t, "equal") + fx.checks(t, "differ"); got == 0 {
		t.Error("no range was checked while the writer ran (the test proves less than it says)")
	}
	mustRefresh(t, fx.c, true)
	fx.equal(t, absent(t, fx.rdb, defaultTable, pool)...)
}

// waitWrites waits until the churn has made n writes, and fails the test if it stops first.
func waitWrites(tb testing.TB, ch *churn, n int64) {
	tb.Helper()
	waitUntil(tb, 60*time.Second, fmt.Sprintf("%d writes", n), func() (bool, string) {
		select {
		case <-ch.done:
			tb.Fatalf("the writer stopped after %d writes: %v", ch.writes.Load(), ch.err)
		default:
		}
		return ch.writes.Load() >= n, fmt.Sprintf("%d writes", ch.writes.Load())
	})
}
