package store

import (
	"context"
	"database/sql"
	"fmt"
	"hash/maphash"
	"strconv"
	"time"

	"wxlookup/cache"
)

// minTimestamp is the earliest instant a TIMESTAMP holds; Changes never asks for less.
var minTimestamp = time.Unix(0, 0).UTC()

// maxSentRows bounds how many delivered rows Changes remembers (sentRows), about 30 bytes
// each: 8 MiB. A bulk change of more rows within one Overlap makes Changes read its
// overlap window again on each call until the window has passed the rows it could not
// remember — what every call did before it remembered any.
const maxSentRows = 1 << 18

// Changes streams the rows written since since and returns the database clock read before
// its first statement: the since of the next call. Every row stamped at or after since is
// read; the rows stamped in the overlap window [since − Overlap, since) are read only when
// they are not what this source delivered already — so each changed row is delivered about
// once, and yet a late commit is not lost. Rows come in (updated, key) order: the window's,
// when it is read, then those stamped at or after since.
//
// Changes remembers the rows it delivered (sentRows) and so assumes one consumer, the
// loader, that applies every row fn accepted: of two consumers of one source, each would
// take the other's rows for its own. Calls are serialised.
//
// Why nothing is lost, step by step:
//  1. The watermark next is read before any statement. A row stamped at or after next is,
//     by definition, at or after the next call's since, and that call reads all of those.
//  2. A row stamped at exactly the same microsecond as next but committed just after this
//     call read: the next call reads `>= since`, an inclusive bound, so it is read then.
//  3. A transaction stamps its rows when its statement runs but they become visible only at
//     commit. Take a row stamped t, committed at c, and the first call whose window sum
//     (step 4) runs after c. Its since was read by the call before, before that call's own
//     window sum, so before c (for the first call after a Snapshot, since is the snapshot's
//     watermark, and a row committed before it is in the snapshot). If t ≥ since, this call's full read (after its window sum,
//     so after c) reads the row. If t < since, the row is in this call's window as long as
//     c − t ≤ Overlap. Hence Overlap must exceed the longest writing transaction.
//  4. The window is read again unless it holds exactly what was delivered. MySQL computes
//     the RangeSum (count, sum and sum of squares of the rows' checksums — key and every
//     value) of the rows stamped in the window; sentRows computes it over the rows this
//     source delivered with a stamp in the window, each key once, at the checksum and stamp
//     it was last delivered with. A row in the window that was not delivered as it is now
//     (a late commit; or a second write of a key at the same stamp, as a TIMESTAMP(0)
//     column gives two writes within a second) makes the two differ, but for a checksum
//     collision; so does a delivered row deleted or moved since. The window's rows are then
//     read in full, and sentRows's entries for the window replaced by what was read. (A
//     count and sums of key CRCs and stamps would be an index-only scan, but blind to a
//     same-stamp rewrite.) A row sentRows does not remember (over its bound) can only make
//     the sums differ, so it costs a re-read, never a row.
//  5. A key delivered with a stamp in the window and written again since has moved on to
//     a stamp ≥ since: MySQL's window no longer holds it, sentRows's still does (this
//     call's full read has not delivered it yet). So when the sums differ, the keys
//     stamped ≥ since are listed (an index-only read) and left out of sentRows's sum. The
//     list is read after the window sum: a key that moved before the window sum is left
//     out on both sides; one that moved in between only on ours, and the window is read
//     again. Leaving keys out of our side never vouches for a row MySQL has in the window.
//  6. Each statement reads committed rows as of its start, and the statements run one
//     after the other, so a key delivered twice is delivered older version first.
//  7. Pages continue by keyset on (updated, key), not OFFSET: a burst of rows sharing one
//     timestamp larger than a page is read across pages without loss or repetition, and
//     a row re-stamped while paging moves forward to a stamp ≥ the cursor and is read again
//     later in this pass or the next.
func (s *MySQL) Changes(ctx context.Context, since time.Time, fn func(cache.Row) error) (time.Time, error) {
	fail := func(step string, err error) (time.Time, error) {
		return time.Time{}, mappingOr(err, "store: changes since %s: %s: %w", fmtTime(since), step)
	}
	select {
	case s.changing <- struct{}{}:
		defer func() { <-s.changing }()
	case <-ctx.Done():
		return fail("wait for the call in progress", ctx.Err())
	}
	next, err := s.clock(ctx)
	if err != nil {
		return fail("read clock", err)
	}
	// Stamps and the clock have microseconds; so must the bounds compared with them.
	lo := since.Truncate(time.Microsecond)
	if lo.Before(minTimestamp) {
		lo = minTimestamp
	}
	from := lo.Add(-s.overlap)
	if from.Before(minTimestamp) {
		from = minTimestamp
	}
	deliver := func(row cache.Row, at time.Time) error {
		if err := fn(row); err != nil {
			return err
		}
		s.sent.add(row.Key, row.Sum, at)
		return nil
	}
	if from.Before(lo) {
		theirs, err := s.rangeSum(ctx, s.q.windowSum, from.In(s.loc), lo.In(s.loc))
		if err != nil {
			return fail("sum the overlap window", s.explain(ctx, err, true))
		}
		ours := s.sent.window(from, lo, nil)
		if ours != theirs && ours.Rows > 0 {
			// Rows delivered in the window may have been written again since, moving on
			// to a stamp ≥ since, so out of the window (step 4).
			moved, err := s.movedKeys(ctx, lo)
			if err != nil {
				return fail("list the keys stamped since", err)
			}
			if moved != nil {
				ours = s.sent.window(from, lo, moved)
			}
		}
		if ours != theirs {
			s.sent.forget(from, lo)
			if err := s.readChanges(ctx, from, lo, deliver); err != nil {
				return fail("read the overlap window", err)
			}
		}
	}
	if err := s.readChanges(ctx, lo, time.Time{}, deliver); err != nil {
		return fail("read", err)
	}
	s.sent.prune(next.Add(-s.overlap))
	return next, nil
}

// readChanges delivers the rows stamped from from up to to (exclusive; zero for no bound)
// in (updated, key) order, by keyset pages, each with its stamp.
func (s *MySQL) readChanges(ctx context.Context, from, to time.Time, deliver func(cache.Row, time.Time) error) error {
	var updated time.Time
	sc := newRowScanner(s.nvalues, &updated)
	var lastKey string
	var lastUpdated time.Time
	each := func() error {
		row := sc.row()
		lastKey, lastUpdated = row.Key, updated
		return deliver(row, updated)
	}
	bounded := 0
	if !to.IsZero() {
		bounded = 1
	}
	for first := true; ; first = false {
		var args []any
		var q string
		if first {
			q, args = s.q.changesFirst[bounded], []any{from.In(s.loc)}
		} else {
			lu := lastUpdated.In(s.loc)
			q, args = s.q.changesAt[bounded], []any{lu, lu, lastKey}
		}
		if bounded == 1 {
			args = append(args, to.In(s.loc))
		}
		n, err := s.page(ctx, q, append(args, s.pageSize), sc.dest, each)
		if err != nil {
			return s.explain(ctx, err, true)
		}
		if n < s.pageSize {
			return nil
		}
	}
}

// movedKeys returns the hashes (sentRows.hash) of the keys stamped at or after since, or nil
// when there are more than sentRows remembers.
func (s *MySQL) movedKeys(ctx context.Context, since time.Time) (map[uint64]struct{}, error) {
	moved := map[uint64]struct{}{}
	var key sql.RawBytes
	var lastKey string
	var updated, lastUpdated time.Time
	dest := []any{&key, &updated}
	each := func() error {
		lastKey, lastUpdated = string(key), updated
		moved[s.sent.hash(lastKey)] = struct{}{}
		return nil
	}
	for first := true; ; first = false {
		var q string
		var args []any
		if first {
			q, args = s.q.keysSince[0], []any{since.In(s.loc)}
		} else {
			lu := lastUpdated.In(s.loc)
			q, args = s.q.keysSince[1], []any{lu, lu, lastKey}
		}
		n, err := s.page(ctx, q, append(args, s.pageSize), dest, each)
		if err != nil {
			return nil, s.explain(ctx, err, true)
		}
		if len(moved) > s.sent.limit {
			return nil, nil
		}
		if n < s.pageSize {
			return moved, nil
		}
	}
}

// rangeSum runs one of the RangeSum statements (windowSum, checksum) with args.
func (s *MySQL) rangeSum(ctx context.Context, query string, args ...any) (cache.RangeSum, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var sum cache.RangeSum
	var total, squares sql.RawBytes
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return sum, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return sum, err
		}
		return sum, sql.ErrNoRows
	}
	if err := rows.Scan(&sum.Rows, &total, &squares); err != nil {
		return sum, err
	}
	// The sums are DECIMALs already reduced modulo 2⁶⁴, so they fit a uint64.
	if sum.Sum, err = strconv.ParseUint(string(total), 10, 64); err != nil {
		return sum, fmt.Errorf("parse sum %q: %w", total, err)
	}
	if sum.Squares, err = strconv.ParseUint(string(squares), 10, 64); err != nil {
		return sum, fmt.Errorf("parse sum of squares %q: %w", squares, err)
	}
	return sum, rows.Close()
}

// sentRows remembers the rows Changes delivered whose stamps a later overlap window may
// still hold: for each key (by a 64-bit hash of it), the checksum and the stamp it was last
// delivered with. Its window sum is what MySQL's must equal for Changes to skip reading
// the window again. An entry is added only once fn accepted the row, so it never claims a
// delivery that did not happen; a key it lacks (over the bound, or two keys sharing a hash)
// only makes the sums differ. It is not safe for concurrent use: MySQL.changing guards it.
type sentRows struct {
	seed  maphash.Seed
	rows  map[uint64]sentRow
	limit int
	peak  int // the most rows recorded since rows was made (see shrink)
}

// sentRow is one remembered delivery: the row's checksum and its stamp in microseconds
// since the epoch.
type sentRow struct {
	sum uint32
	at  int64
}

func newSentRows(limit int) *sentRows {
	return &sentRows{seed: maphash.MakeSeed(), rows: map[uint64]sentRow{}, limit: limit}
}

// hash returns the hash that identifies key.
func (r *sentRows) hash(key string) uint64 { return maphash.String(r.seed, key) }

// add records that key was delivered with checksum sum and stamp at, replacing what was
// recorded for key; a new key is not recorded once limit keys are.
func (r *sentRows) add(key string, sum uint32, at time.Time) {
	h := r.hash(key)
	if _, ok := r.rows[h]; !ok && len(r.rows) >= r.limit {
		return
	}
	r.rows[h] = sentRow{sum: sum, at: at.UnixMicro()}
	r.peak = max(r.peak, len(r.rows))
}

// window returns the RangeSum of the recorded rows stamped in [from, to), leaving out the
// keys whose hashes are in except.
func (r *sentRows) window(from, to time.Time, except map[uint64]struct{}) cache.RangeSum {
	lo, hi := from.UnixMicro(), to.UnixMicro()
	var sum cache.RangeSum
	for h, e := range r.rows {
		if e.at >= lo && e.at < hi {
			if _, ok := except[h]; !ok {
				sum = sum.Add(e.sum, 1)
			}
		}
	}
	return sum
}

// forget removes the rows stamped in [from, to).
func (r *sentRows) forget(from, to time.Time) {
	lo, hi := from.UnixMicro(), to.UnixMicro()
	for h, e := range r.rows {
		if e.at >= lo && e.at < hi {
			delete(r.rows, h)
		}
	}
}

// prune removes the rows stamped before t: no later overlap window reaches back to them.
func (r *sentRows) prune(t time.Time) {
	lo := t.UnixMicro()
	for h, e := range r.rows {
		if e.at < lo {
			delete(r.rows, h)
		}
	}
	r.shrink()
}

// minShrinkPeak is the smallest peak at which shrink copies the map.
const minShrinkPeak = 4096

// shrink moves the rows to a new map when they are fewer than a quarter of the peak. A Go
// map keeps the memory of its largest size when emptied: a bulk change of 262,144 rows
// (maxSentRows) left ≈ 11 MB behind for good, after its rows had left every overlap window.
func (r *sentRows) shrink() {
	if r.peak < minShrinkPeak || len(r.rows) > r.peak/4 {
		return
	}
	m := make(map[uint64]sentRow, len(r.rows)) // not maps.Clone: it may keep the table's size
	for h, e := range r.rows {
		m[h] = e
	}
	r.rows, r.peak = m, len(m)
}

// len returns how many rows are recorded.
func (r *sentRows) len() int { return len(r.rows) }
