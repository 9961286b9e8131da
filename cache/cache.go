// Package cache holds the lookup table in memory and keeps it in step with a Source.
//
// A Cache answers Lookup from a ristretto cache without I/O; a background loader (Start)
// warms it from Source.Snapshot, refreshes it from Source.Changes every RefreshInterval,
// and removes deleted rows with a Source.Keys scan every ReconcileInterval. A table that
// fits Config.MaxBytes is held completely (verified), so a miss is a definitive "not
// found"; a larger one is cached partially and misses read through Source.Get.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// ErrNotReady is returned by Lookup until the first warm has completed, and after Close.
var ErrNotReady = errors.New("cache: not ready")

// ErrBusy is returned by Lookup when a miss must read through the source (the table does not
// fit the budget) and ReadThroughLimit queries are already running; it fails at once rather
// than queue behind a slow database.
var ErrBusy = errors.New("cache: read-through limit reached")

// Cache is the in-memory lookup table and the loader that keeps it in step with a Source.
// Its methods are safe for concurrent use. Create it with New, start the loader with Start,
// and stop it with Close.
type Cache struct {
	src    Source
	cfg    Config
	log    *slog.Logger
	source string // Status.Source

	// cur is the table Lookup reads; nil until the first warm completes and after Close.
	cur       atomic.Pointer[table]
	ready     chan struct{} // closed when the first warm completes
	readyOnce sync.Once

	// Counters that survive table swaps.
	hits, misses atomic.Uint64
	stats        counters

	// The loader. srcMu is held around source work by the loader and Reload, so a reload
	// never interleaves with a refresh; Lookup never takes it.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	srcMu     sync.Mutex
	watermark time.Time // guarded by srcMu
	closed    bool      // guarded by srcMu

	// Read-through (incomplete tables only).
	flight singleflight.Group
	sem    chan struct{} // one slot per running read-through query

	status  statusState
	metrics *metrics

	// Test hooks, set before Start.
	kicks  chan kick                    // run a loader step now
	onStep func(step string, err error) // after each loader step
	joined func()                       // after a read-through joined its flight
}

// New returns a Cache reading src, or an error naming the first invalid setting in cfg (or
// a metric that cannot be registered). It starts nothing: call Start.
func New(src Source, cfg Config) (*Cache, error) {
	if src == nil {
		return nil, errors.New("cache: nil Source")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		src:    src,
		cfg:    cfg,
		log:    cfg.Logger,
		source: fmt.Sprintf("%T", src),
		ready:  make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, cfg.ReadThroughLimit),
		kicks:  make(chan kick),
	}
	if s, ok := src.(fmt.Stringer); ok {
		c.source = fmt.Sprint(s)
	}
	if c.metrics, err = newMetrics(c, cfg.Registerer); err != nil {
		cancel()
		return nil, err
	}
	return c, nil
}

// Ready reports whether the first warm (or Reload) has completed; once true it stays true.
func (c *Cache) Ready() bool {
	select {
	case <-c.ready:
		return true
	default:
		return false
	}
}

// WaitReady blocks until the first warm has completed (nil) or ctx is done (its error).
func (c *Cache) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Lookup is the hot path: it answers a normalised key (AppendKey) from memory.
//
// For a hit, line is the row's rendered reply line (shared and immutable: callers must not
// modify it), canonicalKey the key as stored, and found true. A miss in a complete cache is
// a definitive "not found" answered without I/O. A miss in an incomplete cache (the table
// exceeds MaxBytes) reads through the source within ReadThroughTimeout and may return its
// error, ErrBusy, or a context error. Before the first warm, and after Close, err is
// ErrNotReady. A hit and a complete-mode miss allocate nothing. Safe for concurrent use,
// including during Reload: a key held before a swap is found throughout it.
func (c *Cache) Lookup(ctx context.Context, key []byte) (line []byte, canonicalKey string, found bool, err error) {
	h := hashKey(key)
	t := c.acquire(h)
	if t == nil {
		return nil, "", false, ErrNotReady
	}
	e := t.get(h, key)
	complete := t.complete.Load()
	absent := e == nil && !complete && t.absent(key, c.cfg.Now().UnixNano())
	t.release(h)
	if e != nil {
		c.hits.Add(1)
		return e.line, e.canon, true, nil
	}
	c.misses.Add(1)
	if complete || absent {
		return nil, "", false, nil
	}
	return c.readThrough(ctx, key)
}

// acquire returns the current table with the caller registered as its reader (nil if there
// is none); the caller must call release(h) when done with it, and must not do I/O in
// between. See table.retire for why a retired table is never used.
func (c *Cache) acquire(h uint64) *table {
	for {
		t := c.cur.Load()
		if t == nil {
			return nil
		}
		t.readers[h%readerShards].n.Add(1)
		if c.cur.Load() == t {
			return t
		}
		t.release(h) // swapped meanwhile: retire may be waiting for us; use the new one
	}
}

// swap makes t the table Lookup reads and retires the previous one. The caller holds
// srcMu.
func (c *Cache) swap(t *table) {
	old := c.cur.Swap(t)
	if old != nil {
		old.retire()
	}
}

// Close stops the loader, waits for it and for running read-through queries, and closes the
// ristretto caches. Lookup returns ErrNotReady afterwards. Close is safe to call more than
// once and returns the first error encountered while stopping (nil in practice).
func (c *Cache) Close() error {
	c.cancel() // stops the loop and aborts source calls, including a Reload in progress
	c.wg.Wait()

	c.srcMu.Lock() // a Reload still in progress finishes (aborted) before we close tables
	defer c.srcMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	// Every read-through query holds a slot of sem; taking them all waits for those still
	// running (they were cancelled above) and makes later ones fail fast.
	for range cap(c.sem) {
		c.sem <- struct{}{}
	}
	if old := c.cur.Swap(nil); old != nil {
		old.retire()
	}
	c.metrics.unregister()
	return nil
}
