package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unsafe"

	"wxlookup/cache"
)

// Defaults of MySQLConfig, used for zero fields.
const (
	DefaultPageSize     = 5000
	DefaultOverlap      = 5 * time.Second
	DefaultQueryTimeout = 10 * time.Second
)

// MySQLConfig configures OpenMySQL. Zero fields take the Default… values.
type MySQLConfig struct {
	// DSN is a go-sql-driver/mysql DSN, typically of an account that may only SELECT the
	// table: user:password@tcp(host:3306)/plant.
	DSN string
	// Mapping names the table and columns; empty settings take the Default… names.
	Mapping Mapping
	// PageSize is the number of rows one statement of Snapshot, Changes or Keys reads.
	PageSize int
	// Overlap is how far before the last watermark Changes looks again, to catch rows
	// stamped before the watermark but committed after it. It must exceed the longest
	// writing transaction and the clock skew of writers that stamp rows themselves.
	Overlap time.Duration
	// QueryTimeout bounds each statement (one page, one clock read, one point read).
	QueryTimeout time.Duration
	// Logger receives the driver's own messages (a connection that broke mid-packet, with
	// the network error behind the "invalid connection" a query returns), at warn level;
	// nil leaves them on the driver's default, unstructured lines on stderr.
	Logger *slog.Logger
}

// driverLogger sends go-sql-driver/mysql's messages to slog.
type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Print(v ...any) {
	d.l.Warn("mysql driver: "+strings.TrimSpace(fmt.Sprint(v...)), "component", "mysql")
}

// MySQL is the MySQL (or MariaDB) source of the cache: it satisfies cache.Source and
// cache.RangeSource with bounded keyset-paginated statements, never a long transaction,
// and needs only SELECT on the table. Every Row it delivers carries its Sum. It is safe
// for concurrent use.
type MySQL struct {
	pool      *Pool
	ownsPool  bool // opened by OpenMySQL: Close closes the pool
	closeOnce sync.Once
	db        *sql.DB // pool.db
	dbName    string  // the DSN's database, of an unqualified Mapping.Table
	desc      string
	m         Mapping
	pageSize  int
	overlap   time.Duration
	timeout   time.Duration
	nvalues   int
	loc       *time.Location
	q         queries

	// changing is held (a one-slot semaphore) by the Changes call in progress, which alone
	// uses sent.
	changing chan struct{}
	sent     *sentRows
}

var (
	_ cache.Source      = (*MySQL)(nil)
	_ cache.RangeSource = (*MySQL)(nil)
)

// queries are the statements of one mapping, built once from validated, quoted names.
type queries struct {
	clock                     string
	snapshotFirst, snapshotAt string
	keysFirst, keysAt         string
	// changesFirst and changesAt read by (updated, key) from a stamp on, [0] up to the end,
	// [1] up to a stamp (exclusive); windowSum is the RangeSum of the rows between two stamps.
	changesFirst, changesAt [2]string
	windowSum               string
	// keysSince lists the keys stamped from a stamp on, [0] the first page, [1] the next.
	keysSince [2]string
	get       string
	// rangeFirst[from][to] reads the first page of a KeyRange and checksum[from][to] sums it,
	// with index 1 where the range has that bound; rangeAt[to] reads a following page.
	rangeFirst, checksum [2][2]string
	rangeAt              [2]string
}

// OpenMySQL checks cfg and returns a source for it, with a connection pool of its own
// (OpenPool; closing the source closes it). Several tables share one pool through
// Pool.Table instead. It does not connect: the service starts and answers from its cache
// while MySQL is down, and each call connects as needed.
func OpenMySQL(cfg MySQLConfig) (*MySQL, error) {
	tc := TableConfig{Mapping: cfg.Mapping, PageSize: cfg.PageSize, Overlap: cfg.Overlap, QueryTimeout: cfg.QueryTimeout}
	if _, err := tc.withDefaults(); err != nil {
		return nil, err
	}
	p, err := OpenPool(PoolConfig{DSN: cfg.DSN, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s, err := p.Table(tc)
	if err != nil {
		p.Close()
		return nil, err
	}
	s.ownsPool = true
	return s, nil
}

// TableConfig configures the source of one table of a Pool: MySQLConfig without the
// connection settings. Zero fields take the Default… values.
type TableConfig struct {
	// Mapping names the table and columns; empty settings take the Default… names.
	Mapping Mapping
	// PageSize, Overlap and QueryTimeout are as in MySQLConfig.
	PageSize     int
	Overlap      time.Duration
	QueryTimeout time.Duration
}

// withDefaults returns cfg with its mapping and zero fields defaulted, or the error naming
// the first invalid setting.
func (cfg TableConfig) withDefaults() (TableConfig, error) {
	cfg.Mapping = cfg.Mapping.WithDefaults()
	if err := cfg.Mapping.Validate(); err != nil {
		return cfg, err
	}
	if err := orDefault("open mysql", "PageSize", &cfg.PageSize, DefaultPageSize, 1); err != nil {
		return cfg, err
	}
	if err := orDefault("open mysql", "Overlap", &cfg.Overlap, DefaultOverlap, 0); err != nil {
		return cfg, err
	}
	return cfg, orDefault("open mysql", "QueryTimeout", &cfg.QueryTimeout, DefaultQueryTimeout, 1)
}

// orDefault sets *v to def when it is zero, and refuses it, naming the setting, when it is
// below least: the rule of every number of the configurations here.
func orDefault[T int | time.Duration](op, name string, v *T, def, least T) error {
	switch {
	case *v == 0:
		*v = def
	case *v < least:
		want := "> 0"
		if least != 1 {
			want = fmt.Sprintf("≥ %d", int64(least))
		}
		return fmt.Errorf("store: %s: %s %v, want %s", op, name, *v, want)
	}
	return nil
}

// buildQueries writes the statements of m. Every name is validated and quoted; values
// travel as parameters.
//
// Each column is selected as its text in utf8mb4 (CONVERT … USING utf8mb4): the very
// string the row checksum hashes on the server (sumExpr), so Row.Sum, computed in Go from
// the delivered strings, equals the server's for every column type — DECIMAL as "12.50",
// DATETIME and TIMESTAMP as "2024-01-02 03:04:05.000100" (in the session time zone), a
// latin1 column in UTF-8 — and no DATETIME value is reformatted by the driver.
func buildQueries(m Mapping) queries {
	t, k, u := quote(m.Table), quote(m.KeyColumn), quote(m.UpdatedColumn)
	text := func(col string) string { return "CONVERT(" + quote(col) + " USING utf8mb4)" }
	cols := []string{text(m.KeyColumn)}
	summed := []string{text(m.KeyColumn)}
	for _, c := range m.ValueColumns {
		cols = append(cols, text(c))
		summed = append(summed, "COALESCE("+text(c)+", '')")
	}
	kv := strings.Join(cols, ", ")
	// sumExpr is cache.RowSum on the server: NULL values count as empty strings, as they
	// arrive (CONCAT_WS would skip a NULL, and with it a separator).
	sumExpr := "CRC32(CONCAT_WS(0x1f, " + strings.Join(summed, ", ") + "))"
	// rangeSum aggregates sumExpr over the rows where … as cache.RangeSum does: the sums
	// are exact DECIMALs on the server, reduced modulo 2⁶⁴ as Go's uint64 wraps. A CRC is
	// below 2³², so its square fits a BIGINT UNSIGNED. The derived table's LIMIT (no
	// limit at all) keeps MySQL and MariaDB from merging it into the outer query, which
	// would compute each row's CRC once per mention of h (a third of the cost).
	rangeSum := func(where string) string {
		return "SELECT COUNT(*), COALESCE(SUM(h), 0) MOD 18446744073709551616, " +
			"COALESCE(SUM(h * h), 0) MOD 18446744073709551616 FROM (SELECT " + sumExpr + " AS h FROM " + t +
			" WHERE " + where + " LIMIT 18446744073709551615) AS r"
	}
	// keyRange is the condition of a KeyRange; the bounds compare in the key column's
	// collation, as ORDER BY key does.
	keyRange := func(from, to bool) string {
		w := k + " IS NOT NULL"
		if from {
			w = k + " >= ?"
		}
		if to {
			w += " AND " + k + " < ?"
		}
		return w
	}
	q := queries{
		clock: "SELECT NOW(6)",
		// The first pages skip NULL keys (possible when KeyColumn is a unique index rather
		// than the primary key); later pages exclude them by comparison anyway.
		snapshotFirst: "SELECT " + kv + " FROM " + t + " WHERE " + k + " IS NOT NULL ORDER BY " + k + " LIMIT ?",
		snapshotAt:    "SELECT " + kv + " FROM " + t + " WHERE " + k + " > ? ORDER BY " + k + " LIMIT ?",
		keysFirst:     "SELECT " + k + " FROM " + t + " WHERE " + k + " IS NOT NULL ORDER BY " + k + " LIMIT ?",
		keysAt:        "SELECT " + k + " FROM " + t + " WHERE " + k + " > ? ORDER BY " + k + " LIMIT ?",
		windowSum:     rangeSum(u + " >= ? AND " + u + " < ? AND " + k + " IS NOT NULL"),
		// The key column's collation (case- and width-insensitive in schema.sql) finds the
		// candidates through the index; Get keeps those whose cache.Key matches.
		get: "SELECT " + kv + " FROM " + t + " WHERE " + k + " = ? LIMIT 16",
	}
	for i, upTo := range []string{"", " AND " + u + " < ?"} {
		q.changesFirst[i] = "SELECT " + kv + ", " + u + " FROM " + t +
			" WHERE " + u + " >= ?" + upTo + " AND " + k + " IS NOT NULL ORDER BY " + u + ", " + k + " LIMIT ?"
		// Keyset on (u, k), written so the range on u can use its index:
		// (u, k) > (lastU, lastK)  ⇔  u >= lastU AND (u > lastU OR k > lastK).
		q.changesAt[i] = "SELECT " + kv + ", " + u + " FROM " + t +
			" WHERE " + u + " >= ? AND (" + u + " > ? OR " + k + " > ?)" + upTo + " ORDER BY " + u + ", " + k + " LIMIT ?"
	}
	q.keysSince[0] = "SELECT " + cols[0] + ", " + u + " FROM " + t + " WHERE " + u + " >= ? AND " + k + " IS NOT NULL ORDER BY " + u + ", " + k + " LIMIT ?"
	q.keysSince[1] = "SELECT " + cols[0] + ", " + u + " FROM " + t + " WHERE " + u + " >= ? AND (" + u + " > ? OR " + k + " > ?) ORDER BY " + u + ", " + k + " LIMIT ?"
	for from := range 2 {
		for to := range 2 {
			w := keyRange(from == 1, to == 1)
			q.rangeFirst[from][to] = "SELECT " + kv + " FROM " + t + " WHERE " + w + " ORDER BY " + k + " LIMIT ?"
			q.checksum[from][to] = rangeSum(w)
		}
	}
	q.rangeAt[0] = "SELECT " + kv + " FROM " + t + " WHERE " + k + " > ? ORDER BY " + k + " LIMIT ?"
	q.rangeAt[1] = "SELECT " + kv + " FROM " + t + " WHERE " + k + " > ? AND " + k + " < ? ORDER BY " + k + " LIMIT ?"
	return q
}

// String describes the source without its password, for example
// "mysql loader@tcp(db:3306)/plant table workpiece_location".
func (s *MySQL) String() string { return s.desc }

// DB returns the connection pool, for Seed and tests (the Pool's, when shared).
func (s *MySQL) DB() *sql.DB { return s.db }

// Close releases the source. A source of OpenMySQL closes its pool (calls in progress
// fail); one of Pool.Table leaves the shared pool open and only stops counting in its size.
// Calls after the first do nothing.
func (s *MySQL) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.ownsPool {
			err = s.pool.Close()
		} else {
			s.pool.release()
		}
	})
	return err
}

// clock reads the database's clock, the origin of every watermark: writers stamp rows with
// this clock (CURRENT_TIMESTAMP), so the loader's and the writers' times compare.
func (s *MySQL) clock(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var now time.Time
	if err := s.db.QueryRowContext(ctx, s.q.clock).Scan(&now); err != nil {
		return time.Time{}, err
	}
	return now, nil
}

// page runs one bounded statement and calls each with dest filled for every row, returning
// the number of rows. The []byte behind RawBytes in dest is valid only during each.
func (s *MySQL) page(ctx context.Context, query string, args []any, dest []any, each func() error) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return n, err
		}
		n++
		if err := each(); err != nil {
			return n, err
		}
	}
	return n, rows.Err()
}

// rowScanner scans key and value columns as raw bytes and builds a cache.Row from them:
// row allocates the Row (one string holding key and values, one Values slice), view lends
// one that lives until the next scan.
type rowScanner struct {
	cols []sql.RawBytes
	dest []any
	buf  []byte
	vals []string // view's Values
}

func newRowScanner(nvalues int, extra ...any) *rowScanner {
	r := &rowScanner{cols: make([]sql.RawBytes, 1+nvalues)}
	for i := range r.cols {
		r.dest = append(r.dest, &r.cols[i])
	}
	r.dest = append(r.dest, extra...)
	return r
}

// view returns the row scanned last without allocating: its strings alias the scanner's
// buffer and its Values are the scanner's, valid until the next scan. A snapshot of a
// million rows that have not changed thus leaves no garbage behind (the cache copies only
// the rows that changed).
func (r *rowScanner) view() cache.Row {
	r.buf = r.buf[:0]
	for _, c := range r.cols {
		r.buf = append(r.buf, c...)
	}
	all := unsafe.String(unsafe.SliceData(r.buf), len(r.buf))
	if r.vals == nil {
		r.vals = make([]string, len(r.cols)-1)
	}
	row := cache.Row{Key: all[:len(r.cols[0])], Values: r.vals}
	off := len(r.cols[0])
	for i, c := range r.cols[1:] {
		row.Values[i] = all[off : off+len(c)]
		off += len(c)
	}
	row.Sum = cache.RowSum(row.Key, row.Values)
	return row
}

// row returns the row scanned last, freshly allocated.
func (r *rowScanner) row() cache.Row {
	r.buf = r.buf[:0]
	for _, c := range r.cols {
		r.buf = append(r.buf, c...)
	}
	all := string(r.buf)
	row := cache.Row{Key: all[:len(r.cols[0])], Values: make([]string, len(r.cols)-1)}
	off := len(r.cols[0])
	for i, c := range r.cols[1:] {
		row.Values[i] = all[off : off+len(c)]
		off += len(c)
	}
	row.Sum = cache.RowSum(row.Key, row.Values)
	return row
}

// Snapshot streams every row to fn in key order and returns the database clock read before
// the first page. It first checks the mapping (CheckMapping without the updated column), so
// a table or column dropped since start-up fails with the *MappingError that names it. It
// reads by keyset pagination (WHERE key > last ORDER BY key LIMIT PageSize), each page its
// own short statement, so no transaction stays open and a row written meanwhile is either
// read or newer than the watermark. The Row given to fn is valid only during the call (its
// memory holds the next row after it): fn copies what it keeps.
func (s *MySQL) Snapshot(ctx context.Context, fn func(cache.Row) error) (time.Time, error) {
	if err := s.checkMapping(ctx, false); err != nil && !isWarning(err) {
		return time.Time{}, mappingOr(err, "store: snapshot: check mapping: %w")
	}
	wm, err := s.clock(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("store: snapshot: read clock: %w", err)
	}
	sc := newRowScanner(s.nvalues)
	var lastKey []byte // the key of the row fn saw last, for the next page
	var last string
	first := true
	each := func() error {
		row := sc.view()
		lastKey = append(lastKey[:0], row.Key...)
		return fn(row)
	}
	for {
		var n int
		if first {
			n, err = s.page(ctx, s.q.snapshotFirst, []any{s.pageSize}, sc.dest, each)
		} else {
			n, err = s.page(ctx, s.q.snapshotAt, []any{last, s.pageSize}, sc.dest, each)
		}
		last = string(lastKey)
		if err != nil {
			err = s.explain(ctx, err, false)
			if first {
				return time.Time{}, mappingOr(err, "store: snapshot: first page: %w")
			}
			return time.Time{}, mappingOr(err, "store: snapshot: page after %q: %w", last)
		}
		if n < s.pageSize {
			return wm, nil
		}
		first = false
	}
}

// Keys streams every key of the table in key order, by keyset pagination.
func (s *MySQL) Keys(ctx context.Context, fn func(key string) error) error {
	var raw sql.RawBytes
	dest := []any{&raw}
	var last string
	first := true
	each := func() error {
		last = string(raw)
		return fn(last)
	}
	for {
		var n int
		var err error
		if first {
			n, err = s.page(ctx, s.q.keysFirst, []any{s.pageSize}, dest, each)
		} else {
			n, err = s.page(ctx, s.q.keysAt, []any{last, s.pageSize}, dest, each)
		}
		if err != nil {
			return fmt.Errorf("store: keys after %q: %w", last, err)
		}
		if n < s.pageSize {
			return nil
		}
		first = false
	}
}

// Get returns the row whose key normalises (cache.Key) to key, or cache.ErrNotFound. The
// index finds candidates by the key column's collation; a candidate counts only if its
// normalised form equals key exactly, so a collation looser than cache.Key (accents, ß)
// cannot answer for another workpiece.
func (s *MySQL) Get(ctx context.Context, key string) (cache.Row, error) {
	sc := newRowScanner(s.nvalues)
	var found cache.Row
	ok := false
	var nk []byte
	each := func() error {
		if ok {
			return nil
		}
		nk = cache.AppendKey(nk[:0], sc.cols[0])
		if string(nk) == key {
			found, ok = sc.row(), true
		}
		return nil
	}
	if _, err := s.page(ctx, s.q.get, []any{key}, sc.dest, each); err != nil {
		return cache.Row{}, mappingOr(s.explain(ctx, err, false), "store: get %q: %w", key)
	}
	if !ok {
		return cache.Row{}, cache.ErrNotFound
	}
	return found, nil
}

// fmtTime formats a watermark for error messages.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "the beginning"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000000Z")
}
