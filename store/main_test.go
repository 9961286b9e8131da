package store

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

func TestMain(m *testing.M) { mariadbtest.Main(m) }

// testCtx returns a context bounded well below the test timeout.
func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// seededDB creates a fresh database on srv holding n demo rows and returns its root DSN and
// an open pool on it.
func seededDB(tb testing.TB, srv *mariadbtest.Server, n int) (string, *sql.DB) {
	tb.Helper()
	dsn := srv.CreateDatabase(tb)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := Seed(testCtx(tb), db, n); err != nil {
		tb.Fatalf("seed %d rows: %v", n, err)
	}
	return dsn, db
}

// serverCPU returns a function reporting the CPU seconds the server has spent for the root
// account so far (MariaDB's user statistics, turned on here), or nil when srv is not a
// private server, whose global settings a benchmark may change.
func serverCPU(tb testing.TB, srv *mariadbtest.Server, db *sql.DB) func() float64 {
	tb.Helper()
	if !srv.Private() {
		return nil
	}
	if _, err := db.Exec("SET GLOBAL userstat = 1"); err != nil {
		tb.Fatal(err)
	}
	return func() float64 {
		var cpu float64
		if err := db.QueryRow("SELECT CPU_TIME FROM information_schema.USER_STATISTICS WHERE USER = 'root'").Scan(&cpu); err != nil {
			tb.Fatal(err)
		}
		return cpu
	}
}

// keepRow returns a copy of r that outlives the call of fn it was given to: Snapshot and
// ReadRange lend their rows.
func keepRow(r cache.Row) cache.Row {
	r.Key = strings.Clone(r.Key)
	vals := make([]string, len(r.Values))
	for i, v := range r.Values {
		vals[i] = strings.Clone(v)
	}
	r.Values = vals
	return r
}
