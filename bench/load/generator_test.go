package load

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// requests returns n requests whose path is their index.
func requests(n int) func(i int) []byte {
	reqs := make([][]byte, n)
	for i := range reqs {
		reqs[i] = fmt.Appendf(nil, "POST /%d HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi", i)
	}
	return func(i int) []byte { return reqs[i] }
}

func index(r *http.Request) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
	return i
}

func addr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// TestOpenLoopStall checks the two promises of an open-loop generator with a server that
// stalls: requests keep going out on schedule while a connection is free, and the requests
// that wait behind the stall are charged for the wait from their scheduled time, not from
// when they could finally be sent.
func TestOpenLoopStall(t *testing.T) {
	const conns, n = 4, 40
	release := make(chan struct{})
	arrived := make(chan int, n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- index(r)
		<-release
		w.Write([]byte("ok"))
	}))
	defer srv.Close()

	// 1000/s: the 40 requests are due over 39ms. The server holds every request until all
	// 40 are due (Progress says so), so each of the four connections is stuck and the
	// other 36 requests queue for them.
	s, err := Constant(1000, n*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var released time.Time
	r, err := Run(context.Background(), Config{
		Addr: addr(srv), Conns: conns, Schedule: s, Request: requests(n),
		ProgressInterval: time.Millisecond,
		Progress: func(p Progress) {
			if p.Due == p.Total && len(arrived) >= conns {
				once.Do(func() { released = time.Now(); close(release) })
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Count(OK); got != n {
		t.Fatalf("%d OK, want %d (failures: %v)", got, n, r.Failures)
	}
	// Sent on schedule up to the pool: the first four went out when due, while the server
	// was already stalling the earlier ones.
	for i := range conns {
		if r.Lag[i] > 200*time.Millisecond {
			t.Errorf("request %d went out %s after it was due, want on schedule", i, r.Lag[i])
		}
	}
	// No coordinated omission: every request waited at least until the release, counted
	// from when it was due.
	for i := range n {
		due := r.Start.Add(s[i])
		if want := released.Sub(due); r.Latency[i] < want {
			t.Errorf("request %d latency %s, want ≥ %s (from its scheduled time to the release)", i, r.Latency[i], want)
		}
	}
	// The queued requests went out late, and their lag shows it.
	if want := released.Sub(r.Start.Add(s[conns])); r.Lag[conns] < want {
		t.Errorf("request %d lag %s, want ≥ %s", conns, r.Lag[conns], want)
	}
	if h := r.Histogram(); h.Percentile(50) < released.Sub(r.Start.Add(s[n/2])) {
		t.Errorf("p50 %s does not include the stall", h.Percentile(50))
	}
}

// TestStalledServerBounded checks that a server that never answers cannot hold a run
// beyond the schedule plus the timeout, and that every request is counted as failed.
func TestStalledServerBounded(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	s, err := Constant(200, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := Run(context.Background(), Config{Addr: addr(srv), Conns: 2, Schedule: s,
		Request: requests(len(s)), Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took, limit := time.Since(start), s.Duration()+100*time.Millisecond+1500*time.Millisecond; took > limit {
		t.Errorf("run took %s, want at most %s", took, limit)
	}
	if got := r.Errors(); got != len(s) {
		t.Errorf("%d errors, want all %d", got, len(s))
	}
	if got := r.Count(Timeout) + r.Count(Unsent); got != len(s) {
		t.Errorf("%d timed out or unsent, want %d", got, len(s))
	}
	if h := r.Histogram(); h.Percentile(50) < 100*time.Millisecond {
		t.Errorf("p50 %s, want ≥ the 100ms timeout", h.Percentile(50))
	}
}

func TestOutcomes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch i := index(r); i % 4 {
		case 0:
			w.Write([]byte("good"))
		case 1:
			w.Write([]byte("bad"))
		case 2:
			http.Error(w, "no", http.StatusForbidden)
		case 3: // drop the connection mid-request: the next request reconnects
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Close()
		}
	}))
	defer srv.Close()
	s, err := Constant(1000, 40*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), Config{Addr: addr(srv), Conns: 2, Schedule: s, Request: requests(len(s)),
		Check: func(i int, body []byte) error {
			if string(body) != "good" {
				return errors.New("not good")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range r.Outcome {
		want := [4]Outcome{OK, Wrong, BadStatus, ConnError}[i%4]
		if o != want {
			t.Errorf("request %d: got %s, want %s", i, o, want)
		}
	}
	if len(r.Failures) != 3 {
		t.Errorf("got failures %q, want one each of wrong, status and conn", r.Failures)
	}
}

func TestChunkedAndClose(t *testing.T) {
	long := strings.Repeat("x", 10000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if index(r)%2 == 0 {
			w.Write([]byte(long[:5000])) // over net/http's buffer: sent chunked
			w.(http.Flusher).Flush()
			w.Write([]byte(long[5000:]))
			return
		}
		w.Header().Set("Connection", "close")
		w.Write([]byte("bye"))
	}))
	defer srv.Close()
	s, err := Constant(1000, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), Config{Addr: addr(srv), Conns: 1, Schedule: s, Request: requests(len(s)),
		Check: func(i int, body []byte) error {
			want := "bye"
			if i%2 == 0 {
				want = long
			}
			if string(body) != want {
				return fmt.Errorf("body of %d bytes, want %d", len(body), len(want))
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Count(OK); got != len(s) {
		t.Fatalf("%d OK of %d: %v", got, len(s), r.Failures)
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, a := range []string{"127.0.0.1:80", "127.8.9.10:1", "[::1]:8080", "localhost:1"} {
		if err := checkLoopback(a); err != nil {
			t.Errorf("checkLoopback(%q) = %v, want nil", a, err)
		}
	}
	for _, a := range []string{"10.0.0.1:80", "192.168.1.1:80", "8.8.8.8:53", "example.com:80", "nohost"} {
		if err := checkLoopback(a); err == nil {
			t.Errorf("checkLoopback(%q) = nil, want an error", a)
		}
	}
	s, _ := Constant(10, time.Second)
	if _, err := Run(context.Background(), Config{Addr: "10.1.2.3:80", Conns: 1, Schedule: s, Request: requests(len(s))}); err == nil {
		t.Errorf("Run against 10.1.2.3 succeeded, want a refusal")
	}
}

// TestLoops checks that requests split over several event loops are all sent once, on
// their own schedule.
func TestLoops(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[index(r)]++
		mu.Unlock()
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	s, err := Constant(2000, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), Config{Addr: addr(srv), Conns: 5, Loops: 3, Schedule: s, Request: requests(len(s))})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock() // the handlers' writes reached us over TCP, which the race detector cannot see
	defer mu.Unlock()
	if r.Count(OK) != len(s) || len(seen) != len(s) {
		t.Fatalf("%d OK, %d distinct requests seen, want %d", r.Count(OK), len(seen), len(s))
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("request %d sent %d times", i, n)
		}
	}
}
