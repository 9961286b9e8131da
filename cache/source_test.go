package cache

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fakeSource is a map-backed Source for the cache tests, with a logical clock for
// watermarks, controllable errors and blocking hooks.
type fakeSource struct {
	mu    sync.Mutex
	rows  map[string]fakeRow // by stored key
	clock int64              // advanced by every write; watermarks are time.Unix(0, clock)
	// tombstones makes deletes visible to Changes as Row.Deleted (like the CSV source);
	// without it a deleted row just vanishes (like MySQL) and only reconcile finds it.
	tombstones bool
	deleted    map[string]int64
	sorted     []Row // the rows in key order, for Snapshot; nil after a write

	snapshotErr, changesErr, keysErr, getErr error

	// getHook, if set, runs at the start of Get; a non-nil error is returned.
	getHook func(ctx context.Context, key string) error
	// keysHook, if set, runs after the first key of a Keys scan was delivered.
	keysHook func()

	gets, snapshots, changes atomic.Int64
}

type fakeRow struct {
	row Row
	at  int64
}

func newFakeSource(n int) *fakeSource {
	f := &fakeSource{rows: make(map[string]fakeRow), deleted: make(map[string]int64)}
	for i := range n {
		f.set(fakeKey(i), fakeValue(i))
	}
	return f
}

func fakeKey(i int) string   { return fmt.Sprintf("A%d-%03d", i/1000, i%1000) }
func fakeValue(i int) string { return fmt.Sprintf("车间%d号", i) }

// fakeLine is the DefaultRender line of row i.
func fakeLine(i int) string { return "[" + fakeKey(i) + "] " + fakeValue(i) }

func (f *fakeSource) String() string { return "fake source" }

// set inserts or updates a row.
func (f *fakeSource) set(key string, values ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock++
	f.sorted = nil
	f.rows[key] = fakeRow{row: Row{Key: key, Values: values}, at: f.clock}
	delete(f.deleted, key)
}

// del deletes a row.
func (f *fakeSource) del(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock++
	f.sorted = nil
	delete(f.rows, key)
	f.deleted[key] = f.clock
}

// hooks sets getHook and keysHook.
func (f *fakeSource) hooks(get func(ctx context.Context, key string) error, keys func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.getHook, f.keysHook = get, keys
}

// fail sets the errors the next calls return (nil clears them).
func (f *fakeSource) fail(snapshot, changes, keys, get error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshotErr, f.changesErr, f.keysErr, f.getErr = snapshot, changes, keys, get
}

func (f *fakeSource) Snapshot(ctx context.Context, fn func(Row) error) (time.Time, error) {
	f.snapshots.Add(1)
	f.mu.Lock()
	if err := f.snapshotErr; err != nil {
		f.mu.Unlock()
		return time.Time{}, err
	}
	wm := time.Unix(0, f.clock)
	if f.sorted == nil { // sorted once per version, so benchmarks measure the cache, not this
		f.sorted = make([]Row, 0, len(f.rows))
		for _, r := range f.rows {
			f.sorted = append(f.sorted, r.row)
		}
		slices.SortFunc(f.sorted, func(a, b Row) int { return strings.Compare(a.Key, b.Key) })
	}
	rows := f.sorted
	f.mu.Unlock()
	for _, r := range rows {
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
		if err := fn(r); err != nil {
			return time.Time{}, err
		}
	}
	return wm, nil
}

func (f *fakeSource) Changes(ctx context.Context, since time.Time, fn func(Row) error) (time.Time, error) {
	f.changes.Add(1)
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
	f.gets.Add(1)
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
