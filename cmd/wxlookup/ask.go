package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"wxlookup/server"
	"wxlookup/wechat"
)

// Asker plays WeChat: it signs (and with a key, encrypts) a text message, posts it to a
// webhook, checks the reply's signature, decrypts it and returns its content. It is what
// `wxlookup ask` runs, and end-to-end tests use it as their client.
type Asker struct {
	URL    string // webhook URL, e.g. http://127.0.0.1:8080/wx
	Token  string
	AppID  string // Official Account AppID (receive id in safe mode)
	AESKey string // EncodingAESKey: safe mode (or WeCom)
	// WeComCorp switches to the WeCom protocol with this corp id (AESKey required).
	WeComCorp string
	AgentID   string
	OpenID    string // the sender; "" sends each message from a fresh test OpenID
	Account   string // the Official Account's original id (ToUserName)
	Client    *http.Client
	Now       func() time.Time
}

// Reply is what a webhook answered.
type Reply struct {
	Content   string // the text reply's content; "success" for WeChat's empty reply
	Encrypted bool
	Raw       []byte // the (decrypted) reply XML
	// Outcome is how the server says it answered (server.OutcomeHeader): found,
	// not_found, rate_limited, …; "" from a server that does not say.
	Outcome string
}

// refusals are the outcomes that answer no query: `wxlookup ask` exits non-zero on them,
// so a script notices a rate limit, an allow-list refusal, a cache not yet warm or a
// failed read-through. (A number not found is an answer.)
var refusals = map[string]bool{"rate_limited": true, "unauthorised": true, "starting": true, "unavailable": true}

const askUsage = `usage: wxlookup ask [flags] TEXT

Sends TEXT to the webhook as WeChat would (signed; encrypted with --aes-key), checks and
decrypts the reply and prints its content. Each call sends from a fresh test OpenID unless
--from names one. Exits 1 on any failure, including a rate-limited, unauthorised,
starting-up or unavailable reply.`

func runAsk(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ask", flag.ContinueOnError)
	a := Asker{}
	fs.StringVar(&a.URL, "url", "http://127.0.0.1:8080/wx", "webhook URL")
	fs.StringVar(&a.Token, "token", "demo", "Official Account (or WeCom) token")
	fs.StringVar(&a.AppID, "appid", "", "AppID (safe mode)")
	fs.StringVar(&a.AESKey, "aes-key", "", "EncodingAESKey: send in safe mode")
	fs.StringVar(&a.WeComCorp, "wecom-corp", "", "WeCom corp id: speak the WeCom protocol")
	fs.StringVar(&a.OpenID, "from", "", "sender OpenID (FromUserName); default: a fresh test OpenID per call")
	fs.StringVar(&a.OpenID, "openid", "", "same as --from")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long (WeChat allows 5s)")
	verbose := fs.Bool("v", false, "print the reply XML and its outcome too")
	if err := parseFlags(fs, askUsage, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"ask needs the text to send, e.g. wxlookup ask '?18-546'"}
	}
	// One request: no connection to keep alive.
	a.Client = &http.Client{Timeout: *timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	r, err := a.Ask(ctx, strings.Join(fs.Args(), " "))
	if err != nil {
		return err
	}
	if *verbose {
		fmt.Fprintf(stderr, "%s\n%s: %s\n", r.Raw, server.OutcomeHeader, r.Outcome)
	}
	if refusals[r.Outcome] {
		return fmt.Errorf("ask: the server answered %s, not the query: %s", r.Outcome, r.Content)
	}
	fmt.Fprintln(stdout, r.Content)
	return nil
}

// Ask sends text as a new message and returns the checked reply, whatever its outcome.
// Without an OpenID set it sends from a fresh test OpenID.
func (a *Asker) Ask(ctx context.Context, text string) (Reply, error) {
	if a.OpenID == "" {
		fresh := *a
		fresh.OpenID = freshOpenID()
		return fresh.Ask(ctx, text)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	t := now()
	msgID := t.UnixNano()
	account := a.Account
	if account == "" {
		account = "gh_wxlookup_test"
	}
	msg := wechat.AppendTextMessage(nil, []byte(account), []byte(a.OpenID), t.Unix(), []byte(text), msgID)
	return a.Send(ctx, msg, t)
}

// Send posts an inbound message XML (encrypting it first when a key is set) and returns the
// checked reply.
func (a *Asker) Send(ctx context.Context, msg []byte, t time.Time) (Reply, error) {
	ts := strconv.FormatInt(t.Unix(), 10)
	nonce := randomDigits(10)
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}}
	body := msg
	var crypter *wechat.Crypter
	receiveID := a.AppID
	if a.WeComCorp != "" {
		receiveID = a.WeComCorp
	}
	if a.AESKey != "" {
		var err error
		if crypter, err = wechat.NewCrypter(a.Token, receiveID, a.AESKey, ""); err != nil {
			return Reply{}, fmt.Errorf("ask: --aes-key: %w", err)
		}
		var random [16]byte
		rand.Read(random[:])
		enc := crypter.Current.Encrypt(nil, msg, []byte(receiveID), &random)
		q.Set("msg_signature", wechat.MsgSignature(a.Token, ts, nonce, string(enc)))
		if a.WeComCorp != "" {
			body = wechat.AppendWeComRequestEnvelope(nil, []byte(a.WeComCorp), []byte(a.AgentID), enc)
		} else {
			q.Set("encrypt_type", "aes")
			body = wechat.AppendRequestEnvelope(nil, []byte("gh_wxlookup_test"), enc)
		}
	} else if a.WeComCorp != "" {
		return Reply{}, errors.New("ask: --wecom-corp needs --aes-key (WeCom always encrypts)")
	}
	if a.WeComCorp == "" {
		q.Set("signature", wechat.Signature(a.Token, ts, nonce))
		q.Set("openid", a.OpenID)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return Reply{}, fmt.Errorf("ask: %w", err)
	}
	req.Header.Set("Content-Type", "text/xml")
	client := a.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Reply{}, fmt.Errorf("ask: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Reply{}, fmt.Errorf("ask: read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		hint := ""
		switch resp.StatusCode {
		case http.StatusForbidden:
			hint = " (is --token the server's token, --appid its AppID, and are both clocks right?)"
		case http.StatusBadRequest:
			hint = " (is --aes-key the server's EncodingAESKey?)"
		case http.StatusNotFound:
			hint = " (is the --url path the server's WXLOOKUP_PATH?)"
		}
		return Reply{}, fmt.Errorf("ask: webhook answered %s%s: %s", resp.Status, hint, bytes.TrimSpace(raw))
	}
	r, err := a.check(raw, crypter)
	r.Outcome = resp.Header.Get(server.OutcomeHeader)
	return r, err
}

// check verifies and decodes a reply body.
func (a *Asker) check(raw []byte, crypter *wechat.Crypter) (Reply, error) {
	if string(raw) == "success" || len(raw) == 0 {
		return Reply{Content: "success", Raw: raw}, nil
	}
	var m wechat.Message
	if err := m.Parse(raw); err != nil {
		return Reply{}, fmt.Errorf("ask: reply is not WeChat XML: %w", err)
	}
	r := Reply{Raw: raw}
	if len(m.Encrypt) > 0 {
		if crypter == nil {
			return Reply{}, errors.New("ask: the reply is encrypted but no --aes-key was given")
		}
		if !wechat.VerifyMsgSignature(a.Token, m.TimeStamp, m.Nonce, m.Encrypt, m.MsgSignature) {
			return Reply{}, errors.New("ask: the reply's MsgSignature does not verify")
		}
		dec, err := crypter.Decrypt(nil, m.Encrypt)
		if err != nil {
			return Reply{}, fmt.Errorf("ask: decrypt reply: %w", err)
		}
		r.Raw, r.Encrypted = append([]byte(nil), dec.Msg...), true
		m = wechat.Message{}
		if err := m.Parse(r.Raw); err != nil {
			return Reply{}, fmt.Errorf("ask: decrypted reply is not WeChat XML: %w", err)
		}
	} else if crypter != nil {
		return Reply{}, errors.New("ask: sent in safe mode but the reply is not encrypted")
	}
	if string(m.ToUserName) != a.OpenID {
		return Reply{}, fmt.Errorf("ask: reply addressed to %q, want %q", m.ToUserName, a.OpenID)
	}
	if !m.IsType("text") {
		return Reply{}, fmt.Errorf("ask: reply type %q, want text", m.MsgType)
	}
	r.Content = string(m.Content)
	return r, nil
}

func randomDigits(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}

// freshOpenID returns a test OpenID no one has used: 28 characters like WeChat's, "oWxAsk"
// and 22 random hex digits.
func freshOpenID() string {
	var b [11]byte
	rand.Read(b[:])
	return "oWxAsk" + hex.EncodeToString(b[:])
}
