package cache

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the cache's and loader's Prometheus collectors (SPEC 7). Most read the
// counters the cache keeps anyway (CounterFunc/GaugeFunc), so the hot path only does its
// own atomic add.
type metrics struct {
	reg        prometheus.Registerer // nil: nothing registered
	registered []prometheus.Collector

	// readThrough counts read-through queries by outcome
	// (wxlookup_cache_read_through_total{outcome}).
	readThrough struct {
		found, notFound, failed, busy, timeout prometheus.Counter
	}
	// stepErrors counts failed loader steps by step (wxlookup_loader_step_errors_total);
	// wxlookup_loader_errors_total is their unlabelled sum.
	stepErrors *prometheus.CounterVec
}

// newMetrics creates the collectors for c and registers them on reg (if not nil).
func newMetrics(c *Cache, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{reg: reg}
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	readThrough := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wxlookup_cache_read_through_total",
		Help: "Read-through queries of an incomplete cache, by outcome (found, not_found, error, busy, timeout).",
	}, []string{"outcome"})
	m.readThrough.found = readThrough.WithLabelValues("found")
	m.readThrough.notFound = readThrough.WithLabelValues("not_found")
	m.readThrough.failed = readThrough.WithLabelValues("error")
	m.readThrough.busy = readThrough.WithLabelValues("busy")
	m.readThrough.timeout = readThrough.WithLabelValues("timeout")
	m.stepErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wxlookup_loader_step_errors_total",
		Help: "Failed loader steps, by step (warm, refresh, reconcile, reload).",
	}, []string{"step"})

	collectors := []prometheus.Collector{
		counter("wxlookup_cache_hits_total", "Lookups answered with a row held in memory.", c.hits.Load),
		counter("wxlookup_cache_misses_total", "Lookups not answered with a row held in memory.", c.misses.Load),
		gauge("wxlookup_cache_entries", "Rows held in the cache.", func() float64 {
			_, n, _ := c.tableStatus()
			return float64(n)
		}),
		gauge("wxlookup_cache_cost_bytes", "Cost of the rows held (key, canonical key, reply line, per-entry overhead).", func() float64 {
			_, _, cost := c.tableStatus()
			return float64(cost)
		}),
		gauge("wxlookup_cache_max_bytes", "The cache budget (WXLOOKUP_CACHE_MAX_BYTES).", func() float64 {
			return float64(c.cfg.MaxBytes)
		}),
		gauge("wxlookup_cache_complete", "1 if every row of the source is held (a miss is a definitive not-found), else 0.", func() float64 {
			if complete, _, _ := c.tableStatus(); complete {
				return 1
			}
			return 0
		}),
		counter("wxlookup_cache_sets_dropped_total", "Cache writes ristretto dropped (each retried).", c.stats.setsDropped.Load),
		counter("wxlookup_cache_evictions_total", "Rows evicted because the table exceeds the budget.", c.stats.evictions.Load),
		gauge("wxlookup_loader_last_success_timestamp_seconds", "Unix time of the start of the last successful warm, refresh or reload (0 if none).", func() float64 {
			t := c.status.lastSuccessTime()
			if t.IsZero() {
				return 0
			}
			return float64(t.UnixNano()) / 1e9
		}),
		gauge("wxlookup_loader_staleness_seconds", "Seconds since the start of the last successful warm, refresh or reload.", func() float64 {
			return c.status.staleness(c.cfg.Now()).Seconds()
		}),
		counter("wxlookup_loader_rows_loaded_total", "Rows read from the source by warm, reloads and refreshes.", c.status.rowsLoaded.Load),
		counter("wxlookup_loader_errors_total", "Failed loader steps.", c.status.errors.Load),
		readThrough,
		m.stepErrors,
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range collectors {
		if err := reg.Register(col); err != nil {
			m.unregister()
			return nil, fmt.Errorf("cache: register metrics: %w", err)
		}
		m.registered = append(m.registered, col)
	}
	return m, nil
}

// unregister removes the collectors registered by newMetrics.
func (m *metrics) unregister() {
	for _, col := range m.registered {
		m.reg.Unregister(col)
	}
	m.registered = nil
}
