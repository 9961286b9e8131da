package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"wxlookup/cache"
	"wxlookup/server"
	"wxlookup/store"
)

// queryRun is one configured query running: its source, its cache and loader, and the
// registry of the cache's metrics (one per run, so that the old and the new version of a
// changed query can both exist while the new one warms).
type queryRun struct {
	cfg    QueryConfig
	query  *server.Query
	source cache.Source
	cache  *cache.Cache
	reg    *prometheus.Registry
	ctx    context.Context // ends the wait for the first load (superseded, or shutting down)
	stop   context.CancelFunc
}

// close stops the run's loader and closes its source.
func (r *queryRun) close() error {
	r.stop()
	err := r.cache.Close()
	if c, ok := r.source.(io.Closer); ok {
		err = errors.Join(err, c.Close())
	}
	return err
}

// querySet runs the configured queries and applies configuration reloads (SPEC section 10):
// a query added warms in the background and the webhook routes to it once its first load
// completes; a removed one stops being routed to at once and closes; a changed one is
// removed and added, the old version answering until the new one has loaded. Only
// configuration changes take mu; requests never do (the webhook swaps its routes
// atomically). Safe for concurrent use.
type querySet struct {
	m *Main

	mu      sync.Mutex
	order   []string             // the configured queries' names, in order
	live    []*queryRun          // routed to, in order
	warming map[string]*queryRun // added or changed, first load running

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the waits for first loads
}

func newQuerySet(m *Main) *querySet {
	s := &querySet{m: m, warming: map[string]*queryRun{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// open opens the query's source, checks it against the database when it is MySQL, and
// makes its cache; it starts nothing.
func (s *querySet) open(ctx context.Context, qc QueryConfig) (*queryRun, error) {
	m := s.m
	q, err := server.NewQuery(qc.spec())
	if err != nil {
		return nil, queryConfigError(err)
	}
	src, mode, err := m.openSource(qc)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", qc.Name, err)
	}
	r := &queryRun{cfg: qc, query: q, source: src, reg: prometheus.NewRegistry()}
	r.ctx, r.stop = context.WithCancel(s.ctx)
	fail := func(err error) (*queryRun, error) {
		if c, ok := src.(io.Closer); ok {
			c.Close()
		}
		r.stop()
		return nil, err
	}
	if my := mysqlOf(src); my != nil {
		if err := m.checkMapping(ctx, my, qc); err != nil {
			return fail(err)
		}
	}
	if b, ok := src.(*store.Binlog); ok {
		if err := m.checkBinlog(ctx, b); err != nil {
			return fail(err)
		}
	}
	cfg := m.Config
	r.cache, err = cache.New(src, cache.Config{
		Mode:              mode,
		MaxBytes:          cfg.CacheMaxBytes,
		RefreshInterval:   cfg.RefreshInterval,
		ReconcileInterval: cfg.ReconcileInterval,
		ReloadRate:        reloadRate(cfg.ReloadRate),
		Render:            func(dst []byte, row cache.Row) []byte { return q.AppendFound(dst, row.Key, row.Values) },
		Logger:            m.Logger.With("component", "loader", "query", qc.Name),
		Registerer:        r.reg,
		Query:             qc.Name,
	})
	if err != nil {
		return fail(fmt.Errorf("query %q: %w", qc.Name, err))
	}
	return r, nil
}

// start opens every query of the configuration, all to be routed at once (each answers
// "starting up" until its first load completes). It starts no loader: goLive does.
func (s *querySet) start(ctx context.Context, qcs []QueryConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, qc := range qcs {
		r, err := s.open(ctx, qc)
		if err != nil {
			for _, o := range s.live {
				o.close()
			}
			s.live = nil
			return err
		}
		s.live = append(s.live, r)
		s.order = append(s.order, qc.Name)
	}
	return nil
}

// goLive routes the webhook to the queries start opened and starts their loaders.
func (s *querySet) goLive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.route(); err != nil {
		return err
	}
	for _, r := range s.live {
		r.cache.Start()
	}
	return nil
}

// route gives the webhook the live queries, in order. Callers hold mu.
func (s *querySet) route() error {
	slices.SortStableFunc(s.live, func(a, b *queryRun) int {
		return slices.Index(s.order, a.cfg.Name) - slices.Index(s.order, b.cfg.Name)
	})
	routes := make([]server.Route, len(s.live))
	for i, r := range s.live {
		routes[i] = server.Route{Query: r.query, Cache: r.cache}
	}
	return s.m.webhook.SetRoutes(routes)
}

// apply makes qcs, a validated configuration's queries, the running set, and says what
// changed. Every new or changed query is opened (and checked against the database) first:
// when one fails, nothing changes and the error says why.
func (s *querySet) apply(ctx context.Context, qcs []QueryConfig) (server.ConfigChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	change := server.ConfigChange{}
	wanted := map[string]QueryConfig{}
	var opened []*queryRun
	for _, qc := range qcs {
		wanted[qc.Name] = qc
		live, warm := s.liveRun(qc.Name), s.warming[qc.Name]
		switch {
		case live != nil && reflect.DeepEqual(live.cfg, qc):
			change.Unchanged = append(change.Unchanged, qc.Name) // a warming other version stops below
			continue
		case live != nil:
			change.Changed = append(change.Changed, qc.Name)
		default:
			change.Added = append(change.Added, qc.Name)
		}
		if warm != nil && reflect.DeepEqual(warm.cfg, qc) {
			continue // warming already
		}
		r, err := s.open(ctx, qc)
		if err != nil {
			for _, o := range opened {
				o.close()
			}
			return server.ConfigChange{}, err
		}
		opened = append(opened, r)
	}
	// Commit. Warming versions no longer wanted stop (they were never routed to).
	for name, w := range s.warming {
		if qc, ok := wanted[name]; !ok || !reflect.DeepEqual(w.cfg, qc) {
			delete(s.warming, name)
			w.close()
			if !ok && s.liveRun(name) == nil {
				change.Removed = append(change.Removed, name)
			}
		}
	}
	for _, r := range opened {
		s.warming[r.cfg.Name] = r
		r.cache.Start()
		s.wg.Add(1)
		go s.awaitFirstLoad(r)
	}
	s.order = s.order[:0]
	for _, qc := range qcs {
		s.order = append(s.order, qc.Name)
	}
	var removed []*queryRun
	s.live = slices.DeleteFunc(s.live, func(r *queryRun) bool {
		_, ok := wanted[r.cfg.Name]
		if !ok {
			removed = append(removed, r)
			change.Removed = append(change.Removed, r.cfg.Name)
		}
		return !ok
	})
	if err := s.route(); err != nil {
		return change, err // cannot happen: the names are unique
	}
	// The webhook no longer routes to the removed queries, and no request still uses them.
	for _, r := range removed {
		r.close()
	}
	return change, nil
}

// liveRun returns the live run of the query named name, or nil. Callers hold mu.
func (s *querySet) liveRun(name string) *queryRun {
	for _, r := range s.live {
		if r.cfg.Name == name {
			return r
		}
	}
	return nil
}

// awaitFirstLoad waits for a warming query's first load, then routes the webhook to it in
// place of its old version, if any, which then closes.
func (s *querySet) awaitFirstLoad(r *queryRun) {
	defer s.wg.Done()
	if err := r.cache.WaitReady(r.ctx); err != nil {
		return // superseded or shutting down: whoever stopped it closes it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.warming[r.cfg.Name] != r {
		return
	}
	delete(s.warming, r.cfg.Name)
	old := s.liveRun(r.cfg.Name)
	s.live = slices.DeleteFunc(s.live, func(o *queryRun) bool { return o == old })
	s.live = append(s.live, r)
	if err := s.route(); err != nil {
		s.m.Logger.Error("config reload: cannot route the query", "query", r.cfg.Name, "err", err)
		return
	}
	if old != nil {
		old.close()
	}
	st := r.cache.Status()
	s.m.Logger.Info("config reload: query live", "query", r.cfg.Name, "entries", st.Entries, "replaced", old != nil)
}

// waitReady waits until every live query has completed its first load, or ctx ends.
func (s *querySet) waitReady(ctx context.Context) error {
	s.mu.Lock()
	live := slices.Clone(s.live)
	s.mu.Unlock()
	for _, r := range live {
		if err := r.cache.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// cacheOf returns the cache of the live query named name, or nil.
func (s *querySet) cacheOf(name string) *cache.Cache {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.liveRun(name); r != nil {
		return r.cache
	}
	return nil
}

// adminQueries is server.AdminConfig.Queries: the configured queries in order, each live
// one, else its warming version.
func (s *querySet) adminQueries() []server.AdminQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []server.AdminQuery
	for _, name := range s.order {
		if r := s.liveRun(name); r != nil {
			out = append(out, server.AdminQuery{Name: name, Cache: r.cache, Live: true})
		} else if w := s.warming[name]; w != nil {
			out = append(out, server.AdminQuery{Name: name, Cache: w.cache})
		}
	}
	return out
}

// Gather is a prometheus.Gatherer over the caches' metrics of the queries adminQueries
// shows, each series labelled with its query (query="name") when the cache has not labelled
// it itself.
func (s *querySet) Gather() ([]*dto.MetricFamily, error) {
	s.mu.Lock()
	var gs prometheus.Gatherers
	for _, name := range s.order {
		r := s.liveRun(name)
		if r == nil {
			r = s.warming[name]
		}
		if r != nil {
			gs = append(gs, queryLabel{r.reg, name})
		}
	}
	s.mu.Unlock()
	return gs.Gather()
}

// queryLabel gathers g, adding the label query=name to every series that lacks it.
type queryLabel struct {
	g    prometheus.Gatherer
	name string
}

func (q queryLabel) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := q.g.Gather()
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == "query" }) {
				label, value := "query", q.name
				m.Label = append(m.Label, &dto.LabelPair{Name: &label, Value: &value})
				slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return cmp.Compare(a.GetName(), b.GetName()) })
			}
		}
	}
	return mfs, err
}

// close stops the waits for first loads and closes every query, live and warming.
func (s *querySet) close() error {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, r := range s.live {
		errs = append(errs, r.close())
	}
	for _, r := range s.warming {
		errs = append(errs, r.close())
	}
	s.live, s.warming = nil, map[string]*queryRun{}
	return errors.Join(errs...)
}

// reloadRate returns cache.Config.ReloadRate for WXLOOKUP_RELOAD_RATE, whose 0 means no
// limit (the cache's own zero means its default).
func reloadRate(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
