package cache

import (
	"github.com/dgraph-io/ristretto/v2"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// newTestTable returns a table closed when the test ends.
func newTestTable(tb testing.TB, rows int, complete bool, budget int64, stats *counters) *table {
	tb.Helper()
	t, err := newTable(rows, complete, budget, stats)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(t.close)
	return t
}

func testEntry(i int) *entry {
	e, _ := newEntry(Row{Key: fakeKey(i), Values: []string{fakeValue(i)}}, DefaultRender, nil, nil)
	return e
}

// mustGet fails unless t holds the row of fakeKey(i).
func mustGet(tb testing.TB, t *table, i int) {
	tb.Helper()
	key := Key(fakeKey(i))
	e := t.get(t.hash(key), []byte(key))
	if e == nil || string(e.line) != fakeLine(i) {
		tb.Fatalf("table lost %s: got %+v", key, e)
	}
}

// TestSetDropsRetried injects a set function that drops 30% of writes (returns false, as
// ristretto does when its set buffer is full) and loses 10% after accepting them (returns
// true, never stores, and calls OnReject, as ristretto's policy does): the table must still
// end up complete, every row stored.
func TestSetDropsRetried(t *testing.T) {
	const n = 20_000
	var stats counters
	tb := newTestTable(t, n, true, 64<<20, &stats)
	rnd := rand.New(rand.NewPCG(1, 2)) // only the table's writer goroutine calls set
	real := tb.set
	tb.set = func(h uint64, v *entry, cost int64, ttl time.Duration) bool {
		switch r := rnd.IntN(10); {
		case r < 3:
			return false
		case r == 3:
			tb.onReject(&ristretto.Item[*entry]{Key: h, Value: v}) // what ristretto's policy does
			return true
		}
		return real(h, v, cost, ttl)
	}
	for i := range n {
		if err := tb.put(testEntry(i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if err := tb.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if !tb.complete.Load() || tb.entries.Load() != n {
		t.Fatalf("complete %v entries %d, want true %d", tb.complete.Load(), tb.entries.Load(), n)
	}
	for i := range n {
		mustGet(t, tb, i)
	}
	if stats.setsDropped.Load() == 0 || stats.setRetries.Load() == 0 {
		t.Errorf("sets dropped %d, re-written %d: the injected faults were not seen",
			stats.setsDropped.Load(), stats.setRetries.Load())
	}
}

// TestVerifyGivesUp: writes that never land make the table incomplete, with an error,
// rather than a complete table that answers "not found" for rows it does not hold.
func TestVerifyGivesUp(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 10, true, 1<<20, &stats)
	tb.set = func(h uint64, v *entry, _ int64, _ time.Duration) bool { // every write rejected
		tb.onReject(&ristretto.Item[*entry]{Key: h, Value: v})
		return true
	}
	if err := tb.put(testEntry(1)); err != nil {
		t.Fatal(err)
	}
	err := tb.flush()
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("flush = %v, want a verification error", err)
	}
	if tb.complete.Load() {
		t.Fatal("table still complete")
	}
}

// TestCollisions forces every key onto one hash: the chain keeps them all apart.
func TestCollisions(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 10, true, 1<<20, &stats)
	tb.hash = func(string) uint64 { return 42 }
	for i := range 5 {
		if err := tb.put(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.put(testEntry(2)); err != nil { // an update within the chain
		t.Fatal(err)
	}
	if err := tb.del(Key(fakeKey(3))); err != nil {
		t.Fatal(err)
	}
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 2, 4} {
		mustGet(t, tb, i)
	}
	if e := tb.get(42, []byte(Key(fakeKey(3)))); e != nil {
		t.Errorf("deleted key still found: %+v", e)
	}
	if tb.entries.Load() != 4 {
		t.Errorf("entries %d, want 4", tb.entries.Load())
	}
	var want int64
	for _, i := range []int{0, 1, 2, 4} {
		want += testEntry(i).cost
	}
	if got := tb.bytes.Load(); got != want {
		t.Errorf("bytes %d, want %d", got, want)
	}
	if got := tb.costBytes(); got != want {
		t.Errorf("ristretto cost %d, want %d", got, want)
	}
}

// TestDelIfSparesNewer: reconcile's delete only removes entries written before its scan.
func TestDelIfSparesNewer(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 10, true, 1<<20, &stats)
	if err := tb.put(testEntry(1)); err != nil {
		t.Fatal(err)
	}
	scan := tb.beginScan()
	if err := tb.put(testEntry(2)); err != nil { // written during the scan
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if err := tb.delIf(Key(fakeKey(i)), scan); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	if e := tb.get(tb.hash(Key(fakeKey(1))), []byte(Key(fakeKey(1)))); e != nil {
		t.Error("entry written before the scan survived")
	}
	mustGet(t, tb, 2)
}

// TestFillSkipsAfterLoaderWrite: a read-through answer older than a loader write is not
// cached.
func TestFillSkipsAfterLoaderWrite(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 10, false, 1<<20, &stats)
	since := tb.epoch.Load()
	if err := tb.del(Key(fakeKey(1))); err != nil { // nothing to delete: the epoch stays
		t.Fatal(err)
	}
	if !tb.fill(testEntry(1), since) {
		t.Fatal("fill refused with no loader write in between")
	}
	since = tb.epoch.Load()
	if err := tb.put(testEntry(2)); err != nil {
		t.Fatal(err)
	}
	if tb.fill(testEntry(3), since) {
		t.Fatal("fill accepted after a loader write")
	}
}

// TestNegativesRemembered: a read-through "not found" is remembered until it expires, even
// in a full table, and a loader write of the key forgets it.
func TestNegativesRemembered(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 10, false, 4<<10, &stats)
	for i := range 200 { // far over the budget: ristretto is full and admits selectively
		if err := tb.put(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	tb.rc.Wait()
	key := Key(fakeKey(1000))
	if !tb.fillNegative(key, tb.epoch.Load(), 100, 200) {
		t.Fatal("fillNegative refused with no loader write in between")
	}
	for _, tt := range []struct {
		name string
		now  int64
		want bool
	}{{"fresh", 150, true}, {"expired", 200, false}} {
		if got := tb.absent([]byte(key), tt.now); got != tt.want {
			t.Errorf("%s: absent = %v, want %v", tt.name, got, tt.want)
		}
	}
	if err := tb.put(testEntry(1000)); err != nil {
		t.Fatal(err)
	}
	if tb.absent([]byte(key), 150) {
		t.Error("a loader write of the key did not forget its not-found")
	}
	since := tb.epoch.Load()
	tb.put(testEntry(1001))
	if tb.fillNegative(Key(fakeKey(1002)), since, 100, 200) {
		t.Error("fillNegative accepted after a loader write")
	}
}

// TestPutSkipsIdenticalRow: the overlap window re-delivers rows; an unchanged row is not
// written again, so read-through fills in flight stay valid.
func TestPutSkipsIdenticalRow(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 10, true, 1<<20, &stats)
	if err := tb.put(testEntry(1)); err != nil {
		t.Fatal(err)
	}
	since := tb.epoch.Load()
	if err := tb.put(testEntry(1)); err != nil {
		t.Fatal(err)
	}
	if got := tb.epoch.Load(); got != since {
		t.Fatalf("epoch moved from %d to %d on an identical row", since, got)
	}
	changed := testEntry(1)
	changed.line = []byte("moved")
	if err := tb.put(changed); err != nil {
		t.Fatal(err)
	}
	if tb.epoch.Load() == since {
		t.Fatal("a changed row was not written")
	}
}

// TestIncompleteEvicts: an incomplete table holds at most its budget and counts evictions.
func TestIncompleteEvicts(t *testing.T) {
	var stats counters
	const budget = 64 << 10
	tb := newTestTable(t, 1000, false, budget, &stats)
	for i := range 2000 {
		if err := tb.put(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	if got := tb.costBytes(); got > budget {
		t.Errorf("cost %d over the budget %d", got, budget)
	}
	if stats.evictions.Load() == 0 {
		t.Error("no evictions counted")
	}
	if n := tb.entries.Load(); n <= 0 || n*testEntry(0).cost > 2*budget {
		t.Errorf("entries %d for a budget of %d bytes", n, budget)
	}
}

func BenchmarkTablePut(b *testing.B) {
	var stats counters
	entries := make([]*entry, 100_000)
	for i := range entries {
		entries[i] = testEntry(i)
	}
	tb := newTestTable(b, len(entries), true, 1<<30, &stats)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := *entries[i%len(entries)]
		if err := tb.put(&e); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := tb.flush(); err != nil {
		b.Fatal(err)
	}
}
