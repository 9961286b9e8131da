package load

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: latencies are recorded in microseconds with three significant digits
// from 1µs to 100s; values outside are clamped to the range.
const (
	histMin = 1
	histMax = int64(100 * time.Second / time.Microsecond)
)

// Histogram is an HDR histogram of durations. It is not safe for concurrent use.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(histMin, histMax, 3)}
}

// Record adds one duration, clamped to [1µs, 100s].
func (h *Histogram) Record(d time.Duration) {
	v := min(max(int64(d/time.Microsecond), histMin), histMax)
	_ = h.h.RecordValue(v) // cannot fail: v is within the range
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Percentile returns the value below or at which p percent (0–100) of the recorded
// values fall, to three significant digits; 0 for an empty histogram.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return time.Duration(h.h.ValueAtQuantile(p)) * time.Microsecond
}

// Max returns the largest recorded value (to three significant digits).
func (h *Histogram) Max() time.Duration {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return time.Duration(h.h.Max()) * time.Microsecond
}

// Mean returns the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	return time.Duration(h.h.Mean() * float64(time.Microsecond))
}
