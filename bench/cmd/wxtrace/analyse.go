package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// Names the runtime gives its ranges and metrics in an execution trace (Go 1.22+).
const (
	rangeMark    = "GC concurrent mark phase"
	rangeAssist  = "GC mark assist"
	metricHeap   = "/memory/classes/heap/objects:bytes"
	metricGoal   = "/gc/heap/goal:bytes"
	endOfTrace   = "end of trace"
	unknownFrame = "?"
)

// events is the stream analyse reads; *trace.Reader is one.
type events interface {
	ReadEvent() (trace.Event, error)
}

// options are the analysis's settings. Offsets are from the trace's first event.
type options struct {
	window time.Duration // the length of a row
	from   time.Duration // the start of the range analysed
	to     time.Duration // its end; 0 for the trace's end
	slow   time.Duration // a webhook goroutine Running longer than this is a long run
	rules  []rule        // how goroutines are classified; nil for defaultRules
}

// Defaults of the options.
const (
	DefaultWindow = 100 * time.Millisecond
	DefaultSlow   = 3 * time.Millisecond
)

// validate names the first bad setting.
func (o options) validate() error {
	switch {
	case o.window <= 0:
		return fmt.Errorf("window %s: must be positive", o.window)
	case o.from < 0:
		return fmt.Errorf("from %s: must not be negative", o.from)
	case o.to != 0 && o.to <= o.from:
		return fmt.Errorf("to %s: must be after from (%s), or 0 for the trace's end", o.to, o.from)
	case o.slow <= 0:
		return fmt.Errorf("slow %s: must be positive", o.slow)
	}
	return nil
}

// result is what analyse finds in a trace. Offsets are from the trace's first event.
type result struct {
	span       time.Duration // from the trace's first event to its last
	from, to   time.Duration // the range analysed; to is at most span
	window     time.Duration
	goroutines [numClasses]int // goroutines seen, by class
	gcs        []gcPhase       // mark phases overlapping the range, in order
	windows    []window        // consecutive, covering the range
	longRuns   []longRun       // the webhook's runs longer than options.slow, longest first
}

// gcPhase is one concurrent mark phase of the collector.
type gcPhase struct {
	start, dur time.Duration
	before     bool   // it began before the trace did (start is then 0)
	after      bool   // it had not ended when the trace did
	heap, goal uint64 // heap in use and heap goal in bytes at its start; 0 if not yet reported
}

// window is one row: the range [start, start+length).
type window struct {
	start, length time.Duration
	cpu           [numClasses]time.Duration // time Running, by class
	assist        time.Duration             // time Running in GC mark assists, any class
	marking       bool                      // a mark phase overlapped it
	delay         delays                    // of the webhook goroutines that started running in it
}

// percent returns d as a percentage of the window's length: of a core, for time Running.
func (w window) percent(d time.Duration) float64 {
	if w.length <= 0 {
		return 0
	}
	return 100 * float64(d) / float64(w.length)
}

// delays summarises the scheduling delays (Runnable to Running) recorded in a window.
type delays struct {
	n             int
	p50, p99, max time.Duration
}

// longRun is a stretch of time longer than options.slow in which a goroutine stayed
// Running, between two of its transitions.
type longRun struct {
	g          trace.GoID
	start, dur time.Duration
	ended      string // the state it went to, and why: "Runnable (preempted)"
	where      string // the first function outside the runtime on its stack when it ended
}

// analyse reads a trace to its end and measures it, per window, as opt says.
//
// CPU is counted as the trace sees it: time in the Running state, so time in system calls
// is not. A goroutine's class is decided at the end, from every stack seen on its state
// transitions, and applies to its whole life.
func analyse(r events, opt options) (*result, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	if opt.rules == nil {
		opt.rules = defaultRules
	}
	a := &analyser{opt: opt, gs: map[trace.GoID]*goroutine{}, stackClass: map[trace.Stack]class{},
		mark: -1, hi: time.Duration(math.MaxInt64)}
	if opt.to > 0 {
		a.hi = opt.to
	}
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read trace: %w", err)
		}
		a.event(ev)
	}
	if !a.started {
		return nil, errors.New("read trace: no events")
	}
	return a.finish()
}

// analyser is analyse's state while it reads.
type analyser struct {
	opt     options
	started bool
	t0      trace.Time // the first event's
	last    trace.Time // the latest event's
	hi      time.Duration

	gs         map[trace.GoID]*goroutine
	stackClass map[trace.Stack]class // of the current generation's stacks
	funcs      []string              // scratch for classifying a stack

	heap, goal uint64 // the latest metrics
	gcs        []gcPhase
	mark       int // index in gcs of the phase in progress, or -1

	cpu    []piece // by goroutine, merged per window
	sched  []piece // scheduling delays
	assist []time.Duration
	runs   []goroutineRun
}

// goroutine is what analyse tracks of one goroutine.
type goroutine struct {
	id         trace.GoID
	class      class
	state      trace.GoState
	since      trace.Time // when it entered state
	sinceKnown bool       // false if it was in state when the trace began
	assisting  bool
	assistFrom trace.Time // when its current stretch of assist while Running began
	lastCPU    int        // 1 + the index in cpu of its latest piece; 0 for none
}

// piece is a duration recorded for a goroutine in a window, its class decided later.
type piece struct {
	g   *goroutine
	win int
	d   time.Duration
}

type goroutineRun struct {
	g *goroutine
	longRun
}

func (a *analyser) offset(t trace.Time) time.Duration { return time.Duration(t - a.t0) }

func (a *analyser) event(ev trace.Event) {
	now := ev.Time()
	if !a.started {
		a.started, a.t0 = true, now
	}
	a.last = max(a.last, now)
	switch ev.Kind() {
	case trace.EventSync:
		clear(a.stackClass) // stacks are per generation
	case trace.EventMetric:
		m := ev.Metric()
		if m.Value.Kind() != trace.ValueUint64 {
			return
		}
		switch m.Name {
		case metricHeap:
			a.heap = m.Value.Uint64()
		case metricGoal:
			a.goal = m.Value.Uint64()
		}
	case trace.EventRangeBegin, trace.EventRangeActive:
		a.rangeBegin(ev, ev.Kind() == trace.EventRangeActive)
	case trace.EventRangeEnd:
		a.rangeEnd(ev)
	case trace.EventStateTransition:
		if st := ev.StateTransition(); st.Resource.Kind == trace.ResourceGoroutine {
			a.transition(now, st)
		}
	}
}

// rangeBegin starts a mark phase or an assist. A range active at the start of a
// generation is reported again as active; only its first report starts it.
func (a *analyser) rangeBegin(ev trace.Event, active bool) {
	r, now := ev.Range(), ev.Time()
	switch r.Name {
	case rangeMark:
		if a.mark < 0 {
			a.mark = len(a.gcs)
			a.gcs = append(a.gcs, gcPhase{start: a.offset(now), before: active, heap: a.heap, goal: a.goal})
		}
	case rangeAssist:
		if r.Scope.Kind != trace.ResourceGoroutine {
			return
		}
		if g := a.goroutine(r.Scope.Goroutine()); !g.assisting {
			g.assisting, g.assistFrom = true, now
		}
	}
}

func (a *analyser) rangeEnd(ev trace.Event) {
	r, now := ev.Range(), ev.Time()
	switch r.Name {
	case rangeMark:
		if a.mark >= 0 {
			p := &a.gcs[a.mark]
			p.dur = a.offset(now) - p.start
			a.mark = -1
		}
	case rangeAssist:
		if r.Scope.Kind != trace.ResourceGoroutine {
			return
		}
		g := a.goroutine(r.Scope.Goroutine())
		if g.assisting && g.state == trace.GoRunning {
			a.addAssist(g.assistFrom, now)
		}
		g.assisting = false
	}
}

// transition follows a goroutine from one state to the next:
//  1. the stack of the goroutine making it (not the event's, which for a wake-up is the
//     waker's) may raise the goroutine's class;
//  2. leaving Running ends a run, whose time goes to the windows it spans;
//  3. Runnable to Running is a scheduling delay, recorded in the window it ends in;
//  4. entering a state starts the clock for the next transition.
func (a *analyser) transition(now trace.Time, st trace.StateTransition) {
	g := a.goroutine(st.Resource.Goroutine())
	g.class = max(g.class, a.classOf(st.Stack))
	from, to := st.Goroutine()
	if from == trace.GoRunning && g.state == trace.GoRunning {
		a.ran(g, now, func() (string, string) { return ended(to, st.Reason), where(st.Stack) })
	}
	if to == trace.GoRunning && from == trace.GoRunnable && g.state == trace.GoRunnable && g.sinceKnown {
		if off := a.offset(now); off >= a.opt.from && off < a.hi {
			a.sched = append(a.sched, piece{g: g, win: a.win(off), d: time.Duration(now - g.since)})
		}
	}
	if to == trace.GoRunning && g.state == trace.GoRunning {
		return // already running, as far as this analysis knows: keep its start
	}
	g.state, g.since, g.sinceKnown = to, now, from != trace.GoUndetermined
	if to == trace.GoRunning && g.assisting {
		g.assistFrom = now
	}
}

// ran ends g's current run at now. describe says how it ended; it is called only for a
// long run.
func (a *analyser) ran(g *goroutine, now trace.Time, describe func() (ended, where string)) {
	a.spread(g.since, now, func(i int, d time.Duration) {
		if g.lastCPU > 0 && a.cpu[g.lastCPU-1].win == i {
			a.cpu[g.lastCPU-1].d += d
			return
		}
		a.cpu = append(a.cpu, piece{g: g, win: i, d: d})
		g.lastCPU = len(a.cpu)
	})
	if g.assisting {
		a.addAssist(g.assistFrom, now)
	}
	start, dur := a.offset(g.since), time.Duration(now-g.since)
	if dur > a.opt.slow && start >= a.opt.from && start < a.hi {
		e, w := describe()
		a.runs = append(a.runs, goroutineRun{g: g, longRun: longRun{g: g.id, start: start, dur: dur, ended: e, where: w}})
	}
}

func (a *analyser) addAssist(from, to trace.Time) {
	a.spread(from, to, func(i int, d time.Duration) {
		for len(a.assist) <= i {
			a.assist = append(a.assist, 0)
		}
		a.assist[i] += d
	})
}

// spread calls add with each window's share of [from, to), clipped to the range analysed.
func (a *analyser) spread(from, to trace.Time, add func(win int, d time.Duration)) {
	lo, hi := max(a.offset(from), a.opt.from), min(a.offset(to), a.hi)
	for lo < hi {
		i := a.win(lo)
		end := min(a.opt.from+time.Duration(i+1)*a.opt.window, hi)
		add(i, end-lo)
		lo = end
	}
}

// win is the index of the window holding offset off, which is in the range analysed.
func (a *analyser) win(off time.Duration) int { return int((off - a.opt.from) / a.opt.window) }

func (a *analyser) goroutine(id trace.GoID) *goroutine {
	g := a.gs[id]
	if g == nil {
		g = &goroutine{id: id, state: trace.GoUndetermined}
		a.gs[id] = g
	}
	return g
}

// classOf classifies a stack, once per stack of a generation.
func (a *analyser) classOf(s trace.Stack) class {
	if s == trace.NoStack {
		return classOther
	}
	if c, ok := a.stackClass[s]; ok {
		return c
	}
	a.funcs = a.funcs[:0]
	for f := range s.Frames() {
		a.funcs = append(a.funcs, f.Func)
	}
	c := classify(a.funcs, a.opt.rules)
	a.stackClass[s] = c
	return c
}

// finish ends what the trace left open and lays the pieces out in windows, now that
// every goroutine's class is known.
func (a *analyser) finish() (*result, error) {
	res := &result{span: a.offset(a.last), from: a.opt.from, window: a.opt.window}
	res.to = min(a.hi, res.span)
	if res.to <= res.from {
		return nil, fmt.Errorf("nothing to analyse: the trace spans %s, the range starts at %s", res.span, res.from)
	}
	for _, g := range a.gs {
		if g.state == trace.GoRunning {
			a.ran(g, a.last, func() (string, string) { return endOfTrace, unknownFrame })
		}
		res.goroutines[g.class]++
	}
	if a.mark >= 0 {
		p := &a.gcs[a.mark]
		p.dur, p.after = res.span-p.start, true
	}

	n := int((res.to - res.from + res.window - 1) / res.window)
	res.windows = make([]window, n)
	for i := range res.windows {
		w := &res.windows[i]
		w.start = res.from + time.Duration(i)*res.window
		w.length = min(res.window, res.to-w.start)
	}
	for _, p := range a.cpu {
		res.windows[p.win].cpu[p.g.class] += p.d
	}
	for i, d := range a.assist {
		res.windows[i].assist = d
	}
	sched := make([][]time.Duration, n)
	for _, p := range a.sched {
		if p.g.class == classWebhook && p.win < n { // p.win is n for a delay ending on the trace's last event
			sched[p.win] = append(sched[p.win], p.d)
		}
	}
	for i, ds := range sched {
		res.windows[i].delay = summariseDelays(ds)
	}
	for _, p := range a.gcs {
		end := p.start + p.dur
		if end < res.from || p.start >= res.to {
			continue
		}
		res.gcs = append(res.gcs, p)
		first := a.win(max(p.start, res.from))
		for i := first; i < n && (i == first || res.windows[i].start < end); i++ {
			res.windows[i].marking = true
		}
	}
	for _, r := range a.runs {
		if r.g.class == classWebhook {
			res.longRuns = append(res.longRuns, r.longRun)
		}
	}
	slices.SortFunc(res.longRuns, func(x, y longRun) int {
		return cmp.Or(cmp.Compare(y.dur, x.dur), cmp.Compare(x.start, y.start), cmp.Compare(x.g, y.g))
	})
	return res, nil
}

// summariseDelays sorts ds and returns its count, median, 99th percentile and maximum.
func summariseDelays(ds []time.Duration) delays {
	if len(ds) == 0 {
		return delays{}
	}
	slices.Sort(ds)
	return delays{n: len(ds), p50: percentile(ds, 50), p99: percentile(ds, 99), max: ds[len(ds)-1]}
}

// percentile returns the p-th percentile (0 < p ≤ 100) of the sorted, non-empty ds by
// nearest rank: the smallest value at least p % of ds are at or below.
func percentile(ds []time.Duration, p int) time.Duration {
	return ds[max((p*len(ds)+99)/100-1, 0)]
}

// ended describes a transition out of Running: the state it led to and why.
func ended(to trace.GoState, reason string) string {
	if reason == "" {
		return to.String()
	}
	return fmt.Sprintf("%s (%s)", to, reason)
}

// where returns the first function on s outside the runtime, without its package path.
func where(s trace.Stack) string {
	fn := unknownFrame
	for f := range s.Frames() {
		if fn == unknownFrame {
			fn = f.Func // the leaf, if nothing else
		}
		if !strings.HasPrefix(f.Func, "runtime.") {
			fn = f.Func
			break
		}
	}
	// The path ends at the last "/" before a receiver or type parameters, which may
	// hold paths of their own.
	path := fn
	if i := strings.IndexAny(fn, "(["); i >= 0 {
		path = fn[:i]
	}
	return fn[strings.LastIndex(path, "/")+1:]
}
