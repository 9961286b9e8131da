package cache

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"
)

// suggestMaxDistance is the largest edit distance of a "did you mean" suggestion (SPEC 10).
const suggestMaxDistance = 2

// suggestMaxRunes is the longest key, in runes, that the suggester indexes. Longer keys are
// never suggested (part numbers are far shorter); the bound keeps a lookup's scratch small.
const suggestMaxRunes = 128

const (
	terminalBit = 1 << 31 // in trieNode.label: a key ends at this node
	capDist     = suggestMaxDistance + 1
	noLen       = ^uint16(0) // trieNode.minLen of an empty subtree
	nodeBytes   = int64(unsafe.Sizeof(trieNode{}))
)

// suggester is the "did you mean" index of one query's keys: the up to limit keys nearest to a
// query by optimal-string-alignment distance (insertion, deletion, substitution and the
// transposition of two adjacent runes each cost 1), at most suggestMaxDistance, ordered by
// distance, then by the length of the prefix shared with the query (longer first), then
// lexically. Keys are normalised keys (AppendKey), compared rune by rune.
//
// It is a trie of runes in one slice of nodes linked by uint32 indexes: node 0 is the root, a
// node's children are a list through next in increasing rune order, and every node records
// the shortest and longest key (in runes) of its subtree and a 64-bit set of the runes in it.
// Invariants: every node but the root lies on the path of a key held (empty branches are
// freed at once); unused nodes are on the free list; minLen, maxLen and runes are exact.
//
// A suggester is safe for concurrent use: one writer at a time (add and remove serialise on
// wmu) and any number of readers. Readers hold mu shared for one suggest; a writer holds mu
// exclusively only for the mutation of one key's path (a few nodes). Growing the slice and
// compacting it copy outside mu (no other writer can run, and readers only read), so the
// exclusive section is never longer than one key's mutation plus a slice swap.
type suggester struct {
	wmu sync.Mutex   // serialises add and remove
	mu  sync.RWMutex // readers shared, a mutation exclusive

	nodes []trieNode // guarded by mu for writes; written only under wmu
	free  uint32     // head of the free list (linked by next); 0 when empty
	nfree int        // nodes on the free list
	keys  int        // keys held
	size  atomic.Int64

	wrunes []rune   // writer scratch, guarded by wmu
	wpath  []uint32 // writer scratch, guarded by wmu
	wbits  []uint64 // writer scratch, guarded by wmu
}

// trieNode is one rune of the suggester's trie (24 bytes).
type trieNode struct {
	runes          uint64 // runeBit of every rune in this subtree, this node's own included
	label          uint32 // the rune into this node, | terminalBit when a key ends here
	child          uint32 // first child, 0 for none
	next           uint32 // next sibling (greater rune), 0 for none
	minLen, maxLen uint16 // runes of the shortest and longest key in this subtree
}

// runeBit maps a rune to one of 64 bits for trieNode.runes: digits and lower-case letters
// (the runes of most normalised part numbers) each have their own, other runes share the
// remaining 28 by a multiplicative hash.
func runeBit(r rune) uint64 {
	switch {
	case '0' <= r && r <= '9':
		return 1 << (r - '0')
	case 'a' <= r && r <= 'z':
		return 1 << (10 + r - 'a')
	}
	return 1 << (36 + (uint64(uint32(r))*0x9E3779B97F4A7C15>>32)%28)
}

// newSuggester returns an empty suggester.
func newSuggester() *suggester {
	s := &suggester{nodes: make([]trieNode, 1, 64)}
	s.nodes[0].minLen = noLen
	s.size.Store(s.footprint())
	return s
}

// footprint is the memory the suggester holds: its node slice and its own struct. The
// caller holds wmu or has not shared s yet.
func (s *suggester) footprint() int64 {
	return int64(cap(s.nodes))*nodeBytes + int64(unsafe.Sizeof(*s)) +
		int64(cap(s.wrunes))*4 + int64(cap(s.wpath))*4 + int64(cap(s.wbits))*8
}

// bytes returns the memory the suggester holds, for the cache's accounting: its node slice
// (24 bytes a node, at most one node per rune of the keys held, plus growth slack) and
// scratch. Safe for concurrent use.
func (s *suggester) bytes() int64 { return s.size.Load() }

// len returns the number of keys held. Safe for concurrent use.
func (s *suggester) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys
}

// decode sets s.wrunes to the runes of key and reports whether the suggester indexes it.
func (s *suggester) decode(key string) bool {
	s.wrunes = s.wrunes[:0]
	for _, r := range key {
		s.wrunes = append(s.wrunes, r)
	}
	return len(s.wrunes) > 0 && len(s.wrunes) <= suggestMaxRunes
}

// add indexes normKey, a normalised key; adding a key held already does nothing. Empty keys
// and keys of more than suggestMaxRunes runes are not indexed. Safe for concurrent use.
func (s *suggester) add(normKey string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.decode(normKey) {
		return
	}
	runes, n := s.wrunes, uint16(len(s.wrunes))
	grown := s.reserve(len(runes))
	// s.wbits[d] is the set of runes[d:], for the node of runes[d] and its ancestors' sets.
	s.wbits = append(s.wbits[:0], make([]uint64, len(runes)+1)...)
	for d := len(runes) - 1; d >= 0; d-- {
		s.wbits[d] = s.wbits[d+1] | runeBit(runes[d])
	}

	s.mu.Lock()
	if grown != nil {
		s.nodes, s.free, s.nfree = grown, 0, 0
	}
	x := uint32(0)
	s.widen(x, n, s.wbits[0])
	for d, r := range runes {
		x = s.child(x, r)
		s.widen(x, n, s.wbits[d])
	}
	if s.nodes[x].label&terminalBit == 0 {
		s.nodes[x].label |= terminalBit
		s.keys++
	}
	s.mu.Unlock()
	s.size.Store(s.footprint())
}

// widen makes node x's length range include n and its rune set include bits. The caller
// holds mu exclusively.
func (s *suggester) widen(x uint32, n uint16, bits uint64) {
	nd := &s.nodes[x]
	nd.minLen = min(nd.minLen, n)
	nd.maxLen = max(nd.maxLen, n)
	nd.runes |= bits
}

// child returns the child of x labelled r, inserting it in rune order when there is none.
// The caller holds mu exclusively and has reserved a node.
func (s *suggester) child(x uint32, r rune) uint32 {
	prev, y := uint32(0), s.nodes[x].child
	for y != 0 {
		yr := rune(s.nodes[y].label &^ terminalBit)
		if yr == r {
			return y
		}
		if yr > r {
			break
		}
		prev, y = y, s.nodes[y].next
	}
	z := s.alloc()
	s.nodes[z] = trieNode{label: uint32(r), next: y, minLen: noLen}
	if prev == 0 {
		s.nodes[x].child = z
	} else {
		s.nodes[prev].next = z
	}
	return z
}

// alloc returns an unused node, from the free list or the slice's reserve. The caller holds
// mu exclusively.
func (s *suggester) alloc() uint32 {
	if z := s.free; z != 0 {
		s.free = s.nodes[z].next
		s.nfree--
		return z
	}
	s.nodes = append(s.nodes, trieNode{}) // within capacity: see reserve
	return uint32(len(s.nodes) - 1)
}

// reserve makes room for n new nodes. When the slice must grow it returns a larger copy laid
// out afresh (see relayout) for the caller to install under mu; the copy runs without mu, as
// readers only read. The caller holds wmu.
func (s *suggester) reserve(n int) []trieNode {
	live := len(s.nodes) - s.nfree
	if len(s.nodes)+max(n-s.nfree, 0) <= cap(s.nodes) {
		return nil
	}
	c := cap(s.nodes)
	if c < 1<<16 {
		c *= 2
	} else {
		c += c / 4
	}
	return s.relayout(max(c, live+n))
}

// remove drops normKey, a normalised key, and frees the nodes only it used; removing a key
// not held does nothing. Safe for concurrent use.
func (s *suggester) remove(normKey string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.decode(normKey) {
		return
	}
	// Find the path without mu: only writers change nodes, and we are the writer.
	path := append(s.wpath[:0], 0)
	x := uint32(0)
	for _, r := range s.wrunes {
		if x = s.find(s.nodes, x, r); x == 0 {
			return
		}
		path = append(path, x)
	}
	s.wpath = path
	if s.nodes[x].label&terminalBit == 0 {
		return
	}

	s.mu.Lock()
	s.nodes[x].label &^= terminalBit
	s.keys--
	// Free the branch that no other key uses, from the bottom up.
	d := len(path) - 1
	for ; d > 0; d-- {
		nd := s.nodes[path[d]]
		if nd.child != 0 || nd.label&terminalBit != 0 {
			break
		}
		s.unlink(path[d-1], path[d])
	}
	// Recompute the length ranges and rune sets upwards, until one does not change.
	for ; d >= 0; d-- {
		if !s.refit(path[d], d) {
			break
		}
	}
	s.mu.Unlock()

	if s.nfree > 1024 && s.nfree > len(s.nodes)-s.nfree {
		s.compact()
	}
	s.size.Store(s.footprint())
}

// unlink takes child z out of parent x's list and puts it on the free list. The caller holds
// mu exclusively.
func (s *suggester) unlink(x, z uint32) {
	if y := s.nodes[x].child; y == z {
		s.nodes[x].child = s.nodes[z].next
	} else {
		for s.nodes[y].next != z {
			y = s.nodes[y].next
		}
		s.nodes[y].next = s.nodes[z].next
	}
	s.nodes[z] = trieNode{next: s.free}
	s.free = z
	s.nfree++
}

// refit recomputes the length range and rune set of node x at depth d from its own key and
// its children, and reports whether they changed. The caller holds mu exclusively.
func (s *suggester) refit(x uint32, d int) bool {
	lo, hi, bits := noLen, uint16(0), uint64(0)
	if d > 0 {
		bits = runeBit(rune(s.nodes[x].label &^ terminalBit))
	}
	if s.nodes[x].label&terminalBit != 0 {
		lo, hi = uint16(d), uint16(d)
	}
	for y := s.nodes[x].child; y != 0; y = s.nodes[y].next {
		lo, hi = min(lo, s.nodes[y].minLen), max(hi, s.nodes[y].maxLen)
		bits |= s.nodes[y].runes
	}
	nd := &s.nodes[x]
	if nd.minLen == lo && nd.maxLen == hi && nd.runes == bits {
		return false
	}
	nd.minLen, nd.maxLen, nd.runes = lo, hi, bits
	return true
}

// compact replaces the node slice by a relayout without free nodes once more than half the
// slice is free: the memory follows the keys held down as well as up. The copy runs without
// mu; only the swap takes it. The caller holds wmu.
func (s *suggester) compact() {
	live := len(s.nodes) - s.nfree
	out := s.relayout(live + live/8)
	s.mu.Lock()
	s.nodes, s.free, s.nfree = out, 0, 0
	s.mu.Unlock()
}

// relayout returns a copy of the trie without free nodes in a slice of the given capacity,
// laid out breadth first so that a node's children are adjacent: a search walking them reads
// consecutive memory rather than nodes scattered by the order keys arrived in. Growth and
// compaction both relayout, so the layout stays mostly fresh at an amortised O(1) a node.
// The caller holds wmu (it reads the nodes without mu).
func (s *suggester) relayout(capacity int) []trieNode {
	out := make([]trieNode, 1, max(capacity, 1))
	out[0] = s.nodes[0]
	// While out[k] waits for its turn, its child field still holds the old index of its
	// first child; its turn copies those children to the end of out, adjacent, and points
	// child at the first copy.
	for k := 0; k < len(out); k++ {
		old := out[k].child
		if old == 0 {
			continue
		}
		out[k].child = uint32(len(out))
		for y := old; y != 0; y = s.nodes[y].next {
			nd := s.nodes[y]
			nd.next = 0
			if s.nodes[y].next != 0 {
				nd.next = uint32(len(out) + 1)
			}
			out = append(out, nd)
		}
	}
	return out
}

// find returns the child of x labelled r, or 0.
func (s *suggester) find(nodes []trieNode, x uint32, r rune) uint32 {
	for y := nodes[x].child; y != 0; y = nodes[y].next {
		switch yr := rune(nodes[y].label &^ terminalBit); {
		case yr == r:
			return y
		case yr > r:
			return 0
		}
	}
	return 0
}

// suggest appends to dst up to limit keys nearest to query (a normalised key) and returns the
// extended slice: keys within distance suggestMaxDistance, ordered by distance, then by the
// length of the prefix they share with query (longer first), then lexically; never query
// itself. It allocates only the strings it appends. Safe for concurrent use.
//
// The search runs one pass per distance, 1 then 2, each accepting only keys at exactly that
// distance, so keys arrive in rank order and the search stops at the limit-th. Within a pass
// it starts from the deepest trie node on the query's own path (the keys sharing the longest
// prefix) and moves up, walking each node's other children depth first in rune order
// (lexical order), with one row of the distance table per trie level, and prunes a subtree
// when no key of its length range can come within the pass's distance.
func (s *suggester) suggest(dst []string, query []byte, limit int) []string {
	if limit <= 0 || len(query) == 0 {
		return dst
	}
	z := searchPool.Get().(*suggestSearch)
	defer searchPool.Put(z)
	z.q, z.qbits = z.q[:0], z.qbits[:0]
	for _, r := range string(query) {
		z.q, z.qbits = append(z.q, r), append(z.qbits, runeBit(r))
	}
	n := len(z.q)
	if n > suggestMaxRunes+suggestMaxDistance {
		return dst
	}

	s.mu.RLock()
	defer s.mu.RUnlock()
	z.nodes = s.nodes
	defer func() { z.nodes = nil }()
	root := z.nodes[0]
	if s.keys == 0 || n > int(root.maxLen)+suggestMaxDistance || n+suggestMaxDistance < int(root.minLen) {
		return dst
	}
	z.reset(n)
	// The query's path: z.at[p] is the node of q[:p], for p up to the longest prefix held.
	z.at = append(z.at[:0], 0)
	for x := uint32(0); len(z.at) <= n; {
		if x = s.find(z.nodes, x, z.q[len(z.at)-1]); x == 0 {
			break
		}
		z.at = append(z.at, x)
	}
	P := len(z.at) - 1

	z.dst, z.want = dst, limit
	for k := uint8(1); k <= suggestMaxDistance; k++ {
		// The previous pass's walks overwrote the path and rows below the root.
		z.k = k
		copy(z.path, z.q[:P])
		for i := 1; i <= P; i++ {
			z.step(i, z.q[i-1], z.prevRune(i))
		}
		if z.pass(P) {
			break
		}
	}
	dst, z.dst = z.dst, nil
	return dst
}

// searchPool recycles the scratch of suggest.
var searchPool = sync.Pool{New: func() any { return new(suggestSearch) }}

// suggestSearch is the scratch of one suggest: the query, the distance table (one row per
// trie depth, each n+1 cells, only the diagonal band of width 2·suggestMaxDistance+1 kept
// up to date, values capped at capDist) and the path walked.
type suggestSearch struct {
	nodes []trieNode
	q     []rune   // the query
	qbits []uint64 // runeBit of each rune of the query
	n     int      // len(q)
	rows  []uint8  // row i at [i*(n+1), (i+1)*(n+1))
	path  []rune   // the key walked: path[i-1] is the rune at depth i
	at    []uint32 // the nodes of the query's own path, by depth
	buf   []byte   // a suggestion's UTF-8
	k     uint8    // the distance this pass accepts
	dst   []string
	want  int // suggestions still wanted
}

// reset sizes the scratch for a query of n runes and fills row 0.
func (z *suggestSearch) reset(n int) {
	z.n = n
	cells := (n + suggestMaxDistance + 2) * (n + 1)
	if cap(z.rows) < cells {
		z.rows = make([]uint8, cells)
	}
	z.rows = z.rows[:cells]
	if cap(z.path) < n+suggestMaxDistance+1 {
		z.path = make([]rune, n+suggestMaxDistance+1)
	}
	z.path = z.path[:n+suggestMaxDistance+1]
	for j := 0; j <= n; j++ {
		z.rows[j] = uint8(min(j, capDist))
	}
}

// prevRune returns the query rune before depth i on the query's path, or -1 at the top.
func (z *suggestSearch) prevRune(i int) rune {
	if i < 2 {
		return -1
	}
	return z.q[i-2]
}

// row returns row i of the distance table.
func (z *suggestSearch) row(i int) []uint8 {
	w := z.n + 1
	return z.rows[i*w : i*w+w]
}

// step fills row i, for a key prefix of i runes ending in c (after pc), from rows i-1 and
// i-2. Only the band j ∈ [i-2, i+2] is computed; the cells just outside it are set to
// capDist, so the next rows read no stale cell (row i+1 reads row i at [i-2, i+3], row i+2
// reads row i at [i-2, i+2]).
func (z *suggestSearch) step(i int, c, pc rune) {
	n := z.n
	row, prev := z.row(i), z.row(i-1)
	var prev2 []uint8
	if i >= 2 {
		prev2 = z.row(i - 2)
	}
	lo, hi := i-suggestMaxDistance, i+suggestMaxDistance
	if lo <= 0 {
		row[0], lo = uint8(i), 1
	} else {
		row[lo-1] = capDist
	}
	if hi >= n {
		hi = n
	} else {
		row[hi+1] = capDist
	}
	q := z.q
	for j := lo; j <= hi; j++ {
		v := prev[j-1]
		if q[j-1] != c {
			v++
		}
		v = min(v, prev[j]+1, row[j-1]+1)
		if j >= 2 && c == q[j-2] && pc == q[j-1] && i >= 2 {
			v = min(v, prev2[j-2]+1) // transposition of the last two runes
		}
		row[j] = min(v, capDist)
	}
}

// bound returns a lower bound of the distance from the query to any key in the subtree of
// node nd at depth i, from row i: a key passing through cell j still has to turn its
// remaining runes into the query's n-j remaining ones, which costs at least the difference
// of their lengths, and at least one edit for each of those query runes that occurs nowhere
// in the subtree. (A transposition can skip row i, from cell (i-1, j-1) to (i+1, j+1), but
// costs 1 as does the substitution through (i, j), and the rune it moves, nd's own, is in
// nd.runes; so the bound holds.)
func (z *suggestSearch) bound(i int, nd *trieNode) uint8 {
	row := z.row(i)
	lo, hi := int(nd.minLen)-i, int(nd.maxLen)-i
	jlo, jhi := max(0, i-suggestMaxDistance), min(z.n, i+suggestMaxDistance)
	absent := 0 // query runes from j on that the subtree lacks
	for t := z.n - 1; t >= jhi; t-- {
		if z.qbits[t]&nd.runes == 0 {
			absent++
		}
	}
	b := uint8(capDist)
	for j := jhi; j >= jlo; j-- {
		if j < jhi && z.qbits[j]&nd.runes == 0 {
			absent++
		}
		rest, gap := z.n-j, 0
		if rest < lo {
			gap = lo - rest
		} else if rest > hi {
			gap = rest - hi
		}
		b = min(b, row[j]+uint8(min(max(gap, absent), capDist)))
	}
	return b
}

// pass runs one distance's search from the deepest node of the query's path up to the
// root, and reports whether enough suggestions were found.
func (z *suggestSearch) pass(P int) bool {
	for p := P; p >= 0; p-- {
		nd := z.nodes[z.at[p]]
		if z.bound(p, &nd) > z.k {
			continue
		}
		if nd.label&terminalBit != 0 && z.exact(p) && z.emit(p) {
			return true
		}
		skip := uint32(0) // the child on the query's path: searched at p+1 already
		if p < P {
			skip = z.at[p+1]
		}
		pc := rune(-1)
		if p > 0 {
			pc = z.q[p-1]
		}
		for y := nd.child; y != 0; y = z.nodes[y].next {
			if y != skip && z.walk(y, p+1, pc) {
				return true
			}
		}
	}
	return false
}

// walk searches the subtree of node x at depth i (whose parent's rune is pc) depth first in
// rune order, and reports whether enough suggestions were found.
func (z *suggestSearch) walk(x uint32, i int, pc rune) bool {
	nd := z.nodes[x]
	c := rune(nd.label &^ terminalBit)
	z.step(i, c, pc)
	if z.bound(i, &nd) > z.k {
		return false
	}
	z.path[i-1] = c
	if nd.label&terminalBit != 0 && z.exact(i) && z.emit(i) {
		return true
	}
	for y := nd.child; y != 0; y = z.nodes[y].next {
		if z.walk(y, i+1, c) {
			return true
		}
	}
	return false
}

// exact reports whether the key of depth i just reached is at this pass's distance.
func (z *suggestSearch) exact(i int) bool {
	return i >= z.n-suggestMaxDistance && i <= z.n+suggestMaxDistance && z.row(i)[z.n] == z.k
}

// emit appends the key of the first i runes of the path as a suggestion and reports
// whether that was the last one wanted.
func (z *suggestSearch) emit(i int) bool {
	z.buf = z.buf[:0]
	for _, r := range z.path[:i] {
		z.buf = utf8.AppendRune(z.buf, r)
	}
	z.dst = append(z.dst, string(z.buf))
	z.want--
	return z.want == 0
}
