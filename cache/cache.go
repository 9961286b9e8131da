// Package cache holds the lookup table in memory and keeps it in step with a Source.
//
// A Cache answers Lookup from one ristretto cache without I/O. A background loader (Start)
// streams Source.Snapshot into it, then applies the changes: in poll mode it asks a Poller
// every RefreshInterval and reconciles key ranges of a RangeSource by checksum to find
// deleted rows; in binlog mode it follows a Follower's stream of committed changes. A
// reload streams a new snapshot into the same table and sweeps what it did not deliver.
// A table that fits Config.MaxBytes is held completely (verified), so a miss is a
// definitive "not found"; a larger one is cached partially and misses read through
// Source.Get.
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

	// How changes arrive (Config.Mode): one of poller and follower is set. Of the polled
	// source's reconcile interfaces, ranges wins over keys.
	poller   Poller
	follower Follower
	ranges   RangeSource
	keys     KeyLister

	// cur is the table Lookup reads, from New until Close (nil after).
	cur       atomic.Pointer[table]
	warmed    atomic.Bool   // the first load has completed: Lookup answers
	ready     chan struct{} // closed when warmed turns true
	readyOnce sync.Once

	hits, misses, notFound atomic.Uint64
	stats                  counters

	// The loader goroutine (loader.go). Source work and the table's loader writes happen
	// only on it; Reload and the test kicks ask it.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	started   atomic.Bool
	closeOnce sync.Once
	kicks     chan kick
	// followMu guards the interruption of a blocked Follow by a kick (follow.go).
	followMu     sync.Mutex
	followCancel context.CancelFunc
	loop         loopState // owned by the loader goroutine
	scratch      prepared  // the loader goroutine's row buffer

	// Read-through (incomplete tables only).
	flight singleflight.Group
	sem    chan struct{} // one slot per running read-through query

	status  statusState
	metrics *metrics

	// Test hooks, set before Start (they are read without synchronisation).
	onStep func(step string, err error) // after each loader step
	joined func()                       // after a read-through joined its flight
}

// New returns a Cache reading src, or an error naming the first invalid setting in cfg, a
// source that cannot serve cfg.Mode, or a metric that cannot be registered. It starts
// nothing: call Start.
func New(src Source, cfg Config) (*Cache, error) {
	if src == nil {
		return nil, errors.New("cache: nil Source")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cache{
		src:    src,
		cfg:    cfg,
		log:    cfg.Logger,
		source: fmt.Sprintf("%T", src),
		ready:  make(chan struct{}),
		sem:    make(chan struct{}, cfg.ReadThroughLimit),
		kicks:  make(chan kick, kickQueue),
		loop:   loopState{needLoad: true, fails: make(map[string]*failState)},
	}
	if s, ok := src.(fmt.Stringer); ok {
		c.source = fmt.Sprint(s)
	}
	if cfg.Mode == ModeBinlog {
		if c.follower, _ = src.(Follower); c.follower == nil {
			return nil, fmt.Errorf("cache: Mode %q (WXLOOKUP_CHANGE_FEED) needs a source that follows a change feed; %s does not", cfg.Mode, c.source)
		}
	} else {
		if c.poller, _ = src.(Poller); c.poller == nil {
			return nil, fmt.Errorf("cache: Mode %q (WXLOOKUP_CHANGE_FEED) needs a source that can be polled for changes; %s cannot", cfg.Mode, c.source)
		}
		if c.ranges, _ = src.(RangeSource); c.ranges == nil {
			c.keys, _ = src.(KeyLister)
		}
	}
	t, err := newTable(cfg.MaxBytes, &c.stats)
	if err != nil {
		return nil, err
	}
	if c.ranges != nil {
		// A fill belongs to no key range, so reconcile cannot find it deleted: it expires.
		t.fillTTL = cfg.ReconcileInterval
	}
	t.now = cfg.Now
	t.overBudget = func(t *table) { c.logOverBudget(t.entries.Load(), t.bytes.Load()+t.sugg.bytes()) }
	c.cur.Store(t)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.metrics, err = newMetrics(c, cfg.Registerer); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Ready reports whether the first warm has completed; once true it stays true.
func (c *Cache) Ready() bool { return c.warmed.Load() }

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
// including during a reload: a key held before it and not deleted by it is found throughout.
func (c *Cache) Lookup(ctx context.Context, key []byte) (line []byte, canonicalKey string, found bool, err error) {
	if !c.warmed.Load() {
		return nil, "", false, ErrNotReady
	}
	h := hashKey(key)
	t := c.acquire(h)
	if t == nil {
		return nil, "", false, ErrNotReady
	}
	line, canonicalKey, found = t.answer(h, key)
	complete := t.complete.Load()
	absent := !found && !complete && t.absent(key, c.cfg.Now().UnixNano())
	t.release(h)
	switch {
	case found:
		c.hits.Add(1)
		return line, canonicalKey, true, nil
	case complete || absent:
		c.notFound.Add(1) // served from memory: not a miss
		return nil, "", false, nil
	}
	c.misses.Add(1)
	return c.readThrough(ctx, key)
}

// acquire returns the table with the caller registered as its reader on shard h (nil
// after Close); the caller must call release(h) when done with it, and must not do I/O in
// between. A closed table is never used (readers.Count says why).
func (c *Cache) acquire(h uint64) *table {
	for {
		t := c.cur.Load()
		if t == nil {
			return nil
		}
		t.readers.Enter(h)
		if c.cur.Load() == t {
			return t
		}
		t.release(h) // closed meanwhile: retire may be waiting for us
	}
}

// release ends a Lookup's use of t begun by Cache.acquire.
func (t *table) release(h uint64) { t.readers.Leave(h) }

// retire closes t once every Lookup that acquired it has released it (Close). The caller
// must have made the Cache's table nil first. Then no reader is, or will be, inside t, and
// closing ristretto (which empties it and closes channels a Get may send on) cannot make a
// Lookup panic.
func (t *table) retire() {
	t.readers.Retire()
	t.rc.Close()
}

// markReady makes Lookup answer, once the first load has completed.
func (c *Cache) markReady() {
	c.readyOnce.Do(func() {
		c.warmed.Store(true)
		close(c.ready)
	})
}

// Close stops the loader (interrupting a source call in progress, a change feed included),
// waits for it and for running read-through queries, and closes the ristretto cache.
// Lookup returns ErrNotReady afterwards. Close is safe to call more than once and returns
// the first error encountered while stopping (nil in practice).
func (c *Cache) Close() error {
	c.cancel()
	c.wg.Wait()
	c.closeOnce.Do(func() {
		// Every read-through query holds a slot of sem; taking them all waits for those
		// still running (they were cancelled above) and makes later ones fail fast.
		for range cap(c.sem) {
			c.sem <- struct{}{}
		}
		if t := c.cur.Swap(nil); t != nil {
			t.retire()
		}
		if c.metrics != nil {
			c.metrics.unregister()
		}
	})
	return nil
}

// timeNever is a duration for timers that should not fire.
const timeNever = time.Duration(1<<63 - 1)
