package cache

import (
	"context"
	"errors"
	"hash/crc32"
	"time"
	"unsafe"
)

// Row is one record of the lookup table as a source delivers it.
type Row struct {
	// Key is the key as stored (the canonical spelling a reply names), not normalised.
	Key string
	// Values holds the mapped value columns, in configured order.
	Values []string
	// Deleted marks a row that a source knows to be gone (the CSV source and the binlog
	// change feed report deletes this way; a polled database cannot, and the loader's
	// reconcile finds them instead).
	Deleted bool
	// Sum is the row's checksum for range reconcile (RangeSource): the CRC-32 (IEEE) of
	// the key and the values joined by the byte 0x1f, exactly as the source computes it on
	// its side (see RowSum). A source may leave it 0 (all do that are not RangeSources):
	// the cache then computes RowSum itself.
	Sum uint32
}

// RowSum returns the checksum a RangeSource computes for a row with key and values: the
// CRC-32 (IEEE) of key, 0x1f, values[0], 0x1f, values[1], … — what MySQL computes as
// CRC32(CONCAT_WS(0x1f, key, v0, …)) with NULL values read as empty strings. It is safe
// for concurrent use.
func RowSum(key string, values []string) uint32 {
	h := crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(key), len(key)))
	for _, v := range values {
		h = crc32.Update(h, crc32.IEEETable, unitSeparator)
		h = crc32.Update(h, crc32.IEEETable, unsafe.Slice(unsafe.StringData(v), len(v)))
	}
	return h
}

// unitSeparator joins a row's fields for RowSum (a package variable, so that RowSum does
// not allocate).
var unitSeparator = []byte{0x1f}

// ErrNotFound is returned by Source.Get when no row has the key.
var ErrNotFound = errors.New("cache: key not found")

// Source is the data the loader reads. The store package's MySQL and CSV sources satisfy it.
// Implementations must be safe for concurrent use: read-through calls Get while the loader
// works. How changes arrive after the snapshot depends on Config.Mode: a Poller is asked for
// them (poll, csv), a Follower streams them (binlog).
type Source interface {
	// Snapshot streams every row to fn, in the source's key order, and returns the watermark
	// a following Poller.Changes call starts from. The watermark is taken before the first
	// row is read, from the source's own clock, so nothing written during the snapshot is
	// missed. A Row is valid only during its call of fn: the source may reuse its memory
	// for the next row, so fn copies what it keeps.
	Snapshot(ctx context.Context, fn func(Row) error) (watermark time.Time, err error)
	// Get reads one row by its normalised key: read-through when the table does not fit
	// the cache, and confirmation of rows reconcile could not place in a key range. It
	// returns ErrNotFound when there is none.
	Get(ctx context.Context, key string) (Row, error)
}

// Poller is a source whose changes the loader asks for every Config.RefreshInterval (modes
// poll and csv).
type Poller interface {
	// Changes streams the rows written since watermark (with whatever overlap the source
	// needs so same-instant and late commits are not lost; a row may be delivered again)
	// and returns the watermark for the next call. A source that knows of deletes reports
	// them as rows with Deleted set.
	Changes(ctx context.Context, since time.Time, fn func(Row) error) (next time.Time, err error)
}

// KeyLister is a polled source that can list its keys but not checksum key ranges. For such
// a source the loader's reconcile reads every key each Config.ReconcileInterval and removes
// the cached rows not among them: work proportional to the table, where a RangeSource's
// reconcile is proportional to the changes. A RangeSource is never scanned this way.
type KeyLister interface {
	// Keys streams every key present now.
	Keys(ctx context.Context, fn func(key string) error) error
}

// KeyRange is a range of keys in the source's own key order (for MySQL, the key column's
// collation): From ≤ key < To. An empty From means from the first key, an empty To up to
// and including the last. Bounds are keys exactly as the source delivered them in a
// Snapshot.
type KeyRange struct {
	From, To string
}

// RangeSource is a source whose rows can be compared with the cache one key range at a
// time without sending them: the poll mode's reconcile, which finds deleted rows and
// changes the updated column missed.
type RangeSource interface {
	// Checksum returns the RangeSum of the rows in r, computed by the source (no rows are
	// sent).
	Checksum(ctx context.Context, r KeyRange) (RangeSum, error)
	// ReadRange streams every row in r to fn, in key order, each with its Sum. As in
	// Snapshot, a Row is valid only during its call of fn.
	ReadRange(ctx context.Context, r KeyRange, fn func(Row) error) error
}

// RangeSum summarises a set of rows so that two copies can be compared without sending
// them: how many rows, and the sums of their Row.Sum and of its square, each modulo 2⁶⁴.
// Both sides compute it the same way (Add). CRC-32 is linear over XOR, so a plain sum
// misses, about once in 2¹⁶, two rows swapping their values; over the integers no two
// different pairs {a, b} ≠ {c, d} share both a+b and a²+b², so with the squares a swap
// goes unseen only when CRCs collide.
type RangeSum struct {
	Rows    int64
	Sum     uint64
	Squares uint64
}

// Add returns s with a row of checksum h added (n = 1) or removed (n = -1).
func (s RangeSum) Add(h uint32, n int64) RangeSum {
	v := uint64(h)
	s.Rows += n
	s.Sum += uint64(n) * v
	s.Squares += uint64(n) * v * v
	return s
}

// Change is one committed transaction's effect on the table, as a Follower delivers it.
type Change struct {
	// Rows are the rows the transaction wrote, in commit order; a delete is a Row with
	// Deleted set, and an update that changed the key is a delete of the old key followed
	// by the new row. Rows is empty for a heartbeat, or for a transaction that touched
	// other tables: the cursor still moves.
	Rows []Row
	// Inserts, Updates and Deletes count the transaction's row events by kind (metrics).
	Inserts, Updates, Deletes int
	// Cursor is where following resumes after this change (Follower.Follow).
	Cursor string
	// Time is when the source committed the change (a binlog event's timestamp, to the
	// second); for a heartbeat, when the source sent it.
	Time time.Time
}

// Follower is a source that streams its changes as they are committed (the binlog change
// feed), instead of being polled.
type Follower interface {
	// Position returns the source's current position. Read before a Snapshot, following
	// from it misses nothing written during the snapshot; changes already in the snapshot
	// are delivered again, and applying them is idempotent.
	Position(ctx context.Context) (cursor string, err error)
	// Follow streams the changes committed after cursor to fn, one call per transaction,
	// until ctx is done (it then returns ctx's error) or an error occurs: a lost
	// connection (follow again from the cursor of the last Change applied), or an error
	// wrapping ErrResnapshot.
	Follow(ctx context.Context, cursor string, fn func(Change) error) error
}

// ErrResnapshot is wrapped by the error of Follower.Follow when following cannot go on from
// the cursor: the position is gone (binary logs purged) or the table changed shape
// (TRUNCATE, ALTER, RENAME, DROP). The loader then reloads in place from a new Snapshot.
var ErrResnapshot = errors.New("cache: the source needs a new snapshot")
