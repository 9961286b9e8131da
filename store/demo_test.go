package store

import (
	"testing"

	"wxlookup/cache"
)

func TestDemoRowFixed(t *testing.T) {
	tests := []struct {
		name        string
		i           int
		key, prefix string
	}{
		{"the example", 0, "18-546", "车体新厂房3号"},
		{"letter key", 1, "A7-001", "总装车间A区12排"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, v := DemoRow(tt.i)
			if k != tt.key || v != tt.prefix {
				t.Fatalf("got %q %q, want %q %q", k, v, tt.key, tt.prefix)
			}
		})
	}
}

func TestDemoRowUnique(t *testing.T) {
	// Unique under the service's normalisation: the start of the scrambled span, its end
	// and past it, where keys are no longer scrambled.
	seen := map[string]int{}
	check := func(from, to int) {
		for i := from; i < to; i++ {
			k, v := DemoRow(i)
			if k == "" || v == "" {
				t.Fatalf("row %d: got %q %q, want non-empty", i, k, v)
			}
			nk := cache.Key(k)
			if j, dup := seen[nk]; dup {
				t.Fatalf("row %d: key %q already row %d", i, k, j)
			}
			seen[nk] = i
		}
	}
	check(0, 100_000)
	check(demoSpan-20_000, demoSpan+20_000)
}

func TestDemoRowDeterministic(t *testing.T) {
	for _, i := range []int{2, 3, 999, 123456, demoSpan + 5} {
		k1, v1 := DemoRow(i)
		k2, v2 := DemoRow(i)
		if k1 != k2 || v1 != v2 {
			t.Fatalf("row %d: got %q %q then %q %q", i, k1, v1, k2, v2)
		}
	}
}
