package report

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wxlookup/bench/load"
)

func sampleReport() *Report {
	curve := func(base time.Duration) []Point {
		var pts []Point
		for _, p := range []float64{0, 50, 90, 99, 99.9} {
			pts = append(pts, Point{Percentile: p, Latency: base + time.Duration(p*float64(base)/10)})
		}
		return pts
	}
	tl := []load.Slice{{At: 0, Requests: 100, P99: time.Millisecond}, {At: time.Second, Requests: 100, P99: 2 * time.Millisecond}}
	r := &Report{Command: "make bench", Started: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC), Wall: 8 * time.Minute,
		Machine: Machine{CPU: "AMD EPYC", Cores: 2, Kernel: "Linux 6", MemGiB: 24, LoadAvg: "0.1 0.2 0.3"},
		Go:      "go1.26", Setup: []KV{{"rows", "1000000"}},
		Goals: []Check{{What: "p99", Target: "≤ 1.3×", Measured: "0.8×", Context: "1ms vs 1.25ms", OK: true}, {What: "ratio", Target: "≥ 6×", Measured: "5×"},
			{What: "control p99", Measured: "1.1×", Info: true}},
		Max: []MaxSearch{{System: "ceiling", Best: 40000, Steps: []Step{{Rate: 40000, Pass: true}, {Rate: 80000, Errors: 3}}},
			{System: "wxlookup plaintext", Best: 36000}, {System: "seed baseline", Best: 4000}},
		Profile: "flat flat%", ProfileCmd: "go tool pprof -top", Micro: "BenchmarkX 1 ns/op", MicroCmd: "go test -bench .",
		Analysis: "## Analysis\n\nhand-written",
	}
	for _, sys := range []string{"ceiling", "seed baseline", "wxlookup plaintext"} {
		r.Runs = append(r.Runs, Run{Scenario: "steady", Shape: "20000 req/s for 30s", System: sys, Offered: 20000, Throughput: 19990,
			P50: 100 * time.Microsecond, P99: time.Millisecond, ServerCPU: 60 * time.Microsecond, GenCPU: 40 * time.Microsecond, Curve: curve(100 * time.Microsecond), Timeline: tl, HitRatio: -1})
	}
	r.Runs = append(r.Runs, Run{Scenario: "reload", Shape: "20000 req/s for 30s, reload at 5s", System: "wxlookup plaintext",
		Offered: 20000, HitRatio: 0.9, Curve: curve(time.Millisecond), Timeline: tl,
		Events: []Event{{5 * time.Second, "reload requested"}, {9 * time.Second, "reload done"}},
		Window: &Window{From: 5 * time.Second, To: 9 * time.Second, Requests: 80000, P99: time.Millisecond},
		Extra:  []KV{{"full reload took", "4s"}}, Failures: []string{"timeout: `x`"},
		Heap: &Heap{Mean: 400 << 20, Peak: 500 << 20, Scrape: 2 * time.Millisecond,
			Points: []HeapPoint{{0, 300 << 20}, {100 * time.Millisecond, 500 << 20}, {200 * time.Millisecond, 400 << 20}}}})
	r.Runs[2].Heap = &Heap{Mean: 300 << 20, Peak: 310 << 20, Points: []HeapPoint{{0, 290 << 20}, {time.Second, 310 << 20}}}
	r.Fresh = []Freshness{
		{Mode: "binlog", Shape: "1000 changes/s", Rate: 1000, Achieved: 998, Probe: 9000, Background: 1000, Conns: 8, Keys: 40, ProbeEvery: 8,
			IntervalP50: 1600 * time.Microsecond, IntervalP99: 2 * time.Millisecond, IntervalMax: 9 * time.Millisecond,
			Ops: []FreshOp{{Name: "update", Seen: 3000, P50: 3 * time.Millisecond, P99: 12 * time.Millisecond, Max: 30 * time.Millisecond,
				Curve: curve(3 * time.Millisecond)}, {Name: "delete", Seen: 3000, Lost: 1, P99: 20 * time.Millisecond, Curve: curve(4 * time.Millisecond)}},
			Wrong: 2, Examples: []string{"K-FRESH-07: a reply shows value 9"}},
		{Mode: "poll", Skipped: "no binlog"},
	}
	return r
}

func TestMarkdown(t *testing.T) {
	md := string(sampleReport().Markdown())
	for _, want := range []string{
		"# wxlookup benchmarks", "make bench", "AMD EPYC, 2 cores",
		"## Goals, as ratios to this run's own figures", "AMD EPYC, 2 cores shared",
		"| p99 | ≤ 1.3× | 0.8× | 1ms vs 1.25ms | pass |",
		"| ratio | ≥ 6× | 5× |  | **miss** |",
		"| control p99 |  | 1.1× |  | context |",
		"## Freshness: commit → visible while serving", "on 8 connections", "one of 40 *probe keys*", "One request in 8",
		"| binlog | update | 3000 | 0 | 3.00ms | 12ms | 30ms | 1.60ms / 2.00ms / 9.00ms |",
		"| binlog | delete | 3000 | 1 |", "| poll | — | — | — | — | — | — | not measured: no binlog |",
		"- writer: 1000 changes/s asked, 998/s committed (9000 to probe keys, 1000 background updates)",
		"- replies showing a value never written, or older than one already seen: 2", "- e.g. K-FRESH-07: a reply shows value 9",
		"mean 400 MiB, peak 500 MiB",
		"| ceiling | 40000 | 1.00× | 10.00× | 20000 | 1.00× |", "| wxlookup plaintext | 36000 | 0.90× | 9.00× | 20000 | 1.00× |",
		"## Steady rate: 20000 req/s for 30s", "## During a full reload",
		"- 5.00s: reload requested", "- full reload took: 4s", "failure, e.g.: `timeout: 'x'`",
		"| wxlookup plaintext | 20000 | 19990 | 100µs | 1.00ms |",
		"![latency by percentile", "hand-written",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

func TestChart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.png")
	if err := sampleReport().Chart(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("bench.png is not a PNG: %v", err)
	}
	if w := img.Bounds().Dx(); w < 1000 {
		t.Errorf("chart %d pixels wide, want at least 1000", w)
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{0, "0"}, {87 * time.Microsecond, "87µs"}, {1234 * time.Microsecond, "1.23ms"}, {45 * time.Millisecond, "45ms"}, {2100 * time.Millisecond, "2.10s"}} {
		if got := FormatDuration(tt.d); got != tt.want {
			t.Errorf("FormatDuration(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
