package cache_test

// End to end in binlog mode: store.Binlog over a real MariaDB with a row binary log as the
// source, the Cache's loader warming from its snapshot and following its change feed. After
// every kind of write and every fault the full compare (e2e_test.go) finds zero
// differences. Nothing sleeps: after a fault the test writes a marker row and waits until
// the cache shows it, so every change committed before the marker has been applied; when
// the fault makes the loader reload in place, it also waits for that reload to complete.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
	"wxlookup/internal/metrictest"
	"wxlookup/store"
)

const (
	// feedWait bounds every wait for the change feed (generous: -race on 2 busy cores).
	feedWait = 30 * time.Second
	// feedRetry is the loader's refresh interval here, which caps its back-off between
	// attempts to follow or to resnapshot.
	feedRetry = 100 * time.Millisecond
	// markKey is the marker row's key; no demo key begins with Z.
	markKey = "ZZ-MARK"
)

// feedServerIDs gives each fixture its own replica server_id: a server drops the older of
// two replicas with one id.
var feedServerIDs atomic.Uint32

// feedSource is the binlog source as the loader sees it, with two handles for the test: cut
// makes Follow stop reaching the server (the network between wxlookup and MySQL is down)
// until restored, and onRow runs during each snapshot. It counts Follow calls and the rows
// they delivered.
type feedSource struct {
	*store.Binlog
	follows atomic.Int64
	rows    atomic.Int64

	mu       sync.Mutex
	cut      chan struct{}                              // non-nil while cut off; closed when restored
	onRow    func(n int)                                // runs before row n (1, 2, …) of each snapshot is delivered
	onChange func(ctx context.Context, ch cache.Change) // runs before each Change is applied
}

func (s *feedSource) Follow(ctx context.Context, cursor string, fn func(cache.Change) error) error {
	s.follows.Add(1)
	s.mu.Lock()
	cut := s.cut
	s.mu.Unlock()
	if cut != nil {
		select {
		case <-cut:
			return errors.New("test: the network to the server was down")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Binlog.Follow(ctx, cursor, func(ch cache.Change) error {
		s.mu.Lock()
		hook := s.onChange
		s.mu.Unlock()
		if hook != nil {
			hook(ctx, ch)
		}
		s.rows.Add(int64(len(ch.Rows)))
		return fn(ch)
	})
}

func (s *feedSource) Snapshot(ctx context.Context, fn func(cache.Row) error) (time.Time, error) {
	s.mu.Lock()
	hook := s.onRow
	s.mu.Unlock()
	n := 0
	return s.Binlog.Snapshot(ctx, func(r cache.Row) error {
		n++
		if hook != nil {
			hook(n)
		}
		return fn(r)
	})
}

// cutOff makes the next Follow calls wait, without reaching the server, until restore.
func (s *feedSource) cutOff() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = make(chan struct{})
}

// restore ends cutOff: the Follow waiting fails as a lost connection does, and the next
// reaches the server.
func (s *feedSource) restore() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.cut)
	s.cut = nil
}

// setOnChange installs (nil: removes) the hook run before each Change is applied, with the
// context of the Follow call delivering it.
func (s *feedSource) setOnChange(f func(ctx context.Context, ch cache.Change)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = f
}

// setOnRow installs (nil: removes) the snapshot hook.
func (s *feedSource) setOnRow(f func(n int)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onRow = f
}

// feedFixture is a database on a binlog-enabled server, and a binlog-mode cache over it.
type feedFixture struct {
	dsn      string
	db       *sql.DB // writes, as root
	rdb      *sql.DB // the compare's reads
	mapping  store.Mapping
	query    string // the compare's SELECT
	serverID uint32
	src      *feedSource
	c        *cache.Cache
	reg      *prometheus.Registry
	// mark returns the statement that sets the marker row's value to v, and the key and
	// line the cache then answers.
	mark  func(v string) (s sqlStmt, key, line string)
	marks int
}

// newFeedFixture seeds a fresh database on srv with n demo rows and the marker, and opens
// a source and a cache on it (not started: see start).
func newFeedFixture(tb testing.TB, srv *mariadbtest.Server, n int) *feedFixture {
	tb.Helper()
	dsn, db := seeded(tb, srv, n)
	exec(tb, db, "INSERT INTO workpiece_location (part_no, location) VALUES (?, 'mark 0')", markKey)
	fx := &feedFixture{dsn: dsn, db: db, rdb: readerDB(tb, dsn), query: defaultTable,
		serverID: 2000 + feedServerIDs.Add(1),
		mark: func(v string) (sqlStmt, string, string) {
			return sqlStmt{"INSERT INTO workpiece_location (part_no, location) VALUES (?, ?) ON DUPLICATE KEY UPDATE location = VALUES(location)",
				[]any{markKey, v}}, markKey, demoLine(markKey, v)
		}}
	fx.open(tb)
	return fx
}

// newTypedFeedFixture is newFeedFixture for the typed table with rows 1 … n, in the
// session time zone z; it returns the location of z too.
func newTypedFeedFixture(tb testing.TB, srv *mariadbtest.Server, n int, z typedZone) (*feedFixture, *time.Location) {
	tb.Helper()
	dsn, loc, db := typedTable(tb, srv, n, z)
	const markID = "999999"
	fx := &feedFixture{dsn: dsn, db: db, rdb: readerDB(tb, dsn), mapping: typedMapping, query: typedQuery,
		serverID: 2000 + feedServerIDs.Add(1),
		mark: func(v string) (sqlStmt, string, string) {
			line := cache.DefaultRender(nil, cache.Row{Key: markID, Values: []string{"", "", "", "", v}})
			return sqlStmt{"INSERT INTO parts (id, name) VALUES (?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name)",
				[]any{markID, v}}, markID, string(line)
		}}
	fx.open(tb)
	return fx, loc
}

// open opens a new source and cache with the fixture's server_id, as a start of wxlookup
// does; both are closed when tb ends.
func (fx *feedFixture) open(tb testing.TB) {
	tb.Helper()
	b, err := store.OpenBinlog(store.BinlogConfig{
		MySQLConfig: store.MySQLConfig{DSN: fx.dsn, PageSize: 100, Mapping: fx.mapping},
		ServerID:    fx.serverID,
		Heartbeat:   100 * time.Millisecond,
	})
	if err != nil {
		tb.Fatalf("OpenBinlog: %v", err)
	}
	tb.Cleanup(func() { b.Close() })
	fx.src = &feedSource{Binlog: b}
	fx.reg = prometheus.NewRegistry()
	fx.c = newCache(tb, fx.src, cache.Config{
		Mode:            cache.ModeBinlog,
		RefreshInterval: feedRetry,
		Registerer:      fx.reg,
		Logger:          failureLog(tb),
	})
}

// start starts the cache and waits for its warm.
func (fx *feedFixture) start(tb testing.TB) { tb.Helper(); startReady(tb, fx.c) }

// sync writes a new value into the marker row and waits until the cache answers it: every
// change committed before has then been applied (the feed applies in commit order).
func (fx *feedFixture) sync(tb testing.TB) {
	tb.Helper()
	fx.marks++
	s, key, line := fx.mark(fmt.Sprintf("mark %d", fx.marks))
	exec(tb, fx.db, s.q, s.args...)
	fx.waitFor(tb, key, line)
}

// waitFor waits until key answers the line want ("" for not found) on its own, without any
// kick of the loader.
func (fx *feedFixture) waitFor(tb testing.TB, key, want string) {
	tb.Helper()
	waitUntil(tb, feedWait, fmt.Sprintf("Lookup(%q) to answer %q", key, want), func() (bool, string) {
		line, _, found, err := lookup(fx.c, key)
		return err == nil && found == (want != "") && line == want, fmt.Sprintf("got %q, found %v, err %v", line, found, err)
	})
}

// waitReloaded waits until a reload in place (a snapshot after the warm) completes after
// since.
func (fx *feedFixture) waitReloaded(tb testing.TB, since time.Time) {
	tb.Helper()
	waitUntil(tb, feedWait, "a reload in place", func() (bool, string) {
		st := fx.c.Status()
		return st.LastReload.After(since), fmt.Sprintf("last reload %v, recent errors %+v", st.LastReload, st.RecentErrors)
	})
}

// equal is the full compare of the cache with the table.
func (fx *feedFixture) equal(tb testing.TB, gone ...string) int {
	tb.Helper()
	return mustEqualTable(tb, fx.c, fx.rdb, fx.query, gone...)
}

// metric returns a counter of the fixture's cache.
func (fx *feedFixture) metric(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	return metrictest.Value(tb, fx.reg, name, labels...)
}

// demoKey and demoValue are the key and the location of demo row i.
func demoKey(i int) string   { k, _ := store.DemoRow(i); return k }
func demoValue(i int) string { _, v := store.DemoRow(i); return v }

// demoSeries returns the keys among demo rows 2 … n-1 that begin with letter.
func demoSeries(n int, letter string) []string {
	var keys []string
	for i := 2; i < n; i++ {
		if k := demoKey(i); strings.HasPrefix(k, letter) {
			keys = append(keys, k)
		}
	}
	return keys
}

// sqlStmt is one statement and its arguments.
type sqlStmt struct {
	q    string
	args []any
}

// TestFeedE2EWrites: every kind of write reaches the cache through the change feed alone —
// the test never calls Refresh or Reload, and one Follow call carries the whole test, so
// the stream applies each change on its own — and after each the cache equals the table.
func TestFeedE2EWrites(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 300
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), n)
	exec(t, fx.db, "CREATE TABLE other_table (part_no VARCHAR(64) PRIMARY KEY, location VARCHAR(255))")
	fx.start(t)
	bKeys, cKeys := demoSeries(n, "B"), demoSeries(n, "C")
	if len(bKeys) < 10 || len(cKeys) < 10 {
		t.Fatalf("got %d keys of series B and %d of C among %d demo rows, want ≥ 10 each", len(bKeys), len(cKeys), n)
	}
	var multi []string
	var multiArgs []any
	for i := range 50 {
		multi = append(multi, "(?, ?)")
		multiArgs = append(multiArgs, fmt.Sprintf("N2-%03d", i), fmt.Sprintf("多行插入%d号", i))
	}
	bRow := 20 // a row of series B that no other case writes
	for !strings.HasPrefix(demoKey(bRow), "B") {
		bRow++
	}

	tests := []struct {
		name         string
		tx, rollback bool // run the statements in one transaction, rolled back if rollback
		stmts        []sqlStmt
		key, want    string // a key the case writes and its line after ("" for not found)
		gone         []string
	}{
		{name: "insert",
			stmts: []sqlStmt{{"INSERT INTO workpiece_location (part_no, location) VALUES ('N1-001', '新行1号')", nil}},
			key:   "N1-001", want: "[N1-001] 新行1号"},
		{name: "update",
			stmts: []sqlStmt{{"UPDATE workpiece_location SET location = '焊装车间9号' WHERE part_no = ?", []any{demoKey(5)}}},
			key:   demoKey(5), want: demoLine(demoKey(5), "焊装车间9号")},
		{name: "delete",
			stmts: []sqlStmt{{"DELETE FROM workpiece_location WHERE part_no = ?", []any{demoKey(6)}}},
			key:   demoKey(6), gone: []string{demoKey(6)}},
		{name: "replace an existing row",
			stmts: []sqlStmt{{"REPLACE INTO workpiece_location (part_no, location) VALUES (?, '替换后')", []any{demoKey(7)}}},
			key:   demoKey(7), want: demoLine(demoKey(7), "替换后")},
		{name: "replace a new row",
			stmts: []sqlStmt{{"REPLACE INTO workpiece_location (part_no, location) VALUES ('N1-002', '替换插入')", nil}},
			key:   "N1-002", want: "[N1-002] 替换插入"},
		{name: "insert on duplicate key update",
			stmts: []sqlStmt{{"INSERT INTO workpiece_location (part_no, location) VALUES (?, '冲突更新') ON DUPLICATE KEY UPDATE location = VALUES(location)", []any{demoKey(8)}}},
			key:   demoKey(8), want: demoLine(demoKey(8), "冲突更新")},
		{name: "multi-row insert",
			stmts: []sqlStmt{{"INSERT INTO workpiece_location (part_no, location) VALUES " + strings.Join(multi, ", "), multiArgs}},
			key:   "N2-049", want: "[N2-049] 多行插入49号"},
		{name: "multi-row update",
			stmts: []sqlStmt{{"UPDATE workpiece_location SET location = CONCAT(location, '·改') WHERE part_no LIKE 'B%'", nil}},
			key:   demoKey(bRow), want: demoLine(demoKey(bRow), demoValue(bRow)+"·改")},
		{name: "multi-row delete",
			stmts: []sqlStmt{{"DELETE FROM workpiece_location WHERE part_no LIKE 'C%'", nil}},
			key:   cKeys[0], gone: cKeys},
		{name: "update of the key",
			stmts: []sqlStmt{{"UPDATE workpiece_location SET part_no = 'N3-001' WHERE part_no = ?", []any{demoKey(9)}}},
			key:   "N3-001", want: demoLine("N3-001", demoValue(9)), gone: []string{demoKey(9)}},
		{name: "update of the key's case",
			stmts: []sqlStmt{{"UPDATE workpiece_location SET part_no = 'a7-001' WHERE part_no = 'A7-001'", nil}},
			key:   "a7-001", want: "[a7-001] 总装车间A区12排"},
		{name: "transaction", tx: true,
			stmts: []sqlStmt{
				{"INSERT INTO workpiece_location (part_no, location) VALUES ('N4-001', '事务插入')", nil},
				{"UPDATE workpiece_location SET location = '事务更新' WHERE part_no = ?", []any{demoKey(10)}},
				{"DELETE FROM workpiece_location WHERE part_no = ?", []any{demoKey(11)}},
			},
			key: "N4-001", want: "[N4-001] 事务插入", gone: []string{demoKey(11)}},
		{name: "transaction rolled back", tx: true, rollback: true,
			stmts: []sqlStmt{
				{"INSERT INTO workpiece_location (part_no, location) VALUES ('N5-001', '回滚的插入')", nil},
				{"UPDATE workpiece_location SET location = '回滚的更新' WHERE part_no = ?", []any{demoKey(12)}},
				{"DELETE FROM workpiece_location WHERE part_no = ?", []any{demoKey(13)}},
			},
			key: demoKey(12), want: demoLine(demoKey(12), demoValue(12)), gone: []string{"N5-001"}},
		{name: "delete and insert again in one transaction", tx: true,
			stmts: []sqlStmt{
				{"DELETE FROM workpiece_location WHERE part_no = ?", []any{demoKey(14)}},
				{"INSERT INTO workpiece_location (part_no, location) VALUES (?, '重新插入')", []any{demoKey(14)}},
			},
			key: demoKey(14), want: demoLine(demoKey(14), "重新插入")},
		{name: "another table",
			stmts: []sqlStmt{{"INSERT INTO other_table (part_no, location) VALUES ('N6-001', '别的表')", nil}},
			key:   "N6-001", gone: []string{"N6-001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.tx {
				runTx(t, fx.db, !tt.rollback, tt.stmts...)
			} else {
				for _, s := range tt.stmts {
					exec(t, fx.db, s.q, s.args...)
				}
			}
			fx.waitFor(t, tt.key, tt.want)
			fx.sync(t)
			fx.equal(t, tt.gone...)
		})
	}
	if got := fx.src.follows.Load(); got != 1 {
		t.Errorf("got %d Follow calls, want 1: the stream alone applies every change", got)
	}
}

// TestFeedE2ETypedColumns: values that arrive as row events render exactly as the snapshot
// reads them — INT key, DECIMAL (zero and negative fractions included), DATETIME(6),
// TIMESTAMP (in the session's time zone: UTC, and +08:00 set in the DSN), CHAR, NULLs,
// Chinese text — so after every row is rewritten through the feed, and rows are inserted,
// nulled and deleted, the cache equals the table.
func TestFeedE2ETypedColumns(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.SharedBinlog(t)
	for _, z := range typedZones {
		t.Run(z.name, func(t *testing.T) {
			const n = 200
			fx, loc := newTypedFeedFixture(t, srv, n, z)
			fx.start(t)
			fx.equal(t)

			var tuples []string
			var args []any
			for i := n + 1; i <= n+20; i++ {
				vals, _ := typedRow(i)
				tuples = append(tuples, "(?, ?, ?, ?, ?, ?)")
				args = append(append(args, i), vals...)
			}
			exec(t, fx.db, "INSERT INTO parts (id, price, made, seen, code, name) VALUES "+strings.Join(tuples, ", "), args...)
			for i := n + 1; i <= n+20; i++ {
				fx.waitFor(t, strconv.Itoa(i), typedLine(i, loc))
			}
			exec(t, fx.db, "UPDATE parts SET price = -price, made = made + INTERVAL 1 SECOND, seen = seen + INTERVAL 1 HOUR, "+
				"code = CONCAT(code, 'x'), name = CONCAT(name, '·改') WHERE id <= ?", n)
			exec(t, fx.db, "UPDATE parts SET price = NULL, seen = NULL, name = '' WHERE id = 5")
			exec(t, fx.db, "DELETE FROM parts WHERE id = 6")
			fx.sync(t)
			fx.equal(t, "6")
		})
	}
}

// runTx runs statements in one transaction and commits it, or rolls it back.
func runTx(tb testing.TB, db *sql.DB, commit bool, stmts ...sqlStmt) {
	tb.Helper()
	tx, err := db.BeginTx(testCtx(tb), nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(testCtx(tb), s.q, s.args...); err != nil {
			tx.Rollback()
			tb.Fatalf("%s: %v", s.q, err)
		}
	}
	if commit {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// TestFeedE2EBigUpdate: one UPDATE of 100,000 rows in one transaction, which the feed
// delivers in Changes of at most 10,000 rows. The feed is interrupted (a kick) while the
// loader applies the second of them; it follows again from the commit before the
// transaction, replays all of it, and the cache equals the table, every row updated.
func TestFeedE2EBigUpdate(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 100_000
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), n)
	fx.start(t)
	holding := make(chan struct{})
	parts := 0
	fx.src.setOnChange(func(ctx context.Context, ch cache.Change) {
		if len(ch.Rows) == 0 {
			return
		}
		if parts++; parts != 2 {
			return
		}
		close(holding)
		select { // until the kick has cancelled this Follow
		case <-ctx.Done():
		case <-time.After(feedWait):
		}
	})
	before := fx.src.rows.Load()
	exec(t, fx.db, "UPDATE workpiece_location SET location = CONCAT(location, '#') WHERE part_no <> ?", markKey)
	select {
	case <-holding:
	case <-time.After(feedWait):
		t.Fatal("the feed did not deliver the transaction")
	}
	if err := fx.c.Refresh(testCtx(t)); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	fx.sync(t)
	if got := fx.src.rows.Load() - before; got < n+2*store.DefaultMaxChangeRows {
		t.Errorf("the feed delivered %d rows, want ≥ %d: two Changes, then the whole transaction again", got, n+2*store.DefaultMaxChangeRows)
	}
	if got := fx.src.follows.Load(); got != 2 {
		t.Errorf("got %d Follow calls, want 2 (one interrupted)", got)
	}
	fx.equal(t)
	mustFind(t, fx.c, store.DemoKey, demoLine(store.DemoKey, store.DemoLocation+"#"))
}

// TestFeedE2ERotate: FLUSH BINARY LOGS between writes; the feed follows into each new file
// without reconnecting, and the cache equals the table.
func TestFeedE2ERotate(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), 300)
	fx.start(t)
	first := fx.c.Status().Position
	var gone []string
	for i := range 3 {
		exec(t, fx.db, "INSERT INTO workpiece_location (part_no, location) VALUES (?, '轮换')", fmt.Sprintf("N7-%03d", i))
		exec(t, fx.db, "UPDATE workpiece_location SET location = '轮换更新' WHERE part_no = ?", demoKey(20+i))
		exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", demoKey(40+i))
		gone = append(gone, demoKey(40+i))
		exec(t, fx.db, "FLUSH BINARY LOGS")
	}
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no, location) VALUES ('N7-999', '轮换之后')")
	fx.sync(t)
	fx.equal(t, gone...)
	last := fx.c.Status().Position
	if cursorFile(last) <= cursorFile(first) {
		t.Errorf("got position %s after three rotations from %s, want a later file", last, first)
	}
	if got := fx.src.follows.Load(); got != 1 {
		t.Errorf("got %d Follow calls, want 1: a rotation is followed in the stream", got)
	}
}

// cursorFile returns the file of a binlog cursor "file:pos".
func cursorFile(c string) string {
	if i := strings.LastIndexByte(c, ':'); i >= 0 {
		return c[:i]
	}
	return c
}

// TestFeedE2EPurged: the cache stops following (the network to MySQL is down), meanwhile
// rows change and the binary logs it has not read are purged. When it can follow again, its
// position is gone: the loader reloads in place, the cache equals the table, and the rows
// deleted meanwhile are gone from it. A private server, as PURGE is global.
func TestFeedE2EPurged(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.Start(t, mariadbtest.WithBinlog()), 300)
	fx.start(t)
	exec(t, fx.db, "UPDATE workpiece_location SET location = '断网之前' WHERE part_no = ?", demoKey(5))
	fx.sync(t)

	fx.src.cutOff()
	// The kick interrupts the Follow in progress; the next one waits for the network.
	if err := fx.c.Refresh(testCtx(t)); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	dKeys := demoSeries(300, "D")
	gone := append([]string{demoKey(6)}, dKeys...)
	exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", demoKey(6))
	exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no LIKE 'D%'")
	exec(t, fx.db, "UPDATE workpiece_location SET location = '断网期间' WHERE part_no = ?", demoKey(7))
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no, location) VALUES ('N8-001', '断网期间插入')")
	exec(t, fx.db, "FLUSH BINARY LOGS")
	pos, err := fx.src.Position(testCtx(t))
	if err != nil {
		t.Fatalf("Position: %v", err)
	}
	purgeTo(t, fx.rdb, cursorFile(pos))
	mustFind(t, fx.c, demoKey(6), demoLine(demoKey(6), demoValue(6))) // not following: still held

	since := time.Now()
	fx.src.restore()
	fx.waitReloaded(t, since)
	fx.sync(t)
	fx.equal(t, gone...)
	if got := fx.metric(t, "wxlookup_changefeed_resnapshots_total"); got != 1 {
		t.Errorf("got wxlookup_changefeed_resnapshots_total %v, want 1", got)
	}
	if !recentError(fx.c.Status(), "follow", "needs a new snapshot") {
		t.Errorf("got recent errors %+v, want a follow error asking for a new snapshot", fx.c.Status().RecentErrors)
	}
}

// recentError reports whether st holds an error of step whose text contains part.
func recentError(st cache.Status, step, part string) bool {
	for _, e := range st.RecentErrors {
		if e.Step == step && strings.Contains(e.Err, part) {
			return true
		}
	}
	return false
}

// purgeTo purges the binary logs before file, polling until the server has done it: MariaDB
// keeps a log while a replica still reads it, and the connection of a Follow just ended
// may linger on the server for a moment.
func purgeTo(tb testing.TB, db *sql.DB, file string) {
	tb.Helper()
	waitUntil(tb, feedWait, "PURGE BINARY LOGS TO "+file, func() (bool, string) {
		exec(tb, db, "PURGE BINARY LOGS TO '"+file+"'")
		logs := tableRows(tb, db, "SHOW BINARY LOGS")
		return logs[0].Key == file, "the first log is " + logs[0].Key
	})
}

// TestFeedE2ETruncate: TRUNCATE of the mapped table makes the loader reload in place; the
// truncated rows are gone and the rows written after are there.
func TestFeedE2ETruncate(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), 300)
	fx.start(t)
	var gone []string
	for _, k := range sortedKeys(t, fx.rdb) {
		if k != markKey {
			gone = append(gone, k)
		}
	}
	since := time.Now()
	exec(t, fx.db, "TRUNCATE TABLE workpiece_location")
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no, location) VALUES ('N9-001', '清空之后'), ('N9-002', '清空之后')")
	fx.waitReloaded(t, since)
	fx.sync(t)
	if rows := fx.equal(t, gone...); rows != 3 {
		t.Errorf("compared %d rows, want 3 (two inserted after the truncate, and the marker)", rows)
	}
	if got := fx.metric(t, "wxlookup_changefeed_resnapshots_total"); got != 1 {
		t.Errorf("got wxlookup_changefeed_resnapshots_total %v, want 1", got)
	}
}

// TestFeedE2EAlterAddColumn: ALTER TABLE ADD COLUMN on the mapped table makes the loader
// reload in place; the mapping still holds, and writes after it, to the new column too,
// are followed.
func TestFeedE2EAlterAddColumn(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), 300)
	fx.start(t)
	since := time.Now()
	exec(t, fx.db, "ALTER TABLE workpiece_location ADD COLUMN note VARCHAR(32) NULL AFTER part_no")
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no, note, location) VALUES ('NA-001', '备注', '加列之后')")
	exec(t, fx.db, "UPDATE workpiece_location SET location = '加列之后更新', note = 'x' WHERE part_no = ?", demoKey(3))
	exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", demoKey(4))
	fx.waitReloaded(t, since)
	fx.sync(t)
	fx.equal(t, demoKey(4))
	if got := fx.metric(t, "wxlookup_changefeed_resnapshots_total"); got != 1 {
		t.Errorf("got wxlookup_changefeed_resnapshots_total %v, want 1", got)
	}
}

// TestFeedE2EOnlineSchemaChange: the table is altered the way online schema change tools
// (pt-online-schema-change, gh-ost) do it: a copy with the new shape is filled while the
// table takes writes, then swapped in by one RENAME and the old table dropped. The feed
// ignores the copy's rows, reloads in place at the RENAME, and follows the writes after;
// the cache equals the table.
func TestFeedE2EOnlineSchemaChange(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), 300)
	fx.start(t)
	exec(t, fx.db, "CREATE TABLE _wl_new LIKE workpiece_location")
	exec(t, fx.db, "ALTER TABLE _wl_new ADD COLUMN shift TINYINT NULL AFTER part_no, MODIFY location VARCHAR(500) NOT NULL")
	exec(t, fx.db, "UPDATE workpiece_location SET location = '复制之前' WHERE part_no = ?", demoKey(3))
	exec(t, fx.db, "INSERT INTO _wl_new (part_no, location, updated_at) SELECT part_no, location, updated_at FROM workpiece_location")
	// Written during the copy, and copied by the tool's triggers (here: by hand) to the new table.
	exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", demoKey(4))
	exec(t, fx.db, "DELETE FROM _wl_new WHERE part_no = ?", demoKey(4))
	fx.sync(t)
	fx.equal(t, demoKey(4))

	since := time.Now()
	exec(t, fx.db, "UPDATE _wl_new SET location = '只在新表' WHERE part_no = ?", demoKey(5)) // differs from the old table
	exec(t, fx.db, "RENAME TABLE workpiece_location TO _wl_old, _wl_new TO workpiece_location")
	exec(t, fx.db, "DROP TABLE _wl_old")
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no, shift, location) VALUES ('NS-001', 2, '换表之后')")
	fx.waitReloaded(t, since)
	fx.sync(t)
	fx.equal(t, demoKey(4))
	mustFind(t, fx.c, demoKey(5), demoLine(demoKey(5), "只在新表"))
}

// TestFeedE2ETableRenamedAway: the mapped table is renamed away (as a two-step swap would
// leave it for a moment). The reload fails with the mapping error naming the table, which
// the status shows, and the cache keeps answering every row it had; rows written to the
// renamed table meanwhile are not followed. Once it is renamed back the loader recovers
// on its own and the cache equals the table, those rows included.
func TestFeedE2ETableRenamedAway(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), 300)
	fx.start(t)
	before := tableRows(t, fx.rdb, defaultTable)
	exec(t, fx.db, "RENAME TABLE workpiece_location TO _wl_away")
	waitUntil(t, feedWait, "the mapping error in the status", func() (bool, string) {
		st := fx.c.Status()
		return recentError(st, "resnapshot", "no table"), fmt.Sprintf("recent errors %+v", st.RecentErrors)
	})
	exec(t, fx.db, "DELETE FROM _wl_away WHERE part_no = ?", demoKey(4))
	exec(t, fx.db, "UPDATE _wl_away SET location = '改名期间' WHERE part_no = ?", demoKey(5))
	mustEqualRows(t, fx.c, before)

	since := time.Now()
	exec(t, fx.db, "RENAME TABLE _wl_away TO workpiece_location")
	fx.waitReloaded(t, since)
	fx.sync(t)
	fx.equal(t, demoKey(4))
	mustFind(t, fx.c, demoKey(5), demoLine(demoKey(5), "改名期间"))
}

// TestFeedE2EAlterDropMappedColumn: ALTER TABLE DROP COLUMN of the mapped value column.
// The reload it causes fails with the mapping error, which the status shows; meanwhile
// the cache keeps answering every row it had, as it had it. Once the column is added
// again the loader recovers on its own and the cache equals the table.
func TestFeedE2EAlterDropMappedColumn(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), 300)
	fx.start(t)
	before := tableRows(t, fx.rdb, defaultTable)

	exec(t, fx.db, "ALTER TABLE workpiece_location DROP COLUMN location")
	waitUntil(t, feedWait, "the mapping error in the status", func() (bool, string) {
		st := fx.c.Status()
		return recentError(st, "resnapshot", `"location"`), fmt.Sprintf("recent errors %+v", st.RecentErrors)
	})
	exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", demoKey(4))
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no) VALUES ('NB-001')")
	// Still failing (a later attempt, after the writes), still serving the old rows.
	failures := fx.metric(t, "wxlookup_loader_step_errors_total", "step", "resnapshot")
	waitUntil(t, feedWait, "another failed attempt", func() (bool, string) {
		got := fx.metric(t, "wxlookup_loader_step_errors_total", "step", "resnapshot")
		return got > failures, fmt.Sprintf("%v failed resnapshots", got)
	})
	if st := fx.c.Status(); !st.Ready {
		t.Fatalf("got Ready false during the mapping error, want the cache to go on answering")
	}
	mustEqualRows(t, fx.c, before, "NB-001")

	since := time.Now()
	exec(t, fx.db, "ALTER TABLE workpiece_location ADD COLUMN location VARCHAR(255) NOT NULL DEFAULT '待定' AFTER part_no")
	exec(t, fx.db, "UPDATE workpiece_location SET location = '加回之后' WHERE part_no = ?", demoKey(5))
	fx.waitReloaded(t, since)
	fx.sync(t)
	fx.equal(t, demoKey(4))
	mustFind(t, fx.c, demoKey(3), demoLine(demoKey(3), "待定"))
}

// TestFeedE2EKilled: MariaDB is killed (SIGKILL) while a writer streams changes and the
// feed applies them, twice. While it is down no write can be made and the cache answers
// every row it holds. After the restart the loader recovers on its own, and the writes
// made right after are applied: the first time the feed resumes from its position (no
// reload); the second time a Reload failed during the outage, so the loader first takes
// the snapshot it left to do. Each time the cache equals the table, whichever writes in
// flight at the kill survived. A private server, as it is killed.
func TestFeedE2EKilled(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 500
	srv := mariadbtest.Start(t, mariadbtest.WithBinlog())
	fx := newFeedFixture(t, srv, n)
	fx.start(t)
	bKeys := demoSeries(n, "B") // the writer's
	var gone []string

	tests := []struct {
		name   string
		reload bool // a Reload during the outage
	}{
		{"the feed resumes", false},
		{"a reload failed meanwhile", true},
	}
	for round, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The writer updates series B and inserts NK- rows; lookups check every other row.
			lines := map[string]string{}
			var others []string
			for _, r := range tableRows(t, fx.rdb, defaultTable) {
				if !strings.HasPrefix(r.Key, "B") && !strings.HasPrefix(r.Key, "NK-") && r.Key != markKey {
					lines[r.Key] = string(cache.DefaultRender(nil, r))
					others = append(others, r.Key)
				}
			}
			loop := startLookups(t, fx.c, others, func(key, line string, found bool, err error) bool {
				return err == nil && found && line == lines[key]
			})
			reloaded := fx.c.Status().LastReload
			reconnects := fx.metric(t, "wxlookup_changefeed_reconnects_total")
			applied := fx.src.rows.Load()
			writerDone := make(chan error, 1)
			stopWriter := make(chan struct{})
			go func() {
				for i := 0; i < 100_000; i++ {
					select {
					case <-stopWriter:
						writerDone <- nil
						return
					default:
					}
					q, args := "UPDATE workpiece_location SET location = ? WHERE part_no = ?", []any{fmt.Sprintf("写入%d", i), bKeys[i%len(bKeys)]}
					if i%10 == 0 {
						q, args = "INSERT INTO workpiece_location (part_no, location) VALUES (?, '写入')", []any{fmt.Sprintf("NK-%d-%05d", round, i)}
					}
					if _, err := fx.db.ExecContext(context.Background(), q, args...); err != nil {
						writerDone <- err
						return
					}
				}
				writerDone <- errors.New("the writer ran out of writes before the kill")
			}()
			defer close(stopWriter)
			waitUntil(t, feedWait, "the feed to apply the writer's changes", func() (bool, string) {
				got := fx.src.rows.Load() - applied
				return got >= 100, fmt.Sprintf("%d rows applied", got)
			})

			srv.Kill(t)
			atKill := loop.n.Load()
			select {
			case err := <-writerDone:
				if err == nil {
					t.Fatal("the writer stopped without an error")
				}
				t.Logf("the writer stopped with: %v", err)
			case <-time.After(feedWait):
				t.Fatal("the writer went on writing after the kill")
			}
			ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
			defer cancel()
			if _, err := fx.db.ExecContext(ctx, "INSERT INTO workpiece_location (part_no, location) VALUES ('NK-DOWN', '宕机时')"); err == nil {
				t.Fatal("a write succeeded while the server was down")
			}
			waitUntil(t, feedWait, "the feed to notice the lost connection", func() (bool, string) {
				got := fx.metric(t, "wxlookup_changefeed_reconnects_total")
				return got > reconnects, fmt.Sprintf("%v reconnects", got)
			})
			if tt.reload {
				if err := fx.c.Reload(testCtx(t)); err == nil {
					t.Fatal("Reload succeeded while the server was down")
				}
			}

			srv.Restart(t)
			loop.halt()
			if loop.bad != 0 {
				t.Errorf("%d of %d lookups failed; first: %s", loop.bad, loop.n.Load(), loop.first)
			}
			if loop.n.Load() == atKill {
				t.Error("no lookup ran while the server was down (the test proves nothing)")
			}
			after := fmt.Sprintf("NK-AFTER-%d", round)
			exec(t, fx.db, "UPDATE workpiece_location SET location = '重启之后' WHERE part_no = ?", others[3])
			exec(t, fx.db, "INSERT INTO workpiece_location (part_no, location) VALUES (?, '重启之后插入')", after)
			exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", others[4])
			gone = append(gone, others[4])
			fx.waitFor(t, after, demoLine(after, "重启之后插入"))
			fx.sync(t)
			fx.equal(t, append(gone, "NK-DOWN")...)

			if got := fx.metric(t, "wxlookup_changefeed_resnapshots_total"); got != 0 {
				t.Errorf("got wxlookup_changefeed_resnapshots_total %v, want 0: the position survives the crash", got)
			}
			if last := fx.c.Status().LastReload; last.After(reloaded) != tt.reload {
				t.Errorf("got the last reload at %v (before the kill: %v), want a reload after the kill %v", last, reloaded, tt.reload)
			}
		})
	}
}

// TestFeedE2ECacheRestart: wxlookup itself restarts — the cache is closed, rows change
// while none runs, and a new cache (a new source with the same server_id, as a restarted
// instance has) warms and follows: it equals the table at once, and follows the writes
// after.
func TestFeedE2ECacheRestart(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), 300)
	fx.start(t)
	exec(t, fx.db, "UPDATE workpiece_location SET location = '第一次运行' WHERE part_no = ?", demoKey(3))
	fx.sync(t)
	if err := fx.c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	exec(t, fx.db, "UPDATE workpiece_location SET location = '停机期间' WHERE part_no = ?", demoKey(4))
	exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", demoKey(5))
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no, location) VALUES ('NR-001', '停机期间插入')")
	fx.open(t)
	fx.start(t)
	fx.equal(t, demoKey(5))

	exec(t, fx.db, "UPDATE workpiece_location SET location = '第二次运行' WHERE part_no = ?", demoKey(6))
	exec(t, fx.db, "DELETE FROM workpiece_location WHERE part_no = ?", demoKey(7))
	exec(t, fx.db, "INSERT INTO workpiece_location (part_no, location) VALUES ('NR-002', '第二次运行插入')")
	fx.sync(t)
	fx.equal(t, demoKey(5), demoKey(7))
}

// TestFeedE2EWritesDuringSnapshot: rows are inserted, updated, deleted and re-keyed while a
// snapshot streams — on both sides of its position — first during the warm, then during a
// Reload. The feed, following from the position recorded before the snapshot, puts each
// right, and the cache equals the table.
func TestFeedE2EWritesDuringSnapshot(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 400 // pages of 100 rows: the hook runs in the second page
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), n)
	keys := sortedKeys(t, fx.rdb)

	var mu sync.Mutex
	var hookErr error
	fired := 0
	// arm makes the next snapshot, at its row 150, write changes around keys[base+…],
	// and returns the keys those changes delete.
	arm := func(base int) []string {
		k := func(i int) string { return keys[base+i] }
		stmts := []sqlStmt{
			{"UPDATE workpiece_location SET location = '快照期间更新' WHERE part_no = ?", []any{k(10)}},  // read already
			{"UPDATE workpiece_location SET location = '快照期间更新' WHERE part_no = ?", []any{k(250)}}, // not yet read
			{"DELETE FROM workpiece_location WHERE part_no = ?", []any{k(20)}},
			{"DELETE FROM workpiece_location WHERE part_no = ?", []any{k(260)}},
			{"INSERT INTO workpiece_location (part_no, location) VALUES (?, '快照期间插入')", []any{k(30) + "X"}},
			{"INSERT INTO workpiece_location (part_no, location) VALUES (?, '快照期间插入')", []any{k(270) + "X"}},
			{"UPDATE workpiece_location SET part_no = ? WHERE part_no = ?", []any{k(280) + "Y", k(40)}},
			{"UPDATE workpiece_location SET part_no = ? WHERE part_no = ?", []any{k(50) + "Y", k(290)}},
		}
		var once sync.Once
		fx.src.setOnRow(func(row int) {
			if row != 150 {
				return
			}
			once.Do(func() {
				mu.Lock()
				defer mu.Unlock()
				fired++
				for _, s := range stmts {
					if _, err := fx.db.ExecContext(context.Background(), s.q, s.args...); err != nil && hookErr == nil {
						hookErr = fmt.Errorf("%s: %w", s.q, err)
					}
				}
			})
		})
		return []string{k(20), k(260), k(40), k(290)}
	}
	check := func(t *testing.T, wantFired int, gone []string) {
		t.Helper()
		fx.src.setOnRow(nil)
		mu.Lock()
		err, got := hookErr, fired
		mu.Unlock()
		if err != nil || got != wantFired {
			t.Fatalf("the snapshot hook ran %d times (err %v), want %d", got, err, wantFired)
		}
		fx.sync(t)
		fx.equal(t, gone...)
	}

	t.Run("warm", func(t *testing.T) {
		gone := arm(0)
		fx.start(t)
		check(t, 1, gone)
	})
	t.Run("reload", func(t *testing.T) {
		gone := arm(50)
		if err := fx.c.Reload(testCtx(t)); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		check(t, 2, gone)
	})
}

// TestFeedE2EConcurrentWrites: a writer changes the table at random while the feed
// follows; meanwhile the cache reloads in place three times and the feed is interrupted
// three times (kicks). Rows the writer never touches answer throughout; once it stops, the
// cache equals the table.
func TestFeedE2EConcurrentWrites(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	const n = 300
	fx := newFeedFixture(t, mariadbtest.SharedBinlog(t), n)
	fx.start(t)
	pool, stable := churnPool(n)
	loop := lookupStable(t, fx.c, stable)
	ch := startChurn(t, fx.db, pool, uint64(time.Now().UnixNano()))
	for i := int64(1); i <= 3; i++ {
		waitWrites(t, ch, 500*i)
		if err := fx.c.Reload(testCtx(t)); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		waitWrites(t, ch, 500*i+250)
		if err := fx.c.Refresh(testCtx(t)); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	}
	ch.halt()
	if ch.err != nil {
		t.Fatalf("writer: %v", ch.err)
	}
	loop.halt()
	if loop.bad != 0 {
		t.Errorf("%d of %d lookups of rows the writer never touched failed; first: %s", loop.bad, loop.n.Load(), loop.first)
	}
	fx.sync(t)
	fx.equal(t, absent(t, fx.rdb, defaultTable, pool)...)
}
