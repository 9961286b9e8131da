package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"wxlookup/cache"
)

// csvFile writes content to a file in a fresh directory and returns its path.
func csvFile(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "locations.csv")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// rewrite replaces the file's content and moves its modification time on by step, as a
// later write would, so the change is seen however coarse the file system's clock is.
func rewrite(tb testing.TB, path, content string, step int) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	at := time.Date(2030, 1, 1, 0, 0, step, 0, time.UTC)
	if err := os.Chtimes(path, at, at); err != nil {
		tb.Fatal(err)
	}
}

// rowsString renders rows compactly for comparison: "key=v1|v2" or "key deleted".
func rowsString(rows []cache.Row) string {
	var b strings.Builder
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		if r.Deleted {
			b.WriteString(r.Key + " deleted")
			continue
		}
		b.WriteString(r.Key + "=" + strings.Join(r.Values, "|"))
	}
	return b.String()
}

type source interface {
	Snapshot(context.Context, func(cache.Row) error) (time.Time, error)
	Changes(context.Context, time.Time, func(cache.Row) error) (time.Time, error)
}

func csvSnapshot(tb testing.TB, s source) (string, time.Time) {
	tb.Helper()
	var rows []cache.Row
	wm, err := s.Snapshot(context.Background(), func(r cache.Row) error { rows = append(rows, r); return nil })
	if err != nil {
		tb.Fatalf("Snapshot: %v", err)
	}
	return rowsString(rows), wm
}

func csvChanges(tb testing.TB, s source, since time.Time) (string, time.Time, error) {
	tb.Helper()
	var rows []cache.Row
	next, err := s.Changes(context.Background(), since, func(r cache.Row) error { rows = append(rows, r); return nil })
	return rowsString(rows), next, err
}

func TestCSVSnapshotAndGet(t *testing.T) {
	path := csvFile(t, "\uFEFFPart_No , Location,note\n18-546,车体新厂房3号,x\n\"A7-001\", 总装车间A区12排 ,\n")
	c, err := OpenCSV(path, Mapping{})
	if err != nil {
		t.Fatal(err)
	}
	got, wm := csvSnapshot(t, c)
	if want := "18-546=车体新厂房3号, A7-001=总装车间A区12排"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if wm.IsZero() {
		t.Fatalf("got zero watermark, want one")
	}
	if want := "csv " + path + " (2 rows)"; c.String() != want {
		t.Fatalf("got %q, want %q", c.String(), want)
	}
	tests := []struct {
		name, key, want string // want "" for not found
	}{
		{"exact", "18-546", "车体新厂房3号"},
		{"normalised", cache.Key("A7-001"), "总装车间A区12排"},
		{"stored spelling is not a normalised key", "A7-001", ""},
		{"absent", "zz-1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row, err := c.Get(context.Background(), tt.key)
			if tt.want == "" {
				if !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("got %v, %v, want cache.ErrNotFound", row, err)
				}
				return
			}
			if err != nil || row.Values[0] != tt.want {
				t.Fatalf("got %q, %v, want %q", row.Values, err, tt.want)
			}
		})
	}
}

func TestCSVMapping(t *testing.T) {
	data := []byte("零件号,bay,row,extra\nk1,B,3,z\n")
	c, err := NewCSV("mes.csv", data, Mapping{KeyColumn: "零件号", ValueColumns: []string{"row", "BAY"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := csvSnapshot(t, c); got != "k1=3|B" {
		t.Fatalf("got %q, want %q", got, "k1=3|B")
	}
}

func TestCSVReload(t *testing.T) {
	path := csvFile(t, "part_no,location\na,1\nb,2\nc,3\n")
	c, err := OpenCSV(path, Mapping{})
	if err != nil {
		t.Fatal(err)
	}
	_, wm0 := csvSnapshot(t, c)

	steps := []struct {
		name    string
		content string // "" leaves the file alone
		since   *time.Time
		want    string
		sameWM  bool // the returned watermark is since
	}{
		{"unchanged", "", &wm0, "", true},
		{"changed, deleted, added", "part_no,location\nd,4\na,1\nb,22\n", &wm0, "c deleted, d=4, b=22", false},
		{"same content rewritten", "part_no,location\nd,4\na,1\nb,22\n", nil, "", true},
		{"key respelled", "part_no,location\nD,4\na,1\nb,22\n", nil, "D=4", false},
	}
	since := wm0
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.content != "" {
				rewrite(t, path, st.content, i)
			}
			if st.since != nil {
				since = *st.since
			}
			got, next, err := csvChanges(t, c, since)
			if err != nil {
				t.Fatal(err)
			}
			if got != st.want {
				t.Fatalf("got %q, want %q", got, st.want)
			}
			if next.Equal(since) != st.sameWM {
				t.Fatalf("got watermark %s after %s, want same: %v", next, since, st.sameWM)
			}
			since = next
		})
	}

	t.Run("retry from the previous watermark", func(t *testing.T) {
		// A loader whose delivery failed asks again from where it was: same diff.
		_, wmPrev := csvSnapshot(t, c)
		rewrite(t, path, "part_no,location\nD,4\nb,22\n", 10)
		first, _, err := csvChanges(t, c, wmPrev)
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := csvChanges(t, c, wmPrev)
		if err != nil {
			t.Fatal(err)
		}
		if first != "a deleted" || again != first {
			t.Fatalf("got %q then %q, want %q twice", first, again, "a deleted")
		}
	})

	t.Run("unknown watermark sends everything", func(t *testing.T) {
		got, _, err := csvChanges(t, c, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if want := "D=4, b=22"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("keys follow the file", func(t *testing.T) {
		rewrite(t, path, "part_no,location\nb,22\nz,9\n", 11)
		var keys []string
		if err := c.Keys(context.Background(), func(k string) error { keys = append(keys, k); return nil }); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(keys, ","); got != "b,z" {
			t.Fatalf("got %q, want %q", got, "b,z")
		}
	})
}

func TestCSVMalformed(t *testing.T) {
	const good = "part_no,location\na,1\nb,2\n"
	tests := []struct {
		name, content, want string // want: the part of the error after the file name
	}{
		{"too many fields", "part_no,location\na,1\nb,2,x\n", ":3: 3 fields, want 2 as in the header"},
		{"too few fields", "part_no,location\na,1\n\nb\n", ":4: 1 fields, want 2 as in the header"},
		{"no key column", "part,location\na,1\n", `:1: no column "part_no" in the header`},
		{"no value column", "part_no,loc\na,1\n", `:1: no column "location" in the header`},
		{"column twice", "part_no,location,PART_NO\na,1,a\n", `:1: column "part_no" appears twice`},
		{"duplicate key", "part_no,location\na,1\nb,2\na,3\n", `:4: part_no "a" duplicates line 2`},
		{"duplicate after normalising", "part_no,location\nA7-001,1\na7-001,2\n", `:3: part_no "a7-001" duplicates line 2`},
		{"empty key", "part_no,location\na,1\n  ,2\n", ":3: empty part_no"},
		{"bad quote", "part_no,location\na,1\n\"b,2\n", ":3: extraneous or missing \" in quoted-field"},
		{"not utf-8", "part_no,location\na,1\nb,\xb3\xb5\xcc\xe5\n", ":3: not UTF-8"},
		{"empty file", "", ":1: no header row"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := csvFile(t, tt.content)
			if _, err := OpenCSV(path, Mapping{}); err == nil || !strings.Contains(err.Error(), path+tt.want) {
				t.Fatalf("OpenCSV: got %v, want an error containing %q", err, path+tt.want)
			}

			// The same content arriving as a change is refused and the old rows stay.
			rewrite(t, path, good, 1)
			c, err := OpenCSV(path, Mapping{})
			if err != nil {
				t.Fatal(err)
			}
			_, wm := csvSnapshot(t, c)
			rewrite(t, path, tt.content, 2)
			_, _, err = csvChanges(t, c, wm)
			if err == nil || !strings.Contains(err.Error(), path+tt.want) || !strings.HasPrefix(err.Error(), "store: reload csv: ") {
				t.Fatalf("Changes: got %v, want a reload error containing %q", err, path+tt.want)
			}
			if _, err := c.Snapshot(context.Background(), func(cache.Row) error { return nil }); err == nil {
				t.Fatalf("Snapshot: got no error, want the parse error again")
			}
			if row, err := c.Get(context.Background(), "b"); err != nil || row.Values[0] != "2" {
				t.Fatalf("Get after bad reload: got %v, %v, want the old row b=2", row, err)
			}

			// Fixed, it is read again.
			rewrite(t, path, "part_no,location\na,1\nb,3\n", 3)
			got, _, err := csvChanges(t, c, wm)
			if err != nil || got != "b=3" {
				t.Fatalf("after fix: got %q, %v, want %q", got, err, "b=3")
			}
		})
	}
}

func TestCSVFileGone(t *testing.T) {
	path := csvFile(t, "part_no,location\na,1\n")
	c, err := OpenCSV(path, Mapping{})
	if err != nil {
		t.Fatal(err)
	}
	_, wm := csvSnapshot(t, c)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, _, err := csvChanges(t, c, wm); err == nil || !strings.HasPrefix(err.Error(), "store: reload csv: ") {
		t.Fatalf("got %v, want a reload error", err)
	}
	if row, err := c.Get(context.Background(), "a"); err != nil || row.Values[0] != "1" {
		t.Fatalf("got %v, %v, want the old row a=1", row, err)
	}
}

func TestCSVBadMapping(t *testing.T) {
	if _, err := NewCSV("x.csv", []byte("a,b\n"), Mapping{ValueColumns: []string{" "}}); err == nil ||
		!strings.Contains(err.Error(), "ValueColumns[0]") {
		t.Fatalf("got %v, want an error naming ValueColumns[0]", err)
	}
}

// TestCSVConcurrent reads while the file keeps changing; run with -race.
func TestCSVConcurrent(t *testing.T) {
	path := csvFile(t, "part_no,location\na,0\n")
	c, err := OpenCSV(path, Mapping{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Get(context.Background(), "a"); err != nil {
					t.Error(err)
					return
				}
				c.Snapshot(context.Background(), func(cache.Row) error { return nil })
			}
		})
	}
	var since time.Time
	for i := range 50 {
		rewrite(t, path, fmt.Sprintf("part_no,location\na,%d\n", i+1), i)
		got, next, err := csvChanges(t, c, since)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("a=%d", i+1); got != want {
			t.Fatalf("step %d: got %q, want %q", i, got, want)
		}
		since = next
	}
	close(stop)
	wg.Wait()
}

// csvSeeds are the seed files of the CSV fuzz targets.
var csvSeeds = []string{
	"part_no,location\n18-546,车体新厂房3号\nA7-001,总装车间A区12排\n",
	"part_no,location\n\"a,b\",\"c\"\"d\"\n",
	"part_no,location\n18-546\n",
	"part_no,location\n,x\n",
	"location,part_no\nx,1\n1,x\n",
	"part_no,location\nＡ７－００１,x\na7-001,y\n",
	"\xef\xbb\xbfpart_no,location\r\n1,\xff\r\n",
	"part_no,location,bay\nk1,总装,3\nk2,焊装,\n",
	"part_no,location,bay\n\"k\n1\",\"多\n行\",x\n",
	"",
}

// csvErr is the shape of every error of a file that does not parse: the source's name and
// a line number.
var csvErr = regexp.MustCompile(`^store: open csv: fuzz\.csv:[1-9][0-9]*: `)

// checkCSVRows checks the rows of a source that parsed: each has a key, normalised keys are
// unique, as many values as the mapping has value columns, and Get finds it by its
// normalised key. It returns them by normalised key.
func checkCSVRows(t *testing.T, src *CSV, values int, data []byte) map[string]cache.Row {
	t.Helper()
	rows := map[string]cache.Row{}
	_, err := src.Snapshot(context.Background(), func(r cache.Row) error {
		nk := cache.Key(r.Key)
		if nk == "" || len(r.Values) != values {
			t.Fatalf("row %q %q (normalised %q), want a key and %d values, from %q", r.Key, r.Values, nk, values, data)
		}
		if _, dup := rows[nk]; dup {
			t.Fatalf("normalised key %q twice, from %q", nk, data)
		}
		rows[nk] = r
		if got, err := src.Get(context.Background(), nk); err != nil || !sameRow(got, r) {
			t.Fatalf("Get(%q) of a snapshot row: got %+v, %v, want %+v", nk, got, err, r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot of a parsed file: %v", err)
	}
	if want := fmt.Sprintf("(%d rows)", len(rows)); !strings.HasSuffix(src.String(), want) {
		t.Fatalf("got String %q, want it to end %q", src.String(), want)
	}
	return rows
}

// FuzzCSV feeds the CSV source arbitrary bytes as the file, with one and two value
// columns: it never panics; a file that does not parse is refused with an error naming the
// file and a line; a file that parses yields consistent rows (checkCSVRows).
func FuzzCSV(f *testing.F) {
	for _, s := range csvSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, values := range [][]string{{"location"}, {"location", "bay"}} {
			src, err := NewCSV("fuzz.csv", data, Mapping{ValueColumns: values})
			if err != nil {
				if !csvErr.MatchString(err.Error()) {
					t.Fatalf("got error %q, want one naming fuzz.csv and a line, from %q", err, data)
				}
				continue
			}
			checkCSVRows(t, src, len(values), data)
		}
	})
}

// FuzzCSVChanges replaces a file by arbitrary bytes: either the reload is refused (an
// error naming the file and a line) and the rows read before stay, or what Changes sends
// — changed and new rows, and a Deleted row per key gone — turns the old rows into exactly
// the new file's rows.
func FuzzCSVChanges(f *testing.F) {
	for _, old := range csvSeeds[:2] {
		for _, s := range csvSeeds {
			f.Add([]byte(old), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, old, data []byte) {
		path := csvFile(t, string(old))
		src, err := OpenCSV(path, Mapping{})
		if err != nil {
			return
		}
		rows := checkCSVRows(t, src, 1, old)
		_, wm := csvSnapshot(t, src)
		rewrite(t, path, string(data), 1)
		applied := maps.Clone(rows)
		_, err = src.Changes(context.Background(), wm, func(r cache.Row) error {
			if r.Deleted {
				delete(applied, cache.Key(r.Key))
			} else {
				applied[cache.Key(r.Key)] = r
			}
			return nil
		})
		if err != nil {
			if want := "store: reload csv: " + path + ":"; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("got error %q, want prefix %q", err, want)
			}
			for nk, r := range rows {
				if got, err := src.Get(context.Background(), nk); err != nil || !sameRow(got, r) {
					t.Fatalf("Get(%q) after a refused reload: got %+v, %v, want the row before %+v", nk, got, err, r)
				}
			}
			return
		}
		want := checkCSVRows(t, src, 1, data)
		if len(applied) != len(want) {
			t.Fatalf("got %d rows after applying the changes, want %d, from %q to %q", len(applied), len(want), old, data)
		}
		for nk, r := range want {
			if got, ok := applied[nk]; !ok || !sameRow(got, r) {
				t.Fatalf("key %q: got %+v after applying the changes, want %+v", nk, got, r)
			}
		}
	})
}
