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
	Bar   []Check // the performance bar, judged
	Max   []MaxSearch
	Runs  []Run
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

// Check is one line of the performance bar.
type Check struct {
	What, Target, Measured string
	OK                     bool
	// Info marks a figure shown beside the bar for context (a control), not judged.
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
	Extra    []KV // scenario facts: reload duration, loader errors, recovery time …
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
