package server

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The per-message tables (rate limiter, replay guard, dedupe window) take one of many
// locks per message (a bucket's, a shard's). These tests race goroutines on the same senders, nonces and messages
// and check that each table still decides each of them once (run them with -race, as
// make test does).

// race runs f(g) on n goroutines released together, and waits for them.
func race(n int, f func(g int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range n {
		wg.Go(func() {
			<-start
			f(g)
		})
	}
	close(start)
	wg.Wait()
}

func TestLimiterConcurrent(t *testing.T) {
	const senders, goroutines, each, burst = 300, 8, 4, 5
	l := newLimiter(1, burst) // one a minute: within the test, only the burst passes
	t0 := time.Unix(1_700_000_000, 0)
	var admitted [senders]atomic.Int64
	race(goroutines, func(g int) {
		for range each {
			for s := range senders {
				if l.allow(fmt.Appendf(nil, "oSender%04d", (s+g*37)%senders), t0) {
					admitted[(s+g*37)%senders].Add(1)
				}
			}
		}
	})
	for s := range senders {
		if n := admitted[s].Load(); n != burst {
			t.Fatalf("sender %d: %d of %d messages admitted at once, want the burst of %d", s, n, goroutines*each, burst)
		}
	}
}

func TestReplayGuardConcurrent(t *testing.T) {
	const nonces, goroutines = 2000, 8
	g := newReplayGuard(5*time.Minute, DefaultReplayCapacity)
	now := time.Unix(1_700_000_000, 0)
	var winners [nonces]atomic.Int64
	race(goroutines, func(w int) {
		body := []byte("<xml>message of goroutine " + strconv.Itoa(w) + "</xml>")
		for i := range nonces {
			n := (i + w*101) % nonces
			if g.check(routeOA, now.Unix(), []byte(strconv.Itoa(n)), body, now) {
				winners[n].Add(1)
			}
		}
	})
	for n := range nonces {
		if got := winners[n].Load(); got != 1 {
			t.Fatalf("nonce %d: bound to %d of %d different messages, want 1", n, got, goroutines)
		}
	}
}

func TestDedupeConcurrent(t *testing.T) {
	d := newDedupe(time.Minute, DefaultDedupeCapacity, DefaultDedupeRingBytes)
	if len(d.shards) != maxDedupeShards {
		t.Fatalf("the default window has %d shards, want %d", len(d.shards), maxDedupeShards)
	}
	if small := newDedupe(time.Minute, 64, maxDedupeReply); len(small.shards) != 1 {
		t.Fatalf("a window with a ring of maxDedupeReply has %d shards, want 1", len(small.shards))
	}
	const messages, goroutines = 5000, 8
	t0 := time.Unix(1_700_000_000, 0)
	race(goroutines, func(g int) {
		var buf []byte
		for i := range messages {
			m := (i + g*613) % messages
			key := d.key(fmt.Appendf(nil, "gh_test\x00oSender\x00%d", m))
			if _, _, ok := d.find(buf[:0], key, t0); !ok {
				d.store(key, fmt.Appendf(nil, "reply to %d by %d", m, g), outcomeFound, t0)
			}
		}
	})
	used := map[*dedupeShard]bool{}
	for m := range messages {
		key := d.key(fmt.Appendf(nil, "gh_test\x00oSender\x00%d", m))
		got, _, ok := d.find(nil, key, t0)
		var by int
		if _, err := fmt.Sscanf(string(got), "reply to "+strconv.Itoa(m)+" by %d", &by); !ok || err != nil {
			t.Fatalf("message %d: got %q %v, want one of its replies", m, got, ok)
		}
		used[d.shard(key)] = true
	}
	if len(used) != maxDedupeShards {
		t.Errorf("%d messages went to %d of %d shards", messages, len(used), maxDedupeShards)
	}
}
