package server

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"wxlookup/wechat"
)

// The benchmarks of this file split a request's cost into the server's stages: fasthttp's
// own (BenchmarkServeConn's ceiling), the whole webhook inside fasthttp, and the
// per-request bookkeeping (clock, replay guard, dedupe, rate limiter, metrics) that every
// message pays whatever it asks.

// benchSenders is how many distinct OpenIDs the benchmarks' messages come from.
const benchSenders = 10_000

// benchOpenIDs returns n OpenIDs of 28 characters, as WeChat's are.
func benchOpenIDs(n int) [][]byte {
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "oWxBench%020d", i)
	}
	return ids
}

// bookkeeper does one goroutine's share of the bookkeeping benchmark: what the webhook's
// found path (Handler, serveOA, read, respond, answerQuery) does per message for the
// stages it is asked for, on a fresh message from the next of benchSenders senders each
// time. It mirrors the handler's calls; keep it in step with them.
type bookkeeper struct {
	s      *Server
	counts *queryCounters // the implicit query's
	ids    [][]byte       // the senders
	bodies [][]byte       // a message of each sender, for the replay guard
	msg    wechat.Message
	nonce  []byte
	msgID  []byte
	id     []byte
	reply  []byte
	seq    int64 // the next message's MsgId and nonce
	n      int   // messages so far
}

// bookkeepingStages are the stages of the bookkeeping benchmark: each alone, and all of
// them as a message goes through them.
var bookkeepingStages = []string{"all", "clock", "replay", "dedupe", "limiter", "metrics"}

// benchRatePerMinute and benchRateBurst are the benchmarks' rate limit: one no sender
// reaches, so that every message takes the limiter's admitting path (which writes its
// slot) although the benchmarks' senders send far faster than real ones. A sender comes
// back after benchSenders messages, at least a millisecond, ten intervals; the burst, a
// second's worth, absorbs a goroutine's stale clock reading behind another's.
const (
	benchRatePerMinute = 600_000
	benchRateBurst     = 10_000
)

// newBookkeepingServer returns the server of the bookkeeping benchmarks: defaults, except
// the rate limit.
func newBookkeepingServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := New(Config{Token: testToken, RatePerMinute: benchRatePerMinute, RateBurst: benchRateBurst,
		Logger: slog.New(slog.DiscardHandler)}, mapLookup(tb, demoRows))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func newBookkeeper(s *Server, ids, bodies [][]byte, first int64) *bookkeeper {
	return &bookkeeper{
		s: s, counts: s.ans.routes.Load().routes[0].counts, ids: ids, bodies: bodies, seq: first,
		msg:   wechat.Message{ToUserName: []byte("gh_test"), MsgType: []byte("text"), Content: []byte("?18-546")},
		reply: wechat.AppendTextReply(nil, []byte("oWxBench00000000000000000000"), []byte("gh_test"), time.Now().Unix(), []byte("[18-546]的工作台位为[车体新厂房3号]")),
	}
}

// next does the bookkeeping of the next message for stage. It returns the step that did
// not admit the message as a fresh one, or "".
func (k *bookkeeper) next(stage string) (refused string) {
	s := k.s
	sender := k.n % len(k.ids)
	k.n++
	k.seq++
	k.nonce = strconv.AppendInt(k.nonce[:0], k.seq, 10)
	k.msgID = strconv.AppendInt(k.msgID[:0], k.seq, 10)
	m := &k.msg
	m.FromUserName, m.MsgID = k.ids[sender], k.msgID
	switch stage {
	case "all":
		start := time.Now()                                                       // Handler
		now := s.requestTime(start)                                               // serveOA
		if !s.replay.check(routeOA, now.Unix(), k.nonce, k.bodies[sender], now) { // read
			refused = "replay"
		}
		k.id = appendIdentity(k.id[:0], routeOA, m) // respond
		id := s.dedupe.key(k.id)
		if _, _, found := s.dedupe.find(k.reply[:0:0], id, now); found {
			refused = "dedupe"
		}
		if !s.ans.limiter.allow(m.FromUserName, now) { // answer
			refused = "limiter"
		}
		k.counts.countFound()                          // answerQuery
		s.dedupe.store(id, k.reply, outcomeFound, now) // respond
		s.m.requests[routeOA][kindOf(m)][outcomeFound].Inc()
		s.m.duration.Observe(time.Since(start).Seconds()) // Handler
	case "clock":
		start := time.Now()
		if now := s.requestTime(start); now.Before(start) || time.Since(start) < 0 {
			refused = "clock"
		}
	case "replay":
		now := time.Now()
		if !s.replay.check(routeOA, now.Unix(), k.nonce, k.bodies[sender], now) {
			refused = "replay"
		}
	case "dedupe":
		now := time.Now()
		k.id = appendIdentity(k.id[:0], routeOA, m)
		id := s.dedupe.key(k.id)
		if _, _, found := s.dedupe.find(k.reply[:0:0], id, now); found {
			refused = "dedupe"
		}
		s.dedupe.store(id, k.reply, outcomeFound, now)
	case "limiter":
		if !s.ans.limiter.allow(m.FromUserName, time.Now()) {
			refused = "limiter"
		}
	case "metrics":
		start := time.Now()
		k.counts.countFound()
		s.m.requests[routeOA][kindOf(m)][outcomeFound].Inc()
		s.m.duration.Observe(time.Since(start).Seconds())
	}
	return refused
}

// BenchmarkPerRequestBookkeeping: the webhook's per-message bookkeeping (clock reads,
// replay guard, dedupe find and store, rate limiter, metrics), for fresh messages from
// benchSenders senders in turn; "all" is the lot as a message meets it, the others one
// stage each (the stages other than "clock" read the clock once, for their own now).
// Goal (issue 16): "all" within 1µs, 0 allocs.
func BenchmarkPerRequestBookkeeping(b *testing.B) {
	ids := benchOpenIDs(benchSenders)
	bodies := make([][]byte, len(ids))
	for i := range bodies {
		bodies[i] = wechat.AppendTextMessage(nil, []byte("gh_test"), ids[i], time.Now().Unix(), []byte("?18-546"), int64(i))
	}
	for _, stage := range bookkeepingStages {
		b.Run(stage, func(b *testing.B) {
			k := newBookkeeper(newBookkeepingServer(b), ids, bodies, 1_000_000_000)
			b.ReportAllocs()
			for b.Loop() {
				if r := k.next(stage); r != "" {
					b.Fatalf("message %d not admitted as fresh: %s", k.n, r)
				}
			}
		})
	}
}

// BenchmarkPerRequestBookkeepingParallel is BenchmarkPerRequestBookkeeping from every P
// (run it with -cpu=1,2): ns per message of wall time, so a stage that scales halves its
// figure from -cpu=1 to -cpu=2, and one serialised by a lock or a shared cache line does
// not. Each goroutine has its own MsgIds and nonces.
func BenchmarkPerRequestBookkeepingParallel(b *testing.B) {
	ids := benchOpenIDs(benchSenders)
	bodies := make([][]byte, len(ids))
	for i := range bodies {
		bodies[i] = wechat.AppendTextMessage(nil, []byte("gh_test"), ids[i], time.Now().Unix(), []byte("?18-546"), int64(i))
	}
	for _, stage := range bookkeepingStages {
		b.Run(stage, func(b *testing.B) {
			s := newBookkeepingServer(b)
			var goroutines atomic.Int64
			var refused atomic.Value
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				g := goroutines.Add(1)
				k := newBookkeeper(s, ids, bodies, g*1_000_000_000_000)
				k.n = int(g) * 7919 // start each goroutine at another sender
				for pb.Next() {
					if r := k.next(stage); r != "" {
						refused.Store(r)
					}
				}
			})
			if r := refused.Load(); r != nil {
				b.Fatalf("a message was not admitted as fresh: %s", r)
			}
		})
	}
}

// benchConn is a client connection to a fasthttp server, in memory: it hands the server
// one request at a time, as a WeChat client on a keep-alive connection does (waiting for
// each reply), so that the server flushes each reply; it counts the replies that start
// "HTTP/1.1 200 OK". Read returns io.EOF once limit requests have been read.
type benchConn struct {
	reqs   [][]byte
	next   int
	limit  int
	cur    []byte
	ok     int // 200 replies
	writes int
	last   []byte // the last reply, kept when keepLast
	keep   bool
}

func (c *benchConn) Read(p []byte) (int, error) {
	if len(c.cur) == 0 {
		if c.next == c.limit {
			return 0, io.EOF
		}
		c.cur = c.reqs[c.next]
		c.next++
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

func (c *benchConn) Write(p []byte) (int, error) {
	c.writes++
	if bytes.HasPrefix(p, []byte("HTTP/1.1 200 OK\r\n")) {
		c.ok++
	}
	if c.keep {
		c.last = append(c.last[:0], p...)
	}
	return len(p), nil
}

func (c *benchConn) Close() error        { return nil }
func (c *benchConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080} }
func (c *benchConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *benchConn) SetDeadline(time.Time) error      { return nil }
func (c *benchConn) SetReadDeadline(time.Time) error  { return nil }
func (c *benchConn) SetWriteDeadline(time.Time) error { return nil }

// benchRequests returns n signed requests to the webhook as WeChat sends them (headers
// included): fresh messages (MsgId) with fresh nonces from benchSenders senders in turn,
// asking for 18-546; encrypted (safe mode) when c is not nil.
func benchRequests(tb testing.TB, n int, c *wechat.Crypter) [][]byte {
	tb.Helper()
	ids := benchOpenIDs(benchSenders)
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	reqs := make([][]byte, n)
	var msg, enc []byte
	for i := range reqs {
		nonce := strconv.Itoa(1_000_000_000 + i)
		msg = wechat.AppendTextMessage(msg[:0], []byte("gh_test"), ids[i%len(ids)], now.Unix(), []byte("?18-546"), int64(1_000_000+i))
		query := "/wx?signature=" + wechat.Signature(testToken, ts, nonce) + "&timestamp=" + ts + "&nonce=" + nonce + "&openid=" + string(ids[i%len(ids)])
		body := msg
		if c != nil {
			var random [16]byte
			random[0], random[1] = byte(i), byte(i>>8)
			enc = c.Current.Encrypt(enc[:0], msg, []byte(testAppID), &random)
			query += "&encrypt_type=aes&msg_signature=" + wechat.MsgSignature(testToken, ts, nonce, string(enc))
			body = wechat.AppendRequestEnvelope(nil, []byte("gh_test"), enc)
		}
		r := append([]byte("POST "), query...)
		r = append(r, " HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Mozilla/4.0\r\nAccept: */*\r\nContent-Type: text/xml\r\nContent-Length: "...)
		r = strconv.AppendInt(r, int64(len(body)), 10)
		r = append(r, "\r\n\r\n"...)
		reqs[i] = append(r, body...)
	}
	return reqs
}

// ceilingServer is the ceiling of the benchmarks (bench/cmd/wxceiling): fasthttp with the
// webhook's settings, whose handler answers "success".
func ceilingServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.SetBodyString("success")
		},
		NoDefaultServerHeader:        true,
		ReadTimeout:                  DefaultReadTimeout,
		WriteTimeout:                 5 * time.Second,
		IdleTimeout:                  60 * time.Second,
		MaxRequestBodySize:           MaxBodyBytes,
		ReadBufferSize:               8 << 10,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
	}
}

// BenchmarkServeConn: a request through fasthttp's connection loop (read, parse, handler,
// write) on an in-memory keep-alive connection, with no client cost: "ceiling" is the
// constant handler (what fasthttp itself costs), "plaintext" and "safe" the webhook's
// fasthttp.Server answering fresh messages from benchSenders senders, each a found
// number. The webhook's tables fill as in a flood: a new server takes over (outside the
// timing) every 1<<16 requests, so none is a retry. ceiling ÷ plaintext is the share of
// the ceiling's throughput the webhook keeps.
func BenchmarkServeConn(b *testing.B) {
	const n = 1 << 16
	for _, mode := range []string{"ceiling", "plaintext", "safe"} {
		var c *wechat.Crypter
		cfg := Config{Token: testToken, RatePerMinute: benchRatePerMinute, RateBurst: benchRateBurst,
			Logger: slog.New(slog.DiscardHandler)}
		if mode == "safe" {
			c = mustCrypter(b, testToken, testAppID, testKey, "")
			cfg.AppID, cfg.AESKey = testAppID, testKey
		}
		reqs := benchRequests(b, n, c) // the ceiling gets the plaintext requests
		b.Run(mode, func(b *testing.B) {
			var s *Server
			newServer := func() *fasthttp.Server {
				if mode == "ceiling" {
					return ceilingServer()
				}
				var err error
				if s, err = New(cfg, mapLookup(b, demoRows)); err != nil {
					b.Fatal(err)
				}
				return s.srv
			}
			// One request first, to check the reply and warm the server.
			srv := newServer()
			conn := &benchConn{reqs: reqs, limit: 1, keep: true}
			if err := srv.ServeConn(conn); err != nil {
				b.Fatal(err)
			}
			want := "success"
			if mode != "ceiling" {
				want = "X-Wxlookup-Outcome: found"
			}
			if conn.ok != 1 || !bytes.Contains(conn.last, []byte(want)) {
				b.Fatalf("reply %q, want 200 with %q", conn.last, want)
			}
			used := 1
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				if used == n {
					b.StopTimer()
					srv, used = newServer(), 0
					b.StartTimer()
				}
				k := min(b.N-done, n-used)
				conn := &benchConn{reqs: reqs[used : used+k], limit: k}
				if err := srv.ServeConn(conn); err != nil {
					b.Fatal(err)
				}
				if conn.ok != k || conn.writes != k {
					b.Fatalf("%d replies of 200 in %d writes to %d requests", conn.ok, conn.writes, k)
				}
				done, used = done+k, used+k
			}
			b.StopTimer()
			if s != nil {
				if got := counterValue(s.m.requests[routeOA][kindText][outcomeFound]); got != uint64(used) {
					b.Fatalf("%d messages found, want %d", got, used)
				}
			}
		})
	}
}
