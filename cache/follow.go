package cache

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Binlog mode (Config.Mode ModeBinlog): the loader reads the Follower's position, streams
// a snapshot into the table, then follows the changes committed after that position. A
// change already in the snapshot is applied again, which is harmless: applying a row is
// idempotent, and the stream replays changes in commit order, so each key ends at its
// last committed row.
//
// When Follow returns an error the loader follows again, after a back-off, from the
// cursor of the last change it applied: nothing is lost, and a change applied twice does
// no harm. When the error wraps ErrResnapshot (binary logs purged, the table truncated or
// altered) it reloads in place: Position, snapshot, sweep, follow. A kick (Reload, the test
// kicks) and Close interrupt a blocked Follow by cancelling its context; after a kick the
// loader follows again.

// followLoop is the loader in binlog mode.
func (c *Cache) followLoop(ctx context.Context) {
	for {
		var delay time.Duration
		if c.loop.needLoad {
			step := c.loadStepName()
			if err := c.run(ctx, step, c.followLoad); err != nil {
				delay = c.retryDelay(step, err)
			}
		} else {
			delay = c.follow(ctx)
		}
		if !c.waitOrKick(ctx, delay) {
			return
		}
	}
}

// loadStepName names a snapshot step of the follow loop or the poll loop.
func (c *Cache) loadStepName() string {
	switch {
	case !c.warmed.Load():
		return "warm"
	case c.loop.resnapshot:
		return "resnapshot"
	}
	return "reload"
}

// waitOrKick waits d, running any kick that arrives meanwhile (with d zero, only those
// already waiting), and reports whether the loader should go on.
func (c *Cache) waitOrKick(ctx context.Context, d time.Duration) bool {
	if d == 0 {
		for {
			select {
			case <-ctx.Done():
				return false
			case k := <-c.kicks:
				c.runKick(ctx, k)
			default:
				return true
			}
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case k := <-c.kicks:
		c.runKick(ctx, k)
	}
	return ctx.Err() == nil
}

// followLoad records the Follower's position, then streams a snapshot into the table;
// following resumes from that position.
func (c *Cache) followLoad(ctx context.Context) error {
	began := c.cfg.Now()
	pos, err := c.follower.Position(ctx)
	if err != nil {
		return fmt.Errorf("cache: read the change feed's position: %w", err)
	}
	_, loaded, err := c.load(ctx)
	if loaded {
		c.loop.needLoad, c.loop.resnapshot = false, false
		c.loop.cursor = pos
		c.status.setPosition(pos, began)
	}
	return err
}

// follow streams changes from the cursor until Follow returns, and returns how long to
// wait before the next attempt.
func (c *Cache) follow(ctx context.Context) time.Duration {
	fctx, ok := c.beginFollow(ctx)
	if !ok {
		return 0 // a kick is waiting
	}
	interrupted := false
	err := func() error {
		defer c.endFollow()
		err := c.follower.Follow(fctx, c.loop.cursor, c.applyChange)
		interrupted = fctx.Err() != nil
		return err
	}()
	now := c.cfg.Now()
	switch {
	case ctx.Err() != nil:
		return 0 // Close
	case interrupted:
		return 0 // by a kick, whatever the source made of it
	case errors.Is(err, ErrResnapshot):
		c.log.Warn("cache: the change feed cannot go on from its position; reloading in place",
			"err", err, "cursor", c.loop.cursor)
		c.metrics.resnapshots.Inc()
		c.status.recordError(now, "follow", err)
		c.loop.needLoad, c.loop.resnapshot = true, true
		return 0
	case err == nil:
		err = errors.New("cache: the change feed ended")
	}
	c.metrics.reconnects.Inc()
	c.status.recordError(now, "follow", err)
	c.metrics.stepErrors.WithLabelValues("follow").Inc()
	c.noteOutcome("follow", err)
	if c.onStep != nil {
		c.onStep("follow", err)
	}
	return c.retryDelay("follow", err)
}

// applyChange applies one committed transaction: its rows through the table's write path,
// then its cursor. Every change, a heartbeat included, makes the cache fresh (LastSuccess)
// and sets the lag. A verification failure is recorded, but the change counts as applied:
// the table then serves as incomplete.
func (c *Cache) applyChange(ch Change) error {
	t := c.cur.Load()
	for _, r := range ch.Rows {
		c.applyRow(t, r)
	}
	var err error
	if len(ch.Rows) > 0 {
		err = t.flush() // also makes new keys visible before the next change
	}
	c.loop.cursor = ch.Cursor
	now := c.cfg.Now()
	at := ch.Time
	if at.IsZero() {
		at = now
	}
	c.status.applied(now, ch.Cursor, at)
	c.status.rowsLoaded.Add(uint64(len(ch.Rows)))
	c.metrics.events.insert.Add(float64(ch.Inserts))
	c.metrics.events.update.Add(float64(ch.Updates))
	c.metrics.events.delete.Add(float64(ch.Deletes))
	if f := c.loop.fails["follow"]; f != nil && f.n > 0 {
		c.noteOutcome("follow", nil) // the stream works again
	}
	if err != nil {
		c.status.recordError(now, "follow", err)
		c.log.Error("cache: verify after a change", "err", err)
	}
	if c.onStep != nil {
		c.onStep("change", err)
	}
	return nil
}

// beginFollow returns the context of a Follow call that a kick can interrupt, or false if
// a kick is already waiting. kick queues its request before it interrupts, so either this
// sees the request or the kick sees the cancel function.
func (c *Cache) beginFollow(ctx context.Context) (context.Context, bool) {
	c.followMu.Lock()
	defer c.followMu.Unlock()
	if len(c.kicks) > 0 {
		return nil, false
	}
	fctx, cancel := context.WithCancel(ctx)
	c.followCancel = cancel
	return fctx, true
}

// endFollow releases the context of beginFollow.
func (c *Cache) endFollow() {
	c.followMu.Lock()
	defer c.followMu.Unlock()
	if c.followCancel != nil {
		c.followCancel()
		c.followCancel = nil
	}
}

// interruptFollow cancels a Follow call in progress, if any.
func (c *Cache) interruptFollow() {
	c.followMu.Lock()
	defer c.followMu.Unlock()
	if c.followCancel != nil {
		c.followCancel()
	}
}
