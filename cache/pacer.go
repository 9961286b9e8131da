package cache

import (
	"context"
	"time"
)

// paceEvery is how many rows a paced rebuild handles between pauses: about a millisecond
// of work, short enough that a waiting reply is not held up behind it.
const paceEvery = 1024

// pacer spreads a rebuild of a cache that is already serving (a Reload, a reconcile scan)
// out in time, so that it leaves CPU to the webhook: after each slice of paceEvery rows it
// pauses as long as the slice took, a 50 % duty cycle. On a small machine a full reload of
// a million rows otherwise takes every core for seconds and replies queue behind it. The
// first warm is not paced: nothing is served yet, and readiness should come as soon as it
// can. A pacer is used by one goroutine.
type pacer struct {
	on    bool
	n     int
	start time.Time
	sleep func(ctx context.Context, d time.Duration) error // tests replace it
}

func newPacer(on bool) *pacer {
	return &pacer{on: on, start: time.Now(), sleep: sleepCtx}
}

// tick counts one row and pauses after every paceEvery rows. It returns ctx's error if ctx
// ends during a pause.
func (p *pacer) tick(ctx context.Context) error {
	if !p.on {
		return nil
	}
	p.n++
	if p.n%paceEvery != 0 {
		return nil
	}
	worked := time.Since(p.start)
	if err := p.sleep(ctx, worked); err != nil {
		return err
	}
	p.start = time.Now()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
