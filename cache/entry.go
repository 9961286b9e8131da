package cache

import (
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// entryOverhead is the fixed part of an entry's cost, in bytes: the entry struct (112
// bytes), its slot in its bucket (16), and its share of ristretto's stored item, sharded-map
// slot and key-cost slot (about 200 bytes an item, a few entries an item). The counters of
// ristretto's admission sketch are sized by the budget and not charged to entries.
const entryOverhead = 192

// entry is what the cache holds for one normalised key.
//
// key, canon and line are immutable once the entry is stored: Lookup reads them without
// locks and hands out line and canon without copying, and a change of the row stores a new
// entry. expires too is fixed before the entry is stored. The other fields are the
// loader's bookkeeping (which group the entry belongs to, its checksum, when it was
// written); Lookup never reads them, and they change only under table.mu.
type entry struct {
	key   string // normalised key (AppendKey of the row's key)
	canon string // the key as stored in the source, named in replies
	line  []byte // rendered reply line
	// expires is when a read-through fill stops being an answer (Unix nanoseconds of
	// Config.Now); 0 for every other entry, which holds until changed or evicted.
	expires int64

	grp          *group // the group the entry belongs to (see table); nil once removed
	gprev, gnext *entry // neighbours in grp's list
	stamp        uint64 // table epoch of the entry's last write
	sum          uint32 // Row.Sum of the row it holds
	cost         int32  // this entry's own cost (the ristretto item's cost is the bucket's sum)
}

// slot is an entry in a bucket, with the hash of its key.
type slot struct {
	h uint64
	e *entry
}

// bucket is what ristretto holds under one bucket number (table.bucketOf): the entries
// whose key hashes fall into it, sorted by hash. Many entries share one ristretto item,
// because ristretto spends about 200 bytes on an item whatever it holds. A bucket is
// immutable once stored: a write stores a new one, and the entries it keeps are shared,
// not copied. Entries whose normalised keys share a 64-bit hash (astronomically rare) sit
// side by side; Lookup compares the key, so a collision never answers for the wrong key.
type bucket []slot

// search returns the index of the first slot with a hash not below h.
func (b bucket) search(h uint64) int {
	lo, hi := 0, len(b)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if b[m].h < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// find returns the entry for key, whose hash is h, or nil.
func (b bucket) find(h uint64, key []byte) *entry {
	for i := b.search(h); i < len(b) && b[i].h == h; i++ {
		if b[i].e.key == string(key) { // compiles to a comparison, no conversion
			return b[i].e
		}
	}
	return nil
}

// findString is find for a string key.
func (b bucket) findString(h uint64, key string) *entry {
	for i := b.search(h); i < len(b) && b[i].h == h; i++ {
		if b[i].e.key == key {
			return b[i].e
		}
	}
	return nil
}

// has reports whether b holds the entry e, whose key's hash is h.
func (b bucket) has(h uint64, e *entry) bool {
	for i := b.search(h); i < len(b) && b[i].h == h; i++ {
		if b[i].e == e {
			return true
		}
	}
	return false
}

// cost is the cost of the ristretto item holding b.
func (b bucket) cost() int64 {
	var n int64
	for _, s := range b {
		n += int64(s.e.cost)
	}
	return n
}

// with returns a new bucket: b without the entry for key (hash h) and without entries
// that belong to no group (held no longer: evicted or refused, see table), plus e unless e
// is nil. b is not modified; nil if nothing is left.
func (b bucket) with(h uint64, key string, e *entry) bucket {
	n := len(b)
	if e != nil {
		n++
	}
	nb := make(bucket, 0, n)
	for _, s := range b {
		if e != nil && s.h > h {
			nb = append(nb, slot{h, e})
			e = nil
		}
		if (s.h == h && s.e.key == key) || s.e.grp == nil {
			continue
		}
		nb = append(nb, s)
	}
	if e != nil {
		nb = append(nb, slot{h, e})
	}
	if len(nb) == 0 {
		return nil
	}
	return nb
}

// same reports whether a and b are the same stored bucket (not merely equal).
func same(a, b bucket) bool {
	return len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
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

// prepared is a source row as the table compares and stores it: its normalised key, the
// rendered line and the checksum, built in a scratch buffer that the one goroutine owning
// it reuses, so that comparing a row with the entry already held allocates nothing. Only
// a row that changed is copied into an entry of its own (newEntry).
type prepared struct {
	canon string // Row.Key as delivered; not kept unless copied by newEntry
	key   []byte // normalised key, in buf
	line  []byte // rendered line, in buf
	sum   uint32
	buf   []byte
}

// prepare fills p from r with render. p's slices are valid until the next call.
func (p *prepared) prepare(r Row, render func([]byte, Row) []byte) {
	// AppendKey only reads its input, so the row's key is viewed, not copied.
	p.buf = AppendKey(p.buf[:0], unsafe.Slice(unsafe.StringData(r.Key), len(r.Key)))
	nkey := len(p.buf)
	p.buf = render(p.buf, r)
	p.canon = r.Key
	p.key = p.buf[:nkey:nkey]
	p.line = p.buf[nkey:]
	p.sum = r.Sum
	if p.sum == 0 {
		p.sum = RowSum(r.Key, r.Values)
	}
}

// holds reports whether e already holds the row p: same stored key and same line. The
// checksum may still differ (a value column the template does not show changed).
func (p *prepared) holds(e *entry) bool {
	return e != nil && e.canon == p.canon && string(e.line) == string(p.line)
}

// cost is the cost of an entry holding p (see newEntry).
func (p *prepared) cost() int64 {
	n := len(p.canon) + len(p.line)
	if string(p.key) != p.canon {
		n += len(p.key)
	}
	return int64(n + entryOverhead)
}

// newEntry returns an entry holding p.
//
// The entry's strings and line share one allocation, sized exactly: the key as stored,
// the normalised key when it differs, then the line. An entry is thus two heap objects
// (itself and its bytes), and it keeps nothing of the row or of p alive.
func newEntry(p *prepared) *entry {
	same := string(p.key) == p.canon // the usual case: the stored key is already normal
	size := len(p.canon) + len(p.line)
	if !same {
		size += len(p.key)
	}
	buf := make([]byte, 0, size)
	buf = append(buf, p.canon...)
	if !same {
		buf = append(buf, p.key...)
	}
	buf = append(buf, p.line...)

	e := &entry{sum: p.sum, cost: int32(size + entryOverhead)}
	e.canon = unsafe.String(unsafe.SliceData(buf), len(p.canon))
	e.key = e.canon
	if !same {
		e.key = unsafe.String(unsafe.SliceData(buf[len(p.canon):]), len(p.key))
	}
	e.line = buf[size-len(p.line) : size : size]
	return e
}

// group is a list of entries threaded through the entries themselves (so that moving an
// entry between groups allocates nothing): one key range of the source, the entries no
// range holds yet, or the read-through fills. See table for what each holds.
type group struct {
	// KeyRange bounds a key range (ranged only).
	KeyRange
	// sum is what the loader has learned of the source's rows in the range (ranged only):
	// the RangeSum of the rows the last snapshot or re-read delivered for it, moved by
	// the changes applied since. It is compared with RangeSource.Checksum.
	sum RangeSum
	// dirty marks a range whose sum cannot be trusted (a re-read of it failed half-way):
	// reconcile re-reads it without comparing.
	dirty  bool
	ranged bool
	head   *entry
	n      int
}

// link adds e, which belongs to no group, to g.
func (g *group) link(e *entry) {
	e.grp, e.gprev, e.gnext = g, nil, g.head
	if g.head != nil {
		g.head.gprev = e
	}
	g.head = e
	g.n++
}

// unlink removes e from its group (g).
func (g *group) unlink(e *entry) {
	if e.gprev != nil {
		e.gprev.gnext = e.gnext
	} else {
		g.head = e.gnext
	}
	if e.gnext != nil {
		e.gnext.gprev = e.gprev
	}
	e.grp, e.gprev, e.gnext = nil, nil, nil
	g.n--
}
