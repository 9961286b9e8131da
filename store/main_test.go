package store

import (
	"context"
	"database/sql"
	"testing"
	"time"

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
