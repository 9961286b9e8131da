package store

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"wxlookup/internal/mariadbtest"
)

func TestAllowListFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "allow.txt")
	if err := os.WriteFile(path, []byte("# plant workers\noWorker1\n  oWorker2  # night shift\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := OpenAllowList(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id   string
		want bool
	}{{"oWorker1", true}, {"oWorker2", true}, {"oStranger", false}, {"", false}, {"# plant workers", false}}
	for _, tt := range tests {
		if got := a.Allowed([]byte(tt.id)); got != tt.want {
			t.Errorf("Allowed(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
	// A change is picked up on reload; a broken file keeps the old list.
	os.WriteFile(path, []byte("oWorker3\n"), 0o600)
	if err := a.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Allowed([]byte("oWorker1")) || !a.Allowed([]byte("oWorker3")) {
		t.Errorf("reload did not replace the list")
	}
	os.WriteFile(path, []byte("oWorker4, oWorker5\n"), 0o600)
	if err := a.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "allow.txt:1") {
		t.Errorf("got %v, want an error naming allow.txt:1", err)
	}
	if !a.Allowed([]byte("oWorker3")) {
		t.Errorf("a failed reload lost the previous list")
	}
	if _, err := OpenAllowList(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Errorf("missing file: got no error")
	}
}

func TestAllowListTable(t *testing.T) {
	srv := mariadbtest.Shared(t)
	dsn := srv.CreateDatabase(t)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE wx_allow (openid VARCHAR(64) PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO wx_allow VALUES ('oA'), ('oB')"); err != nil {
		t.Fatal(err)
	}
	src := openSource(t, dsn, MySQLConfig{})
	a, err := OpenAllowTable(context.Background(), src, "wx_allow", "openid")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Allowed([]byte("oA")) || a.Allowed([]byte("oC")) || a.Len() != 2 {
		t.Fatalf("got oA=%v oC=%v len=%d, want true false 2", a.Allowed([]byte("oA")), a.Allowed([]byte("oC")), a.Len())
	}
	if _, err := OpenAllowTable(context.Background(), src, "wx_allow; DROP TABLE x", "openid"); err == nil {
		t.Fatalf("injection in the table name accepted")
	}
}

// FuzzAllowFile feeds the allow-list file parser arbitrary files: it never panics, and
// every OpenID it accepts is non-empty, without white space, commas or comments.
func FuzzAllowFile(f *testing.F) {
	for _, s := range []string{"oA\noB # comment\n\n# all comment\n", "oA oB\n", "\xff\n", "\r\n\t\n", ""} {
		f.Add(s)
	}
	path := filepath.Join(f.TempDir(), "allow.txt")
	f.Fuzz(func(t *testing.T, data string) {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		set, err := readAllowFile(path)
		if err != nil {
			return
		}
		for id := range set {
			if id == "" || strings.ContainsAny(id, " \t,;#\n") {
				t.Fatalf("accepted OpenID %q from %q", id, data)
			}
		}
	})
}
