package main

import (
	"context"
	"slices"
	"time"

	"wxlookup/bench/report"
)

// heapMetric is the Go heap in use that the harness follows in wxlookup's /metrics.
const heapMetric = "go_memstats_heap_inuse_bytes"

type heapSample struct {
	at    time.Time
	bytes float64
}

// watchHeap samples heapMetric from the admin listener at admin every interval until the
// returned stop is called, which returns the samples taken and the median time a scrape
// took (what the sampling costs wxlookup, roughly).
func watchHeap(ctx context.Context, admin string, every time.Duration) (stop func() ([]heapSample, time.Duration)) {
	ctx, cancel := context.WithCancel(ctx)
	var samples []heapSample
	var took []time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			start := time.Now()
			if m, err := metrics(ctx, admin); err == nil {
				if v, ok := m[heapMetric]; ok {
					samples = append(samples, heapSample{at: start, bytes: v})
					took = append(took, time.Since(start))
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() ([]heapSample, time.Duration) {
		cancel()
		<-done
		if len(took) == 0 {
			return samples, 0
		}
		slices.Sort(took)
		return samples, took[len(took)/2]
	}
}

// heapOf summarises the samples for the report, their times from start (the run's).
func heapOf(samples []heapSample, start time.Time, scrape time.Duration) *report.Heap {
	if len(samples) == 0 {
		return nil
	}
	h := &report.Heap{Scrape: scrape}
	sum := 0.0
	for _, s := range samples {
		h.Points = append(h.Points, report.HeapPoint{At: s.at.Sub(start), Bytes: s.bytes})
		sum += s.bytes
		h.Peak = max(h.Peak, s.bytes)
	}
	h.Mean = sum / float64(len(samples))
	return h
}
