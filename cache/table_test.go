package cache

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// newTestTable returns a table closed when the test ends, complete if asked (as a finished
// snapshot makes it).
func newTestTable(tb testing.TB, budget int64, complete bool, stats *counters) *table {
	tb.Helper()
	t, err := newTable(budget, stats)
	if err != nil {
		tb.Fatal(err)
	}
	if complete {
		t.mu.Lock()
		t.goCompleteLocked()
		t.mu.Unlock()
	}
	tb.Cleanup(t.retire) // no reader is inside: it closes ristretto at once
	return t
}

// tableVariant is a kind of table the randomised tests drive (TestTableModel,
// TestSuggesterFollowsWrites).
type tableVariant struct {
	name       string
	budget     int64
	complete   bool
	collisions bool // every key hashes to one of 7 values
}

var tableVariants = []tableVariant{
	{name: "complete", budget: 64 << 20, complete: true},
	{name: "collisions", budget: 64 << 20, complete: true, collisions: true},
	{name: "incomplete and evicting", budget: 48 << 10},
}

// table returns an empty table of the variant.
func (v tableVariant) table(tb testing.TB, stats *counters) *table {
	t := newTestTable(tb, v.budget, v.complete, stats)
	if v.collisions {
		t.hash = func(s string) uint64 { return hashKeyString(s) % 7 }
	}
	return t
}

// testRow is fake row i.
func testRow(i int) Row { return Row{Key: fakeKey(i), Values: []string{fakeValue(i)}} }

// mustGet fails unless t holds the row of fakeKey(i) with line want.
func mustGet(tb testing.TB, t *table, i int, want string) {
	tb.Helper()
	key := Key(fakeKey(i))
	e := t.get(t.hash(key), []byte(key))
	if e == nil || string(e.line()) != want {
		tb.Fatalf("table lost %s: got %+v, want line %q", key, e, want)
	}
}

// mustAbsent fails if t holds key.
func mustAbsent(tb testing.TB, t *table, key string) {
	tb.Helper()
	if e := t.get(t.hash(key), []byte(key)); e != nil {
		tb.Fatalf("got %+v for %q, want nothing", e, key)
	}
}

// groupCount sums the entries in all of t's groups, which invariant 3 says entries counts.
func groupCount(t *table) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.untagged.n + t.fills.n
	for _, g := range append(append([]*group{}, t.ranges...), t.stale...) {
		n += g.n
	}
	return int64(n)
}

// TestSetDropsRetried injects a set function that drops 30% of writes (returns false, as
// ristretto does when its set buffer is full) and loses 10% after accepting them (returns
// true, never stores, and calls OnReject, as ristretto's policy does): the table must still
// end up complete, every row stored.
func TestSetDropsRetried(t *testing.T) {
	const n = 20_000
	var stats counters
	tb := newTestTable(t, 64<<20, true, &stats)
	rnd := rand.New(rand.NewPCG(1, 2)) // only the table's writer goroutine calls set
	real := tb.set
	tb.set = func(b uint64, v bucket, cost int64) bool {
		switch r := rnd.IntN(10); {
		case r < 3:
			return false
		case r == 3:
			tb.onReject(&ristretto.Item[bucket]{Key: b, Value: v}) // what ristretto's policy does
			return true
		}
		return real(b, v, cost)
	}
	for i := range n {
		tb.upsert(prep(testRow(i)), nil)
	}
	if err := tb.flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if !tb.complete.Load() || tb.entries.Load() != n || groupCount(tb) != n {
		t.Fatalf("got complete %v, entries %d, in groups %d; want true, %d, %d", tb.complete.Load(), tb.entries.Load(), groupCount(tb), n, n)
	}
	for i := range n {
		mustGet(t, tb, i, fakeLine(i))
	}
	if stats.setsDropped.Load() == 0 || stats.setRetries.Load() == 0 {
		t.Errorf("got sets dropped %d, re-written %d: the injected faults were not seen",
			stats.setsDropped.Load(), stats.setRetries.Load())
	}
}

// TestVerifyGivesUp: writes that never land make the table incomplete, with an error,
// rather than a complete table that answers "not found" for rows it does not hold.
func TestVerifyGivesUp(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 1<<20, true, &stats)
	tb.set = func(b uint64, v bucket, _ int64) bool { // every write rejected
		tb.onReject(&ristretto.Item[bucket]{Key: b, Value: v})
		return true
	}
	tb.upsert(prep(testRow(1)), nil)
	err := tb.flush()
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("got flush error %v, want a verification error", err)
	}
	if tb.complete.Load() {
		t.Fatal("table still complete")
	}
}

// TestCollisions forces every key onto one hash: the bucket keeps them all apart, and
// every entry stays in its group.
func TestCollisions(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 1<<20, true, &stats)
	tb.hash = func(string) uint64 { return 42 }
	rng := &group{ranged: true}
	for i := range 5 {
		tb.upsert(prep(testRow(i)), rng)
	}
	moved := testRow(2)
	moved.Values = []string{"moved"}
	tb.upsert(prep(moved), nil) // an update within the chain, through the change path
	if !tb.remove([]byte(Key(fakeKey(3))), fakeKey(3)) {
		t.Fatal("remove found nothing")
	}
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 4} {
		mustGet(t, tb, i, fakeLine(i))
	}
	mustGet(t, tb, 2, "["+fakeKey(2)+"] moved")
	mustAbsent(t, tb, Key(fakeKey(3)))
	if tb.entries.Load() != 4 || rng.n != 4 || groupCount(tb) != 0 {
		t.Errorf("got entries %d, in the range %d, elsewhere %d; want 4, 4, 0", tb.entries.Load(), rng.n, groupCount(tb))
	}
	for e := rng.head; e != nil; e = e.gnext {
		if got := tb.get(42, []byte(e.key())); got != e {
			t.Errorf("the range holds %q, but the table holds %p for it, not %p", e.key(), got, e)
		}
	}
	var want int64
	for _, i := range []int{0, 1, 4} {
		want += prep(testRow(i)).cost()
	}
	want += prep(moved).cost()
	if got := tb.bytes.Load(); got != want {
		t.Errorf("got bytes %d, want %d", got, want)
	}
	if got := tb.costBytes(); got != want {
		t.Errorf("got ristretto cost %d, want %d", got, want)
	}
	var sum RangeSum
	for _, r := range []Row{testRow(0), testRow(1), moved, testRow(4)} {
		sum = sum.Add(RowSum(r.Key, r.Values), 1)
	}
	if rng.sum != sum {
		t.Errorf("got range sum %+v, want %+v", rng.sum, sum)
	}
}

// TestUpsertGroups: a change keeps a row in its key range and moves the range's sum; a row
// for a key no range holds is untagged; a delete takes its row out of the sum; another
// stored spelling of a key is another row.
func TestUpsertGroups(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 1<<20, true, &stats)
	rng := &group{ranged: true}
	tb.upsert(prep(testRow(1)), rng)
	tb.upsert(prep(testRow(2)), rng)
	sumOf := func(rows ...Row) RangeSum {
		var s RangeSum
		for _, r := range rows {
			s = s.Add(RowSum(r.Key, r.Values), 1)
		}
		return s
	}
	if rng.sum != sumOf(testRow(1), testRow(2)) {
		t.Fatalf("got %+v after the snapshot rows", rng.sum)
	}
	changed := Row{Key: fakeKey(1), Values: []string{"elsewhere"}}
	tb.upsert(prep(changed), nil)
	tb.upsert(prep(testRow(3)), nil)
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	key1 := Key(fakeKey(1))
	if e := tb.get(tb.hash(key1), []byte(key1)); e == nil || e.grp != rng {
		t.Fatalf("the changed row left its range: %+v", e)
	}
	if rng.sum != sumOf(changed, testRow(2)) {
		t.Errorf("got %+v after a change, want the sum of the new row and row 2", rng.sum)
	}
	if tb.untagged.n != 1 {
		t.Errorf("got %d untagged, want 1 (the new key)", tb.untagged.n)
	}
	if tb.remove([]byte(Key(fakeKey(2))), strings.ToLower(fakeKey(2))) {
		t.Error("a delete of another spelling removed the row")
	}
	if !tb.remove([]byte(Key(fakeKey(2))), fakeKey(2)) || rng.sum != sumOf(changed) || rng.n != 1 {
		t.Errorf("after a delete: got sum %+v, %d in the range", rng.sum, rng.n)
	}
	// Another spelling of key 1 replaces the entry but is another row: untagged, and the
	// range still counts the first.
	other := Row{Key: strings.ToLower(fakeKey(1)), Values: []string{"lower"}}
	tb.upsert(prep(other), nil)
	if rng.sum != sumOf(changed) || rng.n != 0 || tb.untagged.n != 2 {
		t.Errorf("got sum %+v, %d in the range, %d untagged", rng.sum, rng.n, tb.untagged.n)
	}
	if got := groupCount(tb) + int64(rng.n); tb.entries.Load() != got {
		t.Errorf("got entries %d, %d in groups", tb.entries.Load(), got)
	}
}

// TestFillSkipsAfterLoaderWrite: a read-through answer older than a loader write is not
// cached.
func TestFillSkipsAfterLoaderWrite(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 1<<20, false, &stats)
	since := tb.epoch.Load()
	if tb.remove([]byte(Key(fakeKey(1))), fakeKey(1)) { // nothing to delete: the epoch stays
		t.Fatal("removed a row never written")
	}
	if !tb.fill(newFillEntry(prep(testRow(1))), since) {
		t.Fatal("fill refused with no loader write in between")
	}
	if tb.fills.n != 1 {
		t.Errorf("got %d fills, want 1", tb.fills.n)
	}
	since = tb.epoch.Load()
	tb.upsert(prep(testRow(2)), nil)
	if tb.fill(newFillEntry(prep(testRow(3))), since) {
		t.Fatal("fill accepted after a loader write")
	}
}

// TestNegativesRemembered: a read-through "not found" is remembered until it expires, even
// in a full table, and a loader write of the key forgets it.
func TestNegativesRemembered(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 4<<10, false, &stats)
	for i := range 200 { // far over the budget: ristretto is full and admits selectively
		tb.upsert(prep(testRow(i)), nil)
	}
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
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
			t.Errorf("%s: got absent %v, want %v", tt.name, got, tt.want)
		}
	}
	tb.upsert(prep(testRow(1000)), nil)
	if tb.absent([]byte(key), 150) {
		t.Error("a loader write of the key did not forget its not-found")
	}
	since := tb.epoch.Load()
	tb.upsert(prep(testRow(1001)), nil)
	if tb.fillNegative(Key(fakeKey(1002)), since, 100, 200) {
		t.Error("fillNegative accepted after a loader write")
	}
}

// TestPutSkipsIdenticalRow: the overlap window re-delivers rows; an unchanged row is not
// written again, so read-through fills in flight stay valid.
func TestPutSkipsIdenticalRow(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 1<<20, true, &stats)
	tb.upsert(prep(testRow(1)), nil)
	since := tb.epoch.Load()
	tb.upsert(prep(testRow(1)), nil)
	if got := tb.epoch.Load(); got != since {
		t.Fatalf("epoch moved from %d to %d on an identical row", since, got)
	}
	changed := testRow(1)
	changed.Values = []string{"moved"}
	tb.upsert(prep(changed), nil)
	if tb.epoch.Load() == since {
		t.Fatal("a changed row was not written")
	}
}

// TestIncompleteEvicts: an incomplete table holds at most its budget, counts evictions,
// and keeps its groups in step with what ristretto holds.
func TestIncompleteEvicts(t *testing.T) {
	var stats counters
	const budget = 64 << 10
	tb := newTestTable(t, budget, false, &stats)
	for i := range 2000 {
		tb.upsert(prep(testRow(i)), nil)
	}
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	if got := tb.costBytes(); got > budget {
		t.Errorf("got cost %d over the budget %d", got, budget)
	}
	if stats.evictions.Load() == 0 {
		t.Error("no evictions counted")
	}
	if n := tb.entries.Load(); n <= 0 || n*prep(testRow(0)).cost() > budget || n != groupCount(tb) {
		t.Errorf("got %d entries (%d in groups) for a budget of %d bytes", n, groupCount(tb), budget)
	}
	if got, want := tb.bytes.Load(), tb.costBytes(); got != want {
		t.Errorf("got bytes %d, ristretto holds %d", got, want)
	}
}

func BenchmarkTablePut(b *testing.B) {
	var stats counters
	const n = 100_000
	// Two versions of each row, alternated pass by pass, so that every put writes.
	var versions [2][]*prepared
	for v := range versions {
		versions[v] = make([]*prepared, n)
		for i := range n {
			versions[v][i] = prep(Row{Key: fakeKey(i), Values: []string{fakeValue(i), string(rune('a' + v))}})
		}
	}
	tb := newTestTable(b, 1<<30, true, &stats)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tb.upsert(versions[(i/n)%2][i%n], nil)
		i++
	}
	if err := tb.flush(); err != nil {
		b.Fatal(err)
	}
}

// TestReloadCursor: a reload finds the entries of unchanged rows with the load's cursor
// (no probe of ristretto), past rows deleted since, rows inserted since and entries
// changed since (which sit at their range's head), and keeps those entries; the table
// ends holding exactly the snapshot's rows.
func TestReloadCursor(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 1<<20, true, &stats)
	load := func(rows []Row) *heldCursor {
		t.Helper()
		tb.beginLoad()
		cur := tb.held
		b := newRangeBuilder(tb, 50, KeyRange{})
		for _, r := range rows {
			b.add(prep(r))
		}
		if _, err := tb.finishLoad(b); err != nil {
			t.Fatalf("finishLoad: %v", err)
		}
		if tb.held != nil {
			t.Fatal("the cursor outlived its load")
		}
		return cur
	}
	var first []Row
	for i := range 200 {
		first = append(first, testRow(2*i)) // even rows; odd ones are inserted later
	}
	load(first)
	before := map[int]*entry{}
	for i := range 200 {
		k := Key(fakeKey(2 * i))
		before[2*i] = tb.get(tb.hash(k), []byte(k))
	}
	// Since that snapshot: row 20's value changed through the change path (its entry
	// moves to its range's head), and the source deleted rows 100 … 158 (30 in a row, more
	// than the look-ahead) and inserted rows 1, 3, 5 and 301.
	changed := testRow(20)
	changed.Values = []string{"changed"}
	tb.upsert(prep(changed), nil)
	deleted := func(i int) bool { return i >= 100 && i < 160 }
	var second []Row
	for i := range 400 {
		switch {
		case i%2 == 0 && !deleted(i):
			r := testRow(i)
			if i == 20 {
				r = changed
			}
			second = append(second, r)
		case i == 1 || i == 3 || i == 5 || i == 301:
			second = append(second, testRow(i))
		}
	}
	cur := load(second)

	// 170 rows unchanged since their entry was written by a snapshot, 1 changed since
	// (found through ristretto, its entry out of order), 4 new.
	if cur.found < 165 {
		t.Errorf("the cursor found %d of 170 unchanged rows, want nearly all", cur.found)
	}
	if got := tb.entries.Load(); got != int64(len(second)) {
		t.Errorf("got %d entries, want %d", got, len(second))
	}
	for _, r := range second {
		k := Key(r.Key)
		e := tb.get(tb.hash(k), []byte(k))
		if want := DefaultRender(nil, r); e == nil || string(e.line()) != string(want) {
			t.Fatalf("row %s: got %+v, want line %q", r.Key, e, want)
		}
	}
	for i, old := range before {
		k := Key(fakeKey(i))
		e := tb.get(tb.hash(k), []byte(k))
		switch {
		case deleted(i) && e != nil:
			t.Errorf("row %d, deleted, is still held", i)
		case !deleted(i) && i != 20 && e != old:
			t.Errorf("row %d, unchanged, got a new entry", i)
		}
	}
}

// TestFillExpires: a read-through fill answers until fillTTL has passed, then Lookup no
// longer finds it, a new read-through replaces it, and the fills that expired are removed
// (their memory given back) at the next fill after a fillTTL.
func TestFillExpires(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 1<<20, false, &stats)
	clock := newTestClock()
	tb.now, tb.fillTTL = clock.Now, 10*time.Second
	fill := func(i int, line string) bool {
		t.Helper()
		r := testRow(i)
		r.Values = []string{line}
		return tb.fill(newFillEntry(prep(r)), tb.epoch.Load())
	}
	for i := range 3 {
		if !fill(i, "first") {
			t.Fatalf("fill of row %d refused", i)
		}
	}
	mustGet(t, tb, 1, "["+fakeKey(1)+"] first")
	if fill(1, "again") {
		t.Fatal("a fill replaced a fresh fill")
	}
	clock.Advance(10 * time.Second)
	mustAbsent(t, tb, Key(fakeKey(1)))
	if !fill(1, "second") {
		t.Fatal("a fill did not replace an expired one")
	}
	mustGet(t, tb, 1, "["+fakeKey(1)+"] second")
	// The first fill after a fillTTL swept rows 0 and 2: only the new fill is left.
	if n, fills := tb.entries.Load(), tb.fills.n; n != 1 || fills != 1 {
		t.Errorf("got %d entries, %d fills; want the expired fills removed (1, 1)", n, fills)
	}
	if want := int64(newFillEntry(prep(Row{Key: fakeKey(1), Values: []string{"second"}})).cost); tb.bytes.Load() != want || tb.costBytes() != want {
		t.Errorf("got bytes %d, ristretto cost %d; want %d", tb.bytes.Load(), tb.costBytes(), want)
	}
}

// TestDeleteThenWrite: a row deleted and written again at once (a REPLACE, or a key's
// only row deleted and inserted) is held, though ristretto's delete and set race: its
// goroutine may apply an earlier set between the delete and the new set (delLocked).
func TestDeleteThenWrite(t *testing.T) {
	var stats counters
	tb := newTestTable(t, 64<<20, true, &stats)
	const n = 20_000
	for i := range n {
		p := prep(testRow(i))
		tb.upsert(p, nil)
		if !tb.remove(p.key, p.canon) {
			t.Fatalf("remove of row %d found nothing", i)
		}
		tb.upsert(prep(testRow(i)), nil)
	}
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustGet(t, tb, i, fakeLine(i))
	}
	if got, want := tb.bytes.Load(), tb.costBytes(); got != want {
		t.Errorf("got bytes %d, ristretto holds %d", got, want)
	}
}

// TestTableModel drives tables with random writes, deletes, fills and flushes, against a
// map of what the source holds, and checks after each flush: a complete table holds every
// row with its line; any table answers a key only with the source's line for it (or a
// fill's), never a deleted or stale one; the groups count what ristretto holds. Tables of
// a budget that holds everything, one that does not (eviction, offers anew), and one
// whose keys all share a hash (collisions) are driven.
func TestTableModel(t *testing.T) {
	for _, tc := range tableVariants {
		t.Run(tc.name, func(t *testing.T) {
			var stats counters
			tb := tc.table(t, &stats)
			rnd := rand.New(rand.NewPCG(7, 8))
			source := map[int]string{} // row → value
			const keys = 600
			for step := range 6000 {
				i := rnd.IntN(keys)
				switch op := rnd.IntN(10); {
				case op < 5:
					v := fmt.Sprintf("v%d", rnd.IntN(4))
					source[i] = v
					tb.upsert(prep(Row{Key: fakeKey(i), Values: []string{v}}), nil)
				case op < 8:
					if _, ok := source[i]; ok {
						delete(source, i)
						p := prep(testRow(i))
						tb.remove(p.key, p.canon)
					}
				case op < 9 && !tb.complete.Load():
					if v, ok := source[i]; ok {
						tb.fill(newFillEntry(prep(Row{Key: fakeKey(i), Values: []string{v}})), tb.epoch.Load())
					}
				}
				if step%500 != 499 {
					continue
				}
				if err := tb.flush(); err != nil && tc.complete {
					t.Fatalf("step %d: flush: %v", step, err)
				}
				for j := range keys {
					key := Key(fakeKey(j))
					e := tb.get(tb.hash(key), []byte(key))
					v, ok := source[j]
					switch {
					case e != nil && !ok:
						t.Fatalf("step %d: %s deleted but answered %q", step, key, e.line())
					case e != nil && string(e.line()) != "["+fakeKey(j)+"] "+v:
						t.Fatalf("step %d: %s answered %q, want the line of %q", step, key, e.line(), v)
					case e == nil && ok && tb.complete.Load():
						t.Fatalf("step %d: complete table lost %s", step, key)
					}
				}
				if got, want := tb.bytes.Load(), tb.costBytes(); got != want {
					t.Fatalf("step %d: groups count %d bytes, ristretto holds %d", step, got, want)
				}
				if n := tb.entries.Load(); n != groupCount(tb) {
					t.Fatalf("step %d: %d entries, %d in groups", step, n, groupCount(tb))
				}
			}
			if !tc.complete && stats.evictions.Load() == 0 {
				t.Error("no evictions: the budget held every row, so the incomplete case was not driven")
			}
		})
	}
}
