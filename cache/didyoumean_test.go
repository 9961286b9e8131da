package cache

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// suggesterKeys lists the keys s holds, in trie order.
func suggesterKeys(s *suggester) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	var walk func(x uint32, prefix []rune)
	walk = func(x uint32, prefix []rune) {
		for y := s.nodes[x].child; y != 0; y = s.nodes[y].next {
			p := append(prefix, rune(s.nodes[y].label&^terminalBit))
			if s.nodes[y].label&terminalBit != 0 {
				out = append(out, string(p))
			}
			walk(y, p)
		}
	}
	walk(0, nil)
	slices.Sort(out)
	return out
}

// heldKeys lists the normalised keys of the entries in t's groups (invariant 2), sorted.
func heldKeys(t *table) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	groups := append([]*group{t.untagged, t.fills}, t.ranges...)
	for _, g := range append(groups, t.stale...) {
		for e := g.head; e != nil; e = e.gnext {
			out = append(out, e.key())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// sameIndex fails unless the suggester of t holds exactly the keys of its entries.
func sameIndex(tb testing.TB, t *table, when string) {
	tb.Helper()
	got, want := suggesterKeys(t.sugg), heldKeys(t)
	if !slices.Equal(got, want) {
		tb.Fatalf("%s: the suggester holds %d keys, the table %d; first differences: got %q, want %q",
			when, len(got), len(want), got[:min(len(got), 5)], want[:min(len(want), 5)])
	}
}

// TestSuggesterFollowsWrites drives a table through every kind of write — snapshot rows
// into ranges, changes, deletes, another spelling of a key, loads that sweep, reads-through
// fills, forced hash collisions, and a budget small enough that ristretto evicts — and
// checks after each flush that the suggester holds exactly the keys in the table's groups.
func TestSuggesterFollowsWrites(t *testing.T) {
	for _, tt := range tableVariants {
		t.Run(tt.name, func(t *testing.T) {
			var stats counters
			tb := tt.table(t, &stats)
			rng := rand.New(rand.NewPCG(15, 7))
			key := func() int { return rng.IntN(600) }
			for round := range 30 {
				if round%10 == 9 { // a reload: a snapshot of rows 0 … 399, the rest swept
					tb.beginLoad()
					b := newRangeBuilder(tb, 50, KeyRange{})
					for i := range 400 {
						b.add(prep(testRow(i)))
					}
					if _, err := tb.finishLoad(b); err != nil && tt.complete {
						t.Fatalf("finishLoad: %v", err)
					}
					sameIndex(t, tb, "after a reload")
					continue
				}
				for range 200 {
					switch i := key(); rng.IntN(5) {
					case 0:
						tb.remove([]byte(Key(fakeKey(i))), fakeKey(i))
					case 1:
						r := testRow(i)
						r.Values = []string{"changed " + r.Values[0]}
						tb.upsert(prep(r), nil)
					case 2: // another stored spelling of the same normalised key
						tb.upsert(prep(Row{Key: strings.ToLower(fakeKey(i)), Values: []string{"lower"}}), nil)
					case 3:
						if !tb.complete.Load() {
							tb.fill(newFillEntry(prep(testRow(i))), tb.epoch.Load())
							continue
						}
						fallthrough
					default:
						tb.upsert(prep(testRow(i)), nil)
					}
				}
				if err := tb.flush(); err != nil && tt.complete {
					t.Fatalf("flush: %v", err)
				}
				sameIndex(t, tb, "after changes")
			}
			if !tt.complete && stats.evictions.Load() == 0 {
				t.Error("no evictions: the incomplete case did not test them")
			}
		})
	}
}

// newSuggestCache returns a warmed cache over keys (each with one value), in poll mode with
// tombstones, so that refreshes deliver deletes.
func newSuggestCache(t *testing.T, cfg Config, keys ...string) (*Cache, *fakeSource) {
	t.Helper()
	src := newFakeSource(0)
	src.tombstones = true
	for _, k := range keys {
		src.setQuiet(k, "v "+k)
	}
	c := newTestCache(t, src, cfg)
	startReady(t, c)
	return c, src
}

func TestCacheSuggest(t *testing.T) {
	c, _ := newSuggestCache(t, Config{}, "18-546", "18-564", "A7-001", "T72-104", "Ｂ02-104")
	tests := []struct {
		name  string
		query string
		max   int
		want  []string
	}{
		{"substitution", "18-547", 3, []string{"18-546", "18-564"}},
		{"transposition counts 1", "18-456", 3, []string{"18-546", "18-564"}},
		{"stored spelling, not the normalised one", "a7-01", 3, []string{"A7-001"}},
		{"full-width stored key", "b02-105", 3, []string{"Ｂ02-104"}},
		{"never the key itself", "18-546", 3, []string{"18-564"}},
		{"at most max", "18-547", 1, []string{"18-546"}},
		{"max 0", "18-547", 0, nil},
		{"nothing within 2", "zz-999", 3, nil},
		{"three edits away", "a9-01x", 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Suggest(nil, []byte(Key(tt.query)), tt.max)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Suggest(%q, %d): got %q, want %q", tt.query, tt.max, got, tt.want)
			}
		})
	}
	dst := c.Suggest([]string{"kept"}, []byte("18-547"), 3)
	if want := []string{"kept", "18-546", "18-564"}; !slices.Equal(dst, want) {
		t.Errorf("Suggest appending: got %q, want %q", dst, want)
	}
}

// TestCacheSuggestFollowsTheSource: keys the loader writes are suggested, keys it deletes
// (a change, or a reload's sweep) are not, and nothing is suggested before the first warm
// or after Close.
func TestCacheSuggestFollowsTheSource(t *testing.T) {
	src := newFakeSource(0)
	src.tombstones = true
	src.setQuiet("P-100", "a")
	c := newTestCache(t, src, Config{})
	if got := c.Suggest(nil, []byte("p-101"), 3); got != nil {
		t.Fatalf("before the warm: got %q, want nothing", got)
	}
	startReady(t, c)
	steps := []struct {
		name   string
		change func()
		reload bool
		want   []string
	}{
		{"warm", func() {}, false, []string{"P-100"}},
		{"insert", func() { src.set("P-102", "b") }, false, []string{"P-100", "P-102"}},
		{"update keeps it", func() { src.set("P-102", "c") }, false, []string{"P-100", "P-102"}},
		{"delete", func() { src.del("P-100") }, false, []string{"P-102"}},
		{"deleted unseen, swept by a reload", func() { src.delQuiet("P-102"); src.setQuiet("P-111", "d") }, true, []string{"P-111"}},
	}
	for _, st := range steps {
		st.change()
		var err error
		if st.reload {
			err = c.Reload(context.Background())
		} else {
			err = c.runStep(false)
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := c.Suggest(nil, []byte("p-101"), 3); !slices.Equal(got, st.want) {
			t.Fatalf("%s: got %q, want %q", st.name, got, st.want)
		}
	}
	c.Close()
	if got := c.Suggest(nil, []byte("p-101"), 3); got != nil {
		t.Fatalf("after Close: got %q, want nothing", got)
	}
}

// TestSuggestCountsAgainstBudget: the suggester's bytes are in Status.CostBytes, a table
// whose entries fit the budget but not with the suggester beside them is incomplete, and an
// incomplete table gives ristretto only what the suggester leaves.
func TestSuggestCountsAgainstBudget(t *testing.T) {
	const n = 300
	var keys []string
	var entries int64
	for i := range n {
		keys = append(keys, fakeKey(i))
		entries += prep(Row{Key: fakeKey(i), Values: []string{"v " + fakeKey(i)}}).cost()
	}
	index := newSuggester() // as the warm builds it: the keys in the snapshot's order
	for _, k := range keys {
		index.add(Key(k))
	}
	need := entries + index.bytes()
	tests := []struct {
		name     string
		budget   int64
		complete bool
	}{
		{"entries and suggester fit", need, true},
		{"entries fit, suggester does not", need - 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newSuggestCache(t, Config{MaxBytes: tt.budget}, keys...)
			st := c.Status()
			tb := c.cur.Load()
			if st.Complete != tt.complete {
				t.Fatalf("got complete %v, want %v (entries %d, suggester %d, budget %d)",
					st.Complete, tt.complete, entries, index.bytes(), tt.budget)
			}
			if got, want := st.CostBytes, tb.costBytes()+tb.sugg.bytes(); got != want || tb.sugg.bytes() == 0 {
				t.Errorf("got CostBytes %d, want ristretto's %d plus the suggester's %d", got, tb.costBytes(), tb.sugg.bytes())
			}
			if !tt.complete {
				if got, want := tb.rc.MaxCost(), tt.budget-tb.sugg.bytes(); got != want {
					t.Errorf("got ristretto MaxCost %d, want the budget less the suggester, %d", got, want)
				}
				if st.CostBytes > tt.budget {
					t.Errorf("got CostBytes %d over the budget %d", st.CostBytes, tt.budget)
				}
			}
		})
	}
}

// TestSuggestConcurrentWithLoader suggests from two goroutines while the loader applies
// changes and reloads (run it with -race): every suggestion is a key as stored, within
// distance 2 of its query.
func TestSuggestConcurrentWithLoader(t *testing.T) {
	const n = 2000
	src := newFakeSource(n)
	src.tombstones = true
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 2)
	for g := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			scratch := make([]int, 64*64)
			var dst []string
			for {
				select {
				case <-stop:
					return
				default:
				}
				q := []rune(Key(fakeKey(rng.IntN(n))))
				q[rng.IntN(len(q))] = rune('0' + rng.IntN(10))
				dst = c.Suggest(dst[:0], []byte(string(q)), 3)
				for _, s := range dst {
					if !strings.HasPrefix(s, "A") || osa([]rune(Key(s)), q, scratch) > suggestMaxDistance {
						errs <- "suggestion " + s + " for " + string(q)
						return
					}
				}
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 40 && time.Now().Before(deadline); i++ {
		for j := range 50 {
			k := fakeKey((i*50 + j) * 7 % n)
			if j%2 == 0 {
				src.del(k)
			} else {
				src.set(k, "moved")
			}
		}
		var err error
		if i%10 == 9 {
			err = c.Reload(context.Background())
		} else {
			err = c.runStep(false)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	sameIndex(t, c.cur.Load(), "at the end")
}
