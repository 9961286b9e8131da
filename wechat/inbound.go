package wechat

import "strconv"

// The functions below write what WeChat and WeCom send to the developer server, for test
// clients (`wxlookup ask`, benchmarks, end-to-end tests). Every value is written as a CDATA
// section, as AppendTextReply writes them. None allocates when dst has room; all are safe
// for concurrent use.

// AppendTextMessage appends the text message a user sends to dst and returns the
// extended buffer: to is the account (gh_… or CorpID), from the user's OpenID.
func AppendTextMessage(dst, to, from []byte, createTime int64, content []byte, msgID int64) []byte {
	dst = appendHeader(dst, to, from, createTime, "text")
	dst = appendElement(dst, "<Content>", content, "</Content>")
	dst = append(dst, "<MsgId>"...)
	dst = strconv.AppendInt(dst, msgID, 10)
	return append(dst, "</MsgId></xml>"...)
}

// AppendEventMessage appends an event push (subscribe, CLICK, …) to dst and returns the
// extended buffer. The EventKey element is left out when eventKey is nil.
func AppendEventMessage(dst, to, from []byte, createTime int64, event, eventKey []byte) []byte {
	dst = appendHeader(dst, to, from, createTime, "event")
	dst = appendElement(dst, "<Event>", event, "</Event>")
	if eventKey != nil {
		dst = appendElement(dst, "<EventKey>", eventKey, "</EventKey>")
	}
	return append(dst, "</xml>"...)
}

// AppendRequestEnvelope appends the body WeChat posts in safe mode to dst and returns the
// extended buffer: the account and the base64 ciphertext of the message (see
// Key.Encrypt).
func AppendRequestEnvelope(dst, toUserName, encrypt []byte) []byte {
	dst = appendElement(dst, "<xml><ToUserName>", toUserName, "</ToUserName>")
	dst = appendElement(dst, "<Encrypt>", encrypt, "</Encrypt>")
	return append(dst, "</xml>"...)
}

// AppendWeComRequestEnvelope appends the body WeCom posts to dst and returns the extended
// buffer: the CorpID, the application's AgentID and the base64 ciphertext.
func AppendWeComRequestEnvelope(dst, toUserName, agentID, encrypt []byte) []byte {
	dst = appendElement(dst, "<xml><ToUserName>", toUserName, "</ToUserName>")
	dst = appendElement(dst, "<AgentID>", agentID, "</AgentID>")
	dst = appendElement(dst, "<Encrypt>", encrypt, "</Encrypt>")
	return append(dst, "</xml>"...)
}
