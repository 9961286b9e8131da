package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"
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
	if t.complete.Load() { // upsert uses the cursor for complete tables only
		t.held = newHeldCursor(t.stale)
	}
}

// heldCursor finds the entry held for a snapshot's row without ristretto: a reload
// delivers the rows in the order the last snapshot did, and the key ranges that snapshot
// cut still hold their entries in that order (each range's list is linked at its head,
// so in reverse). The cursor walks those entries alongside the snapshot. A row whose
// entry is not where the cursor expects it (a row inserted since; an entry changed
// since, which sits at its range's head) is looked up through ristretto as before. It is
// used under table.mu only.
//
// Rows deleted since leave their entries in the cursor's way: find looks a few entries
// ahead, and after a longer run the entry that ristretto found for a row becomes a second
// place to look (skipTo), taken once the next row is found right after it. An entry
// changed since is found through ristretto far ahead of the cursor, at its range's
// end; as the next row is found at the cursor, the cursor stays.
//
// Why an entry found here is the one a lookup through ristretto would find: an entry
// belongs to a group exactly while it is held (table's invariant 2), and only one entry
// is held for a normalised key. So an entry of the cursor with grp set and the row's key
// is the key's held entry, whatever group it is in by now.
type heldCursor struct {
	entries []*entry
	at      int // where the next row's entry is expected
	alt     int // after the entry ristretto found for the last row, or -1
	found   int // rows find found (tests read it)
}

const (
	// heldLookahead is how many entries from the cursor find tries: rows deleted since
	// the last snapshot leave their entries in the way.
	heldLookahead = 4
	// heldSkipMax is how far past the cursor skipTo looks for an entry found through
	// ristretto.
	heldSkipMax = 256
)

// newHeldCursor returns a cursor over the entries of the ranged groups in groups, each
// group's in delivery order.
func newHeldCursor(groups []*group) *heldCursor {
	n := 0
	for _, g := range groups {
		if g.ranged {
			n += g.n
		}
	}
	c := &heldCursor{entries: make([]*entry, 0, n), alt: -1}
	for _, g := range groups {
		if !g.ranged {
			continue
		}
		from := len(c.entries)
		for e := g.head; e != nil; e = e.gnext {
			c.entries = append(c.entries, e)
		}
		slices.Reverse(c.entries[from:])
	}
	return c
}

// find returns the entry held for the normalised key if it is at the cursor or just
// past it (or at the second place skipTo left), and moves the cursor past it; otherwise
// nil.
func (c *heldCursor) find(key string) *entry {
	for _, from := range [2]int{c.at, c.alt} {
		for i := from; from >= 0 && i < len(c.entries) && i < from+heldLookahead; i++ {
			if e := c.entries[i]; e.grp != nil && e.key() == key {
				c.at, c.alt = i+1, -1
				c.found++
				return e
			}
		}
	}
	return nil
}

// skipTo notes e, the entry ristretto found for a row the cursor did not find, as the
// second place to look for the next row if e is a little way past the cursor.
func (c *heldCursor) skipTo(e *entry) {
	c.alt = -1
	for i := c.at; i < len(c.entries) && i < c.at+heldSkipMax; i++ {
		if c.entries[i] == e {
			c.alt = i + 1
			return
		}
	}
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
	t.loading, t.held = false, nil
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
	t.loading, t.held = false, nil
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
	lim := c.reloadLimiter()
	wm, err = c.src.Snapshot(ctx, func(r Row) error {
		rows++
		if lim != nil && rows%reloadPage == 0 {
			if err := lim.WaitN(ctx, reloadPage); err != nil {
				return err
			}
		}
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

// reloadPage is how many rows a limited snapshot streams between two waits.
const reloadPage = 1024

// reloadLimiter returns the limiter of a snapshot into the cache (Config.ReloadRate), nil
// for the first load and when there is no limit. The rows of a page go at once, so the
// loader stays busy for short stretches (about 0.4 ms a page) with idle gaps between them.
func (c *Cache) reloadLimiter() *rate.Limiter {
	if !c.warmed.Load() || c.cfg.ReloadRate < 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(c.cfg.ReloadRate), reloadPage)
}

// logOverBudget says that the table does not fit the budget.
func (c *Cache) logOverBudget(rows, bytes int64) {
	c.log.Warn(fmt.Sprintf("cache: the table (%d rows, %d bytes) exceeds WXLOOKUP_CACHE_MAX_BYTES (%d bytes): "+
		"the cache is incomplete and misses read through the source", rows, bytes, c.cfg.MaxBytes),
		"rows", rows, "bytes", bytes, "max_bytes", c.cfg.MaxBytes)
}
