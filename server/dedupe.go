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

// maxDedupeShards is how many shards the dedupe window is split into at most (each with
// its own lock, slots and ring), so that messages on different cores seldom wait for each
// other. More shards cost a message more memory misses (each ring's write position is its
// own stream of writes); four halve the wait of two cores (docs/BENCH.md). A window too
// small to give every shard at least a bucket and a ring of maxDedupeReply has fewer.
const maxDedupeShards = 4

// dedupe remembers the replies of recent messages so that a retry gets byte-for-byte the
// same reply. Safe for concurrent use; storing and finding a reply allocate nothing.
//
// Its memory is fixed whatever arrives, bound() bytes: capacity slots of 48 bytes and
// ring bytes of replies, split evenly over its shards, and the shards' headers (under a
// kilobyte) — with the defaults 3 MiB + 16 MiB, 19 MiB. To get there:
//
//   - A message's identity (route, names, MsgId or event fields: appendIdentity) is not
//     kept. Its 128-bit hash under two seeds drawn at random when the process starts is,
//     and two identities count as the same message when the hashes match. A sender sees
//     no hash, so it cannot search for an identity that collides with another's.
//   - The hash picks a shard; each shard copies its replies into its own ring of bytes,
//     oldest overwritten first; a slot whose reply has been overwritten since is not found
//     (never answered with other bytes).
//   - A shard's slots are grouped in buckets of dedupeWays by hash; a new message takes the
//     slot of its bucket that is empty, out of the window or overwritten, else the oldest.
type dedupe struct {
	window int64 // nanoseconds; <= 0 disables
	seeds  [2]maphash.Seed
	shards []dedupeShard // a power of two of them
}

// dedupeShard is one shard of a dedupe: the messages whose hash selects it.
type dedupeShard struct {
	mu    sync.Mutex
	slots []dedupeSlot // len(slots)/dedupeWays buckets, or one when there are fewer slots
	ring  []byte       // the replies; nil when disabled
	head  uint64       // bytes ever written to the ring: the next one goes to ring[head%len]
	seq   uint64       // stores so far, for the age of a slot
	_     [64]byte     // keeps the next shard's lock and counters off this one's cache line
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
// ringBytes (at least maxDedupeReply), both split over up to maxDedupeShards shards.
func newDedupe(window time.Duration, capacity, ringBytes int) *dedupe {
	capacity = max(capacity, 1)
	ringBytes = max(ringBytes, maxDedupeReply)
	n := maxDedupeShards
	for n > 1 && (capacity/n < dedupeWays || ringBytes/n < maxDedupeReply) {
		n /= 2
	}
	d := &dedupe{
		window: int64(window),
		seeds:  [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		shards: make([]dedupeShard, n),
	}
	for i := range d.shards {
		sh := &d.shards[i]
		c := capacity / n
		if c > dedupeWays {
			c -= c % dedupeWays
		}
		sh.slots = make([]dedupeSlot, c)
		if window > 0 {
			sh.ring = make([]byte, ringBytes/n)
		}
	}
	return d
}

// bound is the most memory d holds, in bytes, whatever is stored in it.
func (d *dedupe) bound() int {
	n := len(d.shards) * int(unsafe.Sizeof(dedupeShard{}))
	for i := range d.shards {
		n += len(d.shards[i].slots)*int(unsafe.Sizeof(dedupeSlot{})) + len(d.shards[i].ring)
	}
	return n
}

// dedupeKey is a message identity's 128-bit hash (dedupe.key).
type dedupeKey [2]uint64

// shard returns the shard of key: by its second word, as its first picks the bucket.
func (d *dedupe) shard(key dedupeKey) *dedupeShard {
	return &d.shards[key[1]&uint64(len(d.shards)-1)]
}

// bucket returns the slots a key may occupy.
func (sh *dedupeShard) bucket(key dedupeKey) []dedupeSlot {
	if len(sh.slots) <= dedupeWays {
		return sh.slots
	}
	b := int(key[0] % uint64(len(sh.slots)/dedupeWays))
	return sh.slots[b*dedupeWays : (b+1)*dedupeWays]
}

// key hashes the message identity id (appendIdentity) for find and store: once per
// message, for both.
func (d *dedupe) key(id []byte) dedupeKey {
	return dedupeKey{maphash.Bytes(d.seeds[0], id), maphash.Bytes(d.seeds[1], id)}
}

// live reports whether s holds a reply stored within window whose bytes are intact.
func (sh *dedupeShard) live(s *dedupeSlot, now, window int64) bool {
	return s.seq != 0 && now-s.at <= window && sh.head-s.off <= uint64(len(sh.ring))
}

// find appends the reply stored for the message of key within the window to dst and
// reports whether there was one, and how it was answered.
func (d *dedupe) find(dst []byte, key dedupeKey, now time.Time) ([]byte, outcome, bool) {
	if d == nil || d.window <= 0 {
		return dst, 0, false
	}
	t := now.UnixNano()
	sh := d.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.bucket(key)
	for i := range b {
		s := &b[i]
		if s.key == key && sh.live(s, t, d.window) {
			start := s.off % uint64(len(sh.ring))
			return append(dst, sh.ring[start:start+uint64(s.n)]...), s.o, true
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
	sh := d.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.bucket(key)
	victim := &b[0]
	for i := range b {
		s := &b[i]
		if !sh.live(s, t, d.window) {
			victim = s // free; keep looking for the message itself
			continue
		}
		if s.key == key {
			return
		}
		if sh.live(victim, t, d.window) && s.seq < victim.seq {
			victim = s
		}
	}
	// The reply goes at head, or at the start of the ring when it would not fit before
	// the end: a reply is always one piece.
	size := uint64(len(sh.ring))
	if pos := sh.head % size; pos+uint64(len(reply)) > size {
		sh.head += size - pos
	}
	start := sh.head % size
	copy(sh.ring[start:], reply)
	sh.seq++
	*victim = dedupeSlot{key: key, at: t, seq: sh.seq, off: sh.head, n: uint32(len(reply)), o: o}
	sh.head += uint64(len(reply))
}
