package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
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

// Cache is what the admin listener needs of the cache: its state and a full reload.
// cache.Cache satisfies it.
type Cache interface {
	Ready() bool
	Status() cache.Status
	Reload(ctx context.Context) error
}

// AdminConfig configures the admin listener.
type AdminConfig struct {
	// Token is the bearer token for POST /admin/*; "" turns the admin actions off.
	Token    string
	Gatherer prometheus.Gatherer // what /metrics serves
	Cache    Cache
	Webhook  *Server // for request rates and latency on the status page; may be nil
	Version  string
	Logger   *slog.Logger
	Now      func() time.Time
	// SampleInterval is how often the status page's history is sampled (default 10s).
	SampleInterval time.Duration
}

// Admin is the admin listener's handler: /metrics, /healthz, /readyz, /status,
// POST /admin/reload and /debug/pprof/. Start begins sampling the history the status page
// charts; Close stops it. Admin is safe for concurrent use.
type Admin struct {
	cfg     AdminConfig
	mux     *http.ServeMux
	started time.Time
	history *history

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	reloadMu sync.Mutex // one reload at a time
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
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	a := &Admin{cfg: cfg, mux: http.NewServeMux(), started: cfg.Now(),
		history: newHistory(int(time.Hour / cfg.SampleInterval))}
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
	a.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	a.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	a.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	a.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return a
}

// ServeHTTP serves the admin routes.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	a.mux.ServeHTTP(w, r)
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

// Close stops the sampler and waits for it.
func (a *Admin) Close() error {
	a.cancel()
	a.wg.Wait()
	return nil
}

func (a *Admin) sample() { a.history.add(a.read()) }

// read reads the counters the status page charts.
func (a *Admin) read() sample {
	s := sample{at: a.cfg.Now()}
	if a.cfg.Cache != nil {
		st := a.cfg.Cache.Status()
		s.hits, s.misses = st.Hits, st.Misses
	}
	if a.cfg.Webhook != nil {
		s.requests = a.cfg.Webhook.m.stats()
	}
	return s
}

func (a *Admin) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

func (a *Admin) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.cfg.Cache == nil || !a.cfg.Cache.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("starting: the first load from the source has not finished\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

// reload runs a full reload when the request carries the admin bearer token.
func (a *Admin) reload(w http.ResponseWriter, r *http.Request) {
	if !a.authorised(w, r) {
		return
	}
	if !a.reloadMu.TryLock() {
		http.Error(w, "a reload is already running", http.StatusConflict)
		return
	}
	defer a.reloadMu.Unlock()
	start := a.cfg.Now()
	if err := a.cfg.Cache.Reload(r.Context()); err != nil {
		a.cfg.Logger.Error("admin: reload failed", "err", err)
		status := http.StatusInternalServerError
		if errors.Is(err, context.Canceled) {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, "reload failed: "+err.Error(), status)
		return
	}
	st := a.cfg.Cache.Status()
	a.cfg.Logger.Info("admin: reload done", "entries", st.Entries, "took", a.cfg.Now().Sub(start))
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"entries": st.Entries, "complete": st.Complete, "seconds": a.cfg.Now().Sub(start).Seconds()})
}

// authorised checks the bearer token in constant time; without a configured token the
// admin actions are off.
func (a *Admin) authorised(w http.ResponseWriter, r *http.Request) bool {
	if a.cfg.Token == "" {
		http.Error(w, "admin actions are off: set WXLOOKUP_ADMIN_TOKEN", http.StatusForbidden)
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.cfg.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wxlookup admin"`)
		http.Error(w, "unauthorised", http.StatusUnauthorized)
		return false
	}
	return true
}
