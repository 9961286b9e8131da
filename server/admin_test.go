package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"wxlookup/cache"
	"wxlookup/internal/logtest"
)

// fakeCache is a Cache whose state the test sets.
type fakeCache struct {
	ready   atomic.Bool
	status  cache.Status
	reloads atomic.Int64
	fail    error

	// With hold set (heldCache), Reload signals on entered, waits until the test closes
	// hold or its ctx ends, and then sends ctx.Err() on ended: nil if the reload ran to its
	// end, else how its ctx was cancelled.
	hold    chan struct{}
	entered chan struct{}
	ended   chan error
}

// oneQuery is AdminConfig.Queries for one live query, the implicit one, answered by c.
func oneQuery(c Cache) func() []AdminQuery {
	return func() []AdminQuery { return []AdminQuery{{Name: ImplicitQuery, Cache: c, Live: true}} }
}

func (f *fakeCache) Ready() bool          { return f.ready.Load() }
func (f *fakeCache) Status() cache.Status { return f.status }
func (f *fakeCache) Reload(ctx context.Context) error {
	f.reloads.Add(1)
	if f.hold != nil {
		f.entered <- struct{}{}
		select {
		case <-f.hold:
		case <-ctx.Done():
		}
		f.ended <- ctx.Err()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cache: reload: %w", err)
		}
	}
	return f.fail
}

// heldCache returns a fakeCache of 42 entries whose reloads run until the test closes hold.
// entered and ended have room for more reloads than a test expects, so that a reload
// which should not have started fails the test instead of blocking it.
func heldCache() *fakeCache {
	return &fakeCache{status: cache.Status{Entries: 42, Complete: true},
		hold: make(chan struct{}), entered: make(chan struct{}, 8), ended: make(chan error, 8)}
}

// recv returns what ch receives, failing the test if nothing comes within 10 s: the wait
// for an event that must happen, not a pause that lets one happen.
func recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// serveAsync serves req on h in a goroutine; the channel receives the response once the
// handler has returned.
func serveAsync(h http.Handler, req *http.Request) <-chan *httptest.ResponseRecorder {
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		done <- rec
	}()
	return done
}

// reloadStatus returns the "reload" object of /status.json (nil for null), asking with the
// token the reload tests configure.
func reloadStatus(tb testing.TB, a *Admin) map[string]any {
	tb.Helper()
	code, body := get(tb, a, "GET", "/status.json", "Bearer s3cret")
	var v struct {
		Reload map[string]any `json:"reload"`
	}
	if err := json.Unmarshal([]byte(body), &v); code != http.StatusOK || err != nil {
		tb.Fatalf("/status.json: %d %v: %s", code, err, body)
	}
	return v.Reload
}

// waitReloads waits for the reload goroutines a started. The tests that call it do not
// Start a, so a.wg counts nothing else.
func waitReloads(a *Admin) { a.wg.Wait() }

func get(tb testing.TB, h http.Handler, method, path, auth string) (int, string) {
	tb.Helper()
	req := httptest.NewRequest(method, path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := recv(tb, serveAsync(h, req), method+" "+path+" to answer")
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestAdminRoutes(t *testing.T) {
	fc := &fakeCache{status: cache.Status{Source: "mysql ro@tcp(db:3306)/plant", Entries: 1234, Complete: true,
		MaxBytes: 512 << 20, CostBytes: 300 << 10, Hits: 90, Misses: 10, LastSuccess: time.Now(),
		RecentErrors: []cache.ErrorEvent{{Time: time.Now(), Step: "refresh", Err: "store: changes: connection refused"}}}}
	reg := prometheus.NewRegistry()
	ts := startServer(t, Config{}, mapLookup(t, demoRows))
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "wxlookup_test_total", Help: "t"}))
	a := NewAdmin(AdminConfig{Token: "s3cret", Gatherer: reg, Queries: oneQuery(fc), Webhook: ts.Server, Version: "v-test"})
	a.Start()
	defer a.Close()

	if code, body := get(t, a, "GET", "/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, _ := get(t, a, "GET", "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before warm: %d, want 503", code)
	}
	fc.ready.Store(true)
	if code, _ := get(t, a, "GET", "/readyz", ""); code != 200 {
		t.Errorf("/readyz after warm: %d, want 200", code)
	}
	if code, body := get(t, a, "GET", "/metrics", "Bearer s3cret"); code != 200 || !strings.Contains(body, "wxlookup_test_total 0") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	code, body := get(t, a, "GET", "/status", "Bearer s3cret")
	for _, want := range []string{"1,234", "ready", "connection refused", "<svg", "v-test", "mysql ro@tcp(db:3306)/plant"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/status (%d) lacks %q", code, want)
		}
	}
	if strings.Contains(body, "http://") && strings.Contains(body, "<script src") {
		t.Errorf("/status loads external assets")
	}
	if code, body := get(t, a, "GET", "/status.json", "Bearer s3cret"); code != 200 || !strings.Contains(body, `"entries": 1234`) {
		t.Errorf("/status.json: %d %s", code, body)
	}
	if code, _ := get(t, a, "GET", "/debug/pprof/", "Bearer s3cret"); code != 200 {
		t.Errorf("/debug/pprof/: %d", code)
	}

	// Reload: bearer token only.
	for _, tt := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", 401},
		{"wrong token", "Bearer nope", 401},
		{"basic auth", "Basic czNjcmV0", 401},
		{"right token", "Bearer s3cret", 200},
	} {
		if code, _ := get(t, a, "POST", "/admin/reload", tt.auth); code != tt.want {
			t.Errorf("reload %s: %d, want %d", tt.name, code, tt.want)
		}
	}
	if n := fc.reloads.Load(); n != 1 {
		t.Errorf("%d reloads ran, want 1", n)
	}
	if code, _ := get(t, a, "GET", "/admin/reload", "Bearer s3cret"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /admin/reload: %d, want 405", code)
	}
	fc.fail = errors.New("store: snapshot: connection refused")
	if code, body := get(t, a, "POST", "/admin/reload", "Bearer s3cret"); code != 500 || !strings.Contains(body, "connection refused") {
		t.Errorf("failed reload: %d %q", code, body)
	}
}

func TestAdminActionsOffWithoutToken(t *testing.T) {
	fc := &fakeCache{}
	a := NewAdmin(AdminConfig{Queries: oneQuery(fc)})
	if code, _ := get(t, a, "POST", "/admin/reload", "Bearer "); code != http.StatusForbidden {
		t.Errorf("reload without a configured token: %d, want 403", code)
	}
	if fc.reloads.Load() != 0 {
		t.Errorf("reload ran without a configured token")
	}
}

// TestReloadOutlivesClient: a client that gives up while its reload runs (curl -m 30, a
// proxy's timeout) does not cancel the reload; it runs to its end, is logged, and its
// outcome shows in /status.json.
func TestReloadOutlivesClient(t *testing.T) {
	fc := heldCache()
	var logs logtest.Buffer
	a := NewAdmin(AdminConfig{Token: "s3cret", Queries: oneQuery(fc), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer a.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, "POST", "/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	answered := serveAsync(a, req)
	recv(t, fc.entered, "the reload to start")
	for _, path := range []string{"/admin/reload", "/admin/reload?wait=false"} {
		if code, body := get(t, a, "POST", path, "Bearer s3cret"); code != http.StatusConflict {
			t.Errorf("POST %s while a waited-for reload runs: %d %q, want 409", path, code, body)
		}
	}

	cancel() // the client gives up
	recv(t, answered, "the handler to return once its client left")
	if got := reloadStatus(t, a)["state"]; got != "running" {
		t.Fatalf("after the client left the reload is %v, want running", got)
	}
	close(fc.hold)
	if err := recv(t, fc.ended, "the reload to end"); err != nil {
		t.Fatalf("the reload's ctx ended with %v when the client left; want it to run to its end", err)
	}
	waitReloads(a)
	if rs := reloadStatus(t, a); rs["state"] != "done" || rs["entries"] != 42.0 || rs["complete"] != true {
		t.Errorf("/status.json reload = %v, want done with 42 entries, complete", rs)
	}
	if got := logs.String(); !strings.Contains(got, "admin: reload done") || !strings.Contains(got, "entries=42") {
		t.Errorf("log lacks the reload's outcome:\n%s", got)
	}
	if n := fc.reloads.Load(); n != 1 {
		t.Errorf("%d reloads ran, want 1", n)
	}
}

// TestReloadNoWait: ?wait=false answers 202 while the reload runs; meanwhile another reload
// is refused and the status shows it running; afterwards the status shows its outcome.
func TestReloadNoWait(t *testing.T) {
	fc := heldCache()
	now := time.Date(2026, 11, 27, 14, 30, 5, 0, time.UTC)
	a := NewAdmin(AdminConfig{Token: "s3cret", Queries: oneQuery(fc), Now: func() time.Time { return now }})
	defer a.Close()

	if rs := reloadStatus(t, a); rs != nil {
		t.Errorf("/status.json reload before any = %v, want null", rs)
	}
	req := httptest.NewRequest("POST", "/admin/reload?wait=false", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	rec := recv(t, serveAsync(a, req), "the 202 answer while the reload is held")
	var started struct {
		State   string    `json:"state"`
		Started time.Time `json:"started"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &started); rec.Code != http.StatusAccepted || err != nil ||
		started.State != "running" || !started.Started.Equal(now) {
		t.Errorf("POST ?wait=false: %d %s, want 202 running, started %s", rec.Code, rec.Body, now.Format(time.RFC3339))
	}
	if got := rec.Header().Get("Location"); got != "/status.json" {
		t.Errorf("Location %q, want /status.json", got)
	}
	recv(t, fc.entered, "the reload to start")

	for _, path := range []string{"/admin/reload", "/admin/reload?wait=false"} {
		if code, body := get(t, a, "POST", path, "Bearer s3cret"); code != http.StatusConflict || body != "a reload is already running\n" {
			t.Errorf("POST %s while a reload runs: %d %q, want 409", path, code, body)
		}
	}
	if rs := reloadStatus(t, a); rs["state"] != "running" || rs["started"] != "2026-11-27T14:30:05Z" {
		t.Errorf("/status.json reload while running = %v, want running since 14:30:05", rs)
	}
	if _, body := get(t, a, "GET", "/status", "Bearer s3cret"); !strings.Contains(body, "running since 14:30:05") {
		t.Errorf("/status does not show the running reload")
	}

	now = now.Add(7 * time.Second) // before the release: the reload goroutine reads now after it
	close(fc.hold)
	if err := recv(t, fc.ended, "the reload to end"); err != nil {
		t.Fatalf("the reload's ctx ended with %v, want it to run to its end", err)
	}
	waitReloads(a)
	if rs := reloadStatus(t, a); rs["state"] != "done" || rs["entries"] != 42.0 || rs["seconds"] != 7.0 ||
		rs["finished"] != "2026-11-27T14:30:12Z" {
		t.Errorf("/status.json reload after it ended = %v, want done at 14:30:12 in 7 s with 42 entries", rs)
	}
	if _, body := get(t, a, "GET", "/status", "Bearer s3cret"); !strings.Contains(body, "done at 2026-11-27 14:30:12 in 7s: 42 entries") {
		t.Errorf("/status does not show the reload's outcome")
	}
	if n := fc.reloads.Load(); n != 1 {
		t.Errorf("%d reloads ran, want 1", n)
	}
}

func TestReloadWaitParameter(t *testing.T) {
	for _, tt := range []struct {
		name, query string
		want        int
		reloads     int64
	}{
		{"absent", "", http.StatusOK, 1},
		{"true", "?wait=true", http.StatusOK, 1},
		{"false", "?wait=false", http.StatusAccepted, 1},
		{"0", "?wait=0", http.StatusAccepted, 1},
		{"bogus", "?wait=bogus", http.StatusBadRequest, 0},
		{"yes", "?wait=yes", http.StatusBadRequest, 0},
		{"empty", "?wait=", http.StatusBadRequest, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fc := &fakeCache{status: cache.Status{Entries: 7, Complete: true}}
			a := NewAdmin(AdminConfig{Token: "s3cret", Queries: oneQuery(fc)})
			defer a.Close()
			code, body := get(t, a, "POST", "/admin/reload"+tt.query, "Bearer s3cret")
			waitReloads(a)
			if code != tt.want {
				t.Errorf("got %d %q, want %d", code, body, tt.want)
			}
			if tt.want == http.StatusBadRequest && !strings.Contains(body, "wait must be true or false") {
				t.Errorf("got %q, want it to say what wait may be", body)
			}
			if n := fc.reloads.Load(); n != tt.reloads {
				t.Errorf("%d reloads ran, want %d", n, tt.reloads)
			}
		})
	}
}

// TestAdminCloseCancelsReload: Close cancels a running reload, whether a request waits for
// it or not, and returns only once its goroutine has ended, having recorded the outcome; no
// reload starts after.
func TestAdminCloseCancelsReload(t *testing.T) {
	for _, wait := range []bool{true, false} {
		t.Run(fmt.Sprintf("wait=%t", wait), func(t *testing.T) { testAdminCloseCancelsReload(t, wait) })
	}
}

func testAdminCloseCancelsReload(t *testing.T, wait bool) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fc := heldCache()
	a := NewAdmin(AdminConfig{Token: "s3cret", Queries: oneQuery(fc), Logger: slog.New(slog.DiscardHandler)})
	req := httptest.NewRequest("POST", fmt.Sprintf("/admin/reload?wait=%t", wait), nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	answered := serveAsync(a, req)
	if !wait {
		if rec := recv(t, answered, "the 202 answer"); rec.Code != http.StatusAccepted {
			t.Fatalf("POST ?wait=false: %d %q, want 202", rec.Code, rec.Body)
		}
	}
	recv(t, fc.entered, "the reload to start")

	// The record is read in the goroutine that called Close, the moment Close returns: a
	// Close that did not wait would return while the reload goroutine is still winding down.
	closed := make(chan reloadRun, 1)
	go func() {
		a.Close()
		run, _ := a.lastReload()
		closed <- run
	}()
	if err := recv(t, fc.ended, "Close to cancel the reload"); !errors.Is(err, context.Canceled) {
		t.Errorf("the reload's ctx ended with %v, want context.Canceled", err)
	}
	run := recv(t, closed, "Close to return")
	if run.Finished.IsZero() || !errors.Is(run.Err, context.Canceled) {
		t.Errorf("when Close returned the reload was %+v, want finished with context.Canceled", run)
	}
	if wait {
		if rec := recv(t, answered, "the reload's answer"); rec.Code != http.StatusServiceUnavailable ||
			!strings.Contains(rec.Body.String(), "reload failed: query location: cache: reload: context canceled") {
			t.Errorf("the waiting request got %d %q, want 503 reload failed: … context canceled", rec.Code, rec.Body)
		}
	}
	if code, _ := get(t, a, "POST", "/admin/reload", "Bearer s3cret"); code != http.StatusServiceUnavailable {
		t.Errorf("reload after Close: %d, want 503", code)
	}
	if n := fc.reloads.Load(); n != 1 {
		t.Errorf("%d reloads ran, want 1", n)
	}
}

func TestQuantiles(t *testing.T) {
	bounds := []float64{0.001, 0.002, 0.004}
	from := requestStats{count: 0, buckets: []uint64{0, 0, 0}, bounds: bounds}
	to := requestStats{count: 100, buckets: []uint64{50, 90, 100}, bounds: bounds}
	p50, p99, ok := quantiles(from, to)
	if !ok || p50 != 0.001 || p99 < 0.002 || p99 > 0.004 {
		t.Fatalf("got p50=%v p99=%v ok=%v, want 0.001 and within (0.002, 0.004]", p50, p99, ok)
	}
	if _, _, ok := quantiles(to, to); ok {
		t.Fatalf("no requests in the window must give no quantiles")
	}
}

// TestAdminTokenGuardsAllButProbes: with a token set, every admin route but /healthz and
// /readyz answers 401 without it (or with a wrong one, a prefix of it, or it with a byte
// more), and serves with it, as a bearer token or as the password of basic auth (so a
// browser can show /status); without a token everything but the admin actions is open
// (the listener is then loopback-only: cmd refuses anything else).
func TestAdminTokenGuardsAllButProbes(t *testing.T) {
	const token = "s3cret-admin-token"
	fc := &fakeCache{status: cache.Status{Entries: 7, Complete: true, Ready: true}}
	fc.ready.Store(true)
	guarded := []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/status"}, {"GET", "/status.json"}, {"GET", "/"},
		{"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/cmdline"}, {"GET", "/debug/pprof/symbol"},
		{"POST", "/admin/reload"}, {"GET", "/no/such/page"},
	}
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	a := NewAdmin(AdminConfig{Token: token, Queries: oneQuery(fc)})
	defer a.Close()
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, a, "GET", p, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: got %d, want 200", p, code)
		}
	}
	for _, r := range guarded {
		for _, auth := range []string{"", "Bearer ", "Bearer wrong", "Bearer " + token[:len(token)-1], "Bearer " + token + "x",
			"bearer" + token, "Basic " + token, basic("admin", "wrong"), "Token " + token} {
			code, body := get(t, a, r.method, r.path, auth)
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s with Authorization %q: got %d, want 401", r.method, r.path, auth, code)
			}
			if strings.Contains(body, token) {
				t.Errorf("%s %s: the 401 shows the token", r.method, r.path)
			}
		}
		for _, auth := range []string{"Bearer " + token, basic("admin", token), basic("", token)} {
			if code, _ := get(t, a, r.method, r.path, auth); code == http.StatusUnauthorized || code == http.StatusForbidden {
				t.Errorf("%s %s with the token (%s): got %d, want it served", r.method, r.path, strings.Fields(auth)[0], code)
			}
		}
	}
	waitReloads(a)
	rec := recv(t, serveAsync(a, httptest.NewRequest("GET", "/metrics", nil)), "/metrics")
	if got := rec.Header().Values("WWW-Authenticate"); len(got) != 2 || !strings.HasPrefix(got[0], "Bearer") || !strings.HasPrefix(got[1], "Basic") {
		t.Errorf("WWW-Authenticate %q, want a Bearer and a Basic challenge", got)
	}

	open := NewAdmin(AdminConfig{Queries: oneQuery(fc)})
	defer open.Close()
	for _, p := range []string{"/metrics", "/status", "/status.json", "/debug/pprof/"} {
		if code, _ := get(t, open, "GET", p, ""); code != http.StatusOK {
			t.Errorf("GET %s without a configured token: got %d, want 200", p, code)
		}
	}
	if code, _ := get(t, open, "POST", "/admin/reload", "Bearer "); code != http.StatusForbidden {
		t.Errorf("POST /admin/reload without a configured token: got %d, want 403", code)
	}
}
