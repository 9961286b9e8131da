package main

import (
	"context"
	"math"
	"time"

	"wxlookup/bench/load"
	"wxlookup/bench/report"
)

// maxSteps bounds one system's bisection whatever it finds (doubling would go on forever
// against a system that passes everything); -max-tries bounds its steps in the harness.
const maxSteps = 10

// bisect is the rate search of one system: doubling (or halving) from a start until a
// step passes and one fails, then bisecting until the two are within 5 % (or the
// harness's -max-tries runs out).
type bisect struct {
	rate   float64 // the rate of the next step
	lo, hi float64 // highest passed, lowest failed (0: none yet)
	steps  int
	done   bool
}

func newBisect(start float64) *bisect { return &bisect{rate: start} }

// record takes the outcome of the step at b.rate and chooses the next rate, or ends the
// search.
func (b *bisect) record(pass bool) {
	if pass {
		b.lo = b.rate
	} else {
		b.hi = b.rate
	}
	b.steps++
	switch {
	case b.hi == 0:
		b.rate *= 2
	case b.lo == 0:
		b.rate /= 2
		if b.rate < 100 {
			b.done = true
		}
	case b.hi-b.lo <= 0.05*b.lo:
		b.done = true
	default:
		b.rate = math.Round((b.lo + b.hi) / 2)
	}
	if b.steps >= maxSteps {
		b.done = true
	}
}

// best is the highest rate that passed (0 if none did).
func (b *bisect) best() float64 { return b.lo }

// maxSearch finds, for each system, the highest rate it answers with p99 under the limit
// and no errors. The systems' searches are interleaved step by step, in an order that
// rotates each round: a spell of someone else's work on this shared machine then falls on
// neighbouring steps of different systems, not on the whole search of one of them, which
// is what the ratios between systems need.
func (h *harness) maxSearch(ctx context.Context, systems []*system) ([]report.MaxSearch, error) {
	out := make([]report.MaxSearch, len(systems))
	searches := make([]*bisect, len(systems))
	for i, s := range systems {
		out[i].System = s.name
		// From twice the steady rate for a system that met the limit there, from the
		// steady rate for one that answered it without errors but over the limit, from a
		// quarter for the others (the seed baseline is not driven at the steady rate).
		start := h.o.rate / 4
		if r := h.rep.Run("steady", s.name); r != nil && r.Errors == 0 {
			start = h.o.rate
			if r.P99 < h.o.p99Limit {
				start = 2 * h.o.rate
			}
		}
		searches[i] = newBisect(start)
	}
	for round := 0; ; round++ {
		ran := false
		for k := range systems {
			i := (k + round) % len(systems)
			b := searches[i]
			if b.done {
				continue
			}
			ran = true
			pass, err := h.maxStep(ctx, systems[i], b.rate, &out[i])
			if err != nil {
				return out, err
			}
			b.record(pass)
			if len(out[i].Steps) >= h.o.maxTries {
				b.done = true
			}
			out[i].Best = b.best()
			// Let the server finish what the last step left in flight.
			if !sleepCtx(ctx, 500*time.Millisecond) {
				return out, ctx.Err()
			}
		}
		if !ran {
			return out, nil
		}
	}
}

// maxStep runs one step of s's search at rate and records it in m. A step that failed on
// its tail alone (no errors) is tried once more, if -max-tries allows: on a shared machine
// a moment of someone else's work can fail a step by tens of milliseconds, and one such
// step early in a search decides it. Every system gets the same second chance.
func (h *harness) maxStep(ctx context.Context, s *system, rate float64, m *report.MaxSearch) (bool, error) {
	var st report.Step
	for try := 0; try < 2 && !st.Pass && (try == 0 || st.Errors == 0) && (try == 0 || len(m.Steps) < h.o.maxTries); try++ {
		if try > 0 && !sleepCtx(ctx, 500*time.Millisecond) {
			return false, ctx.Err()
		}
		sched, err := load.Constant(rate, h.o.step)
		if err != nil {
			return false, err
		}
		run, _, err := h.measure(ctx, s, "max", "", sched, min(h.o.timeout, time.Second), nil)
		if err != nil {
			return false, err
		}
		st = report.Step{Rate: rate, Throughput: run.Throughput, P99: run.P99, Errors: run.Errors,
			Pass: run.Errors == 0 && run.P99 < h.o.p99Limit, Others: run.Others}
		m.Steps = append(m.Steps, st)
	}
	return st.Pass, nil
}
