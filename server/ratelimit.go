package server

import (
	"sync"
	"time"
)

// Default per-OpenID rate limit: a worker can ask in bursts, a stuck client cannot flood.
const (
	DefaultRatePerMinute = 30
	DefaultRateBurst     = 10
)

// limiter is a per-OpenID rate limit (the generic cell rate algorithm: one theoretical
// arrival time per OpenID). Looking up a known OpenID allocates nothing. Idle OpenIDs are
// swept once a minute. Safe for concurrent use.
type limiter struct {
	interval  int64 // nanoseconds between admitted messages at the steady rate
	tolerance int64 // how far ahead of now the arrival time may run: (burst-1) intervals

	mu        sync.Mutex
	tat       map[string]*int64
	lastSweep int64
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
	return &limiter{interval: iv, tolerance: iv * int64(burst-1), tat: make(map[string]*int64)}
}

// allow reports whether a message from id at now is within the limit, and counts it.
func (l *limiter) allow(id []byte, now time.Time) bool {
	if l == nil {
		return true
	}
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t-l.lastSweep > int64(time.Minute) {
		l.sweep(t)
	}
	p, ok := l.tat[string(id)]
	if !ok {
		p = new(int64)
		l.tat[string(id)] = p
	}
	tat := max(*p, t)
	if tat-t > l.tolerance {
		return false
	}
	*p = tat + l.interval
	return true
}

// sweep forgets OpenIDs whose arrival time has passed: they are back to a full burst.
func (l *limiter) sweep(now int64) {
	for id, p := range l.tat {
		if *p <= now {
			delete(l.tat, id)
		}
	}
	l.lastSweep = now
}
