package cache

import (
	"context"
	"errors"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"testing"
	"time"
)

func TestPacerAdaptsToCrowding(t *testing.T) {
	crowded := []bool{false, true, true, true, true, true, false, false, false, false, false}
	var ratios []int
	clock := time.Unix(0, 0)
	p := newPacer(true)
	p.start = clock
	p.now = func() time.Time { return clock }
	p.sleep = func(_ context.Context, d time.Duration) error {
		ratios = append(ratios, int(d/(paceEvery*time.Microsecond)))
		clock = clock.Add(d)
		return nil
	}
	calls := 0
	p.crowded = func() bool { calls++; return crowded[calls-1] }
	for range len(crowded) * paceEvery {
		clock = clock.Add(time.Microsecond) // each row takes a microsecond
		if err := p.tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// A pause is the slice's duration times a ratio that doubles while the process is
	// crowded (up to paceMax) and halves when it is not (down to paceMin).
	want := []int{1, 2, 4, 8, 16, 16, 8, 4, 2, 1, 1}
	if !slices.Equal(ratios, want) {
		t.Errorf("pause ratios %v, want %v", ratios, want)
	}
}

// TestPacerStarved checks when a rebuild counts as starved: a slice in which the thread
// waited paceStarvedSlice on the run queue, or paceStarvedTotal since the rebuild began;
// not a slice merely long (waiting for MySQL), nor anything where the wait is unknown. It
// is reported once.
func TestPacerStarved(t *testing.T) {
	type slice struct{ took, queued time.Duration }
	many := func(n int, s slice) []slice { return slices.Repeat([]slice{s}, n) }
	half := slice{paceStarvedSlice, paceStarvedSlice / 2}
	for _, tt := range []struct {
		name   string
		known  bool
		slices []slice
		want   int // starved calls
	}{
		{"fed", true, []slice{{time.Millisecond, 0}, {2 * time.Second, paceStarvedSlice - time.Millisecond}}, 0},
		{"one slice starved", true, []slice{{time.Millisecond, 0}, {paceStarvedSlice, paceStarvedSlice}, {5 * time.Second, 5 * time.Second}}, 1},
		{"starved in all", true, many(int(paceStarvedTotal/half.queued), half), 1},
		{"not quite starved in all", true, many(int(paceStarvedTotal/half.queued)-1, half), 0},
		{"wait unknown", false, []slice{{5 * time.Second, 5 * time.Second}}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := time.Unix(0, 0)
			var runWait time.Duration
			p := newPacer(true)
			p.start = clock
			p.now = func() time.Time { return clock }
			p.sleep = func(_ context.Context, d time.Duration) error { clock = clock.Add(d); return nil }
			p.crowded = func() bool { return false }
			p.runWait = func() (time.Duration, bool) { return runWait, tt.known }
			p.began, p.waited = 0, 0
			starved := 0
			p.starved = func() { starved++ }
			for _, s := range tt.slices {
				clock, runWait = clock.Add(s.took), runWait+s.queued
				for range paceEvery {
					if err := p.tick(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
			}
			if starved != tt.want {
				t.Errorf("starved called %d times, want %d", starved, tt.want)
			}
		})
	}
}

func TestPacer(t *testing.T) {
	var pauses []time.Duration
	p := newPacer(true)
	p.sleep = func(_ context.Context, d time.Duration) error {
		pauses = append(pauses, d)
		return nil
	}
	p.crowded = func() bool { return false }
	for range 3*paceEvery + 10 {
		if err := p.tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(pauses) != 3 {
		t.Fatalf("got %d pauses for 3 slices of rows, want 3", len(pauses))
	}
	for i, d := range pauses {
		if d < 0 {
			t.Errorf("pause %d is %v, want the slice's own duration (≥ 0)", i, d)
		}
	}

	off := newPacer(false)
	off.sleep = func(context.Context, time.Duration) error { t.Fatal("an unpaced build paused"); return nil }
	for range 2 * paceEvery {
		off.tick(context.Background())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	real := newPacer(true)
	var err error
	for range paceEvery {
		err = real.tick(ctx)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("pause after cancel: got %v, want context.Canceled", err)
	}
}

func TestSchedProbeArithmetic(t *testing.T) {
	s := &schedProbe{threshold: 0.0005}
	buckets := []float64{0, 0.0001, 0.0005, 0.001, 0.01} // 4 buckets: [0,100µs) … [1ms,10ms)
	read := func(counts ...uint64) bool {
		return s.crowdedFrom(&rtmetrics.Float64Histogram{Counts: counts, Buckets: buckets})
	}
	if read(0, 0, 0, 0) {
		t.Error("no scheduling at all counts as crowded")
	}
	if read(95, 0, 5, 0) {
		t.Error("5% of wake-ups slow counts as crowded")
	}
	// Counts are cumulative: only the growth since the last read matters.
	if !read(100, 0, 10, 10) { // +5 fast, +5 slow, +10 slow
		t.Error("15 slow wake-ups of 20 since the last read do not count as crowded")
	}
	if read(190, 0, 10, 10) {
		t.Error("90 fast wake-ups and no slow ones count as crowded")
	}
}

// TestSchedProbeSeesCPUShortage runs four spinning goroutines per P: each
// waits for a P for a scheduler time slice (10 ms) at a time, which the runtime's own
// latency histogram records, so the probe must report the process crowded.
func TestSchedProbeSeesCPUShortage(t *testing.T) {
	s := newSchedProbe(paceCrowded)
	var sample = []rtmetrics.Sample{{Name: schedLatencies}}
	if rtmetrics.Read(sample); sample[0].Value.Kind() != rtmetrics.KindFloat64Histogram {
		t.Fatalf("this runtime does not offer %s", schedLatencies)
	}
	done := make(chan struct{})
	for range 4 * runtime.GOMAXPROCS(0) {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				for range 1000 {
					i *= 3
				}
			}
		}()
	}
	crowded := false
	deadline := time.Now().Add(5 * time.Second)
	for !crowded && time.Now().Before(deadline) {
		spin := time.Now().Add(50 * time.Millisecond)
		for time.Now().Before(spin) {
		}
		crowded = s.crowded()
	}
	close(done)
	if !crowded {
		t.Errorf("%d spinning goroutines for %d Ps: the probe never saw the process crowded", 4*runtime.GOMAXPROCS(0), runtime.GOMAXPROCS(0))
	}
}
