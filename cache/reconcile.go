package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
	"unsafe"
)

// Reconcile (poll modes) finds what Poller.Changes cannot report: rows deleted from a
// database, and changes the updated column missed. For a RangeSource it works by key
// ranges, cut by each snapshot every RangeRows rows (reload.go):
//
//   - Each range keeps the sum of the source's rows in it as the loader learned them
//     (group.sum), moved by every change applied. Once per ReconcileInterval the loader
//     walks all ranges, one every ReconcileInterval/ranges, and compares each with the
//     source's Checksum of the same range: the database computes it without sending rows.
//   - A range that differs is re-read (ReadRange) and replaced by the ranges the re-read
//     cuts. Its rows are written and tagged with their new range; the entries of the old
//     range written before the re-read began and not delivered by it are deleted.
//   - A row that arrives as a change for a key no range holds yet is untagged. Its range
//     now differs (the source counts the row, the loader's sum does not), so the walk
//     re-reads that range and tags it. After each pass, untagged entries older than the
//     pass are confirmed with Source.Get and deleted if it finds none: those are rows
//     inserted and deleted again between two re-reads of their range, so the work is
//     bounded by the changes.
//
// Why nothing live is ever deleted, step by step, for a re-read of range r:
//  1. Stamps: the re-read takes an epoch mark first. Entries written before carry an
//     older stamp; any write during the re-read carries a newer one.
//  2. An entry of r written before the mark held a row the source had at that time. The
//     re-read then reads every row of r, in key order. If it does not deliver the entry's
//     key, the row was deleted before the re-read passed that key.
//  3. A row deleted and inserted again while the re-read runs, or inserted behind its
//     position: its commit is newer than the refresh watermark, so the next refresh
//     delivers it (untagged), and the next pass re-reads its range and tags it.
//  4. A row changed while the re-read runs is delivered old or new; the refresh after
//     delivers the new one. The learned sum is what the re-read delivered, so a change
//     it missed makes r differ again at the next pass, never silently agree.
//  5. Entries written after the mark (none, as the loader goroutine runs the re-read on
//     its own; kept for safety) are never deleted: they become untagged.
//
// A source that is only a KeyLister has all its keys read once per ReconcileInterval
// instead (scanKeys); sources that report their deletes need no reconcile at all.

// walkState is the reconcile walk's position (loader goroutine only).
type walkState struct {
	restart bool          // a snapshot cut new ranges: start a new pass
	next    int           // the index of the next range to check
	pass    uint64        // the epoch mark taken when the pass began
	every   time.Duration // the time between two range checks in this pass
}

// startPass begins a reconcile pass and returns when to check its first range.
func (c *Cache) startPass() time.Duration {
	t := c.cur.Load()
	n := t.rangeCount()
	if c.ranges == nil || c.loop.needLoad || n == 0 {
		return timeNever
	}
	c.loop.walk = walkState{pass: t.mark(), every: c.cfg.ReconcileInterval / time.Duration(n)}
	return c.loop.walk.every
}

// walkStep checks the next range of the pass, or ends the pass with the confirmation of
// untagged entries, and returns when to take the next step. A failed check is retried at
// the next step.
func (c *Cache) walkStep(ctx context.Context) time.Duration {
	if c.ranges == nil || c.loop.needLoad {
		return timeNever
	}
	t := c.cur.Load()
	w := &c.loop.walk
	g := t.rangeAt(w.next)
	if g == nil {
		pass := w.pass
		c.run(ctx, "reconcile", func(ctx context.Context) error { return c.confirmUntagged(ctx, pass) })
		c.status.reconciled(c.cfg.Now())
		return c.startPass()
	}
	c.run(ctx, "reconcile", func(ctx context.Context) error {
		n, err := c.checkRange(ctx, t, g)
		w.next += n
		return err
	})
	return w.every
}

// reconcileNow runs a whole pass at once (Reconcile).
func (c *Cache) reconcileNow(ctx context.Context) error {
	c.loop.walk.restart = true // the periodic walk starts over afterwards
	if c.ranges == nil {
		if c.keys != nil {
			return c.scanKeys(ctx)
		}
		return nil
	}
	t := c.cur.Load()
	pass := t.mark()
	for i := 0; ; {
		g := t.rangeAt(i)
		if g == nil {
			break
		}
		n, err := c.checkRange(ctx, t, g)
		if err != nil {
			return err
		}
		i += n
	}
	if err := c.confirmUntagged(ctx, pass); err != nil {
		return err
	}
	c.status.reconciled(c.cfg.Now())
	return nil
}

// checkRange compares range g with the source's checksum and re-reads it if they differ.
// It returns how many ranges now stand where g stood (1 if g was not re-read).
func (c *Cache) checkRange(ctx context.Context, t *table, g *group) (int, error) {
	if dirty, sum := t.rangeState(g); !dirty {
		got, err := c.ranges.Checksum(ctx, g.KeyRange)
		if err != nil {
			return 0, fmt.Errorf("cache: reconcile: checksum of %s: %w", rangeName(g.KeyRange), err)
		}
		if got == sum {
			c.metrics.checks.equal.Inc()
			return 1, nil
		}
	}
	c.metrics.checks.differ.Inc()
	b, start := t.beginReread(g, c.cfg.RangeRows)
	finished := false
	defer func() {
		if !finished {
			t.abortReread(g, b)
		}
	}()
	p := &c.scratch
	err := c.ranges.ReadRange(ctx, g.KeyRange, func(r Row) error {
		if !r.Deleted {
			p.prepare(r, c.cfg.Render)
			b.add(p)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cache: reconcile: read %s: %w", rangeName(g.KeyRange), err)
	}
	finished = true
	n, removed := t.finishReread(g, b, start)
	if removed > 0 {
		c.metrics.removed.reconcile.Add(float64(removed))
		c.log.Info("cache: reconcile removed deleted rows", "rows", removed, "range", rangeName(g.KeyRange))
	}
	return n, t.flush()
}

// confirmUntagged asks the source for each untagged entry written before the epoch mark
// pass, and deletes those it no longer has.
func (c *Cache) confirmUntagged(ctx context.Context, pass uint64) error {
	t := c.cur.Load()
	removed := 0
	for _, e := range t.untaggedBefore(pass) {
		_, err := c.src.Get(ctx, e.key)
		switch {
		case errors.Is(err, ErrNotFound):
			if t.removeUntagged(e, pass) {
				removed++
			}
		case err != nil:
			return fmt.Errorf("cache: reconcile: confirm %q: %w", e.key, err)
		}
	}
	if removed > 0 {
		c.metrics.removed.reconcile.Add(float64(removed))
		c.log.Info("cache: reconcile removed deleted rows", "rows", removed, "range", "untagged")
	}
	return t.flush()
}

// scanKeys reads every key of a KeyLister and deletes the entries written before the scan
// began whose keys it did not list. Keys are compared by 64-bit hash to keep the scan's
// set small; a deleted key whose hash equals a live key's would survive until that key is
// deleted too (odds ~n²/2⁶⁵).
func (c *Cache) scanKeys(ctx context.Context) error {
	t := c.cur.Load()
	scan := t.mark()
	seen := make(map[uint64]struct{}, max(t.entries.Load(), 0))
	var buf []byte
	err := c.keys.Keys(ctx, func(k string) error {
		buf = AppendKey(buf[:0], unsafe.Slice(unsafe.StringData(k), len(k)))
		seen[hashKey(buf)] = struct{}{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: reconcile: scan keys: %w", err) // a partial scan deletes nothing
	}
	if removed := t.removeUnseen(seen, scan); removed > 0 {
		c.metrics.removed.reconcile.Add(float64(removed))
		c.log.Info("cache: reconcile removed deleted rows", "rows", removed)
	}
	return t.flush()
}

// rangeName formats a key range for messages.
func rangeName(r KeyRange) string { return fmt.Sprintf("[%q, %q)", r.From, r.To) }

// mark returns an epoch that every entry written before it is stamped below, and every
// entry written after it at or above.
func (t *table) mark() uint64 { return t.epoch.Add(1) }

// rangeCount returns the number of key ranges.
func (t *table) rangeCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ranges)
}

// rangeAt returns key range i, or nil past the last.
func (t *table) rangeAt(i int) *group {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i >= len(t.ranges) {
		return nil
	}
	return t.ranges[i]
}

// rangeState returns whether g must be re-read unconditionally, and its learned sum.
func (t *table) rangeState(g *group) (dirty bool, sum RangeSum) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return g.dirty, g.sum
}

// beginReread starts the re-read of range g: a builder for its rows, and the epoch mark
// that tells the entries written before it.
func (t *table) beginReread(g *group, per int) (*rangeBuilder, uint64) {
	return newRangeBuilder(t, per, g.KeyRange), t.mark()
}

// finishReread ends a re-read of g that delivered every row through b: the ranges b cut
// replace g, and g's entries written before start (which b did not deliver, or they would
// have moved) are deleted. It returns the number of new ranges and of entries deleted.
func (t *table) finishReread(g *group, b *rangeBuilder, start uint64) (ranges, removed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	groups := b.ranges()
	// Rounds, because deleting an entry copies the others of its hash chain, and the
	// copies take their places in g (see without).
	for {
		var gone []*entry
		for e := g.head; e != nil; e = e.gnext {
			if e.stamp < start {
				gone = append(gone, e)
			}
		}
		if len(gone) == 0 {
			break
		}
		for _, e := range gone {
			if e.grp == g {
				t.removeLocked(e)
				removed++
			}
		}
	}
	for g.head != nil { // written after the re-read began: not judged, so untagged
		t.moveLocked(g.head, t.untagged)
	}
	if i := slices.Index(t.ranges, g); i >= 0 {
		t.ranges = slices.Replace(t.ranges, i, i+1, groups...)
	} else { // a snapshot replaced the ranges meanwhile
		t.stale = append(t.stale, groups...)
	}
	return len(groups), removed
}

// abortReread ends a failed re-read of g: the entries it moved go back to g, whose sum no
// longer describes them, so g is re-read next time without comparing.
func (t *table) abortReread(g *group, b *rangeBuilder) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ng := range b.groups {
		for ng.head != nil {
			t.moveLocked(ng.head, g)
		}
	}
	g.dirty = true
}

// untaggedBefore returns the untagged entries written before the epoch mark pass.
func (t *table) untaggedBefore(pass uint64) []*entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old []*entry
	for e := t.untagged.head; e != nil; e = e.gnext {
		if e.stamp < pass {
			old = append(old, e)
		}
	}
	return old
}

// removeUntagged deletes e if it is still untagged and written before pass, and reports
// whether it did.
func (t *table) removeUntagged(e *entry, pass uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.grp != t.untagged || e.stamp >= pass {
		return false
	}
	t.removeLocked(e)
	return true
}

// removeUnseen deletes the entries written before scan whose key hashes are not in seen,
// moving their ranges' sums, and returns how many it deleted.
func (t *table) removeUnseen(seen map[uint64]struct{}, scan uint64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gone []*entry
	collect := func(g *group) {
		for e := g.head; e != nil; e = e.gnext {
			if _, ok := seen[hashKeyString(e.key)]; !ok && e.stamp < scan {
				gone = append(gone, e)
			}
		}
	}
	for _, g := range t.ranges {
		collect(g)
	}
	for _, g := range t.stale {
		collect(g)
	}
	collect(t.untagged)
	collect(t.fills)
	removed := 0
	for _, e := range gone {
		if e.grp == nil {
			continue // removed with another entry of its chain: its copy is judged next scan
		}
		if e.grp.ranged {
			e.grp.sum = e.grp.sum.Add(e.sum, -1)
		}
		t.removeLocked(e)
		removed++
	}
	return removed
}
