package cache_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

// TestCSVLoader: the loader over the CSV source follows the file. An update, an insert
// and a delete in a new version of the file reach the cache at the next refresh; a
// malformed version is rejected, the old rows keep answering, and Status names the error
// with its line.
func TestCSVLoader(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	path := filepath.Join(t.TempDir(), "locations.csv")
	write := func(t *testing.T, content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		// A distinct modification time, so the change is seen even when the file system's
		// clock is coarse and the size did not change.
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	write(t, "part_no,location\n18-546,车体新厂房3号\nA7-001,总装车间A区12排\nB1-002,焊装车间1号\n", base)
	src, err := store.OpenCSV(path, store.Mapping{})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t, src, cache.Config{})
	startReady(t, c)
	mustFind(t, c, "a7-001", "[A7-001] 总装车间A区12排")

	tests := []struct {
		name    string
		content string
		wantErr string // in Status().RecentErrors[0]; "" for a good file
		found   map[string]string
		missing []string
	}{
		{
			name:    "update, insert and delete",
			content: "part_no,location\n18-546,车体新厂房4号\nA7-001,总装车间A区12排\nC3-003,成品库2号\n",
			found:   map[string]string{"18-546": "[18-546] 车体新厂房4号", "c3-003": "[C3-003] 成品库2号", "A7-001": "[A7-001] 总装车间A区12排"},
			missing: []string{"B1-002"},
		},
		{
			name:    "too many fields on line 3",
			content: "part_no,location\n18-546,车体新厂房5号\nA7-001,总装车间,A区\nC3-003,成品库2号\n",
			wantErr: "locations.csv:3: 3 fields, want 2",
			found:   map[string]string{"18-546": "[18-546] 车体新厂房4号", "c3-003": "[C3-003] 成品库2号"},
			missing: []string{"B1-002"},
		},
		{
			name:    "duplicate key on line 4",
			content: "part_no,location\n18-546,车体新厂房5号\nA7-001,总装车间A区12排\na7-001,别处\n",
			wantErr: "locations.csv:4: part_no \"a7-001\" duplicates line 3",
			found:   map[string]string{"18-546": "[18-546] 车体新厂房4号", "A7-001": "[A7-001] 总装车间A区12排"},
		},
		{
			name:    "fixed again",
			content: "part_no,location\n18-546,车体新厂房6号\nA7-001,总装车间A区12排\n",
			found:   map[string]string{"18-546": "[18-546] 车体新厂房6号"},
			missing: []string{"C3-003", "B1-002"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			write(t, tt.content, base.Add(time.Duration(i+1)*time.Minute))
			err := c.Refresh(testCtx(t))
			st := c.Status()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Refresh: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Refresh accepted a malformed file")
			case tt.wantErr != "":
				if len(st.RecentErrors) == 0 || !strings.Contains(st.RecentErrors[0].Err, tt.wantErr) {
					t.Fatalf("got recent errors %+v, want the newest to contain %q", st.RecentErrors, tt.wantErr)
				}
				if !strings.Contains(st.RecentErrors[0].Err, "keeping the") {
					t.Errorf("got %q, want it to say the old rows are kept", st.RecentErrors[0].Err)
				}
			}
			for k, want := range tt.found {
				mustFind(t, c, k, want)
			}
			for _, k := range tt.missing {
				mustMiss(t, c, k)
			}
		})
	}
	if st := c.Status(); st.Entries != 2 || !st.Complete {
		t.Errorf("got %d entries, complete %v; want 2, true", st.Entries, st.Complete)
	}
}
