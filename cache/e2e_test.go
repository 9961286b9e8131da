package cache_test

// The full compare of the end-to-end tests (feed_e2e_test.go for the binlog change feed,
// poll_e2e_test.go for poll mode): after a fault, the cache must answer exactly what the
// table holds. The table is read with a pool of its own that sees every column as MySQL's
// own text, so the compare does not share the store's statements it checks.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/cache"
	"wxlookup/internal/logtest"
	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

// readerDB opens a pool on dsn that reads every column as text (no parseTime) in the
// loader's session time zone (the DSN's time_zone, else UTC), closed when tb ends.
func readerDB(tb testing.TB, dsn string) *sql.DB {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.ParseTime = false
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	if _, ok := cfg.Params["time_zone"]; !ok {
		cfg.Params["time_zone"] = "'+00:00'"
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// tableRows runs query, whose columns are the key and then the mapped values in order, and
// returns its rows; a NULL value reads as "", as the loader reads it.
func tableRows(tb testing.TB, db *sql.DB, query string) []cache.Row {
	tb.Helper()
	rows, err := db.QueryContext(testCtx(tb), query)
	if err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		tb.Fatal(err)
	}
	vals := make([]sql.NullString, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	var out []cache.Row
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			tb.Fatalf("%s: %v", query, err)
		}
		r := cache.Row{Key: vals[0].String, Values: make([]string, len(cols)-1)}
		for i, v := range vals[1:] {
			r.Values[i] = v.String
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return out
}

// defaultTable reads the default table for tableRows.
const defaultTable = "SELECT part_no, location FROM workpiece_location"

// mustEqualTable fails unless the cache answers exactly what query reads from the table
// now (see mustEqualRows), and returns the number of rows compared.
func mustEqualTable(tb testing.TB, c *cache.Cache, db *sql.DB, query string, gone ...string) int {
	tb.Helper()
	rows := tableRows(tb, db, query)
	inTable := make(map[string]bool, len(rows))
	for _, r := range rows {
		inTable[cache.Key(r.Key)] = true
	}
	for _, k := range gone {
		if inTable[cache.Key(k)] {
			tb.Fatalf("test bug: %q is listed as gone but the table has it", k)
		}
	}
	mustEqualRows(tb, c, rows, gone...)
	return len(rows)
}

// mustEqualRows fails unless the cache answers exactly rows: each is found by Lookup under
// its stored key with its DefaultRender line; the cache is complete and holds as many
// entries as there are rows (so it answers no key they lack); and each key of gone (keys
// deleted by the test or removed by the fault) is not found.
func mustEqualRows(tb testing.TB, c *cache.Cache, rows []cache.Row, gone ...string) {
	tb.Helper()
	var diffs []string
	for _, r := range rows {
		want := string(cache.DefaultRender(nil, r))
		if line, canon, found, err := lookup(c, r.Key); err != nil || !found || line != want || canon != r.Key {
			diffs = append(diffs, fmt.Sprintf("Lookup(%q): got %q, canonical %q, found %v, err %v; want %q", r.Key, line, canon, found, err, want))
		}
	}
	for _, k := range gone {
		if line, _, found, err := lookup(c, k); err != nil || found {
			diffs = append(diffs, fmt.Sprintf("Lookup(%q): got %q, found %v, err %v; want not found (no such row)", k, line, found, err))
		}
	}
	if st := c.Status(); st.Entries != int64(len(rows)) || !st.Complete {
		diffs = append(diffs, fmt.Sprintf("got %d entries, complete %v; want %d, true", st.Entries, st.Complete, len(rows)))
	}
	if len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = append(diffs[:10], "…")
		}
		tb.Fatalf("cache vs table (%d rows): %d differences:\n%s", len(rows), len(diffs), strings.Join(diffs, "\n"))
	}
}

// waitUntil polls cond until it holds and fails the test, with cond's last report, if it
// does not within d.
func waitUntil(tb testing.TB, d time.Duration, what string, cond func() (ok bool, report string)) {
	tb.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, report := cond()
		if ok {
			return
		}
		select {
		case <-deadline.C:
			tb.Fatalf("%s: not within %s; last: %s", what, d, report)
		case <-tick.C:
		}
	}
}

// failureLog returns a logger whose output the test prints if it fails (after the
// cleanups registered later, such as closing the cache, have run).
func failureLog(tb testing.TB) *slog.Logger {
	tb.Helper()
	var b logtest.Buffer
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("log:\n%s", b.String())
		}
	})
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// sortedKeys returns the keys of the default table in its own order (the key column's
// collation), the order in which snapshots cut key ranges.
func sortedKeys(tb testing.TB, db *sql.DB) []string {
	tb.Helper()
	var keys []string
	for _, r := range tableRows(tb, db, "SELECT part_no FROM workpiece_location ORDER BY part_no") {
		keys = append(keys, r.Key)
	}
	return keys
}

// lookupLoop looks keys up over and over from another goroutine until stopped (or for at
// most a minute), and counts lookups whose answer ok rejects.
type lookupLoop struct {
	stop  chan struct{}
	done  chan struct{}
	n     atomic.Int64 // lookups so far
	bad   int64        // after halt: lookups rejected
	first string       // after halt: the first rejected
}

// startLookups starts a lookupLoop over keys; ok judges each answer. Stop it with stop,
// which the test's cleanup also calls.
func startLookups(tb testing.TB, c *cache.Cache, keys []string, ok func(key, line string, found bool, err error) bool) *lookupLoop {
	tb.Helper()
	l := &lookupLoop{stop: make(chan struct{}), done: make(chan struct{})}
	norm := make([][]byte, len(keys))
	for i, k := range keys {
		norm[i] = []byte(cache.Key(k))
	}
	go func() {
		defer close(l.done)
		end := time.Now().Add(time.Minute)
		for i := 0; time.Now().Before(end); i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			j := i % len(keys)
			line, _, found, err := c.Lookup(context.Background(), norm[j])
			l.n.Add(1)
			if !ok(keys[j], string(line), found, err) {
				if l.bad++; l.bad == 1 {
					l.first = fmt.Sprintf("Lookup(%q): got %q, found %v, err %v", keys[j], line, found, err)
				}
			}
		}
	}()
	tb.Cleanup(func() { l.halt() })
	return l
}

// halt stops the loop and waits for it; afterwards n, bad and first may be read.
func (l *lookupLoop) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// The typed table: an INT key, and DECIMAL, DATETIME(6), TIMESTAMP, CHAR and VARCHAR
// values, with NULLs, Chinese text and a character outside the BMP. Row i's values are
// typedRow(i); every 7th price, 11th made, 13th seen, 17th code and 19th name is NULL.
const (
	typedSchema = `CREATE TABLE parts (
		id    INT NOT NULL PRIMARY KEY,
		price DECIMAL(12,3) NULL,
		made  DATETIME(6) NULL,
		seen  TIMESTAMP NULL DEFAULT NULL,
		code  CHAR(8) NULL,
		name  VARCHAR(100) NULL,
		u     TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
		KEY (u)) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`
	typedQuery = "SELECT id, price, made, seen, code, name FROM parts"
)

// typedMapping maps the typed table.
var typedMapping = store.Mapping{Table: "parts", KeyColumn: "id",
	ValueColumns: []string{"price", "made", "seen", "code", "name"}, UpdatedColumn: "u"}

// typedRow returns the values of row i of the typed table as written (nil for NULL), and
// its TIMESTAMP as an instant.
func typedRow(i int) (vals []any, seen time.Time) {
	price := fmt.Sprintf("%d.%03d", (i*7919)%100000-50000, i%1000)
	switch i % 50 {
	case 1:
		price = "-0.500"
	case 2:
		price = "0.000"
	}
	made := time.Date(2024, 1, 2, 3, 4, 5, 100_000, time.UTC).Add(time.Duration(i) * time.Minute)
	seen = time.Date(2023, 6, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour)
	names := []string{"车体新厂房", "总装车间A区", "𠮷野家仓库", "", "成品库"}
	null := func(every int, v any) any {
		if i%every == 0 {
			return nil
		}
		return v
	}
	return []any{null(7, price), null(11, made.Format("2006-01-02 15:04:05.000000")),
		null(13, seen.Format(time.DateTime)), null(17, fmt.Sprintf("C-%d", i%100)),
		null(19, names[i%len(names)]+strconv.Itoa(i)+"号")}, seen
}

// typedZone is a session time zone the typed tests run in: offset is the DSN's time_zone
// ("" for none: the loader's default, UTC) and name the location that reads it.
type typedZone struct{ name, offset string }

// typedZones are the loader's default, and a plant's in China set in the DSN.
var typedZones = []typedZone{{"UTC", ""}, {"Asia/Shanghai", "+08:00"}}

// typedTable creates the typed table with rows 1 … n in a fresh database on srv, and
// returns a root DSN on it with the session time zone z, the location of z, and a writer
// pool (in UTC).
func typedTable(tb testing.TB, srv *mariadbtest.Server, n int, z typedZone) (string, *time.Location, *sql.DB) {
	tb.Helper()
	dsn := srv.CreateDatabase(tb)
	db := writerDB(tb, dsn)
	exec(tb, db, typedSchema)
	var tuples []string
	var args []any
	for i := 1; i <= n; i++ {
		vals, _ := typedRow(i)
		tuples = append(tuples, "(?, ?, ?, ?, ?, ?)")
		args = append(append(args, i), vals...)
	}
	exec(tb, db, "INSERT INTO parts (id, price, made, seen, code, name) VALUES "+strings.Join(tuples, ", "), args...)
	loc, err := time.LoadLocation(z.name)
	if err != nil {
		tb.Fatal(err)
	}
	if z.offset == "" {
		return dsn, loc, db
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'" + z.offset + "'"
	cfg.Loc = loc
	return cfg.FormatDSN(), loc, db
}

// typedLine returns the DefaultRender line of row i of the typed table as written, its
// TIMESTAMP read in loc.
func typedLine(i int, loc *time.Location) string {
	vals, seen := typedRow(i)
	r := cache.Row{Key: strconv.Itoa(i)}
	for j, v := range vals {
		s, _ := v.(string)
		if j == 2 && v != nil {
			s = seen.In(loc).Format(time.DateTime)
		}
		r.Values = append(r.Values, s)
	}
	return string(cache.DefaultRender(nil, r))
}

// churn writes to the default table at random from one goroutine, as the plant's systems
// would: upserts, deletes, key changes (of the key's case too), multi-row updates and
// small transactions over a pool of keys, until halted or after maxWrites statements. A key change onto a key that
// exists fails (duplicate key) and is skipped; any other error stops it.
type churn struct {
	writes atomic.Int64
	stop   chan struct{}
	done   chan struct{}
	err    error // after halt: the error that stopped it
}

// maxWrites bounds a churn.
const maxWrites = 20_000

// startChurn starts a churn over pool with the random seed; the test's cleanup halts it.
func startChurn(tb testing.TB, db *sql.DB, pool []string, seed uint64) *churn {
	tb.Helper()
	tb.Logf("churn seed %d", seed)
	c := &churn{stop: make(chan struct{}), done: make(chan struct{})}
	rnd := rand.New(rand.NewPCG(seed, seed))
	key := func() string { return pool[rnd.IntN(len(pool))] }
	upsert := "INSERT INTO workpiece_location (part_no, location) VALUES (?, ?) ON DUPLICATE KEY UPDATE location = VALUES(location)"
	del := "DELETE FROM workpiece_location WHERE part_no = ?"
	go func() {
		defer close(c.done)
		for i := 0; i < maxWrites; i++ {
			select {
			case <-c.stop:
				return
			default:
			}
			v := fmt.Sprintf("写入%d", i)
			var stmts []sqlStmt
			tx := false
			switch op := rnd.IntN(11); {
			case op < 4:
				stmts = []sqlStmt{{upsert, []any{key(), v}}}
			case op < 6:
				stmts = []sqlStmt{{del, []any{key()}}}
			case op == 6:
				stmts = []sqlStmt{{"UPDATE workpiece_location SET part_no = ? WHERE part_no = ?", []any{key(), key()}}}
			case op == 7:
				stmts = []sqlStmt{{"UPDATE workpiece_location SET location = CONCAT(?, part_no) WHERE part_no IN (?, ?, ?, ?, ?)",
					[]any{v, key(), key(), key(), key(), key()}}}
			case op == 8:
				tx, stmts = true, []sqlStmt{{upsert, []any{key(), v}}, {del, []any{key()}}, {upsert, []any{key(), v + "b"}}}
			case op == 9: // the stored key's case flips: the same key to a lookup, another spelling in replies
				stmts = []sqlStmt{{"UPDATE workpiece_location SET part_no = IF(BINARY part_no = UPPER(part_no), LOWER(part_no), UPPER(part_no)) WHERE part_no = ?", []any{key()}}}
			default:
				k := key()
				tx, stmts = true, []sqlStmt{{del, []any{k}}, {upsert, []any{k, v}}}
			}
			if err := churnWrite(db, tx, stmts); err != nil {
				c.err = err
				return
			}
			c.writes.Add(1)
		}
	}()
	tb.Cleanup(c.halt)
	return c
}

// churnWrite runs stmts, in one transaction if tx; a duplicate key is not an error.
func churnWrite(db *sql.DB, tx bool, stmts []sqlStmt) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var run interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	} = db
	var t *sql.Tx
	if tx {
		var err error
		if t, err = db.BeginTx(ctx, nil); err != nil {
			return err
		}
		defer t.Rollback()
		run = t
	}
	for _, s := range stmts {
		if _, err := run.ExecContext(ctx, s.q, s.args...); err != nil {
			if me, ok := errors.AsType[*mysql.MySQLError](err); ok && me.Number == 1062 {
				return nil // ER_DUP_ENTRY: a key change onto a key in use
			}
			return fmt.Errorf("%s: %w", s.q, err)
		}
	}
	if t != nil {
		return t.Commit()
	}
	return nil
}

// halt stops the churn and waits for it.
func (c *churn) halt() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// churnPool returns the keys a churn over n demo rows writes (two rows in three, and as
// many new keys), and the stable rows it never touches, by key with their lines.
func churnPool(n int) (pool []string, stable map[string]string) {
	stable = map[string]string{}
	for i := range n {
		if i%3 == 0 {
			stable[demoKey(i)] = demoLine(demoKey(i), demoValue(i))
		} else {
			pool = append(pool, demoKey(i))
		}
		pool = append(pool, fmt.Sprintf("NX-%04d", i))
	}
	return pool, stable
}

// lookupStable starts a lookupLoop over the stable rows of churnPool: each must be found
// with its line every time.
func lookupStable(tb testing.TB, c *cache.Cache, stable map[string]string) *lookupLoop {
	tb.Helper()
	var keys []string
	for k := range stable {
		keys = append(keys, k)
	}
	return startLookups(tb, c, keys, func(key, line string, found bool, err error) bool {
		return err == nil && found && line == stable[key]
	})
}

// absent returns the keys of pool that the table (read by query on db) does not hold.
func absent(tb testing.TB, db *sql.DB, query string, pool []string) []string {
	tb.Helper()
	in := map[string]bool{}
	for _, r := range tableRows(tb, db, query) {
		in[cache.Key(r.Key)] = true
	}
	var out []string
	for _, k := range pool {
		if !in[cache.Key(k)] {
			out = append(out, k)
		}
	}
	return out
}
