package traffic

import (
	"fmt"
	"math/rand/v2"

	"wxlookup/store"
)

// Keys picks the workpiece numbers a run asks for: with probability unknown a number that
// is not in the table, otherwise a seeded row whose popularity rank follows a Zipf
// distribution with exponent s. Rank r is row r·stride mod rows, so the popular rows are
// spread over the table, and rank 0 is row 0, 18-546. Not safe for concurrent use.
type Keys struct {
	rows    int
	unknown float64
	r       *rand.Rand
	zipf    *rand.Zipf
	stride  uint64
}

// NewKeys returns a picker over rows seeded rows (store.DemoRow(0 … rows-1)). s must be
// greater than 1; unknown is the share of numbers not in the table, in [0, 1). The same
// seed gives the same sequence.
func NewKeys(seed uint64, rows int, s, unknown float64) (*Keys, error) {
	switch {
	case rows < 1:
		return nil, fmt.Errorf("traffic: %d rows, want at least 1", rows)
	case !(s > 1):
		return nil, fmt.Errorf("traffic: Zipf exponent %g, want > 1", s)
	case unknown < 0 || unknown >= 1:
		return nil, fmt.Errorf("traffic: unknown share %g, want 0 ≤ share < 1", unknown)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	k := &Keys{rows: rows, unknown: unknown, r: r, zipf: rand.NewZipf(r, s, 1, uint64(rows-1))}
	// A stride coprime with rows makes rank → row a permutation.
	k.stride = 2654435761 % uint64(rows)
	for gcd(k.stride, uint64(rows)) != 1 {
		k.stride++
	}
	return k, nil
}

// Next returns the row of the next number: in [0, rows) for a number in the table, or
// rows and beyond for one that is not (store.DemoRow of it is not seeded).
func (k *Keys) Next() (row int, known bool) {
	if k.unknown > 0 && k.r.Float64() < k.unknown {
		return k.rows + k.r.IntN(k.rows), false
	}
	return k.Row(k.zipf.Uint64()), true
}

// Row returns the row of popularity rank r.
func (k *Keys) Row(rank uint64) int { return int(rank * k.stride % uint64(k.rows)) }

// Key returns the workpiece number of row: store.DemoRow's key.
func Key(row int) string {
	key, _ := store.DemoRow(row)
	return key
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
