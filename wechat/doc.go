// Package wechat is the protocol codec of a WeChat Official Account (公众号) or WeCom
// (企业微信) server that answers in text: URL and message signatures, the AES encryption
// of safe mode, the inbound XML as such a server reads it (text messages, events and the
// encrypted envelope; any other type as a generic message, within the caps of SPEC
// section 9), the text reply and its encrypted envelope, and, for test clients, the
// messages WeChat sends. It writes no other kind of reply (image, news, …).
//
// The package does no I/O. Everything is a pure function or a method on a value that is
// not changed after construction, except Message, which a caller reuses from one request
// to the next. The plaintext hot path — Message.Parse of a text message followed by
// AppendTextReply into a reused buffer — does not allocate.
//
// Byte slices returned by the package alias either the caller's input or the caller's
// buffer; each function says which, and how long the result stays valid.
package wechat
