package cache

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the cache's and loader's Prometheus collectors (SPEC 7). Most read the
// counters the cache keeps anyway (CounterFunc/GaugeFunc), so the hot path only does its
// own atomic add.
//
// The change feed's position is not a metric: a label holding the cursor would make a new
// series with every transaction, which Prometheus keeps as cardinality. Status.Position
// shows it, and the log names it when the feed reconnects or resnapshots.
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
	// panics counts recovered panics by goroutine (wxlookup_loader_panics_total).
	panics *prometheus.CounterVec
	// events counts the changes applied by kind (wxlookup_changefeed_events_total{op}):
	// insert, update and delete rows of the binlog; upsert and delete rows of a poll.
	events struct {
		insert, update, delete, upsert prometheus.Counter
	}
	// reconnects and resnapshots count the change feed's restarts (binlog mode).
	reconnects, resnapshots prometheus.Counter
	// checks counts reconcile's range comparisons by result
	// (wxlookup_loader_reconcile_checks_total{result}).
	checks struct {
		equal, differ, recheck prometheus.Counter
	}
	// removed counts entries removed because their rows were deleted, by what found it
	// (wxlookup_loader_rows_removed_total{by}): a change, reconcile, or a reload's sweep.
	removed struct {
		change, reconcile, reload prometheus.Counter
	}
}

// newMetrics creates the collectors for c and registers them on reg (if not nil). With
// Config.Query set, every one carries the const label query, so that the caches of several
// queries register side by side on one Registerer.
func newMetrics(c *Cache, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{reg: reg}
	var labels prometheus.Labels
	if c.cfg.Query != "" {
		labels = prometheus.Labels{"query": c.cfg.Query}
	}
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	readThrough := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "wxlookup_cache_read_through_total",
		Help:        "Read-through queries of an incomplete cache, by outcome (found, not_found, error, busy, timeout).",
		ConstLabels: labels,
	}, []string{"outcome"})
	m.readThrough.found = readThrough.WithLabelValues("found")
	m.readThrough.notFound = readThrough.WithLabelValues("not_found")
	m.readThrough.failed = readThrough.WithLabelValues("error")
	m.readThrough.busy = readThrough.WithLabelValues("busy")
	m.readThrough.timeout = readThrough.WithLabelValues("timeout")
	m.stepErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "wxlookup_loader_step_errors_total",
		Help:        "Failed loader steps, by step (warm, refresh, reconcile, reload, resnapshot, follow).",
		ConstLabels: labels,
	}, []string{"step"})
	m.panics = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "wxlookup_loader_panics_total",
		Help:        "Panics recovered in the cache's background goroutines, by goroutine (loader, read_through).",
		ConstLabels: labels,
	}, []string{"goroutine"})
	m.panics.WithLabelValues("loader")
	m.panics.WithLabelValues("read_through")
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "wxlookup_changefeed_events_total",
		Help:        "Row changes applied, by op: insert, update, delete (binlog); upsert, delete (poll).",
		ConstLabels: labels,
	}, []string{"op"})
	unused := prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"}) // never registered
	m.events.delete = events.WithLabelValues("delete")
	m.events.insert, m.events.update, m.events.upsert = unused, unused, unused
	if c.follower != nil {
		m.events.insert, m.events.update = events.WithLabelValues("insert"), events.WithLabelValues("update")
	} else {
		m.events.upsert = events.WithLabelValues("upsert")
	}
	m.reconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "wxlookup_changefeed_reconnects_total",
		Help:        "Times the change feed failed and was followed again from its last position.",
		ConstLabels: labels,
	})
	m.resnapshots = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "wxlookup_changefeed_resnapshots_total",
		Help:        "Times the change feed could not go on from its position (binary logs purged, table truncated or altered) and the table was reloaded in place.",
		ConstLabels: labels,
	})
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "wxlookup_loader_reconcile_checks_total",
		Help:        "Key ranges reconcile compared with the source's checksum, by result (equal; recheck: it differed, compared again after the next refresh; differ: the range was re-read).",
		ConstLabels: labels,
	}, []string{"result"})
	m.checks.equal, m.checks.differ = checks.WithLabelValues("equal"), checks.WithLabelValues("differ")
	m.checks.recheck = checks.WithLabelValues("recheck")
	removed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "wxlookup_loader_rows_removed_total",
		Help:        "Rows removed from the cache because the source deleted them, by what found the delete (change, reconcile, reload).",
		ConstLabels: labels,
	}, []string{"by"})
	m.removed.change = removed.WithLabelValues("change")
	m.removed.reconcile = removed.WithLabelValues("reconcile")
	m.removed.reload = removed.WithLabelValues("reload")

	collectors := []prometheus.Collector{
		counter("wxlookup_cache_hits_total", "Lookups answered with a row held in memory.", c.hits.Load),
		counter("wxlookup_cache_misses_total", "Lookups that had to ask the source (read-through); a not-found answered from memory is not a miss.", c.misses.Load),
		gauge("wxlookup_cache_entries", "Rows held in the cache.", func() float64 {
			_, n, _ := c.tableStatus()
			return float64(n)
		}),
		gauge("wxlookup_cache_cost_bytes", "Cost of the rows held (key, canonical key, reply line, per-entry overhead) plus the bytes of the did-you-mean index of their keys.", func() float64 {
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
		gauge("wxlookup_loader_last_success_timestamp_seconds", "Unix time of the start of the last successful warm, refresh or reload, or of the last change applied (binlog) (0 if none).", func() float64 {
			t := c.status.lastSuccessTime()
			if t.IsZero() {
				return 0
			}
			return float64(t.UnixNano()) / 1e9
		}),
		gauge("wxlookup_loader_staleness_seconds", "Seconds since the last success (see wxlookup_loader_last_success_timestamp_seconds).", func() float64 {
			return c.status.staleness(c.cfg.Now()).Seconds()
		}),
		counter("wxlookup_loader_rows_loaded_total", "Rows read from the source by snapshots, refreshes and the change feed.", c.status.rowsLoaded.Load),
		counter("wxlookup_loader_errors_total", "Failed loader steps.", c.status.errors.Load),
		readThrough,
		m.stepErrors,
		m.panics,
		events,
		removed,
	}
	if c.ranges != nil {
		collectors = append(collectors, checks,
			gauge("wxlookup_loader_reconcile_ranges", "Key ranges reconcile compares with the source, one every WXLOOKUP_RECONCILE_INTERVAL/ranges.", func() float64 {
				return float64(c.rangeCount())
			}))
	}
	if c.follower != nil {
		collectors = append(collectors, m.reconnects, m.resnapshots,
			gauge("wxlookup_changefeed_lag_seconds", "Seconds between now and the commit of the last change applied (heartbeats keep it near 0 while the source is idle).", func() float64 {
				return c.status.lag(c.cfg.Now()).Seconds()
			}))
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
