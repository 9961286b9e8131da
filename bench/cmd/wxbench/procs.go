package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// buildBinaries builds wxlookup (as `make build` does), the ceiling and the baseline into
// dir and returns their paths by name.
func buildBinaries(ctx context.Context, dir string) (map[string]string, error) {
	// wxlookup from the product module, the others from the harness's own (bench/go.mod).
	for _, b := range []struct{ dir, pkgs string }{{".", "./cmd/wxlookup"}, {"bench", "./cmd/wxceiling ./cmd/wxbaseline"}} {
		args := append([]string{"-C", b.dir, "build", "-trimpath", "-o", dir + string(filepath.Separator)}, strings.Fields(b.pkgs)...)
		cmd := exec.CommandContext(ctx, "go", args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build in %s: %w\n%s", b.dir, err, out)
		}
	}
	bins := map[string]string{}
	for _, n := range []string{"wxlookup", "wxceiling", "wxbaseline"} {
		bins[n] = filepath.Join(dir, n)
	}
	return bins, nil
}

// proc is a server process the harness started.
type proc struct {
	name  string
	cmd   *exec.Cmd
	addr  string // the webhook's host:port
	admin string // wxlookup's admin host:port
	log   string // path of its output
}

// startProc runs bin with args and env (added to the harness's), sends its output to
// logPath, and waits (at most a minute) until its standard output has named its
// addresses: "listening ADDR" (ceiling, baseline) or wxlookup's banner. cpus, when not
// empty, are the only CPUs it may run on.
func startProc(name, bin string, args, env []string, logPath string, procs int, cpus []int) (*proc, error) {
	cmd, err := pinnedCommand(cpus, bin, args...)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// The servers get their own GOMAXPROCS, not the generator's.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	if procs > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(procs))
	}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath}
	found := make(chan error, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(out)
		reported := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if reported {
				continue
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && f[0] == "listening":
				p.addr = f[1]
			case len(f) == 2 && f[0] == "webhook:":
				p.addr = hostOf(f[1])
			case len(f) == 2 && f[0] == "admin:":
				p.admin = hostOf(f[1])
			}
			if p.addr != "" && (!strings.HasPrefix(name, "wxlookup") || p.admin != "") {
				reported = true
				found <- nil
			}
		}
		if !reported {
			found <- fmt.Errorf("%s exited before naming its address; see %s", name, logPath)
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case err := <-found:
		if err != nil {
			p.stop()
			return nil, err
		}
	case <-time.After(time.Minute):
		p.stop()
		return nil, fmt.Errorf("%s did not name its address within a minute; see %s", name, logPath)
	}
	return p, nil
}

// hostOf returns host:port of a URL such as http://127.0.0.1:8080/wx.
func hostOf(u string) string {
	u = strings.TrimPrefix(u, "http://")
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}

// stop asks the process to finish (SIGTERM) and kills it after ten seconds.
func (p *proc) stop() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// waitReady polls wxlookup's /readyz until it answers 200 (the first load is done).
func (p *proc) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		req, _ := newGet(ctx, "http://"+p.admin+"/readyz")
		if resp, err := httpClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wxlookup not ready within %s; see %s", limit, p.log)
		case <-t.C:
		}
	}
}

// cpu returns the CPU time the process has used so far, from /proc/PID/stat.
func (p *proc) cpu() time.Duration { return procCPU(p.cmd.Process.Pid) }

// procCPU returns utime+stime of a process; 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may contain spaces; fields start after its closing parenthesis.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux.
const clockTicks = 100

// selfCPU returns the CPU time this process (the generator) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mariadbPID finds the mariadbd listening on port by its command line.
func mariadbPID(port string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), "--port="+port+"\x00") && strings.Contains(string(cmdline), "mariadbd") {
			return pid
		}
	}
	return 0
}

// postReload asks wxlookup for a full reload and waits for it to finish.
func postReload(ctx context.Context, admin, token string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+admin+"/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reload: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// metrics scrapes wxlookup's /metrics: each metric summed over its label sets by name, and
// each labelled series by its full name (name{labels}).
func metrics(ctx context.Context, admin string) (map[string]float64, error) {
	req, _ := newGet(ctx, "http://"+admin+"/metrics")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("metrics: " + resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		full := name
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[name] += v
		if full != name {
			m[full] = v
		}
	}
	return m, sc.Err()
}

// httpClient talks to the admin listeners. A reload can take a while; nothing else does.
var httpClient = &http.Client{Timeout: 5 * time.Minute}

// newGet returns a GET of an admin URL, carrying the admin token the harness gives
// wxlookup (every admin route but the probes needs it).
func newGet(ctx context.Context, url string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err == nil {
		req.Header.Set("Authorization", "Bearer "+benchAdminToken)
	}
	return req, err
}
