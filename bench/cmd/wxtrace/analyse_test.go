package main

import (
	"bytes"
	"reflect"
	"runtime"
	rtrace "runtime/trace"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/exp/trace"
)

// burn works the CPU for at most rounds rounds or until deadline, yielding now and then so
// that its stack shows up on its state transitions.
//
//go:noinline
func burn(rounds int, deadline time.Time) (sum uint64) {
	for i := 0; i < rounds && time.Now().Before(deadline); i++ {
		for j := range 10_000 {
			sum = sum*31 + uint64(i^j)
		}
		if i%8 == 0 {
			runtime.Gosched()
		}
	}
	return sum
}

// echo sends back what it receives until in is closed: each receive parks it until the
// next send wakes it.
//
//go:noinline
func echo(in <-chan int, out chan<- int) {
	for v := range in {
		out <- v
	}
	close(out)
}

func funcName(tb testing.TB, fn any) string {
	tb.Helper()
	f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer())
	if f == nil {
		tb.Fatalf("no name for %v", fn)
	}
	return f.Name()
}

// traceWork returns an execution trace, taken in this process, of a goroutine running burn,
// a goroutine running echo woken a few hundred times, and a forced collection.
func traceWork(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := rtrace.Start(&buf); err != nil {
		tb.Skipf("cannot trace (go test -trace?): %v", err)
	}
	done := make(chan uint64)
	go func() { done <- burn(2000, time.Now().Add(50*time.Millisecond)) }()
	in, out := make(chan int), make(chan int)
	go echo(in, out)
	for i := range 300 {
		in <- i
		if got := <-out; got != i {
			tb.Errorf("echo: got %d, want %d", got, i)
		}
	}
	close(in)
	<-out
	runtime.GC()
	<-done
	rtrace.Stop()
	return buf.Bytes()
}

// analyseBytes analyses a trace held in memory.
func analyseBytes(tb testing.TB, data []byte, opt options) *result {
	tb.Helper()
	r, err := trace.NewReader(bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	res, err := analyse(r, opt)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

func TestAnalyseTrace(t *testing.T) {
	data := traceWork(t)
	burnName, echoName := funcName(t, burn), funcName(t, echo)
	opt := options{window: 5 * time.Millisecond, slow: DefaultSlow,
		rules: append([]rule{{classLoader, burnName}, {classWebhook, echoName}}, defaultRules...)}
	res := analyseBytes(t, data, opt)

	t.Run("windows cover the span", func(t *testing.T) {
		if res.span <= 0 || res.from != 0 || res.to != res.span {
			t.Fatalf("span %s, range [%s, %s): want a positive span, analysed whole", res.span, res.from, res.to)
		}
		var next time.Duration
		for i, w := range res.windows {
			if w.start != next || w.length <= 0 || w.length > opt.window {
				t.Fatalf("window %d: [%s +%s), want a start of %s and a length in (0, %s]", i, w.start, w.length, next, opt.window)
			}
			next = w.start + w.length
		}
		if next != res.span {
			t.Errorf("windows end at %s, want the span, %s", next, res.span)
		}
	})

	t.Run("a mark phase", func(t *testing.T) {
		if len(res.gcs) == 0 {
			t.Fatal("no GC mark phase found after runtime.GC")
		}
		for _, p := range res.gcs {
			if p.dur <= 0 || p.start < 0 || p.start+p.dur > res.span {
				t.Errorf("mark phase at %s for %s: want it inside the span, %s", p.start, p.dur, res.span)
			}
		}
		marked := slices.ContainsFunc(res.windows, func(w window) bool { return w.marking })
		if !marked {
			t.Error("no window is marked as overlapping the mark phase")
		}
	})

	t.Run("the burning goroutine is the loader", func(t *testing.T) {
		if res.goroutines[classLoader] != 1 {
			t.Errorf("got %d loader goroutines, want 1 (burn)", res.goroutines[classLoader])
		}
		var cpu time.Duration
		for _, w := range res.windows {
			if w.cpu[classLoader] > w.length {
				t.Errorf("window at %s: loader ran %s of %s, more than one goroutine can", w.start, w.cpu[classLoader], w.length)
			}
			cpu += w.cpu[classLoader]
		}
		if cpu <= 0 {
			t.Error("the loader ran for no time in any window")
		}
	})

	t.Run("the woken goroutine's delays", func(t *testing.T) {
		if res.goroutines[classWebhook] != 1 {
			t.Errorf("got %d webhook goroutines, want 1 (echo)", res.goroutines[classWebhook])
		}
		n := 0
		for _, w := range res.windows {
			d := w.delay
			if d.n > 0 && !(0 <= d.p50 && d.p50 <= d.p99 && d.p99 <= d.max) {
				t.Errorf("window at %s: p50 %s, p99 %s, max %s: want them in order", w.start, d.p50, d.p99, d.max)
			}
			n += d.n
		}
		if n == 0 {
			t.Error("no scheduling delay recorded for the webhook (echo, woken 300 times)")
		}
	})

	t.Run("the output is aligned", func(t *testing.T) {
		var b bytes.Buffer
		if err := write(&b, "test.trace", res, summarise(res), opt.slow); err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", b.String())
		lines := strings.Split(b.String(), "\n")
		at := slices.IndexFunc(lines, func(l string) bool {
			return strings.HasPrefix(strings.TrimSpace(l), "t s ") && strings.Contains(l, " assist ")
		})
		if at < 0 {
			t.Fatalf("no window table in:\n%s", b.String())
		}
		rows := lines[at : at+1+len(res.windows)]
		for _, l := range rows {
			if len(l) != len(rows[0]) {
				t.Errorf("line %q is %d long, the heading %d", l, len(l), len(rows[0]))
			}
		}
		if next := lines[at+1+len(res.windows)]; next != "" {
			t.Errorf("got %q after the last window, want an empty line", next)
		}
	})
}

// TestAnalyseLongRuns classifies the burning goroutine as the webhook, whose runs between
// two yields are then long runs for a short enough -slow.
func TestAnalyseLongRuns(t *testing.T) {
	data := traceWork(t)
	slow := 10 * time.Microsecond
	res := analyseBytes(t, data, options{window: DefaultWindow, slow: slow,
		rules: []rule{{classWebhook, funcName(t, burn)}}})
	if len(res.longRuns) == 0 {
		t.Fatalf("no run of burn's goroutine longer than %s", slow)
	}
	for i, r := range res.longRuns {
		if r.dur <= slow {
			t.Errorf("run %d: %s, not longer than %s", i, r.dur, slow)
		}
		if i > 0 && r.dur > res.longRuns[i-1].dur {
			t.Errorf("run %d: %s, longer than the one before (%s)", i, r.dur, res.longRuns[i-1].dur)
		}
	}

	// The same trace over a range: nothing outside it.
	from, to := res.span/4, res.span/2
	part := analyseBytes(t, data, options{window: DefaultWindow, from: from, to: to, slow: slow,
		rules: []rule{{classWebhook, funcName(t, burn)}}})
	if len(part.windows) != 1 || part.windows[0].start != from || part.windows[0].length != to-from {
		t.Errorf("range [%s, %s): got windows %+v, want one covering it", from, to, part.windows)
	}
	for _, r := range part.longRuns {
		if r.start < from || r.start >= to {
			t.Errorf("range [%s, %s): a long run starts at %s", from, to, r.start)
		}
	}
}

func TestSpread(t *testing.T) {
	tests := []struct {
		name     string
		from, to time.Duration // the range analysed
		a, b     trace.Time    // the span spread
		want     map[int]time.Duration
	}{
		{"inside one window", 0, 100, 12, 17, map[int]time.Duration{1: 5}},
		{"across windows", 5, 100, 0, 40, map[int]time.Duration{0: 10, 1: 10, 2: 10, 3: 5}},
		{"clipped to the range", 10, 30, 0, 100, map[int]time.Duration{0: 10, 1: 10}},
		{"outside the range", 10, 30, 30, 50, map[int]time.Duration{}},
		{"empty", 0, 100, 20, 20, map[int]time.Duration{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &analyser{opt: options{window: 10, from: tt.from, to: tt.to}, hi: tt.to}
			got := map[int]time.Duration{}
			a.spread(tt.a, tt.b, func(i int, d time.Duration) { got[i] += d })
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		name string
		ds   []time.Duration
		p    int
		want time.Duration
	}{
		{"median of ten", ds, 50, 5},
		{"p90 of ten", ds, 90, 9},
		{"p99 of ten is the max", ds, 99, 10},
		{"p99 of a hundred", hundred(), 99, 99},
		{"one value", ds[:1], 50, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.ds, tt.p); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func hundred() []time.Duration {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(i + 1)
	}
	return ds
}
