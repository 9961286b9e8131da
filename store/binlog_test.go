package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vlog "vitess.io/vitess/go/vt/log"

	"wxlookup/cache"
	"wxlookup/internal/logtest"
	"wxlookup/internal/mariadbtest"
)

// testHeartbeat is short so that a follower reaches a position written only by bookkeeping
// events (which a heartbeat carries) quickly.
const testHeartbeat = 100 * time.Millisecond

// followWait bounds every wait for the change feed.
const followWait = 30 * time.Second

// serverIDs gives each test's replica its own server_id: a server drops the older of two
// replicas with one id.
var serverIDs atomic.Uint32

func nextServerID() uint32 { return 1000 + serverIDs.Add(1) }

// binlogFixture is a database on a binlog-enabled server, seeded with the default table, and
// a Binlog source reading it.
type binlogFixture struct {
	srv *mariadbtest.Server
	dsn string
	db  *sql.DB
	b   *Binlog
}

func newBinlogFixture(t *testing.T, srv *mariadbtest.Server, n int, tune ...func(*BinlogConfig)) *binlogFixture {
	t.Helper()
	dsn, db := seededDB(t, srv, n)
	cfg := BinlogConfig{MySQLConfig: MySQLConfig{DSN: dsn}, ServerID: nextServerID(), Heartbeat: testHeartbeat}
	for _, f := range tune {
		f(&cfg)
	}
	b, err := OpenBinlog(cfg)
	if err != nil {
		t.Fatalf("OpenBinlog: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return &binlogFixture{srv: srv, dsn: dsn, db: db, b: b}
}

// exec runs statements on the fixture's database, each on the pool (autocommit).
func (fx *binlogFixture) exec(t *testing.T, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := fx.db.ExecContext(testCtx(t), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// tx runs statements in one transaction on one connection and commits it, or rolls it
// back when commit is false.
func (fx *binlogFixture) tx(t *testing.T, commit bool, stmts ...string) {
	t.Helper()
	tx, err := fx.db.BeginTx(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			tx.Rollback()
			t.Fatalf("%s: %v", q, err)
		}
	}
	if commit {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (fx *binlogFixture) position(t *testing.T) string {
	t.Helper()
	p, err := fx.b.Position(testCtx(t))
	if err != nil {
		t.Fatalf("Position: %v", err)
	}
	return p
}

// eventsSince lists the types of the events logged since cursor (in its file), leaving
// out the server's own bookkeeping (binlog checkpoints).
func (fx *binlogFixture) eventsSince(t *testing.T, cursor string) []string {
	t.Helper()
	file, pos, err := parseCursor(cursor)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := fx.db.QueryContext(testCtx(t), fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %d", file, pos))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var types []string
	for rows.Next() {
		var logName, typ, info string
		var at, serverID, end int64
		if err := rows.Scan(&logName, &at, &typ, &serverID, &end, &info); err != nil {
			t.Fatal(err)
		}
		if typ != "Binlog_checkpoint" {
			types = append(types, typ)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return types
}

// table reads the whole mapped table with the text protocol, as the snapshot does.
func (fx *binlogFixture) table(t *testing.T) map[string]cache.Row {
	t.Helper()
	rows, err := fx.db.QueryContext(testCtx(t), "SELECT part_no, location FROM workpiece_location")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]cache.Row{}
	for rows.Next() {
		var k, v sql.RawBytes
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		vals := []string{string(v)}
		out[string(k)] = cache.Row{Key: string(k), Values: vals, Sum: cache.RowSum(string(k), vals)}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// appliedRows is the test's own apply of Changes: a map of the rows the change feed says the
// table holds, the last cursor, and every Change seen.
type appliedRows struct {
	mu      sync.Mutex
	rows    map[string]cache.Row
	cursor  string
	changes []cache.Change
	moved   chan struct{} // closed and replaced on every Change
}

func newAppliedRows() *appliedRows {
	return &appliedRows{rows: map[string]cache.Row{}, moved: make(chan struct{})}
}

func (a *appliedRows) apply(ch cache.Change) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range ch.Rows {
		if r.Deleted {
			delete(a.rows, r.Key)
		} else {
			a.rows[strings.Clone(r.Key)] = keepRow(r)
		}
	}
	a.cursor = ch.Cursor
	a.changes = append(a.changes, ch)
	close(a.moved)
	a.moved = make(chan struct{})
	return nil
}

// snapshot fills a from the source's Snapshot.
func (a *appliedRows) snapshot(t *testing.T, b *Binlog) {
	t.Helper()
	_, err := b.Snapshot(testCtx(t), func(r cache.Row) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		r.Sum = cache.RowSum(r.Key, r.Values)
		a.rows[strings.Clone(r.Key)] = keepRow(r)
		return nil
	})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
}

func (a *appliedRows) state() (map[string]cache.Row, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return copyRows(a.rows), a.cursor
}

func copyRows(m map[string]cache.Row) map[string]cache.Row {
	out := make(map[string]cache.Row, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// followRun is a Follow running in the background.
type followRun struct {
	a      *appliedRows
	cancel context.CancelFunc
	done   chan error
}

// startFollow starts b.Follow from cursor into a; it is stopped when the test ends.
func startFollow(t *testing.T, b *Binlog, cursor string, a *appliedRows) *followRun {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	f := &followRun{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- b.Follow(ctx, cursor, a.apply) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(followWait):
			t.Errorf("Follow did not return %s after its context was cancelled", followWait)
		}
	})
	return f
}

// cursorLess orders cursors of one server: by file, then position.
func cursorLess(a, b string) bool {
	fa, pa, _ := parseCursor(a)
	fb, pb, _ := parseCursor(b)
	if fa != fb {
		return fa < fb
	}
	return pa < pb
}

// waitCursor waits until the follower has applied a Change whose cursor is at or past
// target, and fails the test if Follow ends first or the deadline passes.
func (f *followRun) waitCursor(t *testing.T, target string) {
	t.Helper()
	deadline := time.After(followWait)
	for {
		f.a.mu.Lock()
		cur, moved := f.a.cursor, f.a.moved
		f.a.mu.Unlock()
		if cur != "" && !cursorLess(cur, target) {
			return
		}
		select {
		case <-moved:
		case err := <-f.done:
			t.Fatalf("Follow ended before reaching %s (at %q): %v", target, cur, err)
		case <-deadline:
			t.Fatalf("Follow did not reach %s within %s (at %q)", target, followWait, cur)
		}
	}
}

// waitErr waits for Follow to end and returns its error.
func (f *followRun) waitErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.done:
		f.done <- err // for the cleanup
		return err
	case <-time.After(followWait):
		t.Fatalf("Follow did not end within %s", followWait)
		return nil
	}
}

// sameFollowedRows fails the test listing the differences between the applied rows and the table.
func sameFollowedRows(t *testing.T, got, want map[string]cache.Row) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %q", k))
		case !slices.Equal(g.Values, w.Values) || g.Sum != w.Sum:
			diffs = append(diffs, fmt.Sprintf("key %q: got %q (sum %d), want %q (sum %d)", k, g.Values, g.Sum, w.Values, w.Sum))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %q", k))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		t.Fatalf("%d differences between the applied rows and the table, e.g.:\n%s", len(diffs), strings.Join(diffs[:min(len(diffs), 10)], "\n"))
	}
}

// startFollowing records the position, runs before (writes that happen between position and
// snapshot: the snapshot already holds them and following delivers them again), snapshots
// and follows from the recorded position.
func (fx *binlogFixture) startFollowing(t *testing.T, before func()) *followRun {
	t.Helper()
	pos := fx.position(t)
	if before != nil {
		before()
	}
	a := newAppliedRows()
	a.snapshot(t, fx.b)
	return startFollow(t, fx.b, pos, a)
}

// catchUp waits until the follower has applied everything written so far and compares it
// with the table.
func (fx *binlogFixture) catchUp(t *testing.T, f *followRun) {
	t.Helper()
	f.waitCursor(t, fx.position(t))
	got, _ := f.a.state()
	sameFollowedRows(t, got, fx.table(t))
}

func TestBinlogFollowAppliesEveryWrite(t *testing.T) {
	srv := mariadbtest.SharedBinlog(t)
	tests := []struct {
		name   string
		before []string   // between position and snapshot
		writes [][]string // each a transaction
	}{
		{name: "insert", writes: [][]string{{"INSERT INTO workpiece_location (part_no, location) VALUES ('N-1', '新的库位 🚚')"}}},
		{name: "update", writes: [][]string{{"UPDATE workpiece_location SET location = 'moved' WHERE part_no = '18-546'"}}},
		{name: "delete", writes: [][]string{{"DELETE FROM workpiece_location WHERE part_no = '18-546'"}}},
		{name: "replace existing and new", writes: [][]string{
			{"REPLACE INTO workpiece_location (part_no, location) VALUES ('18-546', 'replaced')"},
			{"REPLACE INTO workpiece_location (part_no, location) VALUES ('R-1', 'new by replace')"},
		}},
		{name: "multi-row statements", writes: [][]string{
			{"INSERT INTO workpiece_location (part_no, location) VALUES ('M-1', 'a'), ('M-2', 'b'), ('M-3', 'c')"},
			{"UPDATE workpiece_location SET location = CONCAT(location, '+') WHERE part_no < '18-6'"},
			{"DELETE FROM workpiece_location WHERE part_no LIKE 'M-%' OR part_no > '9'"},
			{"INSERT INTO workpiece_location (part_no, location) VALUES ('M-1', 'x'), ('18-546', 'y') ON DUPLICATE KEY UPDATE location = VALUES(location)"},
		}},
		{name: "update changes the key", writes: [][]string{
			{"UPDATE workpiece_location SET part_no = 'K-NEW' WHERE part_no = '18-546'"},
			{"UPDATE workpiece_location SET part_no = 'k-new', location = 'case only' WHERE part_no = 'K-NEW'"},
		}},
		{name: "several statements in one transaction", writes: [][]string{{
			"INSERT INTO workpiece_location (part_no, location) VALUES ('T-1', 'one')",
			"UPDATE workpiece_location SET location = 'two' WHERE part_no = 'T-1'",
			"DELETE FROM workpiece_location WHERE part_no = '18-546'",
			"INSERT INTO workpiece_location (part_no, location) VALUES ('18-546', 'back')",
		}}},
		{name: "writes during the snapshot are applied again",
			before: []string{
				"UPDATE workpiece_location SET location = 'during' WHERE part_no = '18-546'",
				"INSERT INTO workpiece_location (part_no, location) VALUES ('D-1', 'during')",
				"DELETE FROM workpiece_location WHERE part_no > '9'",
			},
			writes: [][]string{{"UPDATE workpiece_location SET location = 'after' WHERE part_no = 'D-1'"}}},
		{name: "other tables and their DDL are ignored", writes: [][]string{
			{"CREATE TABLE other (k INT PRIMARY KEY, v VARCHAR(40))"},
			{"INSERT INTO other VALUES (1, 'a'), (2, 'b')"},
			{"UPDATE other SET v = 'workpiece_location' WHERE k = 1"},
			{"ALTER TABLE other ADD COLUMN w INT"},
			{"TRUNCATE TABLE other"},
			{"RENAME TABLE other TO other2"},
			{"DROP TABLE other2"},
			{"INSERT INTO workpiece_location (part_no, location) VALUES ('O-1', 'after other')"},
		}},
		{name: "rotate", writes: [][]string{
			{"INSERT INTO workpiece_location (part_no, location) VALUES ('F-1', 'before flush')"},
			{"FLUSH BINARY LOGS"},
			{"UPDATE workpiece_location SET location = 'after flush' WHERE part_no = 'F-1'"},
			{"FLUSH BINARY LOGS"},
			{"FLUSH BINARY LOGS"},
			{"DELETE FROM workpiece_location WHERE part_no = '18-546'"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newBinlogFixture(t, srv, 200)
			f := fx.startFollowing(t, func() { fx.exec(t, tt.before...) })
			for _, w := range tt.writes {
				fx.tx(t, true, w...)
			}
			fx.catchUp(t, f)
		})
	}
}

func TestBinlogFollowChanges(t *testing.T) {
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), 10)
	f := fx.startFollowing(t, nil)
	fx.catchUp(t, f)
	start := fx.position(t)
	startTime := time.Now().Add(-time.Second)

	fx.tx(t, true,
		"INSERT INTO workpiece_location (part_no, location) VALUES ('C-1', 'a'), ('C-2', 'b')",
		"UPDATE workpiece_location SET location = 'c' WHERE part_no = 'C-1'",
		"UPDATE workpiece_location SET part_no = 'C-3' WHERE part_no = 'C-2'",
		"DELETE FROM workpiece_location WHERE part_no = 'C-1'")
	beforeRollback := fx.position(t)
	fx.tx(t, false, "INSERT INTO workpiece_location (part_no, location) VALUES ('RB-1', 'rolled back')",
		"DELETE FROM workpiece_location")
	if evs := fx.eventsSince(t, beforeRollback); len(evs) > 0 {
		t.Fatalf("a rolled-back transaction wrote events %q, want none", evs)
	}
	fx.tx(t, true, "INSERT INTO workpiece_location (part_no, location) VALUES ('C-4', 'last')")
	end := fx.position(t)
	f.waitCursor(t, end)

	f.a.mu.Lock()
	var got []string
	for _, ch := range f.a.changes {
		if !cursorLess(start, ch.Cursor) || len(ch.Rows) == 0 {
			continue
		}
		if ch.Time.Before(startTime) || ch.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("change at %s: Time %s, want about now", ch.Cursor, ch.Time)
		}
		var rows []string
		for _, r := range ch.Rows {
			if r.Sum != cache.RowSum(r.Key, r.Values) {
				t.Errorf("row %q: Sum %d, want RowSum %d", r.Key, r.Sum, cache.RowSum(r.Key, r.Values))
			}
			op := "set"
			if r.Deleted {
				op = "del"
			}
			rows = append(rows, op+" "+r.Key+"="+strings.Join(r.Values, ","))
		}
		got = append(got, fmt.Sprintf("i%d u%d d%d: %s", ch.Inserts, ch.Updates, ch.Deletes, strings.Join(rows, "; ")))
	}
	f.a.mu.Unlock()
	want := []string{
		// One Change per committed transaction, rows in commit order; the update of the
		// key is a delete of the old key and then the new row. The rolled-back
		// transaction is not in the log at all.
		"i2 u2 d1: set C-1=a; set C-2=b; set C-1=c; del C-2=b; set C-3=b; del C-1=c",
		"i1 u0 d0: set C-4=last",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got changes\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	fx.catchUp(t, f)
}

func TestBinlogFollowHeartbeats(t *testing.T) {
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), 10)
	f := fx.startFollowing(t, nil)
	fx.catchUp(t, f)
	_, at := f.a.state()
	since := time.Now()

	// Nothing is written: heartbeats keep coming, empty, with the cursor where it was.
	deadline := time.After(followWait)
	for {
		f.a.mu.Lock()
		var beats int
		for _, ch := range f.a.changes {
			if !ch.Time.Before(since) && len(ch.Rows) == 0 {
				if ch.Cursor != at {
					t.Errorf("heartbeat cursor %q, want %q (nothing was written)", ch.Cursor, at)
				}
				beats++
			}
		}
		moved := f.a.moved
		f.a.mu.Unlock()
		if beats >= 3 {
			return
		}
		select {
		case <-moved:
		case err := <-f.done:
			t.Fatalf("Follow ended: %v", err)
		case <-deadline:
			t.Fatalf("got %d heartbeats in %s, want 3 (every %s)", beats, followWait, testHeartbeat)
		}
	}
}

// TestBinlogFollowLargeTransaction updates 100,000 rows in one transaction: the rows come in
// Changes of at most MaxChangeRows, all but the last with the cursor of the previous commit,
// and following again from any of those cursors replays the transaction.
func TestBinlogFollowLargeTransaction(t *testing.T) {
	const n, limit = 100_000, 10_000
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), n, func(c *BinlogConfig) { c.MaxChangeRows = limit })
	f := fx.startFollowing(t, nil)
	fx.catchUp(t, f)
	_, before := f.a.state()
	fx.exec(t, "UPDATE workpiece_location SET location = CONCAT('big ', location)")
	fx.catchUp(t, f)

	f.a.mu.Lock()
	var sizes []int
	var cursors []string
	for _, ch := range f.a.changes {
		if len(ch.Rows) > 0 && !cursorLess(ch.Cursor, before) {
			sizes = append(sizes, len(ch.Rows))
			cursors = append(cursors, ch.Cursor)
		}
	}
	f.a.mu.Unlock()
	total := 0
	for i, s := range sizes {
		total += s
		if s > limit {
			t.Errorf("change %d has %d rows, want at most %d", i, s, limit)
		}
	}
	if total != n || len(sizes) != n/limit {
		t.Fatalf("got %d rows in %d changes, want %d in %d", total, len(sizes), n, n/limit)
	}
	for i, c := range cursors[:len(cursors)-1] {
		if c != before {
			t.Fatalf("change %d of %d: cursor %q, want the previous commit's %q", i+1, len(cursors), c, before)
		}
	}
	if !cursorLess(before, cursors[len(cursors)-1]) {
		t.Fatalf("last change: cursor %q, want past %q", cursors[len(cursors)-1], before)
	}
}

func TestBinlogFollowReturnsOnCancel(t *testing.T) {
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), 10)
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- fx.b.Follow(ctx, fx.position(t), func(cache.Change) error { return nil }) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(followWait):
		t.Fatalf("Follow did not return within %s of cancel", followWait)
	}
}

func TestBinlogFollowReturnsApplyError(t *testing.T) {
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), 10)
	boom := errors.New("boom")
	pos := fx.position(t)
	fx.exec(t, "DELETE FROM workpiece_location")
	err := fx.b.Follow(testCtx(t), pos, func(ch cache.Change) error {
		if len(ch.Rows) > 0 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the error of fn", err)
	}
}

func TestBinlogVitessLogRouted(t *testing.T) {
	var logs logtest.Buffer
	prev := vlog.SwapLogger(nil) // vitess's logger is process-wide: restore it after the test
	vlog.SwapLogger(prev)
	t.Cleanup(func() { vlog.SwapLogger(prev) })
	newBinlogFixture(t, mariadbtest.SharedBinlog(t), 1, func(c *BinlogConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	vlog.Info("probe message")
	if got := logs.String(); !strings.Contains(got, "probe message") || !strings.Contains(got, "component=vitess") {
		t.Fatalf("got log %q, want the vitess message with component=vitess", got)
	}
}
