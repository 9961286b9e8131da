package mariadbtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestSharedCreateDatabase(t *testing.T) {
	s := Shared(t)
	dsn := s.CreateDatabase(t)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.QueryRow("SELECT DATABASE()").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got == "" {
		t.Fatalf("got no database selected, want the test's own")
	}
}

func TestPrivateStopRestartKeepsData(t *testing.T) {
	s := Start(t)
	s.Exec(t, "", "CREATE DATABASE d", "CREATE TABLE d.t (v VARCHAR(10))", "INSERT INTO d.t VALUES ('kept')")
	s.Stop(t)
	if s.Running() {
		t.Fatalf("Running() = true after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.ping(ctx); err == nil {
		t.Fatalf("ping after Stop succeeded, want a connection error")
	}
	s.Restart(t)
	s.Kill(t)
	s.Restart(t)
	db, err := sql.Open("mysql", s.RootDSN("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.QueryRow("SELECT v FROM t").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "kept" {
		t.Fatalf("got %q, want %q", got, "kept")
	}
}

func TestStartServerStopRestartClose(t *testing.T) {
	s, err := StartServer()
	if err != nil {
		t.Fatal(err)
	}
	dir := s.dir
	if err := s.StopServer(); err != nil {
		t.Fatalf("StopServer: %v", err)
	}
	if s.Running() {
		t.Fatalf("Running() = true after StopServer")
	}
	if err := s.RestartServer(); err != nil {
		t.Fatalf("RestartServer: %v", err)
	}
	if !s.Running() {
		t.Fatalf("Running() = false after RestartServer")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data directory %s still there after Close (stat: %v)", dir, err)
	}
}

// binlogSettings reads the settings WithBinlog promises.
func binlogSettings(t *testing.T, s *Server) string {
	t.Helper()
	db, err := sql.Open("mysql", s.RootDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logBin, format string
	var id int
	if err := db.QueryRow("SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.server_id").Scan(&logBin, &format, &id); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("log_bin=%s binlog_format=%s server_id=%d", logBin, format, id)
}

func TestBinlogServers(t *testing.T) {
	const want = "log_bin=1 binlog_format=ROW server_id=1"
	t.Run("shared", func(t *testing.T) {
		if got := binlogSettings(t, SharedBinlog(t)); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	t.Run("private after kill and restart", func(t *testing.T) {
		s := Start(t, WithBinlog())
		if got := binlogSettings(t, s); got != want {
			t.Fatalf("before kill: got %q, want %q", got, want)
		}
		s.Kill(t)
		s.Restart(t)
		if got := binlogSettings(t, s); got != want {
			t.Fatalf("after restart: got %q, want %q", got, want)
		}
	})
	t.Run("default has no binlog", func(t *testing.T) {
		if Shared(t).Private() {
			const off = "log_bin=0 binlog_format=MIXED server_id=1"
			if got := binlogSettings(t, Shared(t)); got != off {
				t.Fatalf("got %q, want %q", got, off)
			}
		}
	})
}
