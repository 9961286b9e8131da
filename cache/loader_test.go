package cache

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"wxlookup/internal/logtest"
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
		t.Errorf("after refresh: complete %v entries %d rows loaded %d; want true 100 103", st.Complete, st.Entries, st.RowsLoaded)
	}
	// The watermark moved: the next refresh delivers nothing again.
	if err := c.runStep(false); err != nil {
		t.Fatal(err)
	}
	if got := c.Status().RowsLoaded; got != 103 {
		t.Errorf("rows loaded %d after an idle refresh, want 103", got)
	}
}

// TestReconcile: a source that cannot report deletes (MySQL) has them found by the key scan.
func TestReconcile(t *testing.T) {
	src := newFakeSource(100)
	c := newTestCache(t, src, Config{})
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
	if st := c.Status(); st.Entries != 99 || !st.Complete {
		t.Errorf("entries %d complete %v, want 99 true", st.Entries, st.Complete)
	}

	// A failed scan deletes nothing.
	src.del(fakeKey(7))
	src.fail(nil, nil, errors.New("scan broke"), nil)
	if err := c.runStep(true); err == nil {
		t.Fatal("reconcile with a failing key scan succeeded")
	}
	mustFind(t, c, fakeKey(8), fakeLine(8))
	src.fail(nil, nil, nil, nil)
	if err := c.runStep(false); err != nil { // still due: retried with the next step
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(7))
}

// TestReconcileSparesRowsAddedDuringScan: a row that reaches the cache while the key scan
// runs (here by read-through) is not removed because the scan did not see it.
func TestReconcileSparesRowsAddedDuringScan(t *testing.T) {
	src := newFakeSource(200)
	c := newTestCache(t, src, Config{MaxBytes: minMaxBytes}) // incomplete: misses read through
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
		c.cur.Load().rc.Wait() // applied before the scan lists the cache
	})
	if err := c.runStep(true); err != nil {
		t.Fatal(err)
	}
	if midScan != "[LATE-1] new" {
		t.Fatalf("read-through during the scan got %q", midScan)
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
		t.Errorf("staleness %v during the outage, want ≥ 1m", st.Staleness)
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
		t.Errorf("staleness %v after recovery", st.Staleness)
	}
	steps.next(t, func(stepEvent) bool { return true }) // the loop logs "recovered" after the step
	if !strings.Contains(logs.String(), "connection refused") || !strings.Contains(logs.String(), "recovered") {
		t.Errorf("log does not tell the story:\n%s", logs.String())
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
		t.Errorf("cost %d of %d, entries %d", st.CostBytes, st.MaxBytes, st.Entries)
	}
	if got := strings.Count(logs.String(), "exceeds WXLOOKUP_CACHE_MAX_BYTES"); got != 1 ||
		!strings.Contains(logs.String(), "(500 rows, ") {
		t.Errorf("want one line naming 500 rows, got %d:\n%s", got, logs.String())
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
		t.Errorf("after growth: complete %v cost %d of %d", st.Complete, st.CostBytes, st.MaxBytes)
	}
	if !strings.Contains(logs.String(), "exceeds WXLOOKUP_CACHE_MAX_BYTES") {
		t.Errorf("growth over the budget not logged:\n%s", logs.String())
	}
	mustFind(t, c2, fakeKey(1100), "["+fakeKey(1100)+"] "+fakeValue(1100)) // held, or read through
}

// TestReloadFailureKeepsCache: a failed Reload leaves the current cache answering.
func TestReloadFailureKeepsCache(t *testing.T) {
	src := newFakeSource(50)
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	src.fail(errors.New("snapshot broke"), nil, nil, nil)
	if err := c.Reload(context.Background()); err == nil {
		t.Fatal("Reload succeeded against a failing source")
	}
	mustFind(t, c, fakeKey(3), fakeLine(3))
	if st := c.Status(); st.Errors != 1 || st.RecentErrors[0].Step != "reload" {
		t.Errorf("reload failure not recorded: %+v", st.RecentErrors)
	}
}

func BenchmarkWarm100k(b *testing.B) {
	src := newFakeSource(100_000)
	b.ReportAllocs()
	for b.Loop() {
		c, err := New(src, Config{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		c.srcMu.Lock()
		err = c.loadLocked(context.Background())
		c.srcMu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
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
		t.Errorf("entries %d complete %v, want 2 true", st.Entries, st.Complete)
	}
}

func TestHashAll(t *testing.T) {
	entries := []*entry{{key: "a"}, {key: "b"}, {key: "a"}, {key: "c"}}
	hashes, shared := hashAll(entries)
	if len(hashes) != 4 || hashes[0] != hashKeyString("a") || hashes[3] != hashKeyString("c") {
		t.Errorf("hashes %v", hashes)
	}
	if _, ok := shared[hashKeyString("a")]; !ok || len(shared) != 1 {
		t.Errorf("shared %v, want only a's hash", shared)
	}
}
