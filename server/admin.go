package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
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

// Cache is what the admin listener needs of the cache: its state and a full reload.
// cache.Cache satisfies it.
type Cache interface {
	Ready() bool
	Status() cache.Status
	Reload(ctx context.Context) error
}

// AdminConfig configures the admin listener.
type AdminConfig struct {
	// Token guards every route but /healthz and /readyz: a request must carry it as a
	// bearer token (or as the password of basic auth, for a browser). "" leaves the
	// routes open and turns the admin actions (POST /admin/*) off; cmd allows that only
	// on a loopback address.
	Token    string
	Gatherer prometheus.Gatherer // what /metrics serves
	Cache    Cache
	Webhook  *Server // for request rates and latency on the status page; may be nil
	Version  string
	Logger   *slog.Logger
	Now      func() time.Time
	// SampleInterval is how often the status page's history is sampled (default 10s).
	SampleInterval time.Duration
	// StaleAfter is the staleness beyond which /readyz answers 503 and the status page
	// is red (0 takes DefaultStaleAfter).
	StaleAfter time.Duration
}

// Admin is the admin listener's handler: /metrics, /healthz, /readyz, /status,
// POST /admin/reload and /debug/pprof/, all but the two probes behind AdminConfig.Token. Start begins sampling the history the status page
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

// reloadRun is the record of one reload started by POST /admin/reload: running while
// Finished is zero.
type reloadRun struct {
	Started, Finished time.Time
	Entries           int64 // the cache's entries and completeness after a reload that succeeded
	Complete          bool
	Err               error // why it failed; nil if it did not
}

// took is how long the reload took, or has run so far at now.
func (r reloadRun) took(now time.Time) time.Duration {
	if r.Finished.IsZero() {
		return now.Sub(r.Started)
	}
	return r.Finished.Sub(r.Started)
}

// summary is the record as /status.json and the 202 answer show it.
func (r reloadRun) summary(now time.Time) map[string]any {
	m := map[string]any{"started": r.Started, "seconds": r.took(now).Seconds()}
	switch {
	case r.Finished.IsZero():
		m["state"] = "running"
	case r.Err != nil:
		m["state"], m["finished"], m["error"] = "failed", r.Finished, r.Err.Error()
	default:
		m["state"], m["finished"], m["entries"], m["complete"] = "done", r.Finished, r.Entries, r.Complete
	}
	return m
}

var (
	errReloadRunning = errors.New("a reload is already running")
	errAdminClosed   = errors.New("the admin listener is shutting down")
)

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
	if a.cfg.Cache != nil {
		s.misses = a.cfg.Cache.Status().Misses
	}
	if a.cfg.Webhook != nil {
		s.requests = a.cfg.Webhook.m.stats()
		s.lookups, s.found = a.cfg.Webhook.m.location.stats()
	}
	return s
}

func (a *Admin) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// readyz answers 200 once the first load has finished and while the data is fresher than
// StaleAfter, else 503 saying why.
func (a *Admin) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.cfg.Cache == nil || !a.cfg.Cache.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("starting: the first load from the source has not finished\n"))
		return
	}
	if st := a.cfg.Cache.Status(); st.Staleness > a.cfg.StaleAfter {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "stale: no successful refresh for %s (more than WXLOOKUP_STALE_AFTER=%s)", st.Staleness.Truncate(time.Second), a.cfg.StaleAfter)
		if len(st.RecentErrors) > 0 {
			e := st.RecentErrors[0]
			fmt.Fprintf(w, "; last error (%s, %s): %s", e.Step, e.Time.Format(time.RFC3339), e.Err)
		}
		w.Write([]byte("\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

// reload starts a full reload when the request carries the admin bearer token, and answers
// with its outcome when it ends; with ?wait=false it answers 202 at once. Either way the
// reload runs on the Admin's context: a client that gives up (curl -m 30, a proxy's
// timeout) does not cancel a reload half-way, only Close does.
func (a *Admin) reload(w http.ResponseWriter, r *http.Request) {
	if !a.authorised(w, r) {
		return
	}
	wait := true
	if q := r.URL.Query(); q.Has("wait") {
		v, err := strconv.ParseBool(q.Get("wait"))
		if err != nil {
			http.Error(w, fmt.Sprintf("wait must be true or false, not %q", q.Get("wait")), http.StatusBadRequest)
			return
		}
		wait = v
	}
	run, done, err := a.startReload()
	switch {
	case errors.Is(err, errReloadRunning):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if !wait {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/status.json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(run.summary(a.cfg.Now()))
		return
	}
	select {
	case run = <-done:
	case <-r.Context().Done():
		a.cfg.Logger.Info("admin: the client left before the reload ended; it goes on", "started", run.Started)
		return
	}
	if run.Err != nil {
		status := http.StatusInternalServerError
		if errors.Is(run.Err, context.Canceled) {
			status = http.StatusServiceUnavailable // Close cancelled it: shutting down
		}
		http.Error(w, "reload failed: "+run.Err.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"entries": run.Entries, "complete": run.Complete, "seconds": run.took(run.Finished).Seconds()})
}

// startReload starts a reload on the Admin's context and returns its record as it starts
// and a channel that receives the record when it ends. It returns errReloadRunning while a
// reload runs, and errAdminClosed once Close has begun.
func (a *Admin) startReload() (reloadRun, <-chan reloadRun, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.ctx.Err() != nil {
		return reloadRun{}, nil, errAdminClosed
	}
	if a.current != nil && a.current.Finished.IsZero() {
		return reloadRun{}, nil, errReloadRunning
	}
	run := reloadRun{Started: a.cfg.Now()}
	a.current = &run
	done := make(chan reloadRun, 1) // buffered: the request may have gone
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		done <- a.runReload(run)
	}()
	return run, done, nil
}

// runReload runs the reload that startReload recorded as run, logs its outcome and records
// it for the status page.
func (a *Admin) runReload(run reloadRun) reloadRun {
	a.cfg.Logger.Info("admin: reload started")
	run.Err = a.cfg.Cache.Reload(a.ctx)
	if run.Err == nil {
		st := a.cfg.Cache.Status()
		run.Entries, run.Complete = st.Entries, st.Complete
	}
	run.Finished = a.cfg.Now()
	switch {
	case errors.Is(run.Err, context.Canceled) && a.ctx.Err() != nil:
		a.cfg.Logger.Info("admin: reload cancelled: the service is stopping", "took", run.took(run.Finished))
	case run.Err != nil:
		a.cfg.Logger.Error("admin: reload failed", "err", run.Err, "took", run.took(run.Finished))
	default:
		a.cfg.Logger.Info("admin: reload done", "entries", run.Entries, "took", run.took(run.Finished))
	}
	a.reloadMu.Lock()
	a.current = &run
	a.reloadMu.Unlock()
	return run
}

// lastReload returns the running reload, else the last one; ok is false before the first.
func (a *Admin) lastReload() (run reloadRun, ok bool) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.current == nil {
		return reloadRun{}, false
	}
	return *a.current, true
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
