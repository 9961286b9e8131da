package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"wxlookup/bench/load"
	"wxlookup/bench/report"
)

// The scenarios of SPEC section 8 the harness drives each system through (the maximum
// search is in search.go, freshness in fresh.go).

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
		Request: b.Request, Check: s.check(b), Timeout: h.o.timeout, Loops: h.o.loops})
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
