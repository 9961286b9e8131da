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
	h := &harness{rep: &report.Report{}}
	h.rep.Max = []report.MaxSearch{{System: sysCeiling, Best: 40000}, {System: sysBaseline, Best: 5000},
		{System: sysPlain, Best: 36000}, {System: sysSafe, Best: 15000}}
	h.rep.Runs = []report.Run{
		{Scenario: "steady", System: sysPlain, Offered: 20000, Duration: 30 * time.Second, P99: 800 * time.Microsecond, P999: 2 * time.Millisecond},
		{Scenario: "reload", System: sysPlain, Offered: 20000, Duration: 30 * time.Second, P99: 900 * time.Microsecond, P999: 6 * time.Millisecond, Errors: 1},
	}
	h.judge()
	got := map[string]bool{}
	for _, c := range h.rep.Bar {
		got[c.What] = c.OK
	}
	for what, want := range map[string]bool{
		"max throughput, wxlookup plaintext vs ceiling":                true,  // 0.90
		"max throughput, wxlookup plaintext vs seed baseline":          true,  // 7.2
		"max throughput, safe mode vs plaintext":                       false, // 0.42
		"steady, wxlookup plaintext at 20000/s for 30s: p99":           true,
		"reload, wxlookup plaintext at 20000/s for 30s: p99.9":         false,
		"reload, wxlookup plaintext at 20000/s for 30s: errors":        false,
		"reload, wxlookup plaintext at 20000/s for 30s: p99 vs steady": true, // 1.125
	} {
		if ok, found := got[what]; !found || ok != want {
			t.Errorf("%q: got %v (present %v), want %v", what, ok, found, want)
		}
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
