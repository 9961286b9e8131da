package store

import (
	"context"
	"slices"
	"strings"
	"testing"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

// stockTable is a second lookup table for the tests of several tables on one pool or
// stream: sku → qty, bin.
const stockTable = `CREATE TABLE stock (
  sku        VARCHAR(64) NOT NULL PRIMARY KEY,
  qty        INT NOT NULL,
  bin        VARCHAR(32) NOT NULL,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`

// stockMapping maps stockTable.
var stockMapping = Mapping{Table: "stock", KeyColumn: "sku", ValueColumns: []string{"qty", "bin"}}

// openPool opens a pool on dsn, closed when tb ends.
func openPool(tb testing.TB, dsn string) *Pool {
	tb.Helper()
	p, err := OpenPool(PoolConfig{DSN: dsn})
	if err != nil {
		tb.Fatalf("OpenPool: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// poolTable makes the source of one table on p.
func poolTable(tb testing.TB, p *Pool, m Mapping) *MySQL {
	tb.Helper()
	s, err := p.Table(TableConfig{Mapping: m})
	if err != nil {
		tb.Fatalf("Pool.Table(%s): %v", m.Table, err)
	}
	return s
}

// snapshotKeys returns the keys a Snapshot of s delivers, in order, or its error.
func snapshotKeys(ctx context.Context, s *MySQL) ([]string, error) {
	var keys []string
	_, err := s.Snapshot(ctx, func(r cache.Row) error {
		keys = append(keys, r.Key+"="+strings.Join(r.Values, ","))
		return nil
	})
	return keys, err
}

// TestPoolSharedByTables reads two tables through one pool: both sources use the same
// *sql.DB, sized for the tables open; closing a source leaves the pool (and the other
// table) working; closing the pool ends both; OpenMySQL's source still owns its own.
func TestPoolSharedByTables(t *testing.T) {
	dsn, db := seededDB(t, mariadbtest.Shared(t), 3)
	if _, err := db.ExecContext(testCtx(t), stockTable); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(testCtx(t), "INSERT INTO stock (sku, qty, bin) VALUES ('P-100', 12, 'B-3'), ('P-200', 0, 'C-1')"); err != nil {
		t.Fatal(err)
	}
	p := openPool(t, dsn)
	if got := p.DB().Stats().MaxOpenConnections; got != 4 {
		t.Errorf("an empty pool: got %d connections at most, want 4", got)
	}
	loc := poolTable(t, p, Mapping{})
	stock := poolTable(t, p, stockMapping)
	if loc.DB() != p.DB() || stock.DB() != p.DB() {
		t.Fatal("the sources do not use the pool's *sql.DB")
	}
	if got := p.DB().Stats().MaxOpenConnections; got != 6 {
		t.Errorf("two tables: got %d connections at most, want 6 (2 + 2 per table)", got)
	}
	if got, want := stock.String(), p.String()+" table stock"; got != want {
		t.Errorf("String: got %q, want %q", got, want)
	}
	tests := []struct {
		name string
		src  *MySQL
		want []string
	}{
		{"workpiece_location", loc, []string{"18-546=车体新厂房3号", "A7-001=总装车间A区12排"}},
		{"stock", stock, []string{"P-100=12,B-3", "P-200=0,C-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := snapshotKeys(testCtx(t), tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) < 2 || !slices.Equal(keys[:2], tt.want) {
				t.Fatalf("got %q, want %q first", keys, tt.want)
			}
		})
	}

	if err := loc.Close(); err != nil {
		t.Fatal(err)
	}
	loc.Close() // a second Close does not release the pool twice
	if got := p.DB().Stats().MaxOpenConnections; got != 4 {
		t.Errorf("one table left: got %d connections at most, want 4", got)
	}
	if keys, err := snapshotKeys(testCtx(t), stock); err != nil || len(keys) != 2 {
		t.Fatalf("after closing the other source: got %q, %v; want the 2 stock rows", keys, err)
	}
	p.Close()
	if _, err := snapshotKeys(testCtx(t), stock); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after closing the pool: got %v, want an error saying it is closed", err)
	}

	own, err := OpenMySQL(MySQLConfig{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	own.Close()
	if err := own.DB().PingContext(testCtx(t)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("OpenMySQL's source closed: got ping %v, want its pool closed", err)
	}
}

// TestPoolSize: 2 + 2 connections per table, up to maxPoolConns; half of them idle.
func TestPoolSize(t *testing.T) {
	p, err := OpenPool(PoolConfig{DSN: "loader:pw@tcp(127.0.0.1:1)/plant"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var srcs []*MySQL
	for _, tt := range []struct {
		tables, want int
	}{{1, 4}, {2, 6}, {3, 8}, {7, 16}, {12, 16}} {
		for len(srcs) < tt.tables {
			srcs = append(srcs, poolTable(t, p, Mapping{}))
		}
		if got := p.DB().Stats().MaxOpenConnections; got != tt.want {
			t.Errorf("%d tables: got %d connections at most, want %d", tt.tables, got, tt.want)
		}
	}
	for _, s := range srcs {
		s.Close()
	}
	if got := p.DB().Stats().MaxOpenConnections; got != 4 {
		t.Errorf("all sources closed: got %d connections at most, want 4", got)
	}
}
