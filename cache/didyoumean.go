package cache

import "unsafe"

// "Did you mean" (SPEC section 10): every table keeps a suggester (suggest.go) of the
// normalised keys it holds, fed by the table's one write path (invariant 7 of table), so a
// suggestion never rebuilds anything per lookup and a reload, a reconcile or a change feed
// keeps it in step as they keep the table.
//
// Its memory counts against Config.MaxBytes: a table is complete only if the cost of its
// entries plus the suggester's bytes fit the budget (fits), an incomplete table gives
// ristretto what the suggester leaves of the budget, and Status.CostBytes (the metric
// wxlookup_cache_cost_bytes) is the sum of both (docs/BENCH.md has its bytes per key).
//
// An incomplete table holds only some keys (those ristretto kept), so its suggestions come
// from those: a key never looked up nor recently changed may be missing from them.

// minRoomDiv bounds what the suggester may take from an incomplete table's ristretto: at
// most budget/minRoomDiv, so a suggester of pathological keys cannot starve the entries.
const minRoomDiv = 2

// fits reports whether entries costing cost fit the budget beside the suggester: the
// condition of a complete table.
func (t *table) fits(cost int64) bool { return cost+t.sugg.bytes() <= t.budget }

// room is what an incomplete table's entries may cost: the budget less the suggester's
// bytes, but at least budget/minRoomDiv.
func (t *table) room() int64 {
	return max(t.budget-t.sugg.bytes(), t.budget/minRoomDiv)
}

// memoryBytes is what the table accounts for: the cost ristretto holds and the suggester.
func (t *table) memoryBytes() int64 { return t.costBytes() + t.sugg.bytes() }

// indexLocked keeps the suggester in step with putLocked's write of e in place of old for
// key: a key newly held joins it, a key deleted leaves it, a replaced entry changes nothing.
func (t *table) indexLocked(key string, old, e *entry) {
	switch {
	case e == nil:
		t.sugg.remove(key)
	case old == nil || old.grp == nil:
		t.sugg.add(key)
	default:
		return
	}
	t.fitLocked()
}

// unindexLocked drops from the suggester the key of e, an entry just taken out of its group
// because ristretto lost or evicted it, unless another entry held for that key replaced it
// meanwhile (a write that came after ristretto dropped e, before flush learned of it).
func (t *table) unindexLocked(e *entry) {
	if cur := t.heldLocked(t.hash(e.key()), e.key()); cur != nil && cur != e && cur.grp != nil {
		return
	}
	t.sugg.remove(e.key())
	t.fitLocked()
}

// fitLocked holds an incomplete table's ristretto to the room the suggester leaves, as the
// suggester grows or shrinks (a complete table has headroom enough).
func (t *table) fitLocked() {
	if !t.complete.Load() {
		if r := t.room(); t.rc.MaxCost() != r {
			t.rc.UpdateMaxCost(r)
		}
	}
}

// Suggest appends to dst up to max keys of the table nearest to the normalised key (SPEC
// section 10: within edit distance 2, transpositions counting 1, ordered by distance, then
// the longest prefix shared with key, then lexically), each as stored in the source (the
// canonical spelling, "A7-001" for a query "a7-01"), and returns dst. It never appends key
// itself, and appends nothing when no key is that close, when max ≤ 0, before the first
// warm and after Close. In an incomplete table (Status.Complete false) the suggestions come
// from the keys held in memory only. It allocates one string per candidate (the canonical
// keys it appends are the table's own) and takes no lock Lookup takes. Safe for concurrent
// use, with the loader too.
func (c *Cache) Suggest(dst []string, key []byte, max int) []string {
	if max <= 0 || !c.warmed.Load() {
		return dst
	}
	h := hashKey(key)
	t := c.acquire(h)
	if t == nil {
		return dst
	}
	defer t.release(h)
	n := len(dst)
	dst = t.sugg.suggest(dst, key, max)
	// The suggester names normalised keys; the table holds each one's stored spelling,
	// read from the record as Lookup reads it (not from the entry: one memory read less a
	// candidate). A key written since is skipped if ristretto does not show it yet, or no
	// longer holds it.
	kept := n
	for _, s := range dst[n:] {
		_, canon, ok := t.answer(hashKeyString(s), unsafe.Slice(unsafe.StringData(s), len(s)))
		if !ok {
			continue
		}
		dst[kept] = canon
		kept++
	}
	clear(dst[kept:])
	return dst[:kept]
}
