package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"wxlookup/cache"
)

// CSV is a cache.Source over a CSV file (OpenCSV) or fixed bytes (NewCSV), such as the
// embedded demo rows. The header row names the columns; the mapping's KeyColumn and
// ValueColumns pick them (matched ignoring case and surrounding spaces; Table and
// UpdatedColumn are not used). Keys must be unique under cache.Key and non-empty.
//
// A file is re-read when Snapshot, Changes or Keys finds its modification time or size
// changed and its content hash different. A file that does not parse is reported (file and
// line) and the rows of the last good version are kept. Replace the file atomically (write
// a temporary file, then rename it over) so no reader sees it half written.
//
// Rows handed out share their Values with the source: treat them as read-only.
// CSV is safe for concurrent use.
type CSV struct {
	name   string // file path, or the name given to NewCSV
	path   string // "" when there is no file to re-read
	key    string
	values []string
	mu     sync.Mutex // guards the fields below; held for reloads, not while streaming
	cur    *csvVersion
	prev   *csvVersion // the version before cur, for diffs; nil at first
	stamp  fileStamp   // of the file cur was read from (or last found unchanged)
	lastWM time.Time
}

var _ cache.Source = (*CSV)(nil)

// csvVersion is one parsed content, immutable once built.
type csvVersion struct {
	wm    time.Time            // the watermark of this version
	rows  map[string]cache.Row // by cache.Key of the key
	order []string             // normalised keys in file order
	hash  [sha256.Size]byte
}

// fileStamp is what decides whether a file might have changed without reading it.
type fileStamp struct {
	mtime time.Time
	size  int64
}

// OpenCSV reads the CSV file at path with mapping m (empty settings take the Default…
// names) and returns a source that follows changes to it. It fails, naming file and line,
// when the file cannot be read or parsed.
func OpenCSV(path string, m Mapping) (*CSV, error) {
	c, err := newCSV(path, path, m)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("store: open csv: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: open csv: %w", err)
	}
	v, err := c.parse(data)
	if err != nil {
		return nil, fmt.Errorf("store: open csv: %w", err)
	}
	v.wm = c.watermark()
	c.cur, c.stamp = v, stampOf(fi)
	return c, nil
}

// NewCSV returns a source over fixed CSV bytes, such as examples.LocationsCSV; name appears
// in errors and String. Its content never changes.
func NewCSV(name string, data []byte, m Mapping) (*CSV, error) {
	c, err := newCSV(name, "", m)
	if err != nil {
		return nil, err
	}
	v, err := c.parse(data)
	if err != nil {
		return nil, fmt.Errorf("store: open csv: %w", err)
	}
	v.wm = c.watermark()
	c.cur = v
	return c, nil
}

func newCSV(name, path string, m Mapping) (*CSV, error) {
	m = m.WithDefaults()
	if strings.TrimSpace(m.KeyColumn) == "" {
		return nil, errors.New("store: open csv: mapping: KeyColumn is empty")
	}
	for i, v := range m.ValueColumns {
		if strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("store: open csv: mapping: ValueColumns[%d] is empty", i)
		}
	}
	return &CSV{name: name, path: path, key: m.KeyColumn, values: m.ValueColumns}, nil
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{mtime: fi.ModTime(), size: fi.Size()} }

// String describes the source, for example "csv examples/locations.csv (1000 rows)".
func (c *CSV) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("csv %s (%d rows)", c.name, len(c.cur.order))
}

// watermark returns a new watermark, later than every one before. Callers hold c.mu.
func (c *CSV) watermark() time.Time {
	wm := time.Now().Round(0)
	if !wm.After(c.lastWM) {
		wm = c.lastWM.Add(time.Nanosecond)
	}
	c.lastWM = wm
	return wm
}

// parse parses data into a new version, or returns an error of the form "name:line: …".
// Callers hold c.mu or own c exclusively.
func (c *CSV) parse(data []byte) (*csvVersion, error) {
	v := &csvVersion{rows: map[string]cache.Row{}, hash: sha256.Sum256(data)}
	data = bytes.TrimPrefix(data, []byte("\uFEFF")) // Excel writes a BOM before UTF-8 CSV
	if !utf8.Valid(data) {
		line := 1 + bytes.Count(data[:invalidUTF8At(data)], []byte("\n"))
		return nil, fmt.Errorf("%s:%d: not UTF-8 (save the file as CSV UTF-8)", c.name, line)
	}
	r := csv.NewReader(bytes.NewReader(data))
	header, err := r.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%s:1: no header row", c.name)
	}
	if err != nil {
		return nil, c.readError(err, nil, 0)
	}
	cols := make([]int, 1+len(c.values))
	for i, want := range append([]string{c.key}, c.values...) {
		cols[i] = -1
		for j, h := range header {
			if strings.EqualFold(strings.TrimSpace(h), strings.TrimSpace(want)) {
				if cols[i] >= 0 {
					return nil, fmt.Errorf("%s:1: column %q appears twice in the header", c.name, want)
				}
				cols[i] = j
			}
		}
		if cols[i] < 0 {
			return nil, fmt.Errorf("%s:1: no column %q in the header %q", c.name, want, header)
		}
	}
	lineOf := map[string]int{}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, c.readError(err, rec, len(header))
		}
		line, _ := r.FieldPos(0)
		key := strings.TrimSpace(rec[cols[0]])
		nk := cache.Key(key)
		if nk == "" {
			return nil, fmt.Errorf("%s:%d: empty %s", c.name, line, c.key)
		}
		if first, dup := lineOf[nk]; dup {
			return nil, fmt.Errorf("%s:%d: %s %q duplicates line %d", c.name, line, c.key, key, first)
		}
		lineOf[nk] = line
		row := cache.Row{Key: key, Values: make([]string, len(cols)-1)}
		for i, col := range cols[1:] {
			row.Values[i] = strings.TrimSpace(rec[col])
		}
		v.rows[nk] = row
		v.order = append(v.order, nk)
	}
	return v, nil
}

// readError turns an encoding/csv error into "name:line: problem".
func (c *CSV) readError(err error, rec []string, want int) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if errors.Is(pe.Err, csv.ErrFieldCount) {
		return fmt.Errorf("%s:%d: %d fields, want %d as in the header", c.name, pe.StartLine, len(rec), want)
	}
	return fmt.Errorf("%s:%d: %w", c.name, pe.Line, pe.Err)
}

// invalidUTF8At returns the offset of the first invalid UTF-8 sequence in b.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// reload re-reads the file if it may have changed and returns the current and previous
// versions. On any error the current version stays. It holds c.mu while it works.
func (c *CSV) reload() (cur, prev *csvVersion, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.path == "" {
		return c.cur, c.prev, nil
	}
	fi, err := os.Stat(c.path)
	if err != nil {
		return c.cur, c.prev, fmt.Errorf("store: reload csv: %w", err)
	}
	st := stampOf(fi)
	if st == c.stamp {
		return c.cur, c.prev, nil
	}
	data, err := os.ReadFile(c.path)
	if err != nil {
		return c.cur, c.prev, fmt.Errorf("store: reload csv: %w", err)
	}
	if fi, err := os.Stat(c.path); err != nil || stampOf(fi) != st {
		// Written to while we read: take it next time, when it has settled.
		return c.cur, c.prev, nil
	}
	if sha256.Sum256(data) == c.cur.hash {
		c.stamp = st // touched, same content
		return c.cur, c.prev, nil
	}
	v, err := c.parse(data)
	if err != nil {
		return c.cur, c.prev, fmt.Errorf("store: reload csv: %w; keeping the %d rows read before", err, len(c.cur.order))
	}
	v.wm = c.watermark()
	c.prev, c.cur, c.stamp = c.cur, v, st
	return c.cur, c.prev, nil
}

// Snapshot re-reads the file if it changed, streams every row to fn in file order and
// returns the watermark of that content.
func (c *CSV) Snapshot(ctx context.Context, fn func(cache.Row) error) (time.Time, error) {
	cur, _, err := c.reload()
	if err != nil {
		return time.Time{}, err
	}
	for i, nk := range cur.order {
		if i%1024 == 0 && ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("store: snapshot %s: %w", c.name, ctx.Err())
		}
		if err := fn(cur.rows[nk]); err != nil {
			return time.Time{}, fmt.Errorf("store: snapshot %s: %w", c.name, err)
		}
	}
	return cur.wm, nil
}

// Changes re-reads the file if it changed and streams what differs from the content of
// watermark since: changed and new rows, and a Deleted row for each key gone. It returns
// the watermark of the current content. When since is not the current or the previous
// content (the caller missed more than one change), it sends every current row and no
// deletes; the loader's key scan (Keys) then removes keys that are gone.
func (c *CSV) Changes(ctx context.Context, since time.Time, fn func(cache.Row) error) (time.Time, error) {
	cur, prev, err := c.reload()
	if err != nil {
		return time.Time{}, err
	}
	wrap := func(err error) (time.Time, error) {
		return time.Time{}, fmt.Errorf("store: changes %s since %s: %w", c.name, fmtTime(since), err)
	}
	switch {
	case since.Equal(cur.wm):
		return cur.wm, nil
	case prev != nil && since.Equal(prev.wm):
		for _, nk := range prev.order {
			if _, ok := cur.rows[nk]; !ok {
				if err := fn(cache.Row{Key: prev.rows[nk].Key, Deleted: true}); err != nil {
					return wrap(err)
				}
			}
		}
		for _, nk := range cur.order {
			row := cur.rows[nk]
			if old, ok := prev.rows[nk]; ok && sameRow(old, row) {
				continue
			}
			if err := fn(row); err != nil {
				return wrap(err)
			}
		}
	default:
		for _, nk := range cur.order {
			if err := fn(cur.rows[nk]); err != nil {
				return wrap(err)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return cur.wm, nil
}

func sameRow(a, b cache.Row) bool {
	if a.Key != b.Key || len(a.Values) != len(b.Values) {
		return false
	}
	for i := range a.Values {
		if a.Values[i] != b.Values[i] {
			return false
		}
	}
	return true
}

// Keys re-reads the file if it changed and streams every key as written in it.
func (c *CSV) Keys(ctx context.Context, fn func(key string) error) error {
	cur, _, err := c.reload()
	if err != nil {
		return err
	}
	for _, nk := range cur.order {
		if err := fn(cur.rows[nk].Key); err != nil {
			return fmt.Errorf("store: keys %s: %w", c.name, err)
		}
	}
	return ctx.Err()
}

// Get returns the row whose key normalises (cache.Key) to key, from the content last read,
// or cache.ErrNotFound. It does not touch the file.
func (c *CSV) Get(_ context.Context, key string) (cache.Row, error) {
	c.mu.Lock()
	row, ok := c.cur.rows[key]
	c.mu.Unlock()
	if !ok {
		return cache.Row{}, cache.ErrNotFound
	}
	return row, nil
}
