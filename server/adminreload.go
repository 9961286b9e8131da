package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// reloadRun is the record of one reload started by POST /admin/reload: running while
// Finished is zero.
type reloadRun struct {
	Started, Finished time.Time
	Queries           []string // the queries reloaded, in turn
	// Entries and Complete are, after a reload that succeeded, the entries of the
	// reloaded caches summed, and whether each is complete.
	Entries  int64
	Complete bool
	Err      error // why it failed, naming the query; nil if it did not
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
	m := map[string]any{"started": r.Started, "seconds": r.took(now).Seconds(), "queries": r.Queries}
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
	errNoQuery       = errors.New("no live query to reload")
)

// reload starts a full reload of every live query's cache in turn (of one with
// ?query=NAME) when the request carries the admin bearer token, and answers with its
// outcome when it ends; with ?wait=false it answers 202 at once. Either way the
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
	var targets []AdminQuery
	for _, q := range a.queries() {
		if q.Live && (!r.URL.Query().Has("query") || q.Name == r.URL.Query().Get("query")) {
			targets = append(targets, q)
		}
	}
	run, done, err := a.startReload(targets)
	switch {
	case errors.Is(err, errReloadRunning):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case errors.Is(err, errNoQuery):
		http.Error(w, err.Error(), http.StatusNotFound)
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
	json.NewEncoder(w).Encode(map[string]any{"queries": run.Queries,
		"entries": run.Entries, "complete": run.Complete, "seconds": run.took(run.Finished).Seconds()})
}

// startReload starts a reload of the caches of targets, in turn, on the Admin's context and
// returns its record as it starts and a channel that receives the record when it ends. It
// returns errNoQuery without targets, errReloadRunning while a reload runs, and
// errAdminClosed once Close has begun.
func (a *Admin) startReload(targets []AdminQuery) (reloadRun, <-chan reloadRun, error) {
	if len(targets) == 0 {
		return reloadRun{}, nil, errNoQuery
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.ctx.Err() != nil {
		return reloadRun{}, nil, errAdminClosed
	}
	if a.current != nil && a.current.Finished.IsZero() {
		return reloadRun{}, nil, errReloadRunning
	}
	run := reloadRun{Started: a.cfg.Now()}
	for _, q := range targets {
		run.Queries = append(run.Queries, q.Name)
	}
	a.current = &run
	done := make(chan reloadRun, 1) // buffered: the request may have gone
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		done <- a.runReload(run, targets)
	}()
	return run, done, nil
}

// runReload runs the reload that startReload recorded as run, logs its outcome and records
// it for the status page.
func (a *Admin) runReload(run reloadRun, targets []AdminQuery) reloadRun {
	a.cfg.Logger.Info("admin: reload started", "queries", run.Queries)
	run.Complete = true
	for _, q := range targets {
		if err := q.Cache.Reload(a.ctx); err != nil {
			run.Err = fmt.Errorf("query %s: %w", q.Name, err)
			break
		}
		st := q.Cache.Status()
		run.Entries += st.Entries
		run.Complete = run.Complete && st.Complete
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

// ConfigChange is what a configuration reload changed, by query name: queries added (they
// go live when their first load completes), removed (no longer answered), changed (the old
// version answers until the new one has loaded) and unchanged.
type ConfigChange struct {
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
	Changed   []string `json:"changed"`
	Unchanged []string `json:"unchanged"`
}

// reloadConfig re-reads the configuration (AdminConfig.ReloadConfig) when the request
// carries the admin bearer token: 200 with what changed, or 400 with the one line that
// says why the file was refused (the running queries stay). It runs on the Admin's
// context, so a client that leaves does not cancel it half-way.
func (a *Admin) reloadConfig(w http.ResponseWriter, r *http.Request) {
	if !a.authorised(w, r) {
		return
	}
	if a.cfg.ReloadConfig == nil {
		http.Error(w, "configuration reload is not available", http.StatusNotFound)
		return
	}
	if a.ctx.Err() != nil {
		http.Error(w, errAdminClosed.Error(), http.StatusServiceUnavailable)
		return
	}
	change, err := a.cfg.ReloadConfig(a.ctx)
	if err != nil {
		status := http.StatusBadRequest
		if a.ctx.Err() != nil {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), status)
		return
	}
	for _, l := range []*[]string{&change.Added, &change.Removed, &change.Changed, &change.Unchanged} {
		if *l == nil {
			*l = []string{} // [] rather than null
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(change)
}
