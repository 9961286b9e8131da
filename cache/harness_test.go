package cache_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

// The harness of the external tests of the loader against real sources (mysql_test.go,
// csv_test.go): databases, caches, lookups, and the loader's source calls as events.

// testCtx returns a context bounded well below the test timeout.
func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// writerDB opens a root pool on dsn whose session stamps and reads TIMESTAMPs in UTC, as
// the loader's does, so that a time.Time written here compares with the loader's
// watermarks. It is closed when tb ends.
func writerDB(tb testing.TB, dsn string) *sql.DB {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// seeded creates a fresh database on srv holding demo rows 0 … n-1 and returns its root
// DSN and a writer pool on it.
func seeded(tb testing.TB, srv *mariadbtest.Server, n int) (string, *sql.DB) {
	tb.Helper()
	dsn := srv.CreateDatabase(tb)
	db := writerDB(tb, dsn)
	if err := store.Seed(testCtx(tb), db, n); err != nil {
		tb.Fatalf("seed %d rows: %v", n, err)
	}
	return dsn, db
}

// exec runs statements on db, failing the test on error.
func exec(tb testing.TB, db *sql.DB, query string, args ...any) {
	tb.Helper()
	if _, err := db.ExecContext(testCtx(tb), query, args...); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
}

// openMySQL opens the MySQL source on dsn, closed when tb ends.
func openMySQL(tb testing.TB, dsn string, cfg store.MySQLConfig) *store.MySQL {
	tb.Helper()
	cfg.DSN = dsn
	s, err := store.OpenMySQL(cfg)
	if err != nil {
		tb.Fatalf("OpenMySQL: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close source: %v", err)
		}
	})
	return s
}

// newCache returns a Cache over src, closed when tb ends (before the source, whose cleanup
// was registered first): the package's own test helper, with hour-apart loader tickers
// unless cfg says otherwise and logs discarded.
func newCache(tb testing.TB, src cache.Source, cfg cache.Config) *cache.Cache {
	tb.Helper()
	if w, ok := src.(*watchedSource); ok {
		src = w.source()
	}
	return cache.NewTestCache(tb, src, cfg)
}

// startReady starts c and waits for its first warm.
func startReady(tb testing.TB, c *cache.Cache) {
	tb.Helper()
	c.Start()
	if err := c.WaitReady(testCtx(tb)); err != nil {
		tb.Fatalf("WaitReady: %v", err)
	}
}

// demoLine is the DefaultRender line of a row with one value.
func demoLine(key, value string) string { return "[" + key + "] " + value }

// lookup is Lookup of the normalised form of key, with the line as a string.
func lookup(c *cache.Cache, key string) (line, canon string, found bool, err error) {
	l, canon, found, err := c.Lookup(context.Background(), []byte(cache.Key(key)))
	return string(l), canon, found, err
}

// mustFind fails unless key is found with the line want.
func mustFind(tb testing.TB, c *cache.Cache, key, want string) {
	tb.Helper()
	line, _, found, err := lookup(c, key)
	if err != nil || !found || line != want {
		tb.Fatalf("Lookup(%q): got %q (found %v, err %v), want %q", key, line, found, err, want)
	}
}

// mustMiss fails unless key is a (non-error) not-found.
func mustMiss(tb testing.TB, c *cache.Cache, key string) {
	tb.Helper()
	line, _, found, err := lookup(c, key)
	if err != nil || found {
		tb.Fatalf("Lookup(%q): got %q (found %v, err %v), want not found", key, line, found, err)
	}
}

// mustRefresh runs a refresh (and, with reconcile, a key scan) now.
func mustRefresh(tb testing.TB, c *cache.Cache, reconcile bool) {
	tb.Helper()
	step, name := c.Refresh, "Refresh"
	if reconcile {
		step, name = c.Reconcile, "Reconcile"
	}
	if err := step(testCtx(tb)); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
}

// call is one completed call of a watchedSource method.
type call struct {
	began, ended time.Time
	next         time.Time // the watermark Changes returned
	err          error
}

// watchedSource wraps a Source to let a test see the loader's work as events instead of
// sleeping: each completed Changes (and Keys) call is sent on a channel, Get calls are
// counted, and a hook can hold a Changes call after its first row.
type watchedSource struct {
	polled

	// changes and keys, if not nil, receive every completed Changes and Keys call. The
	// loader waits for the test to take each (or for Close).
	changes, keys chan call
	gets          atomic.Int64

	mu     sync.Mutex
	onRow  func(ctx context.Context) // if set, runs before the first row of a Changes call
	lastWM time.Time                 // the watermark of the last successful Changes
}

// polled is what the loader needs of a source in poll mode.
type polled interface {
	cache.Source
	cache.Poller
}

func watch(src polled) *watchedSource {
	return &watchedSource{polled: src, changes: make(chan call), keys: make(chan call)}
}

// source returns w as the loader should see it: a RangeSource if the wrapped source is one
// (range reconcile), else w itself (a key scan, if the wrapped source lists keys).
func (w *watchedSource) source() cache.Source {
	if rs, ok := w.polled.(cache.RangeSource); ok {
		return watchedRanges{w, rs}
	}
	return w
}

// watchedRanges is a watchedSource whose source can checksum key ranges.
type watchedRanges struct {
	*watchedSource
	rs cache.RangeSource
}

func (w watchedRanges) Checksum(ctx context.Context, r cache.KeyRange) (cache.RangeSum, error) {
	return w.rs.Checksum(ctx, r)
}

func (w watchedRanges) ReadRange(ctx context.Context, r cache.KeyRange, fn func(cache.Row) error) error {
	return w.rs.ReadRange(ctx, r, fn)
}

func (w *watchedSource) String() string { return fmt.Sprint(w.polled) }

func (w *watchedSource) Changes(ctx context.Context, since time.Time, fn func(cache.Row) error) (time.Time, error) {
	w.mu.Lock()
	hook := w.onRow
	w.mu.Unlock()
	began := time.Now()
	first := true
	next, err := w.polled.Changes(ctx, since, func(r cache.Row) error {
		if first && hook != nil {
			hook(ctx)
		}
		first = false
		return fn(r)
	})
	if err == nil {
		w.mu.Lock()
		w.lastWM = next
		w.mu.Unlock()
	}
	w.send(ctx, w.changes, call{began: began, ended: time.Now(), next: next, err: err})
	return next, err
}

func (w *watchedSource) Keys(ctx context.Context, fn func(string) error) error {
	kl, ok := w.polled.(cache.KeyLister)
	if !ok {
		return fmt.Errorf("%s cannot list its keys", w)
	}
	began := time.Now()
	err := kl.Keys(ctx, fn)
	w.send(ctx, w.keys, call{began: began, ended: time.Now(), err: err})
	return err
}

func (w *watchedSource) Get(ctx context.Context, key string) (cache.Row, error) {
	w.gets.Add(1)
	return w.polled.Get(ctx, key)
}

func (w *watchedSource) send(ctx context.Context, ch chan call, ev call) {
	if ch == nil {
		return
	}
	select {
	case ch <- ev:
	case <-ctx.Done():
	}
}

// setOnRow installs (or, with nil, removes) the Changes hook.
func (w *watchedSource) setOnRow(f func(ctx context.Context)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onRow = f
}

// watermark returns the watermark the last successful Changes returned.
func (w *watchedSource) watermark() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastWM
}

// quiet makes the loader's calls not wait for the test: a test that drives steps with
// Refresh and does not read the events calls it.
func (w *watchedSource) quiet() *watchedSource {
	w.changes, w.keys = nil, nil
	return w
}

// await takes events from ch until one satisfies ok, and fails the test if none does by
// deadline.
func await(tb testing.TB, ch <-chan call, deadline time.Time, what string, ok func(call) bool) call {
	tb.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case ev := <-ch:
			if ok(ev) {
				return ev
			}
		case <-timer.C:
			tb.Fatalf("%s: not by the deadline", what)
			return call{}
		}
	}
}
