package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	vmysql "vitess.io/vitess/go/mysql"
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

// Binlog is the MySQL source of one table with a change feed: it satisfies cache.Source
// through its embedded *MySQL and cache.Follower by following the server's binary log
// through a BinlogStream, which serves every table of the service over one replication
// connection. Make it with OpenBinlog (one table, a stream of its own) or
// BinlogStream.Table. It is safe for concurrent use.
type Binlog struct {
	*MySQL
	stream     *BinlogStream
	ownsStream bool // OpenBinlog's: Close closes the stream
	table      qualifiedTable
	mapping    Mapping
	loc        *time.Location // zone in which the snapshot reads TIMESTAMP columns
	closeOnce  sync.Once
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

// OpenBinlog opens the MySQL source of cfg (as OpenMySQL does) and a BinlogStream that
// follows its binary log for this one table; closing the Binlog closes both. Like
// OpenMySQL it does not connect; Check tells whether following can work.
func OpenBinlog(cfg BinlogConfig) (*Binlog, error) {
	scfg := BinlogStreamConfig{DSN: cfg.DSN, BinlogDSN: cfg.BinlogDSN, ServerID: cfg.ServerID, Heartbeat: cfg.Heartbeat,
		MaxChangeRows: cfg.MaxChangeRows, QueryTimeout: cfg.QueryTimeout, Logger: cfg.Logger}
	if _, err := scfg.withDefaults(); err != nil {
		return nil, err
	}
	src, err := OpenMySQL(cfg.MySQLConfig)
	if err != nil {
		return nil, err
	}
	st, err := OpenBinlogStream(scfg)
	if err != nil {
		src.Close()
		return nil, err
	}
	b, err := st.Table(src)
	if err != nil {
		st.Close()
		src.Close()
		return nil, err
	}
	b.ownsStream = true
	return b, nil
}

// newBinlog returns the Binlog of src on stream st.
func newBinlog(st *BinlogStream, src *MySQL) (*Binlog, error) {
	m := src.m
	t := qualifiedTable{db: src.dbName, table: m.Table}
	if db, table, ok := strings.Cut(m.Table, "."); ok {
		t = qualifiedTable{db: db, table: table}
	}
	if t.db == "" {
		return nil, fmt.Errorf("store: open binlog: table %s has no database: qualify it (db.table) or name the database in the DSN", m.Table)
	}
	// The snapshot reads TIMESTAMP columns in its session zone: '+00:00' unless the DSN sets
	// time_zone, when its loc names the same zone (OpenPool).
	loc := src.loc
	if loc == nil {
		loc = time.UTC
	}
	return &Binlog{MySQL: src, stream: st, table: t, mapping: m, loc: loc}, nil
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

// ServerID returns the server_id this source follows the binary log with (its stream's).
func (b *Binlog) ServerID() uint32 { return b.stream.serverID }

// String describes the source without its password, for example "mysql
// loader@tcp(db:3306)/plant table workpiece_location, binlog as server_id 12345".
func (b *Binlog) String() string {
	return b.MySQL.String() + ", binlog as server_id " + strconv.FormatUint(uint64(b.stream.serverID), 10)
}

// Close closes the table's source (the *MySQL the Binlog was made from) and takes the
// table off its stream's Check. A Binlog of OpenBinlog also closes its stream, which ends
// its Follow calls in progress; otherwise they end when their context is cancelled. Calls
// after the first do nothing.
func (b *Binlog) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.stream.drop(b)
		if b.ownsStream {
			err = b.stream.Close()
		}
		err = errors.Join(err, b.MySQL.Close())
	})
	return err
}

// Position returns the end of the server's binary log as a cursor, "file:pos" (the
// stream's Position).
func (b *Binlog) Position(ctx context.Context) (string, error) { return b.stream.Position(ctx) }
