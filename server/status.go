package server

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"wxlookup/cache"
)

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": formatBytes,
	"ago":   formatAgo,
	"pct":   func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
	"ms":    func(f float64) string { return fmt.Sprintf("%.2f ms", f*1000) },
	"num":   formatCount,
}).Parse(statusHTML))

// sample is one reading of the counters the status page charts: the numbers looked up and
// found (the webhook's), the lookups that had to read through to the source (the cache's
// misses), and the request latencies.
type sample struct {
	at             time.Time
	lookups, found uint64
	misses         uint64
	requests       requestStats
}

// history is a ring of samples covering the last hour. Safe for concurrent use.
type history struct {
	mu      sync.Mutex
	samples []sample
	next    int
	full    bool
}

func newHistory(n int) *history {
	return &history{samples: make([]sample, max(n, 2)+1)}
}

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples[h.next] = s
	h.next = (h.next + 1) % len(h.samples)
	if h.next == 0 {
		h.full = true
	}
}

// all returns the samples oldest first.
func (h *history) all() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return append([]sample(nil), h.samples[:h.next]...)
	}
	return append(append([]sample(nil), h.samples[h.next:]...), h.samples[:h.next]...)
}

// statusView is what the status page shows: the service as a whole, then each query.
type statusView struct {
	Version string
	Now     time.Time
	Uptime  time.Duration
	// Ready is set when every live query has completed its first load (and there is
	// one); Stale, Failing and Incomplete when a live query is (see queryView).
	Ready, Stale, Failing, Incomplete bool
	StaleAfter                        time.Duration
	// Served is the share of lookups answered from memory, 1 − read-through misses /
	// lookups, and Found the share found, both over the charted window and every query;
	// RatiosOK is false when there were no lookups.
	Served, Found float64
	RatiosOK      bool
	Rate          float64 // requests per second over the last minute
	P50, P99      float64 // seconds, over the last minute
	LatencyOK     bool
	Window        time.Duration
	Chart         template.HTML
	Reload        *reloadRun    // the running admin reload, else the last one; nil before the first
	ReloadTook    time.Duration // how long it took, or has run so far
	Queries       []queryView
}

// queryView is one query's section of the status page.
type queryView struct {
	Name string
	// Live is false while a query a configuration reload added warms (not yet answered).
	Live, Ready bool
	Cache       cache.Status
	Fill        float64 // CostBytes / MaxBytes
	// Stale is set when the data is older than StaleAfter (/readyz answers 503): red.
	// Failing is set, short of that, while the loader has failed since its last success:
	// amber. LastError is the newest loader error, if any.
	Stale, Failing bool
	LastError      *cache.ErrorEvent
	// Lookups and Found count the numbers this query looked up, and found, since start.
	Lookups, Found uint64
	// NotFound is the query's not-found report, most asked first.
	NotFound []NotFoundKey
}

func (a *Admin) view() statusView {
	now := a.cfg.Now()
	v := statusView{Version: a.cfg.Version, Now: now, Uptime: now.Sub(a.started).Truncate(time.Second), StaleAfter: a.cfg.StaleAfter}
	anyLive, allReady := false, true
	for _, q := range a.queries() {
		qv := a.queryView(q)
		v.Queries = append(v.Queries, qv)
		if !q.Live {
			continue
		}
		anyLive, allReady = true, allReady && qv.Ready
		v.Stale = v.Stale || qv.Stale
		v.Failing = v.Failing || qv.Failing
		v.Incomplete = v.Incomplete || (qv.Ready && !qv.Cache.Complete)
	}
	v.Ready = anyLive && allReady
	// The history plus a reading taken now, so the page is current between samples.
	samples := a.history.all()
	if cur := a.read(); len(samples) == 0 || cur.at.Sub(samples[len(samples)-1].at) >= time.Second {
		samples = append(samples, cur)
	}
	if n := len(samples); n >= 2 {
		first, last := samples[0], samples[n-1]
		v.Window = last.at.Sub(first.at).Round(time.Second)
		v.Served, v.Found, v.RatiosOK = ratios(first, last)
		// Rate and latency over the last minute (or what the history has of it).
		base := first
		for _, s := range samples {
			if last.at.Sub(s.at) <= time.Minute {
				base = s
				break
			}
		}
		if dt := last.at.Sub(base.at).Seconds(); dt > 0 {
			v.Rate = float64(delta(base.requests.count, last.requests.count)) / dt
		}
		if p50, p99, ok := quantiles(base.requests, last.requests); ok {
			v.P50, v.P99, v.LatencyOK = p50, p99, true
		}
	}
	v.Chart = ratioChart(samples)
	if run, ok := a.lastReload(); ok {
		v.Reload, v.ReloadTook = &run, run.took(now).Round(100*time.Millisecond)
		if run.Finished.IsZero() {
			v.ReloadTook = run.took(now).Truncate(time.Second) // the page refreshes every 10 s
		}
	}
	return v
}

// queryView reads one query's section.
func (a *Admin) queryView(q AdminQuery) queryView {
	qv := queryView{Name: q.Name, Live: q.Live, Ready: q.Cache.Ready(), Cache: q.Cache.Status()}
	if qv.Cache.MaxBytes > 0 {
		qv.Fill = float64(qv.Cache.CostBytes) / float64(qv.Cache.MaxBytes)
	}
	qv.Stale = qv.Ready && qv.Cache.Staleness > a.cfg.StaleAfter
	if errs := qv.Cache.RecentErrors; len(errs) > 0 {
		qv.LastError = &errs[0]
		qv.Failing = qv.Ready && !qv.Stale && errs[0].Time.After(qv.Cache.LastSuccess)
	}
	if wh := a.cfg.Webhook; wh != nil {
		qv.Lookups, qv.Found = wh.m.query(q.Name).stats()
		qv.NotFound = wh.notFoundTop(q.Name)
	}
	return qv
}

func (a *Admin) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	if err := statusTmpl.Execute(w, a.view()); err != nil {
		a.cfg.Logger.Error("admin: status page", "err", err)
	}
}

// statusJSON serves the status page's figures for scripts: the service's, the live queries'
// summed (entries, sizes) or worst (staleness, oldest success), their loader errors merged
// newest first, and under "queries" each query's own, with its not-found report.
func (a *Admin) statusJSON(w http.ResponseWriter, _ *http.Request) {
	v := a.view()
	var entries, cost, maxBytes int64
	var staleness time.Duration
	var lastSuccess time.Time
	complete := true
	errs := []errorJSON{}
	queries := make([]map[string]any, 0, len(v.Queries))
	for _, q := range v.Queries {
		queries = append(queries, queryJSON(q))
		if !q.Live {
			continue
		}
		entries, cost, maxBytes = entries+q.Cache.Entries, cost+q.Cache.CostBytes, maxBytes+q.Cache.MaxBytes
		complete = complete && q.Cache.Complete
		staleness = max(staleness, q.Cache.Staleness)
		if lastSuccess.IsZero() || q.Cache.LastSuccess.Before(lastSuccess) {
			lastSuccess = q.Cache.LastSuccess
		}
		errs = append(errs, errorsJSON(q.Name, q.Cache.RecentErrors)...)
	}
	slices.SortStableFunc(errs, func(x, y errorJSON) int { return y.Time.Compare(x.Time) })
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(map[string]any{
		"version": v.Version, "ready": v.Ready, "uptime_seconds": v.Uptime.Seconds(),
		"complete": complete && len(v.Queries) > 0, "entries": entries, "cost_bytes": cost, "max_bytes": maxBytes,
		"served_from_memory_ratio": nullable(v.Served, v.RatiosOK), "found_ratio": nullable(v.Found, v.RatiosOK),
		"requests_per_second": v.Rate,
		"p50_seconds":         nullable(v.P50, v.LatencyOK), "p99_seconds": nullable(v.P99, v.LatencyOK),
		"last_success": nullableTime(lastSuccess), "staleness_seconds": staleness.Seconds(),
		"recent_errors": errs, "reload": reloadJSON(v.Reload, v.Now),
		"stale": v.Stale, "stale_after_seconds": v.StaleAfter.Seconds(), "refresh_failing": v.Failing,
		"queries": queries,
	})
}

// queryJSON is one query's figures for /status.json.
func queryJSON(q queryView) map[string]any {
	st := q.Cache
	nf := q.NotFound
	if nf == nil {
		nf = []NotFoundKey{}
	}
	return map[string]any{
		"name": q.Name, "live": q.Live, "ready": q.Ready,
		"source": st.Source, "complete": st.Complete, "entries": st.Entries,
		"cost_bytes": st.CostBytes, "max_bytes": st.MaxBytes,
		"lookups": q.Lookups, "found": q.Found,
		"last_success": nullableTime(st.LastSuccess), "staleness_seconds": st.Staleness.Seconds(),
		"stale": q.Stale, "refresh_failing": q.Failing, "recent_errors": errorsJSON("", st.RecentErrors),
		"change_feed": st.Mode, "position": st.Position,
		"lag_seconds":      nullable(st.Lag.Seconds(), st.Mode == cache.ModeBinlog && st.Position != ""),
		"reconcile_ranges": st.Ranges, "last_reconcile": nullableTime(st.LastReconcile),
		"not_found": nf,
	}
}

// nullableTime is t, or JSON null when it is the zero time (never happened).
func nullableTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// errorJSON is a loader error as /status.json shows it: keys in snake_case, like every
// other key there; at the top level it names its query.
type errorJSON struct {
	Query string    `json:"query,omitempty"`
	Time  time.Time `json:"time"`
	Step  string    `json:"step"`
	Error string    `json:"error"`
}

// errorsJSON is the recent loader errors of query for /status.json, newest first; [] when
// none.
func errorsJSON(query string, events []cache.ErrorEvent) []errorJSON {
	out := make([]errorJSON, 0, len(events))
	for _, e := range events {
		out = append(out, errorJSON{Query: query, Time: e.Time, Step: e.Step, Error: e.Err})
	}
	return out
}

// reloadJSON is the admin reload's record for /status.json: null before the first.
func reloadJSON(run *reloadRun, now time.Time) any {
	if run == nil {
		return nil
	}
	return run.summary(now)
}

// ratios returns the shares of the lookups between two readings that were served from
// memory (1 − read-through misses / lookups) and found; ok is false without lookups.
func ratios(from, to sample) (served, found float64, ok bool) {
	n := delta(from.lookups, to.lookups)
	if n == 0 {
		return 0, 0, false
	}
	misses := min(delta(from.misses, to.misses), n)
	return 1 - float64(misses)/float64(n), float64(min(delta(from.found, to.found), n)) / float64(n), true
}

// delta is how much a counter rose from a to b; a counter that went back (a restart, or a
// reading without that counter) counts from zero.
func delta(a, b uint64) uint64 {
	if b < a {
		return b
	}
	return b - a
}

func nullable(f float64, ok bool) any {
	if !ok {
		return nil
	}
	return f
}

// quantiles estimates p50 and p99 of the requests between two readings of the duration
// histogram, interpolating linearly inside a bucket (as Prometheus' histogram_quantile).
func quantiles(from, to requestStats) (p50, p99 float64, ok bool) {
	if len(to.buckets) == 0 || len(from.buckets) != len(to.buckets) || from.count > to.count {
		from = requestStats{buckets: make([]uint64, len(to.buckets))}
	}
	total := to.count - from.count
	if total == 0 {
		return 0, 0, false
	}
	q := func(phi float64) float64 {
		rank := phi * float64(total)
		lower, prev := 0.0, 0.0
		for i, b := range to.bounds {
			c := float64(to.buckets[i] - from.buckets[i])
			if c >= rank {
				if c == prev {
					return b
				}
				return lower + (b-lower)*(rank-prev)/(c-prev)
			}
			lower, prev = b, c
		}
		return to.bounds[len(to.bounds)-1] // beyond the last bound: report the bound
	}
	return q(0.50), q(0.99), true
}

// ratioChart draws, per sample interval, the share of lookups served from memory and the
// share found as a line chart: an inline SVG that stretches to the page's width, with the
// axis labels in HTML around it, so that they keep their size (readable on a phone and on
// a desktop alike) where SVG text would scale with the chart. The page's legend names the
// two lines.
func ratioChart(samples []sample) template.HTML {
	const w, h, pad = 600.0, 160.0, 8.0 // the SVG's user units; it is stretched to the box
	y := func(ratio float64) float64 { return pad + (h-2*pad)*(1-ratio) }
	var b strings.Builder
	b.WriteString(`<div class="chart" role="img" aria-label="Lookups served from memory and found, last hour"><div class="yaxis">`)
	for _, g := range []float64{1, 0.5, 0} {
		fmt.Fprintf(&b, `<span class="axis" style="top:%.1f%%">%.0f%%</span>`, y(g)/h*100, g*100)
	}
	fmt.Fprintf(&b, `</div><svg viewBox="0 0 %.0f %.0f" preserveAspectRatio="none" aria-hidden="true">`, w, h)
	for _, g := range []float64{0, 0.5, 1} {
		fmt.Fprintf(&b, `<line x1="0" y1="%.1f" x2="%.0f" y2="%.1f" class="grid"/>`, y(g), w, y(g))
	}
	if len(samples) >= 2 {
		end := samples[len(samples)-1].at
		span := time.Hour.Seconds()
		for _, line := range []struct {
			class string
			value func(served, found float64) float64
		}{
			{"served", func(s, _ float64) float64 { return s }},
			{"found", func(_, f float64) float64 { return f }},
		} {
			var pts []string
			flush := func() {
				switch {
				case len(pts) == 1: // a lone reading: a short tick, as a circle would stretch
					x, y, _ := strings.Cut(pts[0], ",")
					fmt.Fprintf(&b, `<polyline points="%s,%s %s,%s" class="line %s"/>`, x, y, x, y, line.class)
				case len(pts) > 1:
					fmt.Fprintf(&b, `<polyline points="%s" class="line %s"/>`, strings.Join(pts, " "), line.class)
				}
				pts = pts[:0]
			}
			for i := 1; i < len(samples); i++ {
				served, found, ok := ratios(samples[i-1], samples[i])
				if !ok {
					flush() // a gap: no lookups in this interval
					continue
				}
				x := w * (1 - end.Sub(samples[i].at).Seconds()/span)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", math.Max(x, 0), y(line.value(served, found))))
			}
			flush()
		}
	}
	b.WriteString(`</svg><div class="xaxis"><span class="axis">−60 min</span><span class="axis">now</span></div></div>`)
	return template.HTML(b.String())
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func formatAgo(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds ago", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%s ago", d.Truncate(time.Minute))
}

func formatCount(n any) string {
	var v uint64
	switch n := n.(type) {
	case int64:
		v = uint64(max(n, 0))
	case uint64:
		v = n
	case int:
		v = uint64(max(n, 0))
	}
	s := fmt.Sprint(v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
