// Package wechat is the protocol codec for WeChat Official Account (公众号) and WeCom
// (企业微信) callbacks: URL and message signatures, the inbound message XML, passive-reply
// XML, and the AES message encryption of "safe mode".
//
// The package does no I/O. Everything is a pure function or a method on a value that is
// not changed after construction, except Message, which a caller reuses from one request
// to the next. The plaintext hot path — Message.Parse of a text message followed by
// AppendTextReply into a reused buffer — does not allocate.
//
// Byte slices returned by the package alias either the caller's input or the caller's
// buffer; each function says which, and how long the result stays valid.
package wechat
