package cache

import "context"

// NewTestCache is newTestCache for the package's external tests (package cache_test).
var NewTestCache = newTestCache

// Refresh runs the loader's next step now instead of at the next tick, and returns its
// error: in poll mode an incremental refresh, or the snapshot while one is needed; in
// binlog mode the snapshot while one is needed, else nothing (it interrupts the change
// feed, which then resumes from its cursor). It waits for a step in progress; it needs
// Start. Tests use it to observe a change without sleeping.
func (c *Cache) Refresh(ctx context.Context) error { return c.kick(ctx, kickRefresh) }

// Reconcile runs a refresh and then a whole reconcile pass now (every key range of a
// RangeSource, or a key scan of a KeyLister), and returns the first error. It needs Start.
func (c *Cache) Reconcile(ctx context.Context) error { return c.kick(ctx, kickReconcile) }

// get returns the entry for the normalised key with hash h, or nil (also for a read-through
// fill that has expired): answer's entry, for tests that check the loader's bookkeeping.
func (t *table) get(h uint64, key []byte) *entry {
	b, _ := t.rc.Get(t.bucketOf(h))
	if s := b.match(h, key, t.shift); s != nil && t.live(s) {
		return s.e
	}
	return nil
}
