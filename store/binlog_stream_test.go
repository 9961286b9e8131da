package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

// shiftTable is a third lookup table: who is on shift at a station.
const shiftTable = `CREATE TABLE shift (
  station VARCHAR(32) NOT NULL PRIMARY KEY,
  worker  VARCHAR(64) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`

// streamFixture is a database holding three tables (workpiece_location seeded, stock and
// shift empty), one Pool and one BinlogStream over them, followed with a replication
// account of its own so that its dump threads can be counted.
type streamFixture struct {
	srv    *mariadbtest.Server
	dsn    string
	db     *sql.DB
	pool   *Pool
	stream *BinlogStream
	user   string // the replication account
}

func newStreamFixture(t *testing.T, srv *mariadbtest.Server, user string) *streamFixture {
	t.Helper()
	dsn, db := seededDB(t, srv, 20)
	for _, q := range []string{stockTable, shiftTable} {
		if _, err := db.ExecContext(testCtx(t), q); err != nil {
			t.Fatal(err)
		}
	}
	repl := replicaUserDSN(t, srv, dsn, user, "REPLICATION SLAVE, REPLICATION CLIENT ON *.*")
	st, err := OpenBinlogStream(BinlogStreamConfig{DSN: dsn, BinlogDSN: repl, ServerID: nextServerID(), Heartbeat: testHeartbeat})
	if err != nil {
		t.Fatalf("OpenBinlogStream: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return &streamFixture{srv: srv, dsn: dsn, db: db, pool: openPool(t, dsn), stream: st, user: user}
}

// table returns the Binlog of mapping m on the fixture's pool and stream.
func (fx *streamFixture) table(t *testing.T, m Mapping) *Binlog {
	t.Helper()
	b, err := fx.stream.Table(poolTable(t, fx.pool, m))
	if err != nil {
		t.Fatalf("BinlogStream.Table(%s): %v", m.Table, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// exec runs statements, each on its own (autocommit), or in one transaction with tx.
func (fx *streamFixture) exec(t *testing.T, stmts ...string) {
	t.Helper()
	(&binlogFixture{db: fx.db}).exec(t, stmts...)
}

func (fx *streamFixture) tx(t *testing.T, stmts ...string) {
	t.Helper()
	(&binlogFixture{db: fx.db}).tx(t, true, stmts...)
}

func (fx *streamFixture) position(t *testing.T) string {
	t.Helper()
	p, err := fx.stream.Position(testCtx(t))
	if err != nil {
		t.Fatalf("Position: %v", err)
	}
	return p
}

// rows reads table's key and value columns (as the snapshot does) into rows by key.
func (fx *streamFixture) rows(t *testing.T, b *Binlog) map[string]cache.Row {
	t.Helper()
	out := map[string]cache.Row{}
	if _, err := b.Snapshot(testCtx(t), func(r cache.Row) error {
		out[strings.Clone(r.Key)] = keepRow(r)
		return nil
	}); err != nil {
		t.Fatalf("Snapshot of %s: %v", b.table.table, err)
	}
	return out
}

// catchUp waits until f has applied everything written so far and compares it with b's
// table.
func (fx *streamFixture) catchUp(t *testing.T, b *Binlog, f *followRun) {
	t.Helper()
	f.waitCursor(t, fx.position(t))
	got, _ := f.a.state()
	sameFollowedRows(t, got, fx.rows(t, b))
}

// dumpThreads returns the number of binlog dump threads of the fixture's replication
// account once it has stayed the same for a few heartbeats (a closed connection's thread
// ends when the server next writes to it).
func (fx *streamFixture) dumpThreads(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(followWait)
	for {
		var n int
		q := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND LIKE 'Binlog Dump%'"
		if err := fx.db.QueryRowContext(testCtx(t), q, fx.user).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(testHeartbeat) // polling the server's thread list
	}
}

// rowKeys lists the keys (with their op) of the rows of Changes after cursor since.
func rowKeys(a *appliedRows, since string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, ch := range a.changes {
		if !cursorLess(since, ch.Cursor) {
			continue
		}
		for _, r := range ch.Rows {
			op := "set "
			if r.Deleted {
				op = "del "
			}
			out = append(out, op+r.Key)
		}
	}
	return out
}

// TestBinlogStreamTables follows three tables over one stream and one replication
// connection: each follower gets only its own table's rows, from transactions touching
// one table or several; heartbeats keep each fresh; DDL on one table ends only its Follow
// with ErrResnapshot; a follower that subscribes late from an older position misses
// nothing, and the others neither see a change twice nor go back.
func TestBinlogStreamTables(t *testing.T) {
	fx := newStreamFixture(t, mariadbtest.SharedBinlog(t), "wxt_stream")
	loc, stock, shift := fx.table(t, Mapping{}), fx.table(t, stockMapping),
		fx.table(t, Mapping{Table: "shift", KeyColumn: "station", ValueColumns: []string{"worker"}})
	old := fx.position(t) // where the late follower will start
	fx.exec(t, "INSERT INTO shift VALUES ('S-1', '张三')")

	pos := fx.position(t)
	al, as := newAppliedRows(), newAppliedRows()
	al.snapshot(t, loc)
	as.snapshot(t, stock)
	fl, fs := startFollow(t, loc, pos, al), startFollow(t, stock, pos, as)
	fl.waitCursor(t, pos) // a heartbeat: both subscribed before anything is written
	fs.waitCursor(t, pos)

	steps := []struct {
		name      string
		tx        [][]string
		loc, stok []string // the rows each follower gets
	}{
		{name: "one table each",
			tx: [][]string{
				{"INSERT INTO workpiece_location (part_no, location) VALUES ('W-1', 'bay 1')"},
				{"INSERT INTO stock (sku, qty, bin) VALUES ('P-100', 12, 'B-3')"},
				{"INSERT INTO shift VALUES ('S-2', '李四')"},
			},
			loc: []string{"set W-1"}, stok: []string{"set P-100"}},
		{name: "one transaction over both tables",
			tx: [][]string{{
				"INSERT INTO stock (sku, qty, bin) VALUES ('P-200', 1, 'C-1')",
				"UPDATE workpiece_location SET location = 'bay 2' WHERE part_no = 'W-1'",
				"UPDATE stock SET qty = qty - 1 WHERE sku = 'P-100'",
				"UPDATE shift SET worker = '王五' WHERE station = 'S-1'",
				"DELETE FROM workpiece_location WHERE part_no = '18-546'",
			}},
			loc: []string{"set W-1", "del 18-546"}, stok: []string{"set P-200", "set P-100"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := fx.position(t)
			for _, q := range st.tx {
				fx.tx(t, q...)
			}
			fx.catchUp(t, loc, fl)
			fx.catchUp(t, stock, fs)
			for _, c := range []struct {
				name string
				a    *appliedRows
				want []string
			}{{"workpiece_location", fl.a, st.loc}, {"stock", fs.a, st.stok}} {
				if got := rowKeys(c.a, before); strings.Join(got, ",") != strings.Join(c.want, ",") {
					t.Errorf("%s follower: got rows %q, want %q", c.name, got, c.want)
				}
			}
		})
	}

	t.Run("heartbeats reach every table", func(t *testing.T) {
		_, atLoc := fl.a.state()
		_, atStock := fs.a.state()
		for _, f := range []*followRun{fl, fs} {
			f.waitCursor(t, fx.position(t))
			f.a.mu.Lock()
			n := len(f.a.changes)
			f.a.mu.Unlock()
			deadline := time.Now().Add(followWait)
			for {
				f.a.mu.Lock()
				beats, moved := len(f.a.changes)-n, f.a.moved
				f.a.mu.Unlock()
				if beats >= 3 {
					break
				}
				select {
				case <-moved:
				case <-time.After(time.Until(deadline)):
					t.Fatalf("got %d changes in %s while idle, want 3 heartbeats", beats, followWait)
				}
			}
		}
		if _, c := fl.a.state(); c != atLoc {
			t.Errorf("heartbeats moved the cursor of workpiece_location from %q to %q", atLoc, c)
		}
		if _, c := fs.a.state(); c != atStock {
			t.Errorf("heartbeats moved the cursor of stock from %q to %q", atStock, c)
		}
	})

	t.Run("DDL on one table resnapshots only it", func(t *testing.T) {
		fx.exec(t, "ALTER TABLE stock ADD COLUMN note VARCHAR(10)")
		if err := fs.waitErr(t); !errors.Is(err, cache.ErrResnapshot) || !strings.Contains(err.Error(), "ALTER TABLE") {
			t.Fatalf("stock: got %v, want ErrResnapshot naming ALTER TABLE", err)
		}
		fx.exec(t, "INSERT INTO workpiece_location (part_no, location) VALUES ('W-3', 'after the DDL')")
		fx.catchUp(t, loc, fl)
	})

	t.Run("a late follower from an older position misses nothing", func(t *testing.T) {
		late := newAppliedRows() // shift was empty at old
		fsh := startFollow(t, shift, old, late)
		fx.exec(t, "INSERT INTO workpiece_location (part_no, location) VALUES ('W-4', 'after the late one')")
		fx.catchUp(t, shift, fsh)
		fx.catchUp(t, loc, fl)
		if got := rowKeys(late, old); strings.Join(got, ",") != "set S-1,set S-2,set S-1" {
			t.Errorf("late follower: got rows %q, want S-1, S-2 and the update of S-1", got)
		}
		fl.a.mu.Lock()
		for i := 1; i < len(fl.a.changes); i++ {
			if prev, cur := fl.a.changes[i-1].Cursor, fl.a.changes[i].Cursor; cursorLess(cur, prev) {
				t.Errorf("workpiece_location went back from %s to %s when the stream started again", prev, cur)
			}
		}
		fl.a.mu.Unlock()
		if n := fx.dumpThreads(t, 1); n != 1 {
			t.Errorf("got %d binlog dump threads for three tables, want 1", n)
		}
		if n := fx.stream.Dumps(); n != 2 {
			t.Errorf("got %d replication connections opened, want 2 (the first, and the restart for the late one)", n)
		}
	})
}

// TestBinlogStreamServerRestarts kills the server while two tables follow one stream:
// both Follows end with a connection error (neither ErrResnapshot nor the context's), and
// following again from each one's last cursor, after writes made while nobody followed,
// loses nothing, over one replication connection again.
func TestBinlogStreamServerRestarts(t *testing.T) {
	srv := mariadbtest.Start(t, mariadbtest.WithBinlog())
	fx := newStreamFixture(t, srv, "wxt_restart")
	loc, stock := fx.table(t, Mapping{}), fx.table(t, stockMapping)
	pos := fx.position(t)
	al, as := newAppliedRows(), newAppliedRows()
	al.snapshot(t, loc)
	fl, fs := startFollow(t, loc, pos, al), startFollow(t, stock, pos, as)
	fx.tx(t, "INSERT INTO stock (sku, qty, bin) VALUES ('P-1', 5, 'A-1')",
		"UPDATE workpiece_location SET location = 'before' WHERE part_no = '18-546'")
	fx.catchUp(t, loc, fl)
	fx.catchUp(t, stock, fs)

	srv.Kill(t)
	for _, f := range []*followRun{fl, fs} {
		if err := f.waitErr(t); err == nil || errors.Is(err, cache.ErrResnapshot) || errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want a connection error", err)
		}
	}
	srv.Restart(t)
	fx.tx(t, "UPDATE stock SET qty = 4 WHERE sku = 'P-1'", "INSERT INTO stock (sku, qty, bin) VALUES ('P-2', 1, 'A-2')",
		"UPDATE workpiece_location SET location = 'after restart' WHERE part_no = '18-546'")
	_, lastLoc := al.state()
	_, lastStock := as.state()
	fl, fs = startFollow(t, loc, lastLoc, al), startFollow(t, stock, lastStock, as)
	fx.catchUp(t, loc, fl)
	fx.catchUp(t, stock, fs)
	if rows, _ := al.state(); rows["18-546"].Values[0] != "after restart" {
		t.Fatalf("got %q, want the update made while nobody followed", rows["18-546"].Values)
	}
	if n := fx.dumpThreads(t, 1); n != 1 {
		t.Errorf("got %d binlog dump threads for two tables, want 1", n)
	}
}

// TestBinlogStreamPurged: a table that follows from a purged position gets ErrResnapshot;
// another table of the stream, following from the present, goes on.
func TestBinlogStreamPurged(t *testing.T) {
	fx := newStreamFixture(t, mariadbtest.SharedBinlog(t), "wxt_purged")
	loc, stock := fx.table(t, Mapping{}), fx.table(t, stockMapping)
	gone := fx.position(t)
	fx.exec(t, "INSERT INTO stock (sku, qty, bin) VALUES ('P-1', 5, 'A-1')", "FLUSH BINARY LOGS")
	file, _, err := parseCursor(fx.position(t))
	if err != nil {
		t.Fatal(err)
	}
	purgeTo(t, &binlogFixture{db: fx.db}, file)

	now := fx.position(t)
	as := newAppliedRows()
	as.snapshot(t, stock)
	fs := startFollow(t, stock, now, as)
	fs.waitCursor(t, now)
	fl := startFollow(t, loc, gone, newAppliedRows())
	if err := fl.waitErr(t); !errors.Is(err, cache.ErrResnapshot) {
		t.Fatalf("workpiece_location from a purged position: got %v, want ErrResnapshot", err)
	}
	fx.exec(t, "INSERT INTO stock (sku, qty, bin) VALUES ('P-2', 1, 'A-2')")
	fx.catchUp(t, stock, fs)
}

// TestBinlogStreamCheck checks the server once and every table of the stream: a column the
// change feed cannot render is named with its table, and a closed table is not checked.
func TestBinlogStreamCheck(t *testing.T) {
	fx := newStreamFixture(t, mariadbtest.SharedBinlog(t), "wxt_check")
	fx.table(t, Mapping{})
	if err := fx.stream.Check(testCtx(t)); err != nil {
		t.Fatalf("one good table: got %v, want nil", err)
	}
	fx.exec(t, "ALTER TABLE stock ADD COLUMN weight FLOAT")
	bad := fx.table(t, Mapping{Table: "stock", KeyColumn: "sku", ValueColumns: []string{"qty", "weight"}})
	err := fx.stream.Check(testCtx(t))
	var cf *CannotFollowError
	if !errors.As(err, &cf) || len(cf.Problems) != 1 || !strings.Contains(cf.Problems[0], "column weight is float") ||
		!strings.HasSuffix(cf.Table, ".workpiece_location, "+bad.table.db+".stock") {
		t.Fatalf("got %v, want a CannotFollowError for both tables with one problem, the float column", err)
	}
	bad.Close()
	if err := fx.stream.Check(testCtx(t)); err != nil {
		t.Fatalf("after closing the bad table: got %v, want nil", err)
	}
}

func TestBinlogPosOrder(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"wxlookup-bin.000001:900", "wxlookup-bin.000002:4", true},
		{"wxlookup-bin.000002:4", "wxlookup-bin.000001:900", false},
		{"wxlookup-bin.000001:100", "wxlookup-bin.000001:200", true},
		{"wxlookup-bin.000001:200", "wxlookup-bin.000001:200", false},
		{"wxlookup-bin.999999:900", "wxlookup-bin.1000000:4", true},
		{"wxlookup-bin.1000000:4", "wxlookup-bin.999999:900", false},
		{"my.bin.log.000009:4", "my.bin.log.000010:4", true},
	}
	for _, tt := range tests {
		t.Run(tt.a+" < "+tt.b, func(t *testing.T) {
			fa, pa, err := parseCursor(tt.a)
			if err != nil {
				t.Fatal(err)
			}
			fb, pb, err := parseCursor(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got := (binlogPos{fa, uint64(pa)}).before(binlogPos{fb, uint64(pb)}); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
