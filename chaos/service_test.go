package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"wxlookup/internal/freeport"
	"wxlookup/internal/logtest"
)

// TestMain removes the built binary after the tests. The tests start private MariaDB
// servers (mariadbtest.Start), which they own and stop themselves.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// longRun reports whether `make chaos` asked for the long version of the fault tests.
func longRun() bool { return os.Getenv("CHAOS_LONG") != "" }

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// binary builds cmd/wxlookup once per test run (with -race when the tests run with it) and
// returns its path.
func binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "wxlookup-chaos-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "wxlookup")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/wxlookup")
		cmd := exec.Command("go", args...)
		cmd.Dir = ".." // the product module: its go.mod, not the harness's, picks the versions
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// service is one wxlookup process started from the built binary.
type service struct {
	tb      testing.TB
	name    string
	cmd     *exec.Cmd
	Webhook string          // http://127.0.0.1:port/wx
	Admin   string          // http://127.0.0.1:port
	token   string          // WXLOOKUP_ADMIN_TOKEN, sent with every admin request but the probes
	Port    int             // the webhook's port
	log     *logtest.Buffer // the process's stderr
	done    chan struct{}   // closed when the process has exited
	exitErr error           // valid after done
}

// freePort returns a loopback port that was free a moment ago, outside the range the
// kernel hands out to other tests' connections meanwhile (freeport).
func freePort(tb testing.TB) int {
	tb.Helper()
	p, err := freeport.Pick()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// serviceEnv is the test's environment without any WXLOOKUP_* setting, for a service
// started with its own.
func serviceEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WXLOOKUP_") {
			env = append(env, kv)
		}
	}
	return env
}

// startService runs `wxlookup serve` with env (WXLOOKUP_* settings; the listeners default
// to 127.0.0.1:0), waits until both listeners accept, and stops it when the test ends.
// It does not wait for the first load: see waitReady.
func startService(tb testing.TB, name string, env map[string]string) *service {
	tb.Helper()
	bin := binary(tb)
	cmd := exec.Command(bin, "serve")
	cmd.Env = serviceEnv()
	settings := map[string]string{"WXLOOKUP_LISTEN": "127.0.0.1:0", "WXLOOKUP_ADMIN_LISTEN": "127.0.0.1:0"}
	for k, v := range env {
		settings[k] = v
	}
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if raceEnabled {
		cmd.Env = append(cmd.Env, "GORACE=halt_on_error=1 exitcode=66")
	}
	s := &service{tb: tb, name: name, cmd: cmd, log: &logtest.Buffer{}, done: make(chan struct{}),
		token: settings["WXLOOKUP_ADMIN_TOKEN"]}
	cmd.Stderr = s.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	banner := make(chan [2]string, 1)
	go func() {
		// The banner names both listeners once they accept connections.
		var webhook, admin string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, "webhook: "); ok {
				webhook = v
			}
			if v, ok := strings.CutPrefix(line, "admin:"); ok {
				admin = strings.TrimSuffix(strings.TrimSpace(v), "/status")
				banner <- [2]string{webhook, admin}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		s.exitErr = cmd.Wait()
		close(s.done)
	}()
	tb.Cleanup(func() { s.stop() })

	select {
	case b := <-banner:
		s.Webhook, s.Admin = b[0], b[1]
	case <-s.done:
		tb.Fatalf("%s exited before listening: %v\n%s", name, s.exitErr, s.log.String())
	case <-time.After(60 * time.Second):
		tb.Fatalf("%s printed no banner within 60s\n%s", name, s.log.String())
	}
	u := strings.TrimPrefix(s.Webhook, "http://")
	_, port, _ := net.SplitHostPort(u[:strings.Index(u, "/")])
	s.Port, _ = strconv.Atoi(port)
	return s
}

// waitReady waits until /readyz answers 200 (the first load is done).
func (s *service) waitReady(timeout time.Duration) {
	s.tb.Helper()
	s.waitFor(timeout, "/readyz 200", func() bool {
		code, _, err := s.get("/readyz")
		return err == nil && code == http.StatusOK
	})
}

// waitFor polls cond every 20ms until it holds, the process exits, or timeout passes.
func (s *service) waitFor(timeout time.Duration, what string, cond func() bool) {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-s.done:
			s.tb.Fatalf("%s exited while waiting for %s: %v\n%s", s.name, what, s.exitErr, s.log.String())
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("%s: no %s within %s\n%s", s.name, what, timeout, tail(s.log.String(), 4000))
		}
	}
}

var adminClient = &http.Client{Timeout: 5 * time.Second}

// get fetches an admin path, with the service's admin token if it has one.
func (s *service) get(path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, s.Admin+path, nil)
	if err != nil {
		return 0, "", err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metrics scrapes /metrics into series (name with labels as written) → value.
func (s *service) metrics() map[string]float64 {
	s.tb.Helper()
	code, body, err := s.get("/metrics")
	if err != nil || code != http.StatusOK {
		s.tb.Fatalf("%s /metrics: %d %v", s.name, code, err)
	}
	return parseMetrics(body)
}

// metric returns one series' value (0 when absent). A name without labels sums the series
// of that name whatever their labels: the cache and loader metrics carry the label query
// of the query they serve (one here, the implicit location).
func (s *service) metric(series string) float64 {
	s.tb.Helper()
	all := s.metrics()
	if v, ok := all[series]; ok || strings.Contains(series, "{") {
		return v
	}
	var sum float64
	for k, v := range all {
		if strings.HasPrefix(k, series+"{") {
			sum += v
		}
	}
	return sum
}

func parseMetrics(body string) map[string]float64 {
	m := make(map[string]float64)
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// signal sends sig to the process.
func (s *service) signal(sig syscall.Signal) {
	s.tb.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.tb.Fatalf("%s: signal %v: %v", s.name, sig, err)
	}
}

// wait waits for the process to exit and returns its exit error.
func (s *service) wait(timeout time.Duration) error {
	s.tb.Helper()
	select {
	case <-s.done:
		return s.exitErr
	case <-time.After(timeout):
		s.tb.Fatalf("%s did not exit within %s\n%s", s.name, timeout, tail(s.log.String(), 4000))
		return nil
	}
}

// stop ends the process if it still runs (SIGTERM, then SIGKILL after 20s) and fails the
// test if the race detector reported anything.
func (s *service) stop() {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	if os.Getenv("CHAOS_SHOWLOG") != "" {
		s.tb.Logf("%s log:\n%s", s.name, s.log.String())
	}
	if strings.Contains(s.log.String(), "WARNING: DATA RACE") {
		s.tb.Errorf("%s: the race detector reported a race:\n%s", s.name, s.log.String())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// waitUntil polls cond every 20ms until it holds or timeout passes, and reports whether it
// held.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
	return true
}
