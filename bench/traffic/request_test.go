package traffic

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"wxlookup/bench/load"
	"wxlookup/cache"
	"wxlookup/server"
	"wxlookup/wechat"
)

const (
	testToken  = "benchtoken"
	testAppID  = "wx0123456789abcdef"
	testAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

func testAccount() Account {
	return Account{Token: testToken, AppID: testAppID, AESKey: testAESKey, ID: "gh_bench", Host: "127.0.0.1", Path: "/wx"}
}

func build(t *testing.T, mode Mode, n int) *Batch { return buildFrom(t, mode, n, 7) }

func buildFrom(t *testing.T, mode Mode, n, openIDs int) *Batch {
	t.Helper()
	keys, err := NewKeys(3, 100, 1.1, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(Spec{Account: testAccount(), Mode: mode, N: n, First: 1000, OpenIDs: openIDs, Keys: keys, SampleEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != n {
		t.Fatalf("Len() = %d, want %d", b.Len(), n)
	}
	return b
}

// TestRequestsRoundTrip reads every built request back as an HTTP server would and checks
// it with the wechat package: the signature, in safe mode the msg_signature and the
// decryption, and the message inside.
func TestRequestsRoundTrip(t *testing.T) {
	for _, mode := range []Mode{Plaintext, Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			const n = 1<<chunkBits + 100 // more than one chunk
			b := build(t, mode, n)
			c, err := wechat.NewCrypter(testToken, testAppID, testAESKey, "")
			if err != nil {
				t.Fatal(err)
			}
			msgIDs := map[string]bool{}
			openIDs := map[string]bool{}
			for i := range n {
				req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b.Request(i))))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body := make([]byte, req.ContentLength)
				if _, err := req.Body.Read(body); err != nil && len(body) > 0 && int64(len(body)) != req.ContentLength {
					t.Fatalf("request %d body: %v", i, err)
				}
				q := req.URL.Query()
				ts, nonce := q.Get("timestamp"), q.Get("nonce")
				if req.Method != "POST" || req.URL.Path != "/wx" {
					t.Fatalf("request %d: %s %s, want POST /wx", i, req.Method, req.URL.Path)
				}
				if !wechat.VerifySignature(testToken, []byte(ts), []byte(nonce), []byte(q.Get("signature"))) {
					t.Fatalf("request %d: signature does not verify", i)
				}
				var m wechat.Message
				if err := m.Parse(body); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if mode == Safe {
					if q.Get("encrypt_type") != "aes" {
						t.Fatalf("request %d: encrypt_type %q, want aes", i, q.Get("encrypt_type"))
					}
					d, err := c.Open(nil, []byte(q.Get("msg_signature")), []byte(ts), []byte(nonce), m.Encrypt)
					if err != nil {
						t.Fatalf("request %d: open: %v", i, err)
					}
					m = wechat.Message{}
					if err := m.Parse(d.Msg); err != nil {
						t.Fatalf("request %d: decrypted: %v", i, err)
					}
				}
				if got, want := string(m.Content), "?"+string(b.Key(i)); got != want {
					t.Fatalf("request %d: content %q, want %q", i, got, want)
				}
				if !m.IsType("text") || string(m.ToUserName) != "gh_bench" || string(m.FromUserName) != q.Get("openid") {
					t.Fatalf("request %d: type %q to %q from %q (openid %q)", i, m.MsgType, m.ToUserName, m.FromUserName, q.Get("openid"))
				}
				if len(m.FromUserName) != 28 {
					t.Fatalf("request %d: OpenID %q, want 28 characters", i, m.FromUserName)
				}
				if msgIDs[string(m.MsgID)] {
					t.Fatalf("request %d: MsgId %s repeats", i, m.MsgID)
				}
				msgIDs[string(m.MsgID)] = true
				openIDs[string(m.FromUserName)] = true
				if d := time.Since(time.Unix(m.CreateTime, 0)); d < 0 || d > time.Minute {
					t.Fatalf("request %d: CreateTime %d is %s old", i, m.CreateTime, d)
				}
			}
			if len(openIDs) != 7 {
				t.Errorf("%d OpenIDs, want 7", len(openIDs))
			}
		})
	}
}

// TestAgainstServer drives the real webhook with built requests through the load generator
// and checks that Check accepts its replies, found and not found, in both modes.
func TestAgainstServer(t *testing.T) {
	tmpl, err := server.NewTemplates(server.TemplateTexts{}, []string{"location"})
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string][]byte{}
	for row := range 100 {
		key := Key(row)
		lines[cache.Key(key)] = tmpl.Found(key, []string{"车间" + strconv.Itoa(row)})
	}
	lookup := server.LookupFunc(func(_ context.Context, key []byte) ([]byte, string, bool, error) {
		l, ok := lines[string(key)]
		return l, "", ok, nil
	})
	s, err := server.New(server.Config{Token: testToken, AppID: testAppID, AESKey: testAESKey}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())

	for _, mode := range []Mode{Plaintext, Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			b := buildFrom(t, mode, 200, 200) // one message per sender: no rate limit
			sched, err := load.Constant(2000, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			r, err := load.Run(context.Background(), load.Config{Addr: ln.Addr().String(), Conns: 4,
				Schedule: sched, Request: b.Request, Check: b.Check})
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors() != 0 {
				t.Fatalf("%d of %d requests failed: %q", r.Errors(), len(sched), r.Failures)
			}
		})
	}
}

func TestCheckRejects(t *testing.T) {
	plain := build(t, Plaintext, 1)
	key := string(plain.Key(0))
	tests := []struct {
		name string
		b    *Batch
		body string
	}{
		{"rate limited", plain, "<xml><ToUserName><![CDATA[o]]></ToUserName><Content><![CDATA[您的查询过于频繁，请稍后再试。]]></Content></xml>"},
		{"another number", plain, "<xml><Content><![CDATA[[ZZ-999]的工作台位为[x]]]></Content></xml>"},
		{"not xml", plain, "success"},
		{"unbracketed", plain, "<xml><Content><![CDATA[" + key + "]]></Content></xml>"},
		{"plaintext reply in safe mode", build(t, Safe, 1), "<xml><Content><![CDATA[[" + key + "]]]></Content></xml>"},
		{"forged envelope", build(t, Safe, 1), "<xml><Encrypt><![CDATA[AAAA]]></Encrypt><MsgSignature><![CDATA[00]]></MsgSignature><TimeStamp>1</TimeStamp><Nonce><![CDATA[1]]></Nonce></xml>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.b.Check(0, []byte(tt.body)); err == nil {
				t.Errorf("Check(%q) = nil, want an error", tt.body)
			}
		})
	}
	ok := "<xml><Content><![CDATA[[" + key + "]未找到，请核对工件号。]]></Content></xml>"
	if err := plain.Check(0, []byte(ok)); err != nil {
		t.Errorf("Check(not found reply) = %v, want nil", err)
	}
	if !strings.Contains(OpenID(5), "5") || len(OpenID(123456789)) != 28 {
		t.Errorf("OpenID(5) = %q, OpenID(123456789) = %q", OpenID(5), OpenID(123456789))
	}
}

// TestProbe checks that a batch with a Probe sends the probe texts in every Every-th
// request, group after group, and hands their replies' content (decrypted in safe mode)
// to Probe.Check with the time Request handed the request out.
func TestProbe(t *testing.T) {
	for _, mode := range []Mode{Plaintext, Safe} {
		t.Run(mode.String(), func(t *testing.T) {
			keys, err := NewKeys(3, 100, 1.1, 0.2)
			if err != nil {
				t.Fatal(err)
			}
			type call struct {
				group   int
				content string
				sent    time.Time
			}
			var calls []call
			probe := &Probe{Every: 3, Texts: []string{"?P-1 P-2", "?P-3"}, Check: func(g int, content []byte, sent, _ time.Time) error {
				calls = append(calls, call{g, string(content), sent})
				return nil
			}}
			b, err := Build(Spec{Account: testAccount(), Mode: mode, N: 9, First: 50, OpenIDs: 9, Keys: keys, Probe: probe})
			if err != nil {
				t.Fatal(err)
			}
			c, err := wechat.NewCrypter(testToken, testAppID, testAESKey, "")
			if err != nil {
				t.Fatal(err)
			}
			for i := range 9 {
				want := string(b.Key(i))
				switch i {
				case 2, 8:
					want = "P-1 P-2"
				case 5:
					want = "P-3"
				}
				if got := string(b.Key(i)); got != want {
					t.Errorf("Key(%d) = %q, want %q", i, got, want)
				}
				if m := message(t, b, c, i); string(m.Content) != "?"+want {
					t.Errorf("request %d asks %q, want %q", i, m.Content, "?"+want)
				}
			}
			before := time.Now()
			b.Request(5)
			reply := "<xml><Content><![CDATA[[P-3]未找到]]></Content></xml>"
			if mode == Safe {
				reply = string(c.AppendEncryptedReply(nil, c.Current, []byte(testAppID), []byte(reply), []byte("1"), []byte("2")))
			}
			if err := b.Check(5, []byte(reply)); err != nil {
				t.Fatal(err)
			}
			if len(calls) != 1 || calls[0].group != 1 || calls[0].content != "[P-3]未找到" || calls[0].sent.Before(before) {
				t.Errorf("Probe.Check calls %+v, want one of group 1 with the content, sent after %s", calls, before)
			}
		})
	}
}

// message reads request i of b back and returns its (decrypted) message.
func message(t *testing.T, b *Batch, c *wechat.Crypter, i int) wechat.Message {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b.Request(i))))
	if err != nil {
		t.Fatalf("request %d: %v", i, err)
	}
	body := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(req.Body, body); err != nil {
		t.Fatalf("request %d body: %v", i, err)
	}
	var m wechat.Message
	if err := m.Parse(body); err != nil {
		t.Fatalf("request %d: %v", i, err)
	}
	if len(m.Encrypt) > 0 {
		q := req.URL.Query()
		d, err := c.Open(nil, []byte(q.Get("msg_signature")), []byte(q.Get("timestamp")), []byte(q.Get("nonce")), m.Encrypt)
		if err != nil {
			t.Fatalf("request %d: open: %v", i, err)
		}
		m = wechat.Message{}
		if err := m.Parse(d.Msg); err != nil {
			t.Fatalf("request %d: decrypted: %v", i, err)
		}
	}
	return m
}
