package cache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// newIncompleteCache returns a started cache whose 300-row table exceeds its budget. Rows
// 0-9 are then deleted and reconciled away, which leaves room in the cache, so that
// ristretto admits what the tests read through.
func newIncompleteCache(tb testing.TB, cfg Config) (*Cache, *fakeSource) {
	tb.Helper()
	src := newFakeSource(300)
	cfg.MaxBytes = 16 << 10
	c := newTestCache(tb, src, cfg)
	startReady(tb, c)
	if c.Status().Complete {
		tb.Fatal("the table fits the budget")
	}
	for i := range 10 {
		src.del(fakeKey(i))
	}
	if err := c.runStep(true); err != nil {
		tb.Fatal(err)
	}
	return c, src
}

func TestReadThroughAnswers(t *testing.T) {
	c, src := newIncompleteCache(t, Config{})
	for i := 10; i < 300; i++ {
		mustFind(t, c, fakeKey(i), fakeLine(i))
	}
	for i := range 10 {
		mustMiss(t, c, fakeKey(i))
	}
	if src.gets.Load() == 0 {
		t.Fatal("no read-through although the table does not fit")
	}
	mustMiss(t, c, "no-such-key")

	// A failing source is an error, not a "not found".
	src.fail(nil, nil, nil, errors.New("mysql gone"))
	if _, _, found, err := lookup(c, "other-key"); err == nil || found {
		t.Fatalf("failing read-through: found %v err %v, want an error", found, err)
	}
	// Rows held in memory still answer.
	st := c.Status()
	if st.Entries == 0 {
		t.Fatal("nothing held")
	}
}

// TestNegativeTTL: a "not found" is answered from memory for NegativeTTL, then asked again.
func TestNegativeTTL(t *testing.T) {
	clock := newTestClock()
	c, src := newIncompleteCache(t, Config{Now: clock.Now, NegativeTTL: 10 * time.Second})
	mustMiss(t, c, "ghost-1")
	gets := src.gets.Load()
	clock.Advance(9 * time.Second)
	mustMiss(t, c, "ghost-1")
	if got := src.gets.Load() - gets; got != 0 {
		t.Fatalf("%d source reads within the negative TTL, want 0", got)
	}
	// A row inserted meanwhile appears once the negative entry expires.
	src.set("GHOST-1", "found")
	clock.Advance(2 * time.Second)
	mustFind(t, c, "ghost-1", "[GHOST-1] found")
	if got := src.gets.Load() - gets; got != 1 {
		t.Fatalf("%d source reads after the TTL, want 1", got)
	}
}

// TestReadThroughSingleflight: concurrent misses of one key make one source read.
func TestReadThroughSingleflight(t *testing.T) {
	c, src := newIncompleteCache(t, Config{ReadThroughTimeout: time.Minute})
	const n = 20
	release := make(chan struct{})
	src.hooks(func(ctx context.Context, key string) error {
		if key == "wait-1" {
			<-release
		}
		return nil
	}, nil)
	src.set("WAIT-1", "v")
	joined := make(chan struct{}, n)
	c.joined = func() { joined <- struct{}{} }
	gets := src.gets.Load()

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, canon, found, err := lookup(c, "wait-1")
			if err != nil || !found || line != "[WAIT-1] v" || canon != "WAIT-1" {
				errs <- errors.New("bad answer: " + line)
			}
		}()
	}
	for range n {
		<-joined // every caller has joined the flight (or led it)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := src.gets.Load() - gets; got != 1 {
		t.Errorf("%d concurrent misses made %d source reads, want 1", n, got)
	}
}

// TestReadThroughLimit: with every slot taken by a slow query, the next miss fails at once.
func TestReadThroughLimit(t *testing.T) {
	c, src := newIncompleteCache(t, Config{ReadThroughLimit: 2, ReadThroughTimeout: time.Minute})
	release := make(chan struct{})
	entered := make(chan string, 2)
	src.hooks(func(ctx context.Context, key string) error {
		if key == "slow-1" || key == "slow-2" {
			entered <- key
			<-release
		}
		return nil
	}, nil)
	var wg sync.WaitGroup
	for _, k := range []string{"slow-1", "slow-2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lookup(c, k)
		}()
	}
	<-entered
	<-entered
	start := time.Now()
	_, _, _, err := lookup(c, "third-key")
	if !errors.Is(err, ErrBusy) {
		t.Errorf("third concurrent read-through: err %v, want ErrBusy", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("ErrBusy took %v, want it at once", took)
	}
	close(release)
	wg.Wait()
	mustMiss(t, c, "third-key") // a slot is free again
}

// TestReadThroughTimeout: a source read that hangs (even ignoring its context) is answered
// with a deadline error after ReadThroughTimeout.
func TestReadThroughTimeout(t *testing.T) {
	c, src := newIncompleteCache(t, Config{}) // the default 300 ms
	release := make(chan struct{})
	defer close(release)
	src.hooks(func(ctx context.Context, key string) error {
		if key == "hang-1" {
			<-release // ignores ctx: the caller must stop waiting on its own
		}
		return nil
	}, nil)
	start := time.Now()
	_, _, found, err := lookup(c, "hang-1")
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || found {
		t.Fatalf("hanging read-through: found %v err %v, want DeadlineExceeded", found, err)
	}
	if took < DefaultReadThroughTimeout || took > DefaultReadThroughTimeout+700*time.Millisecond {
		t.Errorf("deadline error after %v, want ≈%v", took, DefaultReadThroughTimeout)
	}
}

// TestReadThroughHonoursCallerContext: a caller that gives up stops waiting.
func TestReadThroughHonoursCallerContext(t *testing.T) {
	c, src := newIncompleteCache(t, Config{ReadThroughTimeout: time.Minute})
	src.hooks(func(ctx context.Context, key string) error {
		<-ctx.Done() // a well-behaved source: returns when cancelled (here by Close)
		return ctx.Err()
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := c.Lookup(ctx, []byte("gone-1")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: err %v, want context.Canceled", err)
	}
}
