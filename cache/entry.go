package cache

import (
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// entryOverhead is the fixed part of an entry's cost, in bytes: the entry struct (about 80
// bytes), ristretto's stored item and its slot in the sharded map (about 60), and the
// policy's key-cost slot (about 20). The counters of ristretto's admission sketch are sized
// by the number of entries and not charged to entries.
const entryOverhead = 160

// entry is what the cache holds for one normalised key. Entries are immutable once stored,
// so Lookup may hand out line and canon without copying; a change stores a new entry.
type entry struct {
	key   string // normalised key (AppendKey of the row's key)
	canon string // the key as stored in the source, named in replies
	line  []byte // rendered reply line
	cost  int64  // this entry's own cost (the ristretto item's cost is the chain's sum)
	stamp uint64 // table epoch when stored; reconcile spares entries newer than its scan
	// next chains entries whose normalised keys share a 64-bit hash. Such collisions are
	// astronomically rare, but chaining keeps the cache complete and correct when one happens.
	next *entry
}

// find returns the entry for key in the chain starting at e, or nil.
func (e *entry) find(key []byte) *entry {
	for ; e != nil; e = e.next {
		if e.key == string(key) { // compiles to a comparison, no conversion
			return e
		}
	}
	return nil
}

// findString is find for a string key.
func (e *entry) findString(key string) *entry {
	for ; e != nil; e = e.next {
		if e.key == key {
			return e
		}
	}
	return nil
}

// chainCost is the cost of the ristretto item holding the chain starting at e.
func chainCost(e *entry) int64 {
	var n int64
	for ; e != nil; e = e.next {
		n += e.cost
	}
	return n
}

// without returns the chain starting at e minus the entry for key. Entries are immutable,
// so the kept ones are copied; in the usual one-entry chain nothing is.
func without(e *entry, key string) *entry {
	var head *entry
	for ; e != nil; e = e.next {
		if e.key != key {
			kept := *e
			kept.next = head
			head = &kept
		}
	}
	return head
}

// hashKey is the ristretto key of a normalised key. Lookup verifies the stored key, so a
// collision can never answer for the wrong key.
func hashKey(key []byte) uint64 { return xxhash.Sum64(key) }

// hashKeyString is hashKey for a string.
func hashKeyString(key string) uint64 { return xxhash.Sum64String(key) }

// DefaultRender appends a row rendered as "[key] v1 v2" to dst: the key as stored, then
// each value after a space. It is used when Config.Render is nil. DefaultRender is safe
// for concurrent use.
func DefaultRender(dst []byte, r Row) []byte {
	dst = append(dst, '[')
	dst = append(dst, r.Key...)
	dst = append(dst, ']')
	for _, v := range r.Values {
		dst = append(dst, ' ')
		dst = append(dst, v...)
	}
	return dst
}

// newEntry builds the entry for a row with render, normalising its key. scratch is reused
// between calls by the single goroutine that owns it and returned for the next call.
//
// The entry's strings and line share one allocation, sized exactly: the key as stored,
// the normalised key when it differs, then the line. An entry is thus two heap objects
// (itself and its bytes), and it keeps nothing of the row alive. With a million entries
// that is what a garbage collection has to mark, and what a full reload allocates.
//
// With a slab (a full build), the entry and its bytes come from the slab's blocks;
// without one (a refresh, a read-through), from the heap.
func newEntry(r Row, render func([]byte, Row) []byte, scratch []byte, sl *slab) (*entry, []byte) {
	// AppendKey only reads its input, so the row's key is viewed, not copied.
	scratch = AppendKey(scratch[:0], unsafe.Slice(unsafe.StringData(r.Key), len(r.Key)))
	nkey := len(scratch)
	same := string(scratch) == r.Key // the usual case: the stored key is already normal
	scratch = render(scratch, r)
	nline := len(scratch) - nkey

	size := len(r.Key) + nline
	if !same {
		size += nkey
	}
	buf := sl.bytes(size)[:0]
	buf = append(buf, r.Key...)
	if !same {
		buf = append(buf, scratch[:nkey]...)
	}
	buf = append(buf, scratch[nkey:]...)

	e := sl.entry()
	e.canon = unsafe.String(unsafe.SliceData(buf), len(r.Key))
	e.key = e.canon
	if !same {
		e.key = unsafe.String(unsafe.SliceData(buf[len(r.Key):]), nkey)
	}
	e.line = buf[size-nline : size : size]
	e.cost = int64(size) + entryOverhead
	return e, scratch
}

// Slab sizes: a block of entries (80 KiB) and a block of their bytes.
const (
	slabEntries = 1024
	slabBytes   = 64 << 10
)

// slab hands out entries and their bytes from large blocks, for a full build of a table
// (the first load, a Reload). A garbage collection marks a million entries scattered over
// the heap far more slowly than the same entries packed side by side: the collector's
// cost is dominated by cache misses, not by the number of pointers (BenchmarkWarm1M's
// gc-ms). The price is retention: a block lives while any entry in it does, so once rows
// have changed since the build, the replaced entries' blocks can stay alive beside the
// new entries, which are allocated one by one. That bounds a table at about twice its
// built size until the next full build. A nil *slab allocates from the heap. A slab is
// used by one goroutine.
type slab struct {
	ents []entry
	buf  []byte
}

// entry returns a zero entry.
func (s *slab) entry() *entry {
	if s == nil {
		return new(entry)
	}
	if len(s.ents) == 0 {
		s.ents = make([]entry, slabEntries)
	}
	e := &s.ents[0]
	s.ents = s.ents[1:]
	return e
}

// bytes returns n zero bytes with no spare capacity. Large requests get their own
// allocation, so that one long row does not waste the rest of a block.
func (s *slab) bytes(n int) []byte {
	if s == nil || n > slabBytes/16 {
		return make([]byte, n)
	}
	if len(s.buf) < n {
		s.buf = make([]byte, slabBytes)
	}
	b := s.buf[:n:n]
	s.buf = s.buf[n:]
	return b
}
