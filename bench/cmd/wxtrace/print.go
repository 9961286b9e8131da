package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// longestRuns is how many of the webhook's long runs are listed.
const longestRuns = 5

// columns is the order of the classes in the table: the webhook and what competes with it
// first.
var columns = []class{classWebhook, classLoader, classRistretto, classMySQL, classGCWorker, classAdmin, classOther}

// write prints res and sum as aligned plain text, fit for a Markdown code block: the
// trace's span, its mark phases, a row per window, the summary and the longest runs.
func write(w io.Writer, name string, res *result, sum summary, slow time.Duration) error {
	var b bytes.Buffer
	writeHeader(&b, name, res)
	b.WriteString("\n")
	writeGCs(&b, res.gcs)
	b.WriteString("\n")
	writeWindows(&b, res.windows)
	b.WriteString("\n")
	writeSummary(&b, sum)
	b.WriteString("\n")
	writeLongRuns(&b, res.longRuns, slow)
	_, err := w.Write(b.Bytes())
	return err
}

func writeHeader(b *bytes.Buffer, name string, res *result) {
	fmt.Fprintf(b, "%s: span %ss; windows of %s from %ss to %ss\n", name, secs(res.span), res.window, secs(res.from), secs(res.to))
	counts := make([]string, 0, len(columns))
	for _, c := range columns {
		counts = append(counts, fmt.Sprintf("%s %d", c, res.goroutines[c]))
	}
	fmt.Fprintf(b, "goroutines: %s\n", strings.Join(counts, ", "))
}

func writeGCs(b *bytes.Buffer, gcs []gcPhase) {
	fmt.Fprintf(b, "GC mark phases: %d\n", len(gcs))
	if len(gcs) == 0 {
		return
	}
	rows := make([][]string, 0, len(gcs))
	for _, p := range gcs {
		var note []string
		if p.before {
			note = append(note, "began before the trace")
		}
		if p.after {
			note = append(note, "still marking at its end")
		}
		rows = append(rows, []string{secs(p.start), ms(p.dur), mib(p.heap), mib(p.goal), strings.Join(note, ", ")})
	}
	table(b, "rrrrl", []string{"start s", "mark ms", "heap MiB", "goal MiB", ""}, rows)
}

func writeWindows(b *bytes.Buffer, windows []window) {
	b.WriteString("per window: CPU in % of a core, by goroutine class and in GC assists; whether the\n" +
		"collector marked; the webhook goroutines' scheduling delay in ms, and how many were scheduled\n")
	head := []string{"t s"}
	for _, c := range columns {
		head = append(head, c.String())
	}
	head = append(head, "assist", "gc", "p50", "p99", "max", "n")
	rows := make([][]string, 0, len(windows))
	for _, w := range windows {
		row := []string{secs(w.start)}
		for _, c := range columns {
			row = append(row, pct(w.percent(w.cpu[c])))
		}
		gc := ""
		if w.marking {
			gc = "mark"
		}
		row = append(row, pct(w.percent(w.assist)), gc)
		if d := w.delay; d.n > 0 {
			row = append(row, ms(d.p50), ms(d.p99), ms(d.max), fmt.Sprint(d.n))
		} else {
			row = append(row, "-", "-", "-", "0")
		}
		rows = append(rows, row)
	}
	table(b, strings.Repeat("r", len(head)), head, rows)
}

func writeSummary(b *bytes.Buffer, sum summary) {
	b.WriteString("webhook scheduling delay, p99 of a window, over windows without GC marking or assists:\n")
	rows := [][]string{
		groupRow(fmt.Sprintf("< %d%% of a core", quietLoader), sum.quiet),
		groupRow(fmt.Sprintf(">= %d%% of a core", busyLoader), sum.busy),
	}
	table(b, "lrrr", []string{"loader", "windows", "median ms", "p90 ms"}, rows)
	fmt.Fprintf(b, "  left out, windows: %d with GC marking or assists, %d with the loader at %d-%d%%, %d with no webhook wake-up\n",
		sum.gc, sum.between, quietLoader, busyLoader, sum.unscheduled)
}

func writeLongRuns(b *bytes.Buffer, runs []longRun, slow time.Duration) {
	fmt.Fprintf(b, "webhook goroutines Running longer than %s without a transition: %d\n", slow, len(runs))
	if len(runs) == 0 {
		return
	}
	runs = runs[:min(longestRuns, len(runs))]
	rows := make([][]string, 0, len(runs))
	for _, r := range runs {
		rows = append(rows, []string{secs(r.start), fmt.Sprintf("g%d", r.g), ms(r.dur), r.ended, r.where})
	}
	table(b, "rrrll", []string{"start s", "goroutine", "ran ms", "then", "in"}, rows)
}

func groupRow(name string, g group) []string {
	if g.windows == 0 {
		return []string{name, "0", "-", "-"}
	}
	return []string{name, fmt.Sprint(g.windows), ms(g.median), ms(g.p90)}
}

// table writes rows under head, two spaces apart and indented by two, each column as wide
// as its widest cell and aligned as align says, a letter per column: 'l'eft or 'r'ight.
func table(b *bytes.Buffer, align string, head []string, rows [][]string) {
	width := make([]int, len(head))
	for _, row := range append([][]string{head}, rows...) {
		for i, cell := range row {
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range append([][]string{head}, rows...) {
		var line strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			line.WriteString("  ")
			if align[i] == 'r' {
				line.WriteString(pad + cell)
			} else {
				line.WriteString(cell + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteString("\n")
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func pct(p float64) string { return fmt.Sprintf("%.1f", p) }

// mib returns b in MiB, or "?" if the trace had not reported it (0).
func mib(b uint64) string {
	if b == 0 {
		return "?"
	}
	return fmt.Sprint(b >> 20)
}
