package wechat

import (
	"crypto/sha1"
	"encoding/hex"
	"testing"
)

// sha1Hex is the reference the signature tests compare against: plain SHA-1 of the
// already sorted concatenation.
func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestSignature(t *testing.T) {
	tests := []struct {
		name                    string
		token, timestamp, nonce string
		want                    string
	}{
		{
			// The vector WeChat's developer docs and test tools publish.
			name: "published vector", token: "AAAAA", timestamp: "1714036504", nonce: "1514711492",
			want: "f464b24fc39322e44b38aa78f5edd27bd1441696",
		},
		{
			// Inputs are sorted as byte strings, not as numbers: "10" < "9".
			name: "sorted as bytes", token: "9", timestamp: "10", nonce: "a",
			want: sha1Hex("109a"),
		},
		{
			name: "empty nonce", token: "demo", timestamp: "1", nonce: "",
			want: sha1Hex("1demo"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Signature(tt.token, tt.timestamp, tt.nonce); got != tt.want {
				t.Errorf("Signature: got %q, want %q", got, tt.want)
			}
			ok := VerifySignature(tt.token, []byte(tt.timestamp), []byte(tt.nonce), []byte(tt.want))
			if !ok {
				t.Errorf("VerifySignature(%q): got false, want true", tt.want)
			}
		})
	}
}

func TestVerifySignatureRejects(t *testing.T) {
	const good = "f464b24fc39322e44b38aa78f5edd27bd1441696"
	tests := []struct {
		name      string
		token     string
		signature string
	}{
		{name: "wrong token", token: "AAAAB", signature: good},
		{name: "upper case hex", token: "AAAAA", signature: "F464B24FC39322E44B38AA78F5EDD27BD1441696"},
		{name: "truncated", token: "AAAAA", signature: good[:39]},
		{name: "extended", token: "AAAAA", signature: good + "0"},
		{name: "empty", token: "AAAAA", signature: ""},
		{name: "one bit off", token: "AAAAA", signature: "f464b24fc39322e44b38aa78f5edd27bd1441697"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if VerifySignature(tt.token, []byte("1714036504"), []byte("1514711492"), []byte(tt.signature)) {
				t.Errorf("VerifySignature(%q): got true, want false", tt.signature)
			}
		})
	}
}

func TestMsgSignature(t *testing.T) {
	tests := []struct {
		name                             string
		token, timestamp, nonce, encrypt string
		want                             string
	}{
		{
			// WeCom callback vector from the ailingbot tests (see testdata/README.md).
			name: "wecom vector", token: "jF9WQd6XtH7", timestamp: "1647328566", nonce: "1648278214",
			encrypt: "9eOdb3odwWMVTiGRTm+uiVrx3SGwzjGyq6oWu4b2tWC51YbHQasEVD9ZdS6Nx+XBxB2C/qxZ8bl8+qRBUb8CVg==",
			want:    "0af7077e1d70aed01bf9a6f40b2b52a7536ec807",
		},
		{
			name: "four parts sorted", token: "d", timestamp: "b", nonce: "c", encrypt: "a",
			want: sha1Hex("abcd"),
		},
		{
			name:      "long token goes through the chunked copy",
			token:     "a token well over sixty-four bytes long, so digest copies it in more than one chunk",
			timestamp: "1", nonce: "2", encrypt: "3",
			want: sha1Hex("123a token well over sixty-four bytes long, so digest copies it in more than one chunk"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MsgSignature(tt.token, tt.timestamp, tt.nonce, tt.encrypt); got != tt.want {
				t.Errorf("MsgSignature: got %q, want %q", got, tt.want)
			}
			if got := string(appendMsgSignature([]byte("x"), tt.token, []byte(tt.timestamp), []byte(tt.nonce), []byte(tt.encrypt))); got != "x"+tt.want {
				t.Errorf("appendMsgSignature: got %q, want %q", got, "x"+tt.want)
			}
			if !VerifyMsgSignature(tt.token, []byte(tt.timestamp), []byte(tt.nonce), []byte(tt.encrypt), []byte(tt.want)) {
				t.Errorf("VerifyMsgSignature(%q): got false, want true", tt.want)
			}
			if VerifyMsgSignature(tt.token, []byte(tt.timestamp), []byte(tt.nonce), []byte(tt.encrypt+"x"), []byte(tt.want)) {
				t.Errorf("VerifyMsgSignature with a changed encrypt: got true, want false")
			}
			if VerifyMsgSignature(tt.token, []byte(tt.timestamp), []byte(tt.nonce), []byte(tt.encrypt), []byte(tt.want[1:])) {
				t.Errorf("VerifyMsgSignature with a truncated signature: got true, want false")
			}
		})
	}
}

func TestSignatureAllocs(t *testing.T) {
	ts, nonce := []byte("1714036504"), []byte("1514711492")
	sig := []byte("f464b24fc39322e44b38aa78f5edd27bd1441696")
	enc := make([]byte, 4096)
	dst := make([]byte, 0, 64)
	tests := []struct {
		name string
		f    func()
	}{
		{name: "VerifySignature", f: func() { VerifySignature("AAAAA", ts, nonce, sig) }},
		{name: "VerifyMsgSignature", f: func() { VerifyMsgSignature("AAAAA", ts, nonce, enc, sig) }},
		{name: "appendMsgSignature", f: func() { appendMsgSignature(dst[:0], "AAAAA", ts, nonce, enc) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.f); got != 0 {
				t.Errorf("allocs per run: got %v, want 0", got)
			}
		})
	}
}

func BenchmarkVerifySignature(b *testing.B) {
	ts, nonce := []byte("1714036504"), []byte("1514711492")
	sig := []byte("f464b24fc39322e44b38aa78f5edd27bd1441696")
	b.ReportAllocs()
	for b.Loop() {
		if !VerifySignature("AAAAA", ts, nonce, sig) {
			b.Fatal("signature does not verify")
		}
	}
}
