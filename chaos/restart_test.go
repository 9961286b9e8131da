package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"wxlookup/store"
	"wxlookup/wechat"
)

// demoEnv is the configuration of a demo-mode replica (embedded rows, token "demo") on
// 127.0.0.1:port, as docs/OPERATIONS.md recommends for replicas and handovers (the webhook
// port opens after the first load), without the per-OpenID limit (the load sends from a
// few OpenIDs).
func demoEnv(port int) map[string]string {
	return map[string]string{"WXLOOKUP_LISTEN": "127.0.0.1:" + strconv.Itoa(port), "WXLOOKUP_RATE_LIMIT": "0",
		"WXLOOKUP_LISTEN_WHEN_READY": "true"}
}

// askDemo returns a load function asking for demo rows through c and checking the replies.
func askDemo(c *wxClient) func(ctx context.Context, worker, seq int) error {
	return func(ctx context.Context, worker, seq int) error {
		k, v := store.DemoRow((worker*7919 + seq) % 1000)
		got, err := c.ask(ctx, fmt.Sprintf("oChaos%d", worker), "?"+k)
		if err != nil {
			return err
		}
		if want := found(k, v); got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
}

// requestsServed sums wxlookup_requests_total over all labels.
func requestsServed(s *service) float64 {
	var n float64
	for series, v := range s.metrics() {
		if strings.HasPrefix(series, "wxlookup_requests_total{") {
			n += v
		}
	}
	return n
}

// slowRequest is a request whose body is still arriving: its headers and half its body are
// sent at once, the rest by finish.
type slowRequest struct {
	conn net.Conn
	rest []byte
	want string
}

func startSlowRequest(t *testing.T, addr, token, key, location string) *slowRequest {
	t.Helper()
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	msg := wechat.AppendTextMessage(nil, []byte("gh_chaos"), []byte("oSlow"), now.Unix(), []byte("?"+key), msgIDs.Add(1))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST /wx?signature=%s&timestamp=%s&nonce=42 HTTP/1.1\r\nHost: %s\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n",
		wechat.Signature(token, ts, "42"), ts, addr, len(msg))
	half := len(msg) / 2
	if _, err := conn.Write(append([]byte(head), msg[:half]...)); err != nil {
		t.Fatal(err)
	}
	return &slowRequest{conn: conn, rest: msg[half:], want: found(key, location)}
}

// finish sends the rest of the body and returns the reply's status and whether its body
// holds the expected answer.
func (r *slowRequest) finish(t *testing.T) (int, bool) {
	t.Helper()
	if _, err := r.conn.Write(r.rest); err != nil {
		t.Fatalf("slow request: write the rest: %v", err)
	}
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(r.conn), nil)
	if err != nil {
		t.Fatalf("slow request: the reply was cut: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, strings.Contains(b.String(), r.want)
}

// handoverEnv is demoEnv for a process that shares its webhook port with its successor
// (WXLOOKUP_REUSE_PORT, which both must set).
func handoverEnv(port int) map[string]string {
	env := demoEnv(port)
	env["WXLOOKUP_REUSE_PORT"] = "true"
	return env
}

// TestSIGTERMHandover: under load, a second process starts on the same port
// (WXLOOKUP_REUSE_PORT on both) and the first gets SIGTERM. No reply fails; a request whose body was still arriving at
// the SIGTERM is answered in full; the old process exits 0; the new one answers the rest.
func TestSIGTERMHandover(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	old := startService(t, "old", handoverEnv(port))
	old.waitReady(30 * time.Second)
	c := newClient(old.Webhook, "demo", "", "")
	l := startLoad(loadConfig{Rate: 300, Workers: 6, MaxSent: 100_000, MaxTime: 2 * time.Minute}, askDemo(c))
	if !l.waitSent(300, 10*time.Second) {
		t.Fatal("the load stalled")
	}
	// In flight at the SIGTERM: headers and half a body on a connection the old process
	// accepted (the only listener on the port until the new one starts).
	k, v := store.DemoRow(3)
	slow := startSlowRequest(t, "127.0.0.1:"+strconv.Itoa(port), "demo", k, v)
	old.waitFor(5*time.Second, "the slow request's connection accepted", func() bool {
		return strings.Contains(mustGet(t, old, "/debug/pprof/goroutine?debug=1"), "fasthttp.(*Server).serveConn")
	})

	next := startService(t, "new", handoverEnv(port))
	next.waitReady(30 * time.Second)
	if !l.waitSent(300, 10*time.Second) {
		t.Fatal("the load stalled with two processes on the port")
	}
	oldServed := requestsServed(old)
	old.signal(syscall.SIGTERM)
	old.waitFor(10*time.Second, "the shutdown to begin", func() bool {
		return strings.Contains(old.log.String(), "shutting down")
	})
	status, ok := slow.finish(t)
	if status != http.StatusOK || !ok {
		t.Errorf("the request in flight at the SIGTERM got %d (answer ok: %v), want 200 with its answer", status, ok)
	}
	if err := old.wait(15 * time.Second); err != nil {
		t.Errorf("the old process exited with %v, want 0\n%s", err, tail(old.log.String(), 2000))
	}
	newBefore := requestsServed(next)
	if !l.waitSent(300, 10*time.Second) {
		t.Fatal("the load stalled after the old process exited")
	}
	f := l.Stop()
	newServed := requestsServed(next)
	report(t, "sigterm-handover", f, fmt.Sprintf("old_served=%.0f new_served=%.0f", oldServed, newServed))
	if newServed-newBefore < 300 {
		t.Errorf("the new process answered %.0f requests after the old one exited, want the whole load (≥ 300)", newServed-newBefore)
	}
}

func mustGet(t *testing.T, s *service, path string) string {
	t.Helper()
	code, body, err := s.get(path)
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s %s: %d %v", s.name, path, code, err)
	}
	return body
}

// TestSecondServeOnPortInUse: a second `wxlookup serve` on the port of a running one, with
// the default settings, exits 1 saying "address already in use" and naming WXLOOKUP_LISTEN,
// instead of silently sharing the port.
func TestSecondServeOnPortInUse(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	first := startService(t, "first", demoEnv(port))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), "serve")
	cmd.Env = append(serviceEnv(), "WXLOOKUP_LISTEN=127.0.0.1:"+strconv.Itoa(port), "WXLOOKUP_ADMIN_LISTEN=127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("second serve on port %d: got %v, want exit status 1\n%s", port, err, out)
	}
	if !strings.Contains(string(out), "address already in use") || !strings.Contains(string(out), "WXLOOKUP_LISTEN") {
		t.Errorf("second serve said %q, want a line naming WXLOOKUP_LISTEN and address already in use", out)
	}
	if code, _, err := first.get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("the first server after the second one's attempt: %d %v", code, err)
	}
}
