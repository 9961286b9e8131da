package wechat

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
)

// SignatureLen is the length of a signature: hex-encoded SHA-1.
const SignatureLen = 2 * sha1.Size

// Signature returns the `signature` WeChat puts on a callback URL: the lower-case hex SHA-1
// of token, timestamp and nonce sorted as byte strings and concatenated.
// Signature is safe for concurrent use.
func Signature(token, timestamp, nonce string) string {
	sum := digest(str(token), str(timestamp), str(nonce))
	return hex.EncodeToString(sum[:])
}

// MsgSignature returns the `msg_signature` of an encrypted message: the lower-case hex SHA-1
// of token, timestamp, nonce and the base64 ciphertext encrypt, sorted and concatenated.
// MsgSignature is safe for concurrent use.
func MsgSignature(token, timestamp, nonce, encrypt string) string {
	sum := digest(str(token), str(timestamp), str(nonce), str(encrypt))
	return hex.EncodeToString(sum[:])
}

// VerifySignature reports whether signature is Signature(token, timestamp, nonce). It
// compares in constant time, accepts only the lower-case hex WeChat sends, and does not
// allocate. VerifySignature is safe for concurrent use.
func VerifySignature(token string, timestamp, nonce, signature []byte) bool {
	sum := digest(str(token), raw(timestamp), raw(nonce))
	return verify(&sum, signature)
}

// VerifyMsgSignature reports whether signature is the msg_signature of encrypt under token,
// timestamp and nonce. It compares in constant time and does not allocate.
// VerifyMsgSignature is safe for concurrent use.
func VerifyMsgSignature(token string, timestamp, nonce, encrypt, signature []byte) bool {
	sum := digest(str(token), raw(timestamp), raw(nonce), raw(encrypt))
	return verify(&sum, signature)
}

// CheckSignature is VerifySignature returning ErrSignature on a mismatch and nil otherwise.
func CheckSignature(token string, timestamp, nonce, signature []byte) error {
	if !VerifySignature(token, timestamp, nonce, signature) {
		return ErrSignature
	}
	return nil
}

// CheckMsgSignature is VerifyMsgSignature returning ErrMsgSignature on a mismatch and nil
// otherwise.
func CheckMsgSignature(token string, timestamp, nonce, encrypt, signature []byte) error {
	if !VerifyMsgSignature(token, timestamp, nonce, encrypt, signature) {
		return ErrMsgSignature
	}
	return nil
}

// AppendMsgSignature appends the hex msg_signature of encrypt to dst and returns the
// extended buffer. encrypt may alias dst. It does not allocate when dst has room for
// SignatureLen more bytes. AppendMsgSignature is safe for concurrent use.
func AppendMsgSignature(dst []byte, token string, timestamp, nonce, encrypt []byte) []byte {
	sum := digest(str(token), raw(timestamp), raw(nonce), raw(encrypt))
	return hex.AppendEncode(dst, sum[:])
}

func verify(sum *[sha1.Size]byte, signature []byte) bool {
	var want [SignatureLen]byte
	hex.Encode(want[:], sum[:])
	return subtle.ConstantTimeCompare(want[:], signature) == 1
}

// part is one input of a signature. The token is configuration (a string) and the other
// inputs come straight from a request (bytes); part holds either without converting,
// because a conversion would allocate on every request.
type part struct {
	s     string
	b     []byte
	isStr bool
}

func str(s string) part { return part{s: s, isStr: true} }
func raw(b []byte) part { return part{b: b} }

func (p *part) len() int {
	if p.isStr {
		return len(p.s)
	}
	return len(p.b)
}

func (p *part) at(i int) byte {
	if p.isStr {
		return p.s[i]
	}
	return p.b[i]
}

// less orders parts as byte strings, the order WeChat sorts signature inputs in.
func less(p, q *part) bool {
	n := min(p.len(), q.len())
	for i := range n {
		if a, b := p.at(i), q.at(i); a != b {
			return a < b
		}
	}
	return p.len() < q.len()
}

// digest sorts the parts and returns the SHA-1 of their concatenation. It is written so
// that nothing escapes: the parts sit in a fixed array, the hash is a local value the
// compiler devirtualises, and a string is fed to it through a stack buffer
// ([]byte(s) would allocate). signature_test.go pins 0 allocations.
func digest(in ...part) [sha1.Size]byte {
	var ps [4]part
	n := copy(ps[:], in)
	for i := 1; i < n; i++ { // insertion sort: at most four parts
		for j := i; j > 0 && less(&ps[j], &ps[j-1]); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	h := sha1.New()
	var chunk [64]byte
	for i := range n {
		if !ps[i].isStr {
			h.Write(ps[i].b)
			continue
		}
		for s := ps[i].s; len(s) > 0; {
			c := copy(chunk[:], s)
			h.Write(chunk[:c])
			s = s[c:]
		}
	}
	var sum [sha1.Size]byte
	h.Sum(sum[:0])
	return sum
}
