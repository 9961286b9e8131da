package cache

import (
	"context"
	"errors"
	"fmt"
)

// readThrough answers a miss of an incomplete cache from Source.Get.
//
//   - Concurrent misses of one key share one query (singleflight).
//   - At most ReadThroughLimit queries run at once; a query that finds no free slot fails at
//     once with ErrBusy instead of queueing behind a slow database.
//   - The query runs under a ReadThroughTimeout deadline (and is cancelled by Close). The
//     caller also stops waiting at that deadline, or when its own ctx is done, even if the
//     source ignores its context.
//   - A row found is offered to the cache (ristretto's admission decides whether it stays),
//     unless the loader wrote meanwhile (table.fill). Range reconcile cannot see a fill, so
//     with a RangeSource a fill expires after ReconcileInterval; a change of its row
//     replaces it, and the next snapshot sweeps it. A "not found" is remembered for
//     NegativeTTL beside it (table.fillNegative).
func (c *Cache) readThrough(ctx context.Context, key []byte) (line []byte, canonicalKey string, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ReadThroughTimeout)
	defer cancel()
	k := string(key)
	ch := c.flight.DoChan(k, func() (any, error) { return c.query(k) })
	if c.joined != nil {
		c.joined()
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, "", false, r.Err
		}
		if e, _ := r.Val.(*entry); e != nil {
			return e.line(), e.canon(), true, nil
		}
		return nil, "", false, nil
	case <-ctx.Done():
		c.metrics.readThrough.timeout.Inc()
		return nil, "", false, fmt.Errorf("cache: read through %q: %w", k, context.Cause(ctx))
	}
}

// query runs one read-through Source.Get for the normalised key and caches its answer. It
// returns the row's entry, or nil for "not found". It runs on singleflight's goroutine,
// where a panic (in the source, or in Config.Render) would end the process: it is
// recovered, logged, counted, and returned as an error.
func (c *Cache) query(key string) (e *entry, err error) {
	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
	default:
		c.metrics.readThrough.busy.Inc()
		return nil, ErrBusy
	}
	defer func() {
		if r := recover(); r != nil {
			c.recovered("read_through", r)
			c.metrics.readThrough.failed.Inc()
			e, err = nil, fmt.Errorf("cache: read through %q: panic: %v", key, r)
		}
	}()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ReadThroughTimeout)
	defer cancel()

	// Read the epoch before asking the source: if the loader writes anything to the table
	// while the query runs, the answer may be older than that write, so it is not cached
	// (the next miss asks again). See table.fill.
	var (
		asked *table // nil once closed; not used after release
		since uint64
	)
	if t := c.acquire(0); t != nil {
		asked, since = t, t.epoch.Load()
		t.release(0)
	}
	r, err := c.src.Get(ctx, key)
	switch {
	case errors.Is(err, ErrNotFound):
		c.metrics.readThrough.notFound.Inc()
		now := c.cfg.Now()
		if t := c.acquire(0); t != nil {
			if t == asked {
				t.fillNegative(key, since, now.UnixNano(), now.Add(c.cfg.NegativeTTL).UnixNano())
			}
			t.release(0)
		}
		return nil, nil
	case err != nil:
		// Counted in wxlookup_cache_read_through_total{outcome="error"}, not among the
		// loader's errors: during an outage every miss fails, and the loader's own failing
		// refreshes already say so in Status without being crowded out.
		c.metrics.readThrough.failed.Inc()
		return nil, fmt.Errorf("cache: read through %q: %w", key, err)
	}
	c.metrics.readThrough.found.Inc()
	var p prepared
	p.prepare(r, c.cfg.Render)
	p.key = []byte(key) // the source found it by this key; cache it under the same
	e = newFillEntry(&p)
	c.fill(e, asked, since)
	return e, nil
}

// fill caches a read-through answer, unless the cache was closed or the loader wrote to
// the table since the query began (table.fill).
func (c *Cache) fill(e *entry, asked *table, since uint64) {
	h := hashKeyString(e.key())
	t := c.acquire(h)
	if t == nil {
		return
	}
	defer t.release(h)
	if t == asked && !t.complete.Load() {
		t.fill(e, since)
	}
}
