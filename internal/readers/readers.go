// Package readers counts the readers inside a value that is replaced whole, so that its
// owner can retire the old value once no reader is, or ever will be, inside it: the cache's
// table on Close, the webhook's set of query routes when the configuration is reloaded.
package readers

import (
	"sync/atomic"
)

// Shards is how many counters a Count spreads its readers over, one cache line each, so
// that concurrent readers do not contend on one counter.
const Shards = 32

// Count is the readers inside one value. The zero value is ready to use.
//
// A reader enters the value it loaded from where the owner publishes it, loads it again,
// and uses it only if it is still the one published; else it leaves and starts over. The
// owner first publishes the replacement (or nil), then calls Retire, which returns once
// no reader is inside. Why no reader uses the value after Retire returns:
//  1. A reader enters (increments its shard), then re-reads what is published, and only
//     uses the value if it is still there.
//  2. Retire runs after the value was replaced, and sets retired before summing the
//     shards.
//  3. Go's atomics are sequentially consistent, so for any reader either its increment is
//     seen by the sum (and its Leave, which then sees retired, sums again), or its re-read
//     comes after the replacement and it leaves without using the value.
//
// So when the sum reaches zero no reader is, or will be, inside the value.
type Count struct {
	shards  [Shards]shard
	retired atomic.Bool
	// drained is made by Retire before it sets retired, and closed (once, by closing)
	// when the sum is seen at zero after that.
	drained chan struct{}
	closed  atomic.Bool
}

// shard is one counter of a Count, padded to its own cache line.
type shard struct {
	n atomic.Int64
	_ [56]byte
}

// Enter registers a reader on shard s (any number: it is taken modulo Shards). The
// reader must then check that the value is still the published one, and call Leave with
// the same s when done with it, or at once if it is not.
func (c *Count) Enter(s uint64) { c.shards[s%Shards].n.Add(1) }

// Leave ends a reader's use begun by Enter(s).
func (c *Count) Leave(s uint64) {
	c.shards[s%Shards].n.Add(-1)
	if c.retired.Load() {
		c.checkDrained()
	}
}

// Retire waits until no reader is inside the value. The caller must have replaced the
// value where readers load it first, and may call Retire once.
func (c *Count) Retire() {
	c.drained = make(chan struct{})
	c.retired.Store(true)
	c.checkDrained()
	<-c.drained
}

// Retired reports whether Retire has begun.
func (c *Count) Retired() bool { return c.retired.Load() }

// checkDrained closes drained once no reader is inside a retired value.
func (c *Count) checkDrained() {
	var n int64
	for i := range c.shards {
		n += c.shards[i].n.Load()
	}
	if n == 0 && c.closed.CompareAndSwap(false, true) {
		close(c.drained)
	}
}
