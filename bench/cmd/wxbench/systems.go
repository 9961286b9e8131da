package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"wxlookup/bench/report"
	"wxlookup/bench/traffic"
	"wxlookup/store"
)

// The systems the harness drives: starting them, waiting for wxlookup to settle, the
// requests each is sent and how its replies are judged, and the settings the report shows.

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

// setup records the run's settings for the report.
func (h *harness) setup() {
	o := h.o
	rl := "wxlookup's default: 30 a minute per OpenID, burst 10 (on)"
	if o.rateLimit != "" {
		rl = "WXLOOKUP_RATE_LIMIT=" + o.rateLimit
	}
	h.rep.Setup = append(h.rep.Setup,
		report.KV{Key: "load", Value: fmt.Sprintf("open loop, %d keep-alive connections per run, latency from the scheduled time, timeout %s", o.conns, o.timeout)},
		report.KV{Key: "generator", Value: fmt.Sprintf("event loops (epoll): %d thread(s) for the fixed-rate runs, %d for the maximum-throughput search", o.loops, o.maxLoops)},
		report.KV{Key: "requests", Value: fmt.Sprintf("signed WeChat text messages `?<number>`, distinct MsgIds, %d OpenIDs in turn, built before each run", o.openIDs)},
		report.KV{Key: "keys", Value: fmt.Sprintf("Zipf s=%.2f over the %d rows (rank 0 = 18-546), %.0f%% numbers not in the table", o.zipfS, o.rows, o.unknown*100)},
		report.KV{Key: "wxlookup", Value: "one process, `wxlookup serve` built with -trimpath, MySQL source (read-only account), change feed poll (the default: refresh 1s, reconcile 10s), AES key set so plaintext and safe mode share it (WXLOOKUP_REQUIRE_ENCRYPTION=false), defaults otherwise"},
		report.KV{Key: "wxlookup, binlog feed", Value: fmt.Sprintf("a second process, started for the binlog freshness run and its steady control: WXLOOKUP_CHANGE_FEED=binlog, WXLOOKUP_BINLOG_SERVER_ID=%d, WXLOOKUP_BINLOG_DSN of an account with REPLICATION SLAVE, REPLICATION CLIENT (and SELECT); MariaDB runs with --log-bin --binlog-format=ROW", o.serverID)},
		report.KV{Key: "wxlookup's heap", Value: fmt.Sprintf("`%s` from /metrics every %s during its steady, reload and freshness runs, each begun with a collection (`/debug/pprof/heap?gc=1`)", heapMetric, o.heapEvery)},
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

func procsNote(n int) string {
	if n <= 0 {
		return "default (all cores)"
	}
	return strconv.Itoa(n)
}
