package cache

import (
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

// newEntryCase is one row for TestNewEntry.
type newEntryCase struct {
	name      string
	row       Row
	key       string
	shareKey  bool // the normalised key is the stored key's string
	extraCost int  // bytes beyond line, key and overhead
}

func TestNewEntry(t *testing.T) {
	tests := []newEntryCase{
		{"already normal", Row{Key: "18-546", Values: []string{"v"}}, "18-546", true, 0},
		{"upper case", Row{Key: "A7-001", Values: []string{"v"}}, "a7-001", false, len("A7-001")},
		{"full width", Row{Key: "Ａ７", Values: []string{"v"}}, "a7", false, len("Ａ７")},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/heap", func(t *testing.T) { checkNewEntry(t, tt, nil) })
		t.Run(tt.name+"/slab", func(t *testing.T) { checkNewEntry(t, tt, new(slab)) })
	}
}

func checkNewEntry(t *testing.T, tt newEntryCase, sl *slab) {
	scratch := make([]byte, 0, 64)
	e, scratch := newEntry(tt.row, DefaultRender, scratch, sl)
	if e.key != tt.key || e.canon != tt.row.Key {
		t.Fatalf("key %q canon %q, want %q %q", e.key, e.canon, tt.key, tt.row.Key)
	}
	line := string(DefaultRender(nil, tt.row))
	if string(e.line) != line || cap(e.line) != len(e.line) {
		t.Errorf("line %q (cap %d), want %q with no spare capacity", e.line, cap(e.line), line)
	}
	if (unsafe.StringData(e.key) == unsafe.StringData(e.canon)) != tt.shareKey {
		t.Errorf("key shares the stored key's bytes: %v, want %v", !tt.shareKey, tt.shareKey)
	}
	want := int64(len(e.line) + len(e.key) + entryOverhead + tt.extraCost)
	if e.cost != want {
		t.Errorf("cost %d, want %d", e.cost, want)
	}
	// The entry owns its bytes: neither the row nor the reused scratch is kept.
	if unsafe.StringData(e.canon) == unsafe.StringData(tt.row.Key) {
		t.Error("the entry keeps the row's key string (and with it the row's memory)")
	}
	for i := range scratch[:cap(scratch)] {
		scratch[:cap(scratch)][i] = '#'
	}
	// A second entry from the same slab must not share the first one's bytes.
	if sl != nil {
		newEntry(Row{Key: "ZZ-999", Values: []string{"other"}}, DefaultRender, nil, sl)
	}
	if string(e.line) != line || e.key != tt.key || e.canon != tt.row.Key {
		t.Errorf("later writes changed the entry: %q %q %q", e.key, e.canon, e.line)
	}
}

func TestChain(t *testing.T) {
	a := &entry{key: "a", cost: 1}
	b := &entry{key: "b", cost: 2, next: a}
	c := &entry{key: "c", cost: 4, next: b}
	if got := chainCost(c); got != 7 {
		t.Errorf("chainCost = %d, want 7", got)
	}
	if c.find([]byte("a")) != a || c.findString("b") != b || c.find([]byte("x")) != nil {
		t.Error("find does not walk the chain")
	}
	rest := without(c, "b")
	if rest.findString("b") != nil || rest.findString("a") == nil || rest.findString("c") == nil || chainCost(rest) != 5 {
		t.Errorf("without(b) = %+v", rest)
	}
	if c.next != b || b.next != a {
		t.Error("without modified the original chain")
	}
	if without(a, "a") != nil {
		t.Error("without of the only entry is not empty")
	}
}

// TestNewEntryAllocations pins the layout: an entry is its struct and one block of bytes.
func TestNewEntryAllocations(t *testing.T) {
	row := Row{Key: "A7-001", Values: []string{"车体新厂房3号"}}
	scratch := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { _, scratch = newEntry(row, DefaultRender, scratch, nil) }); n != 2 {
		t.Errorf("newEntry allocates %v times, want 2 (the entry and its bytes)", n)
	}
	sl := new(slab)
	if n := testing.AllocsPerRun(1000, func() { _, scratch = newEntry(row, DefaultRender, scratch, sl) }); n > 0.01 {
		t.Errorf("newEntry from a slab allocates %v times per entry, want a block now and then", n)
	}
}

func TestSlab(t *testing.T) {
	sl := new(slab)
	seen := map[*entry]bool{}
	for range 3 * slabEntries {
		e := sl.entry()
		if seen[e] || e.key != "" || e.line != nil || e.next != nil {
			t.Fatalf("entry %p handed out twice or not zero: %+v", e, *e)
		}
		seen[e] = true
		e.key = "used"
	}
	var total int
	prev := sl.bytes(10)
	for range 3 * slabBytes / 100 {
		b := sl.bytes(100)
		if len(b) != 100 || cap(b) != 100 {
			t.Fatalf("bytes(100): len %d cap %d", len(b), cap(b))
		}
		for i := range b {
			if b[i] != 0 {
				t.Fatal("bytes not zero")
			}
			b[i] = 0xff
		}
		total += len(b)
	}
	if prev[0] != 0 {
		t.Error("a later request overwrote an earlier one")
	}
	big := sl.bytes(slabBytes)
	if len(big) != slabBytes || cap(big) != slabBytes {
		t.Errorf("a large request: len %d cap %d", len(big), cap(big))
	}
	var none *slab
	if e := none.entry(); e == nil || len(none.bytes(5)) != 5 {
		t.Error("a nil slab does not allocate from the heap")
	}
}

func BenchmarkNewEntry(b *testing.B) {
	row := Row{Key: "18-546", Values: []string{"车体新厂房3号"}}
	var scratch []byte
	b.ReportAllocs()
	for b.Loop() {
		_, scratch = newEntry(row, DefaultRender, scratch, nil)
	}
}
