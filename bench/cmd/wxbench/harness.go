package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"wxlookup/bench/fresh"
	"wxlookup/bench/report"
	"wxlookup/bench/traffic"
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

func (h *harness) system(name string) *system {
	for _, s := range h.systems {
		if s.name == name {
			return s
		}
	}
	return nil
}
