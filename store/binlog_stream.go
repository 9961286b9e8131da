package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	vmysql "vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/vt/log"
)

// BinlogStreamConfig configures OpenBinlogStream: the replication account and how the
// stream reads the binary log.
type BinlogStreamConfig struct {
	// DSN is the tables' DSN (PoolConfig.DSN): the replication account when BinlogDSN is
	// empty.
	DSN string
	// BinlogDSN, ServerID, Heartbeat and MaxChangeRows are as in BinlogConfig.
	BinlogDSN     string
	ServerID      uint32
	Heartbeat     time.Duration
	MaxChangeRows int
	// QueryTimeout bounds each statement of the replication account (Position, Check).
	QueryTimeout time.Duration
	// Logger receives the stream's messages and the replication client's (vitess); nil
	// discards them.
	Logger *slog.Logger
}

// withDefaults returns cfg with zero fields defaulted, or the error naming the first
// invalid setting.
func (cfg BinlogStreamConfig) withDefaults() (BinlogStreamConfig, error) {
	if cfg.ServerID == 0 {
		return cfg, errors.New("store: open binlog: ServerID is 0; choose a server_id unique among the server's replicas (DefaultServerID derives one)")
	}
	if err := orDefault("open binlog", "Heartbeat", &cfg.Heartbeat, DefaultHeartbeat, 1); err != nil {
		return cfg, err
	}
	if err := orDefault("open binlog", "MaxChangeRows", &cfg.MaxChangeRows, DefaultMaxChangeRows, 2); err != nil {
		return cfg, err
	}
	if err := orDefault("open binlog", "QueryTimeout", &cfg.QueryTimeout, DefaultQueryTimeout, 1); err != nil {
		return cfg, err
	}
	if cfg.BinlogDSN == "" {
		cfg.BinlogDSN = cfg.DSN
	}
	if cfg.BinlogDSN == "" {
		return cfg, errors.New("store: open binlog: BinlogDSN and DSN are empty")
	}
	return cfg, nil
}

// BinlogStream follows a server's binary log over one replication connection for every
// table of the service (SPEC section 10: one binlog stream serves all). Each table's
// Binlog (Table) is a cache.Follower whose Follow calls subscribe to the stream; the
// stream connects while any is subscribed, reads the log from the oldest position one of
// them asked for, and hands each the committed changes of its own table after its own
// cursor (binlog_follow.go). Safe for concurrent use.
type BinlogStream struct {
	admin     *sql.DB // the replication account: positions, checks
	params    vmysql.ConnParams
	serverID  uint32
	heartbeat time.Duration
	maxRows   int
	timeout   time.Duration // of each statement on admin
	log       *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reader goroutine (run)

	mu       sync.Mutex
	tables   []*Binlog       // made by Table and not closed: what Check checks
	subs     []*subscription // the Follow calls in progress
	gen      uint64          // grows whenever subs changes
	running  bool            // the reader goroutine runs
	stopRead func()          // ends the connection being read (nil when none)
	dumps    atomic.Int64    // replication connections opened (Dumps)
}

// OpenBinlogStream checks cfg and returns a stream. It does not connect: the first
// Follow of one of its tables does.
func OpenBinlogStream(cfg BinlogStreamConfig) (*BinlogStream, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	dc, err := mysql.ParseDSN(cfg.BinlogDSN)
	if err != nil {
		return nil, fmt.Errorf("store: open binlog: parse BinlogDSN: %w", err)
	}
	params, err := replicaConnParams(dc)
	if err != nil {
		return nil, fmt.Errorf("store: open binlog: BinlogDSN: %w", err)
	}
	dc.DBName = "" // the replication account needs no database, and may not see the tables'
	admin, err := openDB("open binlog", dc, cfg.Logger)
	if err != nil {
		return nil, err
	}
	admin.SetMaxOpenConns(2)
	admin.SetMaxIdleConns(1)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	} else {
		// The replication client logs through vitess's own logger, one per process: the
		// last stream opened with a Logger receives its messages.
		log.SwapLogger(logger.With("component", "vitess"))
	}
	s := &BinlogStream{
		admin:     admin,
		params:    params,
		serverID:  cfg.ServerID,
		heartbeat: cfg.Heartbeat,
		maxRows:   cfg.MaxChangeRows,
		timeout:   cfg.QueryTimeout,
		log:       logger.With("component", "binlog"),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Table returns the Binlog of src's table on the stream: a cache.Source (src) and a
// cache.Follower fed by the stream. The Binlog takes src over (its Close closes src).
// Tables may be added while others follow (a query added at run time).
func (s *BinlogStream) Table(src *MySQL) (*Binlog, error) {
	b, err := newBinlog(s, src)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables = append(s.tables, b)
	return b, nil
}

// drop takes a closed Binlog off the tables Check checks.
func (s *BinlogStream) drop(b *Binlog) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tables = slices.DeleteFunc(s.tables, func(x *Binlog) bool { return x == b })
}

// ServerID returns the server_id the stream follows the binary log with.
func (s *BinlogStream) ServerID() uint32 { return s.serverID }

// Dumps returns how many replication connections the stream has opened so far: one per
// outage or restart (see binlog_follow.go), not one per table.
func (s *BinlogStream) Dumps() int64 { return s.dumps.Load() }

// Close ends the stream: the Follow calls in progress return an error, and the
// replication connection and the account's pool are closed. It waits for the reader.
func (s *BinlogStream) Close() error {
	s.cancel()
	s.wg.Wait()
	return s.admin.Close()
}

// stallAfter is how long the stream waits for any event, heartbeats included, before it
// takes the connection for dead.
func (s *BinlogStream) stallAfter() time.Duration { return 5*s.heartbeat + 5*time.Second }

// binlogPos is a position in the binary log: a log file and an offset in it.
type binlogPos struct {
	file string
	pos  uint64
}

// cursor formats p as a cursor: "file:pos".
func (p binlogPos) cursor() string { return p.file + ":" + strconv.FormatUint(p.pos, 10) }

// before reports whether p comes before q in the log. Log files are ordered by their
// numeric extension (wxlookup-bin.000009 < wxlookup-bin.000010 < wxlookup-bin.1000000).
func (p binlogPos) before(q binlogPos) bool {
	if p.file != q.file {
		return logFileLess(p.file, q.file)
	}
	return p.pos < q.pos
}

// logFileLess orders binary log file names: by base name, then by the number after the
// last dot.
func logFileLess(a, b string) bool {
	i, j := strings.LastIndexByte(a, '.'), strings.LastIndexByte(b, '.')
	if i < 0 || j < 0 || a[:i] != b[:j] || len(a)-i == len(b)-j {
		return a < b
	}
	return len(a)-i < len(b)-j
}

// formatCursor formats a binlog position as a cursor: "file:pos".
func formatCursor(file string, pos uint64) string { return binlogPos{file, pos}.cursor() }

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
func (s *BinlogStream) Position(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	file, pos, err := s.masterStatus(ctx, "SHOW MASTER STATUS")
	if mysqlErrorIs(err, 1064) { // ER_PARSE_ERROR: MySQL 8.4 renamed the statement
		file, pos, err = s.masterStatus(ctx, "SHOW BINARY LOG STATUS")
	}
	switch {
	case mysqlErrorIs(err, 1227): // ER_SPECIFIC_ACCESS_DENIED_ERROR
		return "", fmt.Errorf("store: binlog: position: %w (%s)", err, s.grantHint(ctx))
	case err != nil:
		return "", fmt.Errorf("store: binlog: position: %w", err)
	case file == "":
		return "", errors.New("store: binlog: position: the server has no binary log (log_bin is OFF)")
	}
	return formatCursor(file, pos), nil
}

// masterStatus runs query (SHOW MASTER STATUS or its new name) and returns its File and
// Position, or "" when the binary log is off (no row).
func (s *BinlogStream) masterStatus(ctx context.Context, query string) (string, uint64, error) {
	rows, err := s.admin.QueryContext(ctx, query)
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
func (s *BinlogStream) grantHint(ctx context.Context) string {
	account := "'user'@'host'"
	var cur string
	if s.admin.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&cur) == nil {
		if user, host, ok := strings.Cut(cur, "@"); ok {
			account = "'" + user + "'@'" + host + "'"
		}
	}
	return "grant it: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO " + account
}
