// Command wxbaseline runs the seed baseline of the benchmarks (package bench/baseline):
// net/http + encoding/xml + one MySQL query per message. It prints its address and serves
// until SIGINT or SIGTERM.
//
//	wxbaseline -dsn 'user:pw@tcp(127.0.0.1:3306)/plant' -token TOKEN [-listen 127.0.0.1:0] [-pool 32]
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"wxlookup/bench/baseline"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wxbaseline:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	dsn := flag.String("dsn", "", "go-sql-driver DSN of the workpiece_location database")
	token := flag.String("token", "", "Official Account token")
	path := flag.String("path", "/wx", "webhook path")
	pool := flag.Int("pool", baseline.DefaultMaxOpenConns, "MySQL connections at most")
	flag.Parse()
	if *dsn == "" {
		return errors.New("-dsn is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	db, err := sql.Open("mysql", *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	baseline.ConfigurePool(db, *pool)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	h, err := baseline.New(ctx, db, *token, log)
	if err != nil {
		return err
	}
	defer h.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(*path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
		WriteTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
	fmt.Printf("listening %s\n", ln.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
