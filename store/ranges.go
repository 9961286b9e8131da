package store

import (
	"context"
	"fmt"
	"strconv"

	"wxlookup/cache"
)

// Checksum returns the cache.RangeSum of the rows in r — their count, and the sums of their
// checksums (Row.Sum) and of the checksums' squares, modulo 2⁶⁴ — computed by MySQL in one
// statement that sends no rows: the range reconcile of poll mode. The bounds compare in the
// key column's collation, the order of Snapshot; a bound need not be a key that exists.
func (s *MySQL) Checksum(ctx context.Context, r cache.KeyRange) (cache.RangeSum, error) {
	sum, err := s.rangeSum(ctx, s.q.checksum[bound(r.From)][bound(r.To)], rangeArgs(r)...)
	if err != nil {
		return cache.RangeSum{}, mappingOr(s.explain(ctx, err, false), "store: checksum of %s: %w", fmtRange(r))
	}
	return sum, nil
}

// ReadRange streams every row in r to fn in key order, each with its Sum, by keyset pages
// of PageSize rows, each its own short statement. The Row given to fn is valid only during
// the call: fn copies what it keeps.
func (s *MySQL) ReadRange(ctx context.Context, r cache.KeyRange, fn func(cache.Row) error) error {
	sc := newRowScanner(s.nvalues)
	var lastKey []byte // the key of the row fn saw last, for the next page
	var last string
	each := func() error {
		row := sc.view()
		lastKey = append(lastKey[:0], row.Key...)
		return fn(row)
	}
	for first := true; ; first = false {
		var q string
		var args []any
		if first {
			q, args = s.q.rangeFirst[bound(r.From)][bound(r.To)], rangeArgs(r)
		} else {
			q, args = s.q.rangeAt[bound(r.To)], []any{last}
			if r.To != "" {
				args = append(args, r.To)
			}
		}
		n, err := s.page(ctx, q, append(args, s.pageSize), sc.dest, each)
		last = string(lastKey)
		if err != nil {
			err = s.explain(ctx, err, false)
			if first {
				return mappingOr(err, "store: read %s: %w", fmtRange(r))
			}
			return mappingOr(err, "store: read %s after %q: %w", fmtRange(r), last)
		}
		if n < s.pageSize {
			return nil
		}
	}
}

// bound is 1 for a range bound that is set and 0 for an open one: the index of the
// statement variant in queries.
func bound(b string) int {
	if b == "" {
		return 0
	}
	return 1
}

// rangeArgs returns the bounds of r that are set, From first.
func rangeArgs(r cache.KeyRange) []any {
	var args []any
	if r.From != "" {
		args = append(args, r.From)
	}
	if r.To != "" {
		args = append(args, r.To)
	}
	return args
}

// fmtRange describes r for errors, for example `keys ["A1", "B2")` or `keys from "A1"`.
func fmtRange(r cache.KeyRange) string {
	switch {
	case r.From == "" && r.To == "":
		return "all keys"
	case r.From == "":
		return "keys before " + strconv.Quote(r.To)
	case r.To == "":
		return "keys from " + strconv.Quote(r.From)
	}
	return fmt.Sprintf("keys [%q, %q)", r.From, r.To)
}
