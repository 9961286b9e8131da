package cache

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/internal/logtest"
	"wxlookup/internal/metrictest"
)

// TestRefresh: an update, an insert and a delete reported by Changes are visible after the
// next refresh, and not before.
func TestRefresh(t *testing.T) {
	src := newFakeSource(100)
	src.tombstones = true
	c := newTestCache(t, src, Config{})
	startReady(t, c)

	src.set(fakeKey(1), "moved")
	src.set("NEW-1", "here")
	src.del(fakeKey(2))
	mustFind(t, c, fakeKey(1), fakeLine(1)) // not yet: no refresh has run
	mustMiss(t, c, "new-1")

	if err := c.runStep(false); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	mustFind(t, c, fakeKey(1), "["+fakeKey(1)+"] moved")
	mustFind(t, c, "new-1", "[NEW-1] here")
	mustMiss(t, c, fakeKey(2))
	mustFind(t, c, fakeKey(3), fakeLine(3))
	st := c.Status()
	if !st.Complete || st.Entries != 100 || st.RowsLoaded != 103 {
		t.Errorf("after refresh: got complete %v, entries %d, rows loaded %d; want true, 100, 103", st.Complete, st.Entries, st.RowsLoaded)
	}
	// The watermark moved: the next refresh delivers nothing again.
	if err := c.runStep(false); err != nil {
		t.Fatal(err)
	}
	if got := c.Status().RowsLoaded; got != 103 {
		t.Errorf("got rows loaded %d after an idle refresh, want 103", got)
	}
}

// TestReconcileKeyScan: a polled source without range checksums that can list its keys
// has its deletes found by a scan of every key; a failed scan deletes nothing.
func TestReconcileKeyScan(t *testing.T) {
	src := newFakeSource(100)
	c := newTestCache(t, keysSource{pollSource{src}}, Config{})
	startReady(t, c)

	src.del(fakeKey(5))
	if err := c.runStep(false); err != nil {
		t.Fatal(err)
	}
	mustFind(t, c, fakeKey(5), fakeLine(5)) // a refresh cannot see it
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(5))
	mustFind(t, c, fakeKey(6), fakeLine(6))
	if st := c.Status(); st.Entries != 99 || !st.Complete || st.Ranges != 0 {
		t.Errorf("got entries %d, complete %v, ranges %d; want 99, true, 0", st.Entries, st.Complete, st.Ranges)
	}

	src.del(fakeKey(7))
	src.fail(nil, nil, errors.New("scan broke"), nil)
	if err := c.runStep(true); err == nil {
		t.Fatal("reconcile with a failing key scan succeeded")
	}
	mustFind(t, c, fakeKey(7), fakeLine(7))
	src.fail(nil, nil, nil, nil)
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(7))
}

// TestNoReconcileWithoutKeysOrRanges: a source that is neither a RangeSource nor a
// KeyLister reports its own deletes; Reconcile asks it for nothing more.
func TestNoReconcileWithoutKeysOrRanges(t *testing.T) {
	src := newFakeSource(10)
	src.tombstones = true
	c := newTestCache(t, pollSource{src}, Config{Mode: ModeCSV})
	startReady(t, c)
	src.del(fakeKey(3))
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(3))
	if got := src.gets.Load() + src.checksums.Load() + src.readRanges.Load(); got != 0 {
		t.Errorf("got %d reconcile calls to the source, want 0", got)
	}
	if st := c.Status(); st.Mode != ModeCSV || st.Ranges != 0 {
		t.Errorf("got mode %q, %d ranges; want csv, 0", st.Mode, st.Ranges)
	}
}

// TestReconcileSparesRowsAddedDuringScan: a row that reaches the cache while the key scan
// runs (here by read-through) is not removed because the scan did not see it.
func TestReconcileSparesRowsAddedDuringScan(t *testing.T) {
	src := newFakeSource(200)
	c := newTestCache(t, keysSource{pollSource{src}}, Config{MaxBytes: minMaxBytes}) // incomplete
	startReady(t, c)
	for i := range 10 { // make room, so that ristretto admits the row read through below
		src.del(fakeKey(i))
	}
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	var midScan string
	src.hooks(nil, func() {
		src.set("LATE-1", "new")
		line, _, _, _ := lookup(c, "late-1") // read through and cached mid-scan
		midScan = line
	})
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	if midScan != "[LATE-1] new" {
		t.Fatalf("got %q from the read-through during the scan", midScan)
	}
	src.hooks(nil, nil)
	gets := src.gets.Load()
	mustFind(t, c, "late-1", "[LATE-1] new")
	if src.gets.Load() != gets {
		t.Error("the row cached during the scan was removed by it")
	}
}

// stepRecorder collects the loader's steps for tests.
type stepRecorder struct {
	mu    sync.Mutex
	steps []stepEvent
	ch    chan stepEvent
}

type stepEvent struct {
	step string
	err  error
	at   time.Time
}

func recordSteps(c *Cache) *stepRecorder {
	r := &stepRecorder{ch: make(chan stepEvent, 10_000)}
	c.onStep = func(step string, err error) {
		ev := stepEvent{step, err, time.Now()}
		r.mu.Lock()
		r.steps = append(r.steps, ev)
		r.mu.Unlock()
		select {
		case r.ch <- ev:
		default:
		}
	}
	return r
}

// next waits for the next step matching ok.
func (r *stepRecorder) next(tb testing.TB, ok func(stepEvent) bool) stepEvent {
	tb.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-r.ch:
			if ok(ev) {
				return ev
			}
		case <-timeout:
			tb.Fatal("timed out waiting for a loader step")
		}
	}
}

// TestSourceOutage: while the source fails, lookups keep answering, errors are counted and
// shown, staleness grows; the loader recovers on its own within one interval of the
// source's return, and its retries never wait longer than the interval.
func TestSourceOutage(t *testing.T) {
	const interval = 40 * time.Millisecond
	src := newFakeSource(100)
	clock := newTestClock()
	var logs logtest.Buffer
	c := newTestCache(t, src, Config{
		RefreshInterval: interval,
		MaxBackoff:      time.Hour, // the interval must cap it
		Now:             clock.Now,
		Logger:          slog.New(slog.NewTextHandler(&logs, nil)),
	})
	steps := recordSteps(c)
	startReady(t, c)

	outage := errors.New("dial tcp: connection refused")
	src.fail(nil, outage, nil, nil)
	failed := func(ev stepEvent) bool { return ev.step == "refresh" && ev.err != nil }
	first := steps.next(t, failed)
	clock.Advance(time.Minute)
	var last stepEvent
	for range 5 {
		last = steps.next(t, failed)
		mustFind(t, c, fakeKey(9), fakeLine(9)) // answers go on from memory
	}
	st := c.Status()
	if st.Errors < 6 || len(st.RecentErrors) == 0 || !strings.Contains(st.RecentErrors[0].Err, "connection refused") ||
		st.RecentErrors[0].Step != "refresh" {
		t.Errorf("outage not recorded: errors %d, recent %+v", st.Errors, st.RecentErrors)
	}
	if st.Staleness < time.Minute {
		t.Errorf("got staleness %v during the outage, want ≥ 1m", st.Staleness)
	}
	// Six failures took at most six intervals (plus scheduling slack): back-off is capped.
	if took, limit := last.at.Sub(first.at), 5*interval+time.Second; took > limit {
		t.Errorf("5 retries took %v, want ≤ %v", took, limit)
	}

	src.set(fakeKey(9), "after")
	back := time.Now()
	src.fail(nil, nil, nil, nil)
	ok := steps.next(t, func(ev stepEvent) bool { return ev.step == "refresh" && ev.err == nil })
	if took := ok.at.Sub(back); took > interval+time.Second {
		t.Errorf("recovered %v after the source came back, want about one interval (%v)", took, interval)
	}
	mustFind(t, c, fakeKey(9), "["+fakeKey(9)+"] after")
	if st := c.Status(); st.Staleness > time.Second {
		t.Errorf("got staleness %v after recovery", st.Staleness)
	}
	if !strings.Contains(logs.String(), "connection refused") || strings.Count(logs.String(), "loader recovered") != 1 {
		t.Errorf("log does not tell the story:\n%s", logs.String())
	}
}

// TestFailureLoggedPerBackoffStep: a step failing over and over is logged at its 1st, 2nd,
// 4th, 8th, … failure and whenever the error's text changes; its recovery once.
func TestFailureLoggedPerBackoffStep(t *testing.T) {
	src := newFakeSource(10)
	var logs logtest.Buffer
	c := newTestCache(t, src, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	startReady(t, c)
	fail := func(n int, err error) {
		t.Helper()
		src.fail(nil, err, nil, nil)
		for range n {
			if c.runStep(false) == nil {
				t.Fatal("refresh succeeded against a failing source")
			}
		}
	}
	fail(20, errors.New("dial tcp: connection refused")) // logged at 1, 2, 4, 8, 16
	fail(3, errors.New("dial tcp: i/o timeout"))         // a new text at 21: logged; 22, 23 are not (not powers of two)
	fail(1, errors.New("dial tcp: i/o timeout"))         // 24: not logged
	src.fail(nil, nil, nil, nil)
	for range 2 {
		if err := c.runStep(false); err != nil {
			t.Fatal(err)
		}
	}
	log := logs.String()
	tests := []struct {
		text string
		want int
	}{
		{"loader step failed", 6},
		{"connection refused", 5},
		{"i/o timeout", 1},
		{"consecutive_failures=16", 1},
		{"consecutive_failures=21", 1},
		{"loader recovered", 1},
		{"failed_attempts=24", 1},
	}
	for _, tt := range tests {
		if got := strings.Count(log, tt.text); got != tt.want {
			t.Errorf("got %d lines with %q, want %d:\n%s", got, tt.text, tt.want, log)
		}
	}
	if st := c.Status(); st.Errors != 24 {
		t.Errorf("got %d errors counted, want 24 (every failure counts, only the log is thinned)", st.Errors)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name              string
		refresh, max, cap time.Duration
	}{
		{"interval caps", time.Second, 30 * time.Second, time.Second},
		{"max caps", time.Minute, 30 * time.Second, 30 * time.Second},
		{"tiny", time.Millisecond, time.Hour, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Cache{cfg: Config{RefreshInterval: tt.refresh, MaxBackoff: tt.max}}
			var prevMax time.Duration
			for n := 1; n <= 64; n++ {
				var lo, hi time.Duration = 1 << 62, 0
				for range 200 {
					d := c.backoff(n)
					lo, hi = min(lo, d), max(hi, d)
				}
				if hi > tt.cap {
					t.Fatalf("backoff(%d) reached %v, over the cap %v", n, hi, tt.cap)
				}
				if lo < tt.cap/32 {
					t.Fatalf("backoff(%d) = %v, below cap/32", n, lo)
				}
				if hi < prevMax/2 {
					t.Fatalf("backoff(%d) ≤ %v shrank from %v", n, hi, prevMax)
				}
				prevMax = max(prevMax, hi)
				if n >= 5 && lo < tt.cap/2 {
					t.Fatalf("backoff(%d) = %v, not yet at the cap %v", n, lo, tt.cap)
				}
			}
		})
	}
}

// TestPanicRecovery: a source that panics in the loader or in a read-through does not end
// the process. The panic is logged with its stack and counted, the loader starts again
// after a back-off and recovers once the source behaves, and Lookup answers throughout.
func TestPanicRecovery(t *testing.T) {
	src := newFakeSource(300)
	reg := prometheus.NewPedanticRegistry()
	var logs logtest.Buffer
	c := newTestCache(t, src, Config{MaxBackoff: 20 * time.Millisecond, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	src.with(func(f *fakeSource) { f.panics = "Snapshot" })
	steps := recordSteps(c)
	c.Start()
	if err := c.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("got %v from a warm whose snapshot panics, want the panic as an error", err)
	}
	src.with(func(f *fakeSource) { f.panics = "" })
	steps.next(t, func(ev stepEvent) bool { return ev.step == "warm" && ev.err == nil }) // restarted on its own
	mustFind(t, c, fakeKey(1), fakeLine(1))

	src.with(func(f *fakeSource) { f.panics = "Changes" })
	src.set(fakeKey(2), "changed")
	if err := c.runStep(false); err == nil {
		t.Fatal("a refresh whose source panicked succeeded")
	}
	mustFind(t, c, fakeKey(1), fakeLine(1)) // answers go on
	src.with(func(f *fakeSource) { f.panics = "" })
	if err := c.runStep(false); err != nil { // the loop was started again and works
		t.Fatal(err)
	}
	mustFind(t, c, fakeKey(2), "["+fakeKey(2)+"] changed")

	// The warm may have panicked more than once before the test stopped it: the loop
	// starts again on its own.
	panics := c.Status().Panics
	if got := metrictest.Value(t, reg, "wxlookup_loader_panics_total", "goroutine", "loader"); panics < 2 || got != float64(panics) {
		t.Errorf("got %v loader panics counted, Status.Panics %d; want the same, at least 2", got, panics)
	}
	log := logs.String()
	if strings.Count(log, "recovered from a panic") != int(panics) || !strings.Contains(log, "fake source: Changes panics") ||
		!strings.Contains(log, "runtime/debug.Stack") {
		t.Errorf("the log does not show the panics with their stacks:\n%s", log)
	}
}

// TestReadThroughPanic: a panic in a read-through's source call is an error for that
// lookup, counted; the process and the next lookups go on.
func TestReadThroughPanic(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c, src := newIncompleteCache(t, Config{Registerer: reg})
	src.with(func(f *fakeSource) { f.panics = "Get" })
	_, _, found, err := lookup(c, "panic-1")
	if err == nil || found || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("got found %v, err %v; want the panic as an error", found, err)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_panics_total", "goroutine", "read_through"); got != 1 {
		t.Errorf("got %v read-through panics counted, want 1", got)
	}
	src.with(func(f *fakeSource) { f.panics = "" })
	src.set("PANIC-1", "fine")
	mustFind(t, c, "panic-1", "[PANIC-1] fine")
}

// TestOverBudgetLogged: a table larger than the budget is loaded incomplete with one clear
// log line; a complete table that outgrows the budget turns incomplete the same way.
func TestOverBudgetLogged(t *testing.T) {
	var logs logtest.Buffer
	src := newFakeSource(500)
	c := newTestCache(t, src, Config{MaxBytes: 32 << 10, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	startReady(t, c)
	st := c.Status()
	if st.Complete {
		t.Fatal("a table over the budget is complete")
	}
	if st.CostBytes > st.MaxBytes || st.Entries == 0 {
		t.Errorf("got cost %d of %d, entries %d", st.CostBytes, st.MaxBytes, st.Entries)
	}
	if got := strings.Count(logs.String(), "exceeds WXLOOKUP_CACHE_MAX_BYTES"); got != 1 ||
		!strings.Contains(logs.String(), "(500 rows, ") {
		t.Errorf("got %d lines, want one naming 500 rows:\n%s", got, logs.String())
	}

	// Growth: 20 rows fit; 200 more do not.
	logs.Reset()
	src2 := newFakeSource(20)
	c2 := newTestCache(t, src2, Config{MaxBytes: 32 << 10, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	startReady(t, c2)
	if !c2.Status().Complete {
		t.Fatal("20 rows do not fit 32 KiB")
	}
	for i := 1000; i < 1200; i++ {
		src2.set(fakeKey(i), fakeValue(i))
	}
	if err := c2.runStep(false); err != nil {
		t.Fatal(err)
	}
	if st := c2.Status(); st.Complete || st.CostBytes > st.MaxBytes {
		t.Errorf("after growth: got complete %v, cost %d of %d", st.Complete, st.CostBytes, st.MaxBytes)
	}
	if !strings.Contains(logs.String(), "exceeds WXLOOKUP_CACHE_MAX_BYTES") {
		t.Errorf("growth over the budget not logged:\n%s", logs.String())
	}
	mustFind(t, c2, fakeKey(1100), "["+fakeKey(1100)+"] "+fakeValue(1100)) // held, or read through
}

// TestWarmDuplicateKeys: two stored keys that normalise alike make one entry (the later
// row in snapshot order wins), counted once.
func TestWarmDuplicateKeys(t *testing.T) {
	src := newFakeSource(0)
	src.set("A7-001", "upper")
	src.set("a7-001", "lower") // sorts after "A7-001"
	src.set("B1", "b")
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	mustFind(t, c, "A7-001", "[a7-001] lower")
	mustFind(t, c, "b1", "[B1] b")
	if st := c.Status(); st.Entries != 2 || !st.Complete {
		t.Errorf("got entries %d, complete %v; want 2, true", st.Entries, st.Complete)
	}
	// Both rows are the source's: a reconcile pass finds the range in step, and re-reading
	// it (once, as the sums count rows, not entries) keeps the later row.
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	mustFind(t, c, "A7-001", "[a7-001] lower")
	if got := src.readRanges.Load(); got != 0 {
		t.Errorf("got %d re-reads, want 0: the range's sum counts both rows", got)
	}
}

func BenchmarkWarm100k(b *testing.B) {
	src := newFakeSource(100_000)
	b.ReportAllocs()
	for b.Loop() {
		c, err := New(src, Config{Logger: slog.New(slog.DiscardHandler), RefreshInterval: time.Hour, ReconcileInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		c.Start()
		if err := c.WaitReady(context.Background()); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// TestNextRefresh: refreshes start RefreshInterval apart whatever each took, with a tenth
// of the interval left between two when one takes longer than that.
func TestNextRefresh(t *testing.T) {
	for _, tc := range []struct {
		name       string
		took, want time.Duration
	}{
		{"instant", 0, time.Second},
		{"300ms", 300 * time.Millisecond, 700 * time.Millisecond},
		{"most of the interval", 950 * time.Millisecond, 100 * time.Millisecond},
		{"longer than the interval", 3 * time.Second, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextRefresh(time.Second, tc.took); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
