package load

import (
	"math"
	"testing"
	"time"
)

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 100000; i++ { // 1µs … 100ms, uniform
		h.Record(time.Duration(i) * time.Microsecond)
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{
		{50, 50 * time.Millisecond},
		{90, 90 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{99.9, 99900 * time.Microsecond},
		{100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		got := h.Percentile(tt.p)
		if rel := math.Abs(float64(got-tt.want)) / float64(tt.want); rel > 0.001 {
			t.Errorf("p%g = %s, want %s within 0.1%%", tt.p, got, tt.want)
		}
	}
	if got, want := h.Count(), int64(100000); got != want {
		t.Errorf("Count() = %d, want %d", got, want)
	}
	if got, want := h.Max(), 100*time.Millisecond; math.Abs(float64(got-want))/float64(want) > 0.001 {
		t.Errorf("Max() = %s, want %s", got, want)
	}
	if got, want := h.Mean(), 50*time.Millisecond; math.Abs(float64(got-want))/float64(want) > 0.001 {
		t.Errorf("Mean() = %s, want %s", got, want)
	}
}

func TestHistogramTail(t *testing.T) {
	// 999 fast requests and one stalled one: p99 stays fast, p99.9 and max see the stall.
	h := NewHistogram()
	for range 999 {
		h.Record(100 * time.Microsecond)
	}
	h.Record(2 * time.Second)
	if got := h.Percentile(99); got > 101*time.Microsecond {
		t.Errorf("p99 = %s, want 100µs", got)
	}
	if got := h.Percentile(99.95); got < 1990*time.Millisecond {
		t.Errorf("p99.95 = %s, want 2s", got)
	}
	if got := h.Max(); got < 1990*time.Millisecond {
		t.Errorf("Max() = %s, want 2s", got)
	}
}

func TestHistogramMergeAndClamp(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	a.Record(time.Nanosecond) // below the range: counted as 1µs
	b.Record(time.Hour)       // above it: counted as 100s
	b.Record(3 * time.Millisecond)
	a.Merge(b)
	if got, want := a.Count(), int64(3); got != want {
		t.Fatalf("Count() = %d, want %d", got, want)
	}
	if got := a.Percentile(20); got != time.Microsecond {
		t.Errorf("min = %s, want 1µs", got)
	}
	if got := a.Max(); got < 99*time.Second || got > 101*time.Second {
		t.Errorf("Max() = %s, want 100s", got)
	}
	if got := NewHistogram().Percentile(99); got != 0 {
		t.Errorf("empty p99 = %s, want 0", got)
	}
}
