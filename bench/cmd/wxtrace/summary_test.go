package main

import (
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	const ms = time.Millisecond
	// win returns a 100 ms window in which the loader ran loader and the webhook's p99
	// scheduling delay was p99 over n goroutines.
	win := func(loader, p99 time.Duration, n int) window {
		w := window{length: 100 * ms, delay: delays{n: n, p50: p99 / 2, p99: p99, max: p99}}
		w.cpu[classLoader] = loader
		return w
	}
	marking := win(50*ms, 90*ms, 10)
	marking.marking = true
	assisted := win(0, 80*ms, 10)
	assisted.assist = ms
	res := &result{windows: []window{
		win(0, 1*ms, 10), win(2*ms, 3*ms, 10), win(2900*time.Microsecond, 2*ms, 10), // quiet
		win(15*ms, 10*ms, 10), win(60*ms, 20*ms, 10), // busy
		win(3*ms, 70*ms, 10), win(14*ms, 60*ms, 10), // between
		marking, assisted,
		win(0, 0, 0), win(40*ms, 0, 0), // nothing scheduled
	}}
	got := summarise(res)
	if want := (group{windows: 3, median: 2 * ms, p90: 3 * ms}); got.quiet != want {
		t.Errorf("quiet: got %+v, want %+v", got.quiet, want)
	}
	if want := (group{windows: 2, median: 10 * ms, p90: 20 * ms}); got.busy != want {
		t.Errorf("busy: got %+v, want %+v", got.busy, want)
	}
	if got.gc != 2 || got.between != 2 || got.unscheduled != 2 {
		t.Errorf("left out: got %d for GC, %d between, %d unscheduled; want 2 each", got.gc, got.between, got.unscheduled)
	}
}
