package server

import (
	"hash/maphash"
	"sync"
	"time"
	"unsafe"
)

// DefaultDedupeWindow is how long a message's reply is kept for WeChat's retries. WeChat
// re-sends a message it got no reply to up to three times within about 15 seconds.
const DefaultDedupeWindow = 60 * time.Second

// DefaultDedupeCapacity is how many replies the dedupe table indexes. At a plant's rates
// this covers the window many times over; under a flood the oldest are dropped first.
const DefaultDedupeCapacity = 1 << 16

// DefaultDedupeRingBytes is the size of the ring the replies are kept in: about 50,000
// replies of a typical 300 bytes. Under a flood the oldest are overwritten first.
const DefaultDedupeRingBytes = 16 << 20

// maxDedupeReply is the largest reply kept. The largest the webhook renders is a text
// reply of MaxTextBytes of content with two names at MaxUserNameBytes, every byte of which
// may be a "]]>" that CDATA splits into 15 bytes: 2,048·5 + 2·128·5 + about 150 bytes of
// envelope, under 12 KiB (TestDedupeMaxReply renders it). A larger reply is not kept; a
// retry of it is answered afresh.
const maxDedupeReply = 16 << 10

// dedupeWays is how many slots share a bucket: a message's identity may sit in any slot
// of the bucket its hash selects.
const dedupeWays = 8

// dedupe remembers the replies of recent messages so that a retry gets byte-for-byte the
// same reply. Safe for concurrent use; storing and finding a reply allocate nothing.
//
// Its memory is fixed whatever arrives, bound() bytes: capacity slots of 48 bytes and
// a ring of ringBytes — with the defaults 3 MiB + 16 MiB = 19 MiB. To get there:
//
//   - A message's identity (route, names, MsgId or event fields: appendIdentity) is not
//     kept. Its 128-bit hash under two seeds drawn at random when the process starts is,
//     and two identities count as the same message when the hashes match. A sender sees
//     no hash, so it cannot search for an identity that collides with another's.
//   - Replies are copied into one ring of bytes, oldest overwritten first; a slot whose
//     reply has been overwritten since is not found (never answered with other bytes).
//   - Slots are grouped in buckets of dedupeWays by hash; a new message takes the slot of
//     its bucket that is empty, out of the window or overwritten, else the oldest.
type dedupe struct {
	window int64 // nanoseconds; <= 0 disables
	seeds  [2]maphash.Seed

	mu    sync.Mutex
	slots []dedupeSlot // len(slots)/dedupeWays buckets, or one when there are fewer slots
	ring  []byte       // the replies; nil when disabled
	head  uint64       // bytes ever written to the ring: the next one goes to ring[head%len]
	seq   uint64       // stores so far, for the age of a slot
}

// dedupeSlot is one message's entry. Its reply is ring[off%len : off%len+n], as long as
// head-off <= len(ring) (no write has gone round the ring past it).
type dedupeSlot struct {
	key dedupeKey
	at  int64  // unix nanoseconds of the store
	seq uint64 // 0: empty
	off uint64
	n   uint32
	o   outcome // how the first was answered, for the retries' metrics
}

// newDedupe returns a dedupe keeping replies for window in capacity slots and a ring of
// ringBytes (at least maxDedupeReply).
func newDedupe(window time.Duration, capacity, ringBytes int) *dedupe {
	capacity = max(capacity, 1)
	if capacity > dedupeWays {
		capacity -= capacity % dedupeWays
	}
	d := &dedupe{
		window: int64(window),
		seeds:  [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		slots:  make([]dedupeSlot, capacity),
	}
	if window > 0 {
		d.ring = make([]byte, max(ringBytes, maxDedupeReply))
	}
	return d
}

// bound is the most memory d holds, in bytes, whatever is stored in it.
func (d *dedupe) bound() int {
	return len(d.slots)*int(unsafe.Sizeof(dedupeSlot{})) + len(d.ring)
}

// dedupeKey is a message identity's 128-bit hash (dedupe.key).
type dedupeKey [2]uint64

// bucket returns the slots a key may occupy.
func (d *dedupe) bucket(key dedupeKey) []dedupeSlot {
	if len(d.slots) <= dedupeWays {
		return d.slots
	}
	b := int(key[0] % uint64(len(d.slots)/dedupeWays))
	return d.slots[b*dedupeWays : (b+1)*dedupeWays]
}

// key hashes the message identity id (appendIdentity) for find and store: once per
// message, for both.
func (d *dedupe) key(id []byte) dedupeKey {
	return dedupeKey{maphash.Bytes(d.seeds[0], id), maphash.Bytes(d.seeds[1], id)}
}

// live reports whether s holds a reply stored within the window whose bytes are intact.
func (d *dedupe) live(s *dedupeSlot, now int64) bool {
	return s.seq != 0 && now-s.at <= d.window && d.head-s.off <= uint64(len(d.ring))
}

// find appends the reply stored for the message of key within the window to dst and
// reports whether there was one, and how it was answered.
func (d *dedupe) find(dst []byte, key dedupeKey, now time.Time) ([]byte, outcome, bool) {
	if d == nil || d.window <= 0 {
		return dst, 0, false
	}
	t := now.UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.bucket(key)
	for i := range b {
		s := &b[i]
		if s.key == key && d.live(s, t) {
			start := s.off % uint64(len(d.ring))
			return append(dst, d.ring[start:start+uint64(s.n)]...), s.o, true
		}
	}
	return dst, 0, false
}

// store keeps reply for the message of key. A message already stored within the window
// keeps its first reply, so concurrent retries cannot change what later ones get. A reply
// over maxDedupeReply is not kept.
func (d *dedupe) store(key dedupeKey, reply []byte, o outcome, now time.Time) {
	if d == nil || d.window <= 0 || len(reply) > maxDedupeReply {
		return
	}
	t := now.UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.bucket(key)
	victim := &b[0]
	for i := range b {
		s := &b[i]
		if !d.live(s, t) {
			victim = s // free; keep looking for the message itself
			continue
		}
		if s.key == key {
			return
		}
		if d.live(victim, t) && s.seq < victim.seq {
			victim = s
		}
	}
	// The reply goes at head, or at the start of the ring when it would not fit before
	// the end: a reply is always one piece.
	size := uint64(len(d.ring))
	if pos := d.head % size; pos+uint64(len(reply)) > size {
		d.head += size - pos
	}
	start := d.head % size
	copy(d.ring[start:], reply)
	d.seq++
	*victim = dedupeSlot{key: key, at: t, seq: d.seq, off: d.head, n: uint32(len(reply)), o: o}
	d.head += uint64(len(reply))
}
