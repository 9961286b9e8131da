package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"wxlookup/bench/load"
	"wxlookup/bench/report"
)

// microCmd runs the Go micro-benchmarks of the parse → lookup → render path, short.
const microCmd = "go test -run '^$' -bench 'Parse|Render|Signature|Encrypt|Decrypt|Answer|Handler|LookupHit$|LookupMiss|AppendKey|Limiter' -benchtime 200ms -benchmem ./wechat/ ./server/ ./cache/"

func microBenchmarks(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", microCmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("micro-benchmarks: %w\n%s", err, out)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "pkg:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n"), nil
}

// profiler returns a during that CPU-profiles wxlookup for secs seconds after waiting
// `after`, and where the profile will be.
func (h *harness) profiler(s *system, after time.Duration, secs int) (during, string) {
	path := filepath.Join(h.work, "wxlookup.cpu.pprof")
	return func(ctx context.Context, mark func(string)) []report.KV {
		if !sleepCtx(ctx, after) {
			return nil
		}
		mark("profile started")
		err := fetch(ctx, "http://"+s.proc.admin+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), path)
		mark("profile done")
		if err != nil {
			return []report.KV{{Key: "profile", Value: err.Error()}}
		}
		return nil
	}, path
}

// traceFrom starts an execution trace of wxlookup, -trace-reload long, into the work
// directory as <name>.trace, and returns a wait for it to be written. Without
// -trace-reload it does nothing.
func (h *harness) traceFrom(ctx context.Context, s *system, name string) (wait func()) {
	if h.o.traceLoad <= 0 || s.proc.admin == "" {
		return func() {}
	}
	path := filepath.Join(h.work, name+".trace")
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%g", s.proc.admin, h.o.traceLoad.Seconds())
		if err := fetch(ctx, url, path); err != nil {
			h.logf("trace: %v", err)
			return
		}
		h.logf("trace written: %s (go tool trace %s)", path, path)
	}()
	return func() { <-done }
}

// keepProfile puts `go tool pprof -top` of the profile at path into the report.
func (h *harness) keepProfile(ctx context.Context, path, during string, secs int) error {
	h.rep.ProfileCmd = fmt.Sprintf("curl 'http://$WXLOOKUP_ADMIN_LISTEN/debug/pprof/profile?seconds=%d' (%s) > cpu.pprof && go tool pprof -top -nodecount=35 cpu.pprof", secs, during)
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=35", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pprof: %w\n%s", err, out)
	}
	h.rep.Profile = string(bytes.TrimSpace(out))
	return nil
}

// profile CPU-profiles wxlookup under the steady rate in a run of its own, when the burst
// (which is profiled otherwise) is not run.
func (h *harness) profile(ctx context.Context, s *system) error {
	secs := max(int(h.o.profile/time.Second), 1)
	sched, err := load.Constant(h.o.rate, time.Duration(secs+2)*time.Second)
	if err != nil {
		return err
	}
	dur, path := h.profiler(s, time.Second, secs)
	run, _, err := h.measure(ctx, s, "profile", fmt.Sprintf("%.0f req/s for %ds while profiling", h.o.rate, secs+2), sched, h.o.timeout, dur)
	if err != nil {
		return err
	}
	h.rep.Runs = append(h.rep.Runs, *run)
	return h.keepProfile(ctx, path, fmt.Sprintf("%ds into a run of %s at %.0f/s", 1, s.name, h.o.rate), secs)
}

func fetch(ctx context.Context, url, path string) error {
	req, _ := newGet(ctx, url)
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func machine() report.Machine {
	m := report.Machine{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m.MemGiB = kb / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

func goVersion() string {
	out, err := exec.Command("go", "version").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(out))
}

// commandLine is how the harness was invoked: `make bench` when make ran it.
func commandLine() string {
	args := "bin/wxbench"
	if len(os.Args) > 1 {
		args += " " + strings.Join(os.Args[1:], " ")
	}
	if os.Getenv("MAKELEVEL") != "" {
		return "make bench  (" + args + ")"
	}
	return args
}

// cpuStat is the first line of /proc/stat: jiffies of all cores by state.
type cpuStat struct{ total, idle, steal float64 }

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var s cpuStat
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		s.total += x
		switch i {
		case 3, 4: // idle, iowait
			s.idle += x
		case 7:
			s.steal += x
		}
	}
	return s
}

// busyShare is the share of all cores busy (including stolen time) between s0 and s.
func (s cpuStat) busyShare(s0 cpuStat) float64 {
	t := s.total - s0.total
	if t <= 0 {
		return 0
	}
	return 1 - (s.idle-s0.idle)/t
}

// seconds is the CPU time, summed over cores, between s0 and s: busy, and in all.
func (s cpuStat) seconds(s0 cpuStat) (busy, total float64) {
	t := (s.total - s0.total) / clockTicks
	return t - (s.idle-s0.idle)/clockTicks, t
}

// stealShare is the share of all cores' time the hypervisor gave to other guests.
func (s cpuStat) stealShare(s0 cpuStat) float64 {
	t := s.total - s0.total
	if t <= 0 {
		return 0
	}
	return (s.steal - s0.steal) / t
}
