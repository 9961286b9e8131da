package server

import (
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Default per-OpenID rate limit: a worker can ask in bursts, a stuck client cannot flood.
const (
	DefaultRatePerMinute = 30
	DefaultRateBurst     = 10
)

// limiter is a per-OpenID rate limit (the generic cell rate algorithm: one theoretical
// arrival time per OpenID). It allocates nothing per message. Safe for concurrent use.
//
// OpenIDs are kept in two generations, so forgetting idle ones costs nothing per message
// and never holds the lock for long (a sweep of a map with 200,000 OpenIDs held every
// sender up for 50ms):
//
//  1. allow looks an OpenID up in cur, then in prev, and writes it to cur;
//  2. every period, prev is dropped and cur becomes prev;
//  3. so an OpenID dropped was last seen more than a period ago, and as the period exceeds
//     tolerance+interval its arrival time has passed: it is back to a full burst, exactly
//     as if it were still there.
//
// OpenIDs are keyed by their 64-bit xxhash; two OpenIDs sharing a hash would share a limit,
// which among a plant's users is as good as impossible.
type limiter struct {
	interval  int64 // nanoseconds between admitted messages at the steady rate
	tolerance int64 // how far ahead of now the arrival time may run: (burst-1) intervals
	period    int64 // nanoseconds between generations

	mu        sync.Mutex
	cur, prev map[uint64]int64 // theoretical arrival time by OpenID hash
	rotated   int64
}

// newLimiter returns a limiter admitting perMinute messages a minute per OpenID with bursts
// of burst, or nil (no limit) when perMinute is 0.
func newLimiter(perMinute, burst int) *limiter {
	if perMinute <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	iv := int64(time.Minute) / int64(perMinute)
	tol := iv * int64(burst-1)
	return &limiter{interval: iv, tolerance: tol, period: max(int64(time.Minute), 2*(tol+iv)),
		cur: make(map[uint64]int64), prev: make(map[uint64]int64)}
}

// allow reports whether a message from id at now is within the limit, and counts it.
func (l *limiter) allow(id []byte, now time.Time) bool {
	if l == nil {
		return true
	}
	t := now.UnixNano()
	h := xxhash.Sum64(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	if t-l.rotated > l.period {
		l.prev, l.cur = l.cur, make(map[uint64]int64)
		l.rotated = t
	}
	tat, ok := l.cur[h]
	if !ok {
		tat = l.prev[h] // 0 when unknown: a full burst
	}
	tat = max(tat, t)
	if tat-t > l.tolerance {
		return false
	}
	l.cur[h] = tat + l.interval
	return true
}

// entries is how many OpenIDs the limiter holds, for tests.
func (l *limiter) entries() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.cur)
	for h := range l.prev {
		if _, ok := l.cur[h]; !ok {
			n++
		}
	}
	return n
}
