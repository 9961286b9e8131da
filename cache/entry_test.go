package cache

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func TestDefaultRender(t *testing.T) {
	tests := []struct {
		name string
		row  Row
		want string
	}{
		{"one value", Row{Key: "18-546", Values: []string{"车体新厂房3号"}}, "[18-546] 车体新厂房3号"},
		{"two values", Row{Key: "A7-001", Values: []string{"x", "y"}}, "[A7-001] x y"},
		{"no values", Row{Key: "k"}, "[k]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(DefaultRender([]byte("x"), tt.row)); got != "x"+tt.want {
				t.Errorf("got %q, want %q appended to x", got, tt.want)
			}
		})
	}
}

// prep returns row r prepared with DefaultRender.
func prep(r Row) *prepared {
	p := new(prepared)
	p.prepare(r, DefaultRender)
	return p
}

func TestNewEntry(t *testing.T) {
	tests := []struct {
		name      string
		row       Row
		key       string
		shareKey  bool // the normalised key is the stored key's string
		extraCost int  // bytes beyond line, key, overhead and the record's header
		header    int  // the record's flags and lengths
	}{
		{"already normal", Row{Key: "18-546", Values: []string{"v"}}, "18-546", true, 0, 4},
		{"upper case", Row{Key: "A7-001", Values: []string{"v"}}, "a7-001", false, len("A7-001"), 4},
		{"full width", Row{Key: "Ａ７", Values: []string{"v"}}, "a7", false, len("Ａ７"), 4},
		// Lengths of 128 bytes and more take two bytes each in the header.
		{"long", Row{Key: strings.Repeat("K", 200), Values: []string{strings.Repeat("长", 100)}}, strings.Repeat("k", 200), false, 200, 7},
		{"long, already normal", Row{Key: strings.Repeat("k", 130), Values: []string{"v"}}, strings.Repeat("k", 130), true, 0, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := prep(tt.row)
			e := newEntry(p)
			if e.key() != tt.key || e.canon() != tt.row.Key {
				t.Fatalf("got key %q canon %q, want %q %q", e.key(), e.canon(), tt.key, tt.row.Key)
			}
			line := string(DefaultRender(nil, tt.row))
			if string(e.line()) != line || cap(e.line()) != len(e.line()) {
				t.Errorf("got line %q (cap %d), want %q with no spare capacity", e.line(), cap(e.line()), line)
			}
			if (unsafe.StringData(e.key()) == unsafe.StringData(e.canon())) != tt.shareKey {
				t.Errorf("key shares the stored key's bytes: got %v, want %v", !tt.shareKey, tt.shareKey)
			}
			want := int32(tt.header + len(e.line()) + len(e.key()) + entryOverhead + tt.extraCost)
			if e.cost != want || int64(e.cost) != p.cost() {
				t.Errorf("got cost %d (prepared says %d), want %d", e.cost, p.cost(), want)
			}
			if e.sum != RowSum(tt.row.Key, tt.row.Values) {
				t.Errorf("got sum %d, want RowSum %d", e.sum, RowSum(tt.row.Key, tt.row.Values))
			}
			// The entry owns its bytes: neither the row nor the prepared buffer is kept.
			if unsafe.StringData(e.canon()) == unsafe.StringData(tt.row.Key) {
				t.Error("the entry keeps the row's key string (and with it the row's memory)")
			}
			p.prepare(Row{Key: "ZZ-999", Values: []string{"something else entirely"}}, DefaultRender)
			if string(e.line()) != line || e.key() != tt.key || e.canon() != tt.row.Key {
				t.Errorf("reusing the prepared buffer changed the entry: %q %q %q", e.key(), e.canon(), e.line())
			}
		})
	}
}

// TestPreparedHolds: a row is held by an entry with the same stored key and line, whatever
// its checksum; the row's own Sum is used when the source gives one.
func TestPreparedHolds(t *testing.T) {
	e := newEntry(prep(Row{Key: "A7-001", Values: []string{"x", "y"}}))
	tests := []struct {
		name string
		row  Row
		want bool
	}{
		{"same", Row{Key: "A7-001", Values: []string{"x", "y"}}, true},
		{"other sum, same line", Row{Key: "A7-001", Values: []string{"x", "y"}, Sum: 7}, true},
		{"other value", Row{Key: "A7-001", Values: []string{"x", "z"}}, false},
		{"other spelling of the key", Row{Key: "a7-001", Values: []string{"x", "y"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := prep(tt.row)
			if got := p.holds(e); got != tt.want {
				t.Errorf("got holds %v, want %v", got, tt.want)
			}
			if tt.row.Sum != 0 && p.sum != tt.row.Sum {
				t.Errorf("got sum %d, want the row's %d", p.sum, tt.row.Sum)
			}
		})
	}
	if prep(Row{Key: "k"}).holds(nil) {
		t.Error("a row is held by no entry")
	}
}

// TestPrepareAllocs: comparing a row with what is held costs no allocation.
func TestPrepareAllocs(t *testing.T) {
	row := Row{Key: "A7-001", Values: []string{"车体新厂房3号"}}
	e := newEntry(prep(row))
	var p prepared
	p.prepare(row, DefaultRender)
	if n := testing.AllocsPerRun(100, func() {
		p.prepare(row, DefaultRender)
		if !p.holds(e) {
			t.Fatal("not held")
		}
	}); n != 0 {
		t.Errorf("got %v allocations to prepare and compare a row, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { RowSum(row.Key, row.Values) }); n != 0 {
		t.Errorf("got %v allocations in RowSum, want 0", n)
	}
}

// TestNewEntryAllocations pins the layout: an entry is its struct and one block of bytes.
// TestFillEntryExpiry: a fill's record carries its expiry after the line, and reads the
// same otherwise; a loaded row's record has none.
func TestFillEntryExpiry(t *testing.T) {
	for _, r := range []Row{{Key: "A7-001", Values: []string{"v"}}, {Key: strings.Repeat("K", 300), Values: []string{strings.Repeat("长", 100)}}} {
		p := prep(r)
		e := newFillEntry(p)
		if e.expires() != 0 || !p.holds(e) || e.key() != string(p.key) {
			t.Fatalf("new fill: expires %d, holds %v, key %q", e.expires(), p.holds(e), e.key())
		}
		e.setExpires(1_700_000_000_123_456_789)
		if e.expires() != 1_700_000_000_123_456_789 || !p.holds(e) || string(e.line()) != string(p.line) {
			t.Errorf("got expires %d, line %q", e.expires(), e.line())
		}
		if int64(e.cost) != p.cost()+8 {
			t.Errorf("got cost %d, want %d (8 bytes of expiry)", e.cost, p.cost()+8)
		}
		if newEntry(p).expires() != 0 || *newEntry(p).rec&recExpires != 0 {
			t.Error("a loaded row's record has an expiry")
		}
	}
}

// TestEntrySize: an entry is one 48-byte heap object beside its record; a field more
// costs a million rows 16 MB and twice that in RSS (the collector's headroom).
func TestEntrySize(t *testing.T) {
	if got := unsafe.Sizeof(entry{}); got != 48 {
		t.Errorf("entry is %d bytes, want 48", got)
	}
}

func TestNewEntryAllocations(t *testing.T) {
	p := prep(Row{Key: "A7-001", Values: []string{"车体新厂房3号"}})
	if n := testing.AllocsPerRun(100, func() { newEntry(p) }); n != 2 {
		t.Errorf("got %v allocations in newEntry, want 2 (the entry and its bytes)", n)
	}
}

func TestGroup(t *testing.T) {
	var g, h group
	a, b, c := keyEntry("a", 0), keyEntry("b", 0), keyEntry("c", 0)
	for _, e := range []*entry{a, b, c} {
		g.link(e)
	}
	keys := func(g *group) string {
		var s []string
		for e := g.head; e != nil; e = e.gnext {
			if e.grp != g {
				t.Fatalf("entry %q in group %p says it is in %p", e.key(), g, e.grp)
			}
			s = append(s, e.key())
		}
		return strings.Join(s, ",")
	}
	if got := keys(&g); got != "c,b,a" || g.n != 3 {
		t.Fatalf("got %q (n %d), want c,b,a (3)", got, g.n)
	}
	g.unlink(b)
	h.link(b)
	if keys(&g) != "c,a" || keys(&h) != "b" || g.n != 2 || h.n != 1 {
		t.Fatalf("after a move: got %q and %q", keys(&g), keys(&h))
	}
	g.unlink(c)
	g.unlink(a)
	if g.head != nil || g.n != 0 {
		t.Errorf("emptied group: head %v n %d", g.head, g.n)
	}
}

// keyEntry returns an entry for key (already normal) with the given cost.
func keyEntry(key string, cost int32) *entry {
	e := newEntry(prep(Row{Key: key}))
	e.cost = cost
	return e
}

func TestBucket(t *testing.T) {
	var g group
	a := keyEntry("a", 1)
	b := keyEntry("b", 2)
	b2 := keyEntry("b2", 8) // same hash as b: a collision
	c := keyEntry("c", 4)
	for _, e := range []*entry{a, b, b2, c} {
		g.link(e)
	}
	var v bucket
	for _, s := range []slot{{30, c.rec, c}, {10, a.rec, a}, {20, b.rec, b}, {20, b2.rec, b2}} {
		v = v.with(s.h, s.e.key(), s.e, true)
	}
	if got := v.cost(); got != 15 {
		t.Errorf("got cost %d, want 15", got)
	}
	for i := 1; i < len(v); i++ {
		if v[i-1].h > v[i].h {
			t.Fatalf("bucket not sorted by hash: %v", v)
		}
	}
	const sh = 54
	if v.findString(10, "a", sh) != a || v.findString(20, "b", sh) != b || v.findString(20, "b2", sh) != b2 ||
		v.match(30, []byte("c"), sh).e != c || v.match(20, []byte("c"), sh) != nil || v.match(25, []byte("x"), sh) != nil {
		t.Error("find does not find each entry by its hash and key")
	}
	if !v.has(20, b2, sh) || v.has(20, c, sh) {
		t.Error("has is wrong")
	}
	rest := v.with(20, "b", nil, true)
	if rest.findString(20, "b", sh) != nil || rest.findString(20, "b2", sh) != b2 || rest.findString(10, "a", sh) != a || rest.cost() != 13 {
		t.Errorf("got with(b, nil) = %v", rest)
	}
	if v.findString(20, "b", sh) != b || len(v) != 4 {
		t.Error("with modified the original bucket")
	}
	b3 := keyEntry("b", 16)
	if r := v.with(20, "b", b3, true); r.findString(20, "b", sh) != b3 || len(r) != 4 || r.cost() != 29 {
		t.Errorf("got with(b, b3) = %v", r)
	}
	// An entry in no group is held no longer (evicted): the next write leaves it out.
	g.unlink(a)
	if r := v.with(30, "c", c, true); r.findString(10, "a", sh) != nil || len(r) != 3 {
		t.Errorf("got %v, want the ungrouped entry left out", r)
	}
	if r := v.with(30, "c", c, false); r.findString(10, "a", sh) != a || len(r) != 4 {
		t.Errorf("got %v, want the ungrouped entry kept without prune", r)
	}
	if r := v.held(); r.findString(10, "a", sh) != nil || len(r) != 3 || same(r, v) {
		t.Errorf("got held %v, want a copy without the ungrouped entry", r)
	}
	if all := (bucket{{20, b.rec, b}, {30, c.rec, c}}); !same(all.held(), all) {
		t.Error("held copied a bucket whose entries are all held")
	}
	if none := (bucket{{10, a.rec, a}}); none.held() != nil {
		t.Error("held of a bucket with no entry held is not nil")
	}
	if !same(v, v) || same(v, rest) || same(v, v[:3]) {
		t.Error("same is wrong")
	}
	if one := (bucket{{20, b.rec, b}}).with(20, "b", nil, true); one != nil {
		t.Errorf("got %v from removing the only entry, want nil", one)
	}
}

func BenchmarkNewEntry(b *testing.B) {
	p := prep(Row{Key: "18-546", Values: []string{"车体新厂房3号"}})
	b.ReportAllocs()
	for b.Loop() {
		newEntry(p)
	}
}

// TestBucketSearch checks search against a binary search, over buckets whose hashes share
// their top 64-shift bits (the bucket number) and spread evenly below them, as a table's do,
// or crowd at the bottom, or are all equal; for tables of many buckets and of few.
func TestBucketSearch(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	for _, shift := range []uint8{0, 1, 40, 54, 63} {
		bits := 64 - shift // of the bucket number; a shift of 64 or more gives 0 in Go
		for _, shape := range []string{"even", "crowded", "equal"} {
			for n := range 70 {
				top := rnd.Uint64() >> shift << shift
				b := make(bucket, n)
				for i := range b {
					below := rnd.Uint64() >> bits
					switch shape {
					case "crowded":
						below >>= 8
					case "equal":
						below = 7 >> bits
					}
					b[i].h = top | below
				}
				slices.SortFunc(b, func(x, y slot) int { return cmp.Compare(x.h, y.h) })
				probes := []uint64{0, ^uint64(0), top, top | 7>>bits}
				for _, s := range b {
					probes = append(probes, s.h-1, s.h, s.h+1)
				}
				for _, h := range probes {
					want, _ := slices.BinarySearchFunc(b, h, func(s slot, h uint64) int { return cmp.Compare(s.h, h) })
					if got := b.search(h, shift); got != want {
						t.Fatalf("shift %d, %s, %d slots: search(%#x) = %d, want %d", shift, shape, n, h, got, want)
					}
				}
			}
		}
	}
}
