package cache

import (
	"context"
	rtmetrics "runtime/metrics"
	"time"
)

// paceEvery is how many rows a paced rebuild handles between pauses: about a millisecond
// of work, short enough that a waiting reply is not held up behind it.
const paceEvery = 1024

// Pacing bounds: a pause is between paceMin and paceMax times the slice of work before it
// (a duty cycle of 50 % down to about 6 %).
const (
	paceMin = 1
	paceMax = 16
)

// paceCrowded is the scheduling delay above which the process counts as short of CPU: a
// tenth of the goroutines that became runnable during the last slice and pause waited at
// least this long for a thread.
const paceCrowded = 500 * time.Microsecond

// A rebuild runs at the kernel's idle priority (see background). On a machine whose cores
// are all busy it would barely progress, while the refresh waits for it. So the pacer
// counts the rebuild as starved when its thread has waited on the kernel's run queue
// paceStarvedSlice within one slice of paceEvery rows (about a millisecond of work), or
// paceStarvedTotal since the rebuild began. The thread then goes back to normal priority,
// and the pacer alone spaces the work out, as it did before idle priority. Waiting for
// MySQL is not waiting on the run queue, so slow pages of rows do not count. A reload at
// 20,000 req/s on two cores had slices that waited 100 ms, and took 12 s in all.
const (
	paceStarvedSlice = time.Second
	paceStarvedTotal = 30 * time.Second
)

// pacer spreads a rebuild of a cache that is already serving (a Reload, a reconcile scan)
// out in time, so that it leaves CPU to the webhook. After each slice of paceEvery rows it
// pauses for a multiple of the slice's duration. The multiple adapts to how crowded the
// process is: when, since the last pause, goroutines waited for a thread longer than
// paceCrowded (the Go scheduler's own latency histogram, which rises when the webhook's
// goroutines queue for CPU), it doubles, up to paceMax; otherwise it halves, down to
// paceMin. An idle server thus rebuilds at a 50 % duty cycle, and a saturated one yields
// almost all of the CPU. The first warm is not paced: nothing is served yet, and
// readiness should come as soon as it can. A pacer is used by one goroutine, the one
// doing the rebuild (its thread is the one starved restores).
type pacer struct {
	on    bool
	n     int
	start time.Time
	ratio int
	// now, sleep, crowded and starved are replaced by tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	// crowded reports whether the process was short of CPU since its last call.
	crowded func() bool
	// runWait is the thread's total wait on the kernel's run queue (ok false: unknown);
	// starved is called once, when the rebuild is first found starved.
	runWait func() (time.Duration, bool)
	began   time.Duration // runWait when the rebuild began
	waited  time.Duration // runWait at the slice's start
	starved func()
}

func newPacer(on bool) *pacer {
	p := &pacer{on: on, start: time.Now(), ratio: paceMin, now: time.Now, sleep: sleepCtx,
		runWait: threadRunWait, starved: restoreThreadPriority}
	if on {
		p.crowded = newSchedProbe(paceCrowded).crowded
		p.began, _ = p.runWait()
		p.waited = p.began
	}
	return p
}

// tick counts one row and pauses after every paceEvery rows. It returns ctx's error if ctx
// ends during a pause.
func (p *pacer) tick(ctx context.Context) error {
	if !p.on {
		return nil
	}
	p.n++
	if p.n%paceEvery != 0 {
		return nil
	}
	worked := p.now().Sub(p.start)
	if p.starved != nil {
		if w, ok := p.runWait(); ok && (w-p.waited >= paceStarvedSlice || w-p.began >= paceStarvedTotal) {
			p.starved()
			p.starved = nil
		}
	}
	if p.crowded() {
		p.ratio = min(2*p.ratio, paceMax)
	} else {
		p.ratio = max(p.ratio/2, paceMin)
	}
	if err := p.sleep(ctx, time.Duration(p.ratio)*worked); err != nil {
		return err
	}
	p.start = p.now()
	if p.starved != nil {
		p.waited, _ = p.runWait()
	}
	return nil
}

// sleepCtx pauses for d, or returns ctx's error as soon as ctx is done (also when it is
// already done and d is short).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// schedProbe reads the runtime's histogram of goroutine scheduling latency and tells
// whether, since the last read, at least a tenth of the goroutines made runnable waited
// longer than a threshold before they ran.
type schedProbe struct {
	threshold float64 // seconds
	sample    []rtmetrics.Sample
	last      []uint64
}

const schedLatencies = "/sched/latencies:seconds"

func newSchedProbe(threshold time.Duration) *schedProbe {
	s := &schedProbe{threshold: threshold.Seconds(), sample: []rtmetrics.Sample{{Name: schedLatencies}}}
	s.crowded() // the baseline
	return s
}

func (s *schedProbe) crowded() bool {
	rtmetrics.Read(s.sample)
	if s.sample[0].Value.Kind() != rtmetrics.KindFloat64Histogram {
		return false // not offered by this runtime: never crowded, a fixed 50 % duty
	}
	return s.crowdedFrom(s.sample[0].Value.Float64Histogram())
}

// crowdedFrom is crowded for a read of the cumulative histogram h.
func (s *schedProbe) crowdedFrom(h *rtmetrics.Float64Histogram) bool {
	if len(s.last) != len(h.Counts) {
		s.last = make([]uint64, len(h.Counts))
	}
	var total, slow uint64
	for i, c := range h.Counts {
		d := c - s.last[i]
		s.last[i] = c
		total += d
		if h.Buckets[i] >= s.threshold { // the bucket's lower bound
			slow += d
		}
	}
	return total > 0 && slow*10 >= total
}
