package server

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(60, 3) // one a second, bursts of three
	t0 := time.Unix(1_700_000_000, 0)
	id := []byte("oWorker")
	for i := range 3 {
		if !l.allow(id, t0) {
			t.Fatalf("message %d of a burst of 3 refused", i+1)
		}
	}
	if l.allow(id, t0) {
		t.Fatalf("fourth message at once allowed")
	}
	if !l.allow([]byte("oOther"), t0) {
		t.Fatalf("another OpenID refused: limits must be per OpenID")
	}
	if !l.allow(id, t0.Add(time.Second)) {
		t.Fatalf("refused one interval later")
	}
	if l.allow(id, t0.Add(time.Second)) {
		t.Fatalf("allowed twice in one interval after the burst")
	}
	if newLimiter(0, 5) != nil || !(*limiter)(nil).allow(id, t0) {
		t.Fatalf("a zero rate must mean no limit")
	}
}

// TestLimiterManyOpenIDs: a burst from many OpenIDs is admitted, each within its own
// limit.
func TestLimiterManyOpenIDs(t *testing.T) {
	l := newLimiter(30, 10)
	t0 := time.Unix(1_700_000_000, 0)
	refused := 0
	for i := range 10_000 {
		id := fmt.Appendf(nil, "o%05d", i)
		for range 10 {
			if !l.allow(id, t0) {
				refused++
			}
		}
		if l.allow(id, t0) {
			t.Fatalf("%s: 11th message in a burst of 10 allowed", id)
		}
	}
	if refused != 0 {
		t.Fatalf("%d messages within their burst refused", refused)
	}
}

// TestLimiterBoundedMemory: 100,000 distinct senders (SPEC section 9: distinct senders
// cannot grow it) leave the limiter holding at most DefaultRateCapacity senders, and the
// live heap grows by no more than its stated bound (1.06 MiB).
func TestLimiterBoundedMemory(t *testing.T) {
	before := liveHeap()
	l := newLimiter(DefaultRatePerMinute, DefaultRateBurst)
	if b := l.bound(); b > 1_114_112 {
		t.Errorf("bound %d bytes, over the 1.06 MiB the doc states", b)
	}
	t0 := time.Unix(1_700_000_000, 0)
	id := make([]byte, 128)
	for i := range 100_000 {
		copy(id, fmt.Sprintf("o%027d", i))
		if !l.allow(id, t0.Add(time.Duration(i)*time.Microsecond)) {
			t.Fatalf("sender %d refused its first message", i)
		}
	}
	if n := l.entries(); n > DefaultRateCapacity {
		t.Errorf("%d senders held, over DefaultRateCapacity (%d)", n, DefaultRateCapacity)
	}
	growth := int64(liveHeap()) - int64(before)
	if growth > int64(l.bound())+256<<10 {
		t.Errorf("live heap grew by %d bytes for 100,000 senders, over the bound of %d", growth, l.bound())
	}
	runtime.KeepAlive(l)
}

// TestLimiterLimitedSenderStaysLimited: a sender at its limit stays limited however many
// other senders arrive after it: eviction takes the senders furthest from their limit
// first, and newcomers with one message each are nearer to it than a stuck client.
func TestLimiterLimitedSenderStaysLimited(t *testing.T) {
	l := newLimiter(30, 10)
	t0 := time.Unix(1_700_000_000, 0)
	stuck := []byte("oStuck")
	for range 10 {
		l.allow(stuck, t0)
	}
	if l.allow(stuck, t0) {
		t.Fatalf("11th message of a burst allowed")
	}
	id := make([]byte, 28)
	for i := range 100_000 {
		copy(id, fmt.Sprintf("o%027d", i))
		now := t0.Add(time.Duration(i) * 10 * time.Microsecond) // a second in all
		l.allow(id, now)
		if i%10_000 == 9_999 && l.allow(stuck, now) {
			t.Fatalf("the stuck sender got through after %d other senders", i+1)
		}
	}
}

// TestLimiterRemembersAcrossGenerations: an OpenID over its limit stays limited when the
// generations turn over, and one idle for a generation is back to a full burst.
func TestLimiterRemembersAcrossGenerations(t *testing.T) {
	l := newLimiter(30, 10) // a message every 2s, bursts of 10: tolerance 18s
	t0 := time.Unix(1_700_000_000, 0)
	id := []byte("oStuck")
	for range 10 {
		l.allow(id, t0)
	}
	if l.allow(id, t0) {
		t.Fatalf("11th message of a burst allowed")
	}
	// A minute on, the generations turn over at this call: the OpenID, in prev now, is
	// still known. Its burst has refilled (20s of arrivals ahead at most), so ten pass…
	later := t0.Add(time.Minute + time.Second)
	for i := range 10 {
		if !l.allow(id, later) {
			t.Fatalf("message %d a minute later refused", i+1)
		}
	}
	// …and the eleventh does not: the limit carried over into the new generation.
	if l.allow(id, later) {
		t.Fatalf("11th message after the turn-over allowed")
	}
}

func TestLimiterNoAllocsForKnownOpenID(t *testing.T) {
	l := newLimiter(1_000_000, 1_000_000)
	id := []byte("oWorker")
	now := time.Now()
	l.allow(id, now)
	if n := testing.AllocsPerRun(100, func() { l.allow(id, now) }); n != 0 {
		t.Fatalf("allow allocates %v times for a known OpenID, want 0", n)
	}
}

// BenchmarkLimiterManyOpenIDs: 200,000 senders in turn, as the load harness sends them, a
// message every 50µs (20,000 a second), so the table is swept as in production.
func BenchmarkLimiterManyOpenIDs(b *testing.B) {
	l := newLimiter(DefaultRatePerMinute, DefaultRateBurst)
	ids := make([][]byte, 200_000)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "oWxBench%020d", i)
	}
	now := time.Unix(1_700_000_000, 0)
	b.ReportAllocs()
	i := 0
	var longest time.Duration // the longest call: a sweep holds every sender up
	for b.Loop() {
		start := time.Now()
		l.allow(ids[i%len(ids)], now)
		longest = max(longest, time.Since(start))
		now = now.Add(50 * time.Microsecond)
		i++
	}
	b.ReportMetric(float64(longest.Microseconds()), "µs-longest-call")
}
