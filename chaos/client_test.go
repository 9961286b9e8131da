package chaos

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"wxlookup/wechat"
)

// wxClient plays WeChat against a webhook: it signs (and with a key, encrypts) text
// messages, checks the reply's signature, decrypts it and returns its content.
// Safe for concurrent use.
type wxClient struct {
	url     string // webhook URL
	token   string
	appID   string
	crypter *wechat.Crypter // nil: plaintext mode
	http    *http.Client
}

// newClient returns a client for the webhook url. aesKey "" sends plaintext messages.
func newClient(url, token, appID, aesKey string) *wxClient {
	c := &wxClient{url: url, token: token, appID: appID, http: newHTTPClient()}
	if aesKey != "" {
		var err error
		if c.crypter, err = wechat.NewCrypter(token, appID, aesKey, ""); err != nil {
			panic(err)
		}
	}
	return c
}

// newHTTPClient is a keep-alive client with WeChat's 5 s limit.
func newHTTPClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}
}

var msgIDs atomic.Int64

func init() { msgIDs.Store(time.Now().UnixNano()) }

// statusError is a reply with a status other than 200.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.code, e.body) }

// ask sends text from openID as a new message and returns the reply content.
func (c *wxClient) ask(ctx context.Context, openID, text string) (string, error) {
	now := time.Now()
	msg := wechat.AppendTextMessage(nil, []byte("gh_chaos"), []byte(openID), now.Unix(), []byte(text), msgIDs.Add(1))
	return c.send(ctx, openID, msg, now)
}

// send posts an inbound message XML and returns the checked reply content.
func (c *wxClient) send(ctx context.Context, openID string, msg []byte, now time.Time) (string, error) {
	req, err := c.request(ctx, msg, now)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{resp.StatusCode, string(bytes.TrimSpace(raw))}
	}
	return c.check(raw, openID)
}

// request builds the signed POST of msg as WeChat sends it at now.
func (c *wxClient) request(ctx context.Context, msg []byte, now time.Time) (*http.Request, error) {
	ts := strconv.FormatInt(now.Unix(), 10)
	// 64 random bits: the replay guard refuses another message under a (timestamp, nonce)
	// already used, and 32 bits would repeat within a second of a flood now and then.
	var nb [8]byte
	rand.Read(nb[:])
	var n uint64
	for _, b := range nb {
		n = n<<8 | uint64(b)
	}
	nonce := strconv.FormatUint(n, 10)
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "signature": {wechat.Signature(c.token, ts, nonce)}}
	body := msg
	if c.crypter != nil {
		var random [16]byte
		rand.Read(random[:])
		enc := c.crypter.Current.Encrypt(nil, msg, []byte(c.appID), &random)
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", wechat.MsgSignature(c.token, ts, nonce, string(enc)))
		body = wechat.AppendRequestEnvelope(nil, []byte("gh_chaos"), enc)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	return req, nil
}

// check verifies and decodes a reply body addressed to openID.
func (c *wxClient) check(raw []byte, openID string) (string, error) {
	if string(raw) == "success" {
		return "success", nil
	}
	var m wechat.Message
	if err := m.Parse(raw); err != nil {
		return "", fmt.Errorf("reply is not WeChat XML: %w", err)
	}
	if c.crypter != nil {
		if len(m.Encrypt) == 0 {
			return "", errors.New("sent encrypted, reply is plaintext")
		}
		if !wechat.VerifyMsgSignature(c.token, m.TimeStamp, m.Nonce, m.Encrypt, m.MsgSignature) {
			return "", errors.New("the reply's MsgSignature does not verify")
		}
		dec, err := c.crypter.Decrypt(nil, m.Encrypt)
		if err != nil {
			return "", fmt.Errorf("decrypt reply: %w", err)
		}
		inner := append([]byte(nil), dec.Msg...)
		m = wechat.Message{}
		if err := m.Parse(inner); err != nil {
			return "", fmt.Errorf("decrypted reply is not WeChat XML: %w", err)
		}
	}
	if string(m.ToUserName) != openID {
		return "", fmt.Errorf("reply addressed to %q, want %q", m.ToUserName, openID)
	}
	if !m.IsType("text") {
		return "", fmt.Errorf("reply type %q, want text", m.MsgType)
	}
	return string(m.Content), nil
}

// found is the default found template's line for a row.
func found(key, location string) string { return "[" + key + "]的工作台位为[" + location + "]" }
