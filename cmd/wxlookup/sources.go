package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"wxlookup/cache"
	"wxlookup/store"
)

// openSource opens a query's source and says how its loader follows it: rows built into
// the binary (the demo), a CSV file, or a MySQL table polled (by the updated column) or
// followed (by its binary log).
//
// Each query has its own source for now: a MySQL query its own connection pool and, with
// the binlog feed, its own binlog stream (replica server ids from nextServerID). SPEC 10
// wants one pool and one stream for all; that is for store to provide.
func (m *Main) openSource(qc QueryConfig) (cache.Source, string, error) {
	cfg := m.Config
	switch {
	case qc.embedded != nil:
		src, err := store.NewCSV(qc.CSV, qc.embedded, qc.mapping())
		return src, cache.ModeCSV, err
	case qc.CSV != "":
		src, err := store.OpenCSV(qc.CSV, qc.mapping())
		return src, cache.ModeCSV, err
	}
	my := store.MySQLConfig{DSN: cfg.MySQLDSN, Mapping: qc.mapping(), Logger: m.Logger}
	if cfg.ChangeFeed == feedBinlog {
		id, err := m.nextServerID()
		if err != nil {
			return nil, "", err
		}
		b, err := store.OpenBinlog(store.BinlogConfig{MySQLConfig: my, BinlogDSN: cfg.BinlogDSN, ServerID: id})
		return b, cache.ModeBinlog, err
	}
	src, err := store.OpenMySQL(my)
	return src, cache.ModePoll, err
}

// nextServerID returns the replica server id of the next binlog stream this process opens:
// WXLOOKUP_BINLOG_SERVER_ID (or the derived one) for the first, then one more for each
// further stream, so that two streams of this process never share one (MySQL would drop
// the older).
func (m *Main) nextServerID() (uint32, error) {
	base, err := m.Config.binlogServerID()
	if err != nil {
		return 0, err
	}
	id := base + m.streams.Add(1) - 1
	if id == 0 { // wrapped around: 0 is no server id
		id = base + m.streams.Add(1) - 1
	}
	return id, nil
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
