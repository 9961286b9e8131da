package cache

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/internal/metrictest"
)

// TestRangeSumCatchesSwap: two keys of equal length swapping their values leave the XOR
// of their CRCs unchanged (the example), but not the RangeSum.
func TestRangeSumCatchesSwap(t *testing.T) {
	before := []Row{{Key: "A1", Values: []string{"X1"}}, {Key: "B2", Values: []string{"Y2"}}}
	after := []Row{{Key: "A1", Values: []string{"Y2"}}, {Key: "B2", Values: []string{"X1"}}}
	xor := func(rows []Row) uint32 {
		var x uint32
		for _, r := range rows {
			x ^= RowSum(r.Key, r.Values)
		}
		return x
	}
	sum := func(rows []Row) RangeSum {
		var s RangeSum
		for _, r := range rows {
			s = s.Add(RowSum(r.Key, r.Values), 1)
		}
		return s
	}
	if xor(before) != xor(after) {
		t.Fatalf("got XORs %d and %d: the example no longer shows the weakness", xor(before), xor(after))
	}
	if sum(before) == sum(after) {
		t.Errorf("got equal RangeSums %+v for a swap", sum(before))
	}
	if s := sum(before).Add(RowSum("A1", []string{"X1"}), -1); s != sum(before[1:]) {
		t.Errorf("got %+v after removing a row, want %+v", s, sum(before[1:]))
	}
}

// newRangeCache returns a started cache over n fake rows cut into ranges of 10 rows, with a
// registry for its metrics and its steps recorded.
func newRangeCache(t *testing.T, n int, cfg Config) (*Cache, *fakeSource, *prometheus.Registry, *stepRecorder) {
	t.Helper()
	src := newFakeSource(n)
	reg := prometheus.NewRegistry()
	cfg.RangeRows, cfg.Registerer = 10, reg
	c := newTestCache(t, src, cfg)
	steps := recordSteps(c) // before Start: the hook is not synchronised
	startReady(t, c)
	if got := c.Status().Ranges; got != (n+9)/10 {
		t.Fatalf("got %d ranges for %d rows, want %d", got, n, (n+9)/10)
	}
	return c, src, reg, steps
}

// TestReconcileRanges: reconcile finds what the changes did not report: a deleted row, two
// rows that swapped their values, an inserted row. It compares every range and re-reads
// only the one that differs.
func TestReconcileRanges(t *testing.T) {
	tests := []struct {
		name   string
		change func(src *fakeSource)
		find   map[int]string // row → line
		miss   []string
	}{
		{"deleted row", func(src *fakeSource) { src.delQuiet(fakeKey(55)) },
			map[int]string{54: fakeLine(54), 56: fakeLine(56)}, []string{fakeKey(55)}},
		{"swapped pair", func(src *fakeSource) {
			src.setQuiet(fakeKey(32), fakeValue(33))
			src.setQuiet(fakeKey(33), fakeValue(32))
		}, map[int]string{32: "[" + fakeKey(32) + "] " + fakeValue(33), 33: "[" + fakeKey(33) + "] " + fakeValue(32)}, nil},
		{"insert missed by the changes", func(src *fakeSource) { src.setQuiet(fakeKey(77)+"x", "new") },
			map[int]string{77: fakeLine(77)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, src, reg, _ := newRangeCache(t, 100, Config{})
			tt.change(src)
			if err := c.runStep(true); err != nil {
				t.Fatal(err)
			}
			for i, line := range tt.find {
				mustFind(t, c, fakeKey(i), line)
			}
			for _, k := range tt.miss {
				mustMiss(t, c, k)
			}
			if got := src.readRanges.Load(); got != 1 {
				t.Errorf("got %d ranges re-read, want 1", got)
			}
			if got := src.checksums.Load(); got != 10 {
				t.Errorf("got %d checksums, want 10 (one per range)", got)
			}
			if got := metrictest.Value(t, reg, "wxlookup_loader_reconcile_checks_total", "result", "differ"); got != 1 {
				t.Errorf("got %v differing checks, want 1", got)
			}
			// In step now: the next pass re-reads nothing.
			if err := c.runStep(true); err != nil {
				t.Fatal(err)
			}
			if got := src.readRanges.Load(); got != 1 {
				t.Errorf("got %d ranges re-read after a pass in step, want still 1", got)
			}
		})
	}
	t.Run("inserted row found", func(t *testing.T) {
		c, src, _, _ := newRangeCache(t, 100, Config{})
		src.setQuiet(fakeKey(77)+"x", "new")
		if err := c.runStep(true); err != nil {
			t.Fatal(err)
		}
		mustFind(t, c, fakeKey(77)+"x", "["+fakeKey(77)+"x] new")
		if st := c.Status(); st.Entries != 101 {
			t.Errorf("got %d entries, want 101", st.Entries)
		}
	})
}

// TestReconcileTagsUntagged: a row inserted through the changes is untagged until the
// walk re-reads its range; its range differs meanwhile, so that happens in the next pass.
func TestReconcileTagsUntagged(t *testing.T) {
	c, src, _, _ := newRangeCache(t, 100, Config{})
	src.set(fakeKey(44)+"x", "new")
	if err := c.runStep(false); err != nil {
		t.Fatal(err)
	}
	tbl := c.cur.Load()
	if n := untaggedCount(tbl); n != 1 {
		t.Fatalf("got %d untagged after the refresh, want 1", n)
	}
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	if n := untaggedCount(tbl); n != 0 || src.readRanges.Load() != 1 || src.gets.Load() != 0 {
		t.Errorf("got %d untagged, %d re-reads, %d gets; want 0, 1, 0", n, src.readRanges.Load(), src.gets.Load())
	}
	mustFind(t, c, fakeKey(44)+"x", "["+fakeKey(44)+"x] new")
}

func untaggedCount(t *table) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.untagged.n
}

// TestReconcileConfirmsUntagged: a row inserted and deleted again between two passes
// leaves its range's sums equal, so no re-read finds it; after the pass, Source.Get
// confirms it is gone. Live untagged rows are kept.
func TestReconcileConfirmsUntagged(t *testing.T) {
	c, src, reg, _ := newRangeCache(t, 100, Config{})
	src.set(fakeKey(44)+"x", "short-lived")
	src.set(fakeKey(66)+"x", "lives")
	if err := c.runStep(false); err != nil {
		t.Fatal(err)
	}
	src.delQuiet(fakeKey(44) + "x")
	src.delQuiet(fakeKey(66) + "x")
	src.setQuiet(fakeKey(66)+"x", "lives") // quietly back: its range differs, and is re-read
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(44)+"x")
	mustFind(t, c, fakeKey(66)+"x", "["+fakeKey(66)+"x] lives")
	if got := src.gets.Load(); got != 1 {
		t.Errorf("got %d confirmations, want 1 (the row whose range did not differ)", got)
	}
	if got := src.readRanges.Load(); got != 1 {
		t.Errorf("got %d re-reads, want 1", got)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_rows_removed_total", "by", "reconcile"); got != 1 {
		t.Errorf("got %v rows removed by reconcile, want 1", got)
	}
}

// TestReconcileSplitsGrownRange: a range that grew is cut again by its re-read, so that a
// range stays about RangeRows rows.
func TestReconcileSplitsGrownRange(t *testing.T) {
	c, src, _, _ := newRangeCache(t, 100, Config{})
	for i := range 25 {
		src.setQuiet(fmt.Sprintf("%s-%02d", fakeKey(50), i), "new")
	}
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.Ranges != 13 || st.Entries != 125 {
		t.Errorf("got %d ranges, %d entries; want 13 (the grown range cut in 4), 125", st.Ranges, st.Entries)
	}
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	if got := src.readRanges.Load(); got != 1 {
		t.Errorf("got %d re-reads, want 1: the new ranges are in step", got)
	}
}

// TestReconcileDuringChanges: rows written in the source while a range is re-read (after
// the re-read passed them) are caught by the next refresh and pass; nothing is lost, and a
// row deleted meanwhile goes at the next pass.
func TestReconcileDuringChanges(t *testing.T) {
	c, src, _, _ := newRangeCache(t, 100, Config{})
	src.delQuiet(fakeKey(21)) // makes range 2 differ
	src.with(func(f *fakeSource) {
		f.readRangeHook = func() {
			// Behind the re-read's position (its rows were read already): an insert the
			// changes report, and a delete nobody reports.
			src.set(fakeKey(22)+"x", "during")
			src.delQuiet(fakeKey(23))
		}
	})
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	src.with(func(f *fakeSource) { f.readRangeHook = nil })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.runStep(true); err != nil {
			t.Fatal(err)
		}
		_, _, found23, _ := lookup(c, fakeKey(23))
		line22, _, _, _ := lookup(c, fakeKey(22)+"x")
		if !found23 && line22 == "["+fakeKey(22)+"x] during" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %q for the insert, found %v for the delete, after the passes", line22, found23)
		}
	}
	mustMiss(t, c, fakeKey(21))
	for _, i := range []int{20, 24, 25} {
		mustFind(t, c, fakeKey(i), fakeLine(i))
	}
	if n := untaggedCount(c.cur.Load()); n != 0 {
		t.Errorf("got %d untagged after the passes, want 0", n)
	}
}

// TestReconcileReadRangeFails: a re-read that fails deletes nothing, and its range is
// re-read next time without comparing.
func TestReconcileReadRangeFails(t *testing.T) {
	c, src, _, _ := newRangeCache(t, 100, Config{})
	src.delQuiet(fakeKey(12))
	src.with(func(f *fakeSource) { f.readRangeErr = errors.New("connection reset") })
	if err := c.runStep(true); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("got %v, want the re-read's error", err)
	}
	mustFind(t, c, fakeKey(12), fakeLine(12))
	mustFind(t, c, fakeKey(13), fakeLine(13))
	src.with(func(f *fakeSource) { f.readRangeErr = nil })
	checks := src.checksums.Load()
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(12))
	if got := src.checksums.Load() - checks; got != 9 {
		t.Errorf("got %d checksums, want 9: the failed range is re-read without one", got)
	}
}

// TestReconcileWalk: with nothing but the loader's timers, reconcile compares one range
// every ReconcileInterval/ranges, and a deleted row goes within about a pass.
func TestReconcileWalk(t *testing.T) {
	const interval = 300 * time.Millisecond
	c, src, _, steps := newRangeCache(t, 100, Config{ReconcileInterval: interval})
	src.delQuiet(fakeKey(95))
	var checks []time.Time
	for len(checks) < 10 {
		ev := steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" })
		if ev.err != nil {
			t.Fatal(ev.err)
		}
		checks = append(checks, ev.at)
	}
	// Ten ranges, one every 30 ms: the first ten checks span nine gaps of at least 15 ms
	// (a walk behind its schedule catches up at twice its pace, and timers never fire
	// early), where a burst would take microseconds.
	if spread := checks[9].Sub(checks[0]); spread < 9*interval/20 {
		t.Errorf("got ten range checks within %v, want them spread over about %v", spread, interval)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, found, _ := lookup(c, fakeKey(95)); !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted row is still found after many passes")
		}
		steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" })
	}
	if got := src.readRanges.Load(); got != 1 {
		t.Errorf("got %d re-reads, want 1", got)
	}
	for c.Status().LastReconcile.IsZero() { // the step after the last range ends the pass
		steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" })
	}
}

// TestReconcileWalkSurvivesPanic: a panic in the middle of the walk (here in the source's
// Checksum) restarts the loader, and the walk goes on.
func TestReconcileWalkSurvivesPanic(t *testing.T) {
	c, src, reg, steps := newRangeCache(t, 100, Config{ReconcileInterval: 100 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	src.with(func(f *fakeSource) { f.panics = "Checksum" })
	// The walk's first step panics; the loader starts again with a refresh.
	steps.next(t, func(ev stepEvent) bool { return ev.step == "refresh" })
	if got := metrictest.Value(t, reg, "wxlookup_loader_panics_total", "goroutine", "loader"); got == 0 {
		t.Fatal("the loader started again without a panic")
	}
	src.delQuiet(fakeKey(50))
	src.with(func(f *fakeSource) { f.panics = "" })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, found, _ := lookup(c, fakeKey(50)); !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the walk did not go on after the panic")
		}
		steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" })
	}
}

// TestReconcileRechecksAfterRefresh: a range that differs only because a change was
// committed since the last refresh is compared again after the next refresh, which applies
// the change, and is not re-read.
func TestReconcileRechecksAfterRefresh(t *testing.T) {
	c, src, reg, steps := newRangeCache(t, 100, Config{RefreshInterval: 500 * time.Millisecond, ReconcileInterval: time.Second})
	for i := 0; metrictest.Value(t, reg, "wxlookup_loader_reconcile_checks_total", "result", "recheck") == 0; i++ {
		if i == 20 {
			t.Fatal("no range differed between a write and the refresh after it in 20 tries")
		}
		steps.next(t, func(ev stepEvent) bool { return ev.step == "refresh" })
		for r := range 10 { // a change in every range: the walk checks about 5 before the next refresh
			src.set(fakeKey(10*r+2), fmt.Sprintf("v%d", i))
		}
		steps.next(t, func(ev stepEvent) bool { return ev.step == "refresh" })
	}
	// The recheck ran right after that refresh; one more pass to be sure nothing follows.
	for c.Status().LastReconcile.IsZero() {
		steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" })
	}
	pass := c.Status().LastReconcile
	for c.Status().LastReconcile.Equal(pass) {
		steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" })
	}
	if got := src.readRanges.Load(); got != 0 {
		t.Errorf("got %d ranges re-read, want 0: the refresh brought them in step", got)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_reconcile_checks_total", "result", "differ"); got != 0 {
		t.Errorf("got %v differing checks, want 0", got)
	}
}

// TestReconcileConfirmsUntaggedSoon: a row inserted and deleted before any re-read tagged
// it is confirmed with Source.Get a couple of refresh intervals after it arrived, long
// before the pass ends.
func TestReconcileConfirmsUntaggedSoon(t *testing.T) {
	c, src, _, steps := newRangeCache(t, 100, Config{RefreshInterval: 50 * time.Millisecond, ReconcileInterval: 20 * time.Second})
	src.set(fakeKey(44)+"x", "short-lived")
	for n := untaggedCount(c.cur.Load()); n == 0; n = untaggedCount(c.cur.Load()) {
		steps.next(t, func(ev stepEvent) bool { return ev.step == "refresh" })
	}
	src.delQuiet(fakeKey(44) + "x")
	for {
		if _, _, found, _ := lookup(c, fakeKey(44)+"x"); !found {
			break
		}
		if !c.Status().LastReconcile.IsZero() {
			t.Fatal("the pass ended before the deleted untagged row was confirmed")
		}
		steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" })
	}
	if got := src.gets.Load(); got != 1 {
		t.Errorf("got %d confirmations, want 1", got)
	}
}

// TestReconcileWalkBacksOff: while the source's checksums fail, the walk waits the
// loader's growing back-off between steps instead of one range's share of the interval.
func TestReconcileWalkBacksOff(t *testing.T) {
	c, src, _, steps := newRangeCache(t, 100, Config{RefreshInterval: time.Second, ReconcileInterval: 100 * time.Millisecond})
	src.with(func(f *fakeSource) { f.checksumErr = errors.New("connection refused") })
	var failed []time.Time
	for len(failed) < 6 {
		ev := steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" && ev.err != nil })
		failed = append(failed, ev.at)
	}
	// Steps are 10 ms apart while the walk works; after the 4th failure the back-off is
	// at least half of 500 ms (timers never fire early).
	if gap := failed[5].Sub(failed[4]); gap < 250*time.Millisecond {
		t.Errorf("got %v between the 5th and 6th failed steps, want at least 250ms of back-off", gap)
	}
	src.with(func(f *fakeSource) { f.checksumErr = nil })
	steps.next(t, func(ev stepEvent) bool { return ev.step == "reconcile" && ev.err == nil })
	if st := c.Status(); st.Errors < 6 {
		t.Errorf("got %d loader errors, want the 6 failed steps counted", st.Errors)
	}
}

// TestWalkDelay: the walk keeps its schedule (range i due at start + (i+1)·every) whatever
// the checks took, and catches up at twice its pace when behind.
func TestWalkDelay(t *testing.T) {
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	const every = 30 * time.Millisecond
	for _, tc := range []struct {
		name string
		next int
		now  time.Duration // since start
		want time.Duration
	}{
		{"on time", 3, 90 * time.Millisecond, every},
		{"the check took 20ms", 3, 110 * time.Millisecond, 10 * time.Millisecond},
		{"the check took most of its share", 3, 119 * time.Millisecond, time.Millisecond},
		{"behind", 3, 400 * time.Millisecond, every / 2},
		{"early", 3, 50 * time.Millisecond, every},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := walkState{start: start, every: every, next: tc.next}
			if got := w.delay(start.Add(tc.now)); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
