package server

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func TestReplayGuard(t *testing.T) {
	const skew = 5 * time.Minute
	g := newReplayGuard(skew, 1024)
	now := time.Unix(1_700_000_000, 0)
	ts := now.Unix()
	body, other := []byte("<xml>first</xml>"), []byte("<xml>forged</xml>")
	steps := []struct {
		name  string
		rt    route
		ts    int64
		nonce string
		body  []byte
		at    time.Time
		want  bool
	}{
		{"first body", routeOA, ts, "42", body, now, true},
		{"the same body again: a retry", routeOA, ts, "42", body, now.Add(10 * time.Second), true},
		{"another body: a replay", routeOA, ts, "42", other, now.Add(10 * time.Second), false},
		{"the first body still passes", routeOA, ts, "42", body, now.Add(20 * time.Second), true},
		{"another nonce", routeOA, ts, "43", other, now, true},
		{"another timestamp", routeOA, ts + 1, "42", other, now, true},
		{"the other route", routeWeCom, ts, "42", other, now, true},
		{"an empty body is bound too", routeOA, ts, "44", nil, now, true},
		{"and another body is refused after it", routeOA, ts, "44", body, now, false},
		{"a timestamp from the future is bound until it has expired", routeOA, ts + 200, "45", body, now, true},
		{"still bound near its end", routeOA, ts + 200, "45", other, now.Add(skew + 199*time.Second), false},
		{"after the skew window the binding is gone", routeOA, ts, "42", other, now.Add(skew + time.Second), true},
	}
	for _, s := range steps {
		if got := g.check(s.rt, s.ts, []byte(s.nonce), s.body, s.at); got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
}

// TestReplayGuardFull: a full guard drops its oldest binding and refuses, from then on,
// any unknown (timestamp, nonce) not newer than the one it dropped: it could be a replay
// the guard can no longer tell. Newer requests and retries of kept ones go on.
func TestReplayGuardFull(t *testing.T) {
	g := newReplayGuard(5*time.Minute, replayWays) // one bucket
	now := time.Unix(1_700_000_000, 0)
	first := now.Unix() - 200
	body := []byte("b")
	for i := range 1000 { // timestamps first, first+1 … : the early ones are dropped
		if !g.check(routeOA, first+int64(i/10), []byte(strconv.Itoa(i)), body, now) {
			t.Fatalf("request %d refused while filling", i)
		}
	}
	if g.check(routeOA, first, []byte("0"), []byte("forged"), now) {
		t.Errorf("a dropped binding was accepted with another body")
	}
	if g.check(routeOA, first+1, []byte("new"), body, now) {
		t.Errorf("an unknown request older than the dropped bindings was accepted")
	}
	if !g.check(routeOA, now.Unix(), []byte("new"), body, now) {
		t.Errorf("a request newer than every binding was refused")
	}
	if !g.check(routeOA, first+99, []byte("999"), body, now) {
		t.Errorf("the retry of a recent request was refused")
	}
}

// TestReplayGuardSameSecondFlood: a flood of requests all stamped with one second, far
// more than a bucket holds, is accepted (a load generator does this; the horizon is that
// second), while an unknown request from before it is still refused.
func TestReplayGuardSameSecondFlood(t *testing.T) {
	g := newReplayGuard(5*time.Minute, replayWays) // one bucket
	now := time.Unix(1_700_000_000, 0)
	g.check(routeOA, now.Unix()-1, []byte("early"), nil, now)
	for i := range 10 * replayWays {
		if !g.check(routeOA, now.Unix(), []byte(strconv.Itoa(i)), []byte("b"), now) {
			t.Fatalf("request %d of the same second refused", i)
		}
	}
	if g.check(routeOA, now.Unix()-1, []byte("other"), nil, now) {
		t.Errorf("an unknown request from before the horizon was accepted")
	}
	if g.check(routeOA, now.Unix(), []byte(strconv.Itoa(10*replayWays-1)), []byte("forged"), now) {
		t.Errorf("a kept binding accepted another body")
	}
}

// TestReplayGuardBoundedMemory: 200,000 distinct requests (SPEC section 9), two thousand
// a second, grow the live heap by no more than the guard's stated bound, 4.1 MiB with the
// defaults. The guard fills up after a minute or so of them and drops its oldest bindings
// from then on; every request, stamped with the current time, still goes through.
func TestReplayGuardBoundedMemory(t *testing.T) {
	before := liveHeap()
	g := newReplayGuard(DefaultTimestampSkew, DefaultReplayCapacity)
	if b := g.bound(); b > 4_325_376 {
		t.Errorf("bound %d bytes, over the 4.1 MiB the doc states", b)
	}
	start := time.Unix(1_700_000_000, 0)
	body := make([]byte, 2048)
	var now time.Time
	for i := range 200_000 {
		now = start.Add(time.Duration(i) * 500 * time.Microsecond)
		nonce := fmt.Appendf(nil, "%032d", i)
		copy(body, nonce)
		if !g.check(routeOA, now.Unix(), nonce, body, now) {
			t.Fatalf("request %d refused", i)
		}
	}
	if n := g.entries(now); n > DefaultReplayCapacity {
		t.Errorf("%d bindings held, over DefaultReplayCapacity (%d)", n, DefaultReplayCapacity)
	}
	growth := int64(liveHeap()) - int64(before)
	if growth > int64(g.bound())+256<<10 {
		t.Errorf("live heap grew by %d bytes for 200,000 requests, over the bound of %d", growth, g.bound())
	}
	runtime.KeepAlive(g)
}

func TestReplayGuardNoAllocs(t *testing.T) {
	g := newReplayGuard(time.Minute, 1024)
	now := time.Now()
	nonce, body := []byte("1320562132"), make([]byte, 300)
	i := 0
	n := testing.AllocsPerRun(500, func() {
		i++
		nonce[0] = byte('0' + i%10)
		nonce[1] = byte('0' + i/10%10)
		g.check(routeOA, now.Unix(), nonce, body, now)
	})
	if n != 0 {
		t.Fatalf("check allocates %v times, want 0", n)
	}
}

func BenchmarkReplayGuard(b *testing.B) {
	g := newReplayGuard(DefaultTimestampSkew, DefaultReplayCapacity)
	now := time.Unix(1_700_000_000, 0)
	body := make([]byte, 300)
	nonce := make([]byte, 10)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		strconv.AppendInt(nonce[:0], int64(1_000_000_000+i), 10)
		g.check(routeOA, now.Unix(), nonce, body, now)
		i++
	}
}
