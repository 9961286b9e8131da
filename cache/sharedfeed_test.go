package cache_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
	"wxlookup/internal/metrictest"
	"wxlookup/store"
)

// eventually polls cond until it holds, failing the test after 30 s.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling the cache, which the loader moves
	}
}

// found reports whether c finds key with line want.
func found(c *cache.Cache, key, want string) bool {
	line, _, ok, err := lookup(c, key)
	return err == nil && ok && line == want
}

// TestQueriesShareOnePoolAndStream runs the caches of two configured queries over two
// tables in binlog mode, as cmd builds them (SPEC 10): one store.Pool, one
// store.BinlogStream, one registry. Each cache warms and follows its own table, and an
// ALTER of one table reloads only that cache.
func TestQueriesShareOnePoolAndStream(t *testing.T) {
	dsn, db := seeded(t, mariadbtest.SharedBinlog(t), 100)
	exec(t, db, `CREATE TABLE stock (sku VARCHAR(64) NOT NULL PRIMARY KEY, qty INT NOT NULL, bin VARCHAR(32) NOT NULL)
		DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`)
	exec(t, db, "INSERT INTO stock VALUES ('P-100', 12, 'B-3')")

	pool, err := store.OpenPool(store.PoolConfig{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	stream, err := store.OpenBinlogStream(store.BinlogStreamConfig{DSN: dsn, ServerID: 4715, Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	reg := prometheus.NewPedanticRegistry()
	open := func(query string, m store.Mapping) *cache.Cache {
		src, err := pool.Table(store.TableConfig{Mapping: m})
		if err != nil {
			t.Fatal(err)
		}
		b, err := stream.Table(src)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() }) // after the cache's Close, registered later
		c := newCache(t, b, cache.Config{Mode: cache.ModeBinlog, Query: query, Registerer: reg, RefreshInterval: 200 * time.Millisecond})
		startReady(t, c)
		return c
	}
	loc := open("location", store.Mapping{})
	stock := open("stock", store.Mapping{Table: "stock", KeyColumn: "sku", ValueColumns: []string{"qty", "bin"}})
	if err := stream.Check(testCtx(t)); err != nil {
		t.Fatalf("Check: %v", err)
	}
	mustFind(t, loc, store.DemoKey, demoLine(store.DemoKey, store.DemoLocation))
	mustFind(t, stock, "p-100", "[P-100] 12 B-3")

	exec(t, db, "INSERT INTO workpiece_location (part_no, location) VALUES ('W-1', 'bay 1')")
	exec(t, db, "UPDATE stock SET qty = 11 WHERE sku = 'P-100'")
	eventually(t, "both changes applied", func() bool {
		return found(loc, "w-1", "[W-1] bay 1") && found(stock, "p-100", "[P-100] 11 B-3")
	})
	mustMiss(t, stock, "W-1")

	exec(t, db, "ALTER TABLE stock ADD COLUMN note VARCHAR(10)")
	eventually(t, "stock reloaded", func() bool {
		return metrictest.Value(t, reg, "wxlookup_changefeed_resnapshots_total", "query", "stock") == 1
	})
	exec(t, db, "UPDATE stock SET qty = 10 WHERE sku = 'P-100'")
	exec(t, db, "INSERT INTO workpiece_location (part_no, location) VALUES ('W-2', 'bay 2')")
	eventually(t, "both follow after the ALTER", func() bool {
		return found(loc, "w-2", "[W-2] bay 2") && found(stock, "p-100", "[P-100] 10 B-3")
	})
	if got := metrictest.Value(t, reg, "wxlookup_changefeed_resnapshots_total", "query", "location"); got != 0 {
		t.Errorf("location: got %v resnapshots, want 0 (only stock was altered)", got)
	}
	if got := stream.Dumps(); got > 3 {
		t.Errorf("got %d replication connections, want at most 3 (start, a late subscriber, the reload's)", got)
	}
}
