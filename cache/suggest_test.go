package cache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestSuggester returns a suggester holding keys.
func newTestSuggester(tb testing.TB, keys ...string) *suggester {
	tb.Helper()
	s := newSuggester()
	for _, k := range keys {
		s.add(k)
	}
	return s
}

func TestSuggest(t *testing.T) {
	demo := []string{"18-546", "18-564", "18-547", "a7-001", "t72-104", "t72-140", "b02-104"}
	tests := []struct {
		name  string
		keys  []string
		query string
		limit int
		want  []string
	}{
		{"substitution", demo, "18-545", 3, []string{"18-546", "18-547", "18-564"}},
		{"transposition counts 1", []string{"18-546", "18-999"}, "18-456", 3, []string{"18-546"}},
		{"deletion in the query", demo, "a7-01", 3, []string{"a7-001"}},
		{"insertion in the query", demo, "a7-0001", 3, []string{"a7-001"}},
		{"two edits", []string{"a7-001", "zz-zzz"}, "a9-011", 3, []string{"a7-001"}},
		{"three edits are too far", []string{"a7-001"}, "b9-011", 3, nil},
		{"nothing close", demo, "hello world", 3, nil},
		{"query itself not suggested", demo, "18-546", 3, []string{"18-547", "18-564"}},
		{"limit", demo, "18-545", 1, []string{"18-546"}},
		{"limit 0", demo, "18-545", 0, nil},
		{"empty query", demo, "", 3, nil},
		{"empty index", nil, "18-546", 3, nil},
		// xb-12 is at distance 1 sharing no prefix; ab-9 and ab-99 are at 2 sharing 3
		// runes; ab-999 is at 3.
		{"distance before shared prefix", []string{"ab-99", "ab-9", "ab-999", "xb-12"}, "ab-12", 3,
			[]string{"xb-12", "ab-9", "ab-99"}},
		// All at distance 1: ab-13 and ab-14 share 4 runes, ab-22 shares 3, bb-12 shares 0.
		{"shared prefix before lexical", []string{"bb-12", "ab-22", "ab-14", "ab-13"}, "ab-12", 4,
			[]string{"ab-13", "ab-14", "ab-22", "bb-12"}},
		{"lexical last", []string{"c1", "b1", "a1"}, "d1", 3, []string{"a1", "b1", "c1"}},
		{"chinese substitution", []string{"车体-001", "车身-001", "总装-001"}, "车休-001", 3,
			[]string{"车体-001", "车身-001", "总装-001"}},
		{"chinese transposition", []string{"车体新厂房", "总装车间"}, "车新体厂房", 3, []string{"车体新厂房"}},
		{"chinese counts runes not bytes", []string{"总装车间"}, "总装", 3, []string{"总装车间"}},
		{"key shorter than query by two", []string{"ab", "abcd"}, "abcdef", 3, []string{"abcd"}},
		{"prefix of the query is a key", []string{"18-54", "18-5"}, "18-546", 3, []string{"18-54", "18-5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSuggester(t, tt.keys...)
			got := s.suggest(nil, []byte(tt.query), tt.limit)
			if !slices.Equal(got, tt.want) {
				t.Errorf("suggest(%q): got %q, want %q", tt.query, got, tt.want)
			}
		})
	}
}

func TestSuggestAppendsToDst(t *testing.T) {
	s := newTestSuggester(t, "18-546")
	got := s.suggest([]string{"x"}, []byte("18-547"), 3)
	if want := []string{"x", "18-546"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSuggesterAddTwiceAndRemove(t *testing.T) {
	s := newTestSuggester(t, "18-546", "18-546", "18-547", "18-5")
	if got, want := s.len(), 3; got != want {
		t.Fatalf("len after adding a key twice: got %d, want %d", got, want)
	}
	s.remove("18-547")
	s.remove("18-999") // not held: nothing happens
	s.remove("18-54")  // a prefix of keys, not a key: nothing happens
	if got, want := s.len(), 2; got != want {
		t.Fatalf("len after remove: got %d, want %d", got, want)
	}
	if got, want := s.suggest(nil, []byte("18-548"), 3), []string{"18-546", "18-5"}; !slices.Equal(got, want) {
		t.Errorf("after removing 18-547: got %q, want %q", got, want)
	}
	s.remove("18-546")
	// Only 18-5 is left: the trie's length ranges must have shrunk back to 4 runes, and
	// 18-5 is 2 from 18-54x.
	if got, want := s.suggest(nil, []byte("18-54x"), 3), []string{"18-5"}; !slices.Equal(got, want) {
		t.Errorf("after removing 18-546: got %q, want %q", got, want)
	}
	if got := s.nodes[0].maxLen; got != 4 {
		t.Errorf("root maxLen: got %d, want 4", got)
	}
	s.remove("18-5")
	if got := s.len(); got != 0 {
		t.Errorf("len when empty: got %d, want 0", got)
	}
	if got := s.suggest(nil, []byte("18-5"), 3); got != nil {
		t.Errorf("suggest on an emptied index: got %q, want none", got)
	}
	if got, want := s.nfree, len(s.nodes)-1; got != want {
		t.Errorf("free nodes when empty: got %d, want %d (all but the root)", got, want)
	}
	s.add("zz")
	if got, want := s.suggest(nil, []byte("zy"), 3), []string{"zz"}; !slices.Equal(got, want) {
		t.Errorf("after re-adding: got %q, want %q", got, want)
	}
}

func TestSuggesterMemoryFollowsKeys(t *testing.T) {
	s := newSuggester()
	empty := s.bytes()
	const n = 20000
	for i := range n {
		s.add(fmt.Sprintf("k%05d", i))
	}
	full := s.bytes()
	if perKey := float64(full-empty) / n; perKey < 16 || perKey > 64 {
		t.Errorf("bytes per key of 6 runes: got %.1f, want between 16 and 64", perKey)
	}
	for i := range n - 10 {
		s.remove(fmt.Sprintf("k%05d", i))
	}
	if got := s.bytes(); got > empty+full/10 {
		t.Errorf("bytes after removing all but 10 keys: got %d, want ≤ %d (full %d)", got, empty+full/10, full)
	}
	want := []string{"k19990", "k19991", "k19992"}
	if got := s.suggest(nil, []byte("k1999x"), 3); !slices.Equal(got, want) {
		t.Errorf("after compaction: got %q, want %q", got, want)
	}
}

func TestSuggestAllocatesOnlyItsResults(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	s := newTestSuggester(t, "18-546", "a7-001", "t72-104")
	tests := []struct {
		name  string
		query string
		want  float64
	}{
		{"none close", "zzzzzz", 0},
		{"one suggestion", "a7-002", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]string, 0, 3)
			got := testing.AllocsPerRun(100, func() { dst = s.suggest(dst[:0], []byte(tt.query), 3) })
			if got != tt.want {
				t.Errorf("allocations: got %v, want %v", got, tt.want)
			}
		})
	}
}

// osa is the optimal string alignment distance of a and b, by the textbook table; d is
// scratch for the table.
func osa(a, b []rune, d []int) int {
	w := len(b) + 1
	for i := 0; i <= len(a); i++ {
		for j := 0; j <= len(b); j++ {
			switch {
			case i == 0:
				d[j] = j
			case j == 0:
				d[i*w] = i
			default:
				cost := 1
				if a[i-1] == b[j-1] {
					cost = 0
				}
				v := min(d[(i-1)*w+j]+1, d[i*w+j-1]+1, d[(i-1)*w+j-1]+cost)
				if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
					v = min(v, d[(i-2)*w+j-2]+1)
				}
				d[i*w+j] = v
			}
		}
	}
	return d[len(a)*w+len(b)]
}

// bruteSuggest is the suggester's contract computed naively over keys.
func bruteSuggest(keys map[string]bool, query string, limit int) []string {
	type cand struct {
		key        string
		dist, pref int
	}
	q := []rune(query)
	var cs []cand
	var r []rune
	scratch := make([]int, 64*64)
	for k := range keys {
		r = append(r[:0], []rune(k)...)
		if len(r) > 60 || len(q) > 60 {
			panic("bruteSuggest: key too long for the scratch")
		}
		if d := osa(r, q, scratch); d >= 1 && d <= suggestMaxDistance {
			p := 0
			for p < len(r) && p < len(q) && r[p] == q[p] {
				p++
			}
			cs = append(cs, cand{k, d, p})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		if a.pref != b.pref {
			return b.pref - a.pref
		}
		return strings.Compare(a.key, b.key)
	})
	var out []string
	for _, c := range cs[:min(limit, len(cs))] {
		out = append(out, c.key)
	}
	return out
}

// mutate applies n random edits (substitution, insertion, deletion, transposition) to s.
func mutate(rng *rand.Rand, s []rune, alphabet []rune, n int) []rune {
	s = slices.Clone(s)
	for range n {
		i := rng.IntN(len(s) + 1)
		switch op := rng.IntN(4); {
		case op == 0 && i < len(s):
			s[i] = alphabet[rng.IntN(len(alphabet))]
		case op == 1:
			s = slices.Insert(s, i, alphabet[rng.IntN(len(alphabet))])
		case op == 2 && i < len(s) && len(s) > 1:
			s = slices.Delete(s, i, i+1)
		case i+1 < len(s):
			s[i], s[i+1] = s[i+1], s[i]
		}
	}
	return s
}

// TestSuggestMatchesBruteForce checks the trie search against the naive definition over
// random keys (a small alphabet, so that many keys are near each other, and a wide one
// whose runes share the bits of the subtrees' rune sets), before and after removing most of
// them (which also compacts the trie).
func TestSuggestMatchesBruteForce(t *testing.T) {
	for _, tt := range []struct {
		name, alphabet string
	}{
		{"small alphabet", "ab1-车体"},
		{"wide alphabet", "abcdefghijklmnopqrstuvwxyz0123456789-车体新厂房总装焊涂冲压间库号区排层货架第"},
	} {
		t.Run(tt.name, func(t *testing.T) { checkBruteForce(t, []rune(tt.alphabet)) })
	}
}

func checkBruteForce(t *testing.T, alphabet []rune) {
	rng := rand.New(rand.NewPCG(15, uint64(len(alphabet))))
	keys := map[string]bool{}
	s := newSuggester()
	var list []string
	for len(list) < 3000 {
		r := make([]rune, 1+rng.IntN(7))
		for i := range r {
			r[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if k := string(r); !keys[k] {
			keys[k] = true
			list = append(list, k)
			s.add(k)
		}
	}
	check := func(t *testing.T, queries int) {
		t.Helper()
		found := 0
		for range queries {
			var q []rune
			if rng.IntN(5) == 0 {
				q = mutate(rng, []rune("ab-1车"), alphabet, rng.IntN(4))
			} else {
				q = mutate(rng, []rune(list[rng.IntN(len(list))]), alphabet, 1+rng.IntN(3))
			}
			limit := 1 + rng.IntN(5)
			got := s.suggest(nil, []byte(string(q)), limit)
			if want := bruteSuggest(keys, string(q), limit); !slices.Equal(got, want) {
				t.Fatalf("suggest(%q, %d): got %q, want %q", string(q), limit, got, want)
			}
			found += len(got)
		}
		if found < queries/2 {
			t.Errorf("only %d suggestions for %d queries: the test exercises too little", found, queries)
		}
	}
	t.Run("full", func(t *testing.T) { check(t, 1000) })
	for _, k := range list[:2700] {
		s.remove(k)
		delete(keys, k)
	}
	list = list[2700:]
	if got, want := s.len(), len(keys); got != want {
		t.Fatalf("len after removals: got %d, want %d", got, want)
	}
	t.Run("after removals", func(t *testing.T) { check(t, 1000) })
}

// TestSuggesterConcurrent runs a writer adding and removing keys against readers suggesting
// (run it with -race): every suggestion must be a key within distance 2 of its query.
func TestSuggesterConcurrent(t *testing.T) {
	s := newSuggester()
	for i := range 1000 {
		s.add(fmt.Sprintf("p%03d", i))
	}
	deadline := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for round := 0; round < 20 && time.Now().Before(deadline); round++ {
			for i := range 1000 {
				s.remove(fmt.Sprintf("p%03d", i))
				s.add(fmt.Sprintf("q%03d", i))
			}
			for i := range 1000 {
				s.remove(fmt.Sprintf("q%03d", i))
				s.add(fmt.Sprintf("p%03d", i))
			}
		}
	})
	errs := make(chan string, 4)
	for r := range 4 {
		wg.Go(func() {
			var dst []string
			for n := 0; n < 100000; n++ {
				select {
				case <-done:
					return
				default:
				}
				q := fmt.Sprintf("p%03d", (n*7+r)%1000)
				dst = s.suggest(dst[:0], []byte(q+"x"), 3)
				for _, k := range dst {
					if d := osa([]rune(k), []rune(q+"x"), make([]int, 64)); d > 2 {
						errs <- fmt.Sprintf("suggest(%q): %q at distance %d", q+"x", k, d)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got, want := s.len(), 1000; got != want {
		t.Errorf("len: got %d, want %d", got, want)
	}
}
