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

func TestNewEntry(t *testing.T) {
	tests := []struct {
		name      string
		row       Row
		key       string
		shareKey  bool // the normalised key is the stored key's string
		extraCost int  // bytes beyond line, key and overhead
	}{
		{"already normal", Row{Key: "18-546", Values: []string{"v"}}, "18-546", true, 0},
		{"upper case", Row{Key: "A7-001", Values: []string{"v"}}, "a7-001", false, len("A7-001")},
		{"full width", Row{Key: "Ａ７", Values: []string{"v"}}, "a7", false, len("Ａ７")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scratch := make([]byte, 0, 64)
			e, scratch := newEntry(tt.row, DefaultRender, scratch)
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
			if string(e.line) != line || e.key != tt.key || e.canon != tt.row.Key {
				t.Errorf("overwriting the scratch changed the entry: %q %q %q", e.key, e.canon, e.line)
			}
		})
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
	if n := testing.AllocsPerRun(100, func() { _, scratch = newEntry(row, DefaultRender, scratch) }); n != 2 {
		t.Errorf("newEntry allocates %v times, want 2 (the entry and its bytes)", n)
	}
}

func BenchmarkNewEntry(b *testing.B) {
	row := Row{Key: "18-546", Values: []string{"车体新厂房3号"}}
	var scratch []byte
	b.ReportAllocs()
	for b.Loop() {
		_, scratch = newEntry(row, DefaultRender, scratch)
	}
}
