package cache_test

import (
	"context"
	"database/sql"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
	"wxlookup/store"
)

// warm1M is the database BenchmarkWarm1M reads, seeded once per test binary.
var warm1M struct {
	once sync.Once
	dsn  string
	err  error
}

// seed1M creates database wxbench_warm1m on srv holding demo rows 0 … 999,999 (once per
// binary; about half a minute) and returns its root DSN. It is not dropped: on a private
// server it goes with the server, and on WXLOOKUP_TEST_MYSQL_DSN the next run reuses it.
func seed1M(b *testing.B, srv *mariadbtest.Server) string {
	b.Helper()
	warm1M.once.Do(func() {
		const name = "wxbench_warm1m"
		srv.Exec(b, "", "CREATE DATABASE IF NOT EXISTS `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
		warm1M.dsn = srv.RootDSN(name)
		db, err := sql.Open("mysql", warm1M.dsn)
		if err != nil {
			warm1M.err = err
			return
		}
		defer db.Close()
		start := time.Now()
		warm1M.err = store.Seed(context.Background(), db, 1_000_000)
		b.Logf("seeded 1,000,000 rows in %s", time.Since(start).Round(time.Millisecond))
	})
	if warm1M.err != nil {
		b.Fatalf("seed: %v", warm1M.err)
	}
	return warm1M.dsn
}

// BenchmarkWarm1M times the warm of 1,000,000 rows from MariaDB: New, Start and WaitReady
// over a fresh MySQL source (the pool's first connection included). It reports bytes per
// entry twice: as the cache accounts them (CostBytes/Entries, the figure MaxBytes is
// compared with) and as Go heap growth across the warm (after GC, cache still open), and
// how long a forced garbage collection takes with the cache full (gc-ms).
//
//	go test -run '^$' -bench Warm1M -benchtime 3x ./cache/
func BenchmarkWarm1M(b *testing.B) {
	const n = 1_000_000
	dsn := seed1M(b, mariadbtest.Shared(b))
	ctx := context.Background()
	var costPerEntry, heapPerEntry float64
	var gcTime time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()

		src, err := store.OpenMySQL(store.MySQLConfig{DSN: dsn})
		if err != nil {
			b.Fatal(err)
		}
		c, err := cache.New(src, cache.Config{RefreshInterval: time.Hour, ReconcileInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		c.Start()
		if err := c.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		st := c.Status()
		if !st.Complete || st.Entries != n || st.Errors != 0 {
			b.Fatalf("got complete %v, %d entries, %d errors; want true, %d, 0", st.Complete, st.Entries, st.Errors, n)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		// What one collection costs with the cache full: the mark has to visit every
		// entry, and on a server it runs beside the replies.
		gcStart := time.Now()
		runtime.GC()
		gcTime = time.Since(gcStart)
		costPerEntry = float64(st.CostBytes) / float64(st.Entries)
		heapPerEntry = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(st.Entries)
		c.Close()
		src.Close()
		b.StartTimer()
	}
	b.ReportMetric(costPerEntry, "cost-B/entry")
	b.ReportMetric(heapPerEntry, "heap-B/entry")
	b.ReportMetric(float64(gcTime.Microseconds())/1000, "gc-ms")
}

// BenchmarkReload1M times a reload in place of 1,000,000 unchanged rows from MariaDB and
// reports what it allocates: the snapshot lends its rows and an unchanged row keeps its
// entry, so a reload should leave next to no garbage (alloc-B/row), and the heap should
// grow during it by no more than that garbage (peak-heap/steady: the highest heap sampled
// every millisecond during a reload, over the live heap before the first). The reload runs
// unlimited (ReloadRate -1): this measures its work, not its pace.
//
//	go test -run '^$' -bench Reload1M -benchtime 3x ./cache/
func BenchmarkReload1M(b *testing.B) {
	const n = 1_000_000
	dsn := seed1M(b, mariadbtest.Shared(b))
	ctx := context.Background()
	src, err := store.OpenMySQL(store.MySQLConfig{DSN: dsn})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	c, err := cache.New(src, cache.Config{ReloadRate: -1, RefreshInterval: time.Hour, ReconcileInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Start()
	if err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var steady runtime.MemStats
	runtime.ReadMemStats(&steady)
	var allocated, peak uint64
	b.ResetTimer()
	for b.Loop() {
		// Each reload starts from a collected heap, as the steady figure does: garbage
		// left by the previous iteration would otherwise count against this one.
		b.StopTimer()
		runtime.GC()
		b.StartTimer()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		done := make(chan struct{})
		var top uint64
		go func() { // sample the heap while the reload runs
			var ms runtime.MemStats
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					runtime.ReadMemStats(&ms)
					top = max(top, ms.HeapAlloc)
				}
			}
		}()
		err := c.Reload(ctx)
		close(done)
		if err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		allocated += after.TotalAlloc - before.TotalAlloc
		peak = max(peak, top, after.HeapAlloc)
	}
	b.StopTimer()
	if st := c.Status(); !st.Complete || st.Entries != n {
		b.Fatalf("got complete %v, %d entries; want true, %d", st.Complete, st.Entries, n)
	}
	b.ReportMetric(float64(allocated)/float64(b.N)/n, "alloc-B/row")
	b.ReportMetric(float64(peak)/float64(steady.HeapAlloc), "peak-heap/steady")
}
