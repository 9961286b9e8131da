package cache

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
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
	// readerShards is the number of reader counters of a table (see acquire).
	readerShards = 32
	// maxNegatives bounds the read-through "not found" answers a table remembers.
	maxNegatives = 1 << 16
)

// counters are the cache-wide counters that tables update; they survive table swaps.
type counters struct {
	setsDropped atomic.Uint64 // ristretto Sets that returned false (each retried)
	setRetries  atomic.Uint64 // entries re-written because verification did not find them
	evictions   atomic.Uint64 // rows ristretto evicted (incomplete tables only)
}

// table is one ristretto instance and what the loader knows about it. Lookup reads it
// without locks; writers (the loader, read-through fills) serialise on mu. A full reload
// builds a new table and swaps it in; the old one is closed once its readers are gone.
type table struct {
	rc    *ristretto.Cache[uint64, *entry]
	stats *counters
	// budget is Config.MaxBytes.
	budget int64
	// complete reports that every row the source holds is held here, verified; a miss is
	// then a definitive "not found". It only ever goes from true to false.
	complete atomic.Bool
	// entries and bytes count the rows held (negative entries excluded) and their cost.
	// Exact while complete; in an incomplete table evictions make them approximate.
	entries atomic.Int64
	bytes   atomic.Int64
	// epoch is bumped (under mu) by every loader write and at the start of a reconcile
	// scan. Entries are stamped with it; a read-through fill is dropped if it moved.
	epoch atomic.Uint64
	// overBudget is called (under mu) when a complete table's rows outgrow the budget.
	overBudget func(t *table)
	// hash is hashKeyString; tests replace it to force collisions. Lookup computes the hash
	// it passes to get with hashKey, which must agree.
	hash func(string) uint64

	mu sync.Mutex
	// pending holds, while complete, the chain each hash written since the last flush must
	// hold (nil: must be absent), so that flush can re-write what ristretto lost.
	pending   map[uint64]*entry
	unflushed int
	// lost lists, while complete, the hashes whose writes ristretto reported lost: Sets it
	// dropped after every retry, and items its policy rejected or evicted (callbacks on
	// ristretto's goroutine, hence lostMu; lock order mu, then lostMu).
	lostMu sync.Mutex
	lost   []uint64
	// set is rc.SetWithTTL; tests replace it to drop or lose writes.
	set func(h uint64, v *entry, cost int64, ttl time.Duration) bool

	// negatives remembers, in an incomplete table, the keys a read-through found absent and
	// until when (Config.Now, Unix nanoseconds). They are kept out of ristretto, whose
	// admission policy would reject most of them once the table is full. A loader write of
	// a key removes it. Lock order: mu, then negMu; Lookup takes only negMu.
	negMu     sync.RWMutex
	negatives map[string]int64

	readers   [readerShards]readerShard
	retired   atomic.Bool
	drained   chan struct{}
	drainOnce sync.Once
}

// readerShard counts the Lookups inside a table, padded to its own cache line.
type readerShard struct {
	n atomic.Int64
	_ [56]byte
}

// newTable returns an empty table sized for about rows entries. A complete table gets
// headroom above the budget; an incomplete one is capped at the budget and evicts.
func newTable(rows int, complete bool, budget int64, stats *counters) (*table, error) {
	t := &table{
		stats:     stats,
		budget:    budget,
		pending:   make(map[uint64]*entry),
		negatives: make(map[string]int64),
		drained:   make(chan struct{}),
		hash:      hashKeyString,
	}
	maxCost := budget
	if complete {
		maxCost += budget / headroomDiv
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        10 * int64(max(rows, 1000)),
		MaxCost:            maxCost,
		BufferItems:        64,
		IgnoreInternalCost: true, // entry costs include entryOverhead
		// Keys are already xxhash values; the entry's key is verified on lookup.
		KeyToHash: func(h uint64) (uint64, uint64) { return h, 0 },
		OnEvict:   t.onEvict,
		OnReject:  t.onReject,
	})
	if err != nil {
		return nil, fmt.Errorf("cache: new ristretto cache: %w", err)
	}
	t.rc = rc
	t.set = rc.SetWithTTL
	t.complete.Store(complete)
	return t, nil
}

// get returns the entry for the normalised key with hash h, or nil. Safe for concurrent use
// with writers; the caller must hold the table (Cache.acquire).
func (t *table) get(h uint64, key []byte) *entry {
	v, ok := t.rc.Get(h)
	if !ok {
		return nil
	}
	return v.find(key)
}

// put stores e (a row or a negative entry), replacing the entry for its key. It is the
// loader's write: it stamps e with a new epoch. e must not be stored elsewhere.
//
// A row identical to the one held (same key as stored, same line) is not written again:
// the source's overlap window re-delivers recent rows on every refresh, and rewriting them
// would only churn ristretto and void concurrent read-through fills (see fill).
func (t *table) put(e *entry) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hash(e.key)
	if old := t.currentLocked(h).findString(e.key); old != nil && old.canon == e.canon && bytes.Equal(old.line, e.line) {
		return nil
	}
	t.putLocked(e, t.epoch.Add(1), 0)
	return t.maybeFlushLocked()
}

// putNew is put for a fresh table being filled by a snapshot, when h = hash(e.key) is known
// to be written for the first time: it skips looking up what h holds.
func (t *table) putNew(e *entry, h uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.stamp = t.epoch.Add(1)
	t.writeLocked(h, e, 0)
	t.entries.Add(1)
	t.bytes.Add(e.cost)
	return t.maybeFlushLocked()
}

// fill stores the row e for a read-through unless a loader write happened since since (an
// epoch read before the source was asked): the answer may predate that write. It reports
// whether e was stored.
func (t *table) fill(e *entry, since uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.epoch.Load() != since {
		return false
	}
	t.putLocked(e, since, 0)
	// Wait until ristretto applied it (microseconds, against a database round trip), so the
	// next Lookup of the key finds it rather than asking the source again.
	t.rc.Wait()
	return true
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

// putLocked stores e stamped with stamp.
func (t *table) putLocked(e *entry, stamp uint64, ttl time.Duration) {
	h := t.hash(e.key)
	cur := t.currentLocked(h)
	old := cur.findString(e.key)
	e.next = without(cur, e.key)
	e.stamp = stamp
	t.writeLocked(h, e, ttl)
	if !t.complete.Load() {
		t.forgetAbsentLocked(e.key)
	}
	if old != nil {
		t.entries.Add(-1)
		t.bytes.Add(-old.cost)
	}
	t.entries.Add(1)
	t.bytes.Add(e.cost)
	if t.complete.Load() && t.bytes.Load() > t.budget {
		t.goIncompleteLocked()
		if t.overBudget != nil {
			t.overBudget(t)
		}
	}
}

// del removes the row for the normalised key, if held. It is the loader's write.
func (t *table) del(key string) error {
	return t.delIf(key, ^uint64(0))
}

// delIf removes the entry for the normalised key if it was stamped before epoch before:
// reconcile uses it to spare entries written after its scan began.
func (t *table) delIf(key string, before uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hash(key)
	cur := t.currentLocked(h)
	old := cur.findString(key)
	if old == nil || old.stamp >= before {
		return nil
	}
	t.epoch.Add(1)
	t.writeLocked(h, without(cur, key), 0)
	t.entries.Add(-1)
	t.bytes.Add(-old.cost)
	return t.maybeFlushLocked()
}

// beginScan starts a reconcile scan: it returns an epoch that every entry written from now
// on is stamped at or after, so delIf(key, epoch) only removes entries written before.
func (t *table) beginScan() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch.Add(1)
}

// currentLocked returns the chain hash h holds, counting writes not yet verified.
func (t *table) currentLocked(h uint64) *entry {
	if v, ok := t.pending[h]; ok {
		return v
	}
	v, _ := t.rc.Get(h)
	return v
}

// writeLocked makes hash h hold chain (nil: nothing). A Set that ristretto drops (its set
// buffer is full) is retried after a Wait; while the table is complete the write is also
// recorded for verification.
func (t *table) writeLocked(h uint64, chain *entry, ttl time.Duration) {
	t.unflushed++
	if t.complete.Load() {
		t.pending[h] = chain
	}
	if chain == nil {
		t.rc.Del(h) // never dropped: Del blocks on the set buffer
		return
	}
	cost := chainCost(chain)
	for i := 1; !t.set(h, chain, cost, ttl); i++ {
		t.stats.setsDropped.Add(1)
		if i == setAttempts {
			t.lose(h) // flush re-writes it (or, if incomplete, a read-through will)
			return
		}
		t.rc.Wait() // the buffer was full: let ristretto drain it
	}
}

// lose records, while the table is complete, that ristretto lost the write of hash h.
func (t *table) lose(h uint64) {
	if !t.complete.Load() {
		return
	}
	t.lostMu.Lock()
	defer t.lostMu.Unlock()
	t.lost = append(t.lost, h)
}

// takeLost returns and clears the lost hashes.
func (t *table) takeLost() []uint64 {
	t.lostMu.Lock()
	defer t.lostMu.Unlock()
	lost := t.lost
	t.lost = nil
	return lost
}

func (t *table) maybeFlushLocked() error {
	if t.unflushed < flushEvery {
		return nil
	}
	return t.flushLocked()
}

// flush waits until ristretto has applied every write and, while the table is complete,
// makes sure none was lost, re-writing those that were. If some still are after
// verifyRounds, the table is declared incomplete (misses then read through, so answers stay
// correct) and an error says so.
//
// How losses are known, without reading every write back: ristretto loses a write in
// exactly three ways, and reports each. (1) Set returns false when its set buffer is full;
// writeLocked retries and records the hash if it keeps failing. (2) Its policy rejects an
// item (OnReject): in a complete table that only happens when one hash is Set twice before
// the first is applied, or never. (3) It evicts an item (OnEvict): a complete table's
// MaxCost has headroom above the budget, so never. After Wait every queued item has been
// applied or reported, so the lost list is complete; each lost hash is read back and
// re-written unless it already holds what pending says it must.
func (t *table) flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushLocked()
}

func (t *table) flushLocked() error {
	defer func() { t.unflushed = 0 }()
	for round := 1; ; round++ {
		t.rc.Wait()
		lost := t.takeLost()
		if !t.complete.Load() || len(lost) == 0 {
			clear(t.pending)
			return nil
		}
		if round > verifyRounds {
			t.goIncompleteLocked()
			return fmt.Errorf("cache: verify: %d entries still lost after %d rounds; serving as incomplete", len(lost), verifyRounds)
		}
		for _, h := range lost {
			want, ok := t.pending[h]
			if !ok { // written before the last flush, so evicted: it cannot be re-written
				t.goIncompleteLocked()
				return fmt.Errorf("cache: verify: ristretto evicted an entry of a complete table; serving as incomplete")
			}
			if got, found := t.rc.Get(h); (want == nil && !found) || (want != nil && found && got == want) {
				continue // a later write of the hash landed
			}
			t.stats.setRetries.Add(1)
			t.writeLocked(h, want, 0)
		}
	}
}

// goIncompleteLocked declares the table incomplete: ristretto is held to the budget (and
// evicts from now on), misses read through, and writes are no longer verified.
func (t *table) goIncompleteLocked() {
	t.complete.Store(false)
	clear(t.pending)
	t.rc.UpdateMaxCost(t.budget)
}

// onEvict is ristretto's eviction callback (on its own goroutine).
func (t *table) onEvict(item *ristretto.Item[*entry]) {
	if t.retired.Load() {
		return // Close empties the cache through this callback; that is not eviction
	}
	t.lose(item.Key)
	t.drop(item.Value, true)
}

// onReject is ristretto's callback for a Set its policy refused. A complete table re-writes
// it at the next flush, so only an incomplete table's counts change.
func (t *table) onReject(item *ristretto.Item[*entry]) {
	switch {
	case t.retired.Load():
	case t.complete.Load():
		t.lose(item.Key)
	default:
		t.drop(item.Value, false)
	}
}

func (t *table) drop(chain *entry, evicted bool) {
	for e := chain; e != nil; e = e.next {
		t.entries.Add(-1)
		t.bytes.Add(-e.cost)
		if evicted {
			t.stats.evictions.Add(1)
		}
	}
}

// costBytes is the cost ristretto holds.
func (t *table) costBytes() int64 { return t.rc.MaxCost() - t.rc.RemainingCost() }

// release ends a Lookup's use of t begun by Cache.acquire.
func (t *table) release(h uint64) {
	t.readers[h%readerShards].n.Add(-1)
	if t.retired.Load() {
		t.checkDrained()
	}
}

// checkDrained signals drained once no reader is inside a retired table.
func (t *table) checkDrained() {
	var n int64
	for i := range t.readers {
		n += t.readers[i].n.Load()
	}
	if n == 0 {
		t.drainOnce.Do(func() { close(t.drained) })
	}
}

// retire closes t once every Lookup that acquired it has released it. The caller must have
// made another table (or nil) current first.
//
// Why this is safe (Cache.acquire is the other half):
//  1. A reader increments its shard, then re-reads the current table, and only uses t if
//     t is still current.
//  2. retire runs after the swap and sets retired before summing the shards.
//  3. Go's atomics are sequentially consistent, so for any reader either its increment is
//     seen by the sum (and its release, which then sees retired, re-checks the sum), or its
//     re-read comes after the swap and it backs off without using t.
//
// So when the sum reaches zero no reader is, or will be, inside t, and closing ristretto
// (which empties it and closes channels a Get may send on) cannot make a Lookup miss or
// panic.
func (t *table) retire() {
	t.retired.Store(true)
	t.checkDrained()
	<-t.drained
	t.rc.Close()
}

// close releases a table that was never made current (a failed load).
func (t *table) close() {
	t.retired.Store(true)
	t.rc.Close()
}
