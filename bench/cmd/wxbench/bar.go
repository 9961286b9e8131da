package main

import (
	"fmt"
	"time"

	"wxlookup/bench/report"
)

// The performance bar of issue 5, on the machine the harness runs on.
const (
	barVsCeiling  = 0.85
	barVsBaseline = 6.0
	barSafeVsPlan = 0.5
	barP99        = time.Millisecond
	barP999       = 5 * time.Millisecond
	barDisturbed  = 1.2 // p99 during a reload or an outage, relative to the steady p99
)

// judge checks the measured figures against the bar.
func (h *harness) judge() {
	r := h.rep
	add := func(what, target, measured string, ok bool) {
		r.Bar = append(r.Bar, report.Check{What: what, Target: target, Measured: measured, OK: ok})
	}
	ceil, base, plain, safe := r.MaxOf(sysCeiling), r.MaxOf(sysBaseline), r.MaxOf(sysPlain), r.MaxOf(sysSafe)
	if plain > 0 && ceil > 0 {
		add("max throughput, wxlookup plaintext vs ceiling", fmt.Sprintf("≥ %.2f×", barVsCeiling),
			fmt.Sprintf("%.2f× (%.0f vs %.0f /s)", plain/ceil, plain, ceil), plain >= barVsCeiling*ceil)
	}
	if plain > 0 && base > 0 {
		add("max throughput, wxlookup plaintext vs seed baseline", fmt.Sprintf("≥ %.0f×", barVsBaseline),
			fmt.Sprintf("%.1f× (%.0f vs %.0f /s)", plain/base, plain, base), plain >= barVsBaseline*base)
	}
	if plain > 0 && safe > 0 {
		add("max throughput, safe mode vs plaintext", fmt.Sprintf("≥ %.1f×", barSafeVsPlan),
			fmt.Sprintf("%.2f× (%.0f vs %.0f /s)", safe/plain, safe, plain), safe >= barSafeVsPlan*plain)
	}
	steady := r.Run("steady", sysPlain)
	for _, sc := range []string{"steady", "reload", "outage"} {
		run := r.Run(sc, sysPlain)
		if run == nil {
			continue
		}
		name := fmt.Sprintf("%s, wxlookup plaintext at %.0f/s for %s", sc, run.Offered, run.Duration.Round(time.Second))
		add(name+": p99", "≤ "+report.FormatDuration(barP99), report.FormatDuration(run.P99), run.P99 <= barP99)
		add(name+": p99.9", "≤ "+report.FormatDuration(barP999), report.FormatDuration(run.P999), run.P999 <= barP999)
		add(name+": errors", "0", fmt.Sprint(run.Errors), run.Errors == 0)
		if sc != "steady" && steady != nil && steady.P99 > 0 {
			ratio := float64(run.P99) / float64(steady.P99)
			add(name+": p99 vs steady", fmt.Sprintf("≤ %.1f×", barDisturbed),
				fmt.Sprintf("%.2f× (%s vs %s)", ratio, report.FormatDuration(run.P99), report.FormatDuration(steady.P99)),
				ratio <= barDisturbed)
		}
	}
	// Context for the outage line: the same stop and restart under the ceiling, which does
	// not use MySQL, shows what the restart costs any server on these shared cores.
	cs, co := r.Run("steady", sysCeiling), r.Run("outage", sysCeiling)
	if cs != nil && co != nil && cs.P99 > 0 {
		r.Bar = append(r.Bar, report.Check{
			What:     fmt.Sprintf("control: outage, ceiling (no MySQL) at %.0f/s: p99 vs its steady", co.Offered),
			Measured: fmt.Sprintf("%.2f× (%s vs %s)", float64(co.P99)/float64(cs.P99), report.FormatDuration(co.P99), report.FormatDuration(cs.P99)),
			Info:     true,
		})
	}
}
