package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wxlookup/internal/metrictest"
	"wxlookup/wechat"
)

// signedAsk posts text as a new plaintext message from openID, signed with a fresh nonce,
// and returns the status and the reply's content. Safe to call from any goroutine.
func signedAsk(hc *http.Client, base, openID, text string) (int, string, error) {
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	nonce := freshNonce()
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "signature": {wechat.Signature(testToken, ts, nonce)}, "openid": {openID}}
	body := wechat.AppendTextMessage(nil, []byte("gh_test"), []byte(openID), now.Unix(), []byte(text), 7000000000+msgSeq.Add(1))
	resp, err := hc.Post(base+"/wx?"+q.Encode(), "text/xml", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(raw), err
	}
	var m wechat.Message
	if err := m.Parse(raw); err != nil {
		return resp.StatusCode, string(raw), err
	}
	return resp.StatusCode, string(m.Content), nil
}

// closableTable is a fakeTable that counts lookups made after it was closed: a request
// that used a route after SetRoutes said no request uses it any more.
type closableTable struct {
	*fakeTable
	closed, usedAfterClose atomic.Bool
}

func (c *closableTable) Lookup(ctx context.Context, key []byte) ([]byte, string, bool, error) {
	if c.closed.Load() {
		c.usedAfterClose.Store(true)
	}
	return c.fakeTable.Lookup(ctx, key)
}

// TestSetRoutesUnderLoad: while senders post signed messages to every query, the set of
// queries is changed again and again (a query removed, then added back with a new cache,
// the old one closed as soon as SetRoutes returns): no request fails, none uses a cache
// after it was closed, and in the end the added query answers and the removed one does not.
func TestSetRoutesUnderLoad(t *testing.T) {
	ts := startServer(t, Config{RatePerMinute: -1}, nil)
	routes := issueQueries(t)
	loc, stock, order := routes[0], routes[1], routes[2]
	closable := func(r Route) (Route, *closableTable) {
		c := &closableTable{fakeTable: r.Cache.(*fakeTable)}
		return Route{Query: r.Query, Cache: c}, c
	}
	stockRoute, stockCache := closable(stock)
	if err := ts.SetRoutes([]Route{loc, stockRoute}); err != nil {
		t.Fatal(err)
	}

	const senders, perSender = 8, 120
	var failures atomic.Int64
	var firstFailure sync.Once
	var failure string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(30 * time.Second)
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
			defer hc.CloseIdleConnections()
			asks := []string{"?18-546", "#P-100", "WO0042"}
			for j := 0; j < perSender && time.Now().Before(deadline); j++ {
				select {
				case <-stop:
					return
				default:
				}
				code, content, err := signedAsk(hc, ts.url, fmt.Sprintf("oLoad%02d_%03d", i, j), asks[j%len(asks)])
				if err != nil || code != http.StatusOK || content == "" || content == DefaultStarting {
					failures.Add(1)
					firstFailure.Do(func() { failure = fmt.Sprintf("%d %q %v", code, content, err) })
				}
			}
		}()
	}
	// Swap while the senders run: stock out, stock back (a new cache) with order, …
	var closed []*closableTable
	for range 20 {
		if err := ts.SetRoutes([]Route{loc, order}); err != nil {
			t.Fatal(err)
		}
		stockCache.closed.Store(true) // what cmd does once SetRoutes has returned
		closed = append(closed, stockCache)
		stockRoute, stockCache = closable(stock)
		if err := ts.SetRoutes([]Route{loc, stockRoute, order}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.SetRoutes([]Route{loc, order}); err != nil {
		t.Fatal(err)
	}
	stockCache.closed.Store(true)
	closed = append(closed, stockCache)
	wg.Wait()
	close(stop)

	if n := failures.Load(); n > 0 {
		t.Errorf("%d requests failed during the swaps, the first: %s", n, failure)
	}
	for i, c := range closed {
		if c.usedAfterClose.Load() {
			t.Errorf("stock cache %d was looked up after SetRoutes returned without it", i)
		}
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	if _, got, _ := signedAsk(hc, ts.url, "oAfter", "WO0042"); got != "工单0042：在制" {
		t.Errorf("the added query: got %q, want its answer", got)
	}
	if _, got, _ := signedAsk(hc, ts.url, "oAfter", "#P-100"); !strings.HasPrefix(got, DefaultHelp) {
		t.Errorf("the removed query: got %q, want the help text", got)
	}
}

// TestSetRoutesRefuses: a route without a query or cache, or two of one name, is refused
// and the routes in place stay.
func TestSetRoutesRefuses(t *testing.T) {
	ts := startServer(t, Config{}, mapLookup(t, demoRows))
	routes := issueQueries(t)
	for _, bad := range [][]Route{
		{{Query: routes[0].Query}},
		{routes[0], routes[0]},
	} {
		if err := ts.SetRoutes(bad); err == nil {
			t.Errorf("SetRoutes(%d routes) accepted a bad set", len(bad))
		}
	}
	if got := ts.routes(); len(got) != 1 || got[0].Query.Name() != ImplicitQuery {
		t.Errorf("routes after the refusals: %d, want the implicit query alone", len(got))
	}
}

// TestPerQueryMetrics: each query counts its own lookups and misses under its query label.
func TestPerQueryMetrics(t *testing.T) {
	ts := startServer(t, Config{RatePerMinute: -1}, nil)
	if err := ts.SetRoutes(issueQueries(t)); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, ask := range []string{"?18-546 18-999", "#P-100", "#P-999", "#P-998", "WO0042", "帮助"} {
		if code, got, err := signedAsk(hc, ts.url, "oMetrics", ask); code != http.StatusOK || err != nil {
			t.Fatalf("%q: %d %q %v", ask, code, got, err)
		}
	}
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wxlookup_lookups_total", []string{"query", "location", "result", "found"}, 1},
		{"wxlookup_lookups_total", []string{"query", "location", "result", "not_found"}, 1},
		{"wxlookup_lookups_total", []string{"query", "stock", "result", "found"}, 1},
		{"wxlookup_lookups_total", []string{"query", "stock", "result", "not_found"}, 2},
		{"wxlookup_lookups_total", []string{"query", "order", "result", "found"}, 1},
		{"wxlookup_not_found_total", []string{"query", "location"}, 1},
		{"wxlookup_not_found_total", []string{"query", "stock"}, 2},
		{"wxlookup_not_found_total", []string{"query", "order"}, 0},
	} {
		if got := metrictest.Value(t, ts.reg, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

// heldTable is a fakeTable whose Lookup signals entered and then waits for hold to close.
type heldTable struct {
	*fakeTable
	entered chan struct{}
	hold    chan struct{}
}

func (h *heldTable) Lookup(ctx context.Context, key []byte) ([]byte, string, bool, error) {
	h.entered <- struct{}{}
	<-h.hold
	return h.fakeTable.Lookup(ctx, key)
}

// TestSetRoutesWaitsForRequests: SetRoutes returns only once a request that was answering
// from the previous set has finished, so the caller may then close what it no longer routes.
func TestSetRoutesWaitsForRequests(t *testing.T) {
	ts := startServer(t, Config{RatePerMinute: -1}, nil)
	routes := issueQueries(t)
	held := &heldTable{fakeTable: routes[1].Cache.(*fakeTable), entered: make(chan struct{}, 1), hold: make(chan struct{})}
	if err := ts.SetRoutes([]Route{routes[0], {Query: routes[1].Query, Cache: held}}); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		content string
		err     error
	}
	answered := make(chan answer, 1)
	go func() {
		_, content, err := signedAsk(&http.Client{Timeout: 10 * time.Second}, ts.url, "oHeld", "#P-100")
		answered <- answer{content, err}
	}()
	<-held.entered

	var released atomic.Bool
	returned := make(chan bool, 1)
	go func() {
		if err := ts.SetRoutes([]Route{routes[0]}); err != nil {
			t.Error(err)
		}
		returned <- released.Load()
	}()
	for deadline := time.Now().Add(10 * time.Second); len(ts.routes()) != 1; {
		if time.Now().After(deadline) {
			t.Fatal("SetRoutes did not swap the routes")
		}
		runtime.Gosched()
	}
	released.Store(true)
	close(held.hold)
	if afterRelease := <-returned; !afterRelease {
		t.Error("SetRoutes returned while a request was still answering from the routes it replaced")
	}
	if a := <-answered; a.err != nil || a.content != "[P-100] 库存12件，货位B-3" {
		t.Errorf("the held request: %q %v, want its answer from the old routes", a.content, a.err)
	}
}
