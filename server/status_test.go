package server

import (
	"context"
	"flag"
	"image"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
)

var screenshotOut = flag.String("status-screenshot", "", "also write the status page screenshot to this file (e.g. ../docs/status.png)")

// statusAdmin returns an admin handler over a cache with an hour of history: a hit ratio
// that dips in the middle, and a recent loader error.
func statusAdmin(tb testing.TB) *Admin {
	tb.Helper()
	now := time.Date(2026, 11, 27, 14, 30, 0, 0, time.Local)
	fc := &fakeCache{status: cache.Status{
		Source: "mysql wxlookup_ro@tcp(db.plant.local:3306)/plant table workpiece_location", Ready: true,
		Complete: true, Entries: 1_000_000, CostBytes: 231 << 20, MaxBytes: 512 << 20,
		Hits: 0, Misses: 0, RowsLoaded: 1_004_212, Errors: 3,
		LastSuccess: now.Add(-800 * time.Millisecond), LastAttempt: now.Add(-800 * time.Millisecond),
		Staleness: 800 * time.Millisecond, LastReload: now.Add(-50 * time.Minute), ReloadDuration: 2300 * time.Millisecond,
		RecentErrors: []cache.ErrorEvent{
			{Time: now.Add(-12 * time.Minute), Step: "refresh", Err: "store: changes since 2026-11-27 14:17:58: dial tcp 10.0.0.5:3306: connect: connection refused"},
		},
	}}
	fc.ready.Store(true)
	a := NewAdmin(AdminConfig{Cache: fc, Version: "v1.0.0", Now: func() time.Time { return now }})
	// The last full load was a POST /admin/reload.
	a.current = &reloadRun{Started: fc.status.LastReload.Add(-fc.status.ReloadDuration), Finished: fc.status.LastReload,
		Entries: fc.status.Entries, Complete: true}
	// An hour of samples: 200 lookups per 10 s, 93% found; all served from memory but
	// during a 5-minute dip when 30% read through to MySQL.
	var lookups, found, misses uint64
	var reqs uint64
	bounds := []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025}
	for i := 360; i >= 0; i-- {
		lookups += 200
		found += 186
		if i > 150 && i < 180 {
			misses += 60
		}
		reqs += 150
		buckets := []uint64{reqs * 6 / 10, reqs * 9 / 10, reqs * 99 / 100, reqs, reqs}
		a.history.add(sample{at: now.Add(-time.Duration(i) * 10 * time.Second), lookups: lookups, found: found, misses: misses,
			requests: requestStats{count: reqs, buckets: buckets, bounds: bounds}})
	}
	fc.status.Hits, fc.status.Misses = lookups-misses, misses
	// The page samples the cache once more when drawn; keep that sample in line.
	a.cfg.Webhook = nil
	return a
}

func TestStatusPageContent(t *testing.T) {
	a := statusAdmin(t)
	code, body := get(t, a, "GET", "/status", "")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{"1,000,000", "231.0 MiB", "of 512.0 MiB", "connection refused", "<polyline", "ready", "v1.0.0",
		"done at 2026-11-27 13:40:00 in 2.3s: 1,000,000 entries"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	for _, external := range []string{"<script", "<link", "src=\"http", "url(http"} {
		if strings.Contains(body, external) {
			t.Errorf("status page loads something external (%q); it must be self-contained", external)
		}
	}
}

// TestStatusPageInChromium renders /status in a real headless Chromium at a phone's width
// and checks what it shows: the rendered DOM has the figures and the chart, and the
// screenshot is a page, not a blank.
func TestStatusPageInChromium(t *testing.T) {
	bin, err := chromiumPath()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: statusAdmin(t), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	url := "http://" + ln.Addr().String() + "/status"

	dir := t.TempDir()
	shot := filepath.Join(dir, "status.png")
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + filepath.Join(dir, "profile"),
			"--window-size=390,1400", "--lang=zh-CN"}
		out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return out
	}

	dom := string(run("--dump-dom", url))
	for _, want := range []string{"1,000,000", "Lookups served from memory and found, last hour", "<polyline", "connection refused"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}

	run("--screenshot="+shot, url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 390 {
		t.Errorf("screenshot %dx%d, want 390 wide (a phone)", b.Dx(), b.Dy())
	}
	if n := distinctColours(img); n < 20 {
		t.Errorf("screenshot has %d distinct colours: the page did not render", n)
	}
	if *screenshotOut != "" {
		data, _ := os.ReadFile(shot)
		if err := os.WriteFile(*screenshotOut, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func chromiumPath() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: "chromium", Err: exec.ErrNotFound}
}

func distinctColours(img image.Image) int {
	seen := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	return len(seen)
}

// TestStaleIsNotGreen: while refreshes keep failing, /readyz turns 503 and the status page
// red, with the last error, once the data is older than the threshold (60 s by default);
// before that, refreshes failing since the last success show amber and /readyz stays 200.
func TestStaleIsNotGreen(t *testing.T) {
	now := time.Date(2026, 11, 27, 14, 30, 0, 0, time.UTC)
	lastErr := cache.ErrorEvent{Time: now.Add(-2 * time.Second), Step: "refresh",
		Err: "store: changes since 14:28:30: dial tcp 127.0.0.1:3306: connect: connection refused"}
	tests := []struct {
		name      string
		staleness time.Duration
		errs      []cache.ErrorEvent
		readyz    int
		badge     string // the header's badge
		json      string // "stale" in /status.json
	}{
		{"fresh", 800 * time.Millisecond, nil, http.StatusOK, `<span class="badge ok">ready</span>`, `"stale": false`},
		{"failing, not yet stale", 20 * time.Second, []cache.ErrorEvent{lastErr}, http.StatusOK,
			`<span class="badge warn">refresh failing</span>`, `"stale": false`},
		{"stale beyond the default 60s", 90 * time.Second, []cache.ErrorEvent{lastErr}, http.StatusServiceUnavailable,
			`<span class="badge bad">stale</span>`, `"stale": true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := &fakeCache{status: cache.Status{Ready: true, Complete: true, Entries: 10,
				LastSuccess: now.Add(-tt.staleness), Staleness: tt.staleness, RecentErrors: tt.errs}}
			fc.ready.Store(true)
			a := NewAdmin(AdminConfig{Cache: fc, Now: func() time.Time { return now }})
			code, body := get(t, a, "GET", "/readyz", "")
			if code != tt.readyz {
				t.Errorf("/readyz: got %d %q, want %d", code, body, tt.readyz)
			}
			if tt.readyz != http.StatusOK && (!strings.Contains(body, "WXLOOKUP_STALE_AFTER") || !strings.Contains(body, "connection refused")) {
				t.Errorf("/readyz body %q, want the threshold's setting and the last error", body)
			}
			_, page := get(t, a, "GET", "/status", "")
			if !strings.Contains(page, tt.badge) {
				t.Errorf("/status lacks the badge %q", tt.badge)
			}
			if tt.readyz != http.StatusOK && !strings.Contains(page, `<div class="alert bad">`) {
				t.Errorf("/status shows no red alert while stale")
			}
			if tt.errs != nil && !strings.Contains(page, "connection refused") {
				t.Errorf("/status does not show the last error")
			}
			if _, js := get(t, a, "GET", "/status.json", ""); !strings.Contains(js, tt.json) {
				t.Errorf("/status.json lacks %s:\n%s", tt.json, js)
			}
		})
	}
	// The threshold is a setting.
	fc := &fakeCache{status: cache.Status{Ready: true, Complete: true, Staleness: 20 * time.Second}}
	fc.ready.Store(true)
	a := NewAdmin(AdminConfig{Cache: fc, StaleAfter: 10 * time.Second})
	if code, _ := get(t, a, "GET", "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz 20 s stale with StaleAfter 10s: got %d, want 503", code)
	}
}
