package chaos

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadConfig bounds a load loop in rate, count and time.
type loadConfig struct {
	Rate     int           // requests per second over all workers
	Workers  int           // concurrent senders
	MaxSent  int64         // stop after this many requests
	MaxTime  time.Duration // stop after this long
	Deadline time.Duration // per-request limit (WeChat waits 5 s)
}

// load is a running load loop: Workers senders, each paced at Rate/Workers per second,
// until Stop, MaxSent or MaxTime. Safe for concurrent use.
type load struct {
	cfg    loadConfig
	sent   atomic.Int64
	failed atomic.Int64
	start  time.Time

	mu   sync.Mutex
	lat  []time.Duration
	errs map[string]int

	cancel context.CancelFunc
	done   chan struct{}
}

// figures are a load loop's results.
type figures struct {
	Sent, Failed   int64
	P50, P99, Max  time.Duration
	Took           time.Duration
	Errors         map[string]int // distinct error messages and how often each came
	RatePerSecond  float64
	ConfiguredRate int
}

func (f figures) String() string {
	return fmt.Sprintf("sent=%d failed=%d p50=%s p99=%s max=%s (%.0f req/s for %s)", f.Sent, f.Failed,
		round(f.P50), round(f.P99), round(f.Max), f.RatePerSecond, f.Took.Round(100*time.Millisecond))
}

func round(d time.Duration) time.Duration {
	switch {
	case d > 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// startLoad runs fn from cfg.Workers goroutines until Stop or a bound is reached. fn gets
// the worker number and that worker's sequence number; an error counts as a failed reply.
func startLoad(cfg loadConfig, fn func(ctx context.Context, worker, seq int) error) *load {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.MaxTime)
	l := &load{cfg: cfg, start: time.Now(), errs: make(map[string]int), cancel: cancel, done: make(chan struct{})}
	interval := time.Duration(int64(time.Second) * int64(cfg.Workers) / int64(cfg.Rate))
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for seq := 0; ; seq++ {
				if l.sent.Add(1) > cfg.MaxSent {
					l.sent.Add(-1)
					return
				}
				rctx, rcancel := context.WithTimeout(context.Background(), cfg.Deadline)
				t0 := time.Now()
				err := fn(rctx, w, seq)
				d := time.Since(t0)
				rcancel()
				l.mu.Lock()
				l.lat = append(l.lat, d)
				if err != nil {
					l.failed.Add(1)
					l.errs[err.Error()]++
				}
				l.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(l.done)
	}()
	return l
}

// Sent is the number of requests sent so far.
func (l *load) Sent() int64 { return l.sent.Load() }

// waitSent waits until n more requests than now have been sent, and reports whether they
// were within timeout (false also when the loop ended first).
func (l *load) waitSent(n int64, timeout time.Duration) bool {
	target := l.Sent() + n
	return waitUntil(context.Background(), timeout, func() bool {
		select {
		case <-l.done:
			return true
		default:
		}
		return l.Sent() >= target
	}) && l.Sent() >= target
}

// Stop ends the loop, waits for requests in flight, and returns the figures.
func (l *load) Stop() figures {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	f := figures{Sent: l.sent.Load(), Failed: l.failed.Load(), Took: time.Since(l.start), Errors: l.errs,
		ConfiguredRate: l.cfg.Rate}
	f.RatePerSecond = float64(f.Sent) / f.Took.Seconds()
	lat := slices.Clone(l.lat)
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		f.P50, f.P99, f.Max = lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
	}
	return f
}

// report logs the figures in the format docs/OPERATIONS.md quotes, and fails the test
// when any reply failed, listing the errors.
func report(tb testing.TB, name string, f figures, extra string) {
	tb.Helper()
	line := fmt.Sprintf("FIGURES %s: %s", name, f)
	if extra != "" {
		line += " " + extra
	}
	if raceEnabled {
		line += " [race detector on]"
	}
	tb.Log(line)
	if f.Failed > 0 {
		tb.Errorf("%s: %d of %d replies failed: %v", name, f.Failed, f.Sent, f.Errors)
	}
	if f.Sent == 0 {
		tb.Errorf("%s: no request was sent", name)
	}
}
