package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"wxlookup/bench/fresh"
	"wxlookup/bench/load"
	"wxlookup/bench/report"
	"wxlookup/bench/traffic"
	"wxlookup/store"
)

// The account the harness plays WeChat for. The AES key is a test key, not a secret.
const (
	benchToken      = "wxbench-token"
	benchAppID      = "wx5ba1e0bench0001"
	benchAESKey     = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	benchAdminToken = "wxbench-admin"
	benchAccount    = "gh_wxbench"
)

// System names, as the report shows them.
const (
	sysCeiling  = "ceiling"
	sysBaseline = "seed baseline"
	sysPlain    = "wxlookup plaintext"
	sysSafe     = "wxlookup safe mode"
	// sysPlainBinlog is a second wxlookup process, following the binary log
	// (WXLOOKUP_CHANGE_FEED=binlog); the others use the default, poll.
	sysPlainBinlog = "wxlookup plaintext, binlog feed"
)

// system is one server the harness drives, in one mode.
type system struct {
	name     string
	proc     *proc
	mode     traffic.Mode
	wxlookup bool // has /metrics
	ceiling  bool // answers "success"
	dbPID    int  // MariaDB, whose CPU counts for the baseline
}

type harness struct {
	o       options
	rep     *report.Report
	work    string
	db      *database
	dbPID   int
	systems []*system
	procs   []*proc
	keys    *traffic.Keys
	nextMsg int64 // message number of the next request built: MsgIds never repeat
	tty     bool
	begin   time.Time
	pin     cpuSplit // -pin's division of the CPUs; zero when nothing is pinned
	bins    map[string]string
	wxEnv   []string // the environment of wxlookup (poll mode)

	// Freshness: the probe keys, their tracker across runs, and the probe messages to
	// mix into the next batch built (nil: none).
	probeKeys []fresh.Key
	tracker   *fresh.Tracker
	probe     *traffic.Probe

	rawBytes float64 // key and value bytes of the seeded rows
	rss      float64 // wxlookup's resident memory after the steady runs
}

func newHarness(o options) *harness {
	h := &harness{o: o, begin: time.Now(), rep: &report.Report{Command: commandLine(), Started: time.Now()}}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		h.tty = true
	}
	return h
}

// pinNote says in BENCH.md how the processes shared the CPUs.
func (h *harness) pinNote() string {
	if !h.pin.on() {
		return "nothing pinned: generator, servers and MariaDB share the cores"
	}
	return fmt.Sprintf("-pin: generator on CPU %s, each server on CPU %s (taskset), MariaDB unpinned",
		cpuList(h.pin.gen), cpuList(h.pin.servers))
}

func (h *harness) logf(format string, args ...any) {
	if h.tty {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	fmt.Fprintf(os.Stderr, "wxbench %6.1fs  %s\n", time.Since(h.begin).Seconds(), fmt.Sprintf(format, args...))
}

func (h *harness) run(ctx context.Context) (err error) {
	o := h.o
	if _, err := os.Stat("cmd/wxlookup"); err != nil {
		return errors.New("run from the module root (it builds ./cmd/wxlookup)")
	}
	if h.work, err = os.MkdirTemp("", "wxbench-"); err != nil {
		return err
	}
	defer func() {
		for _, p := range h.procs {
			p.stop()
		}
		if h.db != nil {
			h.db.close()
		}
		if o.keep {
			h.logf("work directory kept: %s", h.work)
		} else {
			os.RemoveAll(h.work)
		}
	}()
	h.rep.Machine = machine()
	h.rep.Go = goVersion()
	h.logf("machine: %s, %d cores, load %s", h.rep.Machine.CPU, h.rep.Machine.Cores, h.rep.Machine.LoadAvg)

	if o.micro {
		h.logf("micro-benchmarks: %s", microCmd)
		h.rep.MicroCmd = microCmd
		if h.rep.Micro, err = microBenchmarks(ctx); err != nil {
			return err
		}
	}

	h.logf("building wxlookup, wxceiling and wxbaseline")
	if h.bins, err = buildBinaries(ctx, h.work); err != nil {
		return err
	}
	h.logf("starting MariaDB (row binary log) and seeding %d rows with store.Seed", o.rows)
	if h.db, err = provision(ctx, o.rows); err != nil {
		return err
	}
	h.logf("seeded in %s", h.db.seeded.Round(100*time.Millisecond))
	_, dbPort, _ := net.SplitHostPort(h.db.srv.Addr)
	h.dbPID = mariadbPID(dbPort)
	h.probeKeys = fresh.Keys(o.probeUpdate, o.probeChurn)
	h.tracker = fresh.NewTracker(h.probeKeys)
	if err := h.db.insertProbes(ctx, h.probeKeys); err != nil {
		return err
	}
	h.rawBytes = rawBytes(o.rows)

	if err := h.startSystems(ctx); err != nil {
		return err
	}
	if h.keys, err = traffic.NewKeys(o.seed, o.rows, o.zipfS, o.unknown); err != nil {
		return err
	}
	h.setup()

	for _, s := range h.systems {
		if err := h.warmUp(ctx, s); err != nil {
			return err
		}
	}
	if o.scenarios["steady"] {
		for _, s := range h.systems {
			if err := h.steady(ctx, s); err != nil {
				return err
			}
		}
		if wx := h.system(sysPlain); wx != nil {
			h.memory(ctx, wx)
		}
	}
	if wx := h.system(sysPlain); wx != nil {
		if o.scenarios["reload"] {
			if err := h.reload(ctx, wx); err != nil {
				return err
			}
		}
		if o.scenarios["outage"] {
			if err := h.outage(ctx, wx); err != nil {
				return err
			}
			// The ceiling never talks to MySQL: what an outage does to its tail is the
			// cost of MariaDB stopping and starting on the shared cores, not of wxlookup.
			if c := h.system(sysCeiling); c != nil {
				if err := h.outage(ctx, c); err != nil {
					return err
				}
			}
		}
		if o.scenarios["fresh"] {
			if err := h.freshness(ctx, wx); err != nil {
				return err
			}
		}
	}
	if o.scenarios["max"] {
		if wx := h.system(sysPlain); wx != nil {
			if _, err := h.settle(ctx, wx.proc); err != nil {
				return err
			}
		}
		m, err := h.maxSearch(ctx, h.systems)
		if err != nil {
			return err
		}
		h.rep.Max = append(h.rep.Max, m...)
	}
	if o.scenarios["burst"] {
		h.setBurstPeak()
		for _, s := range h.systems {
			if s.name == sysBaseline {
				continue // see steady
			}
			if err := h.burst(ctx, s); err != nil {
				return err
			}
		}
	}
	if wx := h.system(sysPlain); wx != nil && o.profile > 0 && h.rep.Profile == "" {
		if err := h.profile(ctx, wx); err != nil {
			h.logf("profile: %v", err)
		}
	}
	h.judge()
	h.rep.Wall = time.Since(h.begin)
	// The hand-written reading of the figures, included after the tables.
	if b, err := os.ReadFile(filepath.Join("bench", "ANALYSIS.md")); err == nil {
		h.rep.Analysis = string(b)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	md := filepath.Join(o.out, "BENCH.md")
	if err := os.WriteFile(md, h.rep.Markdown(), 0o644); err != nil {
		return err
	}
	png := filepath.Join(o.out, "bench.png")
	if err := h.rep.Chart(png); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	h.logf("wrote %s and %s in %s", md, png, h.rep.Wall.Round(time.Second))
	return nil
}

// startSystems starts the ceiling, the baseline and wxlookup and waits for wxlookup's
// first load.
func (h *harness) startSystems(ctx context.Context) error {
	o := h.o
	ceiling, err := startProc("wxceiling", h.bins["wxceiling"], []string{"-work", o.ceilWork.String()}, nil, filepath.Join(h.work, "wxceiling.log"), o.srvProcs, h.pin.servers)
	if err != nil {
		return err
	}
	h.procs = append(h.procs, ceiling)
	baseline, err := startProc("wxbaseline", h.bins["wxbaseline"],
		[]string{"-dsn", h.db.ro, "-token", benchToken}, nil, filepath.Join(h.work, "wxbaseline.log"), o.srvProcs, h.pin.servers)
	if err != nil {
		return err
	}
	h.procs = append(h.procs, baseline)

	h.wxEnv = []string{
		"WXLOOKUP_LISTEN=127.0.0.1:0", "WXLOOKUP_ADMIN_LISTEN=127.0.0.1:0",
		"WXLOOKUP_TOKEN=" + benchToken, "WXLOOKUP_APPID=" + benchAppID, "WXLOOKUP_AES_KEY=" + benchAESKey,
		"WXLOOKUP_REQUIRE_ENCRYPTION=false", // with a key, plaintext is refused unless this says otherwise
		"WXLOOKUP_MYSQL_DSN=" + h.db.ro, "WXLOOKUP_ADMIN_TOKEN=" + benchAdminToken,
		"WXLOOKUP_LOG_LEVEL=info", "WXLOOKUP_CONFIG=",
	}
	if o.rateLimit != "" {
		h.wxEnv = append(h.wxEnv, "WXLOOKUP_RATE_LIMIT="+o.rateLimit)
	}
	h.logf("starting wxlookup and waiting for its first load of %d rows", o.rows)
	wx, warm, settled, err := h.startWxlookup(ctx, "wxlookup", h.wxEnv)
	if err != nil {
		return err
	}
	m, err := metrics(ctx, wx.admin)
	if err != nil {
		return err
	}
	h.logf("wxlookup ready in %s: %.0f entries, complete=%.0f", warm.Round(100*time.Millisecond),
		m["wxlookup_cache_entries"], m["wxlookup_cache_complete"])
	h.rep.Setup = append(h.rep.Setup,
		report.KV{Key: "rows seeded (store.Seed)", Value: fmt.Sprintf("%d in %s, and %d probe keys", o.rows, h.db.seeded.Round(100*time.Millisecond), len(h.probeKeys))},
		report.KV{Key: "wxlookup start to /readyz 200 (first load)", Value: warm.Round(100 * time.Millisecond).String()},
		report.KV{Key: "wxlookup settled (loader idle) after", Value: settled.Round(100*time.Millisecond).String() + " more"},
		report.KV{Key: "wxlookup after the first load", Value: fmt.Sprintf("%.0f entries, cache cost %.0f MiB, complete=%.0f; Go heap in use %.0f MiB, RSS %.0f MiB",
			m["wxlookup_cache_entries"], m["wxlookup_cache_cost_bytes"]/(1<<20), m["wxlookup_cache_complete"],
			m[heapMetric]/(1<<20), m["process_resident_memory_bytes"]/(1<<20))},
		report.KV{Key: "key and value bytes of the seeded rows", Value: fmt.Sprintf("%.1f MiB", h.rawBytes/(1<<20))},
	)

	want := map[string]bool{}
	for _, s := range strings.Split(o.systems, ",") {
		want[strings.TrimSpace(s)] = true
	}
	if want["ceiling"] {
		h.systems = append(h.systems, &system{name: sysCeiling, proc: ceiling, ceiling: true})
	}
	if want["baseline"] {
		h.systems = append(h.systems, &system{name: sysBaseline, proc: baseline, dbPID: h.dbPID})
	}
	if want["wxlookup"] && o.mode != "safe" {
		h.systems = append(h.systems, &system{name: sysPlain, proc: wx, wxlookup: true, mode: traffic.Plaintext})
	}
	if want["wxlookup"] && o.mode != "plain" {
		h.systems = append(h.systems, &system{name: sysSafe, proc: wx, wxlookup: true, mode: traffic.Safe})
	}
	if len(h.systems) == 0 {
		return fmt.Errorf("-systems %q -mode %q: nothing to drive", o.systems, o.mode)
	}
	return nil
}

// startWxlookup starts a wxlookup process named name with env, waits for its first load
// and for its loader to settle, and returns it with how long each took.
func (h *harness) startWxlookup(ctx context.Context, name string, env []string) (p *proc, warm, settled time.Duration, err error) {
	start := time.Now()
	p, err = startProc(name, h.bins["wxlookup"], []string{"serve"}, env, filepath.Join(h.work, name+".log"), h.o.srvProcs, h.pin.servers)
	if err != nil {
		return nil, 0, 0, err
	}
	h.procs = append(h.procs, p)
	if err := p.waitReady(ctx, 3*time.Minute); err != nil {
		return nil, 0, 0, err
	}
	warm = time.Since(start)
	if settled, err = h.settle(ctx, p); err != nil {
		return nil, 0, 0, err
	}
	return p, warm, settled, nil
}

// memory records wxlookup's resident memory after the steady runs, for the memory goal.
func (h *harness) memory(ctx context.Context, wx *system) {
	m, err := metrics(ctx, wx.proc.admin)
	if err != nil {
		h.logf("memory: %v", err)
		return
	}
	h.rep.Setup = append(h.rep.Setup, report.KV{Key: "wxlookup after the steady runs",
		Value: fmt.Sprintf("RSS %.0f MiB, Go heap in use %.0f MiB", m["process_resident_memory_bytes"]/(1<<20), m[heapMetric]/(1<<20))})
	h.rss = m["process_resident_memory_bytes"]
}

// rawBytes is the size of the keys and values of demo rows 0 … rows-1: what the table
// holds, before any index or overhead.
func rawBytes(rows int) float64 {
	n := 0
	for i := range rows {
		k, v := store.DemoRow(i)
		n += len(k) + len(v)
	}
	return float64(n)
}

// settle waits until wxlookup's loader has been idle for two seconds — no rows loaded, the
// process nearly idle — so that no run measures the tail of its start-up. It waits at most
// a minute and returns how long it took.
func (h *harness) settle(ctx context.Context, wx *proc) (time.Duration, error) {
	start := time.Now()
	var lastRows float64 = -1
	lastCPU := wx.cpu()
	quiet := 0
	for time.Since(start) < time.Minute && quiet < 4 {
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return 0, ctx.Err()
		}
		m, err := metrics(ctx, wx.admin)
		if err != nil {
			return 0, err
		}
		rows, cpu := m["wxlookup_loader_rows_loaded_total"], wx.cpu()
		if rows == lastRows && cpu-lastCPU < 50*time.Millisecond { // under 10% of a core
			quiet++
		} else {
			quiet = 0
		}
		lastRows, lastCPU = rows, cpu
	}
	return time.Since(start), nil
}

func (h *harness) system(name string) *system {
	for _, s := range h.systems {
		if s.name == name {
			return s
		}
	}
	return nil
}

// setup records the run's settings for the report.
func (h *harness) setup() {
	o := h.o
	rl := "wxlookup's default: 30 a minute per OpenID, burst 10 (on)"
	if o.rateLimit != "" {
		rl = "WXLOOKUP_RATE_LIMIT=" + o.rateLimit
	}
	h.rep.Setup = append(h.rep.Setup,
		report.KV{Key: "load", Value: fmt.Sprintf("open loop, %d keep-alive connections per run, latency from the scheduled time, timeout %s", o.conns, o.timeout)},
		report.KV{Key: "generator", Value: fmt.Sprintf("engine %s: %d thread(s) for the fixed-rate runs, %d for the maximum-throughput search", o.engine, o.loops, o.maxLoops)},
		report.KV{Key: "requests", Value: fmt.Sprintf("signed WeChat text messages `?<number>`, distinct MsgIds, %d OpenIDs in turn, built before each run", o.openIDs)},
		report.KV{Key: "keys", Value: fmt.Sprintf("Zipf s=%.2f over the %d rows (rank 0 = 18-546), %.0f%% numbers not in the table", o.zipfS, o.rows, o.unknown*100)},
		report.KV{Key: "wxlookup", Value: "one process, `wxlookup serve` built with -trimpath, MySQL source (read-only account), change feed poll (the default: refresh 1s, reconcile 10s), AES key set so plaintext and safe mode share it (WXLOOKUP_REQUIRE_ENCRYPTION=false), defaults otherwise"},
		report.KV{Key: "wxlookup, binlog feed", Value: fmt.Sprintf("a second process, started for the binlog freshness run and its steady control: WXLOOKUP_CHANGE_FEED=binlog, WXLOOKUP_BINLOG_SERVER_ID=%d, WXLOOKUP_BINLOG_DSN of an account with REPLICATION SLAVE, REPLICATION CLIENT (and SELECT); MariaDB runs with --log-bin --binlog-format=ROW", o.serverID)},
		report.KV{Key: "wxlookup's heap", Value: fmt.Sprintf("`%s` from /metrics every %s during its steady, reload and freshness runs", heapMetric, o.heapEvery)},
		report.KV{Key: "wxlookup rate limit", Value: rl},
		report.KV{Key: "seed baseline", Value: "net/http + encoding/xml + one prepared MySQL query per message, pool of 32 connections; driven in the maximum-throughput search only (at the steady rate every request times out, which measures nothing)"},
		report.KV{Key: "ceiling", Value: "fasthttp with wxlookup's server settings, handler answers `success`"},
		report.KV{Key: "GOMAXPROCS", Value: fmt.Sprintf("generator %s, servers %s", procsNote(o.genProcs), procsNote(o.srvProcs))},
		report.KV{Key: "CPUs", Value: h.pinNote()},
	)
}

// batch builds n requests for s.
func (h *harness) batch(s *system, n int) (*traffic.Batch, error) {
	b, err := traffic.Build(traffic.Spec{
		Account: traffic.Account{Token: benchToken, AppID: benchAppID, AESKey: benchAESKey, ID: benchAccount,
			Host: s.proc.addr, Path: "/wx"},
		Mode: s.mode, N: n, First: h.nextMsg, OpenIDs: h.o.openIDs, Keys: h.keys, Probe: h.probe,
	})
	h.nextMsg += int64(n)
	return b, err
}

func (s *system) check(b *traffic.Batch) func(int, []byte) error {
	if s.ceiling {
		return func(_ int, body []byte) error {
			if string(body) != "success" {
				return fmt.Errorf("reply %.40q, want success", body)
			}
			return nil
		}
	}
	return b.Check
}

// followMariaDB finds MariaDB's process again after a restart, for the CPU figures.
func (h *harness) followMariaDB() {
	_, port, _ := net.SplitHostPort(h.db.srv.Addr)
	h.dbPID = mariadbPID(port)
	for _, s := range h.systems {
		if s.dbPID != 0 {
			s.dbPID = h.dbPID
		}
	}
}

// mariaCPU is MariaDB's share of a core over a run of length d, from its CPU time at the
// start and the end; not known when it was restarted in between (another process).
func mariaCPU(cpu0, cpu1 time.Duration, pid0, pid1 int, d time.Duration) string {
	if pid0 != pid1 || d <= 0 {
		return "not known (MariaDB was restarted)"
	}
	return fmt.Sprintf("%.1f%% of a core", 100*(cpu1-cpu0).Seconds()/d.Seconds())
}

// heapScenarios are the runs during which wxlookup's heap is sampled.
var heapScenarios = map[string]bool{"steady": true, "reload": true, "fresh": true}

// event is something done during a run.
type event struct {
	at    time.Time
	label string
}

// during runs alongside a measured run; it marks what it does and returns facts for the
// report.
type during func(ctx context.Context, mark func(string)) []report.KV

// measure drives s with sched and returns the run's summary and raw result.
func (h *harness) measure(ctx context.Context, s *system, scenario, shape string, sched load.Schedule, timeout time.Duration, dur during) (*report.Run, *load.Result, error) {
	b, err := h.batch(s, len(sched))
	if err != nil {
		return nil, nil, err
	}
	var m0 map[string]float64
	if s.wxlookup {
		if m0, err = metrics(ctx, s.proc.admin); err != nil {
			return nil, nil, err
		}
	}
	cpu0, db0, gen0, st0 := s.proc.cpu(), procCPU(s.dbPID), selfCPU(), readCPUStat()
	maria0, mariaPID0 := procCPU(h.dbPID), h.dbPID
	var stopHeap func() ([]heapSample, time.Duration)
	if s.wxlookup && h.o.heapEvery > 0 && heapScenarios[scenario] {
		stopHeap = watchHeap(ctx, s.proc.admin, h.o.heapEvery)
	}

	var (
		mu     sync.Mutex
		events []event
		extra  []report.KV
		wg     sync.WaitGroup
	)
	if dur != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			extra = dur(ctx, func(label string) {
				mu.Lock()
				events = append(events, event{time.Now(), label})
				mu.Unlock()
				h.logf("%s: %s", scenario, label)
			})
		}()
	}
	label := fmt.Sprintf("%-7s %-19s", scenario, s.name)
	loops := h.o.loops
	if scenario == "max" {
		loops = h.o.maxLoops
	}
	res, err := load.Run(ctx, load.Config{
		Addr: s.proc.addr, Conns: h.o.conns, Schedule: sched, Request: b.Request, Check: s.check(b),
		Timeout: timeout, Progress: h.progress(label), Engine: h.engine(), Loops: loops,
	})
	wg.Wait()
	var heap []heapSample
	var scrape time.Duration
	if stopHeap != nil {
		heap, scrape = stopHeap()
	}
	if err != nil {
		return nil, nil, err
	}
	cpu1, db1, gen1, st1 := s.proc.cpu(), procCPU(s.dbPID), selfCPU(), readCPUStat()
	maria1 := procCPU(h.dbPID)

	hist := res.Histogram()
	run := &report.Run{
		Scenario: scenario, Shape: shape, System: s.name, Offered: res.Rate(), Peak: peakRate(sched),
		Duration: sched.Duration(), Requests: len(sched), Throughput: res.Throughput(),
		P50: hist.Percentile(50), P99: hist.Percentile(99), P999: hist.Percentile(99.9), Max: hist.Max(),
		Errors: res.Errors(), ErrorKinds: errorKinds(res), HitRatio: -1,
		ServerCPU:   perRequest(cpu1-cpu0+db1-db0, res.Count(load.OK)),
		GenCPU:      perRequest(gen1-gen0, res.Count(load.OK)),
		LagP99:      res.LagHistogram().Percentile(99),
		Curve:       curve(hist),
		Timeline:    res.Timeline(time.Second),
		Failures:    res.Failures,
		Extra:       extra,
		MachineBusy: st1.busyShare(st0), Steal: st1.stealShare(st0),
	}
	// What the cores did for anything but this run: other processes on the machine.
	if busy, total := st1.seconds(st0); total > 0 {
		ours := (cpu1 - cpu0 + db1 - db0 + gen1 - gen0).Seconds()
		run.Others = max(busy-ours, 0) / total
	}
	if s.wxlookup {
		m1, err := metrics(ctx, s.proc.admin)
		if err != nil {
			return nil, nil, err
		}
		hits := m1["wxlookup_cache_hits_total"] - m0["wxlookup_cache_hits_total"]
		misses := m1["wxlookup_cache_misses_total"] - m0["wxlookup_cache_misses_total"]
		if hits+misses > 0 {
			run.HitRatio = hits / (hits + misses)
		}
		if rl := m1["wxlookup_requests_total{route=\"oa\",kind=\"text\",outcome=\"rate_limited\"}"] -
			m0["wxlookup_requests_total{route=\"oa\",kind=\"text\",outcome=\"rate_limited\"}"]; rl > 0 {
			run.Extra = append(run.Extra, report.KV{Key: "rate-limited replies", Value: fmt.Sprintf("%.0f", rl)})
		}
		run.Heap = heapOf(heap, res.Start, scrape)
		delta := func(name string) float64 { return m1[name] - m0[name] }
		run.Extra = append(run.Extra,
			report.KV{Key: "loader errors during the run", Value: fmt.Sprintf("%.0f", delta("wxlookup_loader_errors_total"))},
			report.KV{Key: "loader: rows read, reconcile ranges compared (differing), rows removed",
				Value: fmt.Sprintf("%.0f, %.0f (%.0f), %.0f", delta("wxlookup_loader_rows_loaded_total"), delta("wxlookup_loader_reconcile_checks_total"),
					delta(`wxlookup_loader_reconcile_checks_total{result="differ"}`), delta("wxlookup_loader_rows_removed_total"))},
			report.KV{Key: "MariaDB CPU during the run", Value: mariaCPU(maria0, maria1, mariaPID0, h.dbPID, res.End.Sub(res.Start))},
			report.KV{Key: "wxlookup garbage collections during the run", Value: fmt.Sprintf("%.0f", delta("go_gc_duration_seconds_count"))})
	}
	for _, e := range events {
		run.Events = append(run.Events, report.Event{At: e.at.Sub(res.Start), Label: e.label})
	}
	if len(run.Events) >= 2 {
		from, to := run.Events[0].At, run.Events[len(run.Events)-1].At
		w := res.Window(from, to)
		run.Window = &report.Window{From: from, To: to, Requests: int(w.Count()),
			P50: w.Percentile(50), P99: w.Percentile(99), P999: w.Percentile(99.9), Max: w.Max()}
	}
	h.logf("%s %8.0f/s offered %8.0f/s ok  p50 %-9s p99 %-9s p99.9 %-9s max %-9s errors %d%s  others %.0f%%",
		label, run.Offered, run.Throughput, fmtD(run.P50), fmtD(run.P99), fmtD(run.P999), fmtD(run.Max), run.Errors,
		hitNote(run.HitRatio), 100*run.Others)
	for _, f := range res.Failures {
		h.logf("  e.g. %s", f)
	}
	return run, res, nil
}

func hitNote(r float64) string {
	if r < 0 {
		return ""
	}
	return fmt.Sprintf("  hit ratio %.3f", r)
}

// progress returns a progress printer for a run: one line, rewritten every second on a
// terminal, or a line every five seconds in a log.
func (h *harness) progress(label string) func(load.Progress) {
	return func(p load.Progress) {
		if !h.tty && int(p.Elapsed/time.Second)%5 != 0 {
			return
		}
		line := fmt.Sprintf("wxbench %6.1fs  %s %5.1fs  due %d/%d  done %d  errors %d  in flight %d",
			time.Since(h.begin).Seconds(), label, p.Elapsed.Seconds(), p.Due, p.Total, p.Done, p.Errors, max(p.Due-p.Done, 0))
		if h.tty {
			fmt.Fprint(os.Stderr, "\r\033[K"+line)
		} else {
			fmt.Fprintln(os.Stderr, line)
		}
	}
}

// warmUp sends a second of light load to s, unmeasured, so first-use costs (connections,
// goroutine stacks, buffers) do not land in the first measured run.
func (h *harness) warmUp(ctx context.Context, s *system) error {
	sched, err := load.Constant(h.o.rate/4, time.Second)
	if err != nil {
		return err
	}
	b, err := h.batch(s, len(sched))
	if err != nil {
		return err
	}
	res, err := load.Run(ctx, load.Config{Addr: s.proc.addr, Conns: h.o.conns, Schedule: sched,
		Request: b.Request, Check: s.check(b), Timeout: h.o.timeout, Engine: h.engine(), Loops: h.o.loops})
	if err != nil {
		return err
	}
	if n := res.Errors(); n > 0 && !strings.Contains(s.name, "baseline") {
		return fmt.Errorf("warm-up of %s: %d of %d requests failed: %q", s.name, n, len(sched), res.Failures)
	}
	return nil
}

// steady runs the steady rate against s. The seed baseline is not driven at the steady
// rate: it answers a fraction of it, and every other request times out.
func (h *harness) steady(ctx context.Context, s *system) error {
	if s.name == sysBaseline {
		return nil
	}
	sched, err := load.Constant(h.o.rate, h.o.duration)
	if err != nil {
		return err
	}
	run, _, err := h.measure(ctx, s, "steady", h.constantShape(), sched, h.o.timeout, nil)
	if err != nil {
		return err
	}
	h.rep.Runs = append(h.rep.Runs, *run)
	return nil
}

// setBurstPeak sets the burst's peak, unless -burst-peak did: 80% of the maximum rate
// found for wxlookup plaintext, or -rate without a search.
func (h *harness) setBurstPeak() {
	if h.o.burstPeak > 0 {
		return
	}
	h.o.burstPeak = h.o.rate
	if m := h.rep.MaxOf(sysPlain); m > 0 {
		h.o.burstPeak = math.Round(0.8 * m)
	}
}

func (h *harness) burst(ctx context.Context, s *system) error {
	sched, err := load.Ramp(h.o.burstPeak/20, h.o.burstPeak, h.o.burstRamp, h.o.burstHold)
	if err != nil {
		return err
	}
	shape := fmt.Sprintf("%.0f → %.0f req/s over %s, then %.0f req/s for %s", h.o.burstPeak/20, h.o.burstPeak,
		h.o.burstRamp, h.o.burstPeak, h.o.burstHold)
	// wxlookup plaintext is CPU-profiled during the hold of its burst.
	var dur during
	var path string
	secs := min(int(h.o.profile/time.Second), int((h.o.burstHold-2*time.Second)/time.Second))
	after := h.o.burstRamp + time.Second
	if s.name == sysPlain && secs > 0 {
		dur, path = h.profiler(s, after, secs)
	}
	run, _, err := h.measure(ctx, s, "burst", shape, sched, h.o.timeout, dur)
	if err != nil {
		return err
	}
	if path != "" {
		run.Window = nil // the profile's span is not an event window worth a row
		if err := h.keepProfile(ctx, path, fmt.Sprintf("%s into the burst of %s, during its hold at %.0f/s", after, s.name, h.o.burstPeak), secs); err != nil {
			h.logf("profile: %v", err)
		}
	}
	h.rep.Runs = append(h.rep.Runs, *run)
	return nil
}

// reload runs the steady load on wxlookup and asks for a full reload into it.
func (h *harness) reload(ctx context.Context, s *system) error {
	sched, err := load.Constant(h.o.rate, h.o.reloadFor)
	if err != nil {
		return err
	}
	dur := func(ctx context.Context, mark func(string)) []report.KV {
		if !sleepCtx(ctx, h.o.eventAt) {
			return nil
		}
		mark("reload requested")
		traced := h.traceFrom(ctx, s, "reload")
		start := time.Now()
		err := postReload(ctx, s.proc.admin, benchAdminToken)
		took := time.Since(start)
		traced()
		if err != nil {
			mark("reload failed: " + err.Error())
			return []report.KV{{Key: "reload", Value: "failed: " + err.Error()}}
		}
		mark("reload done")
		return []report.KV{{Key: "full reload took", Value: took.Round(10 * time.Millisecond).String()}}
	}
	shape := fmt.Sprintf("%.0f req/s for %s, full reload requested at %s", h.o.rate, h.o.reloadFor, h.o.eventAt)
	run, _, err := h.measure(ctx, s, "reload", shape, sched, h.o.timeout, dur)
	if err != nil {
		return err
	}
	h.rep.Runs = append(h.rep.Runs, *run)
	return nil
}

// outage runs the steady load on s, stops MariaDB into it and starts it again, and, for
// wxlookup, then waits for the loader to succeed again.
func (h *harness) outage(ctx context.Context, s *system) error {
	sched, err := load.Constant(h.o.rate, h.o.duration)
	if err != nil {
		return err
	}
	var recovered *report.KV
	dur := func(ctx context.Context, mark func(string)) []report.KV {
		if !sleepCtx(ctx, h.o.eventAt) {
			return nil
		}
		mark("MariaDB stopping")
		if err := h.db.srv.StopServer(); err != nil {
			mark("stop failed: " + err.Error())
			return nil
		}
		mark("MariaDB stopped")
		if !sleepCtx(ctx, h.o.outageFor) {
			return nil
		}
		mark("MariaDB starting")
		starting := time.Now()
		if err := h.db.srv.RestartServer(); err != nil {
			mark("restart failed: " + err.Error())
			return nil
		}
		accepting := time.Now()
		mark("MariaDB accepting connections")
		h.followMariaDB()
		// Watch for the loader's recovery now, under the load: after the run the loader's
		// last success is a later refresh and says nothing of when it came back.
		if s.proc.admin != "" {
			kv := h.recovery(ctx, s, starting, accepting)
			recovered = &kv
		}
		return nil
	}
	run, _, err := h.measure(ctx, s, "outage", h.constantShape()+fmt.Sprintf(", MariaDB stopped at %s for %s", h.o.eventAt, h.o.outageFor), sched, h.o.timeout, dur)
	if err != nil {
		return err
	}
	if recovered != nil {
		run.Extra = append(run.Extra, *recovered)
	}
	h.rep.Runs = append(h.rep.Runs, *run)
	return nil
}

// recovery waits (at most 30s) for the loader's first successful step begun after MariaDB
// was started again, and reports it relative to when MariaDB accepted connections (the
// harness's ping polls every 20 ms, so the loader can be a little ahead of it).
func (h *harness) recovery(ctx context.Context, s *system, starting, accepting time.Time) report.KV {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		m, err := metrics(ctx, s.proc.admin)
		if err == nil {
			last := m["wxlookup_loader_last_success_timestamp_seconds"]
			at := time.Unix(0, int64(last*1e9))
			if at.After(starting) {
				return report.KV{Key: "loader's first success after MariaDB accepted connections",
					Value: fmt.Sprintf("%s after (staleness then %.1fs)", at.Sub(accepting).Round(10*time.Millisecond),
						m["wxlookup_loader_staleness_seconds"])}
			}
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			break
		}
	}
	return report.KV{Key: "loader recovery", Value: "no loader success within 30s of MariaDB's return"}
}

func (h *harness) engine() load.Engine {
	if h.o.engine == "goroutines" {
		return load.Goroutines
	}
	return load.EventLoop
}

func procsNote(n int) string {
	if n <= 0 {
		return "default (all cores)"
	}
	return strconv.Itoa(n)
}

func (h *harness) constantShape() string {
	return fmt.Sprintf("%.0f req/s for %s", h.o.rate, h.o.duration)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func perRequest(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

func peakRate(s load.Schedule) float64 {
	n := len(s)
	if n < 2 {
		return 0
	}
	k := min(n-1, 1000)
	d := (s[n-1] - s[n-1-k]).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(k) / d
}

func errorKinds(r *load.Result) string {
	var parts []string
	for o := load.OK + 1; o <= load.Unsent; o++ {
		if n := r.Count(o); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", o, n))
		}
	}
	return strings.Join(parts, ", ")
}

// curve samples a latency-by-percentile curve: percentiles 1 − 10^-x for x from 0 to the
// resolution the count allows.
func curve(h *load.Histogram) []report.Point {
	var pts []report.Point
	maxX := math.Log10(float64(h.Count()))
	for x := 0.1; x <= maxX && x <= 5; x += 0.05 { // from p20: HDR's p0 is not a latency
		p := 100 * (1 - math.Pow(10, -x))
		pts = append(pts, report.Point{Percentile: p, Latency: h.Percentile(p)})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].Percentile < pts[j].Percentile })
	return pts
}

func fmtD(d time.Duration) string { return report.FormatDuration(d) }
