package server

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"image"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
)

var screenshotOut = flag.String("status-screenshot", "", "also write the status page screenshots to this file (the phone's, e.g. ../docs/status.png) and beside it with -desktop")

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
	a := NewAdmin(AdminConfig{Queries: oneQuery(fc), Version: "v1.0.0", Now: func() time.Time { return now }})
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

// probePage wraps /status in a frame of the viewport's size and, once it has loaded,
// writes into #result what the browser laid out: every text box that overflows its box
// (scrollWidth beyond clientWidth), every chart label outside the chart or smaller than
// minFont CSS pixels, and the page's width beyond the viewport's.
const probePage = `<!doctype html><html><head><meta charset="utf-8"><style>
html, body { margin:0; padding:0; overflow:hidden; } iframe { border:0; display:block; }
</style></head><body><iframe id="f" src="/status" width="%[1]d" height="%[2]d"></iframe>
<pre id="result">pending</pre>
<script>
document.getElementById('f').addEventListener('load', function () {
  const d = this.contentDocument, w = this.contentWindow, problems = [];
  const name = el => el.tagName.toLowerCase() + (el.className && el.className.baseVal === undefined ? '.' + el.className : '') + ' "' + (el.textContent || '').trim().slice(0, 30) + '"';
  for (const el of d.body.querySelectorAll('*')) {
    if (el.closest('svg') || el.clientWidth === 0) continue;
    if (el.scrollWidth > el.clientWidth + 1 && w.getComputedStyle(el).overflowX !== 'auto') {
      problems.push('overflows its box: ' + name(el) + ' scrollWidth ' + el.scrollWidth + ' > clientWidth ' + el.clientWidth);
    }
  }
  // Chart labels: HTML (.chart .axis) or SVG text, inside their chart, readable, apart.
  const labels = [...d.querySelectorAll('.chart .axis, svg text')];
  for (const t of labels) {
    const chart = t.closest('.chart') || t.closest('svg'), box = chart.getBoundingClientRect(), r = t.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5) {
      problems.push('chart label outside the chart: ' + name(t) + ' ' + JSON.stringify([r.left, r.top, r.right, r.bottom]) + ' in ' + JSON.stringify([box.left, box.top, box.right, box.bottom]));
    }
    const svg = t.closest('svg');
    const px = parseFloat(w.getComputedStyle(t).fontSize) * (svg ? svg.getBoundingClientRect().width / svg.viewBox.baseVal.width : 1);
    if (px < %[3]d) problems.push('chart label too small to read: ' + name(t) + ' ' + px.toFixed(1) + 'px');
    for (const u of labels) {
      const q = u.getBoundingClientRect();
      if (u !== t && t.compareDocumentPosition(u) & Node.DOCUMENT_POSITION_FOLLOWING && r.left < q.right && q.left < r.right && r.top < q.bottom && q.top < r.bottom) {
        problems.push('chart labels overlap: ' + name(t) + ' and ' + name(u));
      }
    }
  }
  if (d.documentElement.scrollWidth > %[1]d) problems.push('page wider than the viewport: ' + d.documentElement.scrollWidth);
  document.getElementById('result').textContent = JSON.stringify({labels: labels.length, problems: problems});
});
</script></body></html>`

// TestStatusPageInChromium renders /status in a real headless Chromium on a desktop
// (1280×800) and a phone (390 wide) and checks what it shows: the rendered DOM has the
// figures and the chart; no text overflows its box, every chart label lies inside the
// chart and is at least 11 CSS pixels high; the screenshot is a page, not a blank.
func TestStatusPageInChromium(t *testing.T) {
	bin, err := chromiumPath()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", statusAdmin(t))
	mux.HandleFunc("/probe", func(w http.ResponseWriter, r *http.Request) {
		var width, height int
		fmt.Sscanf(r.URL.Query().Get("size"), "%dx%d", &width, &height)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, probePage, width, height, 11)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	base := "http://" + ln.Addr().String()

	for _, vp := range []struct {
		name          string
		width, height int
		shot          string // where -status-screenshot writes it: "" for the flag's own path
	}{
		{"desktop", 1280, 800, "desktop"},
		{"phone", 390, 1400, ""},
	} {
		t.Run(vp.name, func(t *testing.T) {
			dir := t.TempDir()
			run := func(args ...string) []byte {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
					"--disable-background-networking", "--disable-component-update", "--disable-sync",
					"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + filepath.Join(dir, "profile"),
					fmt.Sprintf("--window-size=%d,%d", vp.width, vp.height), "--lang=zh-CN"}
				out, err := exec.CommandContext(ctx, bin, append(flags, args...)...).Output()
				if err != nil {
					t.Fatalf("chromium %v: %v", args, err)
				}
				return out
			}

			dom := string(run("--dump-dom", base+"/status"))
			for _, want := range []string{"1,000,000", "Lookups served from memory and found, last hour", "<polyline", "connection refused"} {
				if !strings.Contains(dom, want) {
					t.Errorf("rendered page lacks %q", want)
				}
			}

			probe := string(run("--virtual-time-budget=3000", "--dump-dom", fmt.Sprintf("%s/probe?size=%dx%d", base, vp.width, vp.height)))
			i, j := strings.Index(probe, `<pre id="result">`), strings.Index(probe, "</pre>")
			if i < 0 || j < i {
				t.Fatalf("the probe wrote no result:\n%s", probe)
			}
			var res struct {
				Labels   int
				Problems []string
			}
			if err := json.Unmarshal([]byte(html.UnescapeString(probe[i+len(`<pre id="result">`):j])), &res); err != nil {
				t.Fatalf("the probe's result %q: %v", probe[i:j], err)
			}
			if res.Labels < 5 {
				t.Errorf("the probe saw %d chart labels, want the axis labels (5)", res.Labels)
			}
			for _, p := range res.Problems {
				t.Errorf("at %dx%d: %s", vp.width, vp.height, p)
			}

			shot := filepath.Join(dir, "status.png")
			run("--screenshot="+shot, base+"/status")
			f, err := os.Open(shot)
			if err != nil {
				t.Fatalf("no screenshot: %v", err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatalf("screenshot: %v", err)
			}
			if b := img.Bounds(); b.Dx() != vp.width || b.Dy() != vp.height {
				t.Errorf("screenshot %dx%d, want %dx%d", b.Dx(), b.Dy(), vp.width, vp.height)
			}
			if n := distinctColours(img); n < 20 {
				t.Errorf("screenshot has %d distinct colours: the page did not render", n)
			}
			if *screenshotOut != "" {
				out := *screenshotOut
				if vp.shot != "" {
					out = strings.TrimSuffix(out, ".png") + "-" + vp.shot + ".png"
				}
				data, _ := os.ReadFile(shot)
				if err := os.WriteFile(out, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
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
			a := NewAdmin(AdminConfig{Queries: oneQuery(fc), Now: func() time.Time { return now }})
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
	a := NewAdmin(AdminConfig{Queries: oneQuery(fc), StaleAfter: 10 * time.Second})
	if code, _ := get(t, a, "GET", "/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz 20 s stale with StaleAfter 10s: got %d, want 503", code)
	}
}

// TestStatusJSONSnakeCase: every key of /status.json, nested ones included, is snake_case,
// with a status that has loader errors and a finished reload (the nested objects).
func TestStatusJSONSnakeCase(t *testing.T) {
	a := statusAdmin(t)
	code, body := get(t, a, "GET", "/status.json", "")
	var doc any
	if err := json.Unmarshal([]byte(body), &doc); code != http.StatusOK || err != nil {
		t.Fatalf("/status.json: %d %v: %s", code, err, body)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	var keys []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				keys = append(keys, path+k)
				if !snake.MatchString(k) {
					t.Errorf("key %s%s is not snake_case", path, k)
				}
				walk(path+k+".", x)
			}
		case []any:
			for _, x := range v {
				walk(strings.TrimSuffix(path, ".")+"[].", x)
			}
		}
	}
	walk("", doc)
	for _, want := range []string{"recent_errors[].time", "recent_errors[].step", "recent_errors[].error", "reload.state", "reload.entries"} {
		if !slices.Contains(keys, want) {
			t.Errorf("/status.json has no %s (keys: %v)", want, keys)
		}
	}
}
