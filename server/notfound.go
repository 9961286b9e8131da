package server

import (
	"bytes"
	"cmp"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// DefaultNotFoundTop is how many missing keys a query's not-found report tracks.
const DefaultNotFoundTop = 100

// notFoundKeyMax caps a key, in bytes, before the not-found report stores it; a longer key
// is cut on a rune boundary and counted as its first notFoundKeyMax bytes.
const notFoundKeyMax = 64

// NotFoundKey is one row of a not-found report: a key asked for and not found, how often,
// and when. Count overestimates the true count by at most Error (the space-saving bound):
// the true count lies in [Count-Error, Count]. First is when the key entered the report
// (it may have been asked before, uncounted, when Error > 0); Last is when it was last asked.
type NotFoundKey struct {
	Key   string    `json:"key"`
	Count uint64    `json:"count"`
	Error uint64    `json:"error"`
	First time.Time `json:"first_asked"`
	Last  time.Time `json:"last_asked"`
}

// notFoundReport is one query's most-asked missing keys: a space-saving summary (Metwally,
// Agrawal and El Abbadi) of k counters. A key already tracked has its counter incremented;
// a new key takes the counter of the least-asked key (the least recently asked among equals)
// and starts from its count plus one, recording that count as its error. Any key asked more
// than N/k times of N is tracked, and every count is at most N/k too high.
//
// Memory is fixed at construction (k slots of a capped key, a heap and an index of k
// entries) whatever arrives, and record allocates nothing. Keys are indexed by their 64-bit
// xxhash; a key whose hash equals a tracked key's (odds about k/2⁶⁴) is not counted.
// Safe for concurrent use: record holds one mutex for a hash-map lookup and a heap fix-up.
type notFoundReport struct {
	mu    sync.Mutex
	k     int
	index map[uint64]int32 // xxhash of a tracked key → its slot
	slots []notFoundSlot   // the tracked keys, at most k
	heap  []int32          // slot numbers: a min-heap by (count, last)
}

// notFoundSlot is one tracked key.
type notFoundSlot struct {
	key         [notFoundKeyMax]byte
	n           uint8 // bytes of key used
	pos         int32 // index in heap
	hash        uint64
	count, err  uint64
	first, last int64 // unix nanoseconds
}

// newNotFoundReport returns an empty report tracking k keys (DefaultNotFoundTop when k ≤ 0).
func newNotFoundReport(k int) *notFoundReport {
	if k <= 0 {
		k = DefaultNotFoundTop
	}
	return &notFoundReport{
		k:     k,
		index: make(map[uint64]int32, k),
		slots: make([]notFoundSlot, 0, k),
		heap:  make([]int32, 0, k),
	}
}

// capKey cuts key to at most notFoundKeyMax bytes on a rune boundary.
func capKey(key []byte) []byte { return cutUTF8(key, notFoundKeyMax) }

// cutUTF8 returns the longest prefix of b of at most n bytes that does not end inside a
// UTF-8 sequence.
func cutUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// record counts one request for key, which was not found, at now. The key is capped (see
// notFoundKeyMax) and copied: the report keeps no reference to the caller's buffer. It
// allocates nothing. A nil report records nothing. Safe for concurrent use.
func (r *notFoundReport) record(key []byte, now time.Time) {
	if r == nil {
		return
	}
	key = capKey(key)
	h := xxhash.Sum64(key)
	t := now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.index[h]; ok {
		s := &r.slots[i]
		if !bytes.Equal(s.key[:s.n], key) {
			return // a hash collision with a tracked key: not counted (see the type's doc)
		}
		s.count++
		s.last = t
		r.down(int(s.pos))
		return
	}
	var i int32
	if len(r.slots) < r.k {
		i = int32(len(r.slots))
		r.slots = append(r.slots, notFoundSlot{pos: int32(len(r.heap))})
		r.heap = append(r.heap, i)
	} else {
		// Take over the least-asked key's counter: its count is the new key's error.
		i = r.heap[0]
		delete(r.index, r.slots[i].hash)
	}
	s := &r.slots[i]
	s.n = uint8(copy(s.key[:], key))
	s.hash = h
	s.err = s.count
	s.count++
	s.first, s.last = t, t
	r.index[h] = i
	r.up(int(s.pos))
	r.down(int(s.pos))
}

// less orders the heap: fewer requests first, then the least recently asked.
func (r *notFoundReport) less(a, b int) bool {
	sa, sb := &r.slots[r.heap[a]], &r.slots[r.heap[b]]
	if sa.count != sb.count {
		return sa.count < sb.count
	}
	return sa.last < sb.last
}

// swap exchanges heap positions a and b and updates the slots' positions.
func (r *notFoundReport) swap(a, b int) {
	r.heap[a], r.heap[b] = r.heap[b], r.heap[a]
	r.slots[r.heap[a]].pos = int32(a)
	r.slots[r.heap[b]].pos = int32(b)
}

// up moves the entry at heap position i towards the root while it is less than its parent.
func (r *notFoundReport) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !r.less(i, p) {
			return
		}
		r.swap(i, p)
		i = p
	}
}

// down moves the entry at heap position i towards the leaves while a child is less.
func (r *notFoundReport) down(i int) {
	n := len(r.heap)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && r.less(c+1, c) {
			c++
		}
		if !r.less(c, i) {
			return
		}
		r.swap(i, c)
		i = c
	}
}

// top returns the tracked keys, most asked first, then the most recently asked, then by
// key. Safe for concurrent use.
func (r *notFoundReport) top() []NotFoundKey {
	r.mu.Lock()
	out := make([]NotFoundKey, len(r.slots))
	for i := range r.slots {
		s := &r.slots[i]
		out[i] = NotFoundKey{
			Key:   string(s.key[:s.n]),
			Count: s.count,
			Error: s.err,
			First: time.Unix(0, s.first),
			Last:  time.Unix(0, s.last),
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b NotFoundKey) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		if c := b.Last.Compare(a.Last); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return out
}
