package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/bench/fresh"
	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

// Names of the harness's database and its accounts (SPEC section 8: wxlookup reads
// through an account that may only SELECT the table; in binlog mode it follows the binary
// log through one with the replication grants).
const (
	dbName       = "plant"
	roUser       = "wxlookup_ro"
	roPassword   = "bench-ro"
	replUser     = "wxlookup_repl"
	replPassword = "bench-repl"
)

// database is the harness's private MariaDB, seeded with the demo rows, with a row
// binary log (mariadbtest.WithBinlog) for wxlookup's binlog change feed.
type database struct {
	srv    *mariadbtest.Server
	ro     string // DSN of the read-only account
	repl   string // DSN of the replication account (REPLICATION SLAVE, REPLICATION CLIENT, SELECT)
	root   string // DSN of root in the database: the freshness writer's
	seeded time.Duration
}

// provision starts a private mariadbd with a row binary log on a free loopback port,
// seeds rows demo rows with store.Seed and creates the read-only and the replication
// accounts.
func provision(ctx context.Context, rows int) (*database, error) {
	srv, err := mariadbtest.StartServer(mariadbtest.WithBinlog())
	if err != nil {
		return nil, err
	}
	d := &database{srv: srv}
	root, err := sql.Open("mysql", srv.RootDSN(""))
	if err != nil {
		srv.Close()
		return nil, err
	}
	defer root.Close()
	for _, q := range []string{
		"CREATE DATABASE " + dbName + " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
		"CREATE USER '" + roUser + "'@'127.0.0.1' IDENTIFIED BY '" + roPassword + "'",
		"GRANT SELECT ON " + dbName + ".* TO '" + roUser + "'@'127.0.0.1'",
		"CREATE USER '" + replUser + "'@'127.0.0.1' IDENTIFIED BY '" + replPassword + "'",
		"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '" + replUser + "'@'127.0.0.1'",
		"GRANT SELECT ON " + dbName + ".* TO '" + replUser + "'@'127.0.0.1'",
	} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			srv.Close()
			return nil, fmt.Errorf("mariadb: %s: %w", q, err)
		}
	}
	db, err := sql.Open("mysql", srv.RootDSN(dbName))
	if err != nil {
		srv.Close()
		return nil, err
	}
	defer db.Close()
	start := time.Now()
	if err := store.Seed(ctx, db, rows); err != nil {
		srv.Close()
		return nil, err
	}
	d.seeded = time.Since(start)
	d.ro, d.repl, d.root = dsn(roUser, roPassword, srv.Addr), dsn(replUser, replPassword, srv.Addr), srv.RootDSN(dbName)
	return d, nil
}

func dsn(user, password, addr string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, password, "tcp", addr, dbName
	return cfg.FormatDSN()
}

// insertProbes adds the probe keys to the seeded table, each with fresh.Value(0), as
// fresh.NewTracker expects them.
func (d *database) insertProbes(ctx context.Context, keys []fresh.Key) error {
	db, err := sql.Open("mysql", d.root)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, k := range keys {
		q := "INSERT INTO `" + store.DefaultTable + "` (`" + store.DefaultKeyColumn + "`, `" + store.DefaultValueColumn + "`) VALUES (?, ?)"
		if _, err := db.ExecContext(ctx, q, k.Name, fresh.Value(0)); err != nil {
			return fmt.Errorf("mariadb: insert probe key %s: %w", k.Name, err)
		}
	}
	return nil
}

func (d *database) close() { d.srv.Close() }
