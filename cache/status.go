package cache

import (
	"sync"
	"sync/atomic"
	"time"
)

// recentErrors is how many errors Status keeps.
const recentErrors = 10

// Status is a snapshot of the cache and its loader, for the status page.
type Status struct {
	// Query is Config.Query: the configured query the cache serves ("" when none is named).
	Query string
	// Source describes the source (its String method, else its type); never a password.
	Source string
	// Mode is how changes reach the cache: poll, binlog or csv (Config.Mode).
	Mode string
	// Ready reports that the first warm has completed. Complete reports that every row of
	// the source is held, so a miss is a definitive "not found" (false: misses read through).
	Ready, Complete bool
	// Entries is the number of rows held; CostBytes their cost as ristretto accounts it
	// (key, canonical key, reply line and a fixed per-entry overhead) plus the bytes of the
	// "did you mean" index of their keys (Suggest); MaxBytes the budget, which both share.
	Entries             int64
	CostBytes, MaxBytes int64
	// Hits counts Lookups answered with a row held in memory, NotFound those answered "not
	// found" from memory (a complete table's miss, or a remembered read-through not-found),
	// and Misses those that had to ask the source (read-through). Hits+NotFound are the
	// lookups served from memory.
	Hits, NotFound, Misses uint64
	// SetsDropped counts ristretto Sets that were dropped (and retried); Evictions counts
	// rows evicted, which only happens when the table exceeds the budget.
	SetsDropped, Evictions uint64
	// RowsLoaded counts rows read from the source by snapshots, refreshes and the change
	// feed; Errors counts failed loader steps; Panics counts panics recovered in the loader
	// and read-through goroutines.
	RowsLoaded, Errors, Panics uint64
	// LastSuccess is when the last successful warm, refresh or reload began, or when the
	// last change (a heartbeat included) was applied in binlog mode; LastAttempt when the
	// last loader step began, whatever its outcome. Staleness is now − LastSuccess (now −
	// Start while there has been none).
	LastSuccess, LastAttempt time.Time
	Staleness                time.Duration
	// LastReload is when the last snapshot (warm, reload, resnapshot) completed,
	// ReloadDuration how long it took.
	LastReload     time.Time
	ReloadDuration time.Duration
	// Ranges is the number of key ranges reconcile compares (0 without a range reconcile);
	// LastReconcile when its last full pass ended.
	Ranges        int
	LastReconcile time.Time
	// Position is, in binlog mode, the cursor of the last change applied (the position
	// read before the snapshot until one is); Lag is now − the commit time of that change.
	Position string
	Lag      time.Duration
	// RecentErrors holds the last loader errors, newest first, at most 10.
	RecentErrors []ErrorEvent
}

// ErrorEvent is one loader error: when, in which step (warm, refresh, reconcile, reload,
// resnapshot, follow), and its message.
type ErrorEvent struct {
	Time time.Time
	Step string
	Err  string
}

// statusState is the loader's record for Status and the metrics. Lookup never touches it.
type statusState struct {
	rowsLoaded atomic.Uint64
	errors     atomic.Uint64
	panics     atomic.Uint64

	mu             sync.Mutex
	started        time.Time
	lastSuccess    time.Time
	lastAttempt    time.Time
	lastReload     time.Time
	reloadDuration time.Duration
	lastReconcile  time.Time
	position       string
	lastChange     time.Time                // commit time of the change at position
	recent         [recentErrors]ErrorEvent // ring; next is the slot to write
	next, n        int
}

func (s *statusState) start(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = now
}

// succeeded records a successful step that began at began.
func (s *statusState) succeeded(began time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSuccess = began
}

// setPosition records the change feed's position read before a snapshot that began at at.
func (s *statusState) setPosition(cursor string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.position, s.lastChange = cursor, at
}

// applied records a change applied at now, committed at committed, after which the feed
// resumes from cursor.
func (s *statusState) applied(now time.Time, cursor string, committed time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSuccess, s.position, s.lastChange = now, cursor, committed
}

// reconciled records the end of a reconcile pass.
func (s *statusState) reconciled(at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastReconcile = at
}

// lag is now − the commit time of the last change applied (0 before any).
func (s *statusState) lag(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lagLocked(now)
}

func (s *statusState) lagLocked(now time.Time) time.Duration {
	if s.lastChange.IsZero() {
		return 0
	}
	return max(now.Sub(s.lastChange), 0)
}

func (s *statusState) attempted(began time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastAttempt = began
}

func (s *statusState) loaded(at time.Time, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastReload, s.reloadDuration = at, took
}

func (s *statusState) recordError(at time.Time, step string, err error) {
	s.errors.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recent[s.next] = ErrorEvent{Time: at, Step: step, Err: err.Error()}
	s.next = (s.next + 1) % recentErrors
	s.n = min(s.n+1, recentErrors)
}

// staleness is now − the last success (since start while there has been none; 0 before).
func (s *statusState) staleness(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalenessLocked(now)
}

func (s *statusState) stalenessLocked(now time.Time) time.Duration {
	switch {
	case !s.lastSuccess.IsZero():
		return max(now.Sub(s.lastSuccess), 0)
	case !s.started.IsZero():
		return max(now.Sub(s.started), 0)
	}
	return 0
}

func (s *statusState) lastSuccessTime() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSuccess
}

// Status returns a snapshot of the cache and its loader. Safe for concurrent use; it takes
// no lock the hot path takes.
func (c *Cache) Status() Status {
	st := Status{
		Query:       c.cfg.Query,
		Source:      c.source,
		Mode:        c.cfg.Mode,
		Ready:       c.Ready(),
		MaxBytes:    c.cfg.MaxBytes,
		Hits:        c.hits.Load(),
		NotFound:    c.notFound.Load(),
		Misses:      c.misses.Load(),
		SetsDropped: c.stats.setsDropped.Load(),
		Evictions:   c.stats.evictions.Load(),
		RowsLoaded:  c.status.rowsLoaded.Load(),
		Errors:      c.status.errors.Load(),
		Panics:      c.status.panics.Load(),
	}
	st.Complete, st.Entries, st.CostBytes = c.tableStatus()
	if c.ranges != nil {
		st.Ranges = c.rangeCount()
	}
	now := c.cfg.Now()
	s := &c.status
	s.mu.Lock()
	defer s.mu.Unlock()
	st.LastSuccess, st.LastAttempt = s.lastSuccess, s.lastAttempt
	st.Staleness = s.stalenessLocked(now)
	st.LastReload, st.ReloadDuration = s.lastReload, s.reloadDuration
	st.LastReconcile = s.lastReconcile
	if c.follower != nil {
		st.Position, st.Lag = s.position, s.lagLocked(now)
	}
	for i := 1; i <= s.n; i++ {
		st.RecentErrors = append(st.RecentErrors, s.recent[(s.next-i+recentErrors)%recentErrors])
	}
	return st
}

// tableStatus reports the table's completeness, rows and cost (zeros if none).
func (c *Cache) tableStatus() (complete bool, entries, costBytes int64) {
	t := c.acquire(0)
	if t == nil {
		return false, 0, 0
	}
	defer t.release(0)
	return t.complete.Load(), max(t.entries.Load(), 0), t.memoryBytes()
}

// rangeCount reports the number of key ranges (0 after Close).
func (c *Cache) rangeCount() int {
	t := c.acquire(0)
	if t == nil {
		return 0
	}
	defer t.release(0)
	return t.rangeCount()
}
