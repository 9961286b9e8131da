package cache

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"wxlookup/internal/readers"
)

const (
	// flushEvery is how many writes a table accepts before it waits for ristretto to apply
	// them and verifies them. It stays well under ristretto's 32 Ki set buffer, so a batch
	// rarely overflows it, and keeps the verification set small.
	flushEvery = 8192
	// setAttempts is how often a dropped Set is retried at once (after a Wait that drains
	// ristretto's set buffer) before it is left to verification.
	setAttempts = 3
	// verifyRounds is how many rounds of re-writes verification tries before it gives up
	// and declares the table incomplete.
	verifyRounds = 10
	// headroomDiv sets the headroom of a complete table: ristretto's MaxCost is the budget
	// plus budget/headroomDiv, so a table whose rows fit the budget never makes ristretto
	// evict or consult its admission policy.
	headroomDiv = 4
	// maxNegatives bounds the read-through "not found" answers a table remembers.
	maxNegatives = 1 << 16
	// perBucket bounds how many entries a bucket holds, on average, when the rows fill the
	// budget at the fixed overhead alone: between half of it and it, as the number of
	// buckets is a power of two; fewer when the table holds less (about 8 for 1M rows in the
	// default budget). A write copies its bucket; ristretto spends about 200 bytes a bucket.
	// minBucketBits and maxBucketBits bound the number of buckets.
	perBucket                    = 64
	minBucketBits, maxBucketBits = 10, 24
	// reofferScan bounds the entries one flush round looks at for buckets to offer anew
	// (reofferLocked).
	reofferScan = 4096
)

// counters are the cache-wide counters that the table updates.
type counters struct {
	setsDropped atomic.Uint64 // ristretto Sets that returned false (each retried)
	setRetries  atomic.Uint64 // entries re-written because verification did not find them
	evictions   atomic.Uint64 // rows ristretto evicted (incomplete tables only)
}

// table is the one ristretto cache a Cache reads, and the loader's bookkeeping beside it.
// Lookup reads it without locks; every writer (the loader, read-through fills) holds mu,
// and every change of what it holds goes through putLocked, the one write path. These
// invariants hold whenever mu is free:
//
//  1. Readers see, for each bucket (bucketOf), an immutable bucket of entries. A write
//     replaces the bucket; a key held before a write and not deleted by it is found
//     throughout, with its old or its new line.
//  2. Every entry held belongs to exactly one group: a key range of the source (ranges,
//     or the stale groups of an earlier snapshot until the next one sweeps them), the
//     untagged entries (rows that arrived as changes for keys no range holds yet), or the
//     read-through fills. An entry not held belongs to none. In an incomplete table an
//     entry ristretto evicted or refused leaves its group at the next flush (and the next
//     write of its bucket leaves it out).
//  3. entries and bytes count the entries in groups and their cost.
//  4. While complete, every row the source had at the last write is held: writes are
//     verified (flush), so a miss is a definitive "not found". complete only turns true at
//     the end of a snapshot that held every row it delivered (Cache.load).
//  5. A range's sum is the RangeSum of the source's rows in it as the loader last learned
//     them (snapshot, re-read, changes); each entry's sum is its row's Row.Sum.
//  6. epoch grows with every write; an entry's stamp is the epoch of its last write, and a
//     read-through fill is only stored if epoch has not moved since its query began.
//  7. sugg, the "did you mean" index, holds the normalised key of every entry in a group
//     and no other key (didyoumean.go): a write that makes the table hold a key adds it, a
//     write that deletes it removes it, and so does taking an entry ristretto lost or
//     evicted out of its group. (Between flushes an incomplete table may briefly index a
//     key whose entry ristretto has just evicted; Cache.Suggest skips it.)
type table struct {
	rc     *ristretto.Cache[uint64, bucket]
	stats  *counters
	budget int64 // Config.MaxBytes
	// shift makes a key hash its bucket number (bucketOf): the top bits of the hash.
	shift uint8

	complete atomic.Bool
	entries  atomic.Int64
	bytes    atomic.Int64
	epoch    atomic.Uint64
	sugg     *suggester // invariant 7; its bytes count against the budget (room)
	// overBudget is called (under mu) when a complete table's rows outgrow the budget.
	overBudget func(t *table)
	// hash is hashKeyString; tests replace it to force collisions. Lookup computes the hash
	// it passes to get with hashKey, which must agree.
	hash func(string) uint64
	// fillTTL is how long a read-through fill is an answer (0: until changed or evicted);
	// now is the clock it is measured by (Config.Now).
	fillTTL time.Duration
	now     func() time.Time
	// fillSweep is when fill next removes the fills that expired (Unix nanoseconds).
	fillSweep int64

	mu sync.Mutex
	// pending holds the bucket each bucket number written since the last flush must hold
	// (nil: must be absent), so that flush can re-write what ristretto lost.
	pending map[uint64]bucket
	// deleted holds the buckets deleted since ristretto last applied its buffer (delLocked).
	deleted   map[uint64]struct{}
	unflushed int
	flushErr  error // a verification error of an automatic flush, for the next flush
	// The groups (invariant 2); see reload.go and reconcile.go for how they change.
	ranges   []*group // the key ranges, in key order; nil from a snapshot's start to its end
	stale    []*group // ranges and untagged of earlier snapshots, swept by the next one
	untagged *group
	fills    *group
	// loading is set while a snapshot streams into the table (Cache.load); evictedLoad
	// records that ristretto evicted an entry meanwhile.
	loading, evictedLoad bool
	// held is the entries held when the snapshot streaming in began, in the order it
	// will likely deliver their rows (see heldCursor); nil outside a load, and for a load
	// into an incomplete table.
	held *heldCursor
	// set is rc.Set; tests replace it to drop or lose writes.
	set func(b uint64, v bucket, cost int64) bool

	// lost and evicted are what ristretto reported from its own goroutine (callbacks):
	// bucket numbers whose write it refused (a dropped Set, or its policy rejecting an
	// item), and buckets it evicted. flush takes them. Lock order: mu, then lostMu.
	lostMu  sync.Mutex
	lost    []uint64
	evicted []bucket

	// negatives remembers, in an incomplete table, the keys a read-through found absent and
	// until when (Config.Now, Unix nanoseconds). They are kept out of ristretto, whose
	// admission policy would reject most of them once the table is full. A loader write of
	// a key removes it. Lock order: mu, then negMu; Lookup takes only negMu.
	negMu     sync.RWMutex
	negatives map[string]int64

	readers readers.Count // the Lookups inside the table (Cache.acquire)
}

// newTable returns an empty, incomplete table for a budget of budget bytes.
//
// The number of buckets is fixed for the table's life: a power of two that puts at most
// about perBucket entries in a bucket when the rows fill the budget at the fixed overhead
// alone.
// ristretto's admission counters are sized at ten a bucket, as its documentation advises
// for the items it holds (the admission policy only matters once the table is incomplete
// and full).
func newTable(budget int64, stats *counters) (*table, error) {
	bits := uint8(minBucketBits)
	for bits < maxBucketBits && budget/entryOverhead/perBucket > 1<<bits {
		bits++
	}
	t := &table{
		stats:     stats,
		budget:    budget,
		shift:     64 - bits,
		pending:   make(map[uint64]bucket),
		deleted:   make(map[uint64]struct{}),
		negatives: make(map[string]int64),
		untagged:  new(group),
		fills:     new(group),
		hash:      hashKeyString,
		now:       time.Now,
		sugg:      newSuggester(),
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, bucket]{
		NumCounters:        10 << bits,
		MaxCost:            budget,
		BufferItems:        64,
		IgnoreInternalCost: true, // entry costs include entryOverhead
		// Keys are bucket numbers; the entry's key is verified on lookup.
		KeyToHash: func(b uint64) (uint64, uint64) { return b, 0 },
		OnEvict:   t.onEvict,
		OnReject:  t.onReject,
	})
	if err != nil {
		return nil, fmt.Errorf("cache: new ristretto cache: %w", err)
	}
	t.rc = rc
	t.set = rc.Set
	return t, nil
}

// bucketOf is the number of the bucket that holds the keys whose hash is h.
func (t *table) bucketOf(h uint64) uint64 { return h >> t.shift }

// answer returns the line and the stored key of the entry for the normalised key with hash
// h (Lookup, Suggest), read from its record without touching the entry; ok is false when
// there is none, or it is a read-through fill that has expired. Safe for concurrent use
// with writers; the caller must hold the table (Cache.acquire).
func (t *table) answer(h uint64, key []byte) (line []byte, canon string, ok bool) {
	b, _ := t.rc.Get(t.bucketOf(h))
	s := b.match(h, key, t.shift)
	if s == nil {
		return nil, "", false
	}
	flags, canon, _, line := readRecord(s.rec)
	if flags&recExpires != 0 && !t.live(s) {
		return nil, "", false
	}
	return line, canon, true
}

// live reports whether the entry of slot s answers: any entry but a read-through fill
// that has expired. The clock is read only for fills.
func (t *table) live(s *slot) bool {
	if *s.rec&recExpires == 0 {
		return true
	}
	exp := recordExpires(s.rec)
	return exp == 0 || t.now().UnixNano() < exp
}

// upsert stores the row p, the loader's write of a row that exists in the source, and
// reports whether the table holds it afterwards and its cost.
//
// With g non-nil (a snapshot or a range re-read delivered p), the entry joins g and g's
// sum counts p. A row the table does not hold yet is left out, when the table is
// incomplete, if it would exceed the budget (g's sum still counts it: the source has it).
// With g nil (a change), the row stays in the key range of the entry it replaces, whose
// sum moves by the difference, if that entry held the same stored key; otherwise it joins
// the untagged entries.
//
// A row identical to the entry held (same stored key, same line) keeps that entry: only its
// group and checksum change. So a snapshot allocates only for rows that changed, and the
// overlap window's re-deliveries do not churn ristretto or void read-through fills. A
// read-through fill is written again all the same, to hold it without its expiry.
func (t *table) upsert(p *prepared, g *group) (held bool, cost int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if g != nil {
		g.sum = g.sum.Add(p.sum, 1)
	}
	key := unsafe.String(unsafe.SliceData(p.key), len(p.key)) // valid while p is unchanged
	h := t.hash(key)
	// A snapshot's row into a complete table (whose entries ristretto never evicts) finds
	// its entry with the load's cursor, without a probe of ristretto's map.
	cursor := g != nil && t.held != nil && t.complete.Load()
	var old *entry
	if cursor {
		old = t.held.find(key)
	}
	if old == nil {
		old = t.heldLocked(h, key)
		if old != nil && cursor {
			t.held.skipTo(old)
		}
	}
	e := old
	if !p.holds(old) || old.grp == t.fills {
		e = nil
		cost = p.cost()
		if old == nil && g != nil && !t.complete.Load() && t.bytes.Load()+cost > t.room() {
			return false, cost
		}
	}
	dest := g
	if g == nil {
		dest = t.untagged
		if old != nil && old.canon() == p.canon && old.grp != nil && old.grp.ranged {
			dest = old.grp
			dest.sum = dest.sum.Add(old.sum, -1).Add(p.sum, 1)
		}
	}
	if e != nil {
		e.sum = p.sum
		t.putLocked(h, key, old, e, dest)
		return true, int64(e.cost)
	}
	t.putLocked(h, key, old, newEntry(p), dest)
	return true, cost
}

// remove deletes the row the source deleted: the entry for the normalised key, if it
// holds the stored key canon (another stored spelling of the same normalised key is
// another row, still there). It reports whether an entry was removed.
func (t *table) remove(key []byte, canon string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := unsafe.String(unsafe.SliceData(key), len(key))
	h := t.hash(k)
	old := t.heldLocked(h, k)
	if old == nil || old.canon() != canon {
		return false
	}
	if old.grp != nil && old.grp.ranged {
		old.grp.sum = old.grp.sum.Add(old.sum, -1)
	}
	t.putLocked(h, k, old, nil, nil)
	return true
}

// removeLocked deletes e from the table, and in any case from its group. Range sums are
// the caller's business.
func (t *table) removeLocked(e *entry) {
	h := t.hash(e.key())
	if t.heldLocked(h, e.key()) == e {
		t.putLocked(h, e.key(), e, nil, nil)
		return
	}
	if e.grp != nil { // not held (evicted or refused, not yet flushed)
		t.unlinkLocked(e)
	}
}

// moveLocked moves e, an entry held, to group g without writing it.
func (t *table) moveLocked(e *entry, g *group) {
	switch e.grp {
	case g:
	case nil: // not expected of an entry held; keep invariants 2 and 3 anyway
		t.linkLocked(e, g)
	default:
		e.grp.unlink(e)
		g.link(e)
	}
}

// putLocked is the table's one write path (invariants in table's doc): it makes e the
// entry held for key (whose hash is h) in place of old, the entry held for it now or nil,
// and puts e in group g. e nil deletes old; e == old keeps the entry and only moves it to
// g (no write: readers see no change).
func (t *table) putLocked(h uint64, key string, old, e *entry, g *group) {
	if e != nil && e == old {
		t.moveLocked(e, g)
		return
	}
	b := t.bucketOf(h)
	stamp := t.epoch.Add(1)
	if e != nil {
		e.stamp = stamp
	}
	// The suggester first: an incomplete table's room shrinks as it grows, and ristretto
	// must weigh the write against the room that is left after it.
	t.indexLocked(key, old, e)
	// A complete table has evicted nothing; a table that has, turned incomplete (flush).
	cur := t.currentLocked(b)
	v := cur.with(h, key, e, !t.complete.Load())
	t.writeLocked(b, v)
	if old != nil && old.grp != nil {
		t.unlinkLocked(old)
	}
	if e != nil {
		t.linkLocked(e, g)
	}
	if cur != nil && v != nil && !t.complete.Load() && t.bytes.Load() > t.room() && v.cost() > cur.cost() {
		// ristretto evicts to admit a new item, never for an update that makes one larger.
		// So when a bucket grows in an incomplete table over its room, it is offered anew:
		// the admission policy evicts colder buckets for it, or refuses it (its rows then
		// read through, as any row not held).
		t.delLocked(b)
		t.writeLocked(b, v)
	}
	switch {
	case !t.complete.Load():
		t.forgetAbsentLocked(key)
	case !t.loading && !t.fits(t.bytes.Load()):
		t.goIncompleteLocked()
		if t.overBudget != nil {
			t.overBudget(t)
		}
	}
	if t.unflushed >= flushEvery {
		t.keepFlushErrLocked(t.flushLocked())
	}
}

func (t *table) linkLocked(e *entry, g *group) {
	g.link(e)
	t.entries.Add(1)
	t.bytes.Add(int64(e.cost))
}

func (t *table) unlinkLocked(e *entry) {
	e.grp.unlink(e)
	t.entries.Add(-1)
	t.bytes.Add(-int64(e.cost))
}

// currentLocked returns the bucket numbered b, counting writes not yet verified.
func (t *table) currentLocked(b uint64) bucket {
	if v, ok := t.pending[b]; ok {
		return v
	}
	v, _ := t.rc.Get(b)
	return v
}

// heldLocked returns the entry held for the normalised key with hash h, or nil, counting
// writes not yet verified (and read-through fills, expired or not).
func (t *table) heldLocked(h uint64, key string) *entry {
	return t.currentLocked(t.bucketOf(h)).findString(h, key, t.shift)
}

// writeLocked makes bucket number b hold v (nil: nothing) and records it for
// verification. A Set that ristretto drops (its set buffer is full) is retried after a
// Wait.
func (t *table) writeLocked(b uint64, v bucket) {
	t.pending[b] = v
	t.unflushed++
	if v == nil {
		t.delLocked(b)
		return
	}
	if _, ok := t.deleted[b]; ok {
		t.waitLocked()
	}
	cost := v.cost()
	for i := 1; !t.set(b, v, cost); i++ {
		t.stats.setsDropped.Add(1)
		if i == setAttempts {
			t.lose(b) // flush re-writes it
			return
		}
		t.waitLocked() // the buffer was full: let ristretto drain it
	}
}

// delLocked deletes bucket number b from ristretto (never dropped: Del blocks on the set
// buffer) and notes it for writeLocked.
//
// ristretto deletes from its map at once and again when its goroutine reaches the delete
// in the set buffer. A Set between the two, of a key whose earlier Set that goroutine
// applied meanwhile, finds the key in the map and only updates it; the queued delete then
// removes it, and nothing reports the loss. So a bucket deleted since the last Wait is
// written again only after a Wait (writeLocked).
func (t *table) delLocked(b uint64) {
	t.rc.Del(b)
	t.deleted[b] = struct{}{}
}

// waitLocked waits until ristretto has applied every write and delete so far.
func (t *table) waitLocked() {
	t.rc.Wait()
	clear(t.deleted)
}

// keepFlushErrLocked keeps the error of a flush the loader did not ask for (one after
// flushEvery writes, or a read-through's) for the loader's next flush.
func (t *table) keepFlushErrLocked(err error) {
	if err != nil && t.flushErr == nil {
		t.flushErr = err
	}
}

// lose records that ristretto lost the write of bucket number b.
func (t *table) lose(b uint64) {
	t.lostMu.Lock()
	defer t.lostMu.Unlock()
	t.lost = append(t.lost, b)
}

// flush waits until ristretto has applied every write and makes sure none was lost,
// re-writing those that were; it returns the first verification error since the last
// flush.
//
// How losses are known, without reading every write back: ristretto loses a write in
// exactly three ways, and reports each. (1) Set returns false when its set buffer is full;
// writeLocked retries and records the hash if it keeps failing. (2) Its policy rejects an
// item (OnReject): a new key when an incomplete table is full, or a key Set twice before
// the first was applied. (3) It evicts an item (OnEvict): only when over MaxCost, which a
// complete table's headroom prevents. After Wait every queued item has been applied or
// reported, so the lists are complete. Each lost bucket is read back and re-written unless
// it holds what pending says; in an incomplete table outside a snapshot, a new bucket the
// policy refused is accepted as not held. If writes still fail after verifyRounds, or a
// complete table's entry was evicted, the table turns incomplete (misses then read
// through, so answers stay correct) and an error says so.
func (t *table) flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushLocked()
}

func (t *table) flushLocked() error {
	t.unflushed = 0
	err := t.flushErr
	t.flushErr = nil
	defer clear(t.pending)
	for round := 1; ; round++ {
		t.waitLocked()
		lost, evicted := t.takeLost()
		if e := t.dropEvictedLocked(evicted); e != nil && err == nil {
			err = e
		}
		if len(lost) == 0 {
			if round < verifyRounds && t.reofferLocked() {
				continue
			}
			return err
		}
		if round > verifyRounds {
			if t.complete.Load() {
				t.goIncompleteLocked()
				return errors.Join(err, fmt.Errorf("cache: verify: %d entries still lost after %d rounds; serving as incomplete", len(lost), verifyRounds))
			}
			return err
		}
		verifying := t.complete.Load() || t.loading
		for _, b := range lost {
			want, ok := t.pending[b]
			if !ok {
				continue // reported twice, and resolved
			}
			got, found := t.rc.Get(b)
			switch {
			case found && same(got, want), !found && want == nil:
				continue // it landed, or a later write of the bucket did
			case !found && !verifying:
				// The policy of a full, incomplete table refused a new bucket: not held.
				for _, s := range want {
					if s.e.grp != nil {
						t.unlinkLocked(s.e)
						t.unindexLocked(s.e)
					}
				}
				delete(t.pending, b)
				continue
			}
			t.stats.setRetries.Add(1)
			// Not the entries flush just took out of their groups (evicted meanwhile).
			t.writeLocked(b, want.held())
		}
	}
}

// reofferLocked offers buckets anew when ristretto holds more than an incomplete table's
// room, and reports whether it did; flush then verifies them as any write. ristretto
// evicts only to admit an item, and the room shrinks under it as the suggester grows (it
// may grow as it forgets keys, too): deleting a bucket and offering it again makes the
// admission policy evict colder buckets until it fits, or refuse it (its rows then read
// through, as any row not held); either way ristretto ends up holding less. The buckets
// are those of the entries held first in the fills, the untagged entries and the key
// ranges, as many as hold the excess; at most reofferScan entries are looked at a call.
func (t *table) reofferLocked() bool {
	excess := t.costBytes() - t.rc.MaxCost()
	if t.complete.Load() || t.loading || excess <= 0 {
		return false
	}
	offered := make(map[uint64]bool)
	scanned := 0
	for _, g := range append([]*group{t.fills, t.untagged}, t.ranges...) {
		for e := g.head; e != nil && excess > 0 && scanned < reofferScan; e = e.gnext {
			scanned++
			h := t.hash(e.key())
			b := t.bucketOf(h)
			if offered[b] {
				continue
			}
			if stored, ok := t.rc.Get(b); ok && stored.has(h, e, t.shift) {
				v := t.currentLocked(b).held()
				t.delLocked(b)
				t.writeLocked(b, v)
				excess -= v.cost()
				offered[b] = true
			}
		}
	}
	return len(offered) > 0
}

// takeLost returns and clears what ristretto reported lost or evicted.
func (t *table) takeLost() ([]uint64, []bucket) {
	t.lostMu.Lock()
	defer t.lostMu.Unlock()
	lost, evicted := t.lost, t.evicted
	t.lost, t.evicted = nil, nil
	return lost, evicted
}

// dropEvictedLocked takes the entries of buckets ristretto evicted out of their groups,
// unless a later write of the bucket holds them. An eviction from a complete table makes
// it incomplete.
func (t *table) dropEvictedLocked(evicted []bucket) error {
	var err error
	for _, v := range evicted {
		for _, s := range v {
			e := s.e
			if e.grp == nil {
				continue // replaced or removed since
			}
			if cur, ok := t.rc.Get(t.bucketOf(s.h)); ok && cur.has(s.h, e, t.shift) {
				continue // written again since, and held
			}
			t.unlinkLocked(e)
			t.unindexLocked(e)
			t.stats.evictions.Add(1)
			t.evictedLoad = t.evictedLoad || t.loading
			if t.complete.Load() {
				t.goIncompleteLocked()
				err = errors.New("cache: verify: ristretto evicted an entry of a complete table; serving as incomplete")
			}
		}
	}
	return err
}

// goIncompleteLocked declares the table incomplete: ristretto is held to the room the
// budget leaves beside the suggester (and evicts from now on), and misses read through.
func (t *table) goIncompleteLocked() {
	t.complete.Store(false)
	t.rc.UpdateMaxCost(t.room())
}

// goCompleteLocked declares the table complete, with headroom above the budget.
func (t *table) goCompleteLocked() {
	t.rc.UpdateMaxCost(t.budget + t.budget/headroomDiv)
	t.complete.Store(true)
	t.negMu.Lock()
	clear(t.negatives)
	t.negMu.Unlock()
}

// onEvict is ristretto's eviction callback (on its own goroutine).
func (t *table) onEvict(item *ristretto.Item[bucket]) {
	if t.readers.Retired() {
		return // Close empties the cache through this callback; that is not eviction
	}
	t.lostMu.Lock()
	defer t.lostMu.Unlock()
	t.evicted = append(t.evicted, item.Value)
}

// onReject is ristretto's callback for a Set its policy refused.
func (t *table) onReject(item *ristretto.Item[bucket]) {
	if !t.readers.Retired() {
		t.lose(item.Key)
	}
}

// fill stores the row e read through for a miss, unless a loader write happened since
// since (an epoch read before the source was asked: the answer may predate that write),
// the table is complete, or the key is held meanwhile. It reports whether e was stored.
func (t *table) fill(e *entry, since uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.epoch.Load() != since || t.complete.Load() {
		return false
	}
	now := t.now().UnixNano()
	t.sweepFillsLocked(now)
	h := t.hash(e.key())
	old := t.heldLocked(h, e.key())
	if old != nil {
		if exp := old.expires(); exp == 0 || now < exp {
			return false // held, and answering
		}
	}
	if t.fillTTL > 0 {
		e.setExpires(now + int64(t.fillTTL))
	}
	t.putLocked(h, e.key(), old, e, t.fills)
	// Wait until ristretto applied it (microseconds, against a database round trip), so the
	// next Lookup of the key finds it rather than asking the source again; and take out of
	// their groups the entries it evicted to make room.
	t.keepFlushErrLocked(t.flushLocked())
	return true
}

// sweepFillsLocked removes the read-through fills that have expired, at most once a
// fillTTL. Lookup no longer answers from them; this gives their memory back.
func (t *table) sweepFillsLocked(now int64) {
	if t.fillTTL <= 0 || now < t.fillSweep {
		return
	}
	t.fillSweep = now + int64(t.fillTTL)
	for e := t.fills.head; e != nil; {
		next := e.gnext
		if exp := e.expires(); exp != 0 && now >= exp {
			t.removeLocked(e)
		}
		e = next
	}
}

// fillNegative remembers, in an incomplete table, that a read-through found key absent,
// until expires, unless a loader write happened since since (as fill). At most
// maxNegatives keys are held: when full, expired ones go, and if none has, all.
func (t *table) fillNegative(key string, since uint64, now, expires int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.epoch.Load() != since || t.complete.Load() {
		return false
	}
	t.negMu.Lock()
	defer t.negMu.Unlock()
	if len(t.negatives) >= maxNegatives {
		for k, exp := range t.negatives {
			if exp <= now {
				delete(t.negatives, k)
			}
		}
		if len(t.negatives) >= maxNegatives {
			clear(t.negatives)
		}
	}
	t.negatives[key] = expires
	return true
}

// absent reports whether a read-through found key absent and that answer is still fresh
// at now. Lookup calls it on a miss in an incomplete table; it allocates nothing.
func (t *table) absent(key []byte, now int64) bool {
	t.negMu.RLock()
	exp, ok := t.negatives[string(key)]
	t.negMu.RUnlock()
	return ok && now < exp
}

// forgetAbsentLocked drops a remembered "not found" for key: the loader just wrote it.
func (t *table) forgetAbsentLocked(key string) {
	t.negMu.Lock()
	delete(t.negatives, key)
	t.negMu.Unlock()
}

// costBytes is the cost ristretto holds.
func (t *table) costBytes() int64 { return t.rc.MaxCost() - t.rc.RemainingCost() }
