package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"gopkg.in/natefinch/lumberjack.v2"

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

// BenchmarkHandlerAudit compares the webhook with the audit log off and on in one run: two
// handlers, alike but for the audit log (a real file, rotated by lumberjack), take turns in
// blocks of 8,192 requests, each a new message with a new nonce so that every one is
// answered and logged. Taking turns puts the two under the same load from the rest of the
// machine. Before each block the timer stops until the writer has written every line queued
// so far: each block starts alike, and the writer's work is not counted against the audit
// log off. Besides ns/op (of both) it reports each handler's median and p99 time and their
// ratios on/off, the median over pairs of blocks of the ratio of their p99s, and the
// records dropped per audited request.
//
// "live" is the audit log as cmd configures it. In "writer-asleep" the queue holds a whole
// block and the writer does not wake during one (it writes between blocks): what remains is
// the handler's own cost of the audit log, without the writer's work on the other CPU.
//
//	go test -run '^$' -bench HandlerAudit -benchtime 400000x -count 6 ./server/
func BenchmarkHandlerAudit(b *testing.B) {
	const n, perSecond, block = 1 << 16, 4096, 8192
	start := time.Now()
	msgs, uris := make([][]byte, n), make([]string, n)
	for i := range msgs {
		now := start.Add(time.Duration(i/perSecond) * time.Second)
		ts := strconv.FormatInt(now.Unix(), 10)
		msgs[i] = wechat.AppendTextMessage(nil, []byte("gh_test"), []byte("oUser"), now.Unix(), []byte("?18-546"), int64(i))
		nonce := strconv.Itoa(1_000_000 + i)
		uris[i] = "/wx?signature=" + wechat.Signature(testToken, ts, nonce) + "&timestamp=" + ts + "&nonce=" + nonce + "&openid=oUser"
	}
	for _, tt := range []struct {
		name string
		cfg  AuditConfig
	}{
		{"live", AuditConfig{}},
		{"writer-asleep", AuditConfig{QueueSize: 2*block + 2, FlushInterval: time.Hour}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			cfg := tt.cfg
			cfg.Path = filepath.Join(b.TempDir(), "audit.log")
			benchHandlerAudit(b, cfg, block, start, perSecond, msgs, uris)
		})
	}
}

// benchHandlerAudit is BenchmarkHandlerAudit with the audit log of cfg.
func benchHandlerAudit(b *testing.B, cfg AuditConfig, block int, start time.Time, perSecond int, msgs [][]byte, uris []string) {
	n := len(msgs)
	reg := prometheus.NewRegistry()
	out := &lineCounter{WriteCloser: &lumberjack.Logger{Filename: cfg.Path, MaxSize: DefaultAuditMaxSizeMB,
		MaxBackups: DefaultAuditMaxBackups}}
	audit, err := newAuditLog(cfg, reg, out)
	if err != nil {
		b.Fatal(err)
	}
	defer audit.Close()

	// side is one of the two handlers: its own server (and so its own dedupe table), clock,
	// position in the messages, the times it took, and the p99 of each of its whole blocks.
	type side struct {
		audit *AuditLog
		h     fasthttp.RequestHandler
		clock time.Time
		i     int
		took  []time.Duration
		from  int // took[from:] is the current block's
		p99s  []float64
		done  uint64
	}
	newHandler := func(sd *side) {
		s, err := New(Config{Token: testToken, RatePerMinute: -1, Now: func() time.Time { return sd.clock },
			Logger: slog.New(slog.DiscardHandler), Audit: sd.audit}, mapLookup(b, demoRows))
		if err != nil {
			b.Fatal(err)
		}
		sd.h, sd.i = s.Handler(), 0
	}
	sides := [2]*side{{}, {audit: audit}} // off, on
	for _, sd := range sides {
		newHandler(sd)
		sd.took = make([]time.Duration, 0, 1<<20)
	}
	p99 := func(d []time.Duration) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[len(d)*99/100].Nanoseconds())
	}
	ctx := handlerRequest(b, uris[0], msgs[0])
	b.ReportAllocs()
	k := 0
	for b.Loop() {
		sd := sides[k/block%2]
		if k%block == 0 {
			b.StopTimer()
			if prev := sides[(k/block+1)%2]; k > 0 && len(prev.took)-prev.from == block {
				prev.p99s = append(prev.p99s, p99(prev.took[prev.from:]))
			}
			sd.from = len(sd.took)
			waitAuditWritten(b, audit, out, sides[1].done-uint64(metrictest.Value(b, reg, "wxlookup_audit_dropped_total")))
			if sd.i+block > n {
				newHandler(sd) // a fresh dedupe table: every message is new again
			}
			b.StartTimer()
		}
		sd.clock = start.Add(time.Duration(sd.i/perSecond) * time.Second)
		ctx.Request.SetRequestURI(uris[sd.i])
		ctx.Request.SetBody(msgs[sd.i])
		ctx.Response.Reset()
		t0 := time.Now()
		sd.h(ctx)
		took := time.Since(t0)
		if ctx.Response.StatusCode() != http.StatusOK {
			b.Fatalf("request %d: status %d: %s", sd.i, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if len(sd.took) < cap(sd.took) {
			sd.took = append(sd.took, took)
		}
		sd.i++
		sd.done++
		k++
	}
	off, on := sides[0], sides[1]
	if len(on.took) == 0 {
		return
	}
	// Each "on" block against the "off" block before it: the median of their p99s' ratios
	// is steadier than the ratio of the pooled p99s when the machine's load comes and goes.
	var ratios []float64
	for i := range min(len(off.p99s), len(on.p99s)) {
		ratios = append(ratios, on.p99s[i]/off.p99s[i])
	}
	if len(ratios) > 0 {
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], "block-p99-on/off")
	}
	slices.Sort(off.took)
	slices.Sort(on.took)
	q := func(d []time.Duration, f float64) float64 { return float64(d[int(float64(len(d))*f)].Nanoseconds()) }
	b.ReportMetric(q(off.took, 0.5), "off-p50-ns")
	b.ReportMetric(q(on.took, 0.5), "on-p50-ns")
	b.ReportMetric(q(on.took, 0.5)/q(off.took, 0.5), "p50-on/off")
	b.ReportMetric(q(off.took, 0.99), "off-p99-ns")
	b.ReportMetric(q(on.took, 0.99), "on-p99-ns")
	b.ReportMetric(q(on.took, 0.99)/q(off.took, 0.99), "p99-on/off")
	b.ReportMetric(metrictest.Value(b, reg, "wxlookup_audit_dropped_total")/float64(on.done), "drops/op")
}

// lineCounter counts the lines written through it.
type lineCounter struct {
	io.WriteCloser
	lines atomic.Uint64
}

func (w *lineCounter) Write(p []byte) (int, error) {
	n, err := w.WriteCloser.Write(p)
	w.lines.Add(uint64(bytes.Count(p[:n], []byte{'\n'})))
	return n, err
}

// waitAuditWritten wakes a's writer and waits until it has written want lines through out.
func waitAuditWritten(tb testing.TB, a *AuditLog, out *lineCounter, want uint64) {
	tb.Helper()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	for deadline := time.Now().Add(10 * time.Second); out.lines.Load() != want; {
		if time.Now().After(deadline) {
			tb.Fatalf("the audit log's writer wrote %d of %d lines in 10s", out.lines.Load(), want)
		}
		runtime.Gosched()
	}
}
