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
//     walks all ranges, one every ReconcileInterval/ranges on a fixed schedule (so the
//     checks' own time does not lengthen a pass), and compares each with the source's
//     Checksum of the same range: the database computes it without sending rows.
//   - A range that differs is compared again right after the next refresh (or when the
//     walk comes back to it, if no refresh ran meanwhile): most differences under a steady
//     write load are changes committed since the last refresh, which that refresh
//     applies. A range that still differs is re-read (ReadRange) and
//     replaced by the ranges the re-read cuts. Its rows are written and tagged with their
//     new range; the entries of the old range written before the re-read began and not
//     delivered by it are deleted.
//   - A row that arrives as a change for a key no range holds yet is untagged. Its range
//     now differs (the source counts the row, the loader's sum does not), so the walk
//     re-reads that range and tags it. A row inserted and deleted again before that is
//     not seen by any range: untagged entries are confirmed with Source.Get once, about
//     two refresh intervals after they were written (at most confirmPerStep a step), and
//     again after each pass if still untagged, and deleted when it finds none. The work
//     is bounded by the changes.
//   - A failed step delays the next by the loader's back-off, so an outage costs one
//     failed query per back-off step, not one per range.
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
	start   time.Time     // when the pass began
	every   time.Duration // the time between two range checks in this pass
	// suspects are ranges that differed once; they are compared again after the next
	// refresh (recheckSuspects) and re-read if they still differ.
	suspects []suspect
	// marks are epoch marks taken at recent steps, oldest first; confirmed is the mark
	// below which every untagged entry was confirmed once, at lastConfirm.
	marks       []timedMark
	confirmed   uint64
	lastConfirm time.Time
}

// suspect is a range that differed at its check, at since.
type suspect struct {
	g     *group
	since time.Time
}

// timedMark is an epoch mark and when it was taken.
type timedMark struct {
	at   time.Time
	mark uint64
}

// confirmPerStep bounds the untagged entries one walk step confirms with Source.Get (a
// bulk insert leaves many untagged until their ranges are re-read; the end of the pass
// confirms the rest).
const confirmPerStep = 256

// startPass begins a reconcile pass and returns when to check its first range.
func (c *Cache) startPass() time.Duration {
	t := c.cur.Load()
	n := t.rangeCount()
	if c.ranges == nil || c.loop.needLoad || n == 0 {
		return timeNever
	}
	w := &c.loop.walk
	*w = walkState{pass: t.mark(), start: c.cfg.Now(), every: c.cfg.ReconcileInterval / time.Duration(n),
		suspects: w.suspects, marks: w.marks, confirmed: w.confirmed, lastConfirm: w.lastConfirm}
	return w.every
}

// delay returns how long after now to check range w.next. Range i is due at start +
// (i+1)·every, so the time the checks themselves take (and the refreshes the loader runs
// between them) does not stretch a pass beyond ReconcileInterval, which bounds how long a
// delete goes unseen. A walk that fell behind catches up at twice its pace, not in a burst,
// so the database's load stays spread.
func (w *walkState) delay(now time.Time) time.Duration {
	due := w.start.Add(time.Duration(w.next+1) * w.every).Sub(now)
	if due <= 0 {
		return w.every / 2
	}
	return min(due, w.every)
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
		if err := c.run(ctx, "reconcile", func(ctx context.Context) error { return c.confirmUntagged(ctx, 0, pass, -1) }); err != nil {
			return c.retryDelay("reconcile", err)
		}
		c.status.reconciled(c.cfg.Now())
		return c.startPass()
	}
	// A range the walk comes back to while it is still a suspect (no refresh has run
	// since it differed) waits for that refresh if it differed less than a refresh
	// interval (or a whole pass, if that is shorter) ago, and is compared, and re-read if
	// it differs, otherwise.
	deferDiffer := true
	if i := slices.IndexFunc(w.suspects, func(s suspect) bool { return s.g == g }); i >= 0 {
		if c.cfg.Now().Sub(w.suspects[i].since) < min(c.cfg.RefreshInterval, c.cfg.ReconcileInterval) {
			w.next++
			return w.delay(c.cfg.Now())
		}
		w.suspects = slices.Delete(w.suspects, i, i+1)
		deferDiffer = false
	}
	err := c.run(ctx, "reconcile", func(ctx context.Context) error {
		n, err := c.checkRange(ctx, t, g, deferDiffer)
		w.next += n
		if err == nil {
			err = c.confirmAged(ctx, t)
		}
		return err
	})
	if err != nil {
		return c.retryDelay("reconcile", err)
	}
	return w.delay(c.cfg.Now())
}

// confirmAged confirms, at most once a refresh interval, the untagged entries written
// about two refresh intervals ago or earlier that no such step has confirmed yet: rows
// inserted and deleted before any range re-read tagged them are removed within seconds,
// not at the end of the pass.
func (c *Cache) confirmAged(ctx context.Context, t *table) error {
	w := &c.loop.walk
	now := c.cfg.Now()
	w.marks = append(w.marks, timedMark{now, t.mark()})
	if now.Sub(w.lastConfirm) < c.cfg.RefreshInterval {
		return nil
	}
	age := 2 * c.cfg.RefreshInterval
	i := 0 // the marks taken at least age ago are w.marks[:i]
	for i < len(w.marks) && now.Sub(w.marks[i].at) >= age {
		i++
	}
	if i == 0 {
		return nil
	}
	to := w.marks[i-1].mark
	w.marks = slices.Delete(w.marks, 0, i-1) // keep the newest of them: the next step starts there
	if to <= w.confirmed {
		return nil
	}
	from := w.confirmed
	w.confirmed, w.lastConfirm = to, now
	return c.confirmUntagged(ctx, from, to, confirmPerStep)
}

// recheckSuspects compares again, after a refresh, the ranges that differed at their last
// check, and re-reads those that still differ. A range a re-read or a snapshot replaced
// meanwhile is dropped: its successor is checked in turn.
func (c *Cache) recheckSuspects(ctx context.Context) error {
	w := &c.loop.walk
	if len(w.suspects) == 0 || c.ranges == nil || c.loop.needLoad {
		w.suspects = w.suspects[:0]
		return nil
	}
	t := c.cur.Load()
	suspects := w.suspects
	w.suspects = nil
	for i, s := range suspects {
		if !t.hasRange(s.g) {
			continue
		}
		if _, err := c.checkRange(ctx, t, s.g, false); err != nil {
			w.suspects = append(w.suspects, suspects[i+1:]...) // the rest wait for the next refresh
			return err
		}
	}
	return nil
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
		n, err := c.checkRange(ctx, t, g, false)
		if err != nil {
			return err
		}
		i += n
	}
	if err := c.confirmUntagged(ctx, 0, pass, -1); err != nil {
		return err
	}
	c.status.reconciled(c.cfg.Now())
	return nil
}

// checkRange compares range g with the source's checksum and re-reads it if they differ,
// or, with defer, puts it among the suspects to compare again after the next refresh. It
// returns how many ranges now stand where g stood (1 if g was not re-read).
func (c *Cache) checkRange(ctx context.Context, t *table, g *group, deferDiffer bool) (int, error) {
	if dirty, sum := t.rangeState(g); !dirty {
		got, err := c.ranges.Checksum(ctx, g.KeyRange)
		if err != nil {
			return 0, fmt.Errorf("cache: reconcile: checksum of %s: %w", rangeName(g.KeyRange), err)
		}
		if got == sum {
			c.metrics.checks.equal.Inc()
			return 1, nil
		}
		if deferDiffer {
			c.metrics.checks.recheck.Inc()
			c.loop.walk.suspects = append(c.loop.walk.suspects, suspect{g, c.cfg.Now()})
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

// confirmUntagged asks the source for the untagged entries written from the epoch mark
// from on and before the mark to (at most limit of them; limit < 0: all), and deletes those
// it no longer has.
func (c *Cache) confirmUntagged(ctx context.Context, from, to uint64, limit int) error {
	t := c.cur.Load()
	removed := 0
	for _, e := range t.untaggedBetween(from, to, limit) {
		_, err := c.src.Get(ctx, e.key())
		switch {
		case errors.Is(err, ErrNotFound):
			if t.removeUntagged(e, to) {
				removed++
			}
		case err != nil:
			return fmt.Errorf("cache: reconcile: confirm %q: %w", e.key(), err)
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
	var gone []*entry
	for e := g.head; e != nil; e = e.gnext {
		if e.stamp < start {
			gone = append(gone, e)
		}
	}
	for _, e := range gone {
		t.removeLocked(e) // deleting an entry leaves the others where they are
		removed++
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

// untaggedBetween returns the untagged entries written from the epoch mark from on and
// before the mark to, at most limit of them (limit < 0: all).
func (t *table) untaggedBetween(from, to uint64, limit int) []*entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old []*entry
	for e := t.untagged.head; e != nil && limit != 0; e = e.gnext {
		if e.stamp >= from && e.stamp < to {
			old = append(old, e)
			limit--
		}
	}
	return old
}

// hasRange reports whether g is one of the table's key ranges.
func (t *table) hasRange(g *group) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Contains(t.ranges, g)
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
			if _, ok := seen[hashKeyString(e.key())]; !ok && e.stamp < scan {
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
			continue // no longer held (taken out of its group since it was collected)
		}
		if e.grp.ranged {
			e.grp.sum = e.grp.sum.Add(e.sum, -1)
		}
		t.removeLocked(e)
		removed++
	}
	return removed
}
