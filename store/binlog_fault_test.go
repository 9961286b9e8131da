package store

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/logtest"
	"wxlookup/internal/mariadbtest"
)

// TestBinlogFollowResnapshot covers what following cannot get past: each case writes a row
// (applied), then does something to the mapped table, and Follow must end with an error
// wrapping cache.ErrResnapshot after applying the row.
func TestBinlogFollowResnapshot(t *testing.T) {
	srv := mariadbtest.SharedBinlog(t)
	tests := []struct {
		name    string
		stmts   []string
		wantErr string
	}{
		{name: "truncate", stmts: []string{"TRUNCATE TABLE workpiece_location"}, wantErr: "TRUNCATE"},
		{name: "alter add column", stmts: []string{"ALTER TABLE workpiece_location ADD COLUMN note VARCHAR(10)"}, wantErr: "ALTER TABLE"},
		{name: "alter qualified with comments", stmts: []string{"/* tool */ alter /*!50100 online */ table `{db}`.`workpiece_location` add index i2 (location)"}, wantErr: "ALTER TABLE"},
		{name: "rename", stmts: []string{"RENAME TABLE workpiece_location TO wl_old"}, wantErr: "RENAME TABLE"},
		{name: "drop", stmts: []string{"DROP TABLE workpiece_location"}, wantErr: "DROP TABLE"},
		{name: "create or replace", stmts: []string{"CREATE OR REPLACE TABLE workpiece_location (part_no VARCHAR(64) PRIMARY KEY, location VARCHAR(255), updated_at TIMESTAMP(6))"}, wantErr: "CREATE OR REPLACE TABLE"},
		{name: "write logged as a statement", stmts: []string{
			"SET SESSION binlog_format = 'STATEMENT'",
			"UPDATE workpiece_location SET location = 'by statement' WHERE part_no = '18-546'",
		}, wantErr: "UPDATE logged as a statement"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newBinlogFixture(t, srv, 20)
			f := fx.startFollowing(t, nil)
			fx.exec(t, "INSERT INTO workpiece_location (part_no, location) VALUES ('B-1', 'before')")
			f.waitCursor(t, fx.position(t))
			conn, err := fx.db.Conn(testCtx(t)) // one session, for SET SESSION
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for _, q := range tt.stmts {
				if _, err := conn.ExecContext(testCtx(t), strings.ReplaceAll(q, "{db}", fx.b.table.db)); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			err = f.waitErr(t)
			if !errors.Is(err, cache.ErrResnapshot) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error wrapping ErrResnapshot naming %q", err, tt.wantErr)
			}
			if rows, _ := f.a.state(); rows["B-1"].Values == nil {
				t.Fatalf("the row written before was not applied")
			}
		})
	}
}

// TestBinlogFollowTableMapMismatch follows from before an insert made with the old shape of
// the table, after it was altered: the insert's TABLE_MAP no longer matches the columns
// Follow read, and it asks for a new snapshot there, before the ALTER.
func TestBinlogFollowTableMapMismatch(t *testing.T) {
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), 5)
	pos := fx.position(t)
	fx.exec(t, "INSERT INTO workpiece_location (part_no, location) VALUES ('A-1', 'old shape')",
		"ALTER TABLE workpiece_location ADD COLUMN note VARCHAR(10) FIRST")
	err := fx.b.Follow(testCtx(t), pos, func(cache.Change) error { return nil })
	if !errors.Is(err, cache.ErrResnapshot) || !strings.Contains(err.Error(), "changed shape") {
		t.Fatalf("got %v, want ErrResnapshot for a changed shape", err)
	}
}

func TestBinlogFollowPurged(t *testing.T) {
	var logs logtest.Buffer
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), 5, func(c *BinlogConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	pos := fx.position(t)
	fx.exec(t, "INSERT INTO workpiece_location (part_no, location) VALUES ('P-1', 'x')", "FLUSH BINARY LOGS")
	file, _, err := parseCursor(fx.position(t))
	if err != nil {
		t.Fatal(err)
	}
	purgeTo(t, fx, file)
	ctx, cancel := context.WithTimeout(testCtx(t), followWait)
	defer cancel()
	err = fx.b.Follow(ctx, pos, func(cache.Change) error { return nil })
	if !errors.Is(err, cache.ErrResnapshot) {
		t.Fatalf("got %v, want an error wrapping ErrResnapshot", err)
	}
	if got := logs.String(); !strings.Contains(got, "purged") || !strings.Contains(got, pos) {
		t.Fatalf("got log %q, want a line about the purged position %s", got, pos)
	}
}

// TestBinlogFollowServerRestarts kills the server (and later stops it cleanly) while a
// follower runs: Follow returns an error that is neither ErrResnapshot nor the context's,
// and following again from the last cursor applied, after writes made while nobody
// followed, loses nothing.
func TestBinlogFollowServerRestarts(t *testing.T) {
	srv := mariadbtest.Start(t, mariadbtest.WithBinlog())
	fx := newBinlogFixture(t, srv, 500)
	f := fx.startFollowing(t, nil)
	a := f.a
	tests := []struct {
		name string
		down func(tb testing.TB)
	}{
		{name: "killed", down: srv.Kill},
		{name: "stopped cleanly", down: srv.Stop},
	}
	parent := t // owns the followers, which outlive each subtest
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx.exec(t, "UPDATE workpiece_location SET location = CONCAT(location, '!') WHERE part_no < 'C'",
				"INSERT INTO workpiece_location (part_no, location) VALUES ('S-"+tt.name+"', 'before')")
			fx.catchUp(t, f)
			tt.down(t)
			err := f.waitErr(t)
			if err == nil || errors.Is(err, cache.ErrResnapshot) || errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want a connection error", err)
			}
			t.Logf("Follow ended with: %v", err)
			srv.Restart(t)
			fx.exec(t, "DELETE FROM workpiece_location WHERE part_no BETWEEN 'D' AND 'F'",
				"UPDATE workpiece_location SET location = 'after restart' WHERE part_no = 'S-"+tt.name+"'")
			_, last := a.state()
			f = startFollow(parent, fx.b, last, a)
			fx.catchUp(t, f)
			if rows, _ := a.state(); rows["S-"+tt.name].Values[0] != "after restart" {
				t.Fatalf("round %d: got %q, want the update made while nobody followed", i, rows["S-"+tt.name].Values)
			}
		})
	}
}

// purgeTo purges the binary logs before file. MariaDB keeps a log until its binlog
// checkpoint has passed and no replica reads it, so this retries until the first log left
// is file.
func purgeTo(t *testing.T, fx *binlogFixture, file string) {
	t.Helper()
	deadline := time.Now().Add(followWait)
	for {
		fx.exec(t, "PURGE BINARY LOGS TO '"+file+"'")
		var first string
		var size, encrypted any
		row := fx.db.QueryRowContext(testCtx(t), "SHOW BINARY LOGS")
		if err := row.Scan(&first, &size); err != nil {
			if err := row.Scan(&first, &size, &encrypted); err != nil {
				t.Fatalf("SHOW BINARY LOGS: %v", err)
			}
		}
		if first == file {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PURGE BINARY LOGS TO %q: %q is still the first log after %s", file, first, followWait)
		}
		time.Sleep(50 * time.Millisecond) // polling the server's own purge condition
	}
}
