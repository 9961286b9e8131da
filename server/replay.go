package server

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"
	"unsafe"
)

// DefaultReplayCapacity is how many (timestamp, nonce) bindings the replay guard holds:
// the whole five-minute skew window at 400 requests a second, far beyond a plant's rate.
// Past it, see replayGuard for what a full guard does.
const DefaultReplayCapacity = 1 << 17

// replayWays is how many slots share a bucket.
const replayWays = 16

// maxNonceBytes caps a request's nonce (SPEC section 9): letters and digits only.
const maxNonceBytes = 32

// replayGuard binds each (route, timestamp, nonce) of a signed request to the message it
// came with, for as long as the timestamp passes the skew check. In plaintext the
// signature covers only token, timestamp and nonce, not the body, so whoever saw one
// signed URL could post any body under it until the timestamp expires; the guard makes
// that URL good for its first message only. The same message again is what a WeChat retry
// looks like and goes on (to the dedupe window, which answers it with the first reply);
// another message is a replay. In the encrypted modes the message is the decrypted one, so
// a retry that WeChat encrypted afresh is still the same message.
//
// Messages are compared by a 128-bit hash under two seeds drawn at random when the process
// starts (the binding's key, a hash of route, timestamp and nonce, under a third): a
// sender sees no hash, so it cannot make up a second message with the first one's hash.
// Safe for concurrent use: each bucket has its own lock, so that messages on different
// cores seldom wait for each other. check allocates nothing.
//
// Its memory is fixed, bound() bytes: capacity slots of 32 bytes in buckets of
// replayWays, and 16 bytes per bucket (its horizon and its lock) — 4,325,376 bytes
// (4.1 MiB) with the default capacity. A binding lives until its timestamp is more than
// the skew in the past. When a new binding finds its bucket full of live ones, the one
// with the oldest timestamp is dropped and the bucket's horizon moves up to that
// timestamp: from then on a request the bucket does not know is refused if its timestamp
// is before the horizon, since it could replay a dropped binding with another body. So a
// full guard refuses rather than forgets — except within the horizon's own second, which
// it accepts, so that a flood of requests all stamped with the same second (a load
// generator's; WeChat stamps each with the current time) is not refused wholesale; a
// binding dropped in that second can be replayed until the bucket drops a later one.
// None of this happens below tens of thousands of requests a second; a plant sends a few.
type replayGuard struct {
	skew  int64 // seconds
	seeds [3]maphash.Seed

	buckets []replayBucket
}

type replayBucket struct {
	mu      sync.Mutex // guards the bucket; on the cache line check reads first anyway
	horizon int64      // unix seconds; see replayGuard
	slots   [replayWays]replaySlot
}

type replaySlot struct {
	key  uint64    // hash of (route, timestamp, nonce); zero: empty
	body [2]uint64 // hash of the message bound to it
	ts   int64     // the request's timestamp, unix seconds
}

// live reports whether s holds a binding that has not expired: its timestamp is not
// before expired.
func (s *replaySlot) live(expired int64) bool {
	return s.key != 0 && s.ts >= expired
}

// newReplayGuard returns a guard for timestamps within skew of now, holding capacity
// bindings (rounded up to whole buckets).
func newReplayGuard(skew time.Duration, capacity int) *replayGuard {
	buckets := make([]replayBucket, max((capacity+replayWays-1)/replayWays, 1))
	for i := range buckets {
		buckets[i].horizon = -1 << 63
	}
	return &replayGuard{
		skew:    int64(skew / time.Second),
		seeds:   [3]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed(), maphash.MakeSeed()},
		buckets: buckets,
	}
}

// bound is the most memory g holds, in bytes, whatever arrives.
func (g *replayGuard) bound() int {
	return len(g.buckets) * int(unsafe.Sizeof(replayBucket{}))
}

// check reports whether a request to route rt with timestamp ts (unix seconds) and nonce
// (at most maxNonceBytes) may go on with message: true for the first message under that
// timestamp and nonce, and for the same message again; false for another message, and
// for an unknown timestamp and nonce before its bucket's horizon.
func (g *replayGuard) check(rt route, ts int64, nonce, message []byte, now time.Time) bool {
	var id [1 + 8 + maxNonceBytes]byte
	id[0] = byte(rt)
	binary.LittleEndian.PutUint64(id[1:], uint64(ts))
	n := 9 + copy(id[9:], nonce)
	key := max(maphash.Bytes(g.seeds[0], id[:n]), 1) // zero marks an empty slot
	body := [2]uint64{maphash.Bytes(g.seeds[1], message), maphash.Bytes(g.seeds[2], message)}
	expired := now.Unix() - g.skew // a binding with a timestamp before this has expired

	b := &g.buckets[key%uint64(len(g.buckets))]
	b.mu.Lock()
	defer b.mu.Unlock()
	var victim *replaySlot // a free slot, else the live binding with the oldest timestamp
	for i := range b.slots {
		s := &b.slots[i]
		if s.live(expired) {
			if s.key == key {
				return s.body == body
			}
			if victim == nil || victim.live(expired) && s.ts < victim.ts {
				victim = s
			}
		} else if victim == nil || victim.live(expired) {
			victim = s
		}
	}
	if ts < b.horizon {
		return false
	}
	if victim.live(expired) {
		b.horizon = max(b.horizon, victim.ts) // a live binding is dropped
	}
	*victim = replaySlot{key: key, body: body, ts: ts}
	return true
}

// entries is how many live bindings g holds at now, for tests.
func (g *replayGuard) entries(now time.Time) int {
	n := 0
	for i := range g.buckets {
		b := &g.buckets[i]
		b.mu.Lock()
		for j := range b.slots {
			if b.slots[j].live(now.Unix() - g.skew) {
				n++
			}
		}
		b.mu.Unlock()
	}
	return n
}

// nonceProblem checks a request's nonce against SPEC section 9: 1 to maxNonceBytes ASCII
// letters and digits. WeChat and WeCom send digits; a longer nonce is field_too_long, and
// any other character, or none, is bad_request, since no genuine request has one. It
// returns ok when the nonce passes.
func nonceProblem(nonce []byte) (r reason, ok bool) {
	if len(nonce) > maxNonceBytes {
		return reasonFieldTooLong, false
	}
	if len(nonce) == 0 {
		return reasonBadRequest, false
	}
	for _, c := range nonce {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return reasonBadRequest, false
		}
	}
	return 0, true
}
