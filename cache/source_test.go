package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fakeSource is a map-backed source for the cache tests. It is a Source, a Poller (with a
// logical clock for watermarks), a KeyLister, a RangeSource (keys ordered as Go strings)
// and a Follower (a log of one Change per write), with controllable errors, panics and
// hooks.
type fakeSource struct {
	mu    sync.Mutex
	rows  map[string]fakeRow // by stored key
	clock int64              // advanced by every write; watermarks are time.Unix(0, clock)
	// tombstones makes deletes visible to Changes as Row.Deleted (like the CSV source);
	// without it a deleted row just vanishes (like MySQL) and only reconcile finds it.
	tombstones bool
	deleted    map[string]int64
	sorted     []Row // the rows in key order; nil after a write

	// The change feed: log[i] is the change after cursor i; its cursor is i+1.
	log     []Change
	grew    chan struct{} // closed (and replaced) when log grows
	purged  int           // cursors below this are gone: Follow wraps ErrResnapshot
	drop    int           // if > 0, Follow fails after delivering this many changes
	replay  int           // Follow starts this many changes before its cursor
	changed func() time.Time

	snapshotErr, changesErr, keysErr, getErr, checksumErr, readRangeErr, positionErr, followErr error
	// panics names a method that panics when called.
	panics string

	// getHook, if set, runs at the start of Get; a non-nil error is returned.
	getHook func(ctx context.Context, key string) error
	// keysHook, if set, runs after the first key of a Keys scan was delivered.
	keysHook func()
	// snapshotHook, if set, runs after row n (from 1) of a Snapshot was delivered; a
	// non-nil error ends the snapshot with it.
	snapshotHook func(n int) error
	// readRangeHook, if set, runs after the first row of a ReadRange was delivered.
	readRangeHook func()

	gets, snapshots, changes, checksums, readRanges, follows, positions atomic.Int64
	following                                                           atomic.Int64  // Follow calls in progress
	waiting                                                             chan struct{} // a Follow call waits for changes
}

type fakeRow struct {
	row Row
	at  int64
}

func newFakeSource(n int) *fakeSource {
	f := &fakeSource{rows: make(map[string]fakeRow), deleted: make(map[string]int64),
		grew: make(chan struct{}), changed: time.Now, waiting: make(chan struct{}, 64)}
	for i := range n {
		f.setQuiet(fakeKey(i), fakeValue(i))
	}
	return f
}

func fakeKey(i int) string   { return fmt.Sprintf("A%d-%03d", i/1000, i%1000) }
func fakeValue(i int) string { return fmt.Sprintf("车间%d号", i) }

// fakeLine is the DefaultRender line of row i.
func fakeLine(i int) string { return "[" + fakeKey(i) + "] " + fakeValue(i) }

func (f *fakeSource) String() string { return "fake source" }

// set inserts or updates a row, as a committed write: Changes and the feed report it.
func (f *fakeSource) set(key string, values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, existed := f.rows[key]
	f.writeLocked(key, values, true)
	ch := Change{Rows: []Row{{Key: key, Values: values}}, Inserts: 1}
	if existed {
		ch.Inserts, ch.Updates = 0, 1
	}
	f.appendLocked(ch)
}

// setQuiet inserts or updates a row without Changes or the feed seeing it: an update
// that forgot the updated column.
func (f *fakeSource) setQuiet(key string, values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writeLocked(key, values, false)
}

func (f *fakeSource) writeLocked(key string, values []string, visible bool) {
	at := int64(0)
	if visible {
		f.clock++
		at = f.clock
	}
	f.sorted = nil
	f.rows[key] = fakeRow{row: Row{Key: key, Values: values}, at: at}
	delete(f.deleted, key)
}

// del deletes a row; the feed reports it (and Changes, with tombstones).
func (f *fakeSource) del(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock++
	f.sorted = nil
	delete(f.rows, key)
	f.deleted[key] = f.clock
	f.appendLocked(Change{Rows: []Row{{Key: key, Deleted: true}}, Deletes: 1})
}

// delQuiet deletes a row without Changes or the feed seeing it (a change feed whose
// events were lost, as when binary logs are purged).
func (f *fakeSource) delQuiet(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sorted = nil
	delete(f.rows, key)
}

// heartbeat appends a change without rows.
func (f *fakeSource) heartbeat() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.appendLocked(Change{})
}

func (f *fakeSource) appendLocked(ch Change) {
	ch.Cursor = strconv.Itoa(len(f.log) + 1)
	ch.Time = f.changed()
	f.log = append(f.log, ch)
	close(f.grew)
	f.grew = make(chan struct{})
}

// with runs fn with the source locked, to set its knobs.
func (f *fakeSource) with(fn func(f *fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// hooks sets getHook and keysHook.
func (f *fakeSource) hooks(get func(ctx context.Context, key string) error, keys func()) {
	f.with(func(f *fakeSource) { f.getHook, f.keysHook = get, keys })
}

// fail sets the errors the next calls return (nil clears them).
func (f *fakeSource) fail(snapshot, changes, keys, get error) {
	f.with(func(f *fakeSource) { f.snapshotErr, f.changesErr, f.keysErr, f.getErr = snapshot, changes, keys, get })
}

// enter counts a call and panics if the test asked for it.
func (f *fakeSource) enter(method string, n *atomic.Int64) {
	n.Add(1)
	f.mu.Lock()
	p := f.panics == method
	f.mu.Unlock()
	if p {
		panic("fake source: " + method + " panics")
	}
}

// sortedLocked returns the rows in key order, each with its Sum.
func (f *fakeSource) sortedLocked() []Row {
	if f.sorted == nil { // sorted once per version, so benchmarks measure the cache, not this
		f.sorted = make([]Row, 0, len(f.rows))
		for _, r := range f.rows {
			row := r.row
			row.Sum = RowSum(row.Key, row.Values)
			f.sorted = append(f.sorted, row)
		}
		slices.SortFunc(f.sorted, func(a, b Row) int { return strings.Compare(a.Key, b.Key) })
	}
	return f.sorted
}

func (f *fakeSource) Snapshot(ctx context.Context, fn func(Row) error) (time.Time, error) {
	f.enter("Snapshot", &f.snapshots)
	f.mu.Lock()
	if err := f.snapshotErr; err != nil {
		f.mu.Unlock()
		return time.Time{}, err
	}
	wm := time.Unix(0, f.clock)
	rows, hook := f.sortedLocked(), f.snapshotHook
	f.mu.Unlock()
	for i, r := range rows {
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
		r.Sum = 0 // as a source that leaves it to the cache
		if err := fn(r); err != nil {
			return time.Time{}, err
		}
		if hook != nil {
			if err := hook(i + 1); err != nil {
				return time.Time{}, err
			}
		}
	}
	return wm, nil
}

func (f *fakeSource) Changes(ctx context.Context, since time.Time, fn func(Row) error) (time.Time, error) {
	f.enter("Changes", &f.changes)
	f.mu.Lock()
	if err := f.changesErr; err != nil {
		f.mu.Unlock()
		return time.Time{}, err
	}
	next := time.Unix(0, f.clock)
	var rows []Row
	for _, r := range f.rows {
		if r.at > since.UnixNano() {
			rows = append(rows, r.row)
		}
	}
	if f.tombstones {
		for k, at := range f.deleted {
			if at > since.UnixNano() {
				rows = append(rows, Row{Key: k, Deleted: true})
			}
		}
	}
	f.mu.Unlock()
	for _, r := range rows {
		if err := fn(r); err != nil {
			return time.Time{}, err
		}
	}
	return next, ctx.Err()
}

func (f *fakeSource) Keys(ctx context.Context, fn func(string) error) error {
	f.mu.Lock()
	if err := f.keysErr; err != nil {
		f.mu.Unlock()
		return err
	}
	keys := make([]string, 0, len(f.rows))
	for k := range f.rows {
		keys = append(keys, k)
	}
	hook := f.keysHook
	f.mu.Unlock()
	for i, k := range keys {
		if err := fn(k); err != nil {
			return err
		}
		if i == 0 && hook != nil {
			hook()
		}
	}
	return ctx.Err()
}

func (f *fakeSource) Get(ctx context.Context, key string) (Row, error) {
	f.enter("Get", &f.gets)
	f.mu.Lock()
	hook, err := f.getHook, f.getErr
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, key); err != nil {
			return Row{}, err
		}
	}
	if err != nil {
		return Row{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rows {
		if Key(r.row.Key) == key {
			return r.row, nil
		}
	}
	return Row{}, ErrNotFound
}

// inRange returns the rows of r, in key order, each with its Sum.
func (f *fakeSource) inRange(r KeyRange) []Row {
	var out []Row
	for _, row := range f.sortedLocked() {
		if row.Key >= r.From && (r.To == "" || row.Key < r.To) {
			out = append(out, row)
		}
	}
	return out
}

func (f *fakeSource) Checksum(ctx context.Context, r KeyRange) (RangeSum, error) {
	f.enter("Checksum", &f.checksums)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.checksumErr != nil {
		return RangeSum{}, f.checksumErr
	}
	var s RangeSum
	for _, row := range f.inRange(r) {
		s = s.Add(row.Sum, 1)
	}
	return s, ctx.Err()
}

func (f *fakeSource) ReadRange(ctx context.Context, r KeyRange, fn func(Row) error) error {
	f.enter("ReadRange", &f.readRanges)
	f.mu.Lock()
	if f.readRangeErr != nil {
		f.mu.Unlock()
		return f.readRangeErr
	}
	rows, hook := f.inRange(r), f.readRangeHook
	f.mu.Unlock()
	for i, row := range rows {
		if err := fn(row); err != nil {
			return err
		}
		if i == 0 && hook != nil {
			hook()
		}
	}
	return ctx.Err()
}

func (f *fakeSource) Position(ctx context.Context) (string, error) {
	f.enter("Position", &f.positions)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.positionErr != nil {
		return "", f.positionErr
	}
	return strconv.Itoa(len(f.log)), ctx.Err()
}

// Follow delivers the log from cursor (replay changes earlier, if asked), then waits for
// more until ctx is done. It fails as the knobs say: followErr at once, ErrResnapshot for
// a purged cursor, a lost connection after drop changes.
func (f *fakeSource) Follow(ctx context.Context, cursor string, fn func(Change) error) error {
	f.enter("Follow", &f.follows)
	f.following.Add(1)
	defer f.following.Add(-1)
	i, err := strconv.Atoi(cursor)
	if err != nil {
		return fmt.Errorf("fake follow: bad cursor %q", cursor)
	}
	f.mu.Lock()
	i = max(i-f.replay, 0)
	f.mu.Unlock()
	delivered := 0
	for {
		f.mu.Lock()
		switch {
		case f.followErr != nil:
			err := f.followErr
			f.mu.Unlock()
			return err
		case i < f.purged:
			f.mu.Unlock()
			return fmt.Errorf("fake follow: position %d purged: %w", i, ErrResnapshot)
		case f.drop > 0 && delivered == f.drop:
			f.mu.Unlock()
			return errors.New("fake follow: connection lost")
		}
		if i < len(f.log) {
			ch := f.log[i]
			f.mu.Unlock()
			if err := fn(ch); err != nil {
				return err
			}
			i++
			delivered++
			continue
		}
		grew := f.grew
		f.mu.Unlock()
		select {
		case f.waiting <- struct{}{}:
		default:
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pollSource exposes only Source and Poller: a source that reports its deletes (CSV).
type pollSource struct{ f *fakeSource }

func (p pollSource) String() string { return p.f.String() }
func (p pollSource) Snapshot(ctx context.Context, fn func(Row) error) (time.Time, error) {
	return p.f.Snapshot(ctx, fn)
}
func (p pollSource) Get(ctx context.Context, key string) (Row, error) { return p.f.Get(ctx, key) }
func (p pollSource) Changes(ctx context.Context, since time.Time, fn func(Row) error) (time.Time, error) {
	return p.f.Changes(ctx, since, fn)
}

// keysSource adds KeyLister: a database without range checksums.
type keysSource struct{ pollSource }

func (k keysSource) Keys(ctx context.Context, fn func(string) error) error { return k.f.Keys(ctx, fn) }
