package store

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

// countChanges runs Changes and returns how many rows it delivered, by key, and the next
// watermark.
func countChanges(tb testing.TB, s *MySQL, since time.Time) (map[string]cache.Row, int, time.Time) {
	tb.Helper()
	rows, next := changes(tb, s, since)
	byKey := map[string]cache.Row{}
	for _, r := range rows {
		byKey[r.Key] = r
	}
	return byKey, len(rows), next
}

// TestChangesBulkLoadReadOnce: after a bulk load of 100k rows, the first refresh delivers
// them and the refreshes after it, all within the overlap, deliver nothing; a change made
// then is delivered once.
func TestChangesBulkLoadReadOnce(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	const n = 100_000
	dsn, db := seededDB(t, srv, 0)
	// An overlap no test run outlasts: every refresh below looks back over the whole load.
	s := openSource(t, dsn, MySQLConfig{Overlap: time.Hour})
	_, wm := snapshotRows(t, s)
	if err := Seed(testCtx(t), db, n); err != nil {
		t.Fatal(err)
	}
	_, got, wm := countChanges(t, s, wm)
	if got != n {
		t.Fatalf("first refresh: got %d rows, want %d", got, n)
	}
	if s.sent.len() != n {
		t.Fatalf("got %d rows remembered, want %d", s.sent.len(), n)
	}
	for i := range 5 {
		var got int
		_, got, wm = countChanges(t, s, wm)
		if got != 0 {
			t.Fatalf("refresh %d after the load: got %d rows, want 0", i+2, got)
		}
	}
	k, _ := DemoRow(77)
	if _, err := db.ExecContext(testCtx(t), "UPDATE workpiece_location SET location = '新位置' WHERE part_no = ?", k); err != nil {
		t.Fatal(err)
	}
	byKey, got, _ := countChanges(t, s, wm)
	if got != 1 || byKey[k].Values == nil || byKey[k].Values[0] != "新位置" {
		t.Fatalf("after one update: got %d rows (%q → %q), want only %q → 新位置", got, k, byKey[k].Values, k)
	}
}

// TestChangesLateCommit: a transaction that stamps a row and commits only after a refresh
// ran is delivered by the next refresh — also when it writes the very stamp the row was
// delivered with before (as a TIMESTAMP(0) column does for two writes within a second) —
// and a delivered row deleted meanwhile costs one reading of the window, not one per
// refresh. The order is made by the database: the writer's transaction is open (its rows
// invisible) while a refresh runs, and commits before the next.
func TestChangesLateCommit(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	k1, v1 := DemoRow(3)
	k2, _ := DemoRow(4)
	set := func(key, value, stamp string) string {
		return "UPDATE workpiece_location SET location = '" + value + "', updated_at = " + stamp + " WHERE part_no = '" + key + "'"
	}
	tests := []struct {
		name string
		// before runs before the refreshes that deliver it; write runs in the transaction.
		before, write []string
		want          map[string]string // what the refresh after the commit delivers
	}{
		{"stamped before the watermark",
			nil,
			[]string{set(k1, "迟到", "NOW(6) - INTERVAL 1 SECOND")},
			map[string]string{k1: "迟到"}},
		{"same stamp as delivered",
			[]string{set(k1, "第一次", "NOW(6) - INTERVAL 1 SECOND")},
			[]string{set(k1, "第二次", "updated_at")},
			map[string]string{k1: "第二次"}},
		{"a delivered row deleted",
			[]string{
				"UPDATE workpiece_location SET updated_at = NOW(6) - INTERVAL 2 SECOND WHERE part_no IN ('" + k1 + "', '" + k2 + "')",
			},
			[]string{"DELETE FROM workpiece_location WHERE part_no = '" + k2 + "'"},
			map[string]string{k1: v1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn, db := seededDB(t, srv, 20)
			ctx := testCtx(t)
			exec := func(conn *sql.Conn, qs ...string) {
				t.Helper()
				for _, q := range qs {
					if _, err := conn.ExecContext(ctx, q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
			}
			conn := func() *sql.Conn {
				t.Helper()
				c, err := db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				exec(c, "SET time_zone = '+00:00'")
				return c
			}
			root, writer := conn(), conn()
			stampOf := func(key string) time.Time {
				t.Helper()
				var at time.Time
				if err := root.QueryRowContext(ctx, "SELECT updated_at FROM workpiece_location WHERE part_no = ?", key).Scan(&at); err != nil {
					t.Fatal(err)
				}
				return at
			}
			exec(root, "UPDATE workpiece_location SET updated_at = '2020-01-01 00:00:00'")
			s := openSource(t, dsn, MySQLConfig{PageSize: 3, Overlap: time.Hour})
			_, wm := snapshotRows(t, s)
			exec(root, tt.before...)
			_, _, wm = countChanges(t, s, wm) // delivers what before wrote
			_, got, wm := countChanges(t, s, wm)
			if got != 0 {
				t.Fatalf("quiet refresh: got %d rows, want 0", got)
			}
			stamp := stampOf(k1)

			exec(writer, "BEGIN")
			exec(writer, tt.write...)
			if _, got, wm = countChanges(t, s, wm); got != 0 {
				t.Fatalf("refresh during the transaction: got %d rows, want 0", got)
			}
			exec(writer, "COMMIT")
			if tt.name == "same stamp as delivered" && !stampOf(k1).Equal(stamp) {
				t.Fatalf("got stamp %s after the rewrite, want %s as before", stampOf(k1), stamp)
			}

			byKey, got, wm := countChanges(t, s, wm)
			for k, v := range tt.want {
				if r, ok := byKey[k]; !ok || r.Values[0] != v {
					t.Errorf("refresh after the commit: got %q → %v, want %q", k, r.Values, v)
				}
			}
			if got != len(tt.want) {
				t.Errorf("refresh after the commit: got %d rows, want %d", got, len(tt.want))
			}
			// The window was read again once; then refreshes are quiet.
			if _, got, _ := countChanges(t, s, wm); got != 0 {
				t.Fatalf("refresh after that: got %d rows, want 0", got)
			}
		})
	}
}

// TestChangesOverBound: when a bulk change exceeds what Changes remembers, refreshes within
// the overlap read the window again (as all did before it remembered), and lose nothing.
func TestChangesOverBound(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 0)
	s := openSource(t, dsn, MySQLConfig{PageSize: 7, Overlap: time.Hour})
	s.sent = newSentRows(10)
	_, wm := snapshotRows(t, s)
	if err := Seed(testCtx(t), db, 100); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var got int
		_, got, wm = countChanges(t, s, wm)
		if got != 100 {
			t.Fatalf("refresh %d: got %d rows, want all 100 again", i+1, got)
		}
		if s.sent.len() > 10 {
			t.Fatalf("got %d rows remembered, want at most 10", s.sent.len())
		}
	}
}

// TestSentRows: the window sum counts each key once, at its last stamp; forget and prune
// remove by stamp; the bound holds for new keys but not for updates of remembered ones.
func TestSentRows(t *testing.T) {
	at := func(sec int) time.Time { return time.Unix(1_700_000_000+int64(sec), 0) }
	sum := func(sums ...uint32) cache.RangeSum {
		var s cache.RangeSum
		for _, h := range sums {
			s = s.Add(h, 1)
		}
		return s
	}
	r := newSentRows(3)
	r.add("a", 1, at(1))
	r.add("b", 2, at(2))
	r.add("a", 3, at(5)) // a again, later: moves
	r.add("c", 4, at(6))
	r.add("d", 5, at(7)) // over the bound: not remembered
	tests := []struct {
		name     string
		from, to int
		want     cache.RangeSum
	}{
		{"all", 0, 10, sum(2, 3, 4)},
		{"a moved out", 0, 5, sum(2)},
		{"to is exclusive", 2, 6, sum(2, 3)},
		{"empty", 8, 10, sum()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.window(at(tt.from), at(tt.to), nil); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	r.add("a", 9, at(6)) // a remembered key is updated even at the bound
	if got, want := r.window(at(6), at(7), nil), sum(9, 4); got != want {
		t.Fatalf("after update at the bound: got %+v, want %+v", got, want)
	}
	if got, want := r.window(at(0), at(10), map[uint64]struct{}{r.hash("c"): {}}), sum(2, 9); got != want {
		t.Fatalf("leaving c out: got %+v, want %+v", got, want)
	}
	r.forget(at(6), at(7))
	if got := r.len(); got != 1 {
		t.Fatalf("after forget: got %d rows, want 1", got)
	}
	r.prune(at(3))
	if got := r.len(); got != 0 {
		t.Fatalf("after prune: got %d rows, want 0", got)
	}
}

// BenchmarkRefreshAfterBulkLoad measures a refresh (Changes) within the overlap after a bulk
// load of 100,000 rows that the refresh before it delivered: how many rows it delivers
// again, and its wall and server CPU time. Run with -benchtime=5x.
func BenchmarkRefreshAfterBulkLoad(b *testing.B) {
	const n = 100_000
	srv := mariadbtest.Shared(b)
	dsn, db := seededDB(b, srv, 0)
	dbCPU := serverCPU(b, srv, db)
	s := openSource(b, dsn, MySQLConfig{Overlap: time.Hour})
	_, wm := snapshotRows(b, s)
	if err := Seed(testCtx(b), db, n); err != nil {
		b.Fatal(err)
	}
	if _, got, next := countChanges(b, s, wm); got != n {
		b.Fatalf("first refresh: got %d rows, want %d", got, n)
	} else {
		wm = next
	}
	var cpu0 float64
	if dbCPU != nil {
		cpu0 = dbCPU()
	}
	rows := 0
	for b.Loop() {
		var err error
		wm, err = s.Changes(context.Background(), wm, func(cache.Row) error { rows++; return nil })
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)/float64(b.N), "rows/refresh")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/refresh")
	if dbCPU != nil {
		b.ReportMetric((dbCPU()-cpu0)*1000/float64(b.N), "db-cpu-ms/refresh")
	}
}

// TestSentRowsGivesMemoryBack: after a bulk change's rows are pruned, the memory of the
// map that remembered them is collectable (a Go map keeps its largest size when emptied),
// and the rows still in a window stay counted.
func TestSentRowsGivesMemoryBack(t *testing.T) {
	const n = maxSentRows
	at := func(sec int) time.Time { return time.Unix(1_700_000_000+int64(sec), 0) }
	r := newSentRows(n)
	for i := range n - 2 {
		r.add(fmt.Sprint("bulk-", i), uint32(i), at(1))
	}
	r.add("late-1", 7, at(5))
	r.add("late-2", 8, at(6))
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	full := heap()
	r.prune(at(5))
	empty := heap()
	// 262,144 rows take ≈ 11 MB; two rows take next to nothing.
	if full < empty || full-empty < 8<<20 {
		t.Errorf("pruning %d of %d rows freed %d bytes of heap (from %d), want over 8 MiB", n-2, n, int64(full)-int64(empty), full)
	}
	var want cache.RangeSum
	want = want.Add(7, 1).Add(8, 1)
	if got := r.window(at(0), at(10), nil); r.len() != 2 || got != want {
		t.Errorf("after pruning: %d rows, window %+v; want 2, %+v", r.len(), got, want)
	}
	runtime.KeepAlive(r)
}
