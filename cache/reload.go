package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A snapshot streams into the live table; there is never a second table. The first warm,
// Reload and the change feed's resnapshot all do the same (load):
//
//  1. Mark: beginLoad makes the current key ranges and untagged entries stale. Their
//     entries stay held and keep answering.
//  2. Stream: each row the snapshot delivers is written into a new key range (upsert). A
//     row already held unchanged keeps its entry, which only moves from its stale group to
//     the new range: no allocation, nothing readers could notice. A changed row replaces
//     its entry in one write. So a reload allocates in proportion to the changed rows, and
//     readers see the old or the new value of every key, never a gap.
//  3. Sweep: finishLoad removes what is left in the stale groups: entries the snapshot did
//     not deliver, because their rows were deleted before the snapshot passed them.
//
// Why the sweep deletes nothing live: every stale entry was written before the snapshot
// began, so its row existed then. The snapshot reads every row in key order; not
// delivering one means it was gone when the snapshot passed its key. A row deleted and
// inserted again behind the snapshot's position is written after the watermark (poll) or
// after the recorded position (binlog), so the next refresh or change restores it.

// rangeBuilder cuts the rows that a snapshot or a range re-read delivers, in the source's
// key order, into key ranges of RangeRows rows, and writes each row into the table in its
// range. It is used by the loader goroutine only.
type rangeBuilder struct {
	t      *table
	per    int
	to     string // the upper bound of the last range
	groups []*group
	cur    *group
	rows   int // rows in cur

	// delivered and cost count the rows delivered and the cost of entries holding them;
	// skipped reports that a row was left out (an incomplete table had no room).
	delivered, cost int64
	skipped, over   bool
}

// newRangeBuilder returns a builder for the rows of r.
func newRangeBuilder(t *table, per int, r KeyRange) *rangeBuilder {
	b := &rangeBuilder{t: t, per: per, to: r.To}
	b.cur = &group{ranged: true, KeyRange: KeyRange{From: r.From}}
	b.groups = []*group{b.cur}
	return b
}

// add writes the row p into the table, tagged with the range it falls in.
func (b *rangeBuilder) add(p *prepared) {
	if b.rows == b.per {
		// The bound is the key exactly as the source delivered it, so that the source
		// compares it in its own order (its collation) when asked about the range.
		bound := strings.Clone(p.canon)
		b.cur.To = bound
		b.cur = &group{ranged: true, KeyRange: KeyRange{From: bound}}
		b.groups = append(b.groups, b.cur)
		b.rows = 0
	}
	b.rows++
	b.delivered++
	held, cost := b.t.upsert(p, b.cur)
	b.cost += cost
	b.skipped = b.skipped || !held
	if b.cost > b.t.budget && !b.over {
		b.over = true
		b.t.exceedLoad()
	}
}

// ranges returns the ranges cut, the last one ending at the builder's upper bound.
func (b *rangeBuilder) ranges() []*group {
	b.cur.To = b.to
	return b.groups
}

// beginLoad marks the table for a snapshot streamed into it (step 1 above). A complete
// table's ristretto may hold the old and the new rows side by side until the sweep, so its
// capacity is raised meanwhile; memory holds what is held, which is only ever the rows of
// the table plus those deleted since the last snapshot.
func (t *table) beginLoad() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keepFlushErrLocked(t.flushLocked())
	t.loading, t.evictedLoad = true, false
	if t.complete.Load() {
		t.rc.UpdateMaxCost(2*t.budget + t.budget/headroomDiv)
	}
	t.stale = append(t.stale, t.ranges...)
	t.stale = append(t.stale, t.untagged)
	t.ranges, t.untagged = nil, new(group)
}

// exceedLoad makes a complete table incomplete once the snapshot streaming into it has
// delivered more than the budget.
func (t *table) exceedLoad() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loading && t.complete.Load() {
		t.goIncompleteLocked()
	}
}

// finishLoad ends a snapshot that delivered every row through b (step 3 above) and returns
// how many entries the sweep removed. The table is complete afterwards if it holds every
// row delivered, verified; the fills of an incomplete table are swept too (a complete one
// has none, and an incomplete one reads them through again).
func (t *table) finishLoad(b *rangeBuilder) (swept int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	err = t.flushLocked() // verify the snapshot's writes before judging completeness
	for _, g := range t.stale {
		swept += t.sweepLocked(g)
	}
	t.sweepLocked(t.fills)
	t.stale, t.ranges = nil, b.ranges()
	t.loading = false
	if !b.skipped && !t.evictedLoad && t.fits(b.cost) && err == nil {
		t.goCompleteLocked()
	} else {
		t.goIncompleteLocked()
	}
	if ferr := t.flushLocked(); ferr != nil && err == nil {
		err = ferr
	}
	return swept, err
}

// abortLoad ends a snapshot that failed: nothing is swept (what the snapshot did not reach
// cannot be judged), and the ranges it cut become stale too, for the next snapshot to
// sweep. Until then the table has no key ranges, so reconcile waits.
func (t *table) abortLoad(b *rangeBuilder) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stale = append(t.stale, b.groups...)
	t.loading = false
	if t.complete.Load() {
		t.rc.UpdateMaxCost(t.budget + t.budget/headroomDiv)
	}
	t.keepFlushErrLocked(t.flushLocked())
}

// sweepLocked removes every entry of g and returns how many there were.
func (t *table) sweepLocked(g *group) int {
	n := 0
	for g.head != nil {
		t.removeLocked(g.head)
		n++
	}
	return n
}

// Reload streams a fresh snapshot of the source into the cache in place (see load) and
// returns its error; the loader goroutine runs it between its other steps, and in binlog
// mode it interrupts the change feed and follows again from the position recorded before
// the snapshot. A failed reload leaves every row answering as before; the loader then
// retries the snapshot with back-off. It needs Start. Safe for concurrent use.
func (c *Cache) Reload(ctx context.Context) error { return c.kick(ctx, kickReload) }

// load streams a snapshot into the table (see the top of this file) and returns its
// watermark. loaded reports that the snapshot completed, so the table is in step with the
// source as of the watermark; err may then still report a verification failure (the table
// then serves as incomplete). If an incomplete table was left incomplete only because rows
// about to be swept took the room the snapshot needed, it loads once more: the second
// snapshot finds the room. It runs on the loader goroutine.
func (c *Cache) load(ctx context.Context) (wm time.Time, loaded bool, err error) {
	wm, again, err := c.loadOnce(ctx)
	if errors.Is(err, errSnapshot) {
		return wm, false, err
	}
	if again {
		c.log.Info("cache: the table fits WXLOOKUP_CACHE_MAX_BYTES now; loading it again to hold all of it")
		if wm, _, err = c.loadOnce(ctx); errors.Is(err, errSnapshot) {
			return wm, false, err // its ranges are stale: a snapshot is needed again
		}
	}
	return wm, true, err
}

// errSnapshot marks the error of a snapshot that did not complete.
var errSnapshot = errors.New("cache: snapshot")

func (c *Cache) loadOnce(ctx context.Context) (wm time.Time, again bool, err error) {
	t := c.cur.Load()
	start := time.Now()
	t.beginLoad()
	b := newRangeBuilder(t, c.cfg.RangeRows, KeyRange{})
	finished := false
	defer func() {
		if !finished { // the snapshot failed, or panicked
			t.abortLoad(b)
		}
	}()
	var rows uint64
	p := &c.scratch
	wm, err = c.src.Snapshot(ctx, func(r Row) error {
		rows++
		if !r.Deleted {
			p.prepare(r, c.cfg.Render)
			b.add(p)
		}
		return nil
	})
	c.status.rowsLoaded.Add(rows)
	if err != nil {
		return wm, false, fmt.Errorf("%w: %w", errSnapshot, err)
	}
	finished = true
	swept, err := t.finishLoad(b)
	took := time.Since(start)
	c.status.loaded(c.cfg.Now(), took)
	c.metrics.removed.reload.Add(float64(swept))
	if !t.fits(b.cost) {
		c.logOverBudget(b.delivered, b.cost+t.sugg.bytes())
	}
	complete := t.complete.Load()
	c.log.Info("cache: loaded", "rows", b.delivered, "entries", t.entries.Load(), "removed", swept,
		"cost_bytes", t.bytes.Load(), "suggest_bytes", t.sugg.bytes(), "complete", complete, "ranges", len(b.groups), "took", took)
	return wm, !complete && b.skipped && t.fits(b.cost), err
}

// logOverBudget says that the table does not fit the budget.
func (c *Cache) logOverBudget(rows, bytes int64) {
	c.log.Warn(fmt.Sprintf("cache: the table (%d rows, %d bytes) exceeds WXLOOKUP_CACHE_MAX_BYTES (%d bytes): "+
		"the cache is incomplete and misses read through the source", rows, bytes, c.cfg.MaxBytes),
		"rows", rows, "bytes", bytes, "max_bytes", c.cfg.MaxBytes)
}
