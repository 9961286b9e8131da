package load

import "time"

// Count returns how many requests ended with outcome o.
func (r *Result) Count(o Outcome) int {
	n := 0
	for _, x := range r.Outcome {
		if x == o {
			n++
		}
	}
	return n
}

// Errors returns how many requests did not end OK.
func (r *Result) Errors() int { return len(r.Outcome) - r.Count(OK) }

// Throughput is the OK replies a second, from the first due request to the last finished.
func (r *Result) Throughput() float64 {
	d := r.End.Sub(r.Start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.Count(OK)) / d
}

// Rate is the schedule's mean rate: requests a second offered.
func (r *Result) Rate() float64 {
	d := r.Schedule.Duration().Seconds()
	if d <= 0 {
		return 0
	}
	return float64(len(r.Schedule)-1) / d
}

// Histogram returns the latencies of every request, errors included.
func (r *Result) Histogram() *Histogram { return r.Window(0, r.Schedule.Duration()+1) }

// Window returns the latencies of the requests due at offsets in [from, to).
func (r *Result) Window(from, to time.Duration) *Histogram {
	h := NewHistogram()
	for i, at := range r.Schedule {
		if at >= from && at < to {
			h.Record(r.Latency[i])
		}
	}
	return h
}

// LagHistogram returns the lag of every request that was written: how late after its
// scheduled time it went out.
func (r *Result) LagHistogram() *Histogram {
	h := NewHistogram()
	for _, d := range r.Lag {
		if d >= 0 {
			h.Record(d)
		}
	}
	return h
}

// Slice is the latency summary of the requests due in one step of a Timeline.
type Slice struct {
	At                      time.Duration // offset of the step's start
	Requests, Errors        int
	P50, P99, P999, Maximum time.Duration
}

// Timeline summarises the run step by step of the schedule, for charts over time.
func (r *Result) Timeline(step time.Duration) []Slice {
	if step <= 0 || len(r.Schedule) == 0 {
		return nil
	}
	var out []Slice
	h, i := NewHistogram(), 0
	for at := time.Duration(0); i < len(r.Schedule); at += step {
		s := Slice{At: at}
		for ; i < len(r.Schedule) && r.Schedule[i] < at+step; i++ {
			h.Record(r.Latency[i])
			s.Requests++
			if r.Outcome[i] != OK {
				s.Errors++
			}
		}
		s.P50, s.P99, s.P999, s.Maximum = h.Percentile(50), h.Percentile(99), h.Percentile(99.9), h.Max()
		out = append(out, s)
		h.h.Reset()
	}
	return out
}
