package server

import (
	"fmt"
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

// TestLimiterManyOpenIDs: a burst from many OpenIDs is admitted (each within its own
// limit), and idle OpenIDs are swept so the table does not grow without bound.
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
	l.allow([]byte("late"), t0.Add(2*time.Minute))
	if n := len(l.tat); n != 1 {
		t.Fatalf("after the sweep %d OpenIDs remain, want 1", n)
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
