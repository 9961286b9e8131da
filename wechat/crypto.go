package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// encodingAESKeyLen is the length of an EncodingAESKey as the WeChat and WeCom consoles
// show it: 43 characters of base64 for a 32-byte AES-256 key.
const encodingAESKeyLen = 43

// padBlock is the block size WeChat pads plaintext to (PKCS#7 over 32 bytes, not AES's
// 16).
const padBlock = 32

// The plaintext layout: random16 ‖ uint32be(len(msg)) ‖ msg ‖ receiveID.
const (
	randomLen = 16
	headerLen = randomLen + 4
)

// Decryption failures, built once so that a failed attempt (the current key, before the
// previous one is tried) does not allocate.
var (
	errNotBase64  = fmt.Errorf("%w: ciphertext is not base64", ErrDecrypt)
	errNotBlocks  = fmt.Errorf("%w: ciphertext is not a whole number of AES blocks", ErrDecrypt)
	errBadPadding = fmt.Errorf("%w: bad padding (wrong key?)", ErrDecrypt)
	errTooShort   = fmt.Errorf("%w: plaintext too short", ErrDecrypt)
	errBadLength  = fmt.Errorf("%w: message length field out of range", ErrDecrypt)
)

// Key is a parsed EncodingAESKey: the AES-256 key and the IV derived from it (its first
// 16 bytes). A Key is immutable and safe for concurrent use.
type Key struct {
	block cipher.Block
	iv    [aes.BlockSize]byte
}

// parseKey parses the 43-character EncodingAESKey s. It returns an error wrapping ErrKey
// and naming the setting what, which never contains the key, when s is not 43 characters
// of base64.
func parseKey(s, what string) (*Key, error) {
	if len(s) != encodingAESKeyLen {
		return nil, fmt.Errorf("%w: %s has %d characters, want %d", ErrKey, what, len(s), encodingAESKeyLen)
	}
	// The 43rd character carries 2 bits of padding, which the consoles do not zero, so
	// the decoding must not be strict.
	key, err := base64.StdEncoding.DecodeString(s + "=")
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%w: %s is not base64", ErrKey, what)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, what, err)
	}
	k := &Key{block: block}
	copy(k.iv[:], key)
	clear(key)
	return k, nil
}

// Encrypt appends to dst the base64 (standard alphabet, padded) ciphertext of msg for
// receiveID (the AppID, or the WeCom CorpID) and returns the extended buffer. random is
// the 16 random bytes the plaintext starts with; nil means fresh ones from crypto/rand.
// Encrypt uses dst's spare capacity as scratch space and allocates only when dst has less
// than the base64 length + the padded plaintext length (about 1.75× the base64 length)
// to spare; msg and receiveID must therefore not lie in that spare capacity (a Decrypted
// from the same buffer, say). Encrypt is safe for concurrent use.
func (k *Key) Encrypt(dst, msg, receiveID []byte, random *[16]byte) []byte {
	n := headerLen + len(msg) + len(receiveID)
	n += padBlock - n%padBlock // PKCS#7 pads by 1 to padBlock bytes, never by none
	encLen := base64.StdEncoding.EncodedLen(n)
	off := len(dst)
	// The plaintext is built and encrypted past the end of the base64 output, then
	// encoded into place.
	full := slices.Grow(dst, encLen+n)[:off+encLen+n]
	p := full[off+encLen:]
	// The random bytes are read straight into dst: a local array handed to crypto/rand
	// escapes to the heap in some builds (-race).
	if random != nil {
		copy(p, random[:])
	} else {
		rand.Read(p[:randomLen])
	}
	binary.BigEndian.PutUint32(p[randomLen:], uint32(len(msg)))
	i := headerLen + copy(p[headerLen:], msg)
	i += copy(p[i:], receiveID)
	pad := byte(n - i)
	for ; i < n; i++ {
		p[i] = pad
	}
	k.encryptCBC(p)
	base64.StdEncoding.Encode(full[off:off+encLen], p)
	return full[:off+encLen]
}

// Decrypt decrypts the base64 ciphertext and returns the message and the receive id it
// was encrypted for. The plaintext is written to dst's spare capacity (dst grows when it
// has less than base64.StdEncoding.DecodedLen(len(ciphertext)) to spare), so msg and
// receiveID alias dst's backing array: pass buf[:0] of a reused buf and they stay valid
// until buf is reused. Decrypt returns an error wrapping ErrDecrypt when the ciphertext
// is not base64, not whole AES blocks, badly padded, or carries a length that does not
// fit; it never panics. Decrypt is safe for concurrent use.
func (k *Key) Decrypt(dst, ciphertext []byte) (msg, receiveID []byte, err error) {
	off := len(dst)
	max := base64.StdEncoding.DecodedLen(len(ciphertext))
	buf := slices.Grow(dst, max)[off : off+max]
	n, err := base64.StdEncoding.Decode(buf, ciphertext)
	if err != nil {
		return nil, nil, errNotBase64
	}
	p := buf[:n]
	if n == 0 || n%aes.BlockSize != 0 {
		return nil, nil, errNotBlocks
	}
	k.decryptCBC(p)
	pad := int(p[n-1])
	if pad < 1 || pad > padBlock || pad > n {
		return nil, nil, errBadPadding
	}
	for _, b := range p[n-pad:] {
		if int(b) != pad {
			return nil, nil, errBadPadding
		}
	}
	p = p[:n-pad]
	if len(p) < headerLen {
		return nil, nil, errTooShort
	}
	size := binary.BigEndian.Uint32(p[randomLen:headerLen])
	if uint64(size) > uint64(len(p)-headerLen) {
		return nil, nil, errBadLength
	}
	end := headerLen + int(size)
	return p[headerLen:end:end], p[end:len(p):len(p)], nil
}

// encryptCBC encrypts p, a whole number of blocks, in place. CBC is done by hand on the
// cipher.Block because cipher.NewCBCEncrypter allocates, and a BlockMode carries its IV
// from call to call, so it could not be shared between goroutines either.
func (k *Key) encryptCBC(p []byte) {
	prev := k.iv
	for i := 0; i+aes.BlockSize <= len(p); i += aes.BlockSize {
		b := p[i : i+aes.BlockSize]
		subtle.XORBytes(b, b, prev[:])
		k.block.Encrypt(b, b)
		copy(prev[:], b)
	}
}

// decryptCBC decrypts p, a whole number of blocks, in place.
func (k *Key) decryptCBC(p []byte) {
	prev := k.iv
	var cur [aes.BlockSize]byte
	for i := 0; i+aes.BlockSize <= len(p); i += aes.BlockSize {
		b := p[i : i+aes.BlockSize]
		copy(cur[:], b)
		k.block.Decrypt(b, b)
		subtle.XORBytes(b, b, prev[:])
		prev = cur
	}
}

// Crypter holds what an account's safe mode (or a WeCom application) needs: the token
// that signs, the receive id to check, and the current and, while a key change is under
// way, the previous EncodingAESKey. A Crypter is safe for concurrent use as long as its
// fields are not changed.
type Crypter struct {
	Token     string // the token msg_signature is computed with
	ReceiveID string // the AppID (Official Account) or CorpID (WeCom); "" accepts any
	Current   *Key   // must not be nil
	Previous  *Key   // nil when there is no previous key
}

// NewCrypter parses the keys and returns a Crypter. previous may be "". The error names
// the bad setting and wraps ErrKey for a bad key; it never contains a key.
func NewCrypter(token, receiveID, current, previous string) (*Crypter, error) {
	if token == "" {
		return nil, errors.New("wechat: the token is empty")
	}
	c := &Crypter{Token: token, ReceiveID: receiveID}
	var err error
	if c.Current, err = parseKey(current, "the current EncodingAESKey"); err != nil {
		return nil, err
	}
	if previous != "" {
		if c.Previous, err = parseKey(previous, "the previous EncodingAESKey"); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Decrypted is a decrypted message.
type Decrypted struct {
	Msg          []byte // the message: XML, or the echostr of a WeCom URL check
	ReceiveID    []byte // the receive id it was encrypted for
	Key          *Key   // the key that decrypted it, to encrypt the reply with
	UsedPrevious bool   // Key is the previous key
}

// Decrypt decrypts encrypt (the <Encrypt> of a message) with the current key and, when
// that fails, the previous one, and checks the receive id. Msg and ReceiveID alias dst
// as with Key.Decrypt. It returns an error wrapping ErrAppID when a key decrypts but the
// receive id is not c.ReceiveID (unless c.ReceiveID is ""), and one wrapping ErrDecrypt
// when no key decrypts. It does not allocate when dst has room.
func (c *Crypter) Decrypt(dst, encrypt []byte) (Decrypted, error) {
	d, err := c.decryptWith(c.Current, dst, encrypt)
	if err == nil || c.Previous == nil {
		return d, err
	}
	d, err2 := c.decryptWith(c.Previous, dst, encrypt)
	d.UsedPrevious = err2 == nil
	if err2 != nil && errors.Is(err, ErrAppID) {
		return d, err // the current key decrypted; its answer is the better one
	}
	return d, err2
}

func (c *Crypter) decryptWith(k *Key, dst, encrypt []byte) (Decrypted, error) {
	msg, rid, err := k.Decrypt(dst, encrypt)
	if err != nil {
		return Decrypted{}, err
	}
	if c.ReceiveID != "" && string(rid) != c.ReceiveID {
		return Decrypted{}, fmt.Errorf("%w: got %q, want %q", ErrAppID, clip(rid), c.ReceiveID)
	}
	return Decrypted{Msg: msg, ReceiveID: rid, Key: k}, nil
}

// Open checks msgSignature over (Token, timestamp, nonce, encrypt) and then decrypts as
// Decrypt does. It returns ErrMsgSignature, without decrypting, on a signature mismatch.
func (c *Crypter) Open(dst, msgSignature, timestamp, nonce, encrypt []byte) (Decrypted, error) {
	if !VerifyMsgSignature(c.Token, timestamp, nonce, encrypt, msgSignature) {
		return Decrypted{}, ErrMsgSignature
	}
	return c.Decrypt(dst, encrypt)
}

// VerifyURL answers WeCom's URL check (GET ?msg_signature&timestamp&nonce&echostr): it
// checks msgSignature over echostr, decrypts echostr, checks the CorpID, and returns the
// plaintext the server must answer with. Errors wrap ErrMsgSignature, ErrDecrypt or
// ErrAppID. VerifyURL allocates the returned plaintext.
func (c *Crypter) VerifyURL(msgSignature, timestamp, nonce, echostr []byte) ([]byte, error) {
	d, err := c.Open(nil, msgSignature, timestamp, nonce, echostr)
	if err != nil {
		return nil, err
	}
	return d.Msg, nil
}

// AppendEncryptedReply appends the encrypted envelope of the reply msg to dst and
// returns the extended buffer:
//
//	<xml><Encrypt>…</Encrypt><MsgSignature>…</MsgSignature><TimeStamp>…</TimeStamp><Nonce>…</Nonce></xml>
//
// key is the key that decrypted the request (Decrypted.Key), receiveID the receive id to
// encrypt for (Decrypted.ReceiveID), timestamp and nonce those of the request or fresh
// ones (digits). The 16 random bytes come from crypto/rand. It does not allocate when dst
// has room (see Key.Encrypt), and as there, receiveID and msg must not lie in dst's spare
// capacity: decrypt the request into one buffer and write the reply into another.
func (c *Crypter) AppendEncryptedReply(dst []byte, key *Key, receiveID, msg, timestamp, nonce []byte) []byte {
	dst = append(dst, "<xml><Encrypt><![CDATA["...)
	start := len(dst)
	dst = key.Encrypt(dst, msg, receiveID, nil)
	enc := dst[start:]
	dst = append(dst, "]]></Encrypt><MsgSignature><![CDATA["...)
	dst = appendMsgSignature(dst, c.Token, timestamp, nonce, enc)
	dst = append(dst, "]]></MsgSignature><TimeStamp>"...)
	if len(timestamp) > 0 && allDigits(timestamp) {
		dst = append(dst, timestamp...)
	} else {
		dst = appendCDATA(dst, timestamp)
	}
	dst = appendElement(dst, "</TimeStamp><Nonce>", nonce, "</Nonce></xml>")
	return dst
}

// String describes the key without revealing it.
func (k *Key) String() string {
	if k == nil {
		return "wechat.Key(nil)"
	}
	return "wechat.Key(AES-256)"
}
