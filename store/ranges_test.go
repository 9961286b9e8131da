package store

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

// customTable creates table t in a fresh database with the given column definitions (after
// the key column k and before the updated column u, which it adds with its index), inserts
// rows and returns a source mapping k → values by u, and a root pool on the database.
func customTable(tb testing.TB, srv *mariadbtest.Server, keyDef string, valueDefs []string, rows []string) (*MySQL, *sql.DB) {
	tb.Helper()
	dsn := srv.CreateDatabase(tb)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	var cols, names []string
	for i, d := range valueDefs {
		names = append(names, fmt.Sprintf("v%d", i))
		cols = append(cols, fmt.Sprintf("v%d %s", i, d))
	}
	stmts := []string{
		"SET time_zone = '+00:00'",
		"CREATE TABLE t (k " + keyDef + " NOT NULL PRIMARY KEY, " + strings.Join(cols, ", ") +
			", u TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (u))",
	}
	for _, r := range rows {
		stmts = append(stmts, "INSERT INTO t (k, "+strings.Join(names, ", ")+") VALUES ("+r+")")
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(testCtx(tb), q); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
	return openSource(tb, dsn, MySQLConfig{PageSize: 2, Mapping: Mapping{
		Table: "t", KeyColumn: "k", ValueColumns: names, UpdatedColumn: "u"}}), db
}

// readRange runs ReadRange and returns its rows.
func readRange(tb testing.TB, s *MySQL, r cache.KeyRange) []cache.Row {
	tb.Helper()
	var rows []cache.Row
	if err := s.ReadRange(testCtx(tb), r, func(row cache.Row) error {
		rows = append(rows, keepRow(row))
		return nil
	}); err != nil {
		tb.Fatalf("ReadRange %s: %v", fmtRange(r), err)
	}
	return rows
}

// addSum is the cache's side of a range: the RangeSum of rows by Add.
func addSum(rows []cache.Row) cache.RangeSum {
	var s cache.RangeSum
	for _, r := range rows {
		s = s.Add(r.Sum, 1)
	}
	return s
}

// TestRowSumMatchesMySQL: for each column type a plant may map, every path that delivers
// rows (Snapshot, Changes, Get, ReadRange) gives each row the Sum that cache.RowSum
// computes from the delivered strings, and MySQL's checksum of that row alone (Checksum
// of the range from its key to the next) is the same, byte for byte. The delivered text of
// each type is pinned too: it is what replies show.
func TestRowSumMatchesMySQL(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	tests := []struct {
		name   string
		key    string   // key column type
		values []string // value column types
		rows   []string // INSERT values
		want   []string // delivered rows as key=v0|v1, in key order
	}{
		{"varchar utf8mb4 with Chinese", "VARCHAR(64)", []string{"VARCHAR(255)"},
			[]string{"'18-546', '车体新厂房3号'", "'Ａ7-001', '总装车间A区12排'", "'b-1', ''", "'c-1', NULL", "'d-1', '📦 货架'"},
			[]string{"18-546=车体新厂房3号", "Ａ7-001=总装车间A区12排", "b-1=", "c-1=", "d-1=📦 货架"}},
		{"text", "VARCHAR(64)", []string{"TEXT"},
			[]string{"'k1', '第一行\n第二行'", "'k2', NULL"},
			[]string{"k1=第一行\n第二行", "k2="}},
		{"int key", "INT", []string{"VARCHAR(32)"},
			[]string{"7, '焊装车间'", "10, 'x'", "-3, NULL", "200, 'y'"},
			[]string{"-3=", "7=焊装车间", "10=x", "200=y"}},
		{"bigint unsigned key", "BIGINT UNSIGNED", []string{"VARCHAR(8)"},
			[]string{"18446744073709551615, 'max'", "0, 'zero'"},
			[]string{"0=zero", "18446744073709551615=max"}},
		{"decimal", "VARCHAR(8)", []string{"DECIMAL(10,2)"},
			[]string{"'a', 12.5", "'b', -0.01", "'c', NULL", "'d', 0"},
			[]string{"a=12.50", "b=-0.01", "c=", "d=0.00"}},
		{"int value", "VARCHAR(8)", []string{"INT"},
			[]string{"'a', 42", "'b', -7", "'c', NULL"},
			[]string{"a=42", "b=-7", "c="}},
		{"datetime(6)", "VARCHAR(8)", []string{"DATETIME(6)"},
			[]string{"'a', '2024-01-02 03:04:05.000100'", "'b', '1999-12-31 23:59:59'", "'c', NULL"},
			[]string{"a=2024-01-02 03:04:05.000100", "b=1999-12-31 23:59:59.000000", "c="}},
		{"datetime", "VARCHAR(8)", []string{"DATETIME"},
			[]string{"'a', '2024-01-02 03:04:05'"},
			[]string{"a=2024-01-02 03:04:05"}},
		{"timestamp(6)", "VARCHAR(8)", []string{"TIMESTAMP(6) NULL"},
			[]string{"'a', '2024-01-02 03:04:05.123456'", "'b', NULL"},
			[]string{"a=2024-01-02 03:04:05.123456", "b="}},
		{"char pads", "VARCHAR(8)", []string{"CHAR(10)"},
			[]string{"'a', 'ab  '", "'b', '  '"},
			[]string{"a=ab", "b="}},
		{"latin1 value", "VARCHAR(8)", []string{"VARCHAR(8) CHARACTER SET latin1"},
			[]string{"'a', 'Müller é'"},
			[]string{"a=Müller é"}},
		{"several values with NULLs", "VARCHAR(8)", []string{"VARCHAR(16)", "INT", "DATETIME(6)"},
			[]string{"'a', '总装', NULL, '2024-05-06 07:08:09.5'", "'b', NULL, 3, NULL", "'c', NULL, NULL, NULL"},
			[]string{"a=总装||2024-05-06 07:08:09.500000", "b=|3|", "c=||"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := customTable(t, srv, tt.key, tt.values, tt.rows)
			ctx := testCtx(t)
			var snap []cache.Row
			if _, err := s.Snapshot(ctx, func(r cache.Row) error { snap = append(snap, keepRow(r)); return nil }); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range snap {
				got = append(got, r.Key+"="+strings.Join(r.Values, "|"))
			}
			if g, w := strings.Join(got, "\n"), strings.Join(tt.want, "\n"); g != w {
				t.Fatalf("got rows\n%s\nwant\n%s", g, w)
			}
			changed, _ := changes(t, s, time.Time{})
			byKey := map[string]cache.Row{}
			for _, r := range changed {
				byKey[r.Key] = r
			}
			for i, r := range snap {
				if want := cache.RowSum(r.Key, r.Values); r.Sum != want {
					t.Errorf("Snapshot %q: got Sum %d, want RowSum %d", r.Key, r.Sum, want)
				}
				rng := cache.KeyRange{From: r.Key}
				if i+1 < len(snap) {
					rng.To = snap[i+1].Key
				}
				sum, err := s.Checksum(ctx, rng)
				if err != nil {
					t.Fatal(err)
				}
				if want := (cache.RangeSum{}).Add(r.Sum, 1); sum != want {
					t.Errorf("%q: got MySQL's %+v, want %+v from the delivered %q", r.Key, sum, want, r.Values)
				}
				if c, ok := byKey[r.Key]; !ok || c.Sum != r.Sum || !slices.Equal(c.Values, r.Values) {
					t.Errorf("Changes %q: got %+v, want %+v", r.Key, c, r)
				}
				if rr := readRange(t, s, rng); len(rr) != 1 || rr[0].Sum != r.Sum {
					t.Errorf("ReadRange %s: got %+v, want one row with Sum %d", fmtRange(rng), rr, r.Sum)
				}
				g, err := s.Get(ctx, cache.Key(r.Key))
				if err != nil || g.Sum != r.Sum {
					t.Errorf("Get %q: got %+v, %v, want Sum %d", r.Key, g, err, r.Sum)
				}
			}
		})
	}
}

// TestChecksumCatchesSwap is the case of issue 13: two keys of equal length swap their
// values, which leaves the XOR of the rows' CRCs unchanged. Their RangeSum differs, as
// MySQL computes it and as the cache's Add does.
func TestChecksumCatchesSwap(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	before := []cache.Row{{Key: "A1", Values: []string{"X1"}}, {Key: "B2", Values: []string{"Y2"}}}
	after := []cache.Row{{Key: "A1", Values: []string{"Y2"}}, {Key: "B2", Values: []string{"X1"}}}
	for _, rows := range [][]cache.Row{before, after} {
		for i := range rows {
			rows[i].Sum = cache.RowSum(rows[i].Key, rows[i].Values)
		}
	}
	// The precondition: a XOR of CRCs is blind to this swap (3574052293 both ways).
	xor := func(rows []cache.Row) uint32 { return rows[0].Sum ^ rows[1].Sum }
	if xor(before) != xor(after) || xor(before) != 3574052293 {
		t.Fatalf("got XORs %d and %d, want both 3574052293", xor(before), xor(after))
	}
	if addSum(before) == addSum(after) {
		t.Fatalf("got the same RangeSum %+v before and after the swap, want them to differ", addSum(before))
	}

	s, db := customTable(t, srv, "VARCHAR(8)", []string{"VARCHAR(8)"}, []string{"'A1', 'X1'", "'B2', 'Y2'"})
	ctx := testCtx(t)
	sumNow := func() cache.RangeSum {
		t.Helper()
		sum, err := s.Checksum(ctx, cache.KeyRange{})
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	if got, want := sumNow(), addSum(before); got != want {
		t.Fatalf("before: got MySQL's %+v, want Add's %+v", got, want)
	}
	if _, err := db.ExecContext(ctx, "UPDATE t SET v0 = IF(k = 'A1', 'Y2', 'X1')"); err != nil {
		t.Fatal(err)
	}
	if got, want := sumNow(), addSum(after); got != want {
		t.Fatalf("after: got MySQL's %+v, want Add's %+v", got, want)
	}
	if got := readRange(t, s, cache.KeyRange{}); addSum(got) != addSum(after) {
		t.Fatalf("ReadRange after the swap: got %+v", got)
	}
}

// TestChecksumEqualsReadRange: for ranges with bounds taken from Snapshot's keys, open ends,
// an empty range and bounds whose rows are gone, MySQL's RangeSum equals the Add-sum of the
// rows ReadRange delivers, and those rows are exactly Snapshot's between the bounds, in
// order.
func TestChecksumEqualsReadRange(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 1000)
	ctx := testCtx(t)
	// Keys that sort around the demo keys in the case- and width-insensitive collation.
	if _, err := db.ExecContext(ctx, "INSERT INTO workpiece_location (part_no, location) VALUES ('ｘ00-001', '全角'), ('x00-0011', '小写')"); err != nil {
		t.Fatal(err)
	}
	s := openSource(t, dsn, MySQLConfig{PageSize: 7})
	var snap []cache.Row
	if _, err := s.Snapshot(ctx, func(r cache.Row) error { snap = append(snap, keepRow(r)); return nil }); err != nil {
		t.Fatal(err)
	}
	key := func(i int) string { return snap[i].Key }
	between := func(from, to int) []cache.Row { return snap[from:to] }
	tests := []struct {
		name string
		r    cache.KeyRange
		want []cache.Row
	}{
		{"everything", cache.KeyRange{}, snap},
		{"from the first key", cache.KeyRange{From: key(0)}, snap},
		{"up to a key", cache.KeyRange{To: key(300)}, between(0, 300)},
		{"from a key", cache.KeyRange{From: key(700)}, between(700, len(snap))},
		{"between keys", cache.KeyRange{From: key(100), To: key(612)}, between(100, 612)},
		{"one row", cache.KeyRange{From: key(5), To: key(6)}, between(5, 6)},
		{"empty: equal bounds", cache.KeyRange{From: key(5), To: key(5)}, nil},
		{"empty: bounds reversed", cache.KeyRange{From: key(9), To: key(5)}, nil},
		{"after the last key", cache.KeyRange{From: key(len(snap)-1) + "~"}, nil},
	}
	check := func(t *testing.T, r cache.KeyRange, want []cache.Row) {
		t.Helper()
		got := readRange(t, s, r)
		if len(got) != len(want) {
			t.Fatalf("got %d rows, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i].Key != want[i].Key || got[i].Sum != want[i].Sum || !slices.Equal(got[i].Values, want[i].Values) {
				t.Fatalf("row %d: got %+v, want %+v", i, got[i], want[i])
			}
		}
		sum, err := s.Checksum(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := addSum(got); sum != want {
			t.Fatalf("got MySQL's %+v, want Add's %+v", sum, want)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, tt.r, tt.want) })
	}

	// The sums of squares overflow 2⁶⁴ many times over: the modulo is exercised.
	exact := new(big.Int)
	for _, r := range snap {
		v := new(big.Int).SetUint64(uint64(r.Sum))
		exact.Add(exact, v.Mul(v, v))
	}
	if exact.BitLen() <= 64 {
		t.Fatalf("got a sum of squares of %d bits, want more than 64", exact.BitLen())
	}

	// Bounds whose rows were deleted still bound the range the same way.
	if _, err := db.ExecContext(ctx, "DELETE FROM workpiece_location WHERE part_no IN (?, ?)", key(200), key(400)); err != nil {
		t.Fatal(err)
	}
	t.Run("bounds deleted", func(t *testing.T) {
		check(t, cache.KeyRange{From: key(200), To: key(400)}, between(201, 400))
	})
	t.Run("deleted bound, open end", func(t *testing.T) {
		check(t, cache.KeyRange{To: key(200)}, between(0, 200))
	})
}

// TestRangeErrors: a failing range names it, and a source whose table lost a mapped column
// answers with the *MappingError that names it.
func TestRangeErrors(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 10)
	s := openSource(t, dsn, MySQLConfig{})
	ctx := testCtx(t)
	if _, err := db.ExecContext(ctx, "ALTER TABLE workpiece_location DROP COLUMN location"); err != nil {
		t.Fatal(err)
	}
	const want = `store: mapping: ValueColumns: no column "location" in table workpiece_location (columns: part_no, updated_at)`
	if _, err := s.Checksum(ctx, cache.KeyRange{From: "a"}); err == nil || err.Error() != want {
		t.Errorf("Checksum: got %v, want %q", err, want)
	}
	if err := s.ReadRange(ctx, cache.KeyRange{To: "b"}, func(cache.Row) error { return nil }); err == nil || err.Error() != want {
		t.Errorf("ReadRange: got %v, want %q", err, want)
	}

	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = closedAddr(t)
	down := openSource(t, cfg.FormatDSN(), MySQLConfig{})
	if _, err := down.Checksum(ctx, cache.KeyRange{From: "a", To: "b"}); err == nil || !strings.HasPrefix(err.Error(), `store: checksum of keys ["a", "b"): `) {
		t.Errorf("Checksum, MySQL down: got %v", err)
	}
	if err := down.ReadRange(ctx, cache.KeyRange{From: "a"}, func(cache.Row) error { return nil }); err == nil || !strings.HasPrefix(err.Error(), `store: read keys from "a": `) {
		t.Errorf("ReadRange, MySQL down: got %v", err)
	}
}

// BenchmarkReconcilePass1M measures the database's cost of one reconcile pass over
// 1,000,000 demo rows: Checksum over ranges of 4,096 rows (bounds from the keys, taken
// untimed), against the full key scan (Keys) the reconcile did before, and one Checksum of
// the whole table. Besides the wall time per pass it reports the CPU time the server spent
// (MariaDB's user statistics, on a private server only). Run with -benchtime=3x; seeding
// is not timed.
func BenchmarkReconcilePass1M(b *testing.B) {
	const n, rangeRows = 1_000_000, 4096
	srv := mariadbtest.Shared(b)
	dsn := srv.CreateDatabase(b)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := Seed(testCtx(b), db, n); err != nil {
		b.Fatal(err)
	}
	s := openSource(b, dsn, MySQLConfig{})
	dbCPU := serverCPU(b, srv, db)
	if dbCPU == nil {
		dbCPU = func() float64 { return -1 }
	}
	report := func(b *testing.B, cpu0 float64) {
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/pass")
		if cpu0 >= 0 {
			b.ReportMetric((dbCPU()-cpu0)*1000/float64(b.N), "db-cpu-ms/pass")
		}
	}
	var bounds []string
	i := 0
	if err := s.Keys(testCtx(b), func(k string) error {
		if i%rangeRows == 0 && i > 0 {
			bounds = append(bounds, k)
		}
		i++
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	ranges := make([]cache.KeyRange, 0, len(bounds)+1)
	from := ""
	for _, k := range bounds {
		ranges = append(ranges, cache.KeyRange{From: from, To: k})
		from = k
	}
	ranges = append(ranges, cache.KeyRange{From: from})

	b.Run(fmt.Sprintf("checksum/ranges=%d", len(ranges)), func(b *testing.B) {
		cpu0 := dbCPU()
		for b.Loop() {
			var total int64
			for _, r := range ranges {
				sum, err := s.Checksum(context.Background(), r)
				if err != nil {
					b.Fatal(err)
				}
				total += sum.Rows
			}
			if total != n {
				b.Fatalf("got %d rows, want %d", total, n)
			}
		}
		report(b, cpu0)
	})
	b.Run("checksum/whole-table", func(b *testing.B) {
		cpu0 := dbCPU()
		for b.Loop() {
			if sum, err := s.Checksum(context.Background(), cache.KeyRange{}); err != nil || sum.Rows != n {
				b.Fatalf("got %+v, %v", sum, err)
			}
		}
		report(b, cpu0)
	})
	b.Run("keys", func(b *testing.B) {
		cpu0 := dbCPU()
		for b.Loop() {
			count := 0
			if err := s.Keys(context.Background(), func(string) error { count++; return nil }); err != nil || count != n {
				b.Fatalf("got %d keys, %v", count, err)
			}
		}
		report(b, cpu0)
	})
	// The same XOR the issue measured, for comparison: one statement over the table.
	b.Run("bit_xor/whole-table", func(b *testing.B) {
		q := "SELECT BIT_XOR(CRC32(CONCAT_WS(0x1f, part_no, location))) FROM workpiece_location"
		cpu0 := dbCPU()
		for b.Loop() {
			var x uint64
			if err := s.DB().QueryRowContext(context.Background(), q).Scan(&x); err != nil {
				b.Fatal(err)
			}
		}
		report(b, cpu0)
	})
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
