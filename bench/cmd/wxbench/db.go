package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

// Names of the harness's database and its read-only account (SPEC section 8: wxlookup
// reads through an account that may only SELECT the table).
const (
	dbName     = "plant"
	roUser     = "wxlookup_ro"
	roPassword = "bench-ro"
)

// database is the harness's private MariaDB, seeded with the demo rows.
type database struct {
	srv    *mariadbtest.Server
	ro     string // DSN of the read-only account
	seeded time.Duration
}

// provision starts a private mariadbd on a free loopback port, seeds rows demo rows with
// store.Seed and creates the read-only account.
func provision(ctx context.Context, rows int) (*database, error) {
	srv, err := mariadbtest.StartServer()
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
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = roUser, roPassword, "tcp", srv.Addr, dbName
	d.ro = cfg.FormatDSN()
	return d, nil
}

func (d *database) close() { d.srv.Close() }
