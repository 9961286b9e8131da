package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// vmRSS reads the resident set size of the service's process from /proc, in bytes.
func vmRSS(tb testing.TB, s *service) int64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	tb.Fatalf("no VmRSS in /proc/%d/status", s.cmd.Process.Pid)
	return 0
}

// flood sends n messages from workers goroutines, message i from the sender from(i),
// until all are sent or maxTime passes, and returns how many were sent and the errors by
// message. Each message has its own MsgId and nonce.
func flood(c *wxClient, n, workers int, maxTime time.Duration, from func(i int) string) (int64, map[string]int) {
	ctx, cancel := context.WithTimeout(context.Background(), maxTime)
	defer cancel()
	var next, sent atomic.Int64
	var mu sync.Mutex
	errs := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				_, err := c.ask(ctx, from(int(i)), "?18-546")
				sent.Add(1)
				if err != nil {
					msg := err.Error()
					var se *statusError
					if errors.As(err, &se) {
						msg = fmt.Sprintf("status %d", se.code)
					}
					mu.Lock()
					errs[msg]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return sent.Load(), errs
}

// TestHostileSenderRSS is issue 12's hostile sender: 2,000 signed requests with a 60 KB
// FromUserName and distinct MsgIds. Each is refused with 400 and counted as
// rejected_total{reason="field_too_long"} before anything of it is kept, and the process's
// resident memory grows by less than 16 MiB (before the fix, the dedupe ring kept every
// FromUserName: ~100 MiB for these 2,000).
func TestHostileSenderRSS(t *testing.T) {
	t.Parallel()
	svc := startService(t, "wxlookup", nil) // demo mode, token "demo"
	svc.waitReady(time.Minute)
	c := newClient(svc.Webhook, "demo", "", "")
	long := strings.Repeat("o", 60<<10)
	// Warm up: pools, buffers and connections the requests below reuse.
	if _, errs := flood(c, 200, 4, time.Minute, func(i int) string { return fmt.Sprintf("oWarm%04d", i) }); len(errs) != 0 {
		t.Fatalf("warm-up with normal senders: %v", errs)
	}
	flood(c, 100, 4, time.Minute, func(int) string { return long })
	before := vmRSS(t, svc)
	rejected := svc.metric(`wxlookup_rejected_total{reason="field_too_long"}`)

	const n = 2000
	sent, errs := flood(c, n, 4, 2*time.Minute, func(int) string { return long })
	after := vmRSS(t, svc)
	if sent != n || errs["status 400"] != n {
		t.Errorf("sent %d, outcomes %v; want all %d refused with 400", sent, errs, n)
	}
	if got := svc.metric(`wxlookup_rejected_total{reason="field_too_long"}`) - rejected; got != n {
		t.Errorf("rejected_total{reason=\"field_too_long\"} rose by %v, want %d", got, n)
	}
	growth, limit := after-before, int64(16<<20) // with or without the race detector
	t.Logf("FIGURES %s: sent=%d VmRSS %d → %d KiB (+%d KiB)", t.Name(), sent, before>>10, after>>10, growth>>10)
	if growth >= limit {
		t.Errorf("VmRSS grew by %d KiB for %d hostile requests, want under %d KiB", growth>>10, n, limit>>10)
	}
	// The service answers a normal message afterwards.
	if got, err := c.ask(context.Background(), "oAfter", "?18-546"); err != nil || got != found("18-546", "车体新厂房3号") {
		t.Errorf("after the flood: got %q %v", got, err)
	}
}

// TestManySendersRSS: 100,000 distinct senders within the caps (128-byte OpenIDs, a
// message each, a fresh nonce each) fill the dedupe ring, the rate limiter and the replay
// guard, within a time bound. Their memory is fixed — 19 MiB, 1 MiB and 4.1 MiB, allocated
// at start-up and touched as they fill — so the process's resident memory grows by less
// than those bounds and 8 MiB, and by less than 4 MiB in the second half, once they are
// full. (Before the fix: +36 MiB, of which 10 MiB in the second half.) The race detector's
// shadow memory grows with every heap address the service ever touches, so with it the
// bound is four times as large and the second half is not held to the 4 MiB.
func TestManySendersRSS(t *testing.T) {
	t.Parallel()
	svc := startService(t, "wxlookup", nil)
	svc.waitReady(time.Minute)
	c := newClient(svc.Webhook, "demo", "", "")
	sender := func(i int) string { return fmt.Sprintf("o%0127d", i) }
	if _, errs := flood(c, 200, 4, time.Minute, func(i int) string { return sender(1_000_000 + i) }); len(errs) != 0 {
		t.Fatalf("warm-up: %v", errs)
	}
	before := vmRSS(t, svc)
	const answered = `wxlookup_requests_total{kind="text",outcome="found",route="oa"}`
	answeredBefore := svc.metric(answered)

	const n = 100_000
	maxTime := 2 * time.Minute
	if raceEnabled {
		maxTime = 4 * time.Minute
	}
	start := time.Now()
	half, errs1 := flood(c, n/2, 8, maxTime/2, sender)
	mid := vmRSS(t, svc)
	rest, errs2 := flood(c, n/2, 8, maxTime/2, func(i int) string { return sender(n/2 + i) })
	after := vmRSS(t, svc)
	sent := half + rest
	for _, errs := range []map[string]int{errs1, errs2} {
		if len(errs) != 0 {
			t.Errorf("errors: %v", errs)
		}
	}
	t.Logf("FIGURES %s: sent=%d in %s, VmRSS %d → %d → %d KiB", t.Name(), sent, time.Since(start).Round(time.Second),
		before>>10, mid>>10, after>>10)
	if got := svc.metric(answered) - answeredBefore; got != float64(sent) {
		t.Errorf("%s rose by %v, want %d: every sender answered", answered, got, sent)
	}
	// The structures' bounds (server: dedupe 19 MiB, limiter 1.06 MiB, replay guard
	// 4.1 MiB) and 8 MiB for the heap's own slack.
	limit := int64(19<<20 + 1_114_112 + 4_325_376 + 8<<20)
	if raceEnabled {
		limit *= 4
	}
	if growth := after - before; growth >= limit {
		t.Errorf("VmRSS grew by %d KiB for %d senders, want under %d KiB", growth>>10, sent, limit>>10)
	}
	// 50,000 replies of ~400 bytes are more than the 16 MiB ring holds, so by the second
	// half every structure is full and stays so.
	if growth := after - mid; !raceEnabled && half == n/2 && growth >= 4<<20 {
		t.Errorf("VmRSS grew by %d KiB in the second half, when the structures were full", growth>>10)
	}
	if sent < n/10 {
		t.Errorf("only %d of %d messages sent in %s", sent, n, maxTime)
	}
}
