// Package report writes the benchmark report: docs/BENCH.md (tables) and a chart of
// latency percentiles per system (gonum/plot).
package report

import (
	"time"

	"wxlookup/bench/load"
)

// Report is everything one harness run measured.
type Report struct {
	Command string        // the exact command that produced it
	Started time.Time     // when the run began
	Wall    time.Duration // how long it took
	Machine Machine
	Go      string // Go version of the harness and the servers
	// Setup lists the settings and set-up facts (rows, seed time, warm time, …) in order.
	Setup []KV
	Goals []Check // the goals, judged, each a ratio to a figure of the same run where it can be
	Max   []MaxSearch
	Runs  []Run
	Fresh []Freshness
	// Profile is `go tool pprof -top` of wxlookup under the steady load.
	Profile, ProfileCmd string
	// Micro is the output of the Go micro-benchmarks, MicroCmd the command.
	Micro, MicroCmd string
	// Notes are observations the harness made, one a bullet.
	Notes []string
	// Analysis is hand-written markdown (bench/ANALYSIS.md) included after the tables.
	Analysis string
}

// Machine describes where the run happened.
type Machine struct {
	CPU     string
	Cores   int
	Kernel  string
	MemGiB  float64
	LoadAvg string // /proc/loadavg at the start
}

// KV is one row of a two-column table.
type KV struct{ Key, Value string }

// Check is one goal, judged: what it is and where it comes from, its target, the
// measured figure (a ratio where the goal is one), and the absolute figures behind it.
type Check struct {
	What, Target, Measured, Context string
	OK                              bool
	// Info marks a figure shown beside the goals for context (a control), not judged.
	Info bool
}

// Run is one system under one scenario's load.
type Run struct {
	Scenario string // steady, burst, reload, outage, profile
	System   string
	Shape    string  // the schedule in words: "20000 req/s for 30s"
	Offered  float64 // mean offered rate, requests a second
	Peak     float64 // peak offered rate (the burst's hold)
	Duration time.Duration
	Requests int

	Throughput          float64 // OK replies a second
	P50, P99, P999, Max time.Duration
	Errors              int
	ErrorKinds          string  // e.g. "timeout 120, unsent 4"
	HitRatio            float64 // cache hit ratio from /metrics; negative when not applicable
	ServerCPU           time.Duration
	GenCPU              time.Duration // generator CPU per request
	MachineBusy, Steal  float64       // shares of all cores during the run
	// Others is the share of all cores busy with other processes than the generator, the
	// server and MariaDB: someone else's work on a shared machine.
	Others float64
	LagP99 time.Duration // how late requests went out (generator + busy workers), p99

	Curve    []Point      // latency by percentile, for the chart
	Timeline []load.Slice // per second
	Events   []Event      // reload, MySQL stop and start
	// Window is the latency of the requests due between the first and the last event.
	Window   *Window
	Failures []string
	Extra    []KV  // scenario facts: reload duration, loader errors, recovery time …
	Heap     *Heap // wxlookup's Go heap in use, sampled during the run; nil if not
}

// Heap is wxlookup's Go heap in use (go_memstats_heap_inuse_bytes) sampled during a run.
type Heap struct {
	Mean, Peak float64 // bytes
	Points     []HeapPoint
	Scrape     time.Duration // median time one /metrics scrape took
}

// HeapPoint is one sample of a Heap, at an offset from the run's start.
type HeapPoint struct {
	At    time.Duration
	Bytes float64
}

// Freshness is commit → visible latency in one change-feed mode, while serving.
type Freshness struct {
	Mode   string // poll or binlog
	System string // the run that served the probes (its Run has Scenario "fresh")
	Shape  string
	// Skipped says why the mode was not measured; empty when it was.
	Skipped string
	// Rate is the changes a second asked for; Achieved what the writer committed;
	// Probe and Background the changes to probe keys and to other rows; Behind how far
	// the writer fell behind its schedule at worst.
	Rate, Achieved    float64
	Probe, Background int
	Behind            time.Duration
	// Conns is the writer's connections; Keys the probe keys, asked in one request of
	// every ProbeEvery.
	Conns, Keys, ProbeEvery int
	// Ops are the probe changes by kind, then sums of kinds (Combined).
	Ops []FreshOp
	// Interval is the time between two probes of the same key: the resolution.
	IntervalP50, IntervalP99, IntervalMax time.Duration
	// Wrong counts replies that showed a state never written or older than one seen;
	// Early the changes seen before their commit returned; WriteErrors the failed probe
	// changes.
	Wrong, Early, WriteErrors int
	Examples                  []string
}

// FreshOp is the commit → first seen latency of one kind of change.
type FreshOp struct {
	Name string
	// Combined marks the sum of other kinds (updates and inserts, all deletes).
	Combined      bool
	Seen, Lost    int
	P50, P99, Max time.Duration
	Curve         []Point
}

// FreshOf returns the freshness of mode, or nil.
func (r *Report) FreshOf(mode string) *Freshness {
	for i := range r.Fresh {
		if r.Fresh[i].Mode == mode {
			return &r.Fresh[i]
		}
	}
	return nil
}

// Op returns the figures of the kind of change named name, or nil.
func (f *Freshness) Op(name string) *FreshOp {
	for i := range f.Ops {
		if f.Ops[i].Name == name {
			return &f.Ops[i]
		}
	}
	return nil
}

// Point is one point of a latency-by-percentile curve.
type Point struct {
	Percentile float64
	Latency    time.Duration
}

// Event is something the harness did during a run, at an offset from its start.
type Event struct {
	At    time.Duration
	Label string
}

// Window summarises the requests due during an event window.
type Window struct {
	From, To       time.Duration
	Requests       int
	P50, P99, P999 time.Duration
	Max            time.Duration
}

// MaxSearch is the maximum-throughput search of one system.
type MaxSearch struct {
	System string
	Best   float64 // highest offered rate that passed (0: none did)
	Steps  []Step
}

// Step is one rate tried by a search.
type Step struct {
	Rate       float64
	Throughput float64
	P99        time.Duration
	Errors     int
	Pass       bool
	Others     float64 // share of the cores other processes used during the step
}

// Run returns the run of system in scenario, or nil.
func (r *Report) Run(scenario, system string) *Run {
	for i := range r.Runs {
		if r.Runs[i].Scenario == scenario && r.Runs[i].System == system {
			return &r.Runs[i]
		}
	}
	return nil
}

// MaxOf returns the best rate found for system, or 0.
func (r *Report) MaxOf(system string) float64 {
	for _, m := range r.Max {
		if m.System == system {
			return m.Best
		}
	}
	return 0
}
