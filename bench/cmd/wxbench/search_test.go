package main

import (
	"slices"
	"testing"
)

// runBisect drives a search against a system that passes every step at or below capacity.
func runBisect(start, capacity float64) (best float64, rates []float64) {
	b := newBisect(start)
	for !b.done {
		rates = append(rates, b.rate)
		b.record(b.rate <= capacity)
	}
	return b.best(), rates
}

func TestBisect(t *testing.T) {
	tests := []struct {
		name            string
		start, capacity float64
		best            float64
		rates           []float64
	}{
		{"halve then bisect", 40000, 24000, 23750, []float64{40000, 20000, 30000, 25000, 22500, 23750, 24375}},
		{"double then bisect", 10000, 26000, 25000, []float64{10000, 20000, 40000, 30000, 25000, 27500, 26250}},
		{"nothing passes", 1000, 0, 0, []float64{1000, 500, 250, 125}},
		{"everything passes: bounded by maxSteps", 1000, 1e12, 512000,
			[]float64{1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			best, rates := runBisect(tt.start, tt.capacity)
			if best != tt.best || !slices.Equal(rates, tt.rates) {
				t.Errorf("best %v after %v; want %v after %v", best, rates, tt.best, tt.rates)
			}
			if len(rates) > maxSteps {
				t.Errorf("%d steps, more than maxSteps (%d)", len(rates), maxSteps)
			}
		})
	}
}
