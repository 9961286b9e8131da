package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/go-sql-driver/mysql" // also the "mysql" database/sql driver

	"wxlookup/store"
)

func runSeed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	dsn := fs.String("dsn", "", "go-sql-driver DSN of an account that may create tables, e.g. root@tcp(127.0.0.1:3306)/plant")
	rows := fs.Int("rows", 1000, "demo rows to write (18-546 is always among them)")
	if err := parseFlags(fs, "usage: wxlookup seed --dsn DSN [--rows N]\n\nCreates the default table and fills demo rows.", args, stdout, stderr); err != nil {
		return err
	}
	if *dsn == "" {
		return usageError{"seed needs --dsn"}
	}
	if *rows < 1 {
		return usageError{"seed: --rows must be at least 1"}
	}
	if _, err := mysql.ParseDSN(*dsn); err != nil {
		return usageError{fmt.Sprintf("seed: --dsn is not a DSN the MySQL driver can parse (%s); %s", dsnProblem(*dsn, err), dsnForm)}
	}
	db, err := sql.Open("mysql", *dsn)
	if err != nil {
		return fmt.Errorf("seed: --dsn: %w", err)
	}
	defer db.Close()
	start := time.Now()
	if err := store.Seed(ctx, db, *rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "seeded %d rows into %s in %s\n", *rows, store.DefaultTable, time.Since(start).Round(time.Millisecond))
	return nil
}
