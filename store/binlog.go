package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	vmysql "vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/vt/log"
	"vitess.io/vitess/go/vt/vttls"

	"wxlookup/cache"
)

// Defaults of BinlogConfig, used for zero fields.
const (
	// DefaultHeartbeat is how often an idle server sends a heartbeat, so that an idle
	// stream can be told from a stalled one.
	DefaultHeartbeat = time.Second
	// DefaultMaxChangeRows bounds the rows of one Change: a larger transaction is
	// delivered in several Changes (see Binlog.Follow).
	DefaultMaxChangeRows = 10000
)

// BinlogConfig configures OpenBinlog: the MySQL source that snapshots the table, and the
// replication connection that follows its binary log.
type BinlogConfig struct {
	// MySQLConfig configures the source that reads the table (Snapshot, Get, …), exactly
	// as for OpenMySQL. Its Mapping names the table whose row events are applied: the
	// database of Mapping.Table, or of DSN when the table is unqualified. Its Logger also
	// receives the replication client's (vitess) messages.
	MySQLConfig
	// BinlogDSN is a go-sql-driver/mysql DSN of an account with REPLICATION SLAVE and
	// REPLICATION CLIENT on *.*; empty means MySQLConfig.DSN. Only its address, user,
	// password, tls (true, skip-verify, preferred or false) and timeouts are used; its
	// database is ignored.
	BinlogDSN string
	// ServerID is the server_id this client uses as a replica. It must differ from the
	// server's own and from every other replica's, including other wxlookup instances
	// behind a load balancer; DefaultServerID derives a stable one. 0 is refused.
	ServerID uint32
	// Heartbeat is the interval at which the server sends heartbeats while idle.
	Heartbeat time.Duration
	// MaxChangeRows is the most rows one Change carries, at least 2 (an update that
	// changes the key is two rows).
	MaxChangeRows int
}

// Binlog is the MySQL source with a change feed: it satisfies cache.Source through its
// embedded *MySQL and cache.Follower by reading the server's binary log as a replica
// does. It is safe for concurrent use; each Follow call has its own connection.
type Binlog struct {
	*MySQL
	admin     *sql.DB // the replication account: positions, checks
	params    vmysql.ConnParams
	table     qualifiedTable
	mapping   Mapping
	loc       *time.Location // zone in which the snapshot reads TIMESTAMP columns
	serverID  uint32
	heartbeat time.Duration
	maxRows   int
	timeout   time.Duration // of each statement on admin
	log       *slog.Logger
}

var (
	_ cache.Source   = (*Binlog)(nil)
	_ cache.Follower = (*Binlog)(nil)
)

// DefaultServerID returns a replica server_id derived from host (the host name) and port
// (the port the webhook listens on): the same on every start of one instance, different,
// with high probability, for instances on other hosts or ports. It is never 0 (refused by
// servers) or 1 (the id test servers and many single primaries use for themselves).
func DefaultServerID(host string, port int) uint32 {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(host) + ":" + strconv.Itoa(port)))
	return 2 + h.Sum32()%(1<<32-3) // 2 … 2³²−2
}

// OpenBinlog opens the MySQL source of cfg (as OpenMySQL does) and prepares to follow its
// binary log. Like OpenMySQL it does not connect; Check tells whether following can work.
func OpenBinlog(cfg BinlogConfig) (*Binlog, error) {
	if cfg.ServerID == 0 {
		return nil, errors.New("store: open binlog: ServerID is 0; choose a server_id unique among the server's replicas (DefaultServerID derives one)")
	}
	switch {
	case cfg.Heartbeat < 0:
		return nil, fmt.Errorf("store: open binlog: Heartbeat %s, want > 0", cfg.Heartbeat)
	case cfg.Heartbeat == 0:
		cfg.Heartbeat = DefaultHeartbeat
	}
	switch {
	case cfg.MaxChangeRows < 0 || cfg.MaxChangeRows == 1:
		return nil, fmt.Errorf("store: open binlog: MaxChangeRows %d, want ≥ 2", cfg.MaxChangeRows)
	case cfg.MaxChangeRows == 0:
		cfg.MaxChangeRows = DefaultMaxChangeRows
	}
	src, err := OpenMySQL(cfg.MySQLConfig)
	if err != nil {
		return nil, err
	}
	b, err := newBinlog(src, cfg)
	if err != nil {
		src.Close()
		return nil, err
	}
	return b, nil
}

func newBinlog(src *MySQL, cfg BinlogConfig) (*Binlog, error) {
	main, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: open binlog: parse DSN: %w", err)
	}
	m := cfg.Mapping.WithDefaults()
	t := qualifiedTable{db: main.DBName, table: m.Table}
	if db, table, ok := strings.Cut(m.Table, "."); ok {
		t = qualifiedTable{db: db, table: table}
	}
	if t.db == "" {
		return nil, fmt.Errorf("store: open binlog: table %s has no database: qualify it (db.table) or name the database in the DSN", m.Table)
	}
	// The snapshot reads TIMESTAMP columns in its session zone: '+00:00' unless the DSN sets
	// time_zone, when its loc names the same zone (OpenMySQL).
	loc := time.UTC
	if _, ok := main.Params["time_zone"]; ok && main.Loc != nil {
		loc = main.Loc
	}

	timeout := cfg.QueryTimeout
	if timeout == 0 {
		timeout = DefaultQueryTimeout
	}

	dsn := cfg.BinlogDSN
	if dsn == "" {
		dsn = cfg.DSN
	}
	dc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open binlog: parse BinlogDSN: %w", err)
	}
	params, err := replicaConnParams(dc)
	if err != nil {
		return nil, fmt.Errorf("store: open binlog: BinlogDSN: %w", err)
	}
	dc.DBName = "" // the replication account needs no database, and may not see the table's
	if dc.Timeout == 0 {
		dc.Timeout = defaultDialTimeout
	}
	if dc.ReadTimeout == 0 {
		dc.ReadTimeout = defaultReadTimeout
	}
	if dc.WriteTimeout == 0 {
		dc.WriteTimeout = defaultWriteTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	} else {
		dc.Logger = driverLogger{logger}
		// The replication client logs through vitess's own logger, one per process: the
		// last Binlog opened with a Logger receives its messages.
		log.SwapLogger(logger.With("component", "vitess"))
	}
	conn, err := mysql.NewConnector(dc)
	if err != nil {
		return nil, fmt.Errorf("store: open binlog: %w", err)
	}
	admin := sql.OpenDB(conn)
	admin.SetMaxOpenConns(2)
	admin.SetMaxIdleConns(1)
	admin.SetConnMaxLifetime(connMaxLifetime)
	admin.SetConnMaxIdleTime(connMaxIdleTime)

	return &Binlog{
		MySQL:     src,
		admin:     admin,
		params:    params,
		table:     t,
		mapping:   m,
		loc:       loc,
		serverID:  cfg.ServerID,
		heartbeat: cfg.Heartbeat,
		maxRows:   cfg.MaxChangeRows,
		timeout:   timeout,
		log:       logger.With("component", "binlog"),
	}, nil
}

// replicaConnParams translates a go-sql-driver/mysql DSN to the replication client's parameters.
func replicaConnParams(dc *mysql.Config) (vmysql.ConnParams, error) {
	p := vmysql.ConnParams{Uname: dc.User, Pass: dc.Passwd, ConnectTimeoutMs: uint64(defaultDialTimeout.Milliseconds())}
	if dc.Timeout > 0 {
		p.ConnectTimeoutMs = uint64(dc.Timeout.Milliseconds())
	}
	switch dc.Net {
	case "unix":
		p.UnixSocket = dc.Addr
	case "tcp", "tcp6", "":
		host, port, err := net.SplitHostPort(dc.Addr)
		if err != nil {
			host, port = dc.Addr, "3306"
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			return p, fmt.Errorf("port %q: %w", port, err)
		}
		p.Host, p.Port, p.ServerName = host, n, host
	default:
		return p, fmt.Errorf("network %q is not supported, want tcp or unix", dc.Net)
	}
	switch strings.ToLower(dc.TLSConfig) {
	case "", "false":
		p.SslMode = vttls.Disabled
	case "true":
		p.SslMode = vttls.VerifyIdentity
	case "skip-verify":
		p.SslMode = vttls.Required
	case "preferred":
		p.SslMode = vttls.Preferred
	default:
		return p, fmt.Errorf("tls=%s: a registered TLS config is not supported here, use true, skip-verify, preferred or false", dc.TLSConfig)
	}
	return p, nil
}

// ServerID returns the server_id this source follows the binary log with.
func (b *Binlog) ServerID() uint32 { return b.serverID }

// String describes the source without its password, for example "mysql
// loader@tcp(db:3306)/plant table workpiece_location, binlog as server_id 12345".
func (b *Binlog) String() string {
	return b.MySQL.String() + ", binlog as server_id " + strconv.FormatUint(uint64(b.serverID), 10)
}

// Close closes the connection pools. Follow calls in progress end with an error when
// their context is cancelled; Close does not wait for them.
func (b *Binlog) Close() error {
	return errors.Join(b.admin.Close(), b.MySQL.Close())
}

// formatCursor formats a binlog position as a cursor: "file:pos".
func formatCursor(file string, pos uint64) string {
	return file + ":" + strconv.FormatUint(pos, 10)
}

// parseCursor reads a cursor of formatCursor.
func parseCursor(c string) (string, uint32, error) {
	i := strings.LastIndexByte(c, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("store: binlog: cursor %q is not file:position", c)
	}
	pos, err := strconv.ParseUint(c[i+1:], 10, 32)
	if err != nil || pos < 4 {
		return "", 0, fmt.Errorf("store: binlog: cursor %q is not file:position", c)
	}
	return c[:i], uint32(pos), nil
}

// Position returns the end of the server's binary log as a cursor, "file:pos". It reads
// SHOW MASTER STATUS, or SHOW BINARY LOG STATUS where that is gone (MySQL 8.4), and needs
// REPLICATION CLIENT (MariaDB: BINLOG MONITOR).
func (b *Binlog) Position(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	file, pos, err := b.masterStatus(ctx, "SHOW MASTER STATUS")
	if mysqlErrorIs(err, 1064) { // ER_PARSE_ERROR: MySQL 8.4 renamed the statement
		file, pos, err = b.masterStatus(ctx, "SHOW BINARY LOG STATUS")
	}
	switch {
	case mysqlErrorIs(err, 1227): // ER_SPECIFIC_ACCESS_DENIED_ERROR
		return "", fmt.Errorf("store: binlog: position: %w (%s)", err, b.grantHint(ctx))
	case err != nil:
		return "", fmt.Errorf("store: binlog: position: %w", err)
	case file == "":
		return "", errors.New("store: binlog: position: the server has no binary log (log_bin is OFF)")
	}
	return formatCursor(file, pos), nil
}

// masterStatus runs query (SHOW MASTER STATUS or its new name) and returns its File and
// Position, or "" when the binary log is off (no row).
func (b *Binlog) masterStatus(ctx context.Context, query string) (string, uint64, error) {
	rows, err := b.admin.QueryContext(ctx, query)
	if err != nil {
		return "", 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", 0, err
	}
	if !rows.Next() {
		return "", 0, rows.Err()
	}
	vals := make([]sql.RawBytes, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	if err := rows.Scan(dest...); err != nil {
		return "", 0, err
	}
	var file string
	var pos uint64
	for i, c := range cols {
		switch strings.ToLower(c) {
		case "file":
			file = string(vals[i])
		case "position":
			if pos, err = strconv.ParseUint(string(vals[i]), 10, 64); err != nil {
				return "", 0, fmt.Errorf("%s: Position %q: %w", query, vals[i], err)
			}
		}
	}
	return file, pos, rows.Close()
}

// mysqlErrorIs reports whether err is the server error number n, from either driver.
func mysqlErrorIs(err error, n uint16) bool {
	if me, ok := errors.AsType[*mysql.MySQLError](err); ok {
		return me.Number == n
	}
	return false
}

// grantHint returns the statement that gives the replication account what it needs.
func (b *Binlog) grantHint(ctx context.Context) string {
	account := "'user'@'host'"
	var cur string
	if b.admin.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&cur) == nil {
		if user, host, ok := strings.Cut(cur, "@"); ok {
			account = "'" + user + "'@'" + host + "'"
		}
	}
	return "grant it: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO " + account
}
