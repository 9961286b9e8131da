package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"
	"unsafe"
)

// The loader is one goroutine (Start). All source work and every loader write into the
// table happen on it, so a reload, a refresh, a range re-read and the change feed never
// interleave; Reload and the tests' kicks (Refresh, Reconcile: export_test.go) ask it to
// run a step and wait for the result. A panic inside it is recovered, logged with its
// stack, counted, and the loop starts again after a back-off from where it was: Lookup
// never notices.

// kickOp is the step a kick asks for.
type kickOp int

const (
	kickRefresh kickOp = iota
	kickReconcile
	kickReload
)

// kick asks the loader goroutine to run a step now and send its error on done.
type kick struct {
	op   kickOp
	done chan error
}

// loopState is the loader goroutine's own state; nothing else touches it.
type loopState struct {
	// needLoad says the table needs a snapshot: before the first warm, after a failed
	// reload, and when the change feed asked for one.
	needLoad   bool
	resnapshot bool      // the change feed asked for the snapshot needed
	watermark  time.Time // poll: where the next Changes call starts
	cursor     string    // binlog: the cursor of the last change applied
	fails      map[string]*failState
	walk       walkState
	inflight   kick // the kick being run, answered if the loop panics
}

// failState counts a step's consecutive failures, for the log.
type failState struct {
	n    int
	last string // the last error's text
}

// Start launches the loader goroutine: it warms the cache from Source.Snapshot (Ready turns
// true after), then applies changes (Config.Mode) until Close. Start returns at once; calls
// after the first do nothing.
//
// A failed step (warm included) is logged, counted and shown in Status, never fatal, and
// retried after a capped exponential back-off with jitter. The cap is the smaller of
// MaxBackoff and RefreshInterval: a retry costs no more than the refresh that would run
// anyway (one indexed query, or a refused connection while the database is down), and
// SPEC 6 asks the loader to recover within one interval of the source's return. The log
// says that a step fails at its 1st, 2nd, 4th, 8th, … consecutive failure and whenever the
// error's text changes, and that it recovered once.
func (c *Cache) Start() {
	c.startOnce.Do(func() {
		c.status.start(c.cfg.Now())
		c.started.Store(true)
		c.wg.Add(1)
		go c.supervise()
	})
}

// supervise runs the loader loop until Close, starting it again after a panic.
func (c *Cache) supervise() {
	defer c.wg.Done()
	for n := 1; c.runLoop(); n++ {
		t := time.NewTimer(c.backoff(n))
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runLoop runs the loop of the configured mode and reports whether it panicked.
func (c *Cache) runLoop() (panicked bool) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		c.recovered("loader", r)
		if k := c.loop.inflight; k.done != nil {
			k.done <- fmt.Errorf("cache: loader panicked: %v", r)
			c.loop.inflight = kick{}
		}
		panicked = true
	}()
	if c.follower != nil {
		c.followLoop(c.ctx)
	} else {
		c.pollLoop(c.ctx)
	}
	return false
}

// recovered logs and counts a panic recovered in goroutine (loader, read_through).
func (c *Cache) recovered(goroutine string, r any) {
	c.status.panics.Add(1)
	c.metrics.panics.WithLabelValues(goroutine).Inc()
	c.log.Error("cache: recovered from a panic", "goroutine", goroutine, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
}

// pollLoop is the loader in the poll modes: warm, then a refresh every RefreshInterval and
// the reconcile walk (reconcile.go) beside it.
func (c *Cache) pollLoop(ctx context.Context) {
	refresh := time.NewTimer(0) // the warm, at once
	defer refresh.Stop()
	walk := time.NewTimer(c.startPass()) // a new pass (none before the warm)
	defer walk.Stop()
	var scan <-chan time.Time
	if c.keys != nil {
		tick := time.NewTicker(c.cfg.ReconcileInterval)
		defer tick.Stop()
		scan = tick.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			start := time.Now()
			step, err := c.pollStep(ctx)
			if err == nil && step == "refresh" {
				if rerr := c.run(ctx, "reconcile", c.recheckSuspects); rerr != nil {
					walk.Reset(c.retryDelay("reconcile", rerr))
				}
			}
			if err == nil {
				refresh.Reset(nextRefresh(c.cfg.RefreshInterval, time.Since(start)))
			} else {
				refresh.Reset(c.retryDelay(step, err))
			}
		case <-walk.C:
			walk.Reset(c.walkStep(ctx))
		case <-scan:
			if !c.loop.needLoad {
				c.run(ctx, "reconcile", c.scanKeys)
			}
		case k := <-c.kicks:
			c.runKick(ctx, k)
		}
		if c.loop.walk.restart { // a snapshot cut new ranges: a new pass begins
			c.loop.walk.restart = false
			walk.Reset(c.startPass())
		}
	}
}

// pollStep runs the snapshot while one is needed, else a refresh, and returns the step's
// name and error.
func (c *Cache) pollStep(ctx context.Context) (string, error) {
	if c.loop.needLoad {
		step := c.loadStepName()
		return step, c.run(ctx, step, c.pollLoad)
	}
	return "refresh", c.run(ctx, "refresh", c.refresh)
}

// pollLoad streams a snapshot into the table; changes are then asked for from its
// watermark.
func (c *Cache) pollLoad(ctx context.Context) error {
	wm, loaded, err := c.load(ctx)
	if loaded {
		c.loop.watermark, c.loop.needLoad = wm, false
		c.loop.walk.restart = true
	} else {
		c.loop.needLoad = true
	}
	return err
}

// retryDelay returns when the step after step should run: the refresh interval, or the
// back-off after a failure.
func (c *Cache) retryDelay(step string, err error) time.Duration {
	if err == nil {
		return c.cfg.RefreshInterval
	}
	if f := c.loop.fails[step]; f != nil && f.n > 0 {
		return c.backoff(f.n)
	}
	return c.backoff(1)
}

// nextRefresh returns the delay before the next refresh, given that the last one (with
// the rechecks after it) took took: the next starts interval after the last one started,
// so a change waits at most about one interval plus a refresh however long refreshes take
// under a write load, but never sooner than a tenth of the interval after the last ended.
func nextRefresh(interval, took time.Duration) time.Duration {
	return max(interval-took, interval/10)
}

// kickQueue is how many kicks may wait for the loader goroutine.
const kickQueue = 16

// kick asks the loader goroutine to run op and returns its error. The request is queued
// first, then a change feed blocked in Follow is interrupted (see beginFollow for why in
// this order).
func (c *Cache) kick(ctx context.Context, op kickOp) error {
	if !c.started.Load() {
		return errors.New("cache: the loader is not started")
	}
	closed := fmt.Errorf("cache: closed: %w", ErrNotReady)
	if c.ctx.Err() != nil {
		return closed
	}
	k := kick{op: op, done: make(chan error, 1)}
	select {
	case c.kicks <- k:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return closed
	}
	c.interruptFollow()
	select {
	case err := <-k.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return closed
	}
}

// runKick runs a kick's step on the loader goroutine and answers it.
func (c *Cache) runKick(ctx context.Context, k kick) {
	c.loop.inflight = k
	if k.op == kickReload {
		c.loop.needLoad = true
	}
	var err error
	switch {
	case c.follower != nil:
		if c.loop.needLoad {
			err = c.run(ctx, c.loadStepName(), c.followLoad)
		}
	default:
		_, err = c.pollStep(ctx)
		if err == nil && k.op == kickReconcile && !c.loop.needLoad {
			err = c.run(ctx, "reconcile", c.reconcileNow)
		}
	}
	c.loop.inflight = kick{}
	k.done <- err
}

// backoff returns the delay before retry n (1 for the first) of a failed step: cap/16,
// doubling up to cap = min(MaxBackoff, RefreshInterval), with equal jitter (half fixed,
// half random) so that replicas do not retry in lock-step. It never exceeds cap.
func (c *Cache) backoff(n int) time.Duration {
	ceiling := min(c.cfg.MaxBackoff, c.cfg.RefreshInterval)
	d := ceiling
	if shift := 5 - n; shift > 0 {
		d = ceiling >> shift
	}
	return d/2 + rand.N(d/2+1)
}

// run runs one named step and records its outcome (Status, metrics, the log). A
// context.Canceled (Close, or a change feed interrupted by a kick) is returned but not
// counted as an error.
func (c *Cache) run(ctx context.Context, step string, fn func(context.Context) error) error {
	now := c.cfg.Now()
	c.status.attempted(now)
	err := fn(ctx)
	canceled := errors.Is(err, context.Canceled) && ctx.Err() != nil
	switch {
	case err == nil:
		if step != "reconcile" {
			c.status.succeeded(now)
		}
	case canceled:
	default:
		c.status.recordError(now, step, err)
		c.metrics.stepErrors.WithLabelValues(step).Inc()
	}
	if !canceled {
		c.noteOutcome(step, err)
	}
	if !c.loop.needLoad {
		// Ready only now, so that whoever waited for it sees the warm in Status too.
		c.markReady()
	}
	if c.onStep != nil {
		c.onStep(step, err)
	}
	return err
}

// noteOutcome logs a step's failure at its 1st, 2nd, 4th, 8th, … consecutive failure and
// when the error's text changes, and its recovery once.
func (c *Cache) noteOutcome(step string, err error) {
	f := c.loop.fails[step]
	if f == nil {
		f = new(failState)
		c.loop.fails[step] = f
	}
	if err == nil {
		if f.n > 0 {
			c.log.Info("cache: loader recovered", "step", step, "failed_attempts", f.n)
		}
		f.n, f.last = 0, ""
		return
	}
	f.n++
	msg := err.Error()
	if f.n&(f.n-1) == 0 || msg != f.last {
		c.log.Error("cache: loader step failed", "step", step, "err", err, "consecutive_failures", f.n)
	}
	f.last = msg
}

// refresh applies the rows changed since the watermark. The watermark only advances when
// the whole stream was applied; on error the rows are delivered again next time (applying
// a row is idempotent).
func (c *Cache) refresh(ctx context.Context) error {
	t := c.cur.Load()
	var rows uint64
	start := time.Now()
	defer func() {
		// A refresh should read a handful of rows in milliseconds; say so when one does not
		// (a bulk update, or a cold database after a restart), as it delays the next.
		if took := time.Since(start); took > c.cfg.RefreshInterval {
			c.log.Warn("cache: slow refresh", "rows", rows, "took", took, "since", c.loop.watermark)
		}
	}()
	next, err := c.poller.Changes(ctx, c.loop.watermark, func(r Row) error {
		rows++
		if r.Deleted {
			c.metrics.events.delete.Inc()
		} else {
			c.metrics.events.upsert.Inc()
		}
		c.applyRow(t, r)
		return nil
	})
	c.status.rowsLoaded.Add(rows)
	ferr := t.flush()
	if err != nil {
		return fmt.Errorf("cache: changes since %s: %w", c.loop.watermark.Format(time.RFC3339Nano), err)
	}
	c.loop.watermark = next
	return ferr
}

// applyRow writes one changed row (a refresh's, or a change feed's) into t.
func (c *Cache) applyRow(t *table, r Row) {
	p := &c.scratch
	if r.Deleted {
		p.buf = AppendKey(p.buf[:0], unsafe.Slice(unsafe.StringData(r.Key), len(r.Key)))
		if t.remove(p.buf, r.Key) {
			c.metrics.removed.change.Inc()
		}
		return
	}
	p.prepare(r, c.cfg.Render)
	t.upsert(p, nil)
}
