package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"wxlookup/cache"
)

// DefaultAdminListen is the admin listener's default address: loopback only.
const DefaultAdminListen = "127.0.0.1:9090"

// DefaultStaleAfter is how old the cached data may grow (no successful refresh) before
// /readyz answers 503 and the status page turns red (WXLOOKUP_STALE_AFTER).
const DefaultStaleAfter = 60 * time.Second

// Cache is what the admin listener needs of a query's cache: its state and a full reload.
// cache.Cache satisfies it.
type Cache interface {
	Ready() bool
	Status() cache.Status
	Reload(ctx context.Context) error
}

// AdminQuery is one configured query as the admin listener sees it.
type AdminQuery struct {
	Name  string
	Cache Cache
	// Live reports that the webhook routes messages to the query. A query that a
	// configuration reload added is not live while its first load runs: it shows on the
	// status page but does not count for /readyz.
	Live bool
}

// AdminConfig configures the admin listener.
type AdminConfig struct {
	// Token guards every route but /healthz and /readyz: a request must carry it as a
	// bearer token (or as the password of basic auth, for a browser). "" leaves the
	// routes open and turns the admin actions (POST /admin/*) off; cmd allows that only
	// on a loopback address.
	Token    string
	Gatherer prometheus.Gatherer // what /metrics serves
	// Queries returns the configured queries in their order, live and warming; it is
	// called on each probe and page, and must be safe for concurrent use. nil: none.
	Queries func() []AdminQuery
	// ReloadConfig re-reads the configuration and applies its queries (POST
	// /admin/reload-config, SPEC section 10); its error, one line, refuses the file. nil
	// turns the route off.
	ReloadConfig func(ctx context.Context) (ConfigChange, error)
	// Webhook gives request rates, latency, lookup counts and not-found reports to the
	// status page; may be nil.
	Webhook *Server
	Version string
	Logger  *slog.Logger
	Now     func() time.Time
	// SampleInterval is how often the status page's history is sampled (default 10s).
	SampleInterval time.Duration
	// StaleAfter is the staleness beyond which /readyz answers 503 and the status page
	// is red (0 takes DefaultStaleAfter).
	StaleAfter time.Duration
}

// Admin is the admin listener's handler: /metrics, /healthz, /readyz, /status,
// /status.json, POST /admin/reload, POST /admin/reload-config and /debug/pprof/, all but the
// two probes behind AdminConfig.Token. Start begins sampling the history the status page
// charts; Close stops it and any reload it started. Admin is safe for concurrent use.
type Admin struct {
	cfg      AdminConfig
	tokenSum *[sha256.Size]byte // SHA-256 of cfg.Token; nil without a token
	mux      *http.ServeMux
	started  time.Time
	history  *history

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	reloadMu sync.Mutex // guards current; one reload at a time
	current  *reloadRun // the running reload, else the last one; nil before the first
}

// NewAdmin returns the admin handler for cfg.
func NewAdmin(cfg AdminConfig) *Admin {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = 10 * time.Second
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	a := &Admin{cfg: cfg, mux: http.NewServeMux(), started: cfg.Now(),
		history: newHistory(int(time.Hour / cfg.SampleInterval))}
	if cfg.Token != "" {
		sum := sha256.Sum256([]byte(cfg.Token))
		a.tokenSum = &sum
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.HandleFunc("GET /status", a.status)
	a.mux.HandleFunc("GET /status.json", a.statusJSON)
	a.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/status", http.StatusFound)
	})
	a.mux.HandleFunc("POST /admin/reload", a.reload)
	a.mux.HandleFunc("POST /admin/reload-config", a.reloadConfig)
	a.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	a.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	a.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	a.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return a
}

// ServeHTTP serves the admin routes; with a token, only /healthz and /readyz without it.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if a.tokenSum != nil && !isProbe(r.URL.Path) && !a.tokenOK(r) {
		w.Header().Add("WWW-Authenticate", `Bearer realm="wxlookup admin"`)
		w.Header().Add("WWW-Authenticate", `Basic realm="wxlookup admin", charset="UTF-8"`)
		http.Error(w, "unauthorised: send WXLOOKUP_ADMIN_TOKEN as a bearer token", http.StatusUnauthorized)
		return
	}
	a.mux.ServeHTTP(w, r)
}

// isProbe reports whether path is a health probe, open to callers without the token (a
// load balancer, systemd, a container runtime): they tell only "up" and "ready".
func isProbe(path string) bool { return path == "/healthz" || path == "/readyz" }

// tokenOK reports whether r carries the admin token, as a bearer token or as the password
// of basic auth (any user name). It compares SHA-256 digests in constant time, so neither
// the token's bytes nor its length show in how long a refusal takes.
func (a *Admin) tokenOK(r *http.Request) bool {
	if a.tokenSum == nil {
		return false
	}
	var got string
	auth := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(auth, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		got = cred
	case strings.EqualFold(scheme, "Basic"):
		_, pass, ok := r.BasicAuth()
		if !ok {
			return false
		}
		got = pass
	default:
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1
}

// Start begins sampling the status page's history every SampleInterval.
func (a *Admin) Start() {
	a.sample()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(a.cfg.SampleInterval)
		defer t.Stop()
		for {
			select {
			case <-a.ctx.Done():
				return
			case <-t.C:
				a.sample()
			}
		}
	}()
}

// Close stops the sampler and cancels a reload it started, and waits for both to end.
func (a *Admin) Close() error {
	// Cancel under reloadMu: startReload checks a.ctx and calls wg.Add under it, so no
	// reload starts (and no wg.Add races wg.Wait) once Close has begun.
	a.reloadMu.Lock()
	a.cancel()
	a.reloadMu.Unlock()
	a.wg.Wait()
	return nil
}

func (a *Admin) sample() { a.history.add(a.read()) }

// read reads the counters the status page charts.
func (a *Admin) read() sample {
	s := sample{at: a.cfg.Now()}
	for _, q := range a.queries() {
		if q.Live {
			s.misses += q.Cache.Status().Misses
		}
	}
	if a.cfg.Webhook != nil {
		s.requests = a.cfg.Webhook.m.stats()
		s.lookups, s.found = a.cfg.Webhook.m.lookupTotals()
	}
	return s
}

func (a *Admin) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// queries returns the configured queries (AdminConfig.Queries), or none.
func (a *Admin) queries() []AdminQuery {
	if a.cfg.Queries == nil {
		return nil
	}
	return a.cfg.Queries()
}

// readyz answers 200 once the first load of every live query has finished and while each
// one's data is fresher than StaleAfter, else 503 saying which query and why. A query a
// configuration reload added counts once it is live.
func (a *Admin) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	live := 0
	for _, q := range a.queries() {
		if !q.Live {
			continue
		}
		live++
		if !q.Cache.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "starting: query %s: the first load from the source has not finished\n", q.Name)
			return
		}
		if st := q.Cache.Status(); st.Staleness > a.cfg.StaleAfter {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "stale: query %s: no successful refresh for %s (more than WXLOOKUP_STALE_AFTER=%s)", q.Name, st.Staleness.Truncate(time.Second), a.cfg.StaleAfter)
			if len(st.RecentErrors) > 0 {
				e := st.RecentErrors[0]
				fmt.Fprintf(w, "; last error (%s, %s): %s", e.Step, e.Time.Format(time.RFC3339), e.Err)
			}
			w.Write([]byte("\n"))
			return
		}
	}
	if live == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("starting: no query is live yet\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

// authorised lets an admin action through when a token is configured and r carries it
// (ServeHTTP has checked it already; checking again keeps the action safe on its own).
// Without a configured token the admin actions are off.
func (a *Admin) authorised(w http.ResponseWriter, r *http.Request) bool {
	if a.tokenSum == nil {
		http.Error(w, "admin actions are off: set WXLOOKUP_ADMIN_TOKEN", http.StatusForbidden)
		return false
	}
	if !a.tokenOK(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wxlookup admin"`)
		http.Error(w, "unauthorised", http.StatusUnauthorized)
		return false
	}
	return true
}
