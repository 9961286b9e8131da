// Command wxbench is the load harness of SPEC section 8. It provisions a private MariaDB
// with a row binary log, seeded with the demo rows, starts the systems it compares on
// 127.0.0.1 — the ceiling (fasthttp answering "success"), the seed baseline (net/http +
// encoding/xml + one MySQL query per message) and wxlookup, driven in plaintext and in
// safe mode — and drives them with the same open-loop load: a steady rate, the steady rate
// during a full reload and during a MySQL outage, the steady rate while a writer commits
// changes (freshness, in poll and in binlog mode), a maximum-throughput search, and a
// shift-change burst. It writes the tables to OUT/BENCH.md and a chart to OUT/bench.png,
// every goal as a ratio to a figure of the same run.
//
//	bin/wxbench [-quick] [-rate 20000] [-duration 20s] [-rows 1000000]
//	    [-unknown 0.10] [-zipf-s 1.1] [-mode plain|safe|all]
//	    [-scenarios steady,reload,outage,fresh,max,burst] [-out docs]
//
// make bench builds it into bin/ (it lives in its own module, bench/go.mod) and runs it from
// the repository root, which it must be run from (it builds ./cmd/wxlookup there). It runs
// on Linux only: the generator's event loops use epoll and a timerfd (package load). Every
// load loop is bounded in requests and time, and only loopback addresses are ever targeted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// options are the harness's settings, from its flags.
type options struct {
	rate       float64
	duration   time.Duration
	reloadFor  time.Duration
	rows       int
	unknown    float64
	zipfS      float64
	mode       string
	scenarios  map[string]bool
	out        string
	quick      bool
	conns      int
	openIDs    int
	timeout    time.Duration
	burstPeak  float64
	burstRamp  time.Duration
	burstHold  time.Duration
	step       time.Duration
	p99Limit   time.Duration
	eventAt    time.Duration
	outageFor  time.Duration
	rateLimit  string
	micro      bool
	profile    time.Duration
	keep       bool
	warmLimit  time.Duration
	seed       uint64
	scenarioLs string
	cpuProfile string
	systems    string
	ceilWork   time.Duration
	loops      int
	maxLoops   int
	genProcs   int
	srvProcs   int
	pin        int
	traceLoad  time.Duration
	maxTries   int
	heapEvery  time.Duration
	// freshness
	changes     float64
	freshModes  []string
	freshWrite  time.Duration
	tailPoll    time.Duration
	tailBinlog  time.Duration
	probeEvery  int
	probeUpdate int
	probeChurn  int
	writerConns int
	serverID    int
}

func main() {
	var o options
	flag.Float64Var(&o.rate, "rate", 20000, "steady rate, requests a second (also of the reload, outage and freshness runs)")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of the steady and outage runs")
	flag.DurationVar(&o.reloadFor, "reload-duration", 12*time.Second, "length of the reload run: a reload of 1M rows takes about 4s at the default WXLOOKUP_RELOAD_RATE; the rest shows its after-effects (0: -duration)")
	flag.IntVar(&o.rows, "rows", 1_000_000, "rows seeded into MariaDB")
	flag.Float64Var(&o.unknown, "unknown", 0.10, "share of asked numbers that are not in the table")
	flag.Float64Var(&o.zipfS, "zipf-s", 1.1, "Zipf exponent of the key popularity (> 1)")
	flag.StringVar(&o.mode, "mode", "all", "wxlookup modes to drive: plain, safe or all")
	flag.StringVar(&o.scenarioLs, "scenarios", "steady,reload,outage,fresh,max,burst", "scenarios to run, comma-separated")
	flag.StringVar(&o.out, "out", "docs", "directory for BENCH.md and bench.png")
	flag.BoolVar(&o.quick, "quick", false, "a small, fast smoke run (20,000 rows, 2,000/s, 5s runs)")
	flag.IntVar(&o.conns, "conns", 128, "client connections (workers) per run")
	flag.IntVar(&o.openIDs, "openids", 200_000, "distinct senders (OpenIDs) the messages cycle through")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Second, "a request not answered this long after its scheduled time fails (WeChat's limit)")
	flag.Float64Var(&o.burstPeak, "burst-peak", 0, "peak rate of the shift-change burst (0: 80% of wxlookup plaintext's maximum found by the search, or -rate without one)")
	flag.DurationVar(&o.burstRamp, "burst-ramp", time.Second, "ramp of the burst from a twentieth of the peak to the peak")
	flag.DurationVar(&o.burstHold, "burst-hold", 10*time.Second, "how long the burst holds its peak")
	flag.DurationVar(&o.step, "step", 2*time.Second, "length of one step of the maximum-throughput search")
	flag.IntVar(&o.maxTries, "max-tries", 9, "steps (a retry included) one system's maximum-throughput search may take")
	flag.DurationVar(&o.p99Limit, "p99-limit", 5*time.Millisecond, "p99 a step of the maximum-throughput search must stay under")
	flag.DurationVar(&o.eventAt, "event-at", 3*time.Second, "when the reload starts, or MariaDB stops, into its run")
	flag.DurationVar(&o.outageFor, "outage-for", 8*time.Second, "how long MariaDB stays down in the outage run")
	flag.StringVar(&o.rateLimit, "rate-limit", "", "WXLOOKUP_RATE_LIMIT for wxlookup (\"\": its default, 30/min per OpenID)")
	flag.BoolVar(&o.micro, "micro", true, "run the Go micro-benchmarks of wechat, server and cache first")
	flag.DurationVar(&o.profile, "profile", 8*time.Second, "CPU-profile wxlookup plaintext this long during its burst's hold (0: skip)")
	flag.DurationVar(&o.heapEvery, "heap-every", 100*time.Millisecond, "sample wxlookup's heap in use from /metrics this often during its runs (0: never)")
	flag.Float64Var(&o.changes, "changes", 1000, "changes a second the freshness writer commits")
	freshModes := flag.String("fresh-modes", "poll,binlog", "change feeds whose freshness is measured: poll, binlog")
	flag.DurationVar(&o.freshWrite, "fresh-write", 10*time.Second, "how long the freshness writer commits changes")
	flag.DurationVar(&o.tailPoll, "fresh-tail-poll", 25*time.Second, "how long the poll-mode freshness run goes on after the writer stops: the reconcile finds a delete within one pass (10s), of a row inserted since its range was read within two")
	flag.DurationVar(&o.tailBinlog, "fresh-tail-binlog", 2*time.Second, "how long the binlog-mode freshness run goes on after the writer stops")
	flag.IntVar(&o.probeEvery, "probe-every", 8, "one request in this many of a freshness run is a probe message (ten probe keys)")
	flag.IntVar(&o.probeUpdate, "probe-update-keys", 10, "probe keys updated in place")
	flag.IntVar(&o.probeChurn, "probe-churn-keys", 30, "probe keys inserted and deleted in turn")
	flag.IntVar(&o.writerConns, "writer-conns", 8, "database connections of the freshness writer")
	flag.IntVar(&o.serverID, "binlog-server-id", 101, "WXLOOKUP_BINLOG_SERVER_ID of the binlog-mode wxlookup")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (binaries, logs, profile)")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the key picker")
	flag.StringVar(&o.systems, "systems", "ceiling,baseline,wxlookup", "systems to drive, comma-separated (wxlookup in the modes of -mode)")
	flag.IntVar(&o.loops, "loops", 1, "event loops (threads) of the generator for the fixed-rate runs")
	flag.IntVar(&o.maxLoops, "max-loops", 2, "event loops of the generator for the maximum-throughput search")
	flag.DurationVar(&o.ceilWork, "ceiling-work", 0, "make the ceiling spin this long a request (a control: a handler's CPU without its locks)")
	flag.IntVar(&o.genProcs, "gen-procs", 0, "GOMAXPROCS of the load generator (0: the Go default, all cores)")
	flag.IntVar(&o.srvProcs, "server-procs", 0, "GOMAXPROCS of the servers (0: the Go default, all cores)")
	flag.IntVar(&o.pin, "pin", 0, "pin the generator to this many CPUs (the last ones) and the servers to the others (0: nothing pinned)")
	flag.DurationVar(&o.traceLoad, "trace-reload", 0, "write an execution trace of wxlookup this long, from the reload request on, to the work directory (use with -keep; 0: none)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the harness itself (the load generator) to this file")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		quick := map[string]func(){
			"rows": func() { o.rows = 20_000 }, "rate": func() { o.rate = 2000 },
			"duration": func() { o.duration = 5 * time.Second }, "reload-duration": func() { o.reloadFor = 0 }, "burst-ramp": func() { o.burstRamp = 2 * time.Second },
			"burst-hold": func() { o.burstHold = 5 * time.Second }, "step": func() { o.step = time.Second },
			"event-at": func() { o.eventAt = 1500 * time.Millisecond }, "outage-for": func() { o.outageFor = 2 * time.Second },
			"micro": func() { o.micro = false }, "profile": func() { o.profile = 2 * time.Second },
			"openids": func() { o.openIDs = 20_000 }, "conns": func() { o.conns = 32 },
			"changes": func() { o.changes = 100 }, "fresh-write": func() { o.freshWrite = 3 * time.Second },
			"max-tries": func() { o.maxTries = 4 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	if o.reloadFor <= 0 {
		o.reloadFor = o.duration
	}
	o.scenarios = map[string]bool{}
	for _, s := range strings.Split(o.scenarioLs, ",") {
		switch s = strings.TrimSpace(s); s {
		case "steady", "burst", "max", "reload", "outage", "fresh":
			o.scenarios[s] = true
		case "":
		default:
			fatal(fmt.Errorf("-scenarios: unknown scenario %q (want steady, reload, outage, fresh, max, burst)", s))
		}
	}
	for _, m := range strings.Split(*freshModes, ",") {
		switch m = strings.TrimSpace(m); m {
		case "poll", "binlog":
			o.freshModes = append(o.freshModes, m)
		case "":
		default:
			fatal(fmt.Errorf("-fresh-modes: unknown change feed %q (want poll, binlog)", m))
		}
	}
	if o.probeEvery < 2 || o.probeUpdate < 0 || o.probeChurn < 0 || o.probeUpdate+o.probeChurn == 0 || o.writerConns < 1 || o.changes <= 0 {
		fatal(errors.New("-probe-every must be at least 2; -changes, -writer-conns and the probe keys must be positive"))
	}
	switch o.mode {
	case "plain", "safe", "all":
	default:
		fatal(fmt.Errorf("-mode %q: want plain, safe or all", o.mode))
	}
	if o.rows < 2 || o.rate <= 0 || o.duration <= 0 || o.conns < 1 || o.openIDs < 1 {
		fatal(errors.New("-rows, -rate, -duration, -conns and -openids must be positive"))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var pin cpuSplit
	if o.pin > 0 {
		var err error
		if pin, err = planPin(o.pin); err != nil {
			fatal(err)
		}
		if err := pinSelf(pin.gen); err != nil {
			fatal(err)
		}
		if o.genProcs == 0 {
			o.genProcs = len(pin.gen)
		}
	}
	if o.genProcs > 0 {
		runtime.GOMAXPROCS(o.genProcs)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	h := newHarness(o)
	h.pin = pin
	if err := h.run(ctx); err != nil {
		pprof.StopCPUProfile()
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "wxbench:", err)
	os.Exit(1)
}
