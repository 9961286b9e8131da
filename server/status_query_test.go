package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"wxlookup/cache"
)

// queriesOf is AdminConfig.Queries over fixed queries.
func queriesOf(qs ...AdminQuery) func() []AdminQuery {
	return func() []AdminQuery { return qs }
}

func readyCache(st cache.Status) *fakeCache {
	fc := &fakeCache{status: st}
	fc.ready.Store(st.Ready)
	return fc
}

// TestNotFoundReportOnStatus: each query's not-found report is on the status page (a table:
// key, count, first and last asked) and in /status.json, most asked first, then the most
// recently asked; a query's lookups are counted in its section.
func TestNotFoundReportOnStatus(t *testing.T) {
	ts := startServer(t, Config{RatePerMinute: -1}, nil)
	routes := issueQueries(t)
	if err := ts.SetRoutes(routes[:2]); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, ask := range []string{"?A-1", "?18-998", "?18-999", "?18-998", "?18-999", "?18-999", "?18-546", "#P-9", "?A-1"} {
		if code, got, err := signedAsk(hc, ts.url, "oReport", ask); code != http.StatusOK || err != nil {
			t.Fatalf("%q: %d %q %v", ask, code, got, err)
		}
	}
	st := cache.Status{Ready: true, Complete: true, Entries: 2, LastSuccess: time.Now()}
	a := NewAdmin(AdminConfig{Webhook: ts.Server, Queries: queriesOf(
		AdminQuery{Name: "location", Cache: readyCache(st), Live: true},
		AdminQuery{Name: "stock", Cache: readyCache(st), Live: true})})

	_, body := get(t, a, "GET", "/status.json", "")
	var doc struct {
		Queries []struct {
			Name     string        `json:"name"`
			Lookups  uint64        `json:"lookups"`
			Found    uint64        `json:"found"`
			NotFound []NotFoundKey `json:"not_found"`
		} `json:"queries"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || len(doc.Queries) != 2 {
		t.Fatalf("/status.json: %v, want two queries:\n%s", err, body)
	}
	want := []struct {
		name string
		keys []string
		n    []uint64
	}{
		{"location", []string{"18-999", "A-1", "18-998"}, []uint64{3, 2, 2}}, // A-1 asked last of the two
		{"stock", []string{"P-9"}, []uint64{1}},
	}
	for i, w := range want {
		q := doc.Queries[i]
		var keys []string
		var n []uint64
		for _, k := range q.NotFound {
			keys, n = append(keys, k.Key), append(n, k.Count)
			if k.First.IsZero() || k.Last.Before(k.First) {
				t.Errorf("%s %s: first asked %v, last %v", q.Name, k.Key, k.First, k.Last)
			}
		}
		if q.Name != w.name || strings.Join(keys, " ") != strings.Join(w.keys, " ") || len(n) != len(w.n) {
			t.Fatalf("query %d: got %s %q %v, want %s %q %v", i, q.Name, keys, n, w.name, w.keys, w.n)
		}
		for j := range n {
			if n[j] != w.n[j] {
				t.Errorf("%s %s: count %d, want %d", q.Name, keys[j], n[j], w.n[j])
			}
		}
	}
	if loc := doc.Queries[0]; loc.Lookups != 8 || loc.Found != 1 {
		t.Errorf("location: %d lookups, %d found; want 8 and 1", loc.Lookups, loc.Found)
	}

	_, page := get(t, a, "GET", "/status", "")
	for _, s := range []string{"Query location", "Query stock", "Most asked, not found"} {
		if !strings.Contains(page, s) {
			t.Errorf("/status lacks %q", s)
		}
	}
	locSection, stockSection, _ := strings.Cut(page[strings.Index(page, "Query location"):], "Query stock")
	last := -1
	for _, key := range want[0].keys {
		i := strings.Index(locSection, `<td class="err">`+key+`</td>`)
		if i < last {
			t.Errorf("/status: %s is not after the keys asked more (order %q)", key, want[0].keys)
		}
		last = i
	}
	if !strings.Contains(stockSection, `<td class="err">P-9</td><td class="num">1</td>`) {
		t.Errorf("/status: the stock section has no row for P-9 asked once")
	}
}

// TestReadyzEveryLiveQuery: /readyz is 200 only when every live query has loaded and none
// is stale, and names the query that is not; a query still warming after a configuration
// reload (not live) does not count.
func TestReadyzEveryLiveQuery(t *testing.T) {
	fresh := cache.Status{Ready: true, Complete: true, LastSuccess: time.Now()}
	stale := fresh
	stale.Staleness = 5 * time.Minute
	tests := []struct {
		name string
		qs   []AdminQuery
		code int
		body string
	}{
		{"all loaded", []AdminQuery{{"location", readyCache(fresh), true}, {"stock", readyCache(fresh), true}}, 200, "ready"},
		{"one starting", []AdminQuery{{"location", readyCache(fresh), true}, {"stock", readyCache(cache.Status{}), true}}, 503, "starting: query stock"},
		{"one stale", []AdminQuery{{"location", readyCache(stale), true}, {"stock", readyCache(fresh), true}}, 503, "stale: query location"},
		{"one warming, not live", []AdminQuery{{"location", readyCache(fresh), true}, {"stock", readyCache(cache.Status{}), false}}, 200, "ready"},
		{"none", nil, 503, "no query is live"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAdmin(AdminConfig{Queries: queriesOf(tt.qs...)})
			if code, body := get(t, a, "GET", "/readyz", ""); code != tt.code || !strings.Contains(body, tt.body) {
				t.Errorf("got %d %q, want %d %q", code, body, tt.code, tt.body)
			}
		})
	}
}

// TestAdminReloadConfig: POST /admin/reload-config needs the token, answers 400 with the
// one line that refused the file, and 200 with what changed.
func TestAdminReloadConfig(t *testing.T) {
	refuse := errors.New(`config: c.yaml: query "stock": prefix: "#" overlaps "#" of query "location"`)
	var fail bool
	a := NewAdmin(AdminConfig{Token: "s3cret", Logger: slog.New(slog.DiscardHandler),
		ReloadConfig: func(context.Context) (ConfigChange, error) {
			if fail {
				return ConfigChange{}, refuse
			}
			return ConfigChange{Added: []string{"stock"}, Removed: []string{"order"}, Unchanged: []string{"location"}}, nil
		}})
	if code, _ := get(t, a, "POST", "/admin/reload-config", ""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", code)
	}
	code, body := get(t, a, "POST", "/admin/reload-config", "Bearer s3cret")
	var change ConfigChange
	if err := json.Unmarshal([]byte(body), &change); code != 200 || err != nil || strings.Join(change.Added, ",") != "stock" ||
		strings.Join(change.Removed, ",") != "order" || change.Changed == nil {
		t.Errorf("got %d %s, want 200 with added stock, removed order, changed []", code, body)
	}
	fail = true
	if code, body := get(t, a, "POST", "/admin/reload-config", "Bearer s3cret"); code != http.StatusBadRequest || body != refuse.Error()+"\n" {
		t.Errorf("invalid file: got %d %q, want 400 %q", code, body, refuse.Error())
	}
	off := NewAdmin(AdminConfig{Token: "s3cret"})
	if code, _ := get(t, off, "POST", "/admin/reload-config", "Bearer s3cret"); code != http.StatusNotFound {
		t.Errorf("without ReloadConfig: %d, want 404", code)
	}
}
