package store

import (
	"errors"
	"strings"
	"testing"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

// TestBinlogFollowXA runs XA transactions on the table: one prepared and committed is
// applied, one prepared and rolled back asks for a new snapshot (its rows were applied at
// PREPARE).
func TestBinlogFollowXA(t *testing.T) {
	fx := newBinlogFixture(t, mariadbtest.SharedBinlog(t), 10)
	f := fx.startFollowing(t, nil)
	conn, err := fx.db.Conn(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	xa := func(id, key, end string) {
		t.Helper()
		for _, q := range []string{
			"XA START '" + id + "'",
			"INSERT INTO workpiece_location (part_no, location) VALUES ('" + key + "', 'xa')",
			"XA END '" + id + "'",
			"XA PREPARE '" + id + "'",
			"XA " + end + " '" + id + "'",
		} {
			if _, err := conn.ExecContext(testCtx(t), q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	xa("x1", "XA-1", "COMMIT")
	fx.catchUp(t, f)
	xa("x2", "XA-2", "ROLLBACK")
	if err := f.waitErr(t); !errors.Is(err, cache.ErrResnapshot) || !strings.Contains(err.Error(), "XA ROLLBACK") {
		t.Fatalf("got %v, want ErrResnapshot for the XA ROLLBACK", err)
	}
}
