package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"wxlookup/cache"
)

// fakeCache is a Cache whose state the test sets.
type fakeCache struct {
	ready   atomic.Bool
	status  cache.Status
	reloads atomic.Int64
	fail    error
}

func (f *fakeCache) Ready() bool          { return f.ready.Load() }
func (f *fakeCache) Status() cache.Status { return f.status }
func (f *fakeCache) Reload(context.Context) error {
	f.reloads.Add(1)
	return f.fail
}

func get(tb testing.TB, h http.Handler, method, path, auth string) (int, string) {
	tb.Helper()
	req := httptest.NewRequest(method, path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
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
	a := NewAdmin(AdminConfig{Token: "s3cret", Gatherer: reg, Cache: fc, Webhook: ts.Server, Version: "v-test"})
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
	if code, body := get(t, a, "GET", "/metrics", ""); code != 200 || !strings.Contains(body, "wxlookup_test_total 0") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	code, body := get(t, a, "GET", "/status", "")
	for _, want := range []string{"1,234", "ready", "connection refused", "<svg", "v-test", "mysql ro@tcp(db:3306)/plant"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/status (%d) lacks %q", code, want)
		}
	}
	if strings.Contains(body, "http://") && strings.Contains(body, "<script src") {
		t.Errorf("/status loads external assets")
	}
	if code, body := get(t, a, "GET", "/status.json", ""); code != 200 || !strings.Contains(body, `"entries": 1234`) {
		t.Errorf("/status.json: %d %s", code, body)
	}
	if code, _ := get(t, a, "GET", "/debug/pprof/", ""); code != 200 {
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
	a := NewAdmin(AdminConfig{Cache: fc})
	if code, _ := get(t, a, "POST", "/admin/reload", "Bearer "); code != http.StatusForbidden {
		t.Errorf("reload without a configured token: %d, want 403", code)
	}
	if fc.reloads.Load() != 0 {
		t.Errorf("reload ran without a configured token")
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
