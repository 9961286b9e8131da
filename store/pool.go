package store

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Connection defaults applied to a DSN that does not set them (timeout, readTimeout,
// writeTimeout), and the lifetime of pooled connections: recycled well before a typical
// wait_timeout or a proxy's idle cut-off.
const (
	defaultDialTimeout  = 5 * time.Second
	defaultReadTimeout  = 30 * time.Second
	defaultWriteTimeout = 30 * time.Second
	connMaxLifetime     = 3 * time.Minute
	connMaxIdleTime     = time.Minute
)

// The pool's size follows the number of tables using it (Pool.Table): each table's loader
// runs one statement at a time, and its read-through and reconcile add a few point reads,
// so a table needs about two connections; the pool allows 2 + 2 per table (4 for one, as
// a lone source always had) up to maxPoolConns, and keeps half of that idle. Past the cap,
// statements wait for a connection (each is short and bounded by QueryTimeout) rather than
// open more on the plant's database.
const (
	connsPerTable = 2
	maxPoolConns  = 16
)

// PoolConfig configures OpenPool.
type PoolConfig struct {
	// DSN is a go-sql-driver/mysql DSN, typically of an account that may only SELECT the
	// tables: user:password@tcp(host:3306)/plant.
	DSN string
	// Logger receives the driver's own messages (see MySQLConfig.Logger); nil leaves them
	// on the driver's default.
	Logger *slog.Logger
}

// Pool is one connection pool to a MySQL (or MariaDB) server shared by the sources of
// several tables (SPEC section 10: one connection pool serves every query). Make a source
// per table with Table; close the sources, then the Pool. Safe for concurrent use.
type Pool struct {
	db *sql.DB
	dc *mysql.Config // the DSN as adjusted

	mu     sync.Mutex
	tables int // sources made by Table and not closed
}

// OpenPool checks cfg.DSN and returns a pool for it. It does not connect.
//
// The DSN is adjusted for the loader: charset utf8mb4; parseTime; session time_zone
// '+00:00' read back in UTC, unless the DSN sets time_zone itself (then its loc must name
// the same zone); interpolateParams, so a page is one round trip; timeout, readTimeout and
// writeTimeout when unset; and connections with a lifetime.
func OpenPool(cfg PoolConfig) (*Pool, error) {
	if cfg.DSN == "" {
		return nil, errors.New("store: open mysql: DSN is empty")
	}
	dc, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: open mysql: parse DSN: %w", err)
	}
	collation := ""
	if strings.HasPrefix(dc.Collation, "utf8mb4_") {
		collation = dc.Collation
	}
	if err := dc.Apply(mysql.Charset("utf8mb4", collation)); err != nil {
		return nil, fmt.Errorf("store: open mysql: charset: %w", err)
	}
	dc.ParseTime = true
	dc.InterpolateParams = true
	if dc.Params == nil {
		dc.Params = map[string]string{}
	}
	if _, ok := dc.Params["time_zone"]; !ok {
		dc.Params["time_zone"] = "'+00:00'"
		dc.Loc = time.UTC
	}
	db, err := openDB("open mysql", dc, cfg.Logger)
	if err != nil {
		return nil, err
	}
	p := &Pool{db: db, dc: dc}
	p.resizeLocked()
	return p, nil
}

// openDB returns a handle on dc, with the connection settings the DSN leaves unset
// (timeout, readTimeout, writeTimeout) defaulted, the driver's messages sent to logger (nil
// leaves them on the driver's default), and connections recycled (connMaxLifetime,
// connMaxIdleTime). It does not connect; op names the caller's step in errors.
func openDB(op string, dc *mysql.Config, logger *slog.Logger) (*sql.DB, error) {
	if dc.Timeout == 0 {
		dc.Timeout = defaultDialTimeout
	}
	if dc.ReadTimeout == 0 {
		dc.ReadTimeout = defaultReadTimeout
	}
	if dc.WriteTimeout == 0 {
		dc.WriteTimeout = defaultWriteTimeout
	}
	if logger != nil {
		dc.Logger = driverLogger{logger}
	}
	conn, err := mysql.NewConnector(dc)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	db := sql.OpenDB(conn)
	db.SetConnMaxLifetime(connMaxLifetime)
	db.SetConnMaxIdleTime(connMaxIdleTime)
	return db, nil
}

// resizeLocked sizes the pool for the tables using it (at least one). The caller holds mu
// or has not shared p yet.
func (p *Pool) resizeLocked() {
	open := min(connsPerTable*(max(p.tables, 1)+1), maxPoolConns)
	p.db.SetMaxOpenConns(open)
	p.db.SetMaxIdleConns(open / 2)
}

// Table checks cfg and returns the source of one table on the pool. Closing the source
// leaves the pool open. Safe to call at any time, as queries are added.
func (p *Pool) Table(cfg TableConfig) (*MySQL, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := cfg.Mapping
	p.mu.Lock()
	p.tables++
	p.resizeLocked()
	p.mu.Unlock()
	return &MySQL{
		pool:     p,
		db:       p.db,
		dbName:   p.dc.DBName,
		desc:     p.String() + " table " + m.Table,
		m:        m,
		pageSize: cfg.PageSize,
		overlap:  cfg.Overlap,
		timeout:  cfg.QueryTimeout,
		nvalues:  len(m.ValueColumns),
		loc:      p.dc.Loc,
		q:        buildQueries(m),
		changing: make(chan struct{}, 1),
		sent:     newSentRows(maxSentRows),
	}, nil
}

// release stops counting a closed source of Table in the pool's size.
func (p *Pool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tables--
	p.resizeLocked()
}

// DB returns the connection pool, for Seed and tests.
func (p *Pool) DB() *sql.DB { return p.db }

// String describes the pool without its password, for example
// "mysql loader@tcp(db:3306)/plant".
func (p *Pool) String() string {
	user := p.dc.User
	if user != "" {
		user += "@"
	}
	return "mysql " + user + p.dc.Net + "(" + p.dc.Addr + ")/" + p.dc.DBName
}

// Close closes the pool: the calls of its sources in progress fail, and later ones too.
func (p *Pool) Close() error { return p.db.Close() }
