package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"wxlookup/bench/fresh"
	"wxlookup/bench/load"
	"wxlookup/bench/report"
	"wxlookup/bench/traffic"
	"wxlookup/store"
)

// The dwell of a probe key after its change was seen, before the writer changes it again
// (fresh.Tracker.SetDwell): a random time up to a poll's refresh interval, so that the
// changes do not start in step with the refreshes; in binlog mode, where changes stream,
// a little, so that the keys do not change in lockstep either.
const (
	pollDwell   = time.Second // WXLOOKUP_REFRESH_INTERVAL's default
	binlogDwell = 20 * time.Millisecond
)

// freshness measures commit → visible latency in each change feed of -fresh-modes: poll
// on wx, the process every other run drives, and binlog on a second process started for
// it. The binlog process also runs the steady rate, the control for the cost of polling.
func (h *harness) freshness(ctx context.Context, wx *system) error {
	for _, mode := range h.o.freshModes {
		switch mode {
		case "poll":
			if _, err := h.settle(ctx, wx.proc); err != nil {
				return err
			}
			if err := h.freshRun(ctx, wx, mode, h.o.tailPoll, pollDwell); err != nil {
				return err
			}
		case "binlog":
			s, why, err := h.startBinlog(ctx)
			if err != nil {
				return err
			}
			if s == nil {
				h.logf("binlog freshness not measured: %s", why)
				h.rep.Fresh = append(h.rep.Fresh, h.freshReport(mode, "", why))
				continue
			}
			err = h.binlogRuns(ctx, s)
			s.proc.stop()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// binlogRuns drives the binlog-mode process: warm-up, freshness, then the steady rate.
func (h *harness) binlogRuns(ctx context.Context, s *system) error {
	if err := h.warmUp(ctx, s); err != nil {
		return err
	}
	if err := h.freshRun(ctx, s, "binlog", h.o.tailBinlog, binlogDwell); err != nil {
		return err
	}
	if !h.o.scenarios["steady"] {
		return nil
	}
	if _, err := h.settle(ctx, s.proc); err != nil {
		return err
	}
	return h.steady(ctx, s)
}

// startBinlog starts a wxlookup process that follows MariaDB's binary log. When it does
// not come up in binlog mode it returns no system and why, not an error: the other
// figures are still worth a report.
func (h *harness) startBinlog(ctx context.Context) (*system, string, error) {
	env := append(slices.Clone(h.wxEnv), "WXLOOKUP_CHANGE_FEED=binlog",
		"WXLOOKUP_BINLOG_SERVER_ID="+strconv.Itoa(h.o.serverID), "WXLOOKUP_BINLOG_DSN="+h.db.repl)
	h.logf("starting a second wxlookup with WXLOOKUP_CHANGE_FEED=binlog")
	p, warm, _, err := h.startWxlookup(ctx, "wxlookup-binlog", env)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, fmt.Sprintf("wxlookup did not start with WXLOOKUP_CHANGE_FEED=binlog: %v (%s)", err, logHint(filepath.Join(h.work, "wxlookup-binlog.log"))), nil
	}
	m, err := metrics(ctx, p.admin)
	if err != nil {
		return nil, "", err
	}
	if _, ok := m["wxlookup_changefeed_lag_seconds"]; !ok {
		why := "this wxlookup did not follow the binary log with WXLOOKUP_CHANGE_FEED=binlog (no wxlookup_changefeed_lag_seconds in its metrics): " +
			logHint(filepath.Join(h.work, "wxlookup-binlog.log"))
		p.stop()
		return nil, why, nil
	}
	h.logf("binlog-mode wxlookup ready in %s: %.0f entries", warm.Round(100*time.Millisecond), m["wxlookup_cache_entries"])
	h.rep.Setup = append(h.rep.Setup, report.KV{Key: "wxlookup, binlog feed: start to /readyz 200", Value: warm.Round(100 * time.Millisecond).String()})
	return &system{name: sysPlainBinlog, proc: p, wxlookup: true, mode: traffic.Plaintext}, "", nil
}

// logHint returns the last warning or error in the log at path, or its last line.
func logHint(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	last := ""
	for _, l := range strings.Split(string(b), "\n") {
		switch l = strings.TrimSpace(l); {
		case strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR"):
			return l
		case l != "":
			last = l
		}
	}
	return last
}

// freshRun drives s at the steady rate with probe messages mixed in while the writer
// commits -changes a second for -fresh-write, from a second into the run; the run goes on
// for tail after the writer stops, so that what it committed last can still be seen.
func (h *harness) freshRun(ctx context.Context, s *system, mode string, tail, dwell time.Duration) error {
	h.tracker.SetDwell(dwell)
	const lead = time.Second
	sched, err := load.Constant(h.o.rate, lead+h.o.freshWrite+tail)
	if err != nil {
		return err
	}
	groups := fresh.Groups(h.probeKeys)
	texts := make([]string, len(groups))
	for g, group := range groups {
		texts[g] = fresh.Text(h.probeKeys, group)
	}
	h.probe = &traffic.Probe{Every: h.o.probeEvery, Texts: texts, Check: func(g int, content []byte, sent, recv time.Time) error {
		return h.tracker.Check(groups[g], content, sent, recv)
	}}
	defer func() { h.probe = nil }()

	db, err := sql.Open("mysql", h.db.root)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(h.o.writerConns)
	db.SetMaxIdleConns(h.o.writerConns)
	st, err := fresh.NewMySQL(ctx, db, store.DefaultTable, store.DefaultKeyColumn, store.DefaultValueColumn)
	if err != nil {
		return err
	}
	defer st.Close()
	rng := rand.New(rand.NewPCG(h.o.seed, uint64(len(mode))))
	w := &fresh.Writer{Store: st, Tracker: h.tracker, Rate: h.o.changes, Conns: h.o.writerConns,
		Background: func(n int64) (string, string) {
			key, value := store.DemoRow(rng.IntN(h.o.rows))
			return key, value + " #" + strconv.FormatInt(n, 10)
		}}
	var (
		ws   fresh.WriteStats
		werr error
	)
	dur := func(ctx context.Context, mark func(string)) []report.KV {
		if !sleepCtx(ctx, lead) {
			return nil
		}
		mark("writer started")
		ws, werr = w.Run(ctx, h.o.freshWrite)
		mark(fmt.Sprintf("writer stopped (%d probe keys pending)", h.tracker.Pending()))
		return nil
	}
	shape := fmt.Sprintf("%.0f req/s for %s (one request in %d a probe of 10 keys); %.0f changes/s for %s from %s in; a probe key rests up to %s after its change is seen",
		h.o.rate, sched.Duration().Round(time.Second), h.o.probeEvery, h.o.changes, h.o.freshWrite, lead, dwell)
	run, _, err := h.measure(ctx, s, "fresh", shape, sched, h.o.timeout, dur)
	if err != nil {
		return err
	}
	res := h.tracker.Finish(time.Now())
	if werr != nil && !errors.Is(werr, context.Canceled) {
		return fmt.Errorf("freshness writer: %w", werr)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	run.System = s.name
	if s.name == sysPlain {
		run.System += ", poll feed"
	}
	h.rep.Runs = append(h.rep.Runs, *run)
	f := h.freshReport(mode, shape, "")
	f.System = run.System
	f.Achieved, f.Probe, f.Background, f.Behind = ws.Rate(), ws.Probe, ws.Background, ws.Behind
	for _, k := range []struct {
		name     string
		combined bool
		kinds    []fresh.Kind
	}{
		{"update", false, []fresh.Kind{fresh.Updates}},
		{"insert", false, []fresh.Kind{fresh.Inserts}},
		{"delete (row older than the run)", false, []fresh.Kind{fresh.Deletes}},
		{"delete (row inserted in the run)", false, []fresh.Kind{fresh.NewDeletes}},
		{opUpdIns, true, []fresh.Kind{fresh.Updates, fresh.Inserts}},
		{opDeletes, true, []fresh.Kind{fresh.Deletes, fresh.NewDeletes}},
	} {
		o := res.Of(k.kinds...)
		f.Ops = append(f.Ops, report.FreshOp{Name: k.name, Combined: k.combined, Seen: o.Seen(), Lost: o.Lost,
			P50: o.Percentile(50), P99: o.Percentile(99), Max: o.Max(), Curve: freshCurve(o)})
	}
	f.IntervalP50, f.IntervalP99, f.IntervalMax = res.Intervals.Percentile(50), res.Intervals.Percentile(99), res.Intervals.Max()
	f.Wrong, f.Early, f.WriteErrors, f.Examples = res.Wrong, res.Early, res.WriteErrors, res.Examples
	if res.WriteError != "" {
		f.Examples = append(f.Examples, "failed probe change: "+res.WriteError)
	}
	if ws.Error != "" {
		f.Examples = append(f.Examples, fmt.Sprintf("%d failed background changes, e.g. %s", ws.Failed, ws.Error))
	}
	h.rep.Fresh = append(h.rep.Fresh, f)
	ui, d := f.Op(opUpdIns), f.Op(opDeletes)
	h.logf("fresh %-6s updates+inserts %d seen, %d lost, p50 %s p99 %s max %s; deletes %d seen, %d lost, p99 %s max %s; probe interval p99 %s; wrong %d",
		mode, ui.Seen, ui.Lost, fmtD(ui.P50), fmtD(ui.P99), fmtD(ui.Max), d.Seen, d.Lost, fmtD(d.P99), fmtD(d.Max), fmtD(f.IntervalP99), f.Wrong)
	return nil
}

// The names of the combined kinds of change in the report, which the goals judge.
const (
	opUpdIns  = "updates and inserts"
	opDeletes = "all deletes"
)

// freshReport returns the report's freshness entry of mode, without figures.
func (h *harness) freshReport(mode, shape, skipped string) report.Freshness {
	return report.Freshness{Mode: mode, Shape: shape, Skipped: skipped, Rate: h.o.changes,
		Conns: h.o.writerConns, Keys: len(h.probeKeys), ProbeEvery: h.o.probeEvery}
}

// freshCurve samples the latency-by-percentile curve of o's latencies, as curve does for
// a run's.
func freshCurve(o fresh.OpResult) []report.Point {
	var pts []report.Point
	if o.Seen() == 0 {
		return nil
	}
	maxX := math.Log10(float64(o.Seen()))
	for x := 0.1; x <= maxX && x <= 5; x += 0.05 {
		p := 100 * (1 - math.Pow(10, -x))
		pts = append(pts, report.Point{Percentile: p, Latency: o.Percentile(p)})
	}
	return pts
}
