package cache

import (
	"context"
	"errors"
	"time"
)

// Row is one record of the lookup table as a source delivers it.
type Row struct {
	// Key is the key as stored (the canonical spelling a reply names), not normalised.
	Key string
	// Values holds the mapped value columns, in configured order.
	Values []string
	// Deleted marks a row that a source knows to be gone (the CSV source reports deletes
	// this way; the MySQL source cannot, and the loader's reconcile finds them instead).
	Deleted bool
}

// ErrNotFound is returned by Source.Get when no row has the key.
var ErrNotFound = errors.New("cache: key not found")

// Source is the data the loader reads. The store package's MySQL and CSV sources satisfy it.
// Implementations must be safe for concurrent use: the loader may call Get (read-through)
// while a refresh runs.
type Source interface {
	// Snapshot streams every row to fn and returns the watermark a following Changes call
	// starts from. The watermark is taken before the first row is read, from the source's
	// own clock, so nothing written during the snapshot is missed.
	Snapshot(ctx context.Context, fn func(Row) error) (watermark time.Time, err error)
	// Changes streams the rows written since watermark (with whatever overlap the source
	// needs so same-instant and late commits are not lost; a row may be delivered again)
	// and returns the watermark for the next call.
	Changes(ctx context.Context, since time.Time, fn func(Row) error) (next time.Time, err error)
	// Keys streams every key present now; the loader removes cached keys not among them.
	Keys(ctx context.Context, fn func(key string) error) error
	// Get reads one row by its normalised key, for read-through when the table does not fit
	// the cache. It returns ErrNotFound when there is none.
	Get(ctx context.Context, key string) (Row, error)
}
