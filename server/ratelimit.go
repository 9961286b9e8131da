package server

import (
	"hash/maphash"
	"sync"
	"time"
	"unsafe"
)

// Default per-OpenID rate limit: a worker can ask in bursts, a stuck client cannot flood.
const (
	DefaultRatePerMinute = 30
	DefaultRateBurst     = 10
)

// DefaultRateCapacity is how many senders the rate limiter tracks at once: far more than
// a plant's workers, so that in normal use no sender is ever forgotten before it is idle.
const DefaultRateCapacity = 1 << 16

// limiterWays is how many slots share a bucket: a sender may sit in any slot of the bucket
// its hash selects.
const limiterWays = 8

// limiter is a per-OpenID rate limit (the generic cell rate algorithm: one theoretical
// arrival time, TAT, per OpenID). Safe for concurrent use: each bucket has its own lock, so
// that messages on different cores seldom wait for each other. It allocates nothing per
// message.
//
// Its memory is fixed whatever arrives, bound() bytes: DefaultRateCapacity slots of 16
// bytes and a lock of 8 bytes a bucket, 1.06 MiB. A slot holds a 64-bit hash of the
// OpenID under a seed drawn at random when the process starts (two OpenIDs sharing a hash
// would share a limit; a sender sees no hash and cannot aim for another's) and its TAT.
// Slots are grouped in buckets of limiterWays by hash.
//
// When a new sender finds its bucket full, the slot with the earliest TAT goes. Forgetting
// a sender gives it a full burst again, so:
//
//  1. a slot whose TAT has passed is free: forgetting it changes nothing;
//  2. otherwise the earliest TAT is the sender furthest from its limit, so the least is
//     given away: at most a burst's worth of messages;
//  3. a sender at its limit has a TAT at least tolerance ahead, later than anyone who sent
//     fewer messages recently. Newcomers, however many, cannot push it out: only senders
//     that are themselves at their limit can, and then only when a whole bucket is made of
//     them. The limit guards against stuck clients, which this keeps limited; a flood of
//     distinct senders each at its limit is a flood the limit was never going to stop.
type limiter struct {
	interval  int64 // nanoseconds between admitted messages at the steady rate
	tolerance int64 // how far ahead of now the arrival time may run: (burst-1) intervals
	seed      maphash.Seed

	buckets []limiterBucket
}

type limiterBucket struct {
	mu    sync.Mutex // guards slots
	slots [limiterWays]limiterSlot
}

type limiterSlot struct {
	key uint64 // hash of the OpenID; 0: empty
	tat int64  // theoretical arrival time, unix nanoseconds
}

// newLimiter returns a limiter admitting perMinute messages a minute per OpenID with bursts
// of burst, tracking DefaultRateCapacity senders, or nil (no limit) when perMinute is 0.
func newLimiter(perMinute, burst int) *limiter {
	if perMinute <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	iv := int64(time.Minute) / int64(perMinute)
	return &limiter{interval: iv, tolerance: iv * int64(burst-1), seed: maphash.MakeSeed(),
		buckets: make([]limiterBucket, DefaultRateCapacity/limiterWays)}
}

// bound is the most memory l holds, in bytes, whatever arrives.
func (l *limiter) bound() int {
	return len(l.buckets) * int(unsafe.Sizeof(limiterBucket{}))
}

// allow reports whether a message from id at now is within the limit, and counts it.
func (l *limiter) allow(id []byte, now time.Time) bool {
	if l == nil {
		return true
	}
	t := now.UnixNano()
	key := max(maphash.Bytes(l.seed, id), 1) // 0 marks an empty slot
	b := &l.buckets[key%uint64(len(l.buckets))]
	b.mu.Lock()
	defer b.mu.Unlock()
	bucket := &b.slots
	slot := &bucket[0]
	found := false
	for i := range bucket {
		s := &bucket[i]
		if s.key == key {
			slot, found = s, true
			break
		}
		if s.tat < slot.tat { // the earliest TAT (an empty slot's is 0) goes if id is new
			slot = s
		}
	}
	tat := t // unknown: a full burst
	if found {
		tat = max(slot.tat, t)
	}
	if tat-t > l.tolerance {
		return false
	}
	*slot = limiterSlot{key: key, tat: tat + l.interval}
	return true
}

// entries is how many senders the limiter holds, for tests.
func (l *limiter) entries() int {
	n := 0
	for i := range l.buckets {
		b := &l.buckets[i]
		b.mu.Lock()
		for _, s := range b.slots {
			if s.key != 0 {
				n++
			}
		}
		b.mu.Unlock()
	}
	return n
}
