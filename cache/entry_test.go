package cache

import (
	"testing"
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
			if got := string(DefaultRender(tt.row)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
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
			e, _ := newEntry(tt.row, DefaultRender, nil)
			if e.key != tt.key || e.canon != tt.row.Key {
				t.Fatalf("key %q canon %q, want %q %q", e.key, e.canon, tt.key, tt.row.Key)
			}
			want := int64(len(e.line) + len(e.key) + entryOverhead + tt.extraCost)
			if e.cost != want {
				t.Errorf("cost %d, want %d", e.cost, want)
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

func BenchmarkNewEntry(b *testing.B) {
	row := Row{Key: "18-546", Values: []string{"车体新厂房3号"}}
	var scratch []byte
	b.ReportAllocs()
	for b.Loop() {
		_, scratch = newEntry(row, DefaultRender, scratch)
	}
}
