package cache

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"wxlookup/internal/logtest"
	"wxlookup/internal/metrictest"
)

// newFollowCache returns a started binlog-mode cache over n fake rows, with its metrics
// registry, its steps recorded, and its log.
func newFollowCache(t *testing.T, n int, cfg Config) (*Cache, *fakeSource, *prometheus.Registry, *stepRecorder, *logtest.Buffer) {
	t.Helper()
	src := newFakeSource(n)
	reg := prometheus.NewPedanticRegistry()
	logs := new(logtest.Buffer)
	cfg.Mode, cfg.Registerer = ModeBinlog, reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	c := newTestCache(t, src, cfg)
	steps := recordSteps(c)
	startReady(t, c)
	return c, src, reg, steps, logs
}

// awaitChange waits until the change with cursor was applied.
func awaitChange(t *testing.T, c *Cache, steps *stepRecorder, cursor string) {
	t.Helper()
	for c.Status().Position != cursor {
		steps.next(t, func(ev stepEvent) bool { return ev.step == "change" })
	}
}

// TestFollowApplies: committed inserts, updates and deletes are applied as the feed
// delivers them, counted by kind; Status says where the feed is.
func TestFollowApplies(t *testing.T) {
	c, src, reg, steps, _ := newFollowCache(t, 100, Config{})
	if st := c.Status(); st.Mode != ModeBinlog || st.Position != "0" || st.Ranges != 0 {
		t.Fatalf("after the warm: got mode %q, position %q, ranges %d; want binlog, 0, 0", st.Mode, st.Position, st.Ranges)
	}
	src.set(fakeKey(1), "moved")
	src.set("NEW-1", "here")
	src.del(fakeKey(2))
	awaitChange(t, c, steps, "3")
	mustFind(t, c, fakeKey(1), "["+fakeKey(1)+"] moved")
	mustFind(t, c, "new-1", "[NEW-1] here")
	mustMiss(t, c, fakeKey(2))
	want := map[string]float64{"insert": 1, "update": 1, "delete": 1}
	for op, v := range want {
		if got := metrictest.Value(t, reg, "wxlookup_changefeed_events_total", "op", op); got != v {
			t.Errorf("got events{op=%q} %v, want %v", op, got, v)
		}
	}
	if st := c.Status(); !st.Complete || st.Entries != 100 || src.snapshots.Load() != 1 || src.positions.Load() != 1 {
		t.Errorf("got complete %v, %d entries, %d snapshots, %d positions; want true, 100, 1, 1",
			st.Complete, st.Entries, src.snapshots.Load(), src.positions.Load())
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}

// TestFollowReconnects: a feed that drops its connection every two changes is followed
// again from the cursor of the last change applied: every change arrives, in order, and
// the drops are counted as reconnects.
func TestFollowReconnects(t *testing.T) {
	c, src, reg, steps, logs := newFollowCache(t, 10, Config{MaxBackoff: 10 * time.Millisecond})
	src.with(func(f *fakeSource) { f.drop = 2 })
	for i := range 7 {
		src.set(fakeKey(i), "v1")
		src.set(fakeKey(i), "v2")
	}
	awaitChange(t, c, steps, "14")
	for i := range 7 {
		mustFind(t, c, fakeKey(i), "["+fakeKey(i)+"] v2")
	}
	if got := metrictest.Value(t, reg, "wxlookup_changefeed_reconnects_total"); got < 6 {
		t.Errorf("got %v reconnects, want at least 6 (a drop after every 2 of 14 changes)", got)
	}
	if got := src.snapshots.Load(); got != 1 {
		t.Errorf("got %d snapshots, want 1: a reconnect resumes, it does not reload", got)
	}
	// Each reconnect is a failure that the next change recovers from: logged as such.
	if !strings.Contains(logs.String(), "connection lost") || !strings.Contains(logs.String(), "loader recovered") {
		t.Errorf("the log does not show the reconnects:\n%s", logs.String())
	}
}

// TestFollowReplayIsHarmless: changes delivered again (a feed that resumes before the
// cursor it was given, or changes both in the snapshot and after the position) end in
// the same table: each key at its last committed row.
func TestFollowReplayIsHarmless(t *testing.T) {
	c, src, _, steps, _ := newFollowCache(t, 10, Config{MaxBackoff: 10 * time.Millisecond})
	src.with(func(f *fakeSource) { f.drop, f.replay = 3, 2 })
	src.set(fakeKey(1), "v1")
	src.del(fakeKey(1))
	src.set(fakeKey(1), "v3")
	src.set("NEW-1", "a")
	src.del("NEW-1")
	src.set(fakeKey(2), "v1")
	src.set(fakeKey(2), "v2")
	awaitChange(t, c, steps, "7")
	src.with(func(f *fakeSource) { f.drop, f.replay = 0, 0 })
	mustFind(t, c, fakeKey(1), "["+fakeKey(1)+"] v3")
	mustMiss(t, c, "new-1")
	mustFind(t, c, fakeKey(2), "["+fakeKey(2)+"] v2")
	if st := c.Status(); st.Entries != 10 || !st.Complete {
		t.Errorf("got %d entries, complete %v; want 10, true", st.Entries, st.Complete)
	}
	if got := src.follows.Load(); got < 3 {
		t.Errorf("got %d Follow calls, want several (the feed dropped every 3 changes)", got)
	}
}

// TestFollowOutageBacksOff: while the feed cannot be followed, the loader retries within
// the back-off's cap, the log says so once per back-off step, and the changes made
// meanwhile are applied once it can.
func TestFollowOutageBacksOff(t *testing.T) {
	c, src, _, steps, logs := newFollowCache(t, 10, Config{RefreshInterval: 20 * time.Millisecond})
	src.with(func(f *fakeSource) { f.followErr = errors.New("dial tcp: connection refused") })
	c.Refresh(context.Background()) // interrupts the blocked Follow: the next one fails
	for src.follows.Load() < 12 {
		steps.next(t, func(ev stepEvent) bool { return ev.step == "follow" })
	}
	src.set(fakeKey(3), "after")
	src.with(func(f *fakeSource) { f.followErr = nil })
	awaitChange(t, c, steps, "1")
	mustFind(t, c, fakeKey(3), "["+fakeKey(3)+"] after")
	// At least 11 failures, logged at the 1st, 2nd, 4th and 8th (and the 16th, if so many).
	if got := strings.Count(logs.String(), "loader step failed"); got < 4 || got > 6 {
		t.Errorf("got %d failure lines for %d failures, want 4 to 6 (one per doubling):\n%s", got, src.follows.Load()-2, logs.String())
	}
}

// TestFollowResnapshot: when the feed cannot go on from its position (purged), the loader
// reloads in place: a new position, a snapshot whose sweep removes the rows deleted
// unseen, and following from the new position.
func TestFollowResnapshot(t *testing.T) {
	c, src, reg, steps, logs := newFollowCache(t, 50, Config{})
	src.delQuiet(fakeKey(7)) // its event is lost with the purged logs
	src.set(fakeKey(8), "seen")
	awaitChange(t, c, steps, "1")
	mustFind(t, c, fakeKey(7), fakeLine(7))
	// The server moves on and purges what came before, in one step: were the heartbeat
	// delivered first, the loader's cursor would be past the purge.
	src.with(func(f *fakeSource) { f.appendLocked(Change{}); f.purged = 2 })
	c.Refresh(context.Background()) // interrupts Follow, if it has not seen the purge yet
	steps.next(t, func(ev stepEvent) bool { return ev.step == "resnapshot" && ev.err == nil })
	mustMiss(t, c, fakeKey(7))
	mustFind(t, c, fakeKey(8), "["+fakeKey(8)+"] seen")
	if got := metrictest.Value(t, reg, "wxlookup_changefeed_resnapshots_total"); got != 1 {
		t.Errorf("got %v resnapshots, want 1", got)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_rows_removed_total", "by", "reload"); got != 1 {
		t.Errorf("got %v rows swept, want 1", got)
	}
	if !strings.Contains(logs.String(), "reloading in place") {
		t.Errorf("the log does not say why it reloaded:\n%s", logs.String())
	}
	src.set(fakeKey(9), "after")
	awaitChange(t, c, steps, "3")
	mustFind(t, c, fakeKey(9), "["+fakeKey(9)+"] after")
	if got := src.snapshots.Load(); got != 2 {
		t.Errorf("got %d snapshots, want 2", got)
	}
}

// TestFollowHeartbeats: an idle feed that sends heartbeats stays fresh, with no lag; one
// that stalls goes stale, and its lag grows.
func TestFollowHeartbeats(t *testing.T) {
	clock := newTestClock()
	src := newFakeSource(10)
	src.changed = clock.Now
	reg := prometheus.NewPedanticRegistry()
	c := newTestCache(t, src, Config{Mode: ModeBinlog, Now: clock.Now, Registerer: reg})
	steps := recordSteps(c)
	startReady(t, c)

	clock.Advance(time.Minute)
	src.heartbeat()
	awaitChange(t, c, steps, "1")
	if st := c.Status(); st.Staleness != 0 || st.Lag != 0 {
		t.Errorf("after a heartbeat: got staleness %v, lag %v; want 0, 0", st.Staleness, st.Lag)
	}
	clock.Advance(30 * time.Second) // stalled: nothing arrives
	if st := c.Status(); st.Staleness != 30*time.Second || st.Lag != 30*time.Second {
		t.Errorf("stalled: got staleness %v, lag %v; want 30s, 30s", st.Staleness, st.Lag)
	}
	if got := metrictest.Value(t, reg, "wxlookup_changefeed_lag_seconds"); got != 30 {
		t.Errorf("got lag metric %v, want 30", got)
	}
	src.heartbeat()
	awaitChange(t, c, steps, "2")
	if got := metrictest.Value(t, reg, "wxlookup_loader_staleness_seconds"); got != 0 {
		t.Errorf("got staleness %v after a heartbeat, want 0", got)
	}
}

// TestFollowInterrupted: Reload interrupts a Follow blocked on an idle feed, reloads in
// place, and follows again from the new position; Close interrupts it too.
func TestFollowInterrupted(t *testing.T) {
	c, src, _, steps, _ := newFollowCache(t, 20, Config{})
	awaitFollowBlocked(t, src)
	drainBlocked(src)
	src.delQuiet(fakeKey(4))
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, c, fakeKey(4))
	awaitFollowBlocked(t, src)
	if got := src.follows.Load(); got != 2 {
		t.Errorf("got %d Follow calls, want 2 (interrupted, then resumed)", got)
	}
	src.set(fakeKey(5), "after")
	awaitChange(t, c, steps, "1")
	mustFind(t, c, fakeKey(5), "["+fakeKey(5)+"] after")

	done := make(chan error)
	go func() { done <- c.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not interrupt Follow")
	}
	if got := src.following.Load(); got != 0 {
		t.Errorf("got %d Follow calls still running after Close, want 0", got)
	}
}

// awaitFollowBlocked waits until a Follow call is blocked in the fake, waiting for changes.
func awaitFollowBlocked(t *testing.T, src *fakeSource) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case <-src.waiting:
			if src.following.Load() == 1 {
				return
			}
		case <-timeout:
			t.Fatalf("got %d Follow calls running, none blocked", src.following.Load())
		}
	}
}

// drainBlocked forgets earlier signals of awaitFollowBlocked.
func drainBlocked(src *fakeSource) {
	for len(src.waiting) > 0 {
		<-src.waiting
	}
}
