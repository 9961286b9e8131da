package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"wxlookup/bench/load"
	"wxlookup/bench/report"
)

func TestMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`# HELP wxlookup_cache_hits_total Lookups that found a key.
# TYPE wxlookup_cache_hits_total counter
wxlookup_cache_hits_total 900
wxlookup_cache_misses_total 100
wxlookup_requests_total{route="oa",kind="text",outcome="found"} 850
wxlookup_requests_total{route="oa",kind="text",outcome="rate_limited"} 3
wxlookup_loader_staleness_seconds 0.25
`))
	}))
	defer srv.Close()
	m, err := metrics(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"wxlookup_cache_hits_total":         900,
		"wxlookup_cache_misses_total":       100,
		"wxlookup_requests_total":           853,
		"wxlookup_loader_staleness_seconds": 0.25,
		`wxlookup_requests_total{route="oa",kind="text",outcome="rate_limited"}`: 3,
	} {
		if got := m[name]; got != want {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
}

func TestProcCPU(t *testing.T) {
	start := selfCPU()
	deadline := time.Now().Add(30 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) { // burn a little CPU
		x++
	}
	if got := selfCPU() - start; got <= 0 {
		t.Errorf("selfCPU grew by %s after a busy loop, want > 0", got)
	}
	if got := procCPU(os.Getpid()); got <= 0 {
		t.Errorf("procCPU(self) = %s, want > 0", got)
	}
	s := readCPUStat()
	if s.total <= 0 {
		t.Errorf("readCPUStat() = %+v, want totals", s)
	}
}

func TestJudge(t *testing.T) {
	h := &harness{rep: &report.Report{Machine: report.Machine{Cores: 2}}, rss: 300 << 20, rawBytes: 100 << 20}
	h.o.rate, h.o.changes, h.o.p99Limit, h.o.burstPeak, h.o.burstRamp, h.o.rows = 20000, 1000, 5*time.Millisecond, 24000, time.Second, 1_000_000
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	h.rep.Max = []report.MaxSearch{{System: sysCeiling, Best: 40000}, {System: sysBaseline, Best: 5000},
		{System: sysPlain, Best: 30000}, {System: sysSafe, Best: 20000}}
	h.rep.Runs = []report.Run{
		{Scenario: "steady", System: sysCeiling, Offered: 20000, P99: ms(1), P999: ms(4)},
		{Scenario: "steady", System: sysPlain, Offered: 20000, Duration: 20 * time.Second, P99: ms(1.2), P999: ms(9),
			ServerCPU: 50 * time.Microsecond, GenCPU: 30 * time.Microsecond, Heap: &report.Heap{Peak: 400 << 20, Mean: 350 << 20}},
		{Scenario: "steady", System: sysSafe, Offered: 20000, P99: ms(2), P999: ms(8)},
		{Scenario: "steady", System: sysPlainBinlog, Offered: 20000, P99: ms(1.1)},
		{Scenario: "reload", System: sysPlain, Offered: 20000, P99: ms(1.5), Heap: &report.Heap{Peak: 440 << 20},
			Extra: []report.KV{{Key: "full reload took", Value: "1.5s"}}},
		{Scenario: "outage", System: sysPlain, Offered: 20000, P99: ms(1.3), Errors: 2, ErrorKinds: "timeout 2"},
		{Scenario: "burst", System: sysPlain, Max: ms(40)},
		{Scenario: "burst", System: sysSafe, Max: ms(60)},
	}
	h.rep.Fresh = []report.Freshness{
		{Mode: "binlog", Probe: 9000, Ops: []report.FreshOp{{Name: "update", Seen: 10}, {Name: "insert"}, {Name: "delete (row older than the run)", Seen: 5, P99: ms(120)}, {Name: opDeletes, Combined: true, Seen: 5, P99: ms(120)},
			{Name: opUpdIns, Combined: true, Seen: 10, P99: ms(8)}}},
		{Mode: "poll", Skipped: "no binlog"},
	}
	h.judge()
	got := map[string]report.Check{}
	for _, c := range h.rep.Goals {
		got[c.What] = c
	}
	for _, tt := range []struct {
		name     string
		what     string
		ok       bool
		measured string
	}{
		{"throughput vs ceiling", "max throughput, plaintext ÷ ceiling (issue 16)", false, "0.75×"},
		{"safe vs plaintext", "max throughput, safe mode ÷ plaintext (issue 16)", true, "0.67×"},
		{"steady p99 vs ceiling", "steady 20000 req/s (0.50× the ceiling's max): p99, plaintext ÷ ceiling (issue 16)", true, "1.20×"},
		{"steady p99.9 vs ceiling", "steady 20000 req/s (0.50× the ceiling's max): p99.9, plaintext ÷ ceiling (issue 16)", false, "2.25×"},
		{"burst plaintext", "burst to 0.80× plaintext's max (24000 req/s) in 1s: slowest reply and errors, wxlookup plaintext (issue 16)", true, "40ms, 0"},
		{"burst safe", "burst to 0.80× plaintext's max (24000 req/s) in 1s: slowest reply and errors, wxlookup safe mode (issue 16)", false, "60ms, 0"},
		{"memory", "memory: RSS ÷ (2 × key+value bytes + 64 MiB), 1000000 rows (issue 16)", false, "1.14×"}, // 300 MiB against 2×100+64
		{"binlog updates", "freshness, binlog feed: commit → visible p99 of updates and inserts, 1000 changes/s while serving 20000 req/s (issue 13)", true, "8.00ms"},
		{"binlog deletes", "freshness, binlog feed: commit → visible p99 of all deletes, 1000 changes/s while serving 20000 req/s (issue 13)", false, "120ms"},
		{"poll not measured", "freshness, poll feed: commit → visible p99 of all deletes, 1000 changes/s while serving 20000 req/s (issue 13)", false, "not measured"},
		{"binlog lost", "freshness, binlog feed: changes lost (never seen), replies stale or wrong (issue 13)", true, "0, 0"},
		{"reload p99", "full reload while serving: p99 of the reload run ÷ steady (issue 13)", false, "1.25×"},
		{"reload heap", "full reload: peak Go heap in use ÷ steady peak (issue 13)", true, "1.10×"},
		{"polling", "poll feed's refresh (1s) and reconcile (10s) while serving: steady p99, poll ÷ binlog feed (no polling) (issue 13)", true, "1.09×"},
		{"errors", "errors (timeouts, wrong replies, non-200) in wxlookup's runs (issue 5)", false, "2"},
		{"baseline", "max throughput, plaintext ÷ seed baseline (issue 5)", true, "6.00×"},
		{"outage", "MySQL outage while serving: p99 ÷ steady (issue 5)", true, "1.08×"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, found := got[tt.what]
			if !found {
				t.Fatalf("no goal %q among %d", tt.what, len(h.rep.Goals))
			}
			if c.OK != tt.ok || c.Measured != tt.measured {
				t.Errorf("got %v %q, want %v %q (%s)", c.OK, c.Measured, tt.ok, tt.measured, c.Context)
			}
		})
	}
}

func TestCurve(t *testing.T) {
	h := load.NewHistogram()
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	pts := curve(h)
	if len(pts) < 50 {
		t.Fatalf("%d points, want a curve to p99.99", len(pts))
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Percentile <= pts[i-1].Percentile || pts[i].Latency < pts[i-1].Latency {
			t.Fatalf("curve not increasing at %d: %+v after %+v", i, pts[i], pts[i-1])
		}
	}
	if last := pts[len(pts)-1]; last.Percentile < 99.98 {
		t.Errorf("curve ends at p%g, want p99.99", last.Percentile)
	}
}

func TestOthers(t *testing.T) {
	for _, tt := range []struct {
		name string
		runs []*report.Run
		want string
	}{
		{"quiet", []*report.Run{{Others: 0.01}, {Others: 0.04}}, ""},
		{"one noisy", []*report.Run{{Others: 0.01}, {Others: 0.44}}, "; other processes took 1% / 44% of the cores"},
		{"a run missing", []*report.Run{nil, {Others: 0.2}}, "; other processes took 20% of the cores"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := others(tt.runs...); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
