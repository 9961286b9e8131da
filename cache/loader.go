package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
	"unsafe"
)

// kick asks the loader loop to run a step now and report its error (tests drive time this
// way instead of sleeping).
type kick struct {
	reconcile bool
	done      chan error
}

// Start launches the loader goroutine: it warms the cache from Source.Snapshot (Ready turns
// true after), then refreshes it every RefreshInterval and reconciles it every
// ReconcileInterval until Close. Start returns at once; calls after the first do nothing.
//
// A failed step (warm included) is logged and counted, never fatal, and retried after a
// capped exponential back-off with jitter. The cap is the smaller of MaxBackoff and
// RefreshInterval: a retry costs no more than the refresh that would run anyway (one
// indexed query, or a refused connection while the database is down), so backing off past
// the interval would only delay recovery, and SPEC 6 asks the loader to recover within one
// interval of the source's return. The exponential start (cap/16) retries a blip quickly;
// MaxBackoff matters when RefreshInterval is longer than it.
func (c *Cache) Start() {
	c.startOnce.Do(func() {
		c.status.start(c.cfg.Now())
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.loop(c.ctx)
		}()
	})
}

// loop is the loader goroutine. It owns the tickers; srcMu serialises its source work with
// Reload.
func (c *Cache) loop(ctx context.Context) {
	refresh := time.NewTicker(c.cfg.RefreshInterval)
	defer refresh.Stop()
	reconcile := time.NewTicker(c.cfg.ReconcileInterval)
	defer reconcile.Stop()

	var (
		failures     int // consecutive failed steps
		reconcileDue bool
		k            kick
	)
	for {
		err := c.step(ctx, &reconcileDue)
		if k.done != nil {
			k.done <- err
			k = kick{}
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			refresh.Reset(c.backoff(failures))
		case failures > 0:
			c.log.Info("cache: loader recovered", "failed_attempts", failures)
			failures = 0
			refresh.Reset(c.cfg.RefreshInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
		case <-reconcile.C:
			reconcileDue = true
		case k = <-c.kicks:
			reconcileDue = reconcileDue || k.reconcile
		}
	}
}

// runStep runs a step now on the loader goroutine and returns its error (tests).
func (c *Cache) runStep(reconcile bool) error {
	return c.kick(context.Background(), reconcile)
}

// Refresh runs the loader's next step now instead of at the next tick, and returns its
// error: an incremental refresh, or the warm while that has not succeeded. It waits for a
// step in progress; it needs Start. Tests use it to observe a change without sleeping.
func (c *Cache) Refresh(ctx context.Context) error { return c.kick(ctx, false) }

// Reconcile runs a refresh and a full key scan (which removes deleted rows) now, and
// returns the error. It needs Start.
func (c *Cache) Reconcile(ctx context.Context) error { return c.kick(ctx, true) }

func (c *Cache) kick(ctx context.Context, reconcile bool) error {
	k := kick{reconcile: reconcile, done: make(chan error, 1)}
	select {
	case c.kicks <- k:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrNotReady
	}
	select {
	case err := <-k.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff returns the delay before retry n (1 for the first) of a failed step: cap/16,
// doubling up to cap = min(MaxBackoff, RefreshInterval), with equal jitter (half fixed,
// half random) so that replicas do not retry in lock-step. It never exceeds cap.
func (c *Cache) backoff(n int) time.Duration {
	ceiling := min(c.cfg.MaxBackoff, c.cfg.RefreshInterval)
	d := ceiling
	if shift := 5 - n; shift > 0 {
		d = ceiling >> shift
	}
	return d/2 + rand.N(d/2+1)
}

// step runs the loader's next piece of work: the warm until it succeeds, then a refresh
// and, when due, a reconcile.
func (c *Cache) step(ctx context.Context, reconcileDue *bool) error {
	c.srcMu.Lock()
	defer c.srcMu.Unlock()
	if c.closed {
		return nil
	}
	if c.cur.Load() == nil {
		return c.run(ctx, "warm", c.loadLocked)
	}
	if err := c.run(ctx, "refresh", c.refreshLocked); err != nil {
		return err
	}
	if *reconcileDue {
		if err := c.run(ctx, "reconcile", c.reconcileLocked); err != nil {
			return err
		}
		*reconcileDue = false
	}
	return nil
}

// run runs one named step and records its outcome. A context.Canceled (Close, or a Reload
// caller giving up) is returned but not counted as an error.
func (c *Cache) run(ctx context.Context, step string, fn func(context.Context) error) error {
	now := c.cfg.Now()
	c.status.attempted(now)
	err := fn(ctx)
	switch {
	case err == nil:
		c.status.succeeded(now, step != "reconcile")
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
	default:
		c.status.recordError(now, step, err)
		c.metrics.stepErrors.WithLabelValues(step).Inc()
		c.log.Error("cache: loader step failed", "step", step, "err", err)
	}
	if c.cur.Load() != nil {
		// Ready only now, so that whoever waited for it sees the warm in Status too.
		c.readyOnce.Do(func() { close(c.ready) })
	}
	if c.onStep != nil {
		c.onStep(step, err)
	}
	return err
}

// Reload builds a fresh cache from Source.Snapshot, verifies it, and swaps it in
// atomically: readers never see an empty or partial cache, and hit and miss counters carry
// over. It waits for a refresh in progress (and the refresh waits for it). It returns the
// error that left the current cache in place, or a verification error (the new cache is
// then in use but marked incomplete, so misses read through). While it builds, it raises
// the process's GOGC (see rebuildGCFactor) and runs at idle priority (see background).
// Safe for concurrent use.
func (c *Cache) Reload(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel) // Close aborts a reload in progress
	defer stop()

	c.srcMu.Lock()
	defer c.srcMu.Unlock()
	if c.closed {
		return errors.New("cache: reload: closed")
	}
	if c.cur.Load() != nil {
		// A table is serving: no collection until the new one replaces it, and the build
		// takes only CPU the webhook leaves idle.
		defer deferGC()()
		defer background()()
	}
	return c.run(ctx, "reload", c.loadLocked)
}

// newPacer is newPacer for a rebuild of this cache, which says in the log when the rebuild
// was starved at idle priority and went back to normal priority.
func (c *Cache) newPacer(on bool, step string) *pacer {
	p := newPacer(on)
	p.starved = func() {
		restoreThreadPriority()
		c.log.Info("cache: no idle CPU on the machine: the " + step + " goes on at normal priority, paced")
	}
	return p
}

// loadLocked builds a table from a snapshot and swaps it in. The caller holds srcMu.
func (c *Cache) loadLocked(ctx context.Context) error {
	start := time.Now()
	t, wm, err := c.build(ctx)
	if err != nil && t == nil {
		return err
	}
	c.swap(t)
	c.watermark = wm
	took := time.Since(start)
	c.status.loaded(c.cfg.Now(), took)
	c.log.Info("cache: loaded", "entries", t.entries.Load(), "cost_bytes", t.bytes.Load(),
		"complete", t.complete.Load(), "took", took)
	return err
}

// build streams a snapshot into a new table. It returns the table and the snapshot's
// watermark; with a non-nil error the table is nil, unless only its verification failed
// (it is then usable and marked incomplete).
//
// Rows are first buffered, so that the table can be sized for them (ristretto's counters
// ~10x the entries, MaxCost the budget plus headroom). If the rows outgrow the budget the
// table is created at once as incomplete, capped at the budget, and filled until full; the
// rest of the snapshot is only counted for the log line.
func (c *Cache) build(ctx context.Context) (*table, time.Time, error) {
	var (
		buf      []*entry
		rows     int64
		bytes    int64
		t        *table // non-nil once the rows outgrow the budget
		scratch  []byte
		buildErr error
		pace     = c.newPacer(c.cur.Load() != nil, "reload") // a reload: leave CPU to the webhook
		sl       = new(slab)                                 // entries side by side: see slab
	)
	wm, err := c.src.Snapshot(ctx, func(r Row) error {
		rows++
		if err := pace.tick(ctx); err != nil {
			return err
		}
		if r.Deleted {
			return nil
		}
		if t != nil {
			sl = nil // the table is evicting: entries are allocated one by one
		}
		var e *entry
		e, scratch = newEntry(r, c.cfg.Render, scratch, sl)
		bytes += e.cost
		if t != nil {
			return putPartial(t, e)
		}
		buf = append(buf, e)
		if bytes <= c.cfg.MaxBytes {
			return nil
		}
		t, buildErr = newTable(int(c.cfg.MaxBytes/(bytes/int64(len(buf)))), false, c.cfg.MaxBytes, &c.stats)
		if buildErr != nil {
			return buildErr
		}
		for _, e := range buf {
			if err := putPartial(t, e); err != nil {
				return err
			}
		}
		buf = nil
		return nil
	})
	c.status.rowsLoaded.Add(uint64(rows))
	if err != nil {
		if t != nil {
			t.close()
		}
		return nil, wm, fmt.Errorf("cache: snapshot: %w", err)
	}
	var verifyErr error
	if t != nil {
		c.logOverBudget(rows, bytes)
	} else {
		if t, err = newTable(len(buf), true, c.cfg.MaxBytes, &c.stats); err != nil {
			return nil, wm, err
		}
		hashes, shared := hashAll(buf)
		for i, e := range buf {
			if err := pace.tick(ctx); err != nil {
				t.close()
				return nil, wm, err
			}
			var err error
			if _, ok := shared[hashes[i]]; ok {
				err = t.put(e) // a key given twice, or a hash collision: merge with what is there
			} else {
				err = t.putNew(e, hashes[i])
			}
			// A verification failure leaves the table incomplete but usable: keep filling.
			if err != nil && verifyErr == nil {
				verifyErr = err
			}
		}
	}
	t.overBudget = func(t *table) { c.logOverBudget(t.entries.Load(), t.bytes.Load()) }
	if err := t.flush(); err != nil && verifyErr == nil {
		verifyErr = err
	}
	return t, wm, verifyErr
}

// hashAll returns the hash of each entry's key, and the set of hashes that more than one
// entry has (almost always empty). Sorting a copy of the hashes finds those far faster
// than asking ristretto, for every row, what its hash already holds.
func hashAll(entries []*entry) (hashes []uint64, shared map[uint64]struct{}) {
	hashes = make([]uint64, len(entries))
	for i, e := range entries {
		hashes[i] = hashKeyString(e.key)
	}
	sorted := slices.Clone(hashes)
	slices.Sort(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			if shared == nil {
				shared = make(map[uint64]struct{})
			}
			shared[sorted[i]] = struct{}{}
		}
	}
	return hashes, shared
}

// putPartial puts e into an incomplete table being filled by a snapshot, unless it is full.
func putPartial(t *table, e *entry) error {
	if t.bytes.Load()+e.cost > t.budget {
		return nil
	}
	return t.put(e)
}

// logOverBudget says, once per occurrence, that the table no longer fits the budget.
func (c *Cache) logOverBudget(rows, bytes int64) {
	c.log.Warn(fmt.Sprintf("cache: the table (%d rows, %d bytes) exceeds WXLOOKUP_CACHE_MAX_BYTES (%d bytes): "+
		"the cache is incomplete and misses read through the source", rows, bytes, c.cfg.MaxBytes),
		"rows", rows, "bytes", bytes, "max_bytes", c.cfg.MaxBytes)
}

// refreshLocked applies the rows changed since the watermark to the current table. The
// caller holds srcMu. The watermark only advances when the whole stream was applied and
// verified; on error the rows are delivered again next time (applying a row is idempotent).
func (c *Cache) refreshLocked(ctx context.Context) error {
	t := c.cur.Load()
	var (
		rows    uint64
		scratch []byte
		start   = time.Now()
	)
	defer func() {
		// A refresh should read a handful of rows in milliseconds; say so when one does not
		// (a bulk update, or a cold database after a restart), as it delays the next.
		if took := time.Since(start); took > c.cfg.RefreshInterval {
			c.log.Warn("cache: slow refresh", "rows", rows, "took", took, "since", c.watermark)
		}
	}()
	next, err := c.src.Changes(ctx, c.watermark, func(r Row) error {
		rows++
		if r.Deleted {
			scratch = AppendKey(scratch[:0], unsafe.Slice(unsafe.StringData(r.Key), len(r.Key)))
			return t.del(string(scratch))
		}
		var e *entry
		e, scratch = newEntry(r, c.cfg.Render, scratch, nil)
		return t.put(e)
	})
	c.status.rowsLoaded.Add(rows)
	ferr := t.flush()
	if err != nil {
		return fmt.Errorf("cache: changes since %s: %w", c.watermark.Format(time.RFC3339Nano), err)
	}
	c.watermark = next
	return ferr
}

// reconcileLocked removes cached rows the source no longer has. The caller holds srcMu.
//
// The key scan is not a snapshot, and rows may be inserted while it runs. Such a row is not
// at risk: the scan only judges entries stamped before it began (beginScan), and a row
// inserted in the source after that reaches the cache through Changes (or a read-through)
// with a newer stamp. A row deleted and re-inserted during the scan may be removed here,
// but its re-insert is newer than the watermark, so the next refresh restores it. Keys are
// compared by 64-bit hash to keep the scan's set small; a deleted key whose hash equals a
// live key's would survive until that key is deleted too (odds ~n²/2⁶⁵).
func (c *Cache) reconcileLocked(ctx context.Context) error {
	defer background()() // the scan takes only CPU the webhook leaves idle
	t := c.cur.Load()
	scan := t.beginScan()
	seen := make(map[uint64]struct{}, max(t.entries.Load(), 0))
	var scratch []byte
	pace := c.newPacer(true, "reconcile") // the scan runs while the cache serves: leave CPU to the webhook
	err := c.src.Keys(ctx, func(k string) error {
		if err := pace.tick(ctx); err != nil {
			return err
		}
		scratch = AppendKey(scratch[:0], unsafe.Slice(unsafe.StringData(k), len(k)))
		seen[hashKey(scratch)] = struct{}{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: reconcile: scan keys: %w", err) // a partial scan deletes nothing
	}
	var gone []string
	t.rc.IterValues(func(v *entry) (stop bool) { // holds a shard lock: collect, delete after
		for e := v; e != nil; e = e.next {
			if e.stamp >= scan {
				continue
			}
			if _, ok := seen[hashKeyString(e.key)]; !ok {
				gone = append(gone, e.key)
			}
		}
		return false
	})
	for _, k := range gone {
		if err := t.delIf(k, scan); err != nil {
			return err
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(gone) > 0 {
		c.log.Info("cache: reconcile removed deleted rows", "rows", len(gone))
	}
	return nil
}
