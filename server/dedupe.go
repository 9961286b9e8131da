package server

import (
	"bytes"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// DefaultDedupeWindow is how long a message's reply is kept for WeChat's retries. WeChat
// re-sends a message it got no reply to up to three times within about 15 seconds.
const DefaultDedupeWindow = 60 * time.Second

// DefaultDedupeCapacity is how many replies the dedupe ring holds. At a plant's rates this
// covers the window many times over; under a flood the oldest are dropped first.
const DefaultDedupeCapacity = 1 << 16

// dedupe remembers the replies of recent messages so that a retry gets byte-for-byte the
// same reply. It is a ring of reusable slots indexed by a hash of the message's identity:
// once warm, storing and finding a reply allocate nothing. Safe for concurrent use.
type dedupe struct {
	window time.Duration

	mu    sync.Mutex
	index map[uint64]int32
	slots []dedupeSlot
	next  int
}

type dedupeSlot struct {
	hash  uint64
	at    int64 // unix nanoseconds of the store; 0 when the slot is empty
	key   []byte
	reply []byte
	o     outcome // how the first was answered, for the retries' metrics
}

func newDedupe(window time.Duration, capacity int) *dedupe {
	if capacity < 1 {
		capacity = 1
	}
	return &dedupe{
		window: window,
		index:  make(map[uint64]int32, capacity),
		slots:  make([]dedupeSlot, capacity),
	}
}

// find appends the reply stored for key within the window to dst and reports whether there
// was one, and how it was answered.
func (d *dedupe) find(dst, key []byte, now time.Time) ([]byte, outcome, bool) {
	if d == nil || d.window <= 0 {
		return dst, 0, false
	}
	h := xxhash.Sum64(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.index[h]
	if !ok {
		return dst, 0, false
	}
	s := &d.slots[i]
	if now.UnixNano()-s.at > int64(d.window) || !bytes.Equal(s.key, key) {
		return dst, 0, false
	}
	return append(dst, s.reply...), s.o, true
}

// store keeps reply for key, reusing the oldest slot. A key already stored within the
// window keeps its first reply, so concurrent retries cannot change what later ones get.
func (d *dedupe) store(key, reply []byte, o outcome, now time.Time) {
	if d == nil || d.window <= 0 {
		return
	}
	h := xxhash.Sum64(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	if i, ok := d.index[h]; ok {
		s := &d.slots[i]
		if now.UnixNano()-s.at <= int64(d.window) && bytes.Equal(s.key, key) {
			return
		}
	}
	i := d.next
	d.next = (d.next + 1) % len(d.slots)
	s := &d.slots[i]
	if s.at != 0 && d.index[s.hash] == int32(i) {
		delete(d.index, s.hash)
	}
	s.hash, s.at = h, now.UnixNano()
	s.key = append(s.key[:0], key...)
	s.reply = append(s.reply[:0], reply...)
	s.o = o
	d.index[h] = int32(i)
}
