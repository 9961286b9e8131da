package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"wxlookup/cache"
	"wxlookup/store"
)

// openSource opens a query's source and says how its loader follows it: rows built into
// the binary (the demo), a CSV file, or a MySQL table polled (by the updated column) or
// followed (by its binary log). Every MySQL query reads through one connection pool, and
// with the binlog feed every one follows the one binlog stream (SPEC section 10); both are
// opened with the first query that needs them and closed by Main.Close.
func (m *Main) openSource(qc QueryConfig) (cache.Source, string, error) {
	switch {
	case qc.embedded != nil:
		src, err := store.NewCSV(qc.CSV, qc.embedded, qc.mapping())
		return src, cache.ModeCSV, err
	case qc.CSV != "":
		src, err := store.OpenCSV(qc.CSV, qc.mapping())
		return src, cache.ModeCSV, err
	}
	pool, err := m.mysqlPool()
	if err != nil {
		return nil, "", err
	}
	src, err := pool.Table(store.TableConfig{Mapping: qc.mapping()})
	if err != nil || m.Config.ChangeFeed != feedBinlog {
		return src, cache.ModePoll, err
	}
	stream, err := m.binlogStream()
	if err != nil {
		src.Close()
		return nil, "", err
	}
	b, err := stream.Table(src)
	if err != nil {
		src.Close()
		return nil, "", err
	}
	return b, cache.ModeBinlog, nil
}

// sharedSources are the connection pool and the binlog stream every query shares.
type sharedSources struct {
	mu     sync.Mutex
	pool   *store.Pool
	stream *store.BinlogStream
}

// mysqlPool returns the connection pool of WXLOOKUP_MYSQL_DSN, opening it on first use.
func (m *Main) mysqlPool() (*store.Pool, error) {
	m.shared.mu.Lock()
	defer m.shared.mu.Unlock()
	if m.shared.pool == nil {
		p, err := store.OpenPool(store.PoolConfig{DSN: m.Config.MySQLDSN, Logger: m.Logger})
		if err != nil {
			return nil, err
		}
		m.shared.pool = p
	}
	return m.shared.pool, nil
}

// binlogStream returns the binlog stream every query follows, opening it on first use with
// the replica server id of WXLOOKUP_BINLOG_SERVER_ID (or the derived one).
func (m *Main) binlogStream() (*store.BinlogStream, error) {
	m.shared.mu.Lock()
	defer m.shared.mu.Unlock()
	if m.shared.stream == nil {
		id, err := m.Config.binlogServerID()
		if err != nil {
			return nil, err
		}
		st, err := store.OpenBinlogStream(store.BinlogStreamConfig{DSN: m.Config.MySQLDSN,
			BinlogDSN: m.Config.BinlogDSN, ServerID: id, Logger: m.Logger})
		if err != nil {
			return nil, err
		}
		m.shared.stream = st
	}
	return m.shared.stream, nil
}

// closeShared closes the binlog stream and then the pool, once every query's source is
// closed.
func (m *Main) closeShared() error {
	m.shared.mu.Lock()
	defer m.shared.mu.Unlock()
	var errs []error
	if m.shared.stream != nil {
		errs = append(errs, m.shared.stream.Close())
		m.shared.stream = nil
	}
	if m.shared.pool != nil {
		errs = append(errs, m.shared.pool.Close())
		m.shared.pool = nil
	}
	return errors.Join(errs...)
}

// binlogServerID is WXLOOKUP_BINLOG_SERVER_ID, or one derived from the host name and the
// webhook's port, so that replicas on different hosts, or on one host with different
// ports, differ without configuration.
func (c *Config) binlogServerID() (uint32, error) {
	if c.BinlogServerID != 0 {
		return c.BinlogServerID, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return 0, fmt.Errorf("WXLOOKUP_BINLOG_SERVER_ID is not set and the host name cannot be read to derive one: %w", err)
	}
	_, p, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return 0, fmt.Errorf("WXLOOKUP_LISTEN %q: want host:port: %w", c.Listen, err)
	}
	port, _ := strconv.Atoi(p)
	return store.DefaultServerID(host, port), nil
}

// mysqlOf returns the MySQL source behind src, or nil for a CSV source.
func mysqlOf(src cache.Source) *store.MySQL {
	switch s := src.(type) {
	case *store.MySQL:
		return s
	case *store.Binlog:
		return s.MySQL
	}
	return nil
}

// checkBinlog stops start-up when MySQL answers that its binary log cannot be followed as
// configured (binlog off or not ROW, grants missing, an unsupported column type), naming
// each fix. When MySQL cannot be asked now it logs one line and lets the loader retry.
func (m *Main) checkBinlog(ctx context.Context, b *store.Binlog) error {
	ctx, cancel := context.WithTimeout(ctx, mappingCheckTimeout)
	defer cancel()
	err := b.Check(ctx)
	var cf *store.CannotFollowError
	switch {
	case err == nil:
		m.Logger.Info("binlog change feed: the binary log can be followed", "source", b.String(), "server_id", b.ServerID())
	case errors.As(err, &cf):
		return fmt.Errorf("WXLOOKUP_CHANGE_FEED=binlog: %w", err)
	default:
		m.Logger.Warn("cannot check the binary log now; starting anyway, the loader retries", "source", b.String(), "err", err)
	}
	return nil
}

// mappingCheckTimeout bounds the start-up check of the table mapping.
const mappingCheckTimeout = 5 * time.Second

// checkMapping stops start-up (or refuses a configuration reload), naming the query's
// setting, when MySQL answers that its table or a column is missing or unfit; a warning (no
// index on the updated column) is logged. When MySQL cannot be asked now it logs one line
// and lets the loader retry.
func (m *Main) checkMapping(ctx context.Context, my *store.MySQL, qc QueryConfig) error {
	ctx, cancel := context.WithTimeout(ctx, mappingCheckTimeout)
	defer cancel()
	err := my.CheckMapping(ctx, m.Config.ChangeFeed != feedBinlog) // the binlog feed needs no updated column
	var me *store.MappingError
	var mw *store.MappingWarning
	switch {
	case err == nil:
	case errors.As(err, &me):
		return fmt.Errorf("%s: %v", qc.setting(me.Field), me.Err)
	case errors.As(err, &mw):
		m.Logger.Warn(qc.setting(mw.Field)+": "+mw.Err.Error(), "source", my.String())
	default:
		m.Logger.Warn("cannot check the table mapping now; starting anyway, the loader retries", "source", my.String(), "err", err)
	}
	return nil
}
