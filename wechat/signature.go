package wechat

import (
	"bytes"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
)

// Signature returns the `signature` WeChat puts on a callback URL: the lower-case hex SHA-1
// of token, timestamp and nonce sorted as byte strings and concatenated. That is the
// msg_signature of an empty ciphertext, as an empty input adds nothing wherever it sorts.
// Signature is safe for concurrent use.
func Signature(token, timestamp, nonce string) string {
	return MsgSignature(token, timestamp, nonce, "")
}

// MsgSignature returns the `msg_signature` of an encrypted message: the lower-case hex SHA-1
// of token, timestamp, nonce and the base64 ciphertext encrypt, sorted and concatenated.
// MsgSignature is safe for concurrent use.
func MsgSignature(token, timestamp, nonce, encrypt string) string {
	return string(appendMsgSignature(nil, token, []byte(timestamp), []byte(nonce), []byte(encrypt)))
}

// VerifySignature reports whether signature is Signature(token, timestamp, nonce), the
// msg_signature of no ciphertext. It compares in constant time, accepts only the
// lower-case hex WeChat sends, and does not allocate. VerifySignature is safe for
// concurrent use.
func VerifySignature(token string, timestamp, nonce, signature []byte) bool {
	return VerifyMsgSignature(token, timestamp, nonce, nil, signature)
}

// VerifyMsgSignature reports whether signature is the msg_signature of encrypt under token,
// timestamp and nonce. It compares in constant time and does not allocate.
// VerifyMsgSignature is safe for concurrent use.
func VerifyMsgSignature(token string, timestamp, nonce, encrypt, signature []byte) bool {
	var buf [2 * sha1.Size]byte
	want := appendMsgSignature(buf[:0], token, timestamp, nonce, encrypt)
	return subtle.ConstantTimeCompare(want, signature) == 1
}

// appendMsgSignature appends the hex msg_signature of encrypt to dst and returns the
// extended buffer. encrypt may alias dst. It does not allocate when dst has room for
// 40 more bytes.
func appendMsgSignature(dst []byte, token string, timestamp, nonce, encrypt []byte) []byte {
	sum := digest(token, timestamp, nonce, encrypt)
	return hex.AppendEncode(dst, sum[:])
}

// digest returns the SHA-1 of token and the three parts, sorted as byte strings (the
// order WeChat sorts signature inputs in) and concatenated. The token is configuration (a
// string) and the parts come straight from a request (bytes); they are compared without
// converting one to the other, and the token is fed to the hash through a stack buffer,
// because a conversion would allocate on every request.
func digest(token string, a, b, c []byte) [sha1.Size]byte {
	ps := [3][]byte{a, b, c}
	for i := 1; i < len(ps); i++ { // insertion sort of three
		for j := i; j > 0 && bytes.Compare(ps[j], ps[j-1]) < 0; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	t := 0 // how many parts sort before the token
	for t < len(ps) && string(ps[t]) < token {
		t++
	}
	h := sha1.New()
	for _, p := range ps[:t] {
		h.Write(p)
	}
	var chunk [64]byte
	for s := token; len(s) > 0; {
		n := copy(chunk[:], s)
		h.Write(chunk[:n])
		s = s[n:]
	}
	for _, p := range ps[t:] {
		h.Write(p)
	}
	var sum [sha1.Size]byte
	h.Sum(sum[:0])
	return sum
}
