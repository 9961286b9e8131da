package server

import (
	"errors"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"wxlookup/wechat"
)

// work is one request's scratch space, pooled so that the hot path reuses its buffers.
// Nothing in it refers to fasthttp's request buffers once the handler returns: the parsed
// messages are reset before the work goes back to the pool.
type work struct {
	msg, inner wechat.Message
	plain      []byte // decrypted message
	content    []byte // reply text
	key        []byte // normalised key scratch
	scratch    []byte // normalised first token, prefix comparisons
	id         []byte // dedupe identity
	reply      []byte // rendered reply XML
	envelope   []byte // encrypted reply envelope
	ts         []byte // the reply envelope's timestamp
	sugg       []string
	shard      int // the router reader shard of this work (see router.acquire)

	// What the answer recorded for the audit log: the query that answered, whether a
	// not-found reply offered suggestions, and the keys asked (keyLog[keyEnds[i-1]:keyEnds[i]]).
	query     string
	suggested bool
	keyLog    []byte
	keyEnds   [MaxQueries]int
	nkeys     int
	keys      [][]byte
	rec       AuditRecord
}

// freeWorks bounds the free list of works: enough for every request in flight on a busy
// server; more than that are garbage collected.
const freeWorks = 512

// getWork takes a work from the free list, or makes one. The free list is a buffered
// channel rather than a sync.Pool so that its buffers survive garbage collections (and
// the race detector's random pool drops), keeping the hot path allocation-free.
func (s *Server) getWork() *work {
	select {
	case w := <-s.free:
		return w
	default:
		return &work{shard: int(s.works.Add(1) % routerShards), sugg: make([]string, 0, MaxSuggestions)}
	}
}

// maxKeptBuffer is the most capacity a pooled work's buffer keeps for the next request:
// far more than a WeChat message or reply needs. A buffer an unusual request grew further
// is let go, so that the free list holds at most freeWorks small works.
const maxKeptBuffer = 16 << 10

// putWork resets w, so that it refers to no request's buffers, and returns it.
func (s *Server) putWork(w *work) {
	w.msg.Reset()
	w.inner.Reset()
	for _, b := range [...]*[]byte{&w.plain, &w.content, &w.key, &w.scratch, &w.id, &w.reply, &w.envelope, &w.ts, &w.keyLog} {
		if cap(*b) > maxKeptBuffer {
			*b = nil
		}
	}
	clear(w.sugg[:cap(w.sugg)]) // keys of a cache that may close
	w.rec.OpenID, w.rec.Text, w.rec.Keys = nil, nil, nil
	select {
	case s.free <- w:
	default:
	}
}

// Handler returns the webhook's fasthttp handler (the Official Account route and, when
// configured, the WeCom route). It recovers from panics with a 500.
func (s *Server) Handler() fasthttp.RequestHandler {
	oaPath, wecomPath := s.cfg.Path, s.cfg.WeComPath
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("webhook: panic", "panic", r, "stack", string(debug.Stack()))
				ctx.ResetBody()
				ctx.Error("internal error", fasthttp.StatusInternalServerError)
			}
			s.m.duration.Observe(time.Since(start).Seconds())
			if s.draining.Load() {
				ctx.SetConnectionClose() // after ctx.Error, which resets the response
			}
		}()
		switch path := ctx.Path(); {
		case string(path) == oaPath:
			s.serveOA(ctx, start)
		case s.wecom != nil && string(path) == wecomPath:
			s.serveWeCom(ctx, start)
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
		}
	}
}

// serveOA handles the Official Account route: URL verification and messages in plaintext,
// compatible and safe mode. The checks run in this order, each refusing the request on
// failure: method; the URL signature; the timestamp; the nonce's form. Then a
// verification echoes echostr, and a message is read: encrypted, its envelope alone is
// parsed, msg_signature checked and the ciphertext decrypted before the replay guard
// sees the message and the message is parsed; plaintext, it is refused when encryption is
// required, else goes to the replay guard and is parsed.
func (s *Server) serveOA(ctx *fasthttp.RequestCtx, start time.Time) {
	args := ctx.QueryArgs()
	ts, nonce := args.Peek("timestamp"), args.Peek("nonce")
	token := s.cfg.Token
	if !ctx.IsGet() && !ctx.IsPost() {
		s.reject(ctx, routeOA, kindNone, reasonMethod, nil)
		return
	}
	if !wechat.VerifySignature(token, ts, nonce, args.Peek("signature")) {
		s.reject(ctx, routeOA, kindFor(ctx), reasonSignature, nil)
		return
	}
	now := s.requestTime(start)
	t, ok := s.checkFresh(ctx, routeOA, ts, nonce, now)
	if !ok {
		return
	}
	if ctx.IsGet() {
		s.echo(ctx, routeOA, args.Peek("echostr"))
		return
	}

	w := s.getWork()
	defer s.putWork(w)
	body := ctx.PostBody()
	if string(args.Peek("encrypt_type")) == "aes" {
		dec, r, err := s.open(w, s.oa, token, ts, nonce, args.Peek("msg_signature"), body)
		if err != nil {
			s.reject(ctx, routeOA, kindNone, r, err)
			return
		}
		if s.read(ctx, w, &w.inner, routeOA, t, nonce, dec.Msg, now) {
			s.respond(ctx, w, &w.inner, routeOA, s.oa, dec, true, nonce, now, start)
		}
		return
	}
	if s.cfg.RequireEncryption {
		s.reject(ctx, routeOA, kindNone, reasonPlaintext, nil)
		return
	}
	if s.read(ctx, w, &w.msg, routeOA, t, nonce, body, now) {
		s.respond(ctx, w, &w.msg, routeOA, nil, wechat.Decrypted{}, false, nonce, now, start)
	}
}

// serveWeCom handles the WeCom route: URL verification with an encrypted echostr, and
// messages, which WeCom always encrypts. The order is serveOA's, with msg_signature in
// place of the URL signature: a message's envelope alone is parsed before msg_signature
// is checked.
func (s *Server) serveWeCom(ctx *fasthttp.RequestCtx, start time.Time) {
	args := ctx.QueryArgs()
	ts, nonce, msgSig := args.Peek("timestamp"), args.Peek("nonce"), args.Peek("msg_signature")
	if !ctx.IsGet() && !ctx.IsPost() {
		s.reject(ctx, routeWeCom, kindNone, reasonMethod, nil)
		return
	}
	now := s.requestTime(start)
	t, ok := s.checkFresh(ctx, routeWeCom, ts, nonce, now)
	if !ok {
		return
	}
	if ctx.IsGet() {
		plain, err := s.wecom.VerifyURL(msgSig, ts, nonce, args.Peek("echostr"))
		if err != nil {
			s.reject(ctx, routeWeCom, kindVerify, reasonFor(err), err)
			return
		}
		s.echo(ctx, routeWeCom, plain)
		return
	}

	w := s.getWork()
	defer s.putWork(w)
	dec, r, err := s.open(w, s.wecom, s.cfg.WeComToken, ts, nonce, msgSig, ctx.PostBody())
	if err != nil {
		s.reject(ctx, routeWeCom, kindNone, r, err)
		return
	}
	if s.read(ctx, w, &w.inner, routeWeCom, t, nonce, dec.Msg, now) {
		s.respond(ctx, w, &w.inner, routeWeCom, s.wecom, dec, true, nonce, now, start)
	}
}

// checkFresh checks a request's timestamp (within TimestampSkew of now) and its nonce's
// form, the checks both routes make after the signature, and returns the timestamp. On
// failure it has refused the request and returns false.
func (s *Server) checkFresh(ctx *fasthttp.RequestCtx, rt route, ts, nonce []byte, now time.Time) (int64, bool) {
	t, ok := s.timestamp(ts, now)
	if !ok {
		s.reject(ctx, rt, kindFor(ctx), reasonTimestamp, nil)
		return 0, false
	}
	if r, ok := nonceProblem(nonce); !ok {
		s.reject(ctx, rt, kindFor(ctx), r, nil)
		return 0, false
	}
	return t, true
}

// requestTime is the time of a request that arrived at start: start itself, the
// request's one clock reading, unless Config.Now sets the clock.
func (s *Server) requestTime(start time.Time) time.Time {
	if s.cfg.Now != nil {
		return s.now()
	}
	return start
}

// maxEchoBytes caps the echostr a URL verification echoes (SPEC section 9).
const maxEchoBytes = 128

// echo answers a URL verification that passed its signature check with echostr (for
// WeCom, the decrypted one). What is echoed is WeChat's random number in practice; to be
// sure nothing else is reflected, it must be at most maxEchoBytes of printable ASCII
// (longer: 400 field_too_long; another byte: 400 bad_request), and goes out as text/plain
// that browsers must not sniff.
func (s *Server) echo(ctx *fasthttp.RequestCtx, rt route, echostr []byte) {
	if len(echostr) > maxEchoBytes {
		s.reject(ctx, rt, kindVerify, reasonFieldTooLong, nil)
		return
	}
	for _, c := range echostr {
		if c < 0x20 || c > 0x7e {
			s.reject(ctx, rt, kindVerify, reasonBadRequest, nil)
			return
		}
	}
	s.m.requests[rt][kindVerify][outcomeVerified].Inc()
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.SetBody(echostr)
}

// open reads an encrypted request: it parses the envelope in body (nothing else of it),
// checks the msg_signature over its Encrypt and decrypts it. On failure it returns the
// rejection reason.
func (s *Server) open(w *work, c *wechat.Crypter, token string, ts, nonce, msgSig, body []byte) (wechat.Decrypted, reason, error) {
	if c == nil {
		return wechat.Decrypted{}, reasonDecrypt, errors.New("server: encrypted message but no WXLOOKUP_AES_KEY configured")
	}
	if err := w.msg.ParseEnvelope(body); err != nil {
		return wechat.Decrypted{}, reasonFor(err), err
	}
	enc := w.msg.Encrypt
	if len(enc) == 0 {
		return wechat.Decrypted{}, reasonBadXML, errors.New("server: encrypted message without <Encrypt>")
	}
	if !wechat.VerifyMsgSignature(token, ts, nonce, enc, msgSig) {
		return wechat.Decrypted{}, reasonSignature, wechat.ErrMsgSignature
	}
	// Size the buffer up front so Decrypt appends within it and the capacity is kept.
	if cap(w.plain) < len(enc) {
		w.plain = make([]byte, 0, len(enc)+len(enc)/4)
	}
	dec, err := c.Decrypt(w.plain[:0], enc)
	if err != nil {
		return dec, reasonFor(err), err
	}
	return dec, 0, nil
}

// read passes the message msg of a signed request with timestamp t and nonce through the
// replay guard and parses it into m. It reports whether the request goes on; if not, it
// has been refused.
func (s *Server) read(ctx *fasthttp.RequestCtx, w *work, m *wechat.Message, rt route, t int64, nonce, msg []byte, now time.Time) bool {
	if !s.replay.check(rt, t, nonce, msg, now) {
		s.reject(ctx, rt, kindNone, reasonReplay, nil)
		return false
	}
	if err := m.Parse(msg); err != nil {
		s.reject(ctx, rt, kindNone, reasonFor(err), err)
		return false
	}
	return true
}

// respond answers the message m: a retry within the dedupe window gets the stored reply,
// anything else is answered afresh and stored (and, with the audit log on, logged).
// Encrypted messages get an encrypted reply with the key that decrypted them. start is when
// the request arrived.
func (s *Server) respond(ctx *fasthttp.RequestCtx, w *work, m *wechat.Message, rt route, c *wechat.Crypter, dec wechat.Decrypted, encrypted bool, nonce []byte, now, start time.Time) {
	k := kindOf(m)
	w.id = appendIdentity(w.id[:0], rt, m)
	id := s.dedupe.key(w.id)

	var o outcome
	var success, retry bool
	if reply, first, ok := s.dedupe.find(w.reply[:0], id, now); ok {
		w.reply = reply
		o, success, retry = first, first == outcomeSuccess, true
		s.m.duplicates.Inc()
	} else {
		o, success = s.ans.answer(ctx, w, m, now)
		w.reply = w.reply[:0]
		if !success {
			w.reply = wechat.AppendTextReply(w.reply, m.FromUserName, m.ToUserName, now.Unix(), w.content)
		}
		s.dedupe.store(id, w.reply, o, now)
	}
	s.m.requests[rt][k][o].Inc()
	ctx.Response.Header.SetCanonical(outcomeHeaderKey, outcomeValues[o])

	switch {
	case success:
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("success")
		return // nothing answered: not audited
	case !encrypted:
		ctx.SetContentType("application/xml; charset=utf-8")
		ctx.SetBody(w.reply)
	default:
		ctx.SetContentType("application/xml; charset=utf-8")
		w.ts = strconv.AppendInt(w.ts[:0], now.Unix(), 10)
		w.envelope = c.AppendEncryptedReply(w.envelope[:0], dec.Key, dec.ReceiveID, w.reply, w.ts, nonce)
		ctx.SetBody(w.envelope)
	}
	if s.audit != nil && !retry {
		s.logAudit(w, m, o, now, start)
	}
}

// logAudit queues the audit record of the message m, answered with outcome o: one line per
// answered message (a WeChat retry is the same message, and is not logged again).
func (s *Server) logAudit(w *work, m *wechat.Message, o outcome, now, start time.Time) {
	w.keys = w.keys[:0]
	from := 0
	for _, end := range w.keyEnds[:w.nkeys] {
		w.keys = append(w.keys, w.keyLog[from:end])
		from = end
	}
	r := &w.rec
	r.Time, r.Query, r.OpenID, r.Text, r.Keys = now, w.query, m.FromUserName, m.Content, w.keys
	r.Result = auditResults[o]
	if w.suggested && (o == outcomeNotFound || o == outcomePartial) {
		r.Result = AuditSuggested
	}
	r.Latency = time.Since(start)
	s.audit.log(r)
}

// auditResults maps the outcome of an answered message to its audit result.
var auditResults = [numOutcomes]AuditResult{
	outcomeFound: AuditFound, outcomePartial: AuditNotFound, outcomeNotFound: AuditNotFound,
	outcomeHelp: AuditHelp, outcomeWelcome: AuditWelcome, outcomeStarting: AuditStarting,
	outcomeUnauthorised: AuditUnauthorised, outcomeRateLimited: AuditRateLimited,
	outcomeUnavailable: AuditUnavailable, outcomeRejected: AuditRejected,
}

// appendIdentity appends what makes a message the same message when WeChat retries it:
// account, sender and MsgId, or for events (which have none) account, sender, time, event
// and key. The fields are capped (wechat.MaxUserNameBytes, …), so the identity is under a
// kilobyte; the dedupe window keeps only its hash.
func appendIdentity(dst []byte, rt route, m *wechat.Message) []byte {
	dst = append(dst, byte(rt))
	dst = append(dst, m.ToUserName...)
	dst = append(dst, 0)
	dst = append(dst, m.FromUserName...)
	dst = append(dst, 0)
	if len(m.MsgID) > 0 {
		return append(dst, m.MsgID...)
	}
	dst = strconv.AppendInt(dst, m.CreateTime, 10)
	dst = append(dst, 0)
	dst = append(dst, m.MsgType...)
	dst = append(dst, 0)
	dst = append(dst, m.Event...)
	dst = append(dst, 0)
	return append(dst, m.EventKey...)
}

// timestamp parses the request's timestamp ts and reports whether it is within the
// configured skew of now.
func (s *Server) timestamp(ts []byte, now time.Time) (int64, bool) {
	t, ok := parseUnix(ts)
	if !ok {
		return 0, false
	}
	d := now.Unix() - t
	if d < 0 {
		d = -d
	}
	return t, d <= int64(s.cfg.TimestampSkew/time.Second)
}

// parseUnix parses a timestamp of at most 18 decimal digits (any plausible one) without
// allocating: fasthttp.ParseUint reads the bytes in place, where strconv.ParseInt of a
// []byte converted to string allocates, since its error keeps the input.
func parseUnix(b []byte) (int64, bool) {
	if len(b) > 18 {
		return 0, false
	}
	n, err := fasthttp.ParseUint(b)
	if err != nil {
		return 0, false
	}
	return int64(n), true
}

// reject answers a refused request: the one place that maps rejection reasons to HTTP
// status codes, counts them and logs them (rate-limited).
func (s *Server) reject(ctx *fasthttp.RequestCtx, rt route, k kind, r reason, err error) {
	status := fasthttp.StatusForbidden
	switch r {
	case reasonBadXML, reasonDecrypt, reasonFieldTooLong, reasonBadRequest:
		status = fasthttp.StatusBadRequest
	case reasonTooLarge:
		status = fasthttp.StatusRequestEntityTooLarge
	case reasonMethod:
		status = fasthttp.StatusMethodNotAllowed
	}
	s.m.rejected[r].Inc()
	s.m.requests[rt][k][outcomeRejected].Inc()
	if ok, dropped := s.rejects.allow(s.now()); ok {
		attrs := []any{"route", routeNames[rt], "reason", reasonNames[r], "status", status,
			"remote", ctx.RemoteIP().String()}
		if err != nil {
			attrs = append(attrs, "err", err.Error())
		}
		if dropped > 0 {
			attrs = append(attrs, "similar_lines_dropped", dropped)
		}
		s.log.Warn("webhook: request rejected", attrs...)
	}
	ctx.Error(fasthttp.StatusMessage(status), status)
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff") // after Error, which resets the headers
}

// reasonFor maps a wechat error to its rejection reason.
func reasonFor(err error) reason {
	switch {
	case errors.Is(err, wechat.ErrMsgSignature):
		return reasonSignature
	case errors.Is(err, wechat.ErrAppID):
		return reasonAppID
	case errors.Is(err, wechat.ErrMalformed):
		return reasonBadXML
	case errors.Is(err, wechat.ErrFieldTooLong):
		return reasonFieldTooLong
	}
	return reasonDecrypt
}

// kindFor is the kind of a request refused before its body was read.
func kindFor(ctx *fasthttp.RequestCtx) kind {
	if ctx.IsGet() {
		return kindVerify
	}
	return kindNone
}

// kindOf is the metrics kind of a parsed message.
func kindOf(m *wechat.Message) kind {
	switch {
	case m.IsType("text"):
		return kindText
	case m.IsType("event"):
		return kindEvent
	case m.IsType("image"):
		return kindImage
	case m.IsType("voice"):
		return kindVoice
	case m.IsType("video"), m.IsType("shortvideo"):
		return kindVideo
	case m.IsType("location"):
		return kindLocation
	case m.IsType("link"):
		return kindLink
	}
	return kindOther
}
