package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/internal/logtest"
	"wxlookup/internal/metrictest"
)

// TestReloadUnderLookups reloads in place while readers look up every key that exists
// before and after: none may be missed, and a changed row answers with its old or new
// line. Between reloads the source changes behind the loader's back (no change reported):
// the sweep must remove exactly the deleted rows, and the changed and inserted ones must be
// there. The cache keeps its one table throughout.
func TestReloadUnderLookups(t *testing.T) {
	const (
		n       = 5000
		reloads = 5
	)
	src := newFakeSource(n)
	reg := prometheus.NewPedanticRegistry()
	c := newTestCache(t, src, Config{RangeRows: 100, Registerer: reg})
	startReady(t, c)
	tbl := c.cur.Load()
	before := c.Status()

	// Rows 0-999 are changed back and forth (either line is right), 1000-3999 never
	// change, and each reload deletes 100 rows from 4000 up and inserts 50 new ones.
	changedLine := func(i int) string { return "[" + fakeKey(i) + "] moved" }
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		lookups atomic.Int64
		bad     atomic.Value
	)
	for g := range 4 {
		wg.Go(func() {
			ctx := context.Background()
			keys := make([][]byte, 4000)
			for i := range keys {
				keys[i] = []byte(Key(fakeKey(i)))
			}
			for i := g; !stop.Load(); i = (i + 7) % len(keys) {
				line, _, found, err := c.Lookup(ctx, keys[i])
				lookups.Add(1)
				if err != nil || !found || (string(line) != fakeLine(i) && (i >= 1000 || string(line) != changedLine(i))) {
					bad.Store(fmt.Sprintf("Lookup(%q): got %q, found %v, err %v", keys[i], line, found, err))
					return
				}
			}
		})
	}
	deleted, inserted := 0, 0
	for r := range reloads {
		for i := r * 100; i < r*100+100; i++ {
			if r%2 == 0 {
				src.setQuiet(fakeKey(i), "moved")
			} else {
				src.setQuiet(fakeKey(i), fakeValue(i))
			}
		}
		for i := 4000 + r*100; i < 4100+r*100; i++ {
			src.delQuiet(fakeKey(i))
			deleted++
		}
		for i := range 50 {
			src.setQuiet(fmt.Sprintf("N%d-%02d", r, i), "new")
			inserted++
		}
		if err := c.Reload(context.Background()); err != nil {
			t.Fatalf("Reload: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if msg := bad.Load(); msg != nil {
		t.Fatalf("during a reload: %s", msg)
	}

	if c.cur.Load() != tbl {
		t.Error("a reload replaced the table")
	}
	after := c.Status()
	if want := before.Hits + uint64(lookups.Load()); after.Hits != want {
		t.Errorf("got hits %d after reloads, want %d", after.Hits, want)
	}
	if want := int64(n - deleted + inserted); !after.Complete || after.Entries != want || after.LastReload.IsZero() {
		t.Errorf("got complete %v, entries %d; want true, %d", after.Complete, after.Entries, want)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_rows_removed_total", "by", "reload"); got != float64(deleted) {
		t.Errorf("got %v rows swept, want exactly the %d deleted", got, deleted)
	}
	for i := 4000; i < 4000+deleted; i++ {
		mustMiss(t, c, fakeKey(i))
	}
	for i := 4000 + deleted; i < n; i++ {
		mustFind(t, c, fakeKey(i), fakeLine(i))
	}
	mustFind(t, c, "N4-49", "[N4-49] new")
	mustFind(t, c, fakeKey(450), changedLine(450))
	mustFind(t, c, fakeKey(350), fakeLine(350))
	if got := src.snapshots.Load(); got != 1+reloads {
		t.Errorf("got %d snapshots, want %d (warm + reloads)", got, 1+reloads)
	}
	if got := groupCount(tbl); got != after.Entries {
		t.Errorf("got %d entries in groups, %d counted", got, after.Entries)
	}
}

// mallocs returns how many heap allocations f made (in the whole process: f's goroutine,
// the loader's, and ristretto's).
func mallocs(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

// TestReloadAllocatesPerChange: a reload allocates in proportion to the rows that changed,
// not to the table: an unchanged row keeps its entry and only changes group.
func TestReloadAllocatesPerChange(t *testing.T) {
	const n = 20_000
	src := newFakeSource(n)
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	ctx := context.Background()
	round := 0
	reload := func(changed int) uint64 {
		t.Helper()
		round++
		for i := range changed {
			src.setQuiet(fakeKey(i), fmt.Sprintf("moved %d", round))
		}
		src.Snapshot(ctx, func(Row) error { return nil }) // the fake sorts its rows now, not in the measure
		var err error
		allocs := mallocs(func() { err = c.Reload(ctx) })
		if err != nil {
			t.Fatal(err)
		}
		return allocs
	}
	reload(0) // settle the loader's own buffers
	tests := []struct {
		name    string
		changed int
		max     uint64
	}{
		// The fixed part: the kick, the range groups (n/4096), the log line, ristretto's
		// bookkeeping. Per changed row: the entry and its bytes, ristretto's item.
		{"nothing changed", 0, 300},
		{"1% changed", n / 100, 300 + 8*n/100},
		{"5% changed", n / 20, 300 + 8*n/20},
	}
	var poolSlack uint64
	if raceEnabled {
		poolSlack = n // up to one pool refill per row read (see raceEnabled)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reload(tt.changed)
			t.Logf("%d allocations to reload %d rows, %d of them changed", got, n, tt.changed)
			if got > tt.max+poolSlack {
				t.Errorf("got %d allocations, want at most %d", got, tt.max+poolSlack)
			}
		})
	}
	mustFind(t, c, fakeKey(1), fmt.Sprintf("[%s] moved %d", fakeKey(1), round))
}

// TestReloadFailureKeepsCache: a snapshot that fails half-way leaves every row answering
// (rows it delivered with their new lines), sweeps nothing, and suspends reconcile; the
// loader then retries the snapshot, which sweeps.
func TestReloadFailureKeepsCache(t *testing.T) {
	src := newFakeSource(50)
	c := newTestCache(t, src, Config{RangeRows: 10})
	startReady(t, c)
	src.setQuiet(fakeKey(3), "moved")
	src.delQuiet(fakeKey(40))
	src.with(func(f *fakeSource) {
		f.snapshotHook = func(n int) error {
			if n == 20 {
				return errors.New("snapshot broke")
			}
			return nil
		}
	})
	if err := c.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "snapshot broke") {
		t.Fatalf("got %v from a failing reload, want its error", err)
	}
	mustFind(t, c, fakeKey(3), "["+fakeKey(3)+"] moved") // delivered before the failure
	mustFind(t, c, fakeKey(40), fakeLine(40))            // not judged
	mustFind(t, c, fakeKey(45), fakeLine(45))
	st := c.Status()
	if st.Errors != 1 || st.RecentErrors[0].Step != "reload" || st.Ranges != 0 || !st.Complete {
		t.Errorf("got errors %d %+v, ranges %d, complete %v; want 1 reload error, 0 ranges, complete",
			st.Errors, st.RecentErrors, st.Ranges, st.Complete)
	}
	src.with(func(f *fakeSource) { f.snapshotHook = nil })
	if err := c.runStep(false); err != nil { // the loader's next step is the snapshot again
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(40))
	if st := c.Status(); st.Entries != 49 || st.Ranges != 5 || src.snapshots.Load() != 3 {
		t.Errorf("got %d entries, %d ranges, %d snapshots; want 49, 5, 3", st.Entries, st.Ranges, src.snapshots.Load())
	}
}

// TestReloadRegainsCompleteness: a table that did not fit the budget is held completely
// again by the reload after it shrank to fit.
func TestReloadRegainsCompleteness(t *testing.T) {
	var logs logtest.Buffer
	src := newFakeSource(300)
	c := newTestCache(t, src, Config{MaxBytes: 40 << 10, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	startReady(t, c)
	if c.Status().Complete {
		t.Fatal("300 rows fit 40 KiB")
	}
	for i := 100; i < 300; i++ {
		src.delQuiet(fakeKey(i))
	}
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := c.Status()
	if !st.Complete || st.Entries != 100 {
		t.Fatalf("got complete %v, %d entries; want true, 100\n%s", st.Complete, st.Entries, logs.String())
	}
	gets := src.gets.Load()
	for i := range 100 {
		mustFind(t, c, fakeKey(i), fakeLine(i))
	}
	mustMiss(t, c, fakeKey(200))
	if got := src.gets.Load() - gets; got != 0 {
		t.Errorf("got %d read-throughs from a complete table, want 0", got)
	}
}

// TestReloadRewritesFills: a row held as a read-through fill (which expires) and then
// delivered by a snapshot is held without expiry afterwards, so that a complete table
// cannot lose it.
func TestReloadRewritesFills(t *testing.T) {
	src := newFakeSource(300)
	c := newTestCache(t, src, Config{MaxBytes: 40 << 10})
	startReady(t, c)
	tbl := c.cur.Load()
	filled := -1
	for i := range 300 {
		gets := src.gets.Load()
		mustFind(t, c, fakeKey(i), fakeLine(i))
		if src.gets.Load() > gets && tbl.fills.n > 0 {
			filled = i
			break
		}
	}
	if filled < 0 {
		t.Fatal("no row was read through and kept")
	}
	for i := range 300 {
		if i%3 != 0 && i != filled {
			src.delQuiet(fakeKey(i))
		}
	}
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !c.Status().Complete {
		t.Fatal("the table does not fit after the deletes")
	}
	key := Key(fakeKey(filled))
	if e := tbl.get(hashKey([]byte(key)), []byte(key)); e == nil || e.expires() != 0 || e.grp == tbl.fills {
		t.Errorf("got %+v for the row once filled, want a loaded entry without expiry", e)
	}
}

// heapObjects reads the bytes of heap objects, live or not yet swept, without stopping
// the world.
func heapObjects(s []rtmetrics.Sample) uint64 {
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkReloadWhileServing reloads 200,000 rows in place, 1% of them changed, while
// four goroutines look keys up, and reports the heap: steady (after a collection, before
// the reload), its peak during the reload (objects not yet collected included, sampled
// every 100 µs), after (collected), and the bytes the reload allocated.
//
//	go test -run '^$' -bench ReloadWhileServing -benchtime 5x ./cache/
func BenchmarkReloadWhileServing(b *testing.B) {
	const n = 200_000
	src := newFakeSource(n)
	c := newTestCache(b, src, Config{})
	startReady(b, c)
	ctx := context.Background()
	keys := make([][]byte, n) // so that the lookups allocate nothing
	for i := range keys {
		keys[i] = []byte(Key(fakeKey(i)))
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; !stop.Load(); i = (i + 13) % n {
				if _, _, found, _ := c.Lookup(ctx, keys[i]); !found {
					b.Errorf("Lookup(%q) missed during a reload", keys[i])
					return
				}
			}
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var steady, peak, after, allocated float64
	round := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		round++
		for i := range n / 100 {
			k := (i*97 + round) % n
			src.setQuiet(fakeKey(k), fmt.Sprintf("%s r%d", fakeValue(k), round))
		}
		src.Snapshot(ctx, func(Row) error { return nil }) // sort outside the measure
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		steady = float64(ms.HeapAlloc)
		total := ms.TotalAlloc
		var high atomic.Uint64
		done := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(100 * time.Microsecond)
			defer tick.Stop()
			for {
				high.Store(max(high.Load(), heapObjects(sample)))
				select {
				case <-done:
					return
				case <-tick.C:
				}
			}
		}()
		b.StartTimer()
		if err := c.Reload(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		close(done)
		<-sampled
		runtime.ReadMemStats(&ms)
		allocated = float64(ms.TotalAlloc - total)
		peak = float64(high.Load())
		runtime.GC()
		runtime.ReadMemStats(&ms)
		after = float64(ms.HeapAlloc)
		b.StartTimer()
	}
	const mib = 1 << 20
	b.ReportMetric(steady/mib, "steady-MiB")
	b.ReportMetric(peak/mib, "peak-MiB")
	b.ReportMetric(after/mib, "after-MiB")
	b.ReportMetric(peak/steady, "peak/steady")
	b.ReportMetric(allocated/mib, "alloc-MiB/reload")
}

// TestReloadRate: a reload of a warmed cache streams at most Config.ReloadRate rows a
// second after its first page, the first load is not limited, and a negative rate lifts
// the limit.
func TestReloadRate(t *testing.T) {
	const pages = 6
	src := newFakeSource(pages * reloadPage)
	c := newTestCache(t, src, Config{ReloadRate: 20 * reloadPage})
	if c.reloadLimiter() != nil {
		t.Error("the first load is limited: nothing is answered from the cache before it ends")
	}
	startReady(t, c)
	lim := c.reloadLimiter()
	if lim == nil || lim.Limit() != 20*reloadPage || lim.Burst() != reloadPage {
		t.Fatalf("got limiter %v, want %d rows a second in pages of %d", lim, 20*reloadPage, reloadPage)
	}
	start := time.Now()
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first page goes at once, the other five at 20 pages a second.
	want := time.Duration(pages-1) * time.Second / 20
	if took := time.Since(start); took < want {
		t.Errorf("a reload of %d rows took %s, want at least %s at %d rows a second", pages*reloadPage, took, want, 20*reloadPage)
	}
	if st := c.Status(); st.Entries != pages*reloadPage || !st.Complete {
		t.Errorf("got %d entries, complete %v; want %d, true", st.Entries, st.Complete, pages*reloadPage)
	}

	free := newTestCache(t, newFakeSource(10), Config{ReloadRate: -1})
	startReady(t, free)
	if lim := free.reloadLimiter(); lim != nil {
		t.Errorf("ReloadRate -1: got limiter %v, want none", lim)
	}
}

// TestReloadRateStops: closing the cache ends a reload that waits for its next page at
// once, not after the wait.
func TestReloadRateStops(t *testing.T) {
	src := newFakeSource(3 * reloadPage)
	c := newTestCache(t, src, Config{ReloadRate: 100}) // a page every 10 s
	startReady(t, c)
	waiting := make(chan struct{})
	src.with(func(f *fakeSource) {
		f.snapshotHook = func(n int) error {
			if n == reloadPage+1 { // the first page went; the second waits its turn
				close(waiting)
			}
			return nil
		}
	})
	reloaded := make(chan error, 1)
	go func() { reloaded <- c.Reload(context.Background()) }()
	<-waiting
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a reload's next page (10 s at 100 rows a second)")
	}
	if err := <-reloaded; !errors.Is(err, ErrNotReady) {
		t.Errorf("got %v from the reload cut short, want cache closed (ErrNotReady)", err)
	}
}
