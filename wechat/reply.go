package wechat

import (
	"strconv"
	"unicode/utf8"
)

// MaxTextBytes is the most content, in bytes of UTF-8, a text reply may carry;
// AppendTextReply cuts longer content to fit.
const MaxTextBytes = 2048

// MaxArticles is the most articles a news reply may carry: the Official Account docs
// ("被动回复用户消息", ArticleCount) allow up to 8 in reply to events. In reply to a user's
// text, image, voice, video, news or location message only MaxArticlesForMessage (1) is
// allowed, and since October 2018 WeChat shows a single article in any case.
const MaxArticles = 8

// MaxArticlesForMessage is the most articles a news reply to a user's own message (as
// opposed to an event) may carry; see MaxArticles.
const MaxArticlesForMessage = 1

// ellipsis ends content that was cut.
const ellipsis = "…"

// Video is the content of a video reply.
type Video struct {
	MediaID     string // a media id from the material (素材) API
	Title       string // optional
	Description string // optional
}

// Music is the content of a music reply.
type Music struct {
	Title        string // optional
	Description  string // optional
	MusicURL     string // optional
	HQMusicURL   string // optional: played on Wi-Fi in preference to MusicURL
	ThumbMediaID string // a media id from the material (素材) API
}

// Article is one entry of a news reply.
type Article struct {
	Title       string
	Description string
	PicURL      string // JPG or PNG; 360×200 for the first article, 200×200 for the others
	URL         string // where a tap leads
}

// AppendCDATA appends s to dst as an XML CDATA section and returns the extended buffer.
// It makes any s safe to embed: "]]>" is split across two sections
// ("]]]]><![CDATA[>"), characters XML 1.0 forbids (control characters other than tab and
// line feed, U+FFFE, U+FFFF) and invalid UTF-8 are dropped, and "\r\n" and a lone "\r"
// become "\n" — what any XML parser would make of them anyway. AppendCDATA does not
// allocate when dst has room; it is safe for concurrent use.
func AppendCDATA(dst, s []byte) []byte {
	return appendCDATA(dst, s)
}

// AppendTruncated appends s to dst, cut to at most max bytes, and returns the extended
// buffer. When s is longer than max it is cut on a rune boundary and ends with "…", the
// ellipsis included in the max bytes (for max < 3 there is no room for it, and s is only
// cut). AppendTruncated does not otherwise change s.
func AppendTruncated(dst, s []byte, max int) []byte {
	n, cut := truncate(s, max)
	dst = append(dst, s[:n]...)
	if cut && max >= len(ellipsis) {
		dst = append(dst, ellipsis...)
	}
	return dst
}

// AppendTextReply appends a text reply to dst and returns the extended buffer. to is the
// user (the FromUserName of the message being answered), from the account (its
// ToUserName). Content longer than MaxTextBytes is cut as by AppendTruncated, then every
// value is written as by AppendCDATA, so the content WeChat shows is at most MaxTextBytes
// of valid XML text. AppendTextReply does not allocate when dst has room; it is safe for
// concurrent use.
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

// AppendImageReply appends an image reply showing the image mediaID to dst and returns
// the extended buffer.
func AppendImageReply(dst, to, from []byte, createTime int64, mediaID []byte) []byte {
	dst = appendHeader(dst, to, from, createTime, "image")
	dst = appendElement(dst, "<Image><MediaId>", mediaID, "</MediaId></Image>")
	return append(dst, "</xml>"...)
}

// AppendVoiceReply appends a voice reply playing mediaID to dst and returns the extended
// buffer.
func AppendVoiceReply(dst, to, from []byte, createTime int64, mediaID []byte) []byte {
	dst = appendHeader(dst, to, from, createTime, "voice")
	dst = appendElement(dst, "<Voice><MediaId>", mediaID, "</MediaId></Voice>")
	return append(dst, "</xml>"...)
}

// AppendVideoReply appends a video reply to dst and returns the extended buffer.
func AppendVideoReply(dst, to, from []byte, createTime int64, v Video) []byte {
	dst = appendHeader(dst, to, from, createTime, "video")
	dst = appendElement(dst, "<Video><MediaId>", v.MediaID, "</MediaId>")
	dst = appendElement(dst, "<Title>", v.Title, "</Title>")
	dst = appendElement(dst, "<Description>", v.Description, "</Description></Video>")
	return append(dst, "</xml>"...)
}

// AppendMusicReply appends a music reply to dst and returns the extended buffer.
func AppendMusicReply(dst, to, from []byte, createTime int64, m Music) []byte {
	dst = appendHeader(dst, to, from, createTime, "music")
	dst = appendElement(dst, "<Music><Title>", m.Title, "</Title>")
	dst = appendElement(dst, "<Description>", m.Description, "</Description>")
	dst = appendElement(dst, "<MusicUrl>", m.MusicURL, "</MusicUrl>")
	dst = appendElement(dst, "<HQMusicUrl>", m.HQMusicURL, "</HQMusicUrl>")
	dst = appendElement(dst, "<ThumbMediaId>", m.ThumbMediaID, "</ThumbMediaId></Music>")
	return append(dst, "</xml>"...)
}

// AppendNewsReply appends a news (图文) reply with the articles to dst and returns the
// extended buffer. It returns dst unchanged and an error wrapping ErrArticleCount unless
// there are 1 to MaxArticles articles; keeping to MaxArticlesForMessage in reply to a
// user's message is the caller's part.
func AppendNewsReply(dst, to, from []byte, createTime int64, articles []Article) ([]byte, error) {
	if len(articles) == 0 || len(articles) > MaxArticles {
		return dst, ErrArticleCount
	}
	dst = appendHeader(dst, to, from, createTime, "news")
	dst = append(dst, "<ArticleCount>"...)
	dst = strconv.AppendInt(dst, int64(len(articles)), 10)
	dst = append(dst, "</ArticleCount><Articles>"...)
	for _, a := range articles {
		dst = appendElement(dst, "<item><Title>", a.Title, "</Title>")
		dst = appendElement(dst, "<Description>", a.Description, "</Description>")
		dst = appendElement(dst, "<PicUrl>", a.PicURL, "</PicUrl>")
		dst = appendElement(dst, "<Url>", a.URL, "</Url></item>")
	}
	return append(dst, "</Articles></xml>"...), nil
}

// AppendTransferCustomerServiceReply appends a reply that hands the conversation to
// customer service (多客服) to dst and returns the extended buffer. With a kfAccount
// ("name@account") it goes to that agent (<TransInfo><KfAccount>), without one to any.
func AppendTransferCustomerServiceReply(dst, to, from []byte, createTime int64, kfAccount []byte) []byte {
	dst = appendHeader(dst, to, from, createTime, "transfer_customer_service")
	if len(kfAccount) > 0 {
		dst = appendElement(dst, "<TransInfo><KfAccount>", kfAccount, "</KfAccount></TransInfo>")
	}
	return append(dst, "</xml>"...)
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

// text is what a value to render may be: bytes from a request or a string from a
// template or configuration, written without converting one to the other.
type text interface{ ~string | ~[]byte }

func appendElement[T text](dst []byte, open string, s T, end string) []byte {
	dst = append(dst, open...)
	dst = appendCDATA(dst, s)
	return append(dst, end...)
}

func appendCDATA[T text](dst []byte, s T) []byte {
	dst = append(dst, "<![CDATA["...)
	dst = appendCDATAContent(dst, s)
	return append(dst, "]]>"...)
}

// appendCDATAContent writes the inside of a CDATA section; see AppendCDATA. Runs of
// acceptable bytes are copied at once.
//
// "]]>" is looked for in the output, not the input: dropping a character can bring "]]"
// and ">" together ("]]\x00>"). So a '>' is split off whenever the two bytes written
// before it are "]]", whether they were written from this run or an earlier one.
func appendCDATAContent[T text](dst []byte, s T) []byte {
	begin, start := len(dst), 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '>' || c == '\t' || c == '\n' {
				i++
				continue
			}
			if c == '>' {
				if i-start < 2 { // the bytes before it are (partly) in dst already
					dst = append(dst, s[start:i]...)
					start = i
				}
				if closesCDATA(dst[begin:], s[start:i]) {
					dst = append(dst, s[start:i]...)
					dst = append(dst, "]]><![CDATA["...)
					start = i // the '>' opens the next section
				}
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			if c == '\r' {
				dst = append(dst, '\n')
				if i+1 < len(s) && s[i+1] == '\n' {
					i++
				}
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s, i)
		if (r == utf8.RuneError && size == 1) || !isXMLChar(r) {
			dst = append(dst, s[start:i]...)
			start = i + size
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// closesCDATA reports whether written followed by run ends in "]]", so that a '>' next
// would end the section. run is empty or at least two bytes long.
func closesCDATA[T text](written []byte, run T) bool {
	if len(run) >= 2 {
		return run[len(run)-2] == ']' && run[len(run)-1] == ']'
	}
	return len(written) >= 2 && written[len(written)-2] == ']' && written[len(written)-1] == ']'
}

func decodeRune[T text](s T, i int) (rune, int) {
	var buf [utf8.UTFMax]byte
	n := copy(buf[:], s[i:])
	return utf8.DecodeRune(buf[:n])
}

// truncate returns how many bytes of s to keep so that they, plus an ellipsis when s is
// cut and max leaves room for one, fit in max bytes, cutting on a rune boundary.
func truncate(s []byte, max int) (n int, cut bool) {
	if len(s) <= max {
		return len(s), false
	}
	n = max
	if max >= len(ellipsis) {
		n = max - len(ellipsis)
	}
	if n < 0 {
		return 0, true
	}
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
