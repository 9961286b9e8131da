package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTimeout is how long a request may take from its scheduled time before it counts
// as failed: WeChat gives a developer server 5 seconds.
const DefaultTimeout = 5 * time.Second

// Outcome is how one scheduled request ended.
type Outcome uint8

// Outcomes of a request. Every outcome but OK is an error.
const (
	OK        Outcome = iota // a 200 reply that Check accepted
	BadStatus                // a reply other than 200
	Wrong                    // a 200 reply that Check rejected
	Timeout                  // no reply within Config.Timeout of the scheduled time
	ConnError                // the connection failed: refused, reset, closed mid-reply
	Unsent                   // never sent: the run was cancelled or its deadline passed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "status", "wrong", "timeout", "conn", "unsent"}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Config describes one run.
type Config struct {
	// Addr is the server's host:port; it must be a loopback address.
	Addr string
	// Conns is the number of keep-alive connections, opened before the run starts.
	Conns int
	// Schedule says when each request is due.
	Schedule Schedule
	// Request returns request i: a complete HTTP/1.1 request. It is called on the hot
	// path, so it should hand out pre-built bytes. It must be safe for concurrent use.
	Request func(i int) []byte
	// Check judges a 200 reply to request i; nil accepts every 200. body is valid only
	// during the call. It must be safe for concurrent use.
	Check func(i int, body []byte) error
	// Timeout bounds each request from its scheduled time; 0 means DefaultTimeout.
	Timeout time.Duration
	// Progress, when set, is called about every ProgressInterval (default 1s) while the
	// run goes on, from a goroutine of its own.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// Loops is the number of event loops (threads), each with Conns/Loops connections and
	// every Loops-th request; 0 means 1.
	Loops int
}

// Progress is a snapshot of a run in progress.
type Progress struct {
	Elapsed time.Duration // since the first request was due
	Due     int           // requests due by now
	Done    int           // requests finished, whatever their outcome
	Errors  int           // requests finished with an error
	Total   int           // requests in the schedule
}

// Result holds what happened to every request of a run. Index i of each slice is request i
// of the schedule.
type Result struct {
	// Start is when request 0 was due; End is when the last request finished.
	Start, End time.Time
	Schedule   Schedule
	// Latency is from the request's scheduled time to the end of its reply, or to when it
	// failed or was given up: every request has one, so failures show in the tail.
	Latency []time.Duration
	// Lag is from the request's scheduled time to when it was written: the generator's
	// own lateness plus the wait for a free connection; -1 for a request never written.
	Lag     []time.Duration
	Outcome []Outcome
	// Failures has the first few distinct error messages, for the report.
	Failures []string
}

// maxFailures is how many distinct error messages a Result keeps.
const maxFailures = 8

// Run dispatches cfg.Schedule against cfg.Addr and returns when every request has
// finished or been given up, at most Timeout (plus a second) after the last is due. An
// error means the run could not start; failed requests are counted in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.Loops <= 0 {
		cfg.Loops = 1
	}
	cfg.Loops = min(cfg.Loops, cfg.Conns)
	n := len(cfg.Schedule)
	r := &Result{
		Schedule: cfg.Schedule,
		Latency:  make([]time.Duration, n),
		Lag:      make([]time.Duration, n),
		Outcome:  make([]Outcome, n),
	}
	g := &run{cfg: cfg, r: r}
	if err := g.eventLoops(ctx); err != nil {
		return nil, err
	}
	r.End = time.Now()
	return r, nil
}

// deadline is when a run gives up on whatever is left: a second after the last request's
// timeout.
func (g *run) deadline() time.Time {
	return g.start.Add(g.cfg.Schedule.Duration() + g.cfg.Timeout + time.Second)
}

func (cfg *Config) validate() error {
	switch {
	case cfg.Conns < 1:
		return fmt.Errorf("load: %d connections, want at least 1", cfg.Conns)
	case len(cfg.Schedule) == 0:
		return errors.New("load: empty schedule")
	case len(cfg.Schedule) > MaxRequests:
		return fmt.Errorf("load: %d requests, more than %d", len(cfg.Schedule), MaxRequests)
	case cfg.Request == nil:
		return errors.New("load: no Request function")
	}
	return checkLoopback(cfg.Addr)
}

// checkLoopback refuses any target but this machine's loopback: the harness must never
// send load elsewhere.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("load: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("load: address %q is not a loopback address", addr)
	}
	return nil
}

// run is the state of one Run shared by its event loops.
type run struct {
	cfg   Config
	r     *Result
	start time.Time

	done, errs atomic.Int64

	mu       sync.Mutex // guards r.Failures
	failures map[string]bool
}

// judge records the outcome of a complete reply to request i.
func (g *run) judge(i int, lat, lag time.Duration, rep reply) {
	switch {
	case rep.status != 200:
		g.finish(i, lat, lag, BadStatus, fmt.Errorf("status %d: %.80q", rep.status, rep.body))
	case g.cfg.Check != nil:
		if err := g.cfg.Check(i, rep.body); err != nil {
			g.finish(i, lat, lag, Wrong, err)
			return
		}
		g.finish(i, lat, lag, OK, nil)
	default:
		g.finish(i, lat, lag, OK, nil)
	}
}

func (g *run) finish(i int, lat, lag time.Duration, o Outcome, err error) {
	g.r.Latency[i], g.r.Lag[i], g.r.Outcome[i] = lat, lag, o
	g.done.Add(1)
	if o == OK {
		return
	}
	g.errs.Add(1)
	msg := o.String()
	if err != nil {
		msg += ": " + err.Error()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failures == nil {
		g.failures = make(map[string]bool)
	}
	if len(g.r.Failures) < maxFailures && !g.failures[msg] {
		g.failures[msg] = true
		g.r.Failures = append(g.r.Failures, msg)
	}
}

// progress reports the run's progress until the returned stop is called.
func (g *run) progress() (stop func()) {
	if g.cfg.Progress == nil {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(g.cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-t.C:
				el := now.Sub(g.start)
				due := 0
				if el > 0 {
					due = dueBy(g.cfg.Schedule, el)
				}
				g.cfg.Progress(Progress{Elapsed: el, Due: due, Done: int(g.done.Load()),
					Errors: int(g.errs.Load()), Total: len(g.cfg.Schedule)})
			}
		}
	}()
	return func() { close(quit); <-done }
}

// dueBy returns how many requests of s are due at offset t.
func dueBy(s Schedule, t time.Duration) int {
	return sort.Search(len(s), func(i int) bool { return s[i] > t })
}
