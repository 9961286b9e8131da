package server

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"wxlookup/cache"
	"wxlookup/internal/readers"
)

// Route binds a compiled Query to the cache that answers it.
type Route struct {
	Query *Query
	// Cache answers the query's keys. When it is also a Suggester (cache.Cache is), a
	// not-found reply offers the nearest keys.
	Cache Lookuper
}

// Suggester offers the keys of a query's table nearest to a key that was not found.
// cache.Cache satisfies it.
type Suggester interface {
	// Suggest appends to dst up to max keys, as stored, nearest to the normalised key,
	// and returns dst; it appends nothing when no key is close. It must not allocate
	// beyond dst's growth on the hot path, and be safe for concurrent use.
	Suggest(dst []string, key []byte, max int) []string
}

// queryRoute is one Route as the webhook answers it, with the query's counters and not-found
// report.
type queryRoute struct {
	q       *Query
	lookup  Lookuper
	suggest Suggester // nil: no suggestions
	counts  *queryCounters
	report  *notFoundReport
}

// routerShards is how many shards the webhook spreads its requests over when it reads the
// current router (work.shard): those of a readers.Count.
const routerShards = readers.Shards

// router is one immutable set of routes, in the order they are tried. The webhook reads
// the current one for each message (acquire … release); SetRoutes replaces it whole.
type router struct {
	routes  []*queryRoute
	readers readers.Count // the requests inside the router (acquire)
}

func newRouter(routes []*queryRoute) *router { return &router{routes: routes} }

// acquire returns the current router with the caller registered as its reader on shard;
// the caller must call release(shard) when done with it. A retired router is never used
// after retire returns (readers.Count says why).
func (a *answerer) acquire(shard int) *router {
	for {
		r := a.routes.Load()
		r.readers.Enter(uint64(shard))
		if a.routes.Load() == r {
			return r
		}
		r.release(shard) // replaced meanwhile: retire may be waiting for us
	}
}

// release ends a request's use of r begun by acquire.
func (r *router) release(shard int) { r.readers.Leave(uint64(shard)) }

// retire waits until every request that acquired r has released it. The caller must have
// replaced r as the current router first.
func (r *router) retire() { r.readers.Retire() }

// SetRoutes replaces the queries the webhook answers with routes, tried in their order.
// The swap is atomic and lock-free for requests: each message is answered by the old set
// or the new, never a mix, and none waits. SetRoutes returns once no request is still
// using the previous set, so a cache that only the previous set routed to may then be
// closed. It refuses a route without a query or a cache, and two routes of one name (the
// configuration's own checks are CheckQueries). Safe for concurrent use, with requests and
// with other calls: each returns once the set it replaced is no longer used.
func (s *Server) SetRoutes(routes []Route) error {
	s.routesMu.Lock()
	built := make([]*queryRoute, 0, len(routes))
	reports := make(map[string]*notFoundReport, len(routes))
	for i, r := range routes {
		if r.Query == nil || r.Cache == nil {
			s.routesMu.Unlock()
			return fmt.Errorf("server: route %d: no query or no cache", i)
		}
		name := r.Query.Name()
		if _, dup := reports[name]; dup {
			s.routesMu.Unlock()
			return fmt.Errorf("server: route %d: a second query named %q", i, name)
		}
		// A query keeps its not-found report across configuration changes while its
		// name stays; a removed query's report goes with it.
		rep := s.reports[name]
		if rep == nil {
			rep = newNotFoundReport(DefaultNotFoundTop)
		}
		reports[name] = rep
		rt := &queryRoute{q: r.Query, lookup: r.Cache, counts: s.m.query(name), report: rep}
		rt.suggest, _ = r.Cache.(Suggester)
		built = append(built, rt)
	}
	s.reports = reports
	old := s.ans.routes.Swap(newRouter(built))
	s.routesMu.Unlock()
	// Outside the lock: the status page reads the reports meanwhile. Each call waits for
	// the set it replaced.
	if old != nil {
		old.retire()
	}
	return nil
}

// routes returns the routes the webhook answers now, in order. Safe for concurrent use.
func (s *Server) routes() []Route {
	r := s.ans.routes.Load()
	out := make([]Route, len(r.routes))
	for i, rt := range r.routes {
		out[i] = Route{Query: rt.q, Cache: rt.lookup}
	}
	return out
}

// notFoundTop returns the most-asked missing keys of the query named name, most asked
// first (see NotFoundKey), or nil when the webhook routes no query of that name. Safe for
// concurrent use.
func (s *Server) notFoundTop(name string) []NotFoundKey {
	s.routesMu.Lock()
	rep := s.reports[name]
	s.routesMu.Unlock()
	if rep == nil {
		return nil
	}
	return rep.top()
}

// errNoRoute is what selection returns when no query matches the message.
var errNoRoute = errors.New("no query matches")

// selectRoute returns the route of the first query the message selects: by its first
// token, normalised (first): a prefix query when first starts with one of its prefixes, a
// regex query when first matches, a catch-all always.
func (r *router) selectRoute(first []byte) (*queryRoute, error) {
	for _, rt := range r.routes {
		q := rt.q
		switch {
		case q.match != nil:
			if q.match.Match(first) {
				return rt, nil
			}
		case q.prefixes != nil:
			for _, p := range q.prefixes {
				if bytes.HasPrefix(first, p) {
					return rt, nil
				}
			}
		default:
			return rt, nil
		}
	}
	return nil, errNoRoute
}

// questionMark is the optional leading mark of SPEC section 5, stripped from the numbers a
// catch-all query answers.
var questionMark = [][]byte{[]byte("?")}

// stripPrefix removes from tok the query's mark, if tok starts with one: one of a prefix
// query's prefixes, or a catch-all's optional "?" (or "？"). A regex query has none. The
// comparison is on the normalised form; scratch is space for it, kept for the next call.
func (q *Query) stripPrefix(tok []byte, scratch *[]byte) []byte {
	marks := q.prefixes
	switch {
	case q.match != nil:
		return tok
	case marks == nil:
		marks = questionMark
	}
	for _, p := range marks {
		if rest, ok := cutPrefix(tok, p, scratch); ok {
			return rest
		}
	}
	return tok
}

// cutPrefix returns tok after its shortest run of whole runes that normalises to p, and
// true; or tok and false when tok does not start with p.
func cutPrefix(tok, p []byte, scratch *[]byte) ([]byte, bool) {
	for i := 0; i < len(tok); {
		_, n := utf8.DecodeRune(tok[i:])
		i += n
		k := cache.AppendKey((*scratch)[:0], tok[:i])
		*scratch = k
		if len(k) >= len(p) {
			if bytes.Equal(k, p) {
				return tok[i:], true
			}
			return tok, false
		}
	}
	return tok, false
}
