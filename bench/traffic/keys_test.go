package traffic

import (
	"math"
	"testing"

	"wxlookup/store"
)

func TestKeysDistribution(t *testing.T) {
	const rows, n, s, unknown = 100_000, 400_000, 1.1, 0.10
	k, err := NewKeys(1, rows, s, unknown)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int]int{}
	missing := 0
	for range n {
		row, known := k.Next()
		switch {
		case !known:
			missing++
			if row < rows || row >= 2*rows {
				t.Fatalf("unknown number at row %d, want in [%d, %d)", row, rows, 2*rows)
			}
		case row < 0 || row >= rows:
			t.Fatalf("known number at row %d, want in [0, %d)", row, rows)
		default:
			counts[row]++
		}
	}
	if got := float64(missing) / n; math.Abs(got-unknown) > 0.005 {
		t.Errorf("unknown share %.4f, want %.2f ± 0.005", got, unknown)
	}
	// Zipf with v=1: P(rank r) ∝ (1+r)^-s, so rank 0 is 2^s times as frequent as rank 1
	// and 3^s/2^s times as frequent as rank 2 … and rank 0 is row 0, 18-546.
	r0, r1, r2 := counts[k.Row(0)], counts[k.Row(1)], counts[k.Row(2)]
	if k.Row(0) != 0 {
		t.Errorf("rank 0 is row %d, want row 0", k.Row(0))
	}
	for _, tt := range []struct {
		name      string
		got, want float64
	}{
		{"rank0/rank1", float64(r0) / float64(r1), math.Pow(2, s)},
		{"rank1/rank2", float64(r1) / float64(r2), math.Pow(1.5, s)},
	} {
		if math.Abs(tt.got-tt.want)/tt.want > 0.08 {
			t.Errorf("%s = %.3f, want %.3f ± 8%%", tt.name, tt.got, tt.want)
		}
	}
	// A long tail: many distinct rows are asked for, and the hottest is far above the mean.
	if len(counts) < rows/4 {
		t.Errorf("%d distinct rows asked for, want a long tail (≥ %d)", len(counts), rows/4)
	}
	// The popular rows are spread over the table, not bunched at its start.
	if k.Row(1) < rows/100 && k.Row(2) < rows/100 && k.Row(3) < rows/100 {
		t.Errorf("ranks 1-3 at rows %d, %d, %d: not spread", k.Row(1), k.Row(2), k.Row(3))
	}
}

func TestKeysPermutation(t *testing.T) {
	for _, rows := range []int{1, 2, 10, 1000, 4096, 1_000_000} {
		k, err := NewKeys(7, rows, 1.2, 0)
		if err != nil {
			t.Fatal(err)
		}
		if rows > 5000 {
			continue
		}
		seen := make([]bool, rows)
		for r := range rows {
			row := k.Row(uint64(r))
			if seen[row] {
				t.Fatalf("rows=%d: rank %d maps to row %d twice", rows, r, row)
			}
			seen[row] = true
		}
	}
}

func TestKeysDeterministicAndValid(t *testing.T) {
	a, _ := NewKeys(42, 1000, 1.1, 0.1)
	b, _ := NewKeys(42, 1000, 1.1, 0.1)
	for range 1000 {
		ra, _ := a.Next()
		rb, _ := b.Next()
		if ra != rb {
			t.Fatalf("same seed, different picks %d and %d", ra, rb)
		}
	}
	if got, want := Key(0), store.DemoKey; got != want {
		t.Errorf("Key(0) = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		name       string
		rows       int
		s, unknown float64
	}{{"no rows", 0, 1.1, 0}, {"s=1", 10, 1, 0}, {"unknown=1", 10, 1.1, 1}, {"negative", 10, 1.1, -0.1}} {
		if _, err := NewKeys(1, tt.rows, tt.s, tt.unknown); err == nil {
			t.Errorf("%s: NewKeys succeeded, want an error", tt.name)
		}
	}
}
