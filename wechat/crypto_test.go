package wechat

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// The Official Account encryption sample of Tencent's WXBizMsgCrypt SDK (Sample.py and
// its siblings; see testdata/README.md).
const (
	sampleToken     = "spamtest"
	sampleKey       = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	sampleAppID     = "wx2c2769f8efd9abc2"
	sampleTimestamp = "1409735669"
	sampleNonce     = "1320562132"
	sampleMsgSign   = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
	sampleBody      = `<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=]]></Encrypt></xml>`
)

// The WeCom samples of the same SDK.
const (
	wecomToken  = "QDG6eK"
	wecomKey    = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	wecomCorpID = "wx5823bf96d3bd56c7"
	wecomBody   = `<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>`
)

// Two more keys for round trips.
const (
	keyA = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	keyB = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlk0"
)

func mustCrypter(tb testing.TB, token, receiveID, current, previous string) *Crypter {
	tb.Helper()
	c, err := NewCrypter(token, receiveID, current, previous)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestOfficialSample(t *testing.T) {
	var env Message
	if err := env.Parse([]byte(sampleBody)); err != nil {
		t.Fatal(err)
	}
	if !VerifyMsgSignature(sampleToken, []byte(sampleTimestamp), []byte(sampleNonce), env.Encrypt, []byte(sampleMsgSign)) {
		t.Fatalf("msg_signature %s does not verify", sampleMsgSign)
	}
	if got := MsgSignature(sampleToken, sampleTimestamp, sampleNonce, string(env.Encrypt)); got != sampleMsgSign {
		t.Errorf("MsgSignature: got %q, want %q", got, sampleMsgSign)
	}
	c := mustCrypter(t, sampleToken, sampleAppID, sampleKey, "")
	d, err := c.Open(nil, []byte(sampleMsgSign), []byte(sampleTimestamp), []byte(sampleNonce), env.Encrypt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if got := string(d.ReceiveID); got != sampleAppID {
		t.Errorf("ReceiveID: got %q, want %q", got, sampleAppID)
	}
	if d.UsedPrevious || d.Key != c.Current {
		t.Errorf("key: got previous %v, want the current key", d.UsedPrevious)
	}
	var m Message
	if err := m.Parse(d.Msg); err != nil {
		t.Fatalf("Parse(%q): %v", d.Msg, err)
	}
	checkFields(t, fieldsOf(t, &m), map[string]string{
		"ToUserName": "gh_10f6c3c3ac5a", "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs", "CreateTime": "1409735668",
		"MsgType": "text", "Content": "abcdteT", "MsgID": "6054768590064713728",
	})
}

func TestWeComSamples(t *testing.T) {
	c := mustCrypter(t, wecomToken, wecomCorpID, wecomKey, "")
	t.Run("URL check", func(t *testing.T) {
		echostr := []byte("P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==")
		got, err := c.VerifyURL([]byte("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"), []byte("1409659589"), []byte("263014780"), echostr)
		if err != nil {
			t.Fatalf("VerifyURL: %v", err)
		}
		if want := "1616140317555161061"; string(got) != want {
			t.Errorf("VerifyURL: got %q, want %q", got, want)
		}
		_, err = c.VerifyURL([]byte("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd4"), []byte("1409659589"), []byte("263014780"), echostr)
		if !errors.Is(err, ErrMsgSignature) {
			t.Errorf("VerifyURL with a wrong signature: got %v, want ErrMsgSignature", err)
		}
		other := mustCrypter(t, wecomToken, "ww0000000000000000", wecomKey, "")
		_, err = other.VerifyURL([]byte("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"), []byte("1409659589"), []byte("263014780"), echostr)
		if !errors.Is(err, ErrAppID) {
			t.Errorf("VerifyURL for another corporation: got %v, want ErrAppID", err)
		}
	})
	t.Run("message", func(t *testing.T) {
		var env Message
		if err := env.Parse([]byte(wecomBody)); err != nil {
			t.Fatal(err)
		}
		d, err := c.Open(nil, []byte("477715d11cdb4164915debcba66cb864d751f3e6"), []byte("1409659813"), []byte("1372623149"), env.Encrypt)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		var m Message
		if err := m.Parse(d.Msg); err != nil {
			t.Fatal(err)
		}
		checkFields(t, fieldsOf(t, &m), map[string]string{
			"ToUserName": "wx5823bf96d3bd56c7", "FromUserName": "mycreate", "CreateTime": "1409659813",
			"MsgType": "text", "Content": "hello", "MsgID": "4561255354251345929",
		})
	})
}

// TestRoundTrip encrypts and decrypts messages of every length that gives each padding
// length 1..32, for an AppID and a CorpID, with the current and the previous key.
func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name         string
		receiveID    string
		encryptWith  string
		usedPrevious bool
	}{
		{name: "appid, current key", receiveID: "wx2c2769f8efd9abc2", encryptWith: keyA},
		{name: "appid, previous key", receiveID: "wx2c2769f8efd9abc2", encryptWith: keyB, usedPrevious: true},
		{name: "corp id, current key", receiveID: "ww0123456789abcdef", encryptWith: keyA},
		{name: "corp id, previous key", receiveID: "ww0123456789abcdef", encryptWith: keyB, usedPrevious: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCrypter(t, "token", tt.receiveID, keyA, keyB)
			k, err := parseKey(tt.encryptWith, "EncodingAESKey")
			if err != nil {
				t.Fatal(err)
			}
			pads := map[int]bool{}
			buf := make([]byte, 0, 1024)
			for n := 0; n < 2*padBlock; n++ {
				msg := []byte(strings.Repeat("消", n/3) + strings.Repeat("x", n%3))
				random := [16]byte{byte(n), 1, 2, 3}
				enc := k.Encrypt([]byte("prefix"), msg, []byte(tt.receiveID), &random)
				if !bytes.HasPrefix(enc, []byte("prefix")) {
					t.Fatalf("Encrypt: got %q, want it appended to the buffer", enc)
				}
				enc = enc[len("prefix"):]
				plainLen := headerLen + len(msg) + len(tt.receiveID)
				if got, want := len(enc), base64.StdEncoding.EncodedLen(plainLen+padBlock-plainLen%padBlock); got != want {
					t.Errorf("len(Encrypt): got %d, want %d", got, want)
				}
				raw, err := base64.StdEncoding.Strict().DecodeString(string(enc))
				if err != nil {
					t.Fatalf("Encrypt: not canonical padded base64: %v", err)
				}
				pad := len(raw) - plainLen
				pads[pad] = true

				// An independent CBC decryption (crypto/cipher) sees the documented layout.
				plain := stdDecrypt(t, tt.encryptWith, raw)
				if !bytes.Equal(plain[:16], random[:]) || int(binary.BigEndian.Uint32(plain[16:20])) != len(msg) ||
					!bytes.Equal(plain[20:20+len(msg)], msg) || string(plain[20+len(msg):plainLen]) != tt.receiveID ||
					!bytes.Equal(plain[plainLen:], bytes.Repeat([]byte{byte(pad)}, pad)) {
					t.Fatalf("plaintext of %q: got %q, want random ‖ len ‖ msg ‖ receive id ‖ %d×%d", msg, plain, pad, pad)
				}

				d, err := c.Decrypt(buf[:0], enc)
				if err != nil {
					t.Fatalf("Decrypt(len %d): %v", len(msg), err)
				}
				if !bytes.Equal(d.Msg, msg) || string(d.ReceiveID) != tt.receiveID {
					t.Errorf("Decrypt: got %q for %q, want %q for %q", d.Msg, d.ReceiveID, msg, tt.receiveID)
				}
				if d.UsedPrevious != tt.usedPrevious {
					t.Errorf("UsedPrevious: got %v, want %v", d.UsedPrevious, tt.usedPrevious)
				}
				if want := c.Current; tt.usedPrevious && d.Key != c.Previous || !tt.usedPrevious && d.Key != want {
					t.Errorf("Key: got %v, want the key that decrypted", d.Key)
				}
			}
			for p := 1; p <= padBlock; p++ {
				if !pads[p] {
					t.Errorf("padding length %d never exercised", p)
				}
			}
			if pads[0] || pads[padBlock+1] {
				t.Errorf("padding lengths seen: %v, want only 1..32", pads)
			}
		})
	}
}

// stdDecrypt decrypts with crypto/cipher's CBC, an implementation independent of ours.
func stdDecrypt(tb testing.TB, encodingAESKey string, raw []byte) []byte {
	tb.Helper()
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil {
		tb.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, len(raw))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(out, raw)
	return out
}

// stdEncrypt encrypts a raw plaintext (already padded, or deliberately mis-padded) with
// crypto/cipher's CBC and encodes it in base64.
func stdEncrypt(tb testing.TB, encodingAESKey string, plain []byte) []byte {
	tb.Helper()
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil {
		tb.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, plain)
	return []byte(base64.StdEncoding.EncodeToString(out))
}

// plaintext builds random16 ‖ uint32be(length) ‖ msg ‖ receiveID, unpadded.
func plaintext(length uint32, msg, receiveID string) []byte {
	p := make([]byte, 20, 20+len(msg)+len(receiveID)+padBlock)
	binary.BigEndian.PutUint32(p[16:], length)
	p = append(p, msg...)
	return append(p, receiveID...)
}

func pkcs7(p []byte, block int) []byte {
	n := block - len(p)%block
	return append(p, bytes.Repeat([]byte{byte(n)}, n)...)
}

func TestDecryptErrors(t *testing.T) {
	c := mustCrypter(t, "token", sampleAppID, keyA, "")
	good := c.Current.Encrypt(nil, []byte("<xml/>"), []byte(sampleAppID), nil)
	padded := pkcs7(plaintext(6, "<xml/>", sampleAppID), padBlock)
	tests := []struct {
		name       string
		ciphertext []byte
		want       error
	}{
		{name: "wrong key", ciphertext: mustCrypter(t, "token", sampleAppID, keyB, "").Current.Encrypt(nil, []byte("<xml/>"), []byte(sampleAppID), nil), want: ErrDecrypt},
		{name: "wrong appid", ciphertext: c.Current.Encrypt(nil, []byte("<xml/>"), []byte("wx0000000000000000"), nil), want: ErrAppID},
		{name: "empty appid", ciphertext: c.Current.Encrypt(nil, []byte("<xml/>"), nil, nil), want: ErrAppID},
		{name: "empty", ciphertext: nil, want: ErrDecrypt},
		{name: "not base64", ciphertext: []byte("!!!!"), want: ErrDecrypt},
		{name: "base64 without padding", ciphertext: bytes.TrimRight(good, "="), want: ErrDecrypt},
		{name: "truncated by a block", ciphertext: []byte(base64.StdEncoding.EncodeToString(mustDecode(t, good)[:len(mustDecode(t, good))-16])), want: ErrDecrypt},
		{name: "truncated mid-block", ciphertext: []byte(base64.StdEncoding.EncodeToString(mustDecode(t, good)[:len(mustDecode(t, good))-5])), want: ErrDecrypt},
		{name: "truncated base64", ciphertext: good[:len(good)-4], want: ErrDecrypt},
		{name: "one block", ciphertext: []byte(base64.StdEncoding.EncodeToString(mustDecode(t, good)[:16])), want: ErrDecrypt},
		{name: "pad byte 0", ciphertext: stdEncrypt(t, keyA, append(plaintext(6, "<xml/>", sampleAppID+"\x01\x01\x01"), make([]byte, 32-(26+len(sampleAppID)+3)%32)...)), want: ErrDecrypt},
		{name: "pad byte 33", ciphertext: stdEncrypt(t, keyA, append(plaintext(6, "<xml/>", sampleAppID), bytes.Repeat([]byte{33}, 64-(26+len(sampleAppID)))...)), want: ErrDecrypt},
		{name: "inconsistent padding", ciphertext: stdEncrypt(t, keyA, append(padded[:len(padded)-2:len(padded)-2], 1, padded[len(padded)-1])), want: ErrDecrypt},
		{name: "padding longer than the plaintext", ciphertext: stdEncrypt(t, keyA, bytes.Repeat([]byte{32}, 16)), want: ErrDecrypt},
		{name: "shorter than the header", ciphertext: stdEncrypt(t, keyA, pkcs7(make([]byte, 19), padBlock)), want: ErrDecrypt},
		{name: "length field past the end", ciphertext: stdEncrypt(t, keyA, pkcs7(plaintext(7+uint32(len(sampleAppID)), "<xml/>", sampleAppID), padBlock)), want: ErrDecrypt},
		{name: "length field 0xffffffff", ciphertext: stdEncrypt(t, keyA, pkcs7(plaintext(0xffffffff, "<xml/>", sampleAppID), padBlock)), want: ErrDecrypt},
		{name: "length field 0x80000000", ciphertext: stdEncrypt(t, keyA, pkcs7(plaintext(0x80000000, "<xml/>", sampleAppID), padBlock)), want: ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := c.Decrypt(nil, tt.ciphertext)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decrypt: got %v, want %v", err, tt.want)
			}
			if d.Msg != nil || d.Key != nil {
				t.Errorf("Decrypt with an error: got %q, want an empty Decrypted", d.Msg)
			}
			if !strings.HasPrefix(err.Error(), "wechat: ") {
				t.Errorf("error text: got %q, want the prefix %q", err.Error(), "wechat: ")
			}
		})
	}
	// The layout checks are right at the edges: a length field that exactly fits, and
	// padding of exactly 32 with a 16-byte-padded message (other SDKs) are accepted.
	for _, plain := range [][]byte{
		pkcs7(plaintext(6+uint32(len(sampleAppID)), "<xml/>", sampleAppID), padBlock),
		pkcs7(plaintext(6, "<xml/>", sampleAppID), 16),
	} {
		if _, _, err := c.Current.Decrypt(nil, stdEncrypt(t, keyA, plain)); err != nil {
			t.Errorf("Decrypt of %q: got %v, want nil", plain, err)
		}
	}
}

func mustDecode(tb testing.TB, s []byte) []byte {
	tb.Helper()
	b, err := base64.StdEncoding.DecodeString(string(s))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestDecryptKeyPrecedence(t *testing.T) {
	a, _ := parseKey(keyA, "EncodingAESKey")
	b, _ := parseKey(keyB, "EncodingAESKey")
	tests := []struct {
		name     string
		key      *Key
		rid      string
		previous bool
		want     error
	}{
		{name: "current key, wrong appid, previous fails: ErrAppID", key: a, rid: "wxother", previous: true, want: ErrAppID},
		{name: "previous key, wrong appid: ErrAppID", key: b, rid: "wxother", previous: true, want: ErrAppID},
		{name: "previous key without a previous: ErrDecrypt", key: b, rid: sampleAppID, previous: false, want: ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Crypter{Token: "t", ReceiveID: sampleAppID, Current: a}
			if tt.previous {
				c.Previous = b
			}
			_, err := c.Decrypt(nil, tt.key.Encrypt(nil, []byte("m"), []byte(tt.rid), nil))
			if !errors.Is(err, tt.want) {
				t.Errorf("Decrypt: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAnyReceiveID(t *testing.T) {
	c := mustCrypter(t, "token", "", keyA, "")
	d, err := c.Decrypt(nil, c.Current.Encrypt(nil, []byte("m"), []byte("ww0123456789abcdef"), nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(d.ReceiveID), "ww0123456789abcdef"; got != want {
		t.Errorf("ReceiveID: got %q, want %q", got, want)
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{name: "official sample", key: sampleKey, ok: true},
		{name: "WeCom sample", key: wecomKey, ok: true},
		{name: "42 characters", key: sampleKey[:42], ok: false},
		{name: "44 characters", key: sampleKey + "=", ok: false},
		{name: "empty", key: "", ok: false},
		{name: "not base64", key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF*", ok: false},
		{name: "URL alphabet", key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF-", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := parseKey(tt.key, "EncodingAESKey")
			if tt.ok != (err == nil) {
				t.Fatalf("parseKey: got error %v, want ok %v", err, tt.ok)
			}
			if tt.ok {
				if k == nil {
					t.Fatal("parseKey: got nil Key")
				}
				return
			}
			if !errors.Is(err, ErrKey) {
				t.Errorf("parseKey: got %v, want ErrKey", err)
			}
			if tt.key != "" && strings.Contains(err.Error(), tt.key[:10]) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
}

func TestNewCrypterErrors(t *testing.T) {
	tests := []struct {
		name                             string
		token, current, previous, inText string
	}{
		{name: "empty token", token: "", current: keyA, inText: "token"},
		{name: "bad current key", token: "t", current: "short", inText: "current"},
		{name: "bad previous key", token: "t", current: keyA, previous: keyA[:42] + "*", inText: "previous"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCrypter(tt.token, "", tt.current, tt.previous)
			if err == nil {
				t.Fatal("NewCrypter: got nil error")
			}
			if !strings.Contains(err.Error(), tt.inText) || !strings.HasPrefix(err.Error(), "wechat: ") {
				t.Errorf("error: got %q, want it to start %q and name %q", err, "wechat: ", tt.inText)
			}
			if tt.current != "" && strings.Contains(err.Error(), tt.current[:5]) && tt.current != "short" {
				t.Errorf("error %q contains a key", err)
			}
		})
	}
}

func TestAppendEncryptedReply(t *testing.T) {
	c := mustCrypter(t, sampleToken, sampleAppID, keyA, keyB)
	reply := AppendTextReply(nil, []byte("oUser"), []byte("gh_account"), 1409735669, []byte("[18-546]的工作台位为[车体新厂房3号]"))
	tests := []struct {
		name      string
		key       *Key
		receiveID []byte
		wantRID   string
	}{
		{name: "current key, configured appid", key: c.Current, receiveID: []byte(sampleAppID), wantRID: sampleAppID},
		{name: "previous key, echoed appid", key: c.Previous, receiveID: []byte(sampleAppID), wantRID: sampleAppID},
		{name: "echoed corp id", key: c.Current, receiveID: []byte("ww0123456789abcdef"), wantRID: "ww0123456789abcdef"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := c.AppendEncryptedReply([]byte("x"), tt.key, tt.receiveID, reply, []byte(sampleTimestamp), []byte(sampleNonce))
			if !bytes.HasPrefix(out, []byte("x<xml><Encrypt><![CDATA[")) {
				t.Fatalf("AppendEncryptedReply: got %q", out)
			}
			var env Message
			if err := env.Parse(out[1:]); err != nil {
				t.Fatal(err)
			}
			if string(env.TimeStamp) != sampleTimestamp || string(env.Nonce) != sampleNonce {
				t.Errorf("TimeStamp, Nonce: got %q, %q, want %q, %q", env.TimeStamp, env.Nonce, sampleTimestamp, sampleNonce)
			}
			if !VerifyMsgSignature(sampleToken, env.TimeStamp, env.Nonce, env.Encrypt, env.MsgSignature) {
				t.Errorf("MsgSignature %q does not verify", env.MsgSignature)
			}
			msg, rid, err := tt.key.Decrypt(nil, env.Encrypt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(msg, reply) || string(rid) != tt.wantRID {
				t.Errorf("decrypted: got %q for %q, want %q for %q", msg, rid, reply, tt.wantRID)
			}
		})
	}
	a := c.AppendEncryptedReply(nil, c.Current, []byte(sampleAppID), reply, []byte("1"), []byte("2"))
	b := c.AppendEncryptedReply(nil, c.Current, []byte(sampleAppID), reply, []byte("1"), []byte("2"))
	if bytes.Equal(a, b) {
		t.Errorf("two encryptions of one reply are equal: the random prefix is not random")
	}
}

func TestCryptoAllocs(t *testing.T) {
	c := mustCrypter(t, sampleToken, sampleAppID, keyA, keyB)
	msg := AppendTextReply(nil, []byte("oUser"), []byte("gh_account"), 1409735669, []byte("[18-546]的工作台位为[车体新厂房3号]"))
	encA := c.Current.Encrypt(nil, msg, []byte(sampleAppID), nil)
	encB := c.Previous.Encrypt(nil, msg, []byte(sampleAppID), nil)
	buf := make([]byte, 0, 8192)
	ts, nonce, rid := []byte(sampleTimestamp), []byte(sampleNonce), []byte(sampleAppID)
	random := new([16]byte)
	tests := []struct {
		name string
		f    func()
	}{
		{name: "Key.Encrypt", f: func() { c.Current.Encrypt(buf[:0], msg, rid, random) }},
		{name: "Key.Encrypt, crypto/rand", f: func() { c.Current.Encrypt(buf[:0], msg, rid, nil) }},
		{name: "Key.Decrypt", f: func() { c.Current.Decrypt(buf[:0], encA) }},
		{name: "Crypter.Decrypt, previous key", f: func() { c.Decrypt(buf[:0], encB) }},
		{name: "Crypter.AppendEncryptedReply", f: func() { c.AppendEncryptedReply(buf[:0], c.Current, rid, msg, ts, nonce) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.f); got != 0 {
				t.Errorf("allocs per run: got %v, want 0", got)
			}
		})
	}
}

// FuzzDecrypt checks that decryption never panics and fails only with ErrDecrypt, on
// arbitrary text and on arbitrary bytes in valid base64 (which reach the AES and padding
// checks), and that what Encrypt writes decrypts back.
func FuzzDecrypt(f *testing.F) {
	var env Message
	if err := env.Parse([]byte(sampleBody)); err != nil {
		f.Fatal(err)
	}
	f.Add(bytes.Clone(env.Encrypt), []byte("<xml/>"), []byte(sampleAppID))
	f.Add([]byte("P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="), []byte(""), []byte(""))
	f.Add([]byte("!!"), bytes.Repeat([]byte("x"), 100), []byte("ww0123456789abcdef"))
	f.Add(bytes.Repeat([]byte{0}, 32), []byte("\x00"), []byte("\xff"))
	sample, _ := parseKey(sampleKey, "EncodingAESKey")
	c := mustCrypter(f, "token", "", keyA, sampleKey)
	f.Fuzz(func(t *testing.T, ciphertext, msg, receiveID []byte) {
		for _, in := range [][]byte{ciphertext, []byte(base64.StdEncoding.EncodeToString(ciphertext))} {
			d, err := c.Decrypt(nil, in)
			if err != nil {
				if !errors.Is(err, ErrDecrypt) {
					t.Fatalf("Decrypt: got %v, want ErrDecrypt", err)
				}
				continue
			}
			if len(d.Msg)+len(d.ReceiveID)+headerLen > base64.StdEncoding.DecodedLen(len(in)) {
				t.Fatalf("Decrypt: %d+%d bytes out of %d of ciphertext", len(d.Msg), len(d.ReceiveID), len(in))
			}
		}
		enc := sample.Encrypt(nil, msg, receiveID, nil)
		d, err := c.Decrypt(make([]byte, 3, 5), enc)
		if err != nil {
			t.Fatalf("Decrypt(Encrypt(%q, %q)): %v", msg, receiveID, err)
		}
		if !bytes.Equal(d.Msg, msg) || !bytes.Equal(d.ReceiveID, receiveID) || !d.UsedPrevious {
			t.Errorf("round trip: got %q, %q, previous %v, want %q, %q, true", d.Msg, d.ReceiveID, d.UsedPrevious, msg, receiveID)
		}
	})
}

func BenchmarkEncrypt(b *testing.B) {
	k, _ := parseKey(sampleKey, "EncodingAESKey")
	msg := AppendTextReply(nil, []byte("oFLjC5kdmb6CwVtIWLr5xa-DKQhM"), []byte("gh_6b9aa8a6f1e2"), 1714036504, []byte("[18-546]的工作台位为[车体新厂房3号]"))
	rid := []byte(sampleAppID)
	buf := make([]byte, 0, 4096)
	random := [16]byte{}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		buf = k.Encrypt(buf[:0], msg, rid, &random)
	}
}

func BenchmarkAppendEncryptedReply(b *testing.B) {
	c := mustCrypter(b, sampleToken, sampleAppID, sampleKey, "")
	msg := AppendTextReply(nil, []byte("oFLjC5kdmb6CwVtIWLr5xa-DKQhM"), []byte("gh_6b9aa8a6f1e2"), 1714036504, []byte("[18-546]的工作台位为[车体新厂房3号]"))
	ts, nonce, rid := []byte(sampleTimestamp), []byte(sampleNonce), []byte(sampleAppID)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = c.AppendEncryptedReply(buf[:0], c.Current, rid, msg, ts, nonce)
	}
}

func BenchmarkDecrypt(b *testing.B) {
	k, _ := parseKey(sampleKey, "EncodingAESKey")
	enc := k.Encrypt(nil, textMessage, []byte(sampleAppID), nil)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(textMessage)))
	for b.Loop() {
		if _, _, err := k.Decrypt(buf[:0], enc); err != nil {
			b.Fatal(err)
		}
	}
}
