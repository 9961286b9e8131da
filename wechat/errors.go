package wechat

import "errors"

// The sentinel errors below are distinguishable with errors.Is. Errors returned by the
// package wrap one of them with detail; none of them ever contains a key or a token.
var (
	// ErrMsgSignature is returned by Crypter.Open and Crypter.VerifyURL when
	// `msg_signature` is not sha1(sort(token, timestamp, nonce, encrypt)).
	ErrMsgSignature = errors.New("wechat: msg_signature mismatch")

	// ErrDecrypt is returned by Key.Decrypt, Crypter.Decrypt, Crypter.Open and
	// Crypter.VerifyURL when a ciphertext cannot be decrypted: it is not valid base64,
	// not a whole number of AES blocks, decrypts to bad PKCS#7 padding (the usual sign of
	// a wrong key), or carries a length field that does not fit the plaintext.
	ErrDecrypt = errors.New("wechat: cannot decrypt")

	// ErrAppID is returned by Crypter.Decrypt, Crypter.Open and Crypter.VerifyURL when a
	// ciphertext decrypts cleanly but the receive id inside it (the AppID of an Official
	// Account, the CorpID of a WeCom corporation) is not the one the Crypter expects.
	ErrAppID = errors.New("wechat: receive id mismatch")

	// ErrMalformed is returned by Message.Parse and Message.ParseEnvelope when the input is
	// not a well-formed XML document with an <xml> root element, holds a character XML
	// forbids (NUL and other control characters, invalid UTF-8), gives a field twice, or
	// has a number field that is not a number.
	ErrMalformed = errors.New("wechat: malformed XML")

	// ErrFieldTooLong is returned by Message.Parse and Message.ParseEnvelope when an
	// identifier field is longer than its cap: ToUserName or FromUserName over
	// MaxUserNameBytes, MsgId over MaxMsgIDDigits, Event or EventKey over MaxEventBytes. It
	// is distinct from ErrMalformed: the document is XML, but not one WeChat sends.
	ErrFieldTooLong = errors.New("wechat: field too long")

	// ErrKey is returned by NewCrypter when an EncodingAESKey is not 43 characters of
	// base64 decoding to 32 bytes.
	ErrKey = errors.New("wechat: invalid EncodingAESKey")
)
