package cache

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"wxlookup/internal/metrictest"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	clock := newTestClock()
	src := newFakeSource(100)
	c := newTestCache(t, src, Config{Registerer: reg, Now: clock.Now})
	if got := metrictest.Value(t, reg, "wxlookup_cache_complete"); got != 0 {
		t.Errorf("complete before warm = %v, want 0", got)
	}
	startReady(t, c)

	for i := range 3 {
		mustFind(t, c, fakeKey(i), fakeLine(i))
	}
	mustMiss(t, c, "nope-1")
	mustMiss(t, c, "nope-2")
	clock.Advance(90 * time.Second)

	want := map[string]float64{
		"wxlookup_cache_hits_total":                      3,
		"wxlookup_cache_misses_total":                    0, // definitive not-founds, from memory
		"wxlookup_cache_entries":                         100,
		"wxlookup_cache_complete":                        1,
		"wxlookup_cache_max_bytes":                       DefaultMaxBytes,
		"wxlookup_cache_sets_dropped_total":              0,
		"wxlookup_cache_evictions_total":                 0,
		"wxlookup_loader_rows_loaded_total":              100,
		"wxlookup_loader_errors_total":                   0,
		"wxlookup_loader_staleness_seconds":              90,
		"wxlookup_loader_last_success_timestamp_seconds": float64(newTestClock().Now().Unix()),
	}
	for name, v := range want {
		if got := metrictest.Value(t, reg, name); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	if got, st := metrictest.Value(t, reg, "wxlookup_cache_cost_bytes"), c.Status(); got < 100*entryOverhead || got != float64(st.CostBytes) {
		t.Errorf("wxlookup_cache_cost_bytes = %v, status says %d", got, st.CostBytes)
	}

	// A failing refresh moves the error counters, the unlabelled and the per-step one.
	src.fail(nil, errors.New("boom"), nil, nil)
	if err := c.runStep(false); err == nil {
		t.Fatal("refresh succeeded")
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_errors_total"); got != 1 {
		t.Errorf("errors_total = %v, want 1", got)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_step_errors_total", "step", "refresh"); got != 1 {
		t.Errorf("step_errors_total{step=refresh} = %v, want 1", got)
	}
	src.fail(nil, nil, nil, nil)
	src.set("X-1", "v")
	if err := c.runStep(false); err != nil {
		t.Fatal(err)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_rows_loaded_total"); got != 101 {
		t.Errorf("rows_loaded_total = %v, want 101", got)
	}
	if got := metrictest.Value(t, reg, "wxlookup_loader_staleness_seconds"); got != 0 {
		t.Errorf("staleness after a refresh = %v, want 0", got)
	}

	// The metric names and types lint clean.
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}

	// Close unregisters, so a new cache can register on the same registry.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c2 := newTestCache(t, src, Config{Registerer: reg})
	if _, err := New(src, Config{Registerer: reg}); err == nil || !strings.Contains(err.Error(), "register") {
		t.Errorf("second cache on one registry: err %v, want a registration error", err)
	}
	_ = c2
}

func TestMetricsReadThroughAndEvictions(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	src := newFakeSource(300)
	c := newTestCache(t, src, Config{Registerer: reg, MaxBytes: 16 << 10})
	startReady(t, c)
	if got := metrictest.Value(t, reg, "wxlookup_cache_complete"); got != 0 {
		t.Errorf("complete = %v for a table over budget", got)
	}
	for i := range 300 {
		mustFind(t, c, fakeKey(i), fakeLine(i))
	}
	mustMiss(t, c, "nope-1")
	mustMiss(t, c, "nope-1") // remembered: served from memory
	found := metrictest.Value(t, reg, "wxlookup_cache_read_through_total", "outcome", "found")
	if found == 0 || metrictest.Value(t, reg, "wxlookup_cache_read_through_total", "outcome", "not_found") != 1 {
		t.Errorf("read-through outcomes: found %v", found)
	}
	// A miss is a lookup that asked the source; the remembered not-found is not one.
	st := c.Status()
	if misses := metrictest.Value(t, reg, "wxlookup_cache_misses_total"); misses != found+1 || st.Misses != uint64(misses) || st.NotFound != 1 {
		t.Errorf("got misses %v (status %d), not found %d; want %v, 1", misses, st.Misses, st.NotFound, found+1)
	}
	if got := metrictest.Value(t, reg, "wxlookup_cache_cost_bytes"); got > 16<<10 {
		t.Errorf("cost %v over the 16 KiB budget", got)
	}
	// Whether ristretto evicts or rejects when full depends on its admission sampling, so
	// only the agreement of the metric with Status is asserted.
	if metrictest.Value(t, reg, "wxlookup_cache_evictions_total") != float64(st.Evictions) {
		t.Errorf("evictions: status %d, metric %v", st.Evictions, metrictest.Value(t, reg, "wxlookup_cache_evictions_total"))
	}
}

// TestMetricsPerQuery registers the caches of two queries (one polled, one following a
// change feed) on one registry: every series carries its cache's query label, the values
// are each cache's own, the set lints clean, a second cache of one query is refused, and
// closing one cache leaves the other's series.
func TestMetricsPerQuery(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	loc := newTestCache(t, newFakeSource(100), Config{Registerer: reg, Query: "location"})
	stock := newTestCache(t, newFakeSource(50), Config{Registerer: reg, Query: "stock", Mode: ModeBinlog})
	startReady(t, loc)
	startReady(t, stock)
	for i := range 3 {
		mustFind(t, loc, fakeKey(i), fakeLine(i))
	}
	mustFind(t, stock, fakeKey(7), fakeLine(7))

	tests := []struct {
		name, query string
		want        float64
	}{
		{"wxlookup_cache_entries", "location", 100},
		{"wxlookup_cache_entries", "stock", 50},
		{"wxlookup_cache_hits_total", "location", 3},
		{"wxlookup_cache_hits_total", "stock", 1},
		{"wxlookup_changefeed_events_total", "location", 0},  // op=upsert: polled
		{"wxlookup_changefeed_reconnects_total", "stock", 0}, // a follower's only
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.query, func(t *testing.T) {
			if got := metrictest.Value(t, reg, tt.name, "query", tt.query); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			query := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "query" {
					query = lp.GetValue()
				}
			}
			if query != "location" && query != "stock" {
				t.Errorf("%s %v: got query label %q, want location or stock", mf.GetName(), m.GetLabel(), query)
			}
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
	if got := loc.Status().Query; got != "location" {
		t.Errorf("Status.Query: got %q, want %q", got, "location")
	}

	if _, err := New(newFakeSource(1), Config{Registerer: reg, Query: "stock"}); err == nil || !strings.Contains(err.Error(), "register") {
		t.Errorf("a second cache of query stock: err %v, want a registration error", err)
	}
	if err := stock.Close(); err != nil {
		t.Fatal(err)
	}
	if got := metrictest.Value(t, reg, "wxlookup_cache_entries", "query", "location"); got != 100 {
		t.Errorf("after closing stock: location entries %v, want 100", got)
	}
	if n, err := testutil.GatherAndCount(reg, "wxlookup_changefeed_reconnects_total"); err != nil || n != 0 {
		t.Errorf("after closing stock: %d reconnect series (err %v), want 0", n, err)
	}
}
