package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"wxlookup/internal/mariadbtest"
)

// TestMain runs the tests of package cache and of cache_test (one binary), stops the
// shared MariaDB server that the loader's end-to-end tests start, and then checks that no
// goroutine survives: every Cache and source was closed by its test.
func TestMain(m *testing.M) {
	code := m.Run()
	mariadbtest.StopShared()
	if code == 0 {
		// glog (a dependency of vitess, which store imports) starts its flush daemon
		// when the program loads; it is not a goroutine any test started.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// newTestCache returns a Cache over src, closed when the test ends. Unless cfg says
// otherwise the loader's tickers are an hour apart: tests drive steps with runStep.
func newTestCache(tb testing.TB, src Source, cfg Config) *Cache {
	tb.Helper()
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = time.Hour
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := New(src, cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return c
}

// runStep runs a refresh (and, with reconcile, a whole reconcile pass) now on the loader
// goroutine and returns its error.
func (c *Cache) runStep(reconcile bool) error {
	if reconcile {
		return c.Reconcile(context.Background())
	}
	return c.Refresh(context.Background())
}

// startReady starts c and waits for its first warm.
func startReady(tb testing.TB, c *Cache) {
	tb.Helper()
	c.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		tb.Fatalf("WaitReady: %v", err)
	}
}

// lookup is Lookup of the normalised form of key, with the line as a string.
func lookup(c *Cache, key string) (line, canon string, found bool, err error) {
	l, canon, found, err := c.Lookup(context.Background(), []byte(Key(key)))
	return string(l), canon, found, err
}

// mustFind fails unless key is found with the line want.
func mustFind(tb testing.TB, c *Cache, key, want string) {
	tb.Helper()
	line, _, found, err := lookup(c, key)
	if err != nil || !found || line != want {
		tb.Fatalf("Lookup(%q) = %q, found %v, err %v; want %q", key, line, found, err, want)
	}
}

// mustMiss fails unless key is a (non-error) not-found.
func mustMiss(tb testing.TB, c *Cache, key string) {
	tb.Helper()
	line, _, found, err := lookup(c, key)
	if err != nil || found {
		tb.Fatalf("Lookup(%q) = %q, found %v, err %v; want not found", key, line, found, err)
	}
}

func TestNewValidates(t *testing.T) {
	src := newFakeSource(0)
	tests := []struct {
		name    string
		cfg     Config
		setting string // named in the error; "" means valid
	}{
		{"zero is defaults", Config{}, ""},
		{"max bytes", Config{MaxBytes: 100}, "WXLOOKUP_CACHE_MAX_BYTES"},
		{"refresh", Config{RefreshInterval: -time.Second}, "WXLOOKUP_REFRESH_INTERVAL"},
		{"reconcile", Config{ReconcileInterval: -1}, "WXLOOKUP_RECONCILE_INTERVAL"},
		{"read-through timeout", Config{ReadThroughTimeout: -1}, "ReadThroughTimeout"},
		{"read-through limit", Config{ReadThroughLimit: -1}, "ReadThroughLimit"},
		{"negative ttl", Config{NegativeTTL: -1}, "NegativeTTL"},
		{"max backoff", Config{MaxBackoff: -1}, "MaxBackoff"},
		{"mode", Config{Mode: "kafka"}, "WXLOOKUP_CHANGE_FEED"},
		{"range rows", Config{RangeRows: -1}, "RangeRows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(src, tt.cfg)
			if tt.setting == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if c.cfg.MaxBytes != DefaultMaxBytes || c.cfg.RefreshInterval != DefaultRefreshInterval ||
					c.cfg.ReadThroughLimit != DefaultReadThroughLimit || c.cfg.NegativeTTL != DefaultNegativeTTL {
					t.Errorf("defaults not applied: %+v", c.cfg)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("New accepted %+v", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.setting) {
				t.Errorf("got %q, want it to name %s", err, tt.setting)
			}
		})
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil source) succeeded")
	}
	sources := []struct {
		name string
		src  Source
		mode string
	}{
		{"binlog needs a Follower", pollSource{src}, ModeBinlog},
		{"poll needs a Poller", struct{ Source }{src}, ModePoll},
	}
	for _, tt := range sources {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.src, Config{Mode: tt.mode})
			if err == nil {
				c.Close()
				t.Fatalf("New accepted a source that cannot serve mode %q", tt.mode)
			}
			if !strings.Contains(err.Error(), "WXLOOKUP_CHANGE_FEED") {
				t.Errorf("got %q, want it to name WXLOOKUP_CHANGE_FEED", err)
			}
		})
	}
}

func TestLookupBeforeWarm(t *testing.T) {
	src := newFakeSource(10)
	src.fail(errors.New("mysql: connection refused"), nil, nil, nil)
	c := newTestCache(t, src, Config{})
	if _, _, _, err := lookup(c, fakeKey(1)); !errors.Is(err, ErrNotReady) {
		t.Fatalf("before Start: got err %v, want ErrNotReady", err)
	}
	steps := make(chan error, 100)
	c.onStep = func(step string, err error) {
		if step == "warm" {
			steps <- err
		}
	}
	c.Start()
	if err := <-steps; err == nil { // the warm fails, is retried, and nothing is ready
		t.Fatal("warm succeeded against a failing source")
	}
	if c.Ready() {
		t.Fatal("Ready after a failed warm")
	}
	if _, _, _, err := lookup(c, fakeKey(1)); !errors.Is(err, ErrNotReady) {
		t.Fatalf("after failed warm: got err %v, want ErrNotReady", err)
	}
	src.fail(nil, nil, nil, nil)
	if err := c.runStep(false); err != nil { // the retry, without waiting for the back-off
		t.Fatalf("warm after the source came back: %v", err)
	}
	if !c.Ready() {
		t.Fatal("not Ready after a successful warm")
	}
	mustFind(t, c, fakeKey(1), fakeLine(1))
	if st := c.Status(); st.Errors == 0 || st.RecentErrors[0].Step != "warm" {
		t.Errorf("warm failure not recorded: %+v", st)
	}
}

func TestWarm100k(t *testing.T) {
	const n = 100_000
	src := newFakeSource(n)
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	st := c.Status()
	if !st.Ready || !st.Complete || st.Entries != n {
		t.Fatalf("after warm: ready %v complete %v entries %d; want true true %d", st.Ready, st.Complete, st.Entries, n)
	}
	if st.CostBytes <= n*entryOverhead || st.CostBytes > c.cfg.MaxBytes {
		t.Errorf("cost %d bytes for %d entries", st.CostBytes, n)
	}
	for i := range n {
		mustFind(t, c, fakeKey(i), fakeLine(i))
	}
	// Query spellings fold to the stored key, and the reply names the key as stored.
	if _, canon, found, _ := lookup(c, "ａ１２－３４５"); !found || canon != "A12-345" {
		t.Errorf("full-width query: canon %q found %v, want A12-345", canon, found)
	}
	mustMiss(t, c, "no-such-key")
	if got := src.gets.Load(); got != 0 {
		t.Errorf("complete cache asked the source %d times, want 0", got)
	}
	// A definitive not-found is served from memory: not a miss.
	if st := c.Status(); st.Hits != n+1 || st.NotFound != 1 || st.Misses != 0 {
		t.Errorf("got hits %d, not found %d, misses %d; want %d, 1, 0", st.Hits, st.NotFound, st.Misses, n+1)
	}
}

func TestLookupAllocs(t *testing.T) {
	src := newFakeSource(1000)
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	ctx := context.Background()
	hit, miss := []byte(Key(fakeKey(7))), []byte("nope-1")
	if n := testing.AllocsPerRun(1000, func() {
		if _, _, found, _ := c.Lookup(ctx, hit); !found {
			t.Fatal("miss")
		}
	}); n != 0 {
		t.Errorf("hit: %v allocs per Lookup, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, _, found, _ := c.Lookup(ctx, miss); found {
			t.Fatal("hit")
		}
	}); n != 0 {
		t.Errorf("complete-mode miss: %v allocs per Lookup, want 0", n)
	}
}

// TestCloseWaitsForReaders: Close does not close the ristretto cache while a Lookup is
// inside it.
func TestCloseWaitsForReaders(t *testing.T) {
	src := newFakeSource(10)
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	tbl := c.cur.Load()
	h := hashKey([]byte(Key(fakeKey(1))))
	if got := c.acquire(h); got != tbl {
		t.Fatal("acquire did not return the table")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Close()
	}()
	select {
	case <-done:
		t.Fatal("Close closed a table a reader was inside")
	case <-time.After(100 * time.Millisecond): // a negative check: it must keep waiting
	}
	if e := tbl.get(h, []byte(Key(fakeKey(1)))); e == nil || string(e.line()) != fakeLine(1) {
		t.Errorf("the acquired table lost its entry during Close: %+v", e)
	}
	tbl.release(h)
	<-done
	if _, _, _, err := lookup(c, fakeKey(1)); !errors.Is(err, ErrNotReady) {
		t.Errorf("Lookup after Close: got err %v, want ErrNotReady", err)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	src := newFakeSource(100)
	c := newTestCache(t, src, Config{RefreshInterval: time.Millisecond, ReconcileInterval: 3 * time.Millisecond})
	startReady(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, _, err := lookup(c, fakeKey(1)); !errors.Is(err, ErrNotReady) {
		t.Errorf("Lookup after Close: err %v, want ErrNotReady", err)
	}
	if err := c.Reload(context.Background()); err == nil {
		t.Error("Reload after Close succeeded")
	}
	// goleak in TestMain checks that the loader and ristretto goroutines are gone.
}

func BenchmarkLookupHit(b *testing.B) {
	c := newTestCache(b, newFakeSource(100_000), Config{})
	startReady(b, c)
	key := []byte(Key(fakeKey(54_321)))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, found, _ := c.Lookup(ctx, key); !found {
			b.Fatal("miss")
		}
	}
}

func BenchmarkLookupHitParallel(b *testing.B) {
	const n = 100_000
	c := newTestCache(b, newFakeSource(n), Config{})
	startReady(b, c)
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = []byte(Key(fakeKey(i * 97 % n)))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, _, found, _ := c.Lookup(ctx, keys[i%len(keys)]); !found {
				b.Error("miss")
				return
			}
			i++
		}
	})
}

// BenchmarkLookupHit1M looks up random keys of a million rows, as a shift's traffic
// spreads over the table: unlike BenchmarkLookupHit, the entries are rarely in the CPU's
// caches, so it measures the memory reads a lookup makes.
func BenchmarkLookupHit1M(b *testing.B) {
	const n = 1_000_000
	c := newTestCache(b, newFakeSource(n), Config{})
	startReady(b, c)
	rnd := rand.New(rand.NewPCG(3, 4))
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = []byte(Key(fakeKey(rnd.IntN(n))))
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, found, _ := c.Lookup(ctx, keys[i&(len(keys)-1)]); !found {
			b.Fatal("miss")
		}
		i++
	}
}

func BenchmarkLookupMiss(b *testing.B) {
	c := newTestCache(b, newFakeSource(100_000), Config{})
	startReady(b, c)
	key := []byte("zz-999999")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, found, err := c.Lookup(ctx, key); found || err != nil {
			b.Fatal("hit or error")
		}
	}
}

// testClock is a settable clock for Config.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Unix(1_700_000_000, 0)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
