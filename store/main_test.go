package store

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"go.uber.org/goleak"

	"wxlookup/internal/mariadbtest"
)

func TestMain(m *testing.M) { mariadbtest.Main(m) }

// checkLeaks fails t if a goroutine started during the test outlives it (its cleanups,
// such as closing sources, run first). mariadbd's process waiters are the test server's own.
func checkLeaks(t *testing.T) {
	t.Helper()
	opts := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("wxlookup/internal/mariadbtest.(*Server).startProcess.func1"),
	}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

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
