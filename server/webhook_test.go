package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"wxlookup/internal/logtest"
	"wxlookup/internal/metrictest"
	"wxlookup/wechat"
)

const (
	testToken  = "test-token"
	testAppID  = "wx2c2769f8efd9abc2"
	testKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	testOldKey = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	otherKey   = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
	testCorpID = "ww1234567890abcdef"
	wecomToken = "wecom-token"
)

// testServer is a webhook on 127.0.0.1:0 with its own metrics registry.
type testServer struct {
	*Server
	url string
	reg *prometheus.Registry
}

func startServer(tb testing.TB, cfg Config, lookup Lookuper) *testServer {
	tb.Helper()
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := New(cfg, lookup)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		// Shutdown closes only a listener Serve has registered: a test that ends at
		// once may come first, and Serve would then accept for ever. Closing the listener
		// ends it either way.
		ln.Close()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			tb.Errorf("serve: %v", err)
		}
	})
	return &testServer{Server: s, url: "http://" + ln.Addr().String(), reg: reg}
}

// client plays WeChat against a test server.
type client struct {
	tb      testing.TB
	base    string
	token   string
	crypter *wechat.Crypter // nil: plaintext
	wecom   bool
	mode    string // "plain", "safe", "compat"
	now     time.Time
}

type response struct {
	status int
	body   []byte
	reply  wechat.Message // parsed (decrypted) reply when the body is XML
	inner  []byte         // decrypted reply XML
	key    string         // which key decrypted the reply
}

func (c *client) query(ts, nonce string, extra url.Values) string {
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}}
	if !c.wecom {
		q.Set("signature", wechat.Signature(c.token, ts, nonce))
		q.Set("openid", "oUser")
	}
	for k, v := range extra {
		q[k] = v
	}
	return q.Encode()
}

var nonceSeq atomic.Int64

// freshNonce returns a nonce no other request of the test binary used, as WeChat sends a
// fresh one with each request.
func freshNonce() string { return strconv.FormatInt(1_320_000_000+nonceSeq.Add(1), 10) }

// post sends an inbound message XML the way WeChat would in the client's mode, with a
// fresh nonce.
func (c *client) post(path string, msg []byte) response {
	c.tb.Helper()
	return c.postNonce(path, msg, freshNonce())
}

// postNonce is post with the nonce given.
func (c *client) postNonce(path string, msg []byte, nonce string) response {
	c.tb.Helper()
	ts := strconv.FormatInt(c.now.Unix(), 10)
	extra := url.Values{}
	body := msg
	if c.crypter != nil {
		var random [16]byte
		rand.Read(random[:])
		enc := c.crypter.Current.Encrypt(nil, msg, []byte(c.crypter.ReceiveID), &random)
		extra.Set("msg_signature", wechat.MsgSignature(c.token, ts, nonce, string(enc)))
		switch {
		case c.wecom:
			body = wechat.AppendWeComRequestEnvelope(nil, []byte(c.crypter.ReceiveID), []byte("1000002"), enc)
		case c.mode == "compat":
			extra.Set("encrypt_type", "aes")
			body = append(bytes.Clone(bytes.TrimSuffix(bytes.TrimSpace(msg), []byte("</xml>"))), "<Encrypt><![CDATA["...)
			body = append(append(body, enc...), "]]></Encrypt></xml>"...)
		default:
			extra.Set("encrypt_type", "aes")
			body = wechat.AppendRequestEnvelope(nil, []byte("gh_test"), enc)
		}
	}
	return c.do(http.MethodPost, path+"?"+c.query(ts, nonce, extra), body)
}

func (c *client) do(method, pathQuery string, body []byte) response {
	c.tb.Helper()
	req, err := http.NewRequest(method, c.base+pathQuery, bytes.NewReader(body))
	if err != nil {
		c.tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.tb.Fatal(err)
	}
	r := response{status: resp.StatusCode, body: raw}
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(raw, []byte("<xml>")) {
		return r
	}
	if err := r.reply.Parse(raw); err != nil {
		c.tb.Fatalf("reply does not parse: %v\n%s", err, raw)
	}
	if len(r.reply.Encrypt) > 0 {
		if c.crypter == nil {
			c.tb.Fatalf("encrypted reply to a plaintext message:\n%s", raw)
		}
		if !wechat.VerifyMsgSignature(c.token, r.reply.TimeStamp, r.reply.Nonce, r.reply.Encrypt, r.reply.MsgSignature) {
			c.tb.Fatalf("reply MsgSignature does not verify:\n%s", raw)
		}
		dec, err := c.crypter.Decrypt(nil, r.reply.Encrypt)
		if err != nil {
			c.tb.Fatalf("reply does not decrypt: %v", err)
		}
		if string(dec.ReceiveID) != c.crypter.ReceiveID {
			c.tb.Fatalf("reply receive id %q, want %q", dec.ReceiveID, c.crypter.ReceiveID)
		}
		r.key = "current"
		if dec.UsedPrevious {
			r.key = "previous"
		}
		r.inner = append([]byte(nil), dec.Msg...)
		r.reply = wechat.Message{}
		if err := r.reply.Parse(r.inner); err != nil {
			c.tb.Fatalf("decrypted reply does not parse: %v\n%s", err, r.inner)
		}
	} else if c.crypter != nil {
		c.tb.Fatalf("plaintext reply to an encrypted message:\n%s", raw)
	}
	return r
}

var msgSeq atomic.Int64

func textXML(content string) []byte {
	return wechat.AppendTextMessage(nil, []byte("gh_test"), []byte("oUser"), time.Now().Unix(), []byte(content), 6000000000+msgSeq.Add(1))
}

func eventXML(event, key string, createTime int64) []byte {
	return wechat.AppendEventMessage(nil, []byte("gh_test"), []byte("oUser"), createTime, []byte(event), []byte(key))
}

func mustCrypter(tb testing.TB, token, receiveID, current, previous string) *wechat.Crypter {
	tb.Helper()
	c, err := wechat.NewCrypter(token, receiveID, current, previous)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func safeConfig() Config {
	return Config{Token: testToken, AppID: testAppID, AESKey: testKey, AESKeyPrevious: testOldKey,
		WeComCorpID: testCorpID, WeComToken: wecomToken, WeComAESKey: testKey}
}

func TestWebhookModes(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	want := "[18-546]的工作台位为[车体新厂房3号]"
	tests := []struct {
		name    string
		c       client
		path    string
		wantKey string
	}{
		{"plaintext", client{token: testToken, mode: "plain"}, "/wx", ""},
		{"safe mode", client{token: testToken, mode: "safe", crypter: mustCrypter(t, testToken, testAppID, testKey, "")}, "/wx", "current"},
		{"compatible mode", client{token: testToken, mode: "compat", crypter: mustCrypter(t, testToken, testAppID, testKey, "")}, "/wx", "current"},
		{"safe mode, previous key after rotation", client{token: testToken, mode: "safe", crypter: mustCrypter(t, testToken, testAppID, testOldKey, testKey)}, "/wx", "current"},
		{"wecom", client{token: wecomToken, wecom: true, crypter: mustCrypter(t, wecomToken, testCorpID, testKey, "")}, "/wecom", "current"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.tb, c.base, c.now = t, ts.url, time.Now()
			r := c.post(tt.path, textXML("?18-546"))
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if got := string(r.reply.Content); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if string(r.reply.ToUserName) != "oUser" || string(r.reply.FromUserName) != "gh_test" || !r.reply.IsType("text") {
				t.Errorf("reply addressed %q from %q type %q, want to oUser from gh_test, text", r.reply.ToUserName, r.reply.FromUserName, r.reply.MsgType)
			}
			if r.key != tt.wantKey {
				t.Errorf("reply decrypted with the %q key, want %q", r.key, tt.wantKey)
			}
		})
	}
}

// TestWebhookKeyRotation: a message encrypted with the previous key is answered with the
// previous key, since WeChat may still hold it.
func TestWebhookKeyRotation(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	// The client knows only the old key: it can read the reply only if it used that key.
	c := client{tb: t, base: ts.url, token: testToken, mode: "safe", now: time.Now(),
		crypter: mustCrypter(t, testToken, testAppID, testOldKey, "")}
	r := c.post("/wx", textXML("?18-546"))
	if r.status != http.StatusOK || string(r.reply.Content) != "[18-546]的工作台位为[车体新厂房3号]" {
		t.Fatalf("status %d content %q: the reply was not encrypted with the previous key", r.status, r.reply.Content)
	}
}

func TestWebhookURLVerification(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	c := client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	now := strconv.FormatInt(time.Now().Unix(), 10)

	r := c.do(http.MethodGet, "/wx?"+c.query(now, "42", url.Values{"echostr": {"5837397749"}}), nil)
	if r.status != http.StatusOK || string(r.body) != "5837397749" {
		t.Errorf("good signature: got %d %q, want 200 echoing echostr", r.status, r.body)
	}
	bad := url.Values{"signature": {strings.Repeat("0", 40)}, "timestamp": {now}, "nonce": {"42"}, "echostr": {"x"}}
	if r := c.do(http.MethodGet, "/wx?"+bad.Encode(), nil); r.status != http.StatusForbidden {
		t.Errorf("bad signature: got %d, want 403", r.status)
	}

	// WeCom: the echostr is encrypted and must be answered decrypted.
	wc := mustCrypter(t, wecomToken, testCorpID, testKey, "")
	var random [16]byte
	echo := string(wc.Current.Encrypt(nil, []byte("wecom-echo-1234"), []byte(testCorpID), &random))
	q := url.Values{"timestamp": {now}, "nonce": {"7"}, "echostr": {echo},
		"msg_signature": {wechat.MsgSignature(wecomToken, now, "7", echo)}}
	if r := c.do(http.MethodGet, "/wecom?"+q.Encode(), nil); r.status != http.StatusOK || string(r.body) != "wecom-echo-1234" {
		t.Errorf("wecom verify: got %d %q, want 200 and the decrypted echostr", r.status, r.body)
	}
	q.Set("msg_signature", strings.Repeat("1", 40))
	if r := c.do(http.MethodGet, "/wecom?"+q.Encode(), nil); r.status != http.StatusForbidden {
		t.Errorf("wecom verify with a bad msg_signature: got %d, want 403", r.status)
	}
	if got := metrictest.Value(t, ts.reg, "wxlookup_requests_total", "route", "oa", "kind", "verify", "outcome", "verified"); got != 1 {
		t.Errorf("verified count %v, want 1", got)
	}
}

// declareOversize sends a POST whose Content-Length is n, with only the first KiB of the
// body, and reads the answer. The server must refuse on the declared length, before the
// body. (Sending the whole body made the test flaky: the server answers 413 and closes
// while the client is still writing, and the client then reports a broken pipe instead
// of the answer.)
func declareOversize(tb testing.TB, base, path string, n int) response {
	tb.Helper()
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n", path, u.Host, n)
	req = append(req, bytes.Repeat([]byte("x"), 1024)...)
	if _, err := conn.Write(req); err != nil { // one write, well inside the socket's buffer
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatalf("reading the answer to a declared %d-byte body: %v", n, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: body}
}

// TestWebhookBadInput: each bad input of SPEC section 5 gets its status code and reason,
// and the server goes on answering.
func TestWebhookBadInput(t *testing.T) {
	cfg := safeConfig()
	ts := startServer(t, cfg, mapLookup(t, demoRows))
	now := time.Now()
	nowTS := strconv.FormatInt(now.Unix(), 10)
	plain := client{tb: t, base: ts.url, token: testToken, now: now}
	safe := client{tb: t, base: ts.url, token: testToken, mode: "safe", now: now, crypter: mustCrypter(t, testToken, testAppID, testKey, "")}

	sign := func(ts, nonce string, extra url.Values) string {
		return plain.query(ts, nonce, extra)
	}
	tests := []struct {
		name   string
		do     func() response
		status int
		reason string
	}{
		{"wrong signature", func() response {
			q := url.Values{"signature": {wechat.Signature("wrong", nowTS, "1")}, "timestamp": {nowTS}, "nonce": {"1"}}
			return plain.do(http.MethodPost, "/wx?"+q.Encode(), textXML("?18-546"))
		}, 403, "signature"},
		{"no signature", func() response {
			return plain.do(http.MethodPost, "/wx?timestamp="+nowTS+"&nonce=1", textXML("?18-546"))
		}, 403, "signature"},
		{"replayed old timestamp", func() response {
			old := strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)
			return plain.do(http.MethodPost, "/wx?"+sign(old, "1", nil), textXML("?18-546"))
		}, 403, "timestamp"},
		{"timestamp from the future", func() response {
			future := strconv.FormatInt(now.Add(10*time.Minute).Unix(), 10)
			return plain.do(http.MethodPost, "/wx?"+sign(future, "1", nil), textXML("?18-546"))
		}, 403, "timestamp"},
		{"broken XML", func() response {
			return plain.do(http.MethodPost, "/wx?"+sign(nowTS, freshNonce(), nil), []byte("<xml><ToUserName><![CDATA[gh"))
		}, 400, "bad_xml"},
		{"oversize body", func() response {
			return declareOversize(t, ts.url, "/wx?"+sign(nowTS, "1", nil), MaxBodyBytes+1)
		}, 413, "too_large"},
		{"wrong key", func() response {
			c := safe
			c.crypter = mustCrypter(t, testToken, testAppID, otherKey, "")
			return c.post("/wx", textXML("?18-546"))
		}, 400, "decrypt"},
		{"wrong appid", func() response {
			c := safe
			c.crypter = mustCrypter(t, testToken, "wx0000000000000000", testKey, "")
			return c.post("/wx", textXML("?18-546"))
		}, 403, "appid"},
		{"wrong msg_signature", func() response {
			var random [16]byte
			enc := safe.crypter.Current.Encrypt(nil, textXML("?1"), []byte(testAppID), &random)
			q := sign(nowTS, "1", url.Values{"encrypt_type": {"aes"}, "msg_signature": {wechat.MsgSignature("wrong", nowTS, "1", string(enc))}})
			return plain.do(http.MethodPost, "/wx?"+q, wechat.AppendRequestEnvelope(nil, []byte("gh_test"), enc))
		}, 403, "signature"},
		{"truncated ciphertext", func() response {
			var random [16]byte
			enc := safe.crypter.Current.Encrypt(nil, textXML("?1"), []byte(testAppID), &random)
			enc = enc[:len(enc)/2]
			q := sign(nowTS, "1", url.Values{"encrypt_type": {"aes"}, "msg_signature": {wechat.MsgSignature(testToken, nowTS, "1", string(enc))}})
			return plain.do(http.MethodPost, "/wx?"+q, wechat.AppendRequestEnvelope(nil, []byte("gh_test"), enc))
		}, 400, "decrypt"},
		{"mis-padded ciphertext", func() response {
			// Whole AES blocks under the right key, but the PKCS#7 padding is 0x21 (33), past
			// the 32-byte block WeChat pads to.
			enc := misPadded(t, testKey, textXML("?1"), testAppID)
			q := sign(nowTS, "1", url.Values{"encrypt_type": {"aes"}, "msg_signature": {wechat.MsgSignature(testToken, nowTS, "1", enc)}})
			return plain.do(http.MethodPost, "/wx?"+q, wechat.AppendRequestEnvelope(nil, []byte("gh_test"), []byte(enc)))
		}, 400, "decrypt"},
		{"encrypted envelope without Encrypt", func() response {
			q := sign(nowTS, "1", url.Values{"encrypt_type": {"aes"}, "msg_signature": {"x"}})
			return plain.do(http.MethodPost, "/wx?"+q, []byte("<xml><ToUserName>gh</ToUserName></xml>"))
		}, 400, "bad_xml"},
		{"wrong method", func() response {
			return plain.do(http.MethodPut, "/wx?"+sign(nowTS, "1", nil), nil)
		}, 405, "method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason)
			r := tt.do()
			if r.status != tt.status {
				t.Errorf("got status %d (%s), want %d", r.status, r.body, tt.status)
			}
			if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason) - before; got != 1 {
				t.Errorf("wxlookup_rejected_total{reason=%q} rose by %v, want 1", tt.reason, got)
			}
			// The server goes on answering.
			if r := safe.post("/wx", textXML("?18-546")); r.status != http.StatusOK || len(r.reply.Content) == 0 {
				t.Fatalf("after %s the next good message got %d %q", tt.name, r.status, r.body)
			}
		})
	}
}

func TestWebhookRequireEncryption(t *testing.T) {
	cfg := safeConfig()
	cfg.RequireEncryption = true
	ts := startServer(t, cfg, mapLookup(t, demoRows))
	c := client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	if r := c.post("/wx", textXML("?18-546")); r.status != http.StatusForbidden {
		t.Fatalf("plaintext with encryption required: got %d, want 403", r.status)
	}
	if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "plaintext"); got != 1 {
		t.Errorf("rejected{plaintext} = %v, want 1", got)
	}
}

// TestWebhookRetriesIdentical: WeChat's retries of a message get byte-for-byte the same
// reply, even when the data changed in between, and are counted.
func TestWebhookRetriesIdentical(t *testing.T) {
	rows := map[string]string{"18-546": "车体新厂房3号"}
	var lookups atomic.Int64
	base := mapLookup(t, rows)
	changed := mapLookup(t, map[string]string{"18-546": "moved"})
	lookup := LookupFunc(func(ctx context.Context, k []byte) ([]byte, string, bool, error) {
		if lookups.Add(1) > 1 {
			return changed(ctx, k)
		}
		return base(ctx, k)
	})
	ts := startServer(t, Config{}, lookup)
	c := client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	msg := textXML("?18-546")
	first := c.post("/wx", msg)
	for i := range 3 {
		c.now = c.now.Add(5 * time.Second)
		again := c.post("/wx", msg)
		if !bytes.Equal(again.body, first.body) {
			t.Fatalf("retry %d: got\n%s\nwant\n%s", i+1, again.body, first.body)
		}
	}
	if got := metrictest.Value(t, ts.reg, "wxlookup_duplicates_total"); got != 3 {
		t.Errorf("duplicates %v, want 3", got)
	}
	// Events have no MsgId: sender, time, event and key identify them.
	ev := eventXML("subscribe", "qrscene_7", time.Now().Unix())
	e1, e2 := c.post("/wx", ev), c.post("/wx", ev)
	if !bytes.Equal(e1.body, e2.body) || !strings.HasPrefix(string(e1.reply.Content), "欢迎关注") {
		t.Errorf("event retry: got %q then %q", e1.body, e2.body)
	}
	// A new message is answered afresh.
	if r := c.post("/wx", textXML("?18-546")); string(r.reply.Content) != "[18-546]的工作台位为[moved]" {
		t.Errorf("new message: got %q, want the changed data", r.reply.Content)
	}
}

func TestWebhookEventsAndTypes(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	c := client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	if r := c.post("/wx", eventXML("unsubscribe", "", 1)); string(r.body) != "success" {
		t.Errorf("unsubscribe: got %q, want success", r.body)
	}
	// Safe mode answers "success" unencrypted, as WeChat accepts.
	s := client{tb: t, base: ts.url, token: testToken, mode: "safe", now: time.Now(), crypter: mustCrypter(t, testToken, testAppID, testKey, "")}
	if r := s.post("/wx", eventXML("VIEW", "https://example.com", 2)); string(r.body) != "success" {
		t.Errorf("safe VIEW: got %q, want success", r.body)
	}
	img := []byte(`<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://x/y.jpg]]></PicUrl><MediaId><![CDATA[m]]></MediaId><MsgId>99</MsgId></xml>`)
	if r := c.post("/wx", img); !strings.HasPrefix(string(r.reply.Content), "发送工件号") {
		t.Errorf("image: got %q, want the help text", r.reply.Content)
	}
	if got := metrictest.Value(t, ts.reg, "wxlookup_requests_total", "route", "oa", "kind", "image", "outcome", "help"); got != 1 {
		t.Errorf("requests{kind=image,outcome=help} = %v, want 1", got)
	}
}

func TestWebhookReplyLimits(t *testing.T) {
	long := strings.Repeat("车", 1000) + "]]>" + "\x01"
	ts := startServer(t, Config{}, mapLookup(t, map[string]string{"X-1": long}))
	c := client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	r := c.post("/wx", textXML("x-1"))
	if n := len(r.reply.Content); n > wechat.MaxTextBytes {
		t.Errorf("reply content %d bytes, want at most %d", n, wechat.MaxTextBytes)
	}
	if !strings.HasSuffix(string(r.reply.Content), "…") {
		t.Errorf("cut reply does not end with …: %q", r.reply.Content[len(r.reply.Content)-20:])
	}
	r = c.post("/wx", textXML("?]]>\x01"))
	if !strings.Contains(string(r.reply.Content), "[]]>]未找到") {
		t.Errorf("]]> in a not-found reply: got %q", r.reply.Content)
	}
}

func TestWebhookPanicRecovered(t *testing.T) {
	var calls atomic.Int64
	ts := startServer(t, Config{}, LookupFunc(func(context.Context, []byte) ([]byte, string, bool, error) {
		if calls.Add(1) == 1 {
			panic("lookup exploded")
		}
		return []byte("ok"), "k", true, nil
	}))
	c := client{tb: t, base: ts.url, token: testToken, now: time.Now()}
	if r := c.post("/wx", textXML("?1")); r.status != http.StatusInternalServerError {
		t.Fatalf("panicking handler: got %d, want 500", r.status)
	}
	if r := c.post("/wx", textXML("?1")); r.status != http.StatusOK || string(r.reply.Content) != "ok" {
		t.Fatalf("after a panic: got %d %q, want 200 ok", r.status, r.reply.Content)
	}
}

func TestConfigErrorsNameSetting(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no token", Config{}, "WXLOOKUP_TOKEN"},
		{"bad path", Config{Token: "t", Path: "wx"}, "WXLOOKUP_PATH"},
		{"bad key", Config{Token: "t", AESKey: "short"}, "WXLOOKUP_AES_KEY"},
		{"previous without current", Config{Token: "t", AESKeyPrevious: testKey}, "WXLOOKUP_AES_KEY_PREVIOUS"},
		{"require without key", Config{Token: "t", RequireEncryption: true}, "WXLOOKUP_REQUIRE_ENCRYPTION"},
		{"wecom without token", Config{Token: "t", WeComCorpID: "ww1", WeComAESKey: testKey}, "WXLOOKUP_WECOM_TOKEN"},
		{"negative skew", Config{Token: "t", TimestampSkew: -1}, "WXLOOKUP_TIMESTAMP_SKEW"},
		{"skew over an hour", Config{Token: "t", TimestampSkew: time.Hour + time.Second}, "WXLOOKUP_TIMESTAMP_SKEW"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, mapLookup(t, nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
			if strings.Contains(fmt.Sprint(err), testKey) {
				t.Fatalf("error shows the key: %v", err)
			}
		})
	}
}

// handlerRequest builds a fasthttp request context for calling the handler directly.
func handlerRequest(tb testing.TB, uri string, body []byte) *fasthttp.RequestCtx {
	tb.Helper()
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(uri)
	req.SetBody(body)
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}, nil)
	return ctx
}

func plainURI(now time.Time) string { return plainURINonce(now, "77") }

// plainURINonce is plainURI with the nonce given: the replay guard binds a (timestamp,
// nonce) to the first message signed with it.
func plainURINonce(now time.Time, nonce string) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	return "/wx?signature=" + wechat.Signature(testToken, ts, nonce) + "&timestamp=" + ts + "&nonce=" + nonce + "&openid=oUser"
}

// TestHandlerAllocations: the plaintext hot path (signature, replay guard, parse, lookup,
// render) allocates nothing once warm.
func TestHandlerAllocations(t *testing.T) {
	s, err := New(Config{Token: testToken, DedupeWindow: -1, RatePerMinute: -1}, mapLookup(t, demoRows))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	now := time.Now()
	ctx := handlerRequest(t, plainURI(now), textXML("?18-546"))
	h(ctx)
	if !strings.Contains(string(ctx.Response.Body()), "车体新厂房3号") {
		t.Fatalf("unexpected reply %s", ctx.Response.Body())
	}
	n := testing.AllocsPerRun(200, func() {
		ctx.Response.Reset()
		h(ctx)
	})
	if n != 0 {
		t.Fatalf("handler allocates %v times per request, want 0", n)
	}
}

// TestRequestTime: a request's time is its arrival, the handler's one clock reading,
// unless Config.Now sets the clock.
func TestRequestTime(t *testing.T) {
	start := time.Now()
	s, err := New(Config{Token: testToken}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.requestTime(start); !got.Equal(start) {
		t.Errorf("without Config.Now: got %v, want the arrival %v", got, start)
	}
	set := time.Unix(1_700_000_000, 0)
	s, err = New(Config{Token: testToken, Now: func() time.Time { return set }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.requestTime(start); !got.Equal(set) {
		t.Errorf("with Config.Now: got %v, want its %v", got, set)
	}
}

// BenchmarkHandlerPlaintext: 1,024 messages, each with its own nonce as WeChat sends
// them, in turn; after the first round every message is a retry answered from the dedupe
// window, as a replayed request is.
func BenchmarkHandlerPlaintext(b *testing.B) {
	s, err := New(Config{Token: testToken, RatePerMinute: -1, Logger: slog.New(slog.DiscardHandler)}, mapLookup(b, demoRows))
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	msgs := make([][]byte, 1024)
	uris := make([]string, len(msgs))
	for i := range msgs {
		msgs[i] = wechat.AppendTextMessage(nil, []byte("gh_test"), []byte("oUser"), now.Unix(), []byte("?18-546"), int64(i))
		nonce := strconv.Itoa(1_000_000 + i)
		uris[i] = "/wx?signature=" + wechat.Signature(testToken, ts, nonce) + "&timestamp=" + ts + "&nonce=" + nonce + "&openid=oUser"
	}
	ctx := handlerRequest(b, uris[0], msgs[0])
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ctx.Request.SetRequestURI(uris[i%len(msgs)])
		ctx.Request.SetBody(msgs[i%len(msgs)])
		ctx.Response.Reset()
		h(ctx)
		if ctx.Response.StatusCode() != http.StatusOK {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		i++
	}
}

// BenchmarkHandlerPlaintextFresh: every request a new message with a new nonce, 4,096 of
// them a second, so the replay guard binds and the dedupe window stores on every request.
// After 65,536 requests a new server takes over (outside the timing), so no request is a
// retry.
func BenchmarkHandlerPlaintextFresh(b *testing.B) {
	const n, perSecond = 1 << 16, 4096
	start := time.Now()
	clock := start
	newHandler := func() fasthttp.RequestHandler {
		s, err := New(Config{Token: testToken, RatePerMinute: -1, Now: func() time.Time { return clock },
			Logger: slog.New(slog.DiscardHandler)}, mapLookup(b, demoRows))
		if err != nil {
			b.Fatal(err)
		}
		return s.Handler()
	}
	h := newHandler()
	msgs := make([][]byte, n)
	uris := make([]string, n)
	for i := range msgs {
		now := start.Add(time.Duration(i/perSecond) * time.Second)
		ts := strconv.FormatInt(now.Unix(), 10)
		msgs[i] = wechat.AppendTextMessage(nil, []byte("gh_test"), []byte("oUser"), now.Unix(), []byte("?18-546"), int64(i))
		nonce := strconv.Itoa(1_000_000 + i)
		uris[i] = "/wx?signature=" + wechat.Signature(testToken, ts, nonce) + "&timestamp=" + ts + "&nonce=" + nonce + "&openid=oUser"
	}
	ctx := handlerRequest(b, uris[0], msgs[0])
	b.ReportAllocs()
	i := 0
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
		h(ctx)
		if ctx.Response.StatusCode() != http.StatusOK {
			b.Fatalf("request %d: status %d: %s", i, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		i++
	}
}

func BenchmarkHandlerSafe(b *testing.B) {
	s, err := New(Config{Token: testToken, AppID: testAppID, AESKey: testKey, RatePerMinute: -1,
		Logger: slog.New(slog.DiscardHandler)}, mapLookup(b, demoRows))
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	c := mustCrypter(b, testToken, testAppID, testKey, "")
	var random [16]byte
	enc := c.Current.Encrypt(nil, textXML("?18-546"), []byte(testAppID), &random)
	uri := "/wx?signature=" + wechat.Signature(testToken, ts, "77") + "&timestamp=" + ts + "&nonce=77&encrypt_type=aes&msg_signature=" +
		wechat.MsgSignature(testToken, ts, "77", string(enc))
	ctx := handlerRequest(b, uri, wechat.AppendRequestEnvelope(nil, []byte("gh_test"), enc))
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(ctx)
	}
}

// TestDrain: once Drain has begun, a reply on a keep-alive connection tells the client to
// close it, and Drain returns as soon as no connection is left open. Without that, Shutdown
// closes the idle connection while the client may be sending on it, and the request is lost.
func TestDrain(t *testing.T) {
	ts := startServer(t, Config{}, mapLookup(t, demoRows))
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	post := func() *http.Response {
		t.Helper()
		now, nonce := strconv.FormatInt(time.Now().Unix(), 10), freshNonce()
		q := "?signature=" + wechat.Signature(testToken, now, nonce) + "&timestamp=" + now + "&nonce=" + nonce
		resp, err := hc.Post(ts.url+"/wx"+q, "text/xml", bytes.NewReader(textXML("?18-546")))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := post(); r.StatusCode != http.StatusOK || r.Close {
		t.Fatalf("before Drain: status %d, close %v; want 200 on a kept-alive connection", r.StatusCode, r.Close)
	}
	drained := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { drained <- ts.Drain(ctx) }()
	// The client's connection is open (idle), so Drain waits for it.
	if r := post(); r.StatusCode != http.StatusOK || !r.Close {
		t.Fatalf("during Drain: status %d, close %v; want 200 with Connection: close", r.StatusCode, r.Close)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v, want nil once the client closed its connection", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Drain did not return after the last connection closed")
	}
}

// misPadded encrypts random16 ‖ len ‖ msg ‖ receiveID the way WeChat does, except that the
// padding bytes are 33: the ciphertext decrypts but its padding is invalid.
func misPadded(tb testing.TB, encodingAESKey string, msg []byte, receiveID string) string {
	tb.Helper()
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil {
		tb.Fatal(err)
	}
	p := make([]byte, 20, 20+len(msg)+len(receiveID)+64)
	binary.BigEndian.PutUint32(p[16:], uint32(len(msg)))
	p = append(append(p, msg...), receiveID...)
	for len(p)%32 != 0 {
		p = append(p, 33)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(p, p)
	return base64.StdEncoding.EncodeToString(p)
}

// TestWebhookReplayWithinSkew: a captured request replayed byte for byte within the
// timestamp skew (same signature, nonce and body) is answered with exactly the first reply
// from the dedupe window and counted as a duplicate, in plaintext and in safe mode.
func TestWebhookReplayWithinSkew(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	for _, tt := range []struct {
		name string
		c    client
	}{
		{"plaintext", client{tb: t, base: ts.url, token: testToken, mode: "plain"}},
		{"safe", client{tb: t, base: ts.url, token: testToken, mode: "safe", crypter: mustCrypter(t, testToken, testAppID, testKey, "")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.tb, c.now = t, time.Now()
			// Capture the request: post it once through a recording transport.
			var capturedURL string
			var capturedBody []byte
			rec := &recorder{inner: http.DefaultTransport, onRequest: func(u string, b []byte) { capturedURL, capturedBody = u, b }}
			old := http.DefaultClient.Transport
			http.DefaultClient.Transport = rec
			first := c.post("/wx", textXML("?18-546"))
			http.DefaultClient.Transport = old
			if first.status != http.StatusOK {
				t.Fatalf("first: %d %s", first.status, first.body)
			}
			before := metrictest.Value(t, ts.reg, "wxlookup_duplicates_total")
			again := c.do(http.MethodPost, strings.TrimPrefix(capturedURL, ts.url), capturedBody)
			// In safe mode the envelope is encrypted afresh; the reply inside is the same.
			want, got := first.body, again.body
			if c.crypter != nil {
				want, got = first.inner, again.inner
			}
			if again.status != http.StatusOK || !bytes.Equal(got, want) {
				t.Errorf("replay: got %d\n%s\nwant 200 and the first reply\n%s", again.status, got, want)
			}
			if got := metrictest.Value(t, ts.reg, "wxlookup_duplicates_total") - before; got != 1 {
				t.Errorf("duplicates rose by %v, want 1", got)
			}
		})
	}
}

// recorder is an http.RoundTripper that reports each request's URL and body.
type recorder struct {
	inner     http.RoundTripper
	onRequest func(url string, body []byte)
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	r.onRequest(req.URL.String(), b)
	req.Body = io.NopCloser(bytes.NewReader(b))
	return r.inner.RoundTrip(req)
}

// TestWebhookSlowLoris: clients that send their headers a byte at a time are cut off with
// 408 after ReadTimeout, counted as rejected{reason="timeout"}, and hold up no one else:
// normal requests are answered meanwhile.
func TestWebhookSlowLoris(t *testing.T) {
	const readTimeout = time.Second
	ts := startServer(t, Config{ReadTimeout: readTimeout, RatePerMinute: -1}, mapLookup(t, demoRows))
	addr := strings.TrimPrefix(ts.url, "http://")
	const slow = 20
	type result struct {
		reply string
		took  time.Duration
	}
	results := make(chan result, slow)
	stop := make(chan struct{})
	defer close(stop)
	for range slow {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() {
			start := time.Now()
			msg := []byte("POST /wx?timestamp=1&nonce=1&signature=x HTTP/1.1\r\nHost: wx\r\nX-Slow: ")
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			// One byte per tick, never finishing the headers, until the server hangs up.
			go func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if _, err := conn.Write(msg[i%len(msg) : i%len(msg)+1]); err != nil {
						return
					}
				}
			}()
			conn.SetReadDeadline(time.Now().Add(10 * readTimeout))
			b, _ := io.ReadAll(conn)
			results <- result{string(b), time.Since(start)}
		}()
	}
	// Meanwhile, normal requests are answered at once.
	c := client{tb: t, base: ts.url, token: testToken}
	for i := range 20 {
		c.now = time.Now()
		t0 := time.Now()
		r := c.post("/wx", textXML("?18-546"))
		if r.status != http.StatusOK || string(r.reply.Content) != "[18-546]的工作台位为[车体新厂房3号]" {
			t.Fatalf("request %d during the slow-loris: %d %q", i, r.status, r.body)
		}
		// Held up behind the slow clients, it would wait until they are cut at ReadTimeout.
		if d := time.Since(t0); d >= readTimeout {
			t.Errorf("request %d took %s during the slow-loris, want it not held up until ReadTimeout (%s)", i, d, readTimeout)
		}
	}
	for range slow {
		r := <-results
		if !strings.HasPrefix(r.reply, "HTTP/1.1 408") {
			t.Errorf("slow client got %q, want a 408 and the connection closed", r.reply)
		}
		if r.took > 3*readTimeout {
			t.Errorf("slow client was cut after %s, want about ReadTimeout (%s)", r.took, readTimeout)
		}
	}
	if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "timeout"); got != slow {
		t.Errorf("rejected{timeout} = %v, want %d", got, slow)
	}
}

// TestWebhookHeaderFlood: a request with a huge number of headers gets 431, is counted as
// rejected{reason="headers_too_large"}, and the server goes on answering; a request whose
// headers fit the read buffer is answered normally.
func TestWebhookHeaderFlood(t *testing.T) {
	ts := startServer(t, Config{}, mapLookup(t, demoRows))
	addr := strings.TrimPrefix(ts.url, "http://")
	now := strconv.FormatInt(time.Now().Unix(), 10)
	body := textXML("?18-546")
	request := func(headers int) string {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "POST /wx?signature=%s&timestamp=%s&nonce=7 HTTP/1.1\r\nHost: wx\r\nConnection: close\r\nContent-Length: %d\r\n",
			wechat.Signature(testToken, now, "7"), now, len(body))
		for i := range headers {
			fmt.Fprintf(&b, "X-H%d: v\r\n", i)
		}
		b.WriteString("\r\n")
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			conn.Write([]byte(b.String()))
			conn.Write(body)
		}()
		reply, _ := io.ReadAll(conn)
		return string(reply)
	}
	if r := request(10_000); !strings.HasPrefix(r, "HTTP/1.1 431") {
		t.Errorf("10,000 headers: got %.60q, want 431", r)
	}
	if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "headers_too_large"); got != 1 {
		t.Errorf("rejected{headers_too_large} = %v, want 1", got)
	}
	if r := request(100); !strings.HasPrefix(r, "HTTP/1.1 200") || !strings.Contains(r, "车体新厂房3号") {
		t.Errorf("100 headers: got %.200q, want 200 with the answer", r)
	}
}

func TestParseUnix(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1714036504", 1714036504, true},
		{"0", 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"17140365O4", 0, false},
		{"1234567890123456789", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseUnix([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseUnix(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// textFrom is a text message from the sender from, with fields as given (nil: the default).
func textFrom(from, msgID string) []byte {
	return []byte(`<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[` + from +
		`]]></FromUserName><CreateTime>` + strconv.FormatInt(time.Now().Unix(), 10) +
		`</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[?18-546]]></Content><MsgId>` + msgID + `</MsgId></xml>`)
}

// modeClients are a plaintext, a safe-mode, a compatible-mode and a WeCom client against
// a server with safeConfig.
func modeClients(tb testing.TB, base string, now time.Time) []struct {
	name string
	c    client
	path string
} {
	return []struct {
		name string
		c    client
		path string
	}{
		{"plaintext", client{tb: tb, base: base, token: testToken, mode: "plain", now: now}, "/wx"},
		{"safe", client{tb: tb, base: base, token: testToken, mode: "safe", now: now, crypter: mustCrypter(tb, testToken, testAppID, testKey, "")}, "/wx"},
		{"compatible", client{tb: tb, base: base, token: testToken, mode: "compat", now: now, crypter: mustCrypter(tb, testToken, testAppID, testKey, "")}, "/wx"},
		{"wecom", client{tb: tb, base: base, token: wecomToken, wecom: true, now: now, crypter: mustCrypter(tb, wecomToken, testCorpID, testKey, "")}, "/wecom"},
	}
}

// TestWebhookFieldCaps: an identifier over its cap (SPEC section 9) is refused with 400
// and rejected_total{reason="field_too_long"} in every mode, before anything is stored;
// at the cap it is answered. The rejections are logged, rate-limited, without the value.
func TestWebhookFieldCaps(t *testing.T) {
	var logs logtest.Buffer
	now := time.Now()
	cfg := safeConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Now = func() time.Time { return now } // one log-limiter period for the whole test
	cfg.RatePerMinute = -1
	ts := startServer(t, cfg, mapLookup(t, demoRows))
	long := strings.Repeat("o", 20<<10) // compatible mode sends it twice, once encrypted: 48 KB
	tests := []struct {
		name   string
		msg    []byte
		status int
		reason string // "" for an answer
	}{
		{"FromUserName at the cap", textFrom(strings.Repeat("o", wechat.MaxUserNameBytes), "1"), 200, ""},
		{"FromUserName over the cap", textFrom(strings.Repeat("o", wechat.MaxUserNameBytes+1), "2"), 400, "field_too_long"},
		{"FromUserName of 20 KB", textFrom(long, "3"), 400, "field_too_long"},
		{"MsgId of 21 digits", textFrom("oUser", strings.Repeat("9", wechat.MaxMsgIDDigits+1)), 400, "field_too_long"},
		{"MsgId not a number", textFrom("oUser", "12ab"), 400, "bad_xml"},
		{"EventKey over the cap", eventXML("CLICK", strings.Repeat("k", wechat.MaxEventBytes+1), now.Unix()), 400, "field_too_long"},
		{"Event over the cap", eventXML(strings.Repeat("e", wechat.MaxEventBytes+1), "", now.Unix()), 400, "field_too_long"},
	}
	for _, mc := range modeClients(t, ts.url, now) {
		for _, tt := range tests {
			t.Run(mc.name+"/"+tt.name, func(t *testing.T) {
				before := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "field_too_long")
				c := mc.c
				c.tb = t
				r := c.post(mc.path, tt.msg)
				if r.status != tt.status {
					t.Fatalf("got status %d (%.80s), want %d", r.status, r.body, tt.status)
				}
				want := 0.0
				if tt.reason == "field_too_long" {
					want = 1
				}
				if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "field_too_long") - before; got != want {
					t.Errorf("rejected{field_too_long} rose by %v, want %v", got, want)
				}
				if tt.reason == "" && !strings.Contains(string(r.reply.Content), "车体新厂房3号") {
					t.Errorf("got %q, want the answer", r.reply.Content)
				}
			})
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var rejected int
	for _, l := range lines {
		if strings.Contains(l, "reason=field_too_long") {
			rejected++
		}
		if len(l) > 2000 {
			t.Errorf("a log line of %d bytes: the value must not be logged: %.200s…", len(l), l)
		}
	}
	if rejected == 0 || rejected > 10 {
		t.Errorf("%d log lines with reason=field_too_long, want 1 to 10 (rate-limited)", rejected)
	}
}

// TestWebhookXMLRules: NUL, invalid UTF-8 and a repeated field are 400 bad_xml in every
// mode (SPEC section 9).
func TestWebhookXMLRules(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	now := time.Now()
	tests := []struct {
		name string
		msg  []byte
	}{
		{"NUL in Content", []byte("<xml><ToUserName>gh_test</ToUserName><FromUserName>oUser</FromUserName><MsgType>text</MsgType><Content>?18-546\x00</Content><MsgId>1</MsgId></xml>")},
		{"invalid UTF-8 in FromUserName", []byte("<xml><ToUserName>gh_test</ToUserName><FromUserName>o\xffUser</FromUserName><MsgType>text</MsgType><Content>?18-546</Content><MsgId>2</MsgId></xml>")},
		{"FromUserName twice", []byte("<xml><ToUserName>gh_test</ToUserName><FromUserName>oUser</FromUserName><FromUserName>oOther</FromUserName><MsgType>text</MsgType><Content>?18-546</Content><MsgId>3</MsgId></xml>")},
		{"MsgId and MsgID", []byte("<xml><ToUserName>gh_test</ToUserName><FromUserName>oUser</FromUserName><MsgType>text</MsgType><Content>?18-546</Content><MsgId>4</MsgId><MsgID>5</MsgID></xml>")},
	}
	for _, mc := range modeClients(t, ts.url, now) {
		for _, tt := range tests {
			t.Run(mc.name+"/"+tt.name, func(t *testing.T) {
				before := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "bad_xml")
				c := mc.c
				c.tb = t
				if r := c.post(mc.path, tt.msg); r.status != http.StatusBadRequest {
					t.Fatalf("got status %d (%.80s), want 400", r.status, r.body)
				}
				if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "bad_xml") - before; got != 1 {
					t.Errorf("rejected{bad_xml} rose by %v, want 1", got)
				}
			})
		}
	}
}

// TestWebhookSignatureBeforeBody: an encrypted POST (WeCom, safe and compatible mode) has
// its msg_signature checked before anything but the envelope is read, so a body with a
// bad msg_signature is 403 signature whatever else it holds; with a good one, the
// envelope's other elements are never read.
func TestWebhookSignatureBeforeBody(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	now := time.Now()
	nowTS := strconv.FormatInt(now.Unix(), 10)
	long := strings.Repeat("o", 20<<10)
	type route struct {
		name, path, token, receiveID string
		extra                        url.Values
	}
	routes := []route{
		{"wecom", "/wecom", wecomToken, testCorpID, url.Values{}},
		{"safe", "/wx", testToken, testAppID, url.Values{"encrypt_type": {"aes"}}},
	}
	// envelope wraps the ciphertext of inner with other elements around it.
	envelope := func(enc []byte, around string) []byte {
		return []byte("<xml><ToUserName>gh_test</ToUserName>" + around + "<Encrypt><![CDATA[" + string(enc) + "]]></Encrypt>" + around + "</xml>")
	}
	tests := []struct {
		name     string
		inner    []byte
		around   string
		goodSig  bool
		status   int
		reason   string
		wantBody string
	}{
		{"bad signature, over-long FromUserName around", textXML("?18-546"), "<FromUserName>" + long + "</FromUserName>", false, 403, "signature", ""},
		{"bad signature, repeated fields around", textXML("?18-546"), "<MsgId>1</MsgId><MsgId>x</MsgId>", false, 403, "signature", ""},
		{"bad signature, inner not XML", []byte("<xml><Content>\x00"), "", false, 403, "signature", ""},
		{"good signature, over-long and repeated fields around are not read", textXML("?18-546"), "<FromUserName>" + long + "</FromUserName><MsgId>1</MsgId>", true, 200, "", "车体新厂房3号"},
		{"good signature, inner not XML", []byte("<xml><Content>\x00"), "", true, 400, "bad_xml", ""},
		{"good signature, inner FromUserName over the cap", textFrom(long[:wechat.MaxUserNameBytes+1], "7"), "", true, 400, "field_too_long", ""},
	}
	for _, rt := range routes {
		crypter := mustCrypter(t, rt.token, rt.receiveID, testKey, "")
		c := client{tb: t, base: ts.url, token: rt.token, wecom: rt.name == "wecom", now: now, crypter: crypter}
		for _, tt := range tests {
			t.Run(rt.name+"/"+tt.name, func(t *testing.T) {
				var random [16]byte
				enc := crypter.Current.Encrypt(nil, tt.inner, []byte(rt.receiveID), &random)
				nonce := freshNonce()
				extra := url.Values{"msg_signature": {wechat.MsgSignature(rt.token, nowTS, nonce, string(enc))}}
				if !tt.goodSig {
					extra.Set("msg_signature", wechat.MsgSignature("wrong", nowTS, nonce, string(enc)))
				}
				for k, v := range rt.extra {
					extra[k] = v
				}
				var before float64
				if tt.reason != "" {
					before = metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason)
				}
				c.tb = t
				r := c.do(http.MethodPost, rt.path+"?"+c.query(nowTS, nonce, extra), envelope(enc, tt.around))
				if r.status != tt.status {
					t.Fatalf("got status %d (%.80s), want %d", r.status, r.body, tt.status)
				}
				if tt.reason != "" {
					if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason) - before; got != 1 {
						t.Errorf("rejected{%s} rose by %v, want 1", tt.reason, got)
					}
				}
				if tt.wantBody != "" && !strings.Contains(string(r.reply.Content), tt.wantBody) {
					t.Errorf("got %q, want the answer", r.reply.Content)
				}
			})
		}
	}
}

// TestWebhookReplay: a (timestamp, nonce) is bound to the first message signed with it
// (SPEC section 9). The same message again is a retry, answered with the first reply; any
// other message with the same timestamp and nonce is 403 replay — in every mode.
func TestWebhookReplay(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	now := time.Now()
	for _, mc := range modeClients(t, ts.url, now) {
		t.Run(mc.name, func(t *testing.T) {
			c := mc.c
			c.tb = t
			nonce := freshNonce()
			msg := textXML("?18-546")
			first := c.postNonce(mc.path, msg, nonce)
			if first.status != http.StatusOK {
				t.Fatalf("first: got %d %s, want 200", first.status, first.body)
			}
			dups := metrictest.Value(t, ts.reg, "wxlookup_duplicates_total")
			again := c.postNonce(mc.path, msg, nonce) // encrypted afresh in the encrypted modes
			want, got := first.body, again.body
			if c.crypter != nil {
				want, got = first.inner, again.inner
			}
			if again.status != http.StatusOK || !bytes.Equal(got, want) {
				t.Errorf("retry: got %d\n%s\nwant 200 and the first reply\n%s", again.status, got, want)
			}
			if got := metrictest.Value(t, ts.reg, "wxlookup_duplicates_total") - dups; got != 1 {
				t.Errorf("duplicates rose by %v, want 1", got)
			}
			// Another body under the same timestamp and nonce: a forgery with a captured URL.
			before := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "replay")
			forged := wechat.AppendTextMessage(nil, []byte("gh_test"), []byte("oIntruder"), now.Unix(), []byte("?A7-001"), 6000000000+msgSeq.Add(1))
			if r := c.postNonce(mc.path, forged, nonce); r.status != http.StatusForbidden {
				t.Errorf("another body with the same timestamp and nonce: got %d %q, want 403", r.status, r.reply.Content)
			}
			if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", "replay") - before; got != 1 {
				t.Errorf("rejected{replay} rose by %v, want 1", got)
			}
			// The same body with a new nonce is a new request.
			if r := c.post(mc.path, forged); r.status != http.StatusOK {
				t.Errorf("with a fresh nonce: got %d, want 200", r.status)
			}
		})
	}
}

// TestWebhookNonce: a nonce must be 1 to 32 letters or digits (SPEC section 9): longer is
// 400 field_too_long; any other character (or none) is 400 bad_request, since nothing
// WeChat or WeCom sends has one. The rule holds for URL verification too.
func TestWebhookNonce(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	now := time.Now()
	nowTS := strconv.FormatInt(now.Unix(), 10)
	c := client{tb: t, base: ts.url, token: testToken, mode: "plain", now: now}
	tests := []struct {
		name   string
		nonce  string
		status int
		reason string
	}{
		{"32 letters and digits", strings.Repeat("aZ9", 10) + "xy", 200, ""},
		{"33 characters", strings.Repeat("1", 33), 400, "field_too_long"},
		{"a kilobyte", strings.Repeat("1", 1024), 400, "field_too_long"},
		{"a hyphen", "1234-5678", 400, "bad_request"},
		{"a space", "1234 5678", 400, "bad_request"},
		{"non-ASCII", "１２３", 400, "bad_request"},
		{"NUL", "12\x0034", 400, "bad_request"},
		{"empty", "", 400, "bad_request"},
	}
	for _, tt := range tests {
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			t.Run(method+"/"+tt.name, func(t *testing.T) {
				var before float64
				if tt.reason != "" {
					before = metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason)
				}
				var r response
				if method == http.MethodPost {
					r = c.postNonce("/wx", textXML("?18-546"), tt.nonce)
				} else {
					r = c.do(method, "/wx?"+c.query(nowTS, tt.nonce, url.Values{"echostr": {"42"}}), nil)
				}
				if r.status != tt.status {
					t.Fatalf("got %d %.80q, want %d", r.status, r.body, tt.status)
				}
				if tt.reason != "" {
					if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason) - before; got != 1 {
						t.Errorf("rejected{%s} rose by %v, want 1", tt.reason, got)
					}
				}
			})
		}
	}
}

// TestWebhookEchostr: the OA echostr is echoed only when it is at most 128 printable ASCII
// characters, as text/plain that browsers must not sniff; longer is 400 field_too_long,
// anything else 400 bad_request. WeCom's decrypted echostr follows the same rule.
func TestWebhookEchostr(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	now := time.Now()
	nowTS := strconv.FormatInt(now.Unix(), 10)
	c := client{tb: t, base: ts.url, token: testToken, now: now}
	wc := mustCrypter(t, wecomToken, testCorpID, testKey, "")
	get := func(route, echostr string) *http.Response {
		t.Helper()
		nonce := freshNonce()
		q := c.query(nowTS, nonce, url.Values{"echostr": {echostr}})
		if route == "/wecom" {
			var random [16]byte
			enc := string(wc.Current.Encrypt(nil, []byte(echostr), []byte(testCorpID), &random))
			q = url.Values{"timestamp": {nowTS}, "nonce": {nonce}, "echostr": {enc},
				"msg_signature": {wechat.MsgSignature(wecomToken, nowTS, nonce, enc)}}.Encode()
		}
		resp, err := http.Get(ts.url + route + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	tests := []struct {
		name    string
		echostr string
		status  int
		reason  string
	}{
		{"digits", "5837397749", 200, ""},
		{"128 printable characters", strings.Repeat("<a>", 42) + "!~", 200, ""},
		{"markup is echoed as text", "<script>alert(1)</script>", 200, ""},
		{"129 characters", strings.Repeat("1", 129), 400, "field_too_long"},
		{"2 KB", strings.Repeat("1", 2<<10), 400, "field_too_long"},
		{"non-ASCII", "中文", 400, "bad_request"},
		{"control character", "12\n34", 400, "bad_request"},
		{"NUL", "12\x0034", 400, "bad_request"},
	}
	for _, route := range []string{"/wx", "/wecom"} {
		for _, tt := range tests {
			t.Run(route+"/"+tt.name, func(t *testing.T) {
				var before float64
				if tt.reason != "" {
					before = metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason)
				}
				resp := get(route, tt.echostr)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.status {
					t.Fatalf("got %d %.80q, want %d", resp.StatusCode, body, tt.status)
				}
				if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options: got %q, want %q", got, "nosniff")
				}
				if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/plain") {
					t.Errorf("Content-Type: got %q, want text/plain", got)
				}
				if tt.status == 200 && string(body) != tt.echostr {
					t.Errorf("got body %q, want %q", body, tt.echostr)
				}
				if tt.reason != "" {
					if got := metrictest.Value(t, ts.reg, "wxlookup_rejected_total", "reason", tt.reason) - before; got != 1 {
						t.Errorf("rejected{%s} rose by %v, want 1", tt.reason, got)
					}
				}
			})
		}
	}
}

// TestNewLogsTrustSettings: the start-up log says whether plaintext POSTs are refused, and
// warns when the AppID inside decrypted messages goes unchecked.
func TestNewLogsTrustSettings(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		want   []string
		absent []string
	}{
		{"no AES key", Config{Token: testToken}, []string{`plaintext="accepted (no WXLOOKUP_AES_KEY)"`}, []string{"WXLOOKUP_APPID"}},
		{"AES key, encryption required", Config{Token: testToken, AppID: testAppID, AESKey: testKey, RequireEncryption: true},
			[]string{`plaintext="refused (WXLOOKUP_REQUIRE_ENCRYPTION=true)"`}, []string{"WXLOOKUP_APPID"}},
		{"AES key, plaintext allowed", Config{Token: testToken, AppID: testAppID, AESKey: testKey},
			[]string{`plaintext="accepted (WXLOOKUP_REQUIRE_ENCRYPTION=false)"`}, []string{"WXLOOKUP_APPID"}},
		{"AES key without AppID", Config{Token: testToken, AESKey: testKey, RequireEncryption: true},
			[]string{"level=WARN", "WXLOOKUP_APPID is not set", "not checked"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			cfg := tt.cfg
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			if _, err := New(cfg, mapLookup(t, demoRows)); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(logs.String(), a) {
					t.Errorf("log has %q:\n%s", a, logs.String())
				}
			}
		})
	}
}

// FuzzWebhook drives the whole handler with signed requests built from the fuzz input, so
// the fuzzer gets past the signatures: a plaintext, safe-mode, compatible-mode or WeCom
// POST whose message is body, or a URL verification echoing echostr; flags in mode
// tamper with the msg_signature, send body itself as the encrypted envelope, and reuse
// the fuzzed nonce instead of a fresh one. Whatever arrives, the handler must not panic
// (it would answer 500), must not answer 5xx, and must answer with a status in the
// allowed set; the same request sent again must get the same status, and in plaintext the
// same bytes.
func FuzzWebhook(f *testing.F) {
	now := time.Unix(1_714_036_504, 0)
	for _, m := range [][]byte{
		textXML("?18-546"),
		textXML("?18-546 A7-001，99-404"),
		eventXML("subscribe", "qrscene_7", now.Unix()),
		eventXML("CLICK", strings.Repeat("k", 300), now.Unix()),
		textFrom(strings.Repeat("o", 200), "1"),
		textFrom("oUser", "123456789012345678901"),
		[]byte("<xml><FromUserName>a</FromUserName><FromUserName>b</FromUserName></xml>"),
		[]byte("<xml><Content>\x00</Content></xml>"),
		[]byte("<xml><ToUserName>gh</ToUserName><Encrypt>AAAA</Encrypt></xml>"),
		[]byte("not xml"),
		nil,
	} {
		for mode := range 6 {
			f.Add(uint8(mode), m, "1320562132", "5837397749")
		}
	}
	f.Add(uint8(0|16), textXML("?1"), "bad nonce!", "")
	f.Add(uint8(4|16), []byte(nil), strings.Repeat("9", 40), strings.Repeat("e", 200))
	f.Add(uint8(1|8), textXML("?1"), "1", "")
	f.Add(uint8(3|32), []byte("<xml><Encrypt>e</Encrypt></xml>"), "1", "")

	// The clock moves a second every 1,000 requests, as at a busy plant, so the replay
	// guard's bindings expire and it never fills up.
	var requests, clock atomic.Int64
	clock.Store(now.Unix())
	cfg := safeConfig()
	cfg.Now = func() time.Time { return time.Unix(clock.Load(), 0) }
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.RatePerMinute = -1
	s, err := New(cfg, mapLookup(f, demoRows))
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	oa := mustCrypter(f, testToken, testAppID, testKey, "")
	wc := mustCrypter(f, wecomToken, testCorpID, testKey, "")
	allowed := map[int]bool{200: true, 400: true, 403: true}

	f.Fuzz(func(t *testing.T, mode uint8, body []byte, nonce, echostr string) {
		clock.Store(now.Unix() + requests.Add(1)/1000)
		ts := strconv.FormatInt(clock.Load(), 10)
		if mode&16 == 0 {
			nonce = freshNonce()
		}
		q := url.Values{"timestamp": {ts}, "nonce": {nonce}}
		path, method := "/wx", fasthttp.MethodPost
		token, c := testToken, oa
		switch mode % 6 {
		case 0: // plaintext
		case 1: // safe
			q.Set("encrypt_type", "aes")
		case 2: // compatible
			q.Set("encrypt_type", "aes")
		case 3:
			path, token, c = "/wecom", wecomToken, wc
		case 4:
			method = fasthttp.MethodGet
			q.Set("echostr", echostr)
		case 5:
			path, method, token, c = "/wecom", fasthttp.MethodGet, wecomToken, wc
		}
		if path == "/wx" {
			q.Set("signature", wechat.Signature(token, ts, nonce))
		}
		enc := c.Current.Encrypt(nil, body, []byte(c.ReceiveID), new([16]byte))
		switch mode % 6 {
		case 1, 3:
			if mode&32 == 0 {
				body = wechat.AppendRequestEnvelope(nil, []byte("gh_test"), enc)
			} else {
				var env wechat.Message
				if env.ParseEnvelope(body) == nil {
					enc = env.Encrypt
				}
			}
		case 2:
			body = append(append(bytes.Clone(body), "<Encrypt>"...), enc...)
			body = append(body, "</Encrypt></xml>"...)
		case 5:
			enc = c.Current.Encrypt(nil, []byte(echostr), []byte(c.ReceiveID), new([16]byte))
			q.Set("echostr", string(enc))
		}
		if mode%6 != 0 && mode%6 != 4 {
			sig := wechat.MsgSignature(token, ts, nonce, string(enc))
			if mode&8 != 0 {
				sig = wechat.MsgSignature("tampered", ts, nonce, string(enc))
			}
			q.Set("msg_signature", sig)
		}
		send := func() (int, []byte) {
			ctx := handlerRequest(t, path+"?"+q.Encode(), body)
			ctx.Request.Header.SetMethod(method)
			h(ctx)
			return ctx.Response.StatusCode(), bytes.Clone(ctx.Response.Body())
		}
		status, reply := send()
		if !allowed[status] {
			t.Fatalf("mode %d: status %d (%q), want one of 200, 400, 403", mode, status, reply)
		}
		again, replyAgain := send()
		if again != status {
			t.Fatalf("mode %d: the same request again got %d, first %d", mode, again, status)
		}
		if mode%6 == 0 && status == 200 && !bytes.Equal(reply, replyAgain) {
			t.Fatalf("plaintext retry: got\n%s\nwant the first reply\n%s", replyAgain, reply)
		}
	})
}

// TestWorkBuffersBounded: a request far larger than WeChat's leaves no buffer of that size
// in the pool of request scratch space, so 512 pooled works cannot hold 512 bodies.
func TestWorkBuffersBounded(t *testing.T) {
	ts := startServer(t, safeConfig(), mapLookup(t, demoRows))
	c := client{tb: t, base: ts.url, token: testToken, mode: "safe", now: time.Now(), crypter: mustCrypter(t, testToken, testAppID, testKey, "")}
	big := "?18-546 " + strings.Repeat("&amp;", 8<<10) // 40 KB, rewritten in scratch space
	msg := wechat.AppendTextMessage(nil, []byte("gh_test"), []byte("oUser"), time.Now().Unix(), []byte(big), 6000000000+msgSeq.Add(1))
	msg = bytes.Replace(msg, []byte("<![CDATA["+big+"]]>"), []byte(big), 1)
	if r := c.post("/wx", msg); r.status != http.StatusOK {
		t.Fatalf("got %d %.80s, want 200", r.status, r.body)
	}
	w := ts.getWork()
	for name, b := range map[string][]byte{"plain": w.plain, "content": w.content, "key": w.key, "id": w.id,
		"reply": w.reply, "envelope": w.envelope} {
		if cap(b) > maxKeptBuffer {
			t.Errorf("%s keeps %d bytes, want at most %d", name, cap(b), maxKeptBuffer)
		}
	}
}
