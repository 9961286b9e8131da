package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

// openSource opens a MySQL source on dsn with cfg's other fields, closed when tb ends.
func openSource(tb testing.TB, dsn string, cfg MySQLConfig) *MySQL {
	tb.Helper()
	cfg.DSN = dsn
	s, err := OpenMySQL(cfg)
	if err != nil {
		tb.Fatalf("OpenMySQL: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// readOnlyDSN creates an account that may only SELECT the default table of rootDSN's
// database and returns a DSN for it with the given password.
func readOnlyDSN(tb testing.TB, srv *mariadbtest.Server, rootDSN, password string) string {
	tb.Helper()
	cfg, err := mysql.ParseDSN(rootDSN)
	if err != nil {
		tb.Fatal(err)
	}
	user := "ro_" + cfg.DBName
	srv.Exec(tb, "",
		"CREATE USER '"+user+"'@'%' IDENTIFIED BY '"+password+"'",
		"GRANT SELECT ON `"+cfg.DBName+"`.`"+DefaultTable+"` TO '"+user+"'@'%'")
	tb.Cleanup(func() {
		if srv.Running() {
			srv.Exec(tb, "", "DROP USER IF EXISTS '"+user+"'@'%'")
		}
	})
	cfg.User, cfg.Passwd = user, password
	return cfg.FormatDSN()
}

// snapshotRows runs Snapshot and returns its rows by key, failing on a key seen twice.
func snapshotRows(tb testing.TB, s *MySQL) (map[string]string, time.Time) {
	tb.Helper()
	got := map[string]string{}
	wm, err := s.Snapshot(testCtx(tb), func(r cache.Row) error {
		if _, dup := got[r.Key]; dup {
			return fmt.Errorf("key %q delivered twice", r.Key)
		}
		if len(r.Values) != 1 {
			return fmt.Errorf("key %q: got %d values, want 1", r.Key, len(r.Values))
		}
		got[strings.Clone(r.Key)] = strings.Clone(r.Values[0])
		return nil
	})
	if err != nil {
		tb.Fatalf("Snapshot: %v", err)
	}
	return got, wm
}

// changes runs Changes and returns the rows in delivery order.
func changes(tb testing.TB, s *MySQL, since time.Time) ([]cache.Row, time.Time) {
	tb.Helper()
	var rows []cache.Row
	next, err := s.Changes(testCtx(tb), since, func(r cache.Row) error {
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		tb.Fatalf("Changes: %v", err)
	}
	return rows, next
}

func TestSnapshotEveryRowOnce(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	tests := []struct {
		name     string
		rows     int
		pageSize int
	}{
		{"100k rows", 100_000, 997},
		{"page of 7", 1000, 7},
		{"page of 1", 20, 1},
		{"page divides rows", 1000, 100},
		{"page equals rows", 50, 50},
		{"page exceeds rows", 50, 51},
		{"empty table", 0, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn, _ := seededDB(t, srv, tt.rows)
			s := openSource(t, dsn, MySQLConfig{PageSize: tt.pageSize})
			before := time.Now()
			got, wm := snapshotRows(t, s)
			if len(got) != tt.rows {
				t.Fatalf("got %d rows, want %d", len(got), tt.rows)
			}
			for i := range tt.rows {
				k, v := DemoRow(i)
				if got[k] != v {
					t.Fatalf("row %d: got %q → %q, want %q", i, k, got[k], v)
				}
			}
			// The watermark is the database clock in UTC: near the test's own clock.
			if d := wm.Sub(before); d < -time.Minute || d > time.Minute {
				t.Fatalf("got watermark %s, want near %s", wm, before.UTC())
			}
		})
	}
}

func TestChanges(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 20)
	ctx := testCtx(t)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The root pool writes explicit stamps in UTC too, so they compare with watermarks.
	exec("SET time_zone = '+00:00'")
	db.SetMaxOpenConns(1)
	exec("UPDATE workpiece_location SET updated_at = '2020-01-01 00:00:00'")

	const overlap = 5 * time.Second
	s := openSource(t, dsn, MySQLConfig{PageSize: 3, Overlap: overlap})
	_, wm0 := snapshotRows(t, s)

	t.Run("old rows not sent", func(t *testing.T) {
		rows, _ := changes(t, s, wm0)
		if len(rows) != 0 {
			t.Fatalf("got %d rows (first %q), want none", len(rows), rows[0].Key)
		}
	})

	k1, _ := DemoRow(5)
	exec("UPDATE workpiece_location SET location = '总装车间Z区1排' WHERE part_no = ?", k1)
	exec("INSERT INTO workpiece_location (part_no, location) VALUES ('NEW-1', '成品库9号')")
	var wm1 time.Time
	t.Run("update and insert", func(t *testing.T) {
		var rows []cache.Row
		rows, wm1 = changes(t, s, wm0)
		got := map[string]string{}
		for _, r := range rows {
			got[strings.Clone(r.Key)] = strings.Clone(r.Values[0])
		}
		want := map[string]string{k1: "总装车间Z区1排", "NEW-1": "成品库9号"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		if !wm1.After(wm0) {
			t.Fatalf("got next watermark %s, want after %s", wm1, wm0)
		}
	})

	// Rows a refresh with watermark wm1 could not have seen: stamped at wm1's very
	// microsecond (more than a page of them), stamped before wm1 but committed after it (a
	// late transaction within the overlap), and one stamped before the overlap window.
	stamp := func(key string, at time.Time) {
		t.Helper()
		exec("UPDATE workpiece_location SET updated_at = ? WHERE part_no = ?", at.UTC().Format("2006-01-02 15:04:05.999999"), key)
	}
	var same []string
	for i := 10; i < 15; i++ {
		k, _ := DemoRow(i)
		stamp(k, wm1)
		same = append(same, k)
	}
	late, _ := DemoRow(15)
	stamp(late, wm1.Add(-overlap+time.Second))
	tooOld, _ := DemoRow(16)
	stamp(tooOld, wm1.Add(-overlap-time.Second))

	t.Run("boundary, late commit and overlap limit", func(t *testing.T) {
		rows, _ := changes(t, s, wm1)
		count := map[string]int{}
		for _, r := range rows {
			count[r.Key]++
		}
		for _, k := range append(same, late, k1, "NEW-1") {
			if count[k] != 1 {
				t.Errorf("key %q: got %d deliveries, want 1", k, count[k])
			}
		}
		if count[tooOld] != 0 {
			t.Errorf("key %q stamped before the overlap: got %d deliveries, want 0", tooOld, count[tooOld])
		}
		if len(rows) != len(same)+3 {
			t.Errorf("got %d rows, want %d", len(rows), len(same)+3)
		}
		// Delivery is in (updated, key) order: the late row first, the equal stamps last.
		if rows[0].Key != late {
			t.Errorf("got first %q, want the oldest stamp %q", rows[0].Key, late)
		}
	})

	t.Run("from the beginning", func(t *testing.T) {
		rows, _ := changes(t, s, time.Time{})
		if len(rows) != 21 {
			t.Fatalf("got %d rows, want all 21", len(rows))
		}
	})
}

func TestKeys(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	tests := []struct {
		name           string
		rows, pageSize int
	}{
		{"page of 7", 1000, 7},
		{"one page", 10, 5000},
		{"empty", 0, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn, _ := seededDB(t, srv, tt.rows)
			s := openSource(t, dsn, MySQLConfig{PageSize: tt.pageSize})
			seen := map[string]int{}
			if err := s.Keys(testCtx(t), func(k string) error { seen[k]++; return nil }); err != nil {
				t.Fatal(err)
			}
			if len(seen) != tt.rows {
				t.Fatalf("got %d keys, want %d", len(seen), tt.rows)
			}
			for i := range tt.rows {
				k, _ := DemoRow(i)
				if seen[k] != 1 {
					t.Fatalf("key %q: got %d, want 1", k, seen[k])
				}
			}
		})
	}
}

func TestGet(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	dsn, db := seededDB(t, srv, 100)
	if _, err := db.ExecContext(testCtx(t), "INSERT INTO workpiece_location (part_no, location) VALUES ('Ｂ9-００1', '冲压车间2号'), ('é1', '备件库1号')"); err != nil {
		t.Fatal(err)
	}
	s := openSource(t, dsn, MySQLConfig{})
	tests := []struct {
		name, key   string
		wantKey     string // "" for not found
		wantLoction string
	}{
		{"exact", "18-546", "18-546", "车体新厂房3号"},
		{"stored upper case", cache.Key("A7-001"), "A7-001", "总装车间A区12排"},
		{"stored full width", cache.Key("Ｂ9-００1"), "Ｂ9-００1", "冲压车间2号"},
		{"not found", "zz-999", "", ""},
		{"collation match but other key", "e1", "", ""},
		{"accented key itself", "é1", "é1", "备件库1号"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Get(testCtx(t), tt.key)
			if tt.wantKey == "" {
				if !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("got %+v, %v, want cache.ErrNotFound", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Key != tt.wantKey || len(got.Values) != 1 || got.Values[0] != tt.wantLoction {
				t.Fatalf("got %q %q, want %q [%q]", got.Key, got.Values, tt.wantKey, tt.wantLoction)
			}
		})
	}
}

func TestCustomMapping(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	dsn := srv.CreateDatabase(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, cfg.DBName,
		"CREATE TABLE bays (teil VARCHAR(32) PRIMARY KEY, hall VARCHAR(20) NOT NULL, bay VARCHAR(20) NULL, "+
			"changed TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (changed))",
		"INSERT INTO bays (teil, hall, bay) VALUES ('T-1', '总装车间', 'A12'), ('T-2', '焊装车间', NULL)")
	// The source connects without a default database: the table is qualified.
	cfg.DBName = ""
	s := openSource(t, cfg.FormatDSN(), MySQLConfig{Mapping: Mapping{
		Table: dsnDB(t, dsn) + ".bays", KeyColumn: "teil", ValueColumns: []string{"hall", "bay"}, UpdatedColumn: "changed",
	}})
	var got []string
	wm, err := s.Snapshot(testCtx(t), func(r cache.Row) error {
		got = append(got, r.Key+"="+strings.Join(r.Values, "|"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "T-1=总装车间|A12 T-2=焊装车间|"; strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, " "), want)
	}
	srv.Exec(t, dsnDB(t, dsn), "UPDATE bays SET bay = 'B3' WHERE teil = 'T-2'")
	rows, _ := changes(t, s, wm)
	// T-1 may come again (written within the overlap); T-2 is the newest, so last.
	if len(rows) == 0 || rows[len(rows)-1].Key != "T-2" || rows[len(rows)-1].Values[1] != "B3" {
		t.Fatalf("got %v, want T-2 with bay B3 last", rows)
	}
	if r, err := s.Get(testCtx(t), "t-1"); err != nil || r.Values[0] != "总装车间" {
		t.Fatalf("Get: got %v, %v, want 总装车间", r, err)
	}
}

func dsnDB(tb testing.TB, dsn string) string {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg.DBName
}

func TestReadOnlyAccount(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	root, _ := seededDB(t, srv, 50)
	dsn := readOnlyDSN(t, srv, root, "ro-pass")
	s := openSource(t, dsn, MySQLConfig{PageSize: 7})
	ctx := testCtx(t)

	// The account really is read-only, so what follows proves SELECT suffices.
	if _, err := s.DB().ExecContext(ctx, "UPDATE workpiece_location SET location = 'x'"); err == nil {
		t.Fatalf("got UPDATE allowed, want the account to be read-only")
	}
	rows, wm := snapshotRows(t, s)
	if len(rows) != 50 {
		t.Fatalf("Snapshot: got %d rows, want 50", len(rows))
	}
	if _, err := s.Changes(ctx, wm, func(cache.Row) error { return nil }); err != nil {
		t.Fatalf("Changes: %v", err)
	}
	n := 0
	if err := s.Keys(ctx, func(string) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("Keys: got %d, %v, want 50 keys", n, err)
	}
	if r, err := s.Get(ctx, DemoKey); err != nil || r.Values[0] != DemoLocation {
		t.Fatalf("Get: got %+v, %v, want %q", r, err, DemoLocation)
	}
}

func TestSessionSettings(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	root, _ := seededDB(t, srv, 1)
	s := openSource(t, readOnlyDSN(t, srv, root, "pw"), MySQLConfig{})
	var tz, charset string
	q := "SELECT @@session.time_zone, @@session.character_set_connection"
	if err := s.DB().QueryRowContext(testCtx(t), q).Scan(&tz, &charset); err != nil {
		t.Fatal(err)
	}
	if tz != "+00:00" || charset != "utf8mb4" {
		t.Fatalf("got time_zone %q charset %q, want %q %q", tz, charset, "+00:00", "utf8mb4")
	}
	if got := s.DB().Stats().MaxOpenConnections; got != 4 { // one table: 2 + 2 (pool.go)
		t.Fatalf("got MaxOpenConnections %d, want 4", got)
	}
}

// TestQueryTimeout shows a stuck database (a table locked by another session) costs a
// call at most QueryTimeout, and the source works once the lock is gone.
func TestQueryTimeout(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	dsn, _ := seededDB(t, srv, 10)
	locker, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	ctx := testCtx(t)
	conn, err := locker.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "LOCK TABLES workpiece_location WRITE"); err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	s := openSource(t, dsn, MySQLConfig{QueryTimeout: timeout})
	start := time.Now()
	_, err = s.Snapshot(ctx, func(cache.Row) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "store: snapshot: ") {
		t.Fatalf("got %v, want a snapshot error wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > timeout+2*time.Second {
		t.Fatalf("got failure after %s, want about %s", d, timeout)
	}
	if _, err := conn.ExecContext(ctx, "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	if rows, _ := snapshotRows(t, s); len(rows) != 10 {
		t.Fatalf("after unlock: got %d rows, want 10", len(rows))
	}
}

func TestMySQLDown(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Start(t)
	root, _ := seededDB(t, srv, 30)
	const password = "s3cret-Pw"
	dsn := readOnlyDSN(t, srv, root, password)
	up := openSource(t, dsn, MySQLConfig{PageSize: 7, QueryTimeout: 2 * time.Second})
	if rows, _ := snapshotRows(t, up); len(rows) != 30 {
		t.Fatalf("got %d rows, want 30", len(rows))
	}

	srv.Kill(t)
	// Opening needs no database: the service starts while MySQL is down.
	down := openSource(t, dsn, MySQLConfig{PageSize: 7, QueryTimeout: 2 * time.Second})
	if strings.Contains(down.String(), password) {
		t.Fatalf("got String %q, want no password", down.String())
	}

	calls := []struct {
		name, prefix string
		call         func(ctx context.Context, s *MySQL) error
	}{
		{"snapshot", "store: snapshot: ", func(ctx context.Context, s *MySQL) error {
			_, err := s.Snapshot(ctx, func(cache.Row) error { return nil })
			return err
		}},
		{"changes", "store: changes since ", func(ctx context.Context, s *MySQL) error {
			_, err := s.Changes(ctx, time.Now(), func(cache.Row) error { return nil })
			return err
		}},
		{"keys", "store: keys ", func(ctx context.Context, s *MySQL) error {
			return s.Keys(ctx, func(string) error { return nil })
		}},
		{"get", "store: get ", func(ctx context.Context, s *MySQL) error {
			_, err := s.Get(ctx, DemoKey)
			return err
		}},
	}
	for _, src := range []struct {
		name string
		s    *MySQL
	}{{"used before", up}, {"opened while down", down}} {
		for _, c := range calls {
			t.Run(src.name+"/"+c.name, func(t *testing.T) {
				start := time.Now()
				err := c.call(context.Background(), src.s)
				if err == nil {
					t.Fatalf("got no error with MySQL down")
				}
				if !strings.HasPrefix(err.Error(), c.prefix) {
					t.Fatalf("got %q, want prefix %q", err, c.prefix)
				}
				if strings.Contains(err.Error(), password) {
					t.Fatalf("got %q, want no password", err)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Fatalf("got failure after %s, want it within the timeouts", d)
				}
			})
		}
	}

	srv.Restart(t)
	for _, src := range []*MySQL{up, down} {
		for _, c := range calls {
			if err := c.call(context.Background(), src); err != nil {
				t.Fatalf("%s after restart: %v", c.name, err)
			}
		}
		if rows, _ := snapshotRows(t, src); len(rows) != 30 {
			t.Fatalf("after restart: got %d rows, want 30", len(rows))
		}
	}
}

func TestOpenMySQL(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	tests := []struct {
		name    string
		cfg     MySQLConfig
		wantErr string // prefix; "" for success
		desc    string
	}{
		{"defaults", MySQLConfig{DSN: "loader:pw@tcp(db.plant:3306)/plant"}, "",
			"mysql loader@tcp(db.plant:3306)/plant table workpiece_location"},
		{"custom table", MySQLConfig{DSN: "loader:pw@tcp(db:3307)/plant", Mapping: Mapping{Table: "mes.bays"}}, "",
			"mysql loader@tcp(db:3307)/plant table mes.bays"},
		{"empty DSN", MySQLConfig{}, "store: open mysql: DSN is empty", ""},
		{"bad DSN", MySQLConfig{DSN: "loader:pw@tcp(db"}, "store: open mysql: parse DSN: ", ""},
		{"injected key", MySQLConfig{DSN: "u@/d", Mapping: Mapping{KeyColumn: "x; DROP TABLE"}}, "store: mapping: KeyColumn: ", ""},
		{"negative page", MySQLConfig{DSN: "u@/d", PageSize: -1}, "store: open mysql: PageSize ", ""},
		{"negative overlap", MySQLConfig{DSN: "u@/d", Overlap: -time.Second}, "store: open mysql: Overlap ", ""},
		{"negative timeout", MySQLConfig{DSN: "u@/d", QueryTimeout: -time.Second}, "store: open mysql: QueryTimeout ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenMySQL(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error %q…", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := s.String(); got != tt.desc {
				t.Fatalf("got %q, want %q", got, tt.desc)
			}
		})
	}
}

// BenchmarkSnapshot1M measures the warm: one Snapshot of 1,000,000 seeded rows with the
// default page size. Seeding is not timed. Run with -benchtime=1x.
func BenchmarkSnapshot1M(b *testing.B) {
	const n = 1_000_000
	srv := mariadbtest.Shared(b)
	dsn := srv.CreateDatabase(b)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	if err := Seed(testCtx(b), db, n); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d rows in %s", n, time.Since(start).Round(time.Millisecond))
	s := openSource(b, dsn, MySQLConfig{})

	var rows, bytes int64
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rows, bytes = 0, 0
		_, err := s.Snapshot(context.Background(), func(r cache.Row) error {
			rows++
			bytes += int64(len(r.Key) + len(r.Values[0]))
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if rows != n {
			b.Fatalf("got %d rows, want %d", rows, n)
		}
	}
	b.SetBytes(bytes)
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// TestMySQLDriverLogsToSlog: the driver's own message about a connection that broke
// mid-handshake goes to the configured slog logger, not to stderr outside the log format.
func TestMySQLDriverLogsToSlog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close() // hang up before the handshake
		}
	}()
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil))
	s := openSource(t, "ro:pw@tcp("+ln.Addr().String()+")/plant", MySQLConfig{Logger: log})
	if _, err := s.Snapshot(context.Background(), func(cache.Row) error { return nil }); err == nil {
		t.Fatal("snapshot through a server that hangs up: no error")
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, `"component":"mysql"`) || !strings.Contains(out, "mysql driver: ") {
		t.Fatalf("the driver's message is not in the slog output: %q", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
