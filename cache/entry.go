package cache

import (
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// entryOverhead is the fixed part of an entry's cost, in bytes: the entry struct (112
// bytes), ristretto's stored item and its slot in the sharded map (about 60), and the
// policy's key-cost slot (about 20). The counters of ristretto's admission sketch are sized
// by the budget and not charged to entries.
const entryOverhead = 192

// entry is what the cache holds for one normalised key.
//
// key, canon, line and next are immutable once the entry is stored: Lookup reads them
// without locks and hands out line and canon without copying, and a change of the row
// stores a new entry. The other fields are the loader's bookkeeping (which group the entry
// belongs to, its checksum, when it was written); Lookup never reads them, and they change
// only under table.mu.
type entry struct {
	key   string // normalised key (AppendKey of the row's key)
	canon string // the key as stored in the source, named in replies
	line  []byte // rendered reply line
	// next chains entries whose normalised keys share a 64-bit hash. Such collisions are
	// astronomically rare, but chaining keeps the cache complete and correct when one happens.
	next *entry

	grp          *group // the group the entry belongs to (see table); nil once removed
	gprev, gnext *entry // neighbours in grp's list
	stamp        uint64 // table epoch of the entry's last write
	sum          uint32 // Row.Sum of the row it holds
	cost         int32  // this entry's own cost (the ristretto item's cost is the chain's sum)
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
		n += int64(e.cost)
	}
	return n
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

// replace puts e, which belongs to no group, in old's place in old's group.
func (g *group) replace(old, e *entry) {
	e.grp, e.gprev, e.gnext = g, old.gprev, old.gnext
	if e.gprev != nil {
		e.gprev.gnext = e
	} else {
		g.head = e
	}
	if e.gnext != nil {
		e.gnext.gprev = e
	}
	old.grp, old.gprev, old.gnext = nil, nil, nil
}

// without returns the chain starting at e minus the entry for key. Entries are immutable,
// so the kept ones are copied and the copies take their originals' places in their
// groups; in the usual one-entry chain nothing is copied. The caller holds table.mu.
func without(e *entry, key string) *entry {
	var head *entry
	for ; e != nil; e = e.next {
		if e.key == key {
			continue
		}
		kept := *e
		kept.next = head
		kept.grp, kept.gprev, kept.gnext = nil, nil, nil
		if e.grp != nil {
			e.grp.replace(e, &kept)
		}
		head = &kept
	}
	return head
}
