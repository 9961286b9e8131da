package wechat

import (
	"strconv"
	"unicode/utf8"
)

// MaxTextBytes is the most content, in bytes of UTF-8, a text reply may carry;
// AppendTextReply cuts longer content to fit.
const MaxTextBytes = 2048

// ellipsis ends content that was cut.
const ellipsis = "…"

// AppendTextReply appends a text reply to dst and returns the extended buffer. to is the
// user (the FromUserName of the message being answered), from the account (its
// ToUserName). Content longer than MaxTextBytes is cut on a rune boundary to end with "…"
// within MaxTextBytes; every value is then written as a CDATA section that splits "]]>"
// and drops the characters XML forbids, so the content WeChat shows is at most
// MaxTextBytes of valid XML text. AppendTextReply does not allocate when dst has room; it
// is safe for concurrent use.
func AppendTextReply(dst, to, from []byte, createTime int64, content []byte) []byte {
	dst = appendHeader(dst, to, from, createTime, "text")
	dst = append(dst, "<Content><![CDATA["...)
	n, cut := truncate(content, MaxTextBytes)
	dst = appendCDATAContent(dst, content[:n])
	if cut {
		dst = append(dst, ellipsis...)
	}
	return append(dst, "]]></Content></xml>"...)
}

// appendHeader appends the elements every reply starts with.
func appendHeader(dst, to, from []byte, createTime int64, msgType string) []byte {
	dst = appendElement(dst, "<xml><ToUserName>", to, "</ToUserName>")
	dst = appendElement(dst, "<FromUserName>", from, "</FromUserName>")
	dst = append(dst, "<CreateTime>"...)
	dst = strconv.AppendInt(dst, createTime, 10)
	dst = append(dst, "</CreateTime><MsgType><![CDATA["...)
	dst = append(dst, msgType...)
	return append(dst, "]]></MsgType>"...)
}

func appendElement(dst []byte, open string, s []byte, end string) []byte {
	dst = append(dst, open...)
	dst = appendCDATA(dst, s)
	return append(dst, end...)
}

// appendCDATA appends s to dst as an XML CDATA section and returns the extended buffer.
// It makes any s safe to embed: "]]>" is split across two sections
// ("]]]]><![CDATA[>"), characters XML 1.0 forbids (control characters other than tab and
// line feed, U+FFFE, U+FFFF) and invalid UTF-8 are dropped, and "\r\n" and a lone "\r"
// become "\n" — what any XML parser would make of them anyway. It does not allocate when
// dst has room.
func appendCDATA(dst, s []byte) []byte {
	dst = append(dst, "<![CDATA["...)
	dst = appendCDATAContent(dst, s)
	return append(dst, "]]>"...)
}

// appendCDATAContent writes the inside of a CDATA section; see appendCDATA. Runs of
// bytes that need no change are copied at once.
//
// "]]>" is looked for in the output, not the input: dropping a character can bring "]]"
// and ">" together ("]]\x00>"). So a '>' is split off whenever the two bytes written
// before it are "]]".
func appendCDATAContent(dst, s []byte) []byte {
	begin := len(dst)
	for len(s) > 0 {
		i := 0 // s[:i] is copied as it is
		for i < len(s) {
			c := s[i]
			if c >= 0x20 && c < utf8.RuneSelf && c != '>' || c == '\t' || c == '\n' {
				i++
				continue
			}
			r, size := utf8.DecodeRune(s[i:])
			if c < utf8.RuneSelf || size == 1 || !isXMLChar(r) {
				break
			}
			i += size
		}
		dst = append(dst, s[:i]...)
		if i == len(s) {
			break
		}
		// s[i] is '>', '\r', another control character (dropped), or starts a character
		// XML forbids or bytes that are not UTF-8 (dropped); n bytes of it are dealt with.
		n := 1
		switch c := s[i]; {
		case c == '>':
			if w := dst[begin:]; len(w) >= 2 && w[len(w)-2] == ']' && w[len(w)-1] == ']' {
				dst = append(dst, "]]><![CDATA["...)
			}
			dst = append(dst, '>')
		case c == '\r':
			dst = append(dst, '\n')
			if i+1 < len(s) && s[i+1] == '\n' {
				n = 2
			}
		case c >= utf8.RuneSelf:
			_, n = utf8.DecodeRune(s[i:])
		}
		s = s[i+n:]
	}
	return dst
}

// truncate returns how many bytes of s to keep so that they, and an ellipsis when s is
// cut, fit in max bytes (at least len(ellipsis)), cutting on a rune boundary.
func truncate(s []byte, max int) (n int, cut bool) {
	if len(s) <= max {
		return len(s), false
	}
	n = max - len(ellipsis)
	// s[n] is the first byte dropped. If it continues a valid rune that starts before
	// it, cut before that rune instead. Such a rune starts at most three bytes back, at
	// the nearest byte that is not a continuation byte. (Invalid bytes count as runes of
	// one byte, as utf8.DecodeRune has it; the CDATA writer drops them.)
	for p := n - 1; p >= 0 && p >= n-(utf8.UTFMax-1); p-- {
		if utf8.RuneStart(s[p]) {
			if r, size := utf8.DecodeRune(s[p:]); !(r == utf8.RuneError && size == 1) && p+size > n {
				n = p
			}
			break
		}
	}
	return n, true
}
