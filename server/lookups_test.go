package server

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/internal/metrictest"
)

// TestLookupMetrics: every number looked up counts once in
// wxlookup_lookups_total{query,result}, a miss also in wxlookup_not_found_total{query};
// a retry answered from the dedupe window is not looked up again.
func TestLookupMetrics(t *testing.T) {
	ts := startServer(t, Config{}, mapLookup(t, demoRows))
	c := &client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	msg := textXML("?18-546 99-999 a7-001")
	for range 2 { // the second is WeChat's retry
		if r := c.post("/wx", msg); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	c.post("/wx", textXML("帮助")) // help: no lookup
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wxlookup_lookups_total", []string{"query", "location", "result", "found"}, 2},
		{"wxlookup_lookups_total", []string{"query", "location", "result", "not_found"}, 1},
		{"wxlookup_not_found_total", []string{"query", "location"}, 1},
	} {
		if got := metrictest.Value(t, ts.reg, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

// TestStatusServedAndFoundRatios: the status page and /status.json show, over the window,
// the share of lookups served from memory (1 − read-through misses / lookups) and the
// share found (found / lookups), separately.
func TestStatusServedAndFoundRatios(t *testing.T) {
	now := time.Date(2026, 11, 27, 14, 30, 0, 0, time.UTC)
	fc := &fakeCache{status: cache.Status{Ready: true, Complete: true, Entries: 10, Misses: 50}}
	fc.ready.Store(true)
	a := NewAdmin(AdminConfig{Queries: oneQuery(fc), Now: func() time.Time { return now }})
	a.history.add(sample{at: now.Add(-10 * time.Minute)})
	a.history.add(sample{at: now, misses: 50, lookups: 1000, found: 800})
	_, page := get(t, a, "GET", "/status", "")
	for _, want := range []string{"Served from memory</div><div class=\"value\">95.0%", "Found</div><div class=\"value\">80.0%"} {
		if !strings.Contains(page, want) {
			t.Errorf("/status lacks %q", want)
		}
	}
	_, body := get(t, a, "GET", "/status.json", "")
	var js struct {
		Served *float64 `json:"served_from_memory_ratio"`
		Found  *float64 `json:"found_ratio"`
	}
	if err := json.Unmarshal([]byte(body), &js); err != nil || js.Served == nil || js.Found == nil || *js.Served != 0.95 || *js.Found != 0.8 {
		t.Errorf("/status.json: served %v found %v (%v), want 0.95 and 0.8:\n%s", js.Served, js.Found, err, body)
	}
}
