package cache

import (
	"encoding/binary"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// entryOverhead is the fixed part of an entry's cost, in bytes: the entry struct (48
// bytes), its slot in its bucket (24), and its share of ristretto's stored item, sharded-map
// slot and key-cost slot (about 200 bytes an item, five or more entries an item once the
// table holds a million rows in the default budget). The record is charged at its size.
// The counters of ristretto's admission sketch are sized by the budget and not charged to
// entries. BenchmarkWarm1M compares the cost with the heap an entry takes.
const entryOverhead = 112

// entry is what the cache holds for one normalised key.
//
// Its record (rec) is immutable once the entry is stored: Lookup reads it without locks,
// through the bucket's slot and without touching the entry, and hands out the line and the
// stored key without copying; a change of the row stores a new entry. The other fields are
// the loader's bookkeeping (which group the entry belongs to, its checksum, when it was
// written); Lookup never reads them, and they change only under table.mu.
type entry struct {
	rec          *byte  // the record: see newEntry
	grp          *group // the group the entry belongs to (see table); nil once removed
	gprev, gnext *entry // neighbours in grp's list
	stamp        uint64 // table epoch of the entry's last write
	sum          uint32 // Row.Sum of the row it holds
	cost         int32  // this entry's own cost (the ristretto item's cost is the bucket's sum)
}

// The record of an entry is one allocation: a flags byte, three uvarints (the lengths of
// the stored key, of the normalised key or 0 when it is the stored key, and of the line),
// then the stored key, the normalised key when it differs, the line, and for a read-through
// fill (flag recExpires) when it stops being an answer: Unix nanoseconds of Config.Now,
// little-endian, 0 for never. Lookup compares the key and answers with the line in one
// read of memory, where a struct with three fields pointing elsewhere costs three when the
// table is far larger than the CPU's caches.
const recExpires = 1 // flag: the record ends with an expiry (a read-through fill)

// recordLengths returns the flags and the lengths of the record at r, and the offset of
// its stored key.
func recordLengths(r *byte) (flags byte, cl, kl, ll, off int) {
	flags = *r
	// A record is at least four bytes long, and its lengths are nearly always one byte each.
	p := unsafe.Pointer(r)
	cl, kl, ll = int(*(*byte)(unsafe.Add(p, 1))), int(*(*byte)(unsafe.Add(p, 2))), int(*(*byte)(unsafe.Add(p, 3)))
	off = 4
	if (cl|kl|ll)&0x80 != 0 {
		cl, off = recUvarint(r, 1)
		kl, off = recUvarint(r, off)
		ll, off = recUvarint(r, off)
	}
	return flags, cl, kl, ll, off
}

// recordExpiry returns where the expiry of the record at r sits, if it has one.
func recordExpiry(r *byte) (*[8]byte, bool) {
	flags, cl, kl, ll, off := recordLengths(r)
	if flags&recExpires == 0 {
		return nil, false
	}
	return (*[8]byte)(unsafe.Add(unsafe.Pointer(r), off+cl+kl+ll)), true
}

// recordExpires is when the record at r stops being an answer; 0 for never.
func recordExpires(r *byte) int64 {
	if x, ok := recordExpiry(r); ok {
		return int64(binary.LittleEndian.Uint64(x[:]))
	}
	return 0
}

// readRecord returns the parts of the record at r. It allocates nothing.
func readRecord(r *byte) (flags byte, canon, key string, line []byte) {
	flags, cl, kl, ll, off := recordLengths(r)
	// A part of length 0 may sit at the record's end: no pointer is made past it.
	if cl != 0 {
		canon = unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(r), off)), cl)
		off += cl
	}
	key = canon
	if kl != 0 {
		key = unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(r), off)), kl)
		off += kl
	}
	if ll != 0 {
		line = unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(r), off)), ll)
	}
	return flags, canon, key, line
}

// recUvarint reads the uvarint at r+off and returns it and the offset after it.
func recUvarint(r *byte, off int) (v, next int) {
	for shift := 0; ; shift += 7 {
		b := *(*byte)(unsafe.Add(unsafe.Pointer(r), off))
		off++
		v |= int(b&0x7f) << shift
		if b < 0x80 {
			return v, off
		}
	}
}

// recordKey is the normalised key in the record at r.
func recordKey(r *byte) string { _, _, k, _ := readRecord(r); return k }

// key is the normalised key (AppendKey of the row's key).
func (e *entry) key() string { return recordKey(e.rec) }

// canon is the key as stored in the source, named in replies.
func (e *entry) canon() string { _, c, _, _ := readRecord(e.rec); return c }

// line is the rendered reply line.
func (e *entry) line() []byte { _, _, _, l := readRecord(e.rec); return l }

// slot is an entry in a bucket, with the hash of its key and its record, so that Lookup
// reads the record without the entry.
type slot struct {
	h   uint64
	rec *byte
	e   *entry
}

// bucket is what ristretto holds under one bucket number (table.bucketOf): the entries
// whose key hashes fall into it, sorted by hash. Many entries share one ristretto item,
// because ristretto spends about 200 bytes on an item whatever it holds. A bucket is
// immutable once stored: a write stores a new one, and the entries it keeps are shared,
// not copied. Entries whose normalised keys share a 64-bit hash (astronomically rare) sit
// side by side; Lookup compares the key, so a collision never answers for the wrong key.
type bucket []slot

// search returns the index of the first slot with a hash not below h, in a bucket of a
// table whose bucket numbers are the hashes' top 64-shift bits (table.shift). Below those
// bits the hashes of a bucket spread evenly, so the bits of h below them place it: the
// search reads the slot there and steps to its neighbours: mostly one read of memory, where
// a binary search makes log2(len(b)) dependent ones, each a cache miss when the table is far
// larger than the CPU's caches. Buckets are short (perBucket), so the steps are few; any
// distribution of hashes gives the right index, only in more steps.
func (b bucket) search(h uint64, shift uint8) int {
	n := len(b)
	if n == 0 {
		return 0
	}
	frac := h << (64 - shift) // h's bits below the bucket number, a fraction of 2^64
	i := int((frac >> 32) * uint64(n) >> 32)
	for i > 0 && b[i-1].h >= h {
		i--
	}
	for i < n && b[i].h < h {
		i++
	}
	return i
}

// match returns the slot for key, whose hash is h, or nil. It reads the slots' records,
// not their entries.
func (b bucket) match(h uint64, key []byte, shift uint8) *slot {
	for i := b.search(h, shift); i < len(b) && b[i].h == h; i++ {
		if recordKey(b[i].rec) == string(key) { // a comparison, no conversion
			return &b[i]
		}
	}
	return nil
}

// findString returns the entry for key, whose hash is h, or nil.
func (b bucket) findString(h uint64, key string, shift uint8) *entry {
	if s := b.match(h, unsafe.Slice(unsafe.StringData(key), len(key)), shift); s != nil {
		return s.e
	}
	return nil
}

// has reports whether b holds the entry e, whose key's hash is h.
func (b bucket) has(h uint64, e *entry, shift uint8) bool {
	for i := b.search(h, shift); i < len(b) && b[i].h == h; i++ {
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

// held returns b without the entries that belong to no group (held no longer: evicted
// or refused, see table): b itself when every entry belongs to one, nil when none does.
// b is not modified.
func (b bucket) held() bucket {
	for i, s := range b {
		if s.e.grp != nil {
			continue
		}
		nb := append(make(bucket, 0, len(b)-1), b[:i]...)
		for _, s := range b[i+1:] {
			if s.e.grp != nil {
				nb = append(nb, s)
			}
		}
		if len(nb) == 0 {
			return nil
		}
		return nb
	}
	return b
}

// with returns a new bucket: b without the entry for key (hash h), plus e unless e is
// nil. With prune, entries that belong to no group (held no longer: evicted or refused, in
// an incomplete table) are left out too; it reads every entry, which without it only the
// slots are. b is not modified; nil if nothing is left.
func (b bucket) with(h uint64, key string, e *entry, prune bool) bucket {
	n := len(b)
	if e != nil {
		n++
	}
	nb := make(bucket, 0, n)
	for _, s := range b {
		if e != nil && s.h > h {
			nb = append(nb, slot{h, e.rec, e})
			e = nil
		}
		if (s.h == h && recordKey(s.rec) == key) || (prune && s.e.grp == nil) {
			continue
		}
		nb = append(nb, s)
	}
	if e != nil {
		nb = append(nb, slot{h, e.rec, e})
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
	if e == nil {
		return false
	}
	_, canon, _, line := readRecord(e.rec)
	return canon == p.canon && string(line) == string(p.line)
}

// keyLen is the length of the normalised key in the record holding p: 0 when it is the
// stored key (the usual case: the stored key is already normal), which the record then
// holds once.
func (p *prepared) keyLen() int {
	if string(p.key) == p.canon {
		return 0
	}
	return len(p.key)
}

// recordSize is the size of the record holding p (see newEntry).
func (p *prepared) recordSize() int {
	kl := p.keyLen()
	return 1 + uvarintLen(len(p.canon)) + uvarintLen(kl) + uvarintLen(len(p.line)) + len(p.canon) + kl + len(p.line)
}

// uvarintLen is the length of v as a uvarint.
func uvarintLen(v int) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// cost is the cost of an entry holding p (see newEntry).
func (p *prepared) cost() int64 { return int64(p.recordSize() + entryOverhead) }

// newEntry returns an entry holding p.
//
// The entry's record is one allocation, sized exactly (see recordLengths). An entry is thus
// two heap objects (itself and its record), and it keeps nothing of the row or of p alive.
func newEntry(p *prepared) *entry { return newEntryExpiring(p, false) }

// newFillEntry returns an entry holding p, read through for a miss: its record has room
// for an expiry (setExpires), none until then.
func newFillEntry(p *prepared) *entry { return newEntryExpiring(p, true) }

func newEntryExpiring(p *prepared, expiring bool) *entry {
	kl := p.keyLen()
	size := p.recordSize()
	var flags byte
	if expiring {
		size += 8
		flags |= recExpires
	}
	rec := make([]byte, 1, size)
	rec[0] = flags
	rec = binary.AppendUvarint(rec, uint64(len(p.canon)))
	rec = binary.AppendUvarint(rec, uint64(kl))
	rec = binary.AppendUvarint(rec, uint64(len(p.line)))
	rec = append(rec, p.canon...)
	if kl != 0 {
		rec = append(rec, p.key...)
	}
	rec = append(rec, p.line...)
	if expiring {
		rec = binary.LittleEndian.AppendUint64(rec, 0)
	}
	return &entry{rec: unsafe.SliceData(rec), sum: p.sum, cost: int32(size + entryOverhead)}
}

// setExpires makes e, a fill not yet stored (newFillEntry), stop answering at expires.
func (e *entry) setExpires(expires int64) {
	x, ok := recordExpiry(e.rec)
	if !ok {
		panic("cache: setExpires of an entry not made by newFillEntry")
	}
	binary.LittleEndian.PutUint64(x[:], uint64(expires))
}

// expires is when e stops being an answer (a read-through fill); 0 for never.
func (e *entry) expires() int64 { return recordExpires(e.rec) }

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
