package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"wxlookup/bench/report"
)

// The goals, from issues 13 (the data path) and 16 (the hot path), and the bar of issue 5
// that they did not replace. Each is a ratio to a figure of the same run, or a bound that
// does not depend on the machine (freshness, the burst's slowest reply).
const (
	goalMaxVsCeiling  = 0.90 // max throughput, plaintext ÷ ceiling
	goalSafeVsPlain   = 0.60 // max throughput, safe mode ÷ plaintext
	goalP99VsCeiling  = 1.3  // steady p99, plaintext ÷ ceiling
	goalP999VsCeiling = 2.0  // steady p99.9, plaintext ÷ ceiling
	goalBurstMax      = 50 * time.Millisecond
	goalMemFactor     = 2.0 // RSS ≤ 2 × key+value bytes + goalMemExtra
	goalMemExtra      = 64 << 20
	goalBinlogP99     = 100 * time.Millisecond
	goalPollP99       = 1500 * time.Millisecond
	goalPollDeleteP99 = 12 * time.Second
	goalDisturbedP99  = 1.2  // reload (or polling, or an outage) p99 ÷ steady p99
	goalReloadHeap    = 1.15 // reload peak heap ÷ steady peak heap
	goalVsBaseline    = 6.0  // max throughput, plaintext ÷ seed baseline (issue 5)
	issueDataPath     = "13"
	issueHotPath      = "16"
	issueFirstBar     = "5"
)

// judge checks the measured figures against the goals.
func (h *harness) judge() {
	r := h.rep
	add := func(issue, what, target, measured, context string, ok bool) {
		r.Goals = append(r.Goals, report.Check{What: what + " (issue " + issue + ")", Target: target, Measured: measured, Context: context, OK: ok})
	}
	missing := func(issue, what, target, why string) {
		r.Goals = append(r.Goals, report.Check{What: what + " (issue " + issue + ")", Target: target, Measured: "not measured", Context: why})
	}
	ratio := func(a, b float64) string { return fmt.Sprintf("%.2f×", a/b) }
	d := report.FormatDuration

	// Throughput (issue 16).
	ceil, base, plain, safe := r.MaxOf(sysCeiling), r.MaxOf(sysBaseline), r.MaxOf(sysPlain), r.MaxOf(sysSafe)
	if plain > 0 && ceil > 0 {
		ctx := fmt.Sprintf("%.0f vs %.0f req/s (p99 < %s, no errors)", plain, ceil, d(h.o.p99Limit))
		if cp, cc := h.capacity(sysPlain), h.capacity(sysCeiling); cp > 0 && cc > 0 {
			ctx += fmt.Sprintf("; by CPU cost per reply %s (%.0f vs %.0f req/s)", ratio(cp, cc), cp, cc)
		}
		add(issueHotPath, "max throughput, plaintext ÷ ceiling", fmt.Sprintf("≥ %.2f×", goalMaxVsCeiling), ratio(plain, ceil), ctx, plain >= goalMaxVsCeiling*ceil)
	}
	if plain > 0 && safe > 0 {
		add(issueHotPath, "max throughput, safe mode ÷ plaintext", fmt.Sprintf("≥ %.2f×", goalSafeVsPlain), ratio(safe, plain),
			fmt.Sprintf("%.0f vs %.0f req/s", safe, plain), safe >= goalSafeVsPlain*plain)
	}

	// Tail at the steady rate, against the ceiling at the same rate (issue 16).
	cs := r.Run("steady", sysCeiling)
	for _, sys := range []string{sysPlain, sysSafe} {
		run := r.Run("steady", sys)
		if run == nil || cs == nil || cs.P99 <= 0 || cs.P999 <= 0 {
			continue
		}
		at := fmt.Sprintf("steady %.0f req/s", run.Offered)
		if ceil > 0 {
			at += fmt.Sprintf(" (%.2f× the ceiling's max)", run.Offered/ceil)
		}
		p99, p999 := float64(run.P99)/float64(cs.P99), float64(run.P999)/float64(cs.P999)
		if sys == sysPlain {
			add(issueHotPath, at+": p99, plaintext ÷ ceiling", fmt.Sprintf("≤ %.1f×", goalP99VsCeiling), fmt.Sprintf("%.2f×", p99),
				fmt.Sprintf("%s vs %s%s", d(run.P99), d(cs.P99), others(run, cs)), p99 <= goalP99VsCeiling)
			add(issueHotPath, at+": p99.9, plaintext ÷ ceiling", fmt.Sprintf("≤ %.1f×", goalP999VsCeiling), fmt.Sprintf("%.2f×", p999),
				fmt.Sprintf("%s vs %s%s", d(run.P999), d(cs.P999), others(run, cs)), p999 <= goalP999VsCeiling)
			continue
		}
		r.Goals = append(r.Goals, report.Check{What: at + ": p99 / p99.9, safe mode ÷ ceiling", Info: true,
			Measured: fmt.Sprintf("%.2f× / %.2f×", p99, p999), Context: fmt.Sprintf("%s / %s vs %s / %s%s", d(run.P99), d(run.P999), d(cs.P99), d(cs.P999), others(run, cs))})
	}

	// The shift-change burst (issue 16).
	for _, sys := range []string{sysPlain, sysSafe} {
		run := r.Run("burst", sys)
		if run == nil {
			continue
		}
		what := fmt.Sprintf("burst %.0f → %.0f req/s in %s: slowest reply and errors, %s", h.o.burstPeak/20, h.o.burstPeak, h.o.burstRamp, sys)
		if plain > 0 {
			what = fmt.Sprintf("burst to %.2f× plaintext's max (%.0f req/s) in %s: slowest reply and errors, %s", h.o.burstPeak/plain, h.o.burstPeak, h.o.burstRamp, sys)
		}
		c := r.Run("burst", sysCeiling)
		ctx := ""
		if c != nil {
			ctx = "ceiling: " + d(c.Max) + fmt.Sprintf(", %d errors", c.Errors)
		}
		ctx += others(run, c)
		add(issueHotPath, what, "≤ "+d(goalBurstMax)+", 0", fmt.Sprintf("%s, %d", d(run.Max), run.Errors), ctx,
			run.Max <= goalBurstMax && run.Errors == 0)
	}

	// Memory (issue 16).
	if h.rss > 0 && h.rawBytes > 0 {
		bound := goalMemFactor*h.rawBytes + goalMemExtra
		add(issueHotPath, fmt.Sprintf("memory: RSS ÷ (%.0f × key+value bytes + %d MiB), %d rows", goalMemFactor, goalMemExtra>>20, h.o.rows), "≤ 1.00×",
			ratio(h.rss, bound), fmt.Sprintf("RSS %.0f MiB after the steady runs; key+value bytes %.1f MiB, so the bound is %.0f MiB",
				h.rss/(1<<20), h.rawBytes/(1<<20), bound/(1<<20)), h.rss <= bound)
	}

	// Freshness (issue 13).
	for _, g := range []struct {
		mode, op string
		limit    time.Duration
	}{{"binlog", opUpdIns, goalBinlogP99}, {"binlog", opDeletes, goalBinlogP99},
		{"poll", opUpdIns, goalPollP99}, {"poll", opDeletes, goalPollDeleteP99}} {
		what := fmt.Sprintf("freshness, %s feed: commit → visible p99 of %s, %.0f changes/s while serving %.0f req/s", g.mode, g.op, h.o.changes, h.o.rate)
		target := "≤ " + d(g.limit)
		f := r.FreshOf(g.mode)
		switch {
		case f == nil:
			continue
		case f.Skipped != "":
			missing(issueDataPath, what, target, f.Skipped)
			continue
		}
		o := f.Op(g.op)
		if o.Seen == 0 {
			missing(issueDataPath, what, target, fmt.Sprintf("no change of this kind was seen (%d lost)", o.Lost))
			continue
		}
		ctx := fmt.Sprintf("%d seen: p50 %s, max %s", o.Seen, d(o.P50), d(o.Max))
		if g.op == opDeletes {
			for _, part := range f.Ops {
				if strings.HasPrefix(part.Name, "delete (") && part.Seen > 0 {
					ctx += fmt.Sprintf("; %s: %d, p99 %s", strings.TrimSuffix(strings.TrimPrefix(part.Name, "delete ("), ")"), part.Seen, d(part.P99))
				}
			}
		}
		add(issueDataPath, what, target, d(o.P99), ctx+fmt.Sprintf("; probe interval p99 %s", d(f.IntervalP99)), o.P99 <= g.limit)
	}
	for _, f := range r.Fresh {
		if f.Skipped != "" {
			continue
		}
		lost := 0
		for _, o := range f.Ops {
			if !o.Combined {
				lost += o.Lost
			}
		}
		add(issueDataPath, fmt.Sprintf("freshness, %s feed: changes lost (never seen), replies stale or wrong", f.Mode), "0, 0",
			fmt.Sprintf("%d, %d", lost, f.Wrong), fmt.Sprintf("%d probe changes committed", f.Probe), lost == 0 && f.Wrong == 0)
	}

	// Reload and polling while serving (issue 13).
	steady := r.Run("steady", sysPlain)
	if rl := r.Run("reload", sysPlain); rl != nil && steady != nil && steady.P99 > 0 {
		took := ""
		for _, kv := range rl.Extra {
			if kv.Key == "full reload took" {
				took = "; the reload took " + kv.Value
			}
		}
		x := float64(rl.P99) / float64(steady.P99)
		add(issueDataPath, "full reload while serving: p99 of the reload run ÷ steady", fmt.Sprintf("≤ %.1f×", goalDisturbedP99), fmt.Sprintf("%.2f×", x),
			fmt.Sprintf("%s vs %s%s%s", d(rl.P99), d(steady.P99), took, others(rl, steady)), x <= goalDisturbedP99)
		if rl.Heap != nil && steady.Heap != nil && steady.Heap.Peak > 0 {
			x := rl.Heap.Peak / steady.Heap.Peak
			add(issueDataPath, "full reload: peak Go heap in use ÷ steady peak", fmt.Sprintf("≤ %.2f×", goalReloadHeap), fmt.Sprintf("%.2f×", x),
				fmt.Sprintf("%.0f MiB vs %.0f MiB (steady mean %.0f MiB)", rl.Heap.Peak/(1<<20), steady.Heap.Peak/(1<<20), steady.Heap.Mean/(1<<20)), x <= goalReloadHeap)
		}
	}
	if b := r.Run("steady", sysPlainBinlog); b != nil && steady != nil && b.P99 > 0 {
		x := float64(steady.P99) / float64(b.P99)
		add(issueDataPath, "poll feed's refresh (1s) and reconcile (10s) while serving: steady p99, poll ÷ binlog feed (no polling)", fmt.Sprintf("≤ %.1f×", goalDisturbedP99),
			fmt.Sprintf("%.2f×", x), fmt.Sprintf("%s vs %s; p99.9 %s vs %s%s", d(steady.P99), d(b.P99), d(steady.P999), d(b.P999), others(steady, b)), x <= goalDisturbedP99)
	}

	// Errors, the seed baseline and the outage (issue 5, SPEC section 8).
	errs, runs := 0, 0
	var which, scenarios []string
	for _, run := range r.Runs {
		if run.System == sysCeiling || run.System == sysBaseline || run.Scenario == "max" || run.Scenario == "profile" {
			continue
		}
		runs++
		errs += run.Errors
		if !slices.Contains(scenarios, run.Scenario) {
			scenarios = append(scenarios, run.Scenario)
		}
		if run.Errors > 0 {
			which = append(which, fmt.Sprintf("%s %s: %d (%s)", run.Scenario, run.System, run.Errors, run.ErrorKinds))
		}
	}
	if runs > 0 {
		ctx := fmt.Sprintf("%d runs of wxlookup: %s", runs, strings.Join(scenarios, ", "))
		if len(which) > 0 {
			ctx = strings.Join(which, "; ")
		}
		add(issueFirstBar, "errors (timeouts, wrong replies, non-200) in wxlookup's runs", "0", fmt.Sprint(errs), ctx, errs == 0)
	}
	if plain > 0 && base > 0 {
		add(issueFirstBar, "max throughput, plaintext ÷ seed baseline", fmt.Sprintf("≥ %.0f×", goalVsBaseline), ratio(plain, base),
			fmt.Sprintf("%.0f vs %.0f req/s", plain, base), plain >= goalVsBaseline*base)
	}
	if out := r.Run("outage", sysPlain); out != nil && steady != nil && steady.P99 > 0 {
		x := float64(out.P99) / float64(steady.P99)
		add(issueFirstBar, "MySQL outage while serving: p99 ÷ steady", fmt.Sprintf("≤ %.1f×", goalDisturbedP99), fmt.Sprintf("%.2f×", x),
			fmt.Sprintf("%s vs %s%s", d(out.P99), d(steady.P99), others(out, steady)), x <= goalDisturbedP99)
	}
	// Context for the outage line: the same stop and restart under the ceiling, which does
	// not use MySQL, shows what the restart costs any server on these shared cores.
	if co := r.Run("outage", sysCeiling); cs != nil && co != nil && cs.P99 > 0 {
		r.Goals = append(r.Goals, report.Check{
			What:     fmt.Sprintf("control: MySQL outage, ceiling (no MySQL) at %.0f/s: p99 ÷ its steady", co.Offered),
			Measured: fmt.Sprintf("%.2f×", float64(co.P99)/float64(cs.P99)),
			Context:  fmt.Sprintf("%s vs %s%s", d(co.P99), d(cs.P99), others(co, cs)),
			Info:     true,
		})
	}
}

// others notes how much of the cores other processes took during the runs, when it is
// enough to move a tail: the figures of such a run say more about the machine than about
// the server.
func others(runs ...*report.Run) string {
	var parts []string
	noisy := false
	for _, r := range runs {
		if r == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%.0f%%", 100*r.Others))
		noisy = noisy || r.Others >= 0.05
	}
	if !noisy {
		return ""
	}
	return "; other processes took " + strings.Join(parts, " / ") + " of the cores"
}

// capacity is the cores divided by the CPU a reply of system cost the generator and the
// server in its steady run: the rate at which the machine would be fully busy.
func (h *harness) capacity(system string) float64 {
	run := h.rep.Run("steady", system)
	if run == nil || run.Errors > 0 || run.ServerCPU+run.GenCPU <= 0 || h.rep.Machine.Cores == 0 {
		return 0
	}
	return float64(h.rep.Machine.Cores) / (run.ServerCPU + run.GenCPU).Seconds()
}
