package server

import (
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"wxlookup/internal/metrictest"
	"wxlookup/wechat"
)

// TestAuditLogOfAnsweredMessages: one line per answered message (not for WeChat's retries,
// nor for events answered "success"), with the query that answered, the keys asked and the
// result, parsed back from the file's JSON.
func TestAuditLogOfAnsweredMessages(t *testing.T) {
	out := &memWriter{}
	audit, _ := newTestAudit(t, AuditConfig{}, out)
	ts := startServer(t, Config{RatePerMinute: -1, Audit: audit}, nil)
	if err := ts.SetRoutes(issueQueries(t)); err != nil {
		t.Fatal(err)
	}
	c := &client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	first := textXML("?18-546")
	for _, msg := range [][]byte{
		first,
		textXML("?18-564"),
		textXML("#P-999"),
		textXML("WO0042 wo1"),
		textXML("帮助"),
		eventXML("subscribe", "", time.Now().Unix()),
		eventXML("unsubscribe", "", time.Now().Unix()),
		first, // WeChat's retry
	} {
		if r := c.post("/wx", msg); r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	lines := parseLines(t, out.buf.Bytes())
	want := []auditLine{
		{Query: "location", Text: "?18-546", Keys: []string{"18-546"}, Result: "found"},
		{Query: "location", Text: "?18-564", Keys: []string{"18-564"}, Result: "suggested"},
		{Query: "stock", Text: "#P-999", Keys: []string{"p-999"}, Result: "not_found"},
		{Query: "order", Text: "WO0042 wo1", Keys: []string{"0042", "wo1"}, Result: "not_found"},
		{Query: "", Text: "帮助", Keys: []string{}, Result: "help"},
		{Query: "", Text: "", Keys: []string{}, Result: "welcome"},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out.buf.String())
	}
	for i, w := range want {
		l := lines[i]
		if l.Query != w.Query || l.Text != w.Text || !slices.Equal(l.Keys, w.Keys) || l.Result != w.Result {
			t.Errorf("line %d: got %s, want %s", i, show(l), show(w))
		}
		if l.OpenID == nil || *l.OpenID != "oUser" || l.LatencyUS < 0 {
			t.Errorf("line %d: openid %v latency %d µs, want oUser and a latency", i, l.OpenID, l.LatencyUS)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z07:00", l.Time); err != nil {
			t.Errorf("line %d: time %q: %v", i, l.Time, err)
		}
	}
}

// TestAuditDroppedNeverBlocks: with the writer stuck and the queue full, replies go on
// unchanged and each record that finds no room is counted in wxlookup_audit_dropped_total.
func TestAuditDroppedNeverBlocks(t *testing.T) {
	out := &memWriter{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	audit, reg := newTestAudit(t, AuditConfig{QueueSize: 2}, out)
	ts := startServer(t, Config{RatePerMinute: -1, Audit: audit}, mapLookup(t, demoRows))
	c := &client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	ask := func() {
		t.Helper()
		if r := c.post("/wx", textXML("?18-546")); r.status != http.StatusOK || string(r.reply.Content) != "[18-546]的工作台位为[车体新厂房3号]" {
			t.Fatalf("got %d %q", r.status, r.reply.Content)
		}
	}
	ask()
	<-out.entered // the writer holds the first line inside Write; both slots are free again
	for range 9 {
		ask()
	}
	if got := metrictest.Value(t, reg, "wxlookup_audit_dropped_total"); got != 7 {
		t.Errorf("dropped %v, want 7 (2 queued while the writer was stuck)", got)
	}
	close(out.gate)
	audit.Close()
	if n := len(parseLines(t, out.buf.Bytes())); n != 3 {
		t.Errorf("%d lines written, want 3", n)
	}
}

// TestHandlerAllocationsWithAudit: with the audit log on, the plaintext hot path still
// allocates nothing once warm (the record is copied into a pooled slot).
func TestHandlerAllocationsWithAudit(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	audit, _ := newTestAudit(t, AuditConfig{}, nopWriteCloser{io.Discard})
	s, err := New(Config{Token: testToken, DedupeWindow: -1, RatePerMinute: -1, Audit: audit}, mapLookup(t, demoRows))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	ctx := handlerRequest(t, plainURI(time.Now()), textXML("?18-546 99-999"))
	h(ctx)
	if !strings.Contains(string(ctx.Response.Body()), "车体新厂房3号") {
		t.Fatalf("unexpected reply %s", ctx.Response.Body())
	}
	if n := testing.AllocsPerRun(200, func() {
		ctx.Response.Reset()
		h(ctx)
	}); n != 0 {
		t.Fatalf("handler with the audit log allocates %v times per request, want 0", n)
	}
}

// BenchmarkHandlerAudit compares the webhook with the audit log off and on (a real file,
// rotated by lumberjack), each request a new message with a new nonce so every one is
// answered and logged. Besides ns/op it reports the p99 of the handler's time over the
// last 65,536 requests, and the records dropped per request.
//
//	go test -run '^$' -bench HandlerAudit -benchmem -benchtime 200000x ./server/
func BenchmarkHandlerAudit(b *testing.B) {
	const n, perSecond = 1 << 16, 4096
	start := time.Now()
	msgs, uris := make([][]byte, n), make([]string, n)
	for i := range msgs {
		now := start.Add(time.Duration(i/perSecond) * time.Second)
		ts := strconv.FormatInt(now.Unix(), 10)
		msgs[i] = wechat.AppendTextMessage(nil, []byte("gh_test"), []byte("oUser"), now.Unix(), []byte("?18-546"), int64(i))
		nonce := strconv.Itoa(1_000_000 + i)
		uris[i] = "/wx?signature=" + wechat.Signature(testToken, ts, nonce) + "&timestamp=" + ts + "&nonce=" + nonce + "&openid=oUser"
	}
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			var audit *AuditLog
			reg := prometheus.NewRegistry()
			if on {
				var err error
				if audit, err = NewAuditLog(AuditConfig{Path: filepath.Join(b.TempDir(), "audit.log")}, reg); err != nil {
					b.Fatal(err)
				}
				defer audit.Close()
			}
			clock := start
			newHandler := func() fasthttp.RequestHandler {
				s, err := New(Config{Token: testToken, RatePerMinute: -1, Now: func() time.Time { return clock },
					Logger: slog.New(slog.DiscardHandler), Audit: audit}, mapLookup(b, demoRows))
				if err != nil {
					b.Fatal(err)
				}
				return s.Handler()
			}
			h := newHandler()
			ctx := handlerRequest(b, uris[0], msgs[0])
			took := make([]time.Duration, n)
			b.ReportAllocs()
			i, done := 0, 0
			for b.Loop() {
				if i == n {
					b.StopTimer()
					h, i = newHandler(), 0
					b.StartTimer()
				}
				clock = start.Add(time.Duration(i/perSecond) * time.Second)
				ctx.Request.SetRequestURI(uris[i])
				ctx.Request.SetBody(msgs[i])
				ctx.Response.Reset()
				t0 := time.Now()
				h(ctx)
				took[i] = time.Since(t0)
				if ctx.Response.StatusCode() != http.StatusOK {
					b.Fatalf("request %d: status %d: %s", i, ctx.Response.StatusCode(), ctx.Response.Body())
				}
				i++
				done++
			}
			sorted := slices.Clone(took[:min(done, n)])
			slices.Sort(sorted)
			b.ReportMetric(float64(sorted[len(sorted)*99/100].Nanoseconds()), "p99-ns")
			if on {
				b.ReportMetric(metrictest.Value(b, reg, "wxlookup_audit_dropped_total")/float64(done), "drops/op")
			}
		})
	}
}
