package traffic

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"wxlookup/wechat"
)

// Mode is how a run's messages are sent.
type Mode int

const (
	// Plaintext messages are signed (signature) and sent as XML (明文模式).
	Plaintext Mode = iota
	// Safe messages are encrypted (encrypt_type=aes, msg_signature) as in 安全模式.
	Safe
)

func (m Mode) String() string {
	if m == Safe {
		return "safe"
	}
	return "plaintext"
}

// Account is the Official Account a run speaks as, and where its webhook is.
type Account struct {
	Token  string
	AppID  string // the receive id encrypted messages carry
	AESKey string // EncodingAESKey; needed for Safe
	ID     string // the account's original id (gh_…), the messages' ToUserName
	Host   string // the Host header
	Path   string // the webhook path, e.g. /wx
}

// Spec says what to build.
type Spec struct {
	Account Account
	Mode    Mode
	// N is the number of requests. Request i is message number First+i of the whole
	// benchmark: its MsgId, nonce and OpenID derive from that number, so two batches with
	// disjoint ranges never repeat a MsgId.
	N     int
	First int64
	// OpenIDs is how many distinct senders the messages cycle through.
	OpenIDs int
	// Keys picks the numbers asked for, in order.
	Keys *Keys
	// Now is the messages' CreateTime and the requests' timestamp; zero means time.Now().
	Now time.Time
	// SampleEvery: in safe mode, Check decrypts and verifies one reply in SampleEvery in
	// full (the others are checked for the envelope only); 0 means 16.
	SampleEvery int
	// Probe, when set, mixes probe messages into the batch.
	Probe *Probe
}

// Probe mixes probe messages into a batch (freshness, SPEC section 8): request i with
// i%Every == Every-1 sends Texts[(i/Every)%len(Texts)] instead of a Zipf-picked number,
// and its reply content (decrypted in safe mode) goes to Check with the times the request
// was sent and its reply received.
type Probe struct {
	Every int
	Texts []string
	// Check judges the reply content to a probe message of Texts[group]. It must be safe
	// for concurrent use.
	Check func(group int, content []byte, sent, recv time.Time) error
}

// is reports whether request i is a probe, and of which group.
func (p *Probe) is(i int) (group int, ok bool) {
	if p == nil || i%p.Every != p.Every-1 {
		return 0, false
	}
	return i / p.Every % len(p.Texts), true
}

// Message ids start here, so they look like WeChat's 64-bit MsgIds.
const firstMsgID = 24_000_000_000_000_000

// chunkBits sets how many requests share one buffer: 1<<chunkBits.
const chunkBits = 14

// Batch holds a run's pre-built requests. Its methods are safe for concurrent use.
type Batch struct {
	spec    Spec
	crypter *wechat.Crypter
	chunks  []chunk
	// probeSent holds when each probe request was handed out (Request), by i/Probe.Every.
	// Request and Check of one request run on one goroutine of the generator, one after
	// the other, and no two requests share a slot.
	probeSent []time.Time
}

type chunk struct {
	buf   []byte // requests, back to back
	keys  []byte // the asked numbers, back to back
	spans []span
}

type span struct {
	off, end       uint32 // the request in buf
	keyOff, keyEnd uint32 // its number in keys
}

// Build makes spec.N requests. Keys are drawn in order; signing and encryption run on
// every core.
func Build(spec Spec) (*Batch, error) {
	a := spec.Account
	switch {
	case spec.N < 0:
		return nil, fmt.Errorf("traffic: %d requests", spec.N)
	case spec.Keys == nil:
		return nil, errors.New("traffic: no Keys")
	case a.Token == "" || a.Path == "":
		return nil, errors.New("traffic: the account needs a token and a webhook path")
	case spec.OpenIDs < 1:
		return nil, fmt.Errorf("traffic: %d OpenIDs, want at least 1", spec.OpenIDs)
	case spec.Probe != nil && (spec.Probe.Every < 1 || len(spec.Probe.Texts) == 0 || spec.Probe.Check == nil):
		return nil, errors.New("traffic: a Probe needs Every ≥ 1, texts and a Check")
	}
	if spec.Now.IsZero() {
		spec.Now = time.Now()
	}
	if spec.SampleEvery <= 0 {
		spec.SampleEvery = 16
	}
	b := &Batch{spec: spec}
	if spec.Probe != nil {
		b.probeSent = make([]time.Time, spec.N/spec.Probe.Every+1)
	}
	if spec.Mode == Safe {
		c, err := wechat.NewCrypter(a.Token, a.AppID, a.AESKey, "")
		if err != nil {
			return nil, fmt.Errorf("traffic: %w", err)
		}
		b.crypter = c
	}
	rows := make([]int32, spec.N)
	for i := range rows {
		row, _ := spec.Keys.Next()
		rows[i] = int32(row)
	}
	b.chunks = make([]chunk, (spec.N+1<<chunkBits-1)>>chunkBits)
	var wg sync.WaitGroup
	next := make(chan int, len(b.chunks))
	for c := range b.chunks {
		next <- c
	}
	close(next)
	for range min(runtime.GOMAXPROCS(0), len(b.chunks)) {
		wg.Go(func() {
			for c := range next {
				lo := c << chunkBits
				hi := min(lo+1<<chunkBits, spec.N)
				b.chunks[c] = b.build(lo, rows[lo:hi])
			}
		})
	}
	wg.Wait()
	return b, nil
}

// build makes the requests lo, lo+1, … asking for rows.
func (b *Batch) build(lo int, rows []int32) chunk {
	spec, a := &b.spec, &b.spec.Account
	ch := chunk{spans: make([]span, len(rows))}
	rng := rand.New(rand.NewPCG(uint64(spec.First)+uint64(lo), 1))
	ts := strconv.FormatInt(spec.Now.Unix(), 10)
	var msg, body, enc, text []byte
	for j, row := range rows {
		seq := spec.First + int64(lo+j)
		key := Key(int(row))
		openID := OpenID(int(seq % int64(spec.OpenIDs)))
		nonce := strconv.FormatUint(1_000_000_000+uint64(seq)*2654435761%9_000_000_000, 10)
		text = append(append(text[:0], '?'), key...)
		if g, ok := spec.Probe.is(lo + j); ok {
			text = append(text[:0], spec.Probe.Texts[g]...)
			key = strings.TrimPrefix(spec.Probe.Texts[g], "?")
		}
		msg = wechat.AppendTextMessage(msg[:0], []byte(a.ID), []byte(openID), spec.Now.Unix(), text, firstMsgID+seq)

		query := "?signature=" + wechat.Signature(a.Token, ts, nonce) + "&timestamp=" + ts + "&nonce=" + nonce + "&openid=" + openID
		body = msg
		if spec.Mode == Safe {
			var random [16]byte
			for k := range random {
				random[k] = byte(rng.Uint32())
			}
			enc = b.crypter.Current.Encrypt(enc[:0], msg, []byte(a.AppID), &random)
			query += "&encrypt_type=aes&msg_signature=" + wechat.MsgSignature(a.Token, ts, nonce, string(enc))
			body = wechat.AppendRequestEnvelope(body[:0:0], []byte(a.ID), enc)
		}
		s := span{off: uint32(len(ch.buf)), keyOff: uint32(len(ch.keys))}
		ch.buf = append(ch.buf, "POST "...)
		ch.buf = append(ch.buf, a.Path...)
		ch.buf = append(ch.buf, query...)
		ch.buf = append(ch.buf, " HTTP/1.1\r\nHost: "...)
		ch.buf = append(ch.buf, a.Host...)
		ch.buf = append(ch.buf, "\r\nUser-Agent: Mozilla/4.0\r\nAccept: */*\r\nContent-Type: text/xml\r\nContent-Length: "...)
		ch.buf = strconv.AppendInt(ch.buf, int64(len(body)), 10)
		ch.buf = append(ch.buf, "\r\n\r\n"...)
		ch.buf = append(ch.buf, body...)
		ch.keys = append(ch.keys, key...)
		s.end, s.keyEnd = uint32(len(ch.buf)), uint32(len(ch.keys))
		ch.spans[j] = s
	}
	return ch
}

// OpenID returns the OpenID of sender n: 28 characters, as WeChat's are.
func OpenID(n int) string {
	s := strconv.Itoa(n)
	const prefix = "oWxBench"
	pad := 28 - len(prefix) - len(s)
	return prefix + "00000000000000000000"[:max(pad, 0)] + s
}

// Len is the number of requests.
func (b *Batch) Len() int { return b.spec.N }

// Request returns request i: a complete HTTP/1.1 request. The bytes must not be changed.
// For a probe request it notes the time: the generator sends what Request returns at once.
func (b *Batch) Request(i int) []byte {
	if _, ok := b.spec.Probe.is(i); ok {
		b.probeSent[i/b.spec.Probe.Every] = time.Now()
	}
	c := &b.chunks[i>>chunkBits]
	s := c.spans[i&(1<<chunkBits-1)]
	return c.buf[s.off:s.end:s.end]
}

// Key returns the number request i asks for; for a probe, the numbers, separated by
// spaces.
func (b *Batch) Key(i int) []byte {
	c := &b.chunks[i>>chunkBits]
	s := c.spans[i&(1<<chunkBits-1)]
	return c.keys[s.keyOff:s.keyEnd:s.keyEnd]
}

// Bytes is the size of all requests.
func (b *Batch) Bytes() int {
	n := 0
	for _, c := range b.chunks {
		n += len(c.buf)
	}
	return n
}

// Check verifies the reply body to request i. A plaintext reply must be WeChat XML that
// names the asked number in brackets, as both the found and the not-found texts do (a
// rate-limited or starting-up reply does not). A safe-mode reply must be an encrypted
// envelope; one in SampleEvery is verified in full: its MsgSignature, its decryption, and
// the number in the decrypted reply. A probe's reply is always decrypted, and its content
// handed to Probe.Check.
func (b *Batch) Check(i int, body []byte) error {
	if g, ok := b.spec.Probe.is(i); ok {
		return b.checkProbe(i, g, body)
	}
	key := b.Key(i)
	if b.spec.Mode == Plaintext {
		if !bytes.HasPrefix(body, []byte("<xml>")) {
			return fmt.Errorf("reply is not WeChat XML: %.60q", body)
		}
		if !namesKey(textContent(body), key) {
			return fmt.Errorf("reply does not name [%s]: %.200q", key, body)
		}
		return nil
	}
	if !bytes.HasPrefix(body, []byte("<xml><Encrypt>")) {
		return fmt.Errorf("reply is not an encrypted envelope: %.60q", body)
	}
	if i%b.spec.SampleEvery != 0 {
		return nil
	}
	content, err := OpenReply(b.crypter, body)
	if err != nil {
		return err
	}
	if !namesKey(content, key) {
		return fmt.Errorf("decrypted reply does not name [%s]: %.200q", key, content)
	}
	return nil
}

// checkProbe hands the content of the reply to probe request i, of group g, to
// Probe.Check.
func (b *Batch) checkProbe(i, g int, body []byte) error {
	recv := time.Now()
	var content []byte
	if b.spec.Mode == Plaintext {
		if !bytes.HasPrefix(body, []byte("<xml>")) {
			return fmt.Errorf("probe reply is not WeChat XML: %.60q", body)
		}
		content = textContent(body)
	} else {
		var err error
		if content, err = OpenReply(b.crypter, body); err != nil {
			return fmt.Errorf("probe reply: %w", err)
		}
	}
	return b.spec.Probe.Check(g, content, b.probeSent[i/b.spec.Probe.Every], recv)
}

// OpenReply verifies and decrypts a safe-mode reply envelope and returns the reply's
// Content.
func OpenReply(c *wechat.Crypter, body []byte) ([]byte, error) {
	var env wechat.Message
	if err := env.Parse(body); err != nil {
		return nil, fmt.Errorf("reply envelope: %w", err)
	}
	if !wechat.VerifyMsgSignature(c.Token, env.TimeStamp, env.Nonce, env.Encrypt, env.MsgSignature) {
		return nil, errors.New("reply MsgSignature does not verify")
	}
	dec, err := c.Decrypt(nil, env.Encrypt)
	if err != nil {
		return nil, fmt.Errorf("decrypt reply: %w", err)
	}
	var m wechat.Message
	if err := m.Parse(dec.Msg); err != nil {
		return nil, fmt.Errorf("decrypted reply: %w", err)
	}
	return m.Content, nil
}

// textContent returns the CDATA text of a reply's <Content>, without parsing the whole
// reply; nil when there is none.
func textContent(body []byte) []byte {
	const open, end = "<Content><![CDATA[", "]]></Content>"
	i := bytes.Index(body, []byte(open))
	if i < 0 {
		return nil
	}
	body = body[i+len(open):]
	j := bytes.Index(body, []byte(end))
	if j < 0 {
		return nil
	}
	return body[:j]
}

// namesKey reports whether s contains "[key]", without allocating.
func namesKey(s, key []byte) bool {
	for {
		j := bytes.Index(s, key)
		if j < 0 {
			return false
		}
		if j > 0 && s[j-1] == '[' && j+len(key) < len(s) && s[j+len(key)] == ']' {
			return true
		}
		s = s[j+1:]
	}
}
