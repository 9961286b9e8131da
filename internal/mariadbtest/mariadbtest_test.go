package mariadbtest

import (
	"context"
	"database/sql"
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
