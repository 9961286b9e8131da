package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"wxlookup/bench/load"
	"wxlookup/bench/report"
)

// The measurement of one run: the load, the CPU and memory figures around it, and its
// summary for the report.

// mariaCPU is MariaDB's share of a core over a run of length d, from its CPU time at the
// start and the end; not known when it was restarted in between (another process).
func mariaCPU(cpu0, cpu1 time.Duration, pid0, pid1 int, d time.Duration) string {
	if pid0 != pid1 || d <= 0 {
		return "not known (MariaDB was restarted)"
	}
	return fmt.Sprintf("%.1f%% of a core", 100*(cpu1-cpu0).Seconds()/d.Seconds())
}

// heapScenarios are the runs during which wxlookup's heap is sampled.
var heapScenarios = map[string]bool{"steady": true, "reload": true, "fresh": true}

// event is something done during a run.
type event struct {
	at    time.Time
	label string
}

// during runs alongside a measured run; it marks what it does and returns facts for the
// report.
type during func(ctx context.Context, mark func(string)) []report.KV

// measure drives s with sched and returns the run's summary and raw result.
func (h *harness) measure(ctx context.Context, s *system, scenario, shape string, sched load.Schedule, timeout time.Duration, dur during) (*report.Run, *load.Result, error) {
	b, err := h.batch(s, len(sched))
	if err != nil {
		return nil, nil, err
	}
	var m0 map[string]float64
	if s.wxlookup {
		if m0, err = metrics(ctx, s.proc.admin); err != nil {
			return nil, nil, err
		}
	}
	cpu0, db0, gen0, st0 := s.proc.cpu(), procCPU(s.dbPID), selfCPU(), readCPUStat()
	maria0, mariaPID0 := procCPU(h.dbPID), h.dbPID
	var stopHeap func() ([]heapSample, time.Duration)
	if s.wxlookup && h.o.heapEvery > 0 && heapScenarios[scenario] {
		// Each watched run starts from a collected heap: wxlookup allocates so little that
		// no collection may run for minutes, and the garbage of the runs before would
		// otherwise count as this run's heap.
		if err := fetch(ctx, "http://"+s.proc.admin+"/debug/pprof/heap?gc=1", os.DevNull); err != nil {
			return nil, nil, fmt.Errorf("collect wxlookup's heap before the %s run: %w", scenario, err)
		}
		stopHeap = watchHeap(ctx, s.proc.admin, h.o.heapEvery)
	}

	var (
		mu     sync.Mutex
		events []event
		extra  []report.KV
		wg     sync.WaitGroup
	)
	if dur != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			extra = dur(ctx, func(label string) {
				mu.Lock()
				events = append(events, event{time.Now(), label})
				mu.Unlock()
				h.logf("%s: %s", scenario, label)
			})
		}()
	}
	label := fmt.Sprintf("%-7s %-19s", scenario, s.name)
	loops := h.o.loops
	if scenario == "max" {
		loops = h.o.maxLoops
	}
	res, err := load.Run(ctx, load.Config{
		Addr: s.proc.addr, Conns: h.o.conns, Schedule: sched, Request: b.Request, Check: s.check(b),
		Timeout: timeout, Progress: h.progress(label), Loops: loops,
	})
	wg.Wait()
	var heap []heapSample
	var scrape time.Duration
	if stopHeap != nil {
		heap, scrape = stopHeap()
	}
	if err != nil {
		return nil, nil, err
	}
	cpu1, db1, gen1, st1 := s.proc.cpu(), procCPU(s.dbPID), selfCPU(), readCPUStat()
	maria1 := procCPU(h.dbPID)

	hist := res.Histogram()
	run := &report.Run{
		Scenario: scenario, Shape: shape, System: s.name, Offered: res.Rate(), Peak: peakRate(sched),
		Duration: sched.Duration(), Requests: len(sched), Throughput: res.Throughput(),
		P50: hist.Percentile(50), P99: hist.Percentile(99), P999: hist.Percentile(99.9), Max: hist.Max(),
		Errors: res.Errors(), ErrorKinds: errorKinds(res), HitRatio: -1,
		ServerCPU:   perRequest(cpu1-cpu0+db1-db0, res.Count(load.OK)),
		GenCPU:      perRequest(gen1-gen0, res.Count(load.OK)),
		LagP99:      res.LagHistogram().Percentile(99),
		Curve:       curve(hist),
		Timeline:    res.Timeline(time.Second),
		Failures:    res.Failures,
		Extra:       extra,
		MachineBusy: st1.busyShare(st0), Steal: st1.stealShare(st0),
	}
	// What the cores did for anything but this run: other processes on the machine.
	if busy, total := st1.seconds(st0); total > 0 {
		ours := (cpu1 - cpu0 + db1 - db0 + gen1 - gen0).Seconds()
		run.Others = max(busy-ours, 0) / total
	}
	if s.wxlookup {
		m1, err := metrics(ctx, s.proc.admin)
		if err != nil {
			return nil, nil, err
		}
		hits := m1["wxlookup_cache_hits_total"] - m0["wxlookup_cache_hits_total"]
		misses := m1["wxlookup_cache_misses_total"] - m0["wxlookup_cache_misses_total"]
		if hits+misses > 0 {
			run.HitRatio = hits / (hits + misses)
		}
		if rl := m1["wxlookup_requests_total{route=\"oa\",kind=\"text\",outcome=\"rate_limited\"}"] -
			m0["wxlookup_requests_total{route=\"oa\",kind=\"text\",outcome=\"rate_limited\"}"]; rl > 0 {
			run.Extra = append(run.Extra, report.KV{Key: "rate-limited replies", Value: fmt.Sprintf("%.0f", rl)})
		}
		run.Heap = heapOf(heap, res.Start, scrape)
		delta := func(name string) float64 { return m1[name] - m0[name] }
		run.Extra = append(run.Extra,
			report.KV{Key: "loader errors during the run", Value: fmt.Sprintf("%.0f", delta("wxlookup_loader_errors_total"))},
			report.KV{Key: "loader: rows read, reconcile ranges compared (differing), rows removed",
				Value: fmt.Sprintf("%.0f, %.0f (%.0f), %.0f", delta("wxlookup_loader_rows_loaded_total"), delta("wxlookup_loader_reconcile_checks_total"),
					delta(`wxlookup_loader_reconcile_checks_total{result="differ"}`), delta("wxlookup_loader_rows_removed_total"))},
			report.KV{Key: "MariaDB CPU during the run", Value: mariaCPU(maria0, maria1, mariaPID0, h.dbPID, res.End.Sub(res.Start))},
			report.KV{Key: "wxlookup garbage collections during the run", Value: fmt.Sprintf("%.0f", delta("go_gc_duration_seconds_count"))})
	}
	for _, e := range events {
		run.Events = append(run.Events, report.Event{At: e.at.Sub(res.Start), Label: e.label})
	}
	if len(run.Events) >= 2 {
		from, to := run.Events[0].At, run.Events[len(run.Events)-1].At
		w := res.Window(from, to)
		run.Window = &report.Window{From: from, To: to, Requests: int(w.Count()),
			P50: w.Percentile(50), P99: w.Percentile(99), P999: w.Percentile(99.9), Max: w.Max()}
	}
	h.logf("%s %8.0f/s offered %8.0f/s ok  p50 %-9s p99 %-9s p99.9 %-9s max %-9s errors %d%s  others %.0f%%",
		label, run.Offered, run.Throughput, fmtD(run.P50), fmtD(run.P99), fmtD(run.P999), fmtD(run.Max), run.Errors,
		hitNote(run.HitRatio), 100*run.Others)
	for _, f := range res.Failures {
		h.logf("  e.g. %s", f)
	}
	return run, res, nil
}

func hitNote(r float64) string {
	if r < 0 {
		return ""
	}
	return fmt.Sprintf("  hit ratio %.3f", r)
}

// progress returns a progress printer for a run: one line, rewritten every second on a
// terminal, or a line every five seconds in a log.
func (h *harness) progress(label string) func(load.Progress) {
	return func(p load.Progress) {
		if !h.tty && int(p.Elapsed/time.Second)%5 != 0 {
			return
		}
		line := fmt.Sprintf("wxbench %6.1fs  %s %5.1fs  due %d/%d  done %d  errors %d  in flight %d",
			time.Since(h.begin).Seconds(), label, p.Elapsed.Seconds(), p.Due, p.Total, p.Done, p.Errors, max(p.Due-p.Done, 0))
		if h.tty {
			fmt.Fprint(os.Stderr, "\r\033[K"+line)
		} else {
			fmt.Fprintln(os.Stderr, line)
		}
	}
}

func perRequest(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

func peakRate(s load.Schedule) float64 {
	n := len(s)
	if n < 2 {
		return 0
	}
	k := min(n-1, 1000)
	d := (s[n-1] - s[n-1-k]).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(k) / d
}

func errorKinds(r *load.Result) string {
	var parts []string
	for o := load.OK + 1; o <= load.Unsent; o++ {
		if n := r.Count(o); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", o, n))
		}
	}
	return strings.Join(parts, ", ")
}

// curve samples a latency-by-percentile curve: percentiles 1 − 10^-x for x from 0 to the
// resolution the count allows.
func curve(h *load.Histogram) []report.Point {
	var pts []report.Point
	maxX := math.Log10(float64(h.Count()))
	for x := 0.1; x <= maxX && x <= 5; x += 0.05 { // from p20: HDR's p0 is not a latency
		p := 100 * (1 - math.Pow(10, -x))
		pts = append(pts, report.Point{Percentile: p, Latency: h.Percentile(p)})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].Percentile < pts[j].Percentile })
	return pts
}

func fmtD(d time.Duration) string { return report.FormatDuration(d) }
