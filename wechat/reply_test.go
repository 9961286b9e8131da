package wechat

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCDATA(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "empty", in: "", want: "<![CDATA[]]>"},
		{name: "plain", in: "[18-546]的工作台位为[车体新厂房3号]", want: "<![CDATA[[18-546]的工作台位为[车体新厂房3号]]]>"},
		{name: "markup stays literal", in: "<a href='x'>&amp;</a>", want: "<![CDATA[<a href='x'>&amp;</a>]]>"},
		{name: "]]> split", in: "a]]>b", want: "<![CDATA[a]]]]><![CDATA[>b]]>"},
		{name: "]]> at both ends", in: "]]>x]]>", want: "<![CDATA[]]]]><![CDATA[>x]]]]><![CDATA[>]]>"},
		{name: "]]]>", in: "]]]>", want: "<![CDATA[]]]]]><![CDATA[>]]>"},
		{name: "]]> made by dropping a character", in: "]]\x00>", want: "<![CDATA[]]]]><![CDATA[>]]>"},
		{name: "]]> made by dropping invalid UTF-8", in: "a]\xff]\xfe>b", want: "<![CDATA[a]]]]><![CDATA[>b]]>"},
		{name: "]]> made by dropping U+FFFF", in: "]]\uFFFF>", want: "<![CDATA[]]]]><![CDATA[>]]>"},
		{name: "]]>> split once", in: "]]>>", want: "<![CDATA[]]]]><![CDATA[>>]]>"},
		{name: "lone brackets kept", in: "]] ]>", want: "<![CDATA[]] ]>]]>"},
		{name: "tab and newline kept", in: "a\tb\nc", want: "<![CDATA[a\tb\nc]]>"},
		{name: "CRLF and CR become LF", in: "a\r\nb\rc\r", want: "<![CDATA[a\nb\nc\n]]>"},
		{name: "control characters dropped", in: "a\x00b\x01\x08\x0b\x0c\x1f\x7fc", want: "<![CDATA[ab\x7fc]]>"},
		{name: "U+FFFE and U+FFFF dropped", in: "a\uFFFEb\uFFFFc", want: "<![CDATA[abc]]>"},
		{name: "U+FFFD kept", in: "a\uFFFDb", want: "<![CDATA[a\uFFFDb]]>"},
		{name: "invalid UTF-8 dropped", in: "a\xffb\xe4\xb8c\xed\xa0\x80d", want: "<![CDATA[abcd]]>"},
		{name: "astral plane kept", in: "😀", want: "<![CDATA[😀]]>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendCDATA([]byte("x"), []byte(tt.in)))
			if got != "x"+tt.want {
				t.Errorf("appendCDATA(%q): got %q, want %q", tt.in, got, "x"+tt.want)
			}
			// Whatever went in, encoding/xml reads the section back as the cleaned text.
			var v struct {
				Content string
			}
			doc := "<xml><Content>" + tt.want + "</Content></xml>"
			if err := xml.Unmarshal([]byte(doc), &v); err != nil {
				t.Fatalf("encoding/xml rejects %q: %v", doc, err)
			}
			if want := wantCDATAText([]byte(tt.in)); v.Content != want {
				t.Errorf("encoding/xml reads back: got %q, want %q", v.Content, want)
			}
		})
	}
}

// TestTruncate: truncate keeps whole runes and leaves room for the ellipsis.
func TestTruncate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{name: "fits", in: "abc", max: 3, want: "abc"},
		{name: "empty", in: "", max: 0, want: ""},
		{name: "cut ascii", in: "abcdefghij", max: 8, want: "abcde…"},
		{name: "cut before a rune that does not fit", in: "中文字符", max: 10, want: "中文…"},
		{name: "cut inside a rune backs off", in: "中文字符", max: 8, want: "中…"},
		{name: "four-byte rune", in: "a😀b", max: 5, want: "a…"},
		{name: "exactly the ellipsis", in: "abcd", max: 3, want: "…"},
		{name: "invalid bytes are runes of one byte", in: "ab\x80\x80\x80\x80\x80", max: 6, want: "ab\x80…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, cut := truncate([]byte(tt.in), tt.max)
			got := tt.in[:n]
			if cut {
				got += ellipsis
			}
			if got != tt.want {
				t.Errorf("truncate(%q, %d): got %q, want %q", tt.in, tt.max, got, tt.want)
			}
			if len(got) > tt.max {
				t.Errorf("truncate(%q, %d): %d bytes, want at most %d", tt.in, tt.max, len(got), tt.max)
			}
		})
	}
}

func TestAppendTextReply(t *testing.T) {
	got := string(AppendTextReply(nil, []byte("oUser"), []byte("gh_account"), 1714036504, []byte("[18-546]的工作台位为[车体新厂房3号]")))
	want := "<xml><ToUserName><![CDATA[oUser]]></ToUserName><FromUserName><![CDATA[gh_account]]></FromUserName>" +
		"<CreateTime>1714036504</CreateTime><MsgType><![CDATA[text]]></MsgType>" +
		"<Content><![CDATA[[18-546]的工作台位为[车体新厂房3号]]]></Content></xml>"
	if got != want {
		t.Errorf("AppendTextReply: got %q, want %q", got, want)
	}
}

func TestAppendTextReplyLimit(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{name: "exactly the limit", content: strings.Repeat("a", MaxTextBytes), want: strings.Repeat("a", MaxTextBytes)},
		{name: "one byte over", content: strings.Repeat("a", MaxTextBytes+1), want: strings.Repeat("a", MaxTextBytes-3) + "…"},
		{name: "CJK cut on a rune", content: strings.Repeat("车", 1000), want: strings.Repeat("车", 681) + "…"},
		{name: "dropped characters do not count", content: strings.Repeat("a", MaxTextBytes) + "\x00", want: strings.Repeat("a", MaxTextBytes-3) + "…"},
		{name: "]]> inside the cut content", content: strings.Repeat("]]>", 1000), want: strings.Repeat("]]>", 681) + "]]…"},
	}
	var m Message
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := AppendTextReply(nil, []byte("u"), []byte("a"), 1, []byte(tt.content))
			if err := m.Parse(out); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := string(m.Content); got != tt.want {
				t.Errorf("Content: got %q (%d bytes), want %q (%d bytes)", clip(m.Content), len(got), clip([]byte(tt.want)), len(tt.want))
			}
			if len(m.Content) > MaxTextBytes || !utf8.Valid(m.Content) {
				t.Errorf("Content: %d bytes, valid UTF-8 %v; want at most %d, valid", len(m.Content), utf8.Valid(m.Content), MaxTextBytes)
			}
		})
	}
}

// wantCDATAText is the reference for what a CDATA value reads back as: what appendCDATA
// documents, written independently, rune by rune.
func wantCDATAText(s []byte) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
		case r == '\r':
			b.WriteByte('\n')
			if i+1 < len(s) && s[i+1] == '\n' {
				size++
			}
		case r == '\t' || r == '\n' || r >= 0x20 && r != 0xFFFE && r != 0xFFFF:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// wantTruncated is the reference for truncate: the longest run of whole runes
// (invalid bytes counting as one-byte runes) that fits max with the ellipsis.
func wantTruncated(s []byte, max int) []byte {
	if len(s) <= max {
		return s
	}
	n := 0
	for n < len(s) {
		_, size := utf8.DecodeRune(s[n:])
		if n+size > max-len(ellipsis) {
			break
		}
		n += size
	}
	return append(s[:n:n], ellipsis...)
}

// FuzzReplyRoundTrip renders a text reply and parses it back: the content must come back
// as the documented truncation and sanitising of what went in, the names and time
// exactly (after sanitising), and encoding/xml must read the same.
func FuzzReplyRoundTrip(f *testing.F) {
	f.Add([]byte("oUser"), []byte("gh_account"), int64(1714036504), []byte("[18-546]的工作台位为[车体新厂房3号]"))
	f.Add([]byte(""), []byte(""), int64(0), []byte(""))
	f.Add([]byte("a]]>b"), []byte("\x00\r\n"), int64(-1), []byte("]]]>\r\n\r\xff\uFFFE&lt;<![CDATA[x]]>"))
	f.Add([]byte("u"), []byte("a"), int64(1), bytes.Repeat([]byte("车"), 700))
	f.Add([]byte("u"), []byte("a"), int64(1), append(bytes.Repeat([]byte("a"), MaxTextBytes-4), "😀😀"...))
	f.Add([]byte("u"), []byte("a"), int64(1), append(bytes.Repeat([]byte("a"), MaxTextBytes-3), "\x80\x80\x80\x80"...))
	f.Add(bytes.Repeat([]byte("o"), MaxUserNameBytes+1), []byte("a"), int64(1), []byte("x"))
	f.Fuzz(func(t *testing.T, to, from []byte, createTime int64, content []byte) {
		out := AppendTextReply(nil, to, from, createTime, content)
		var m Message
		err := m.Parse(out)
		if len(wantCDATAText(to)) > MaxUserNameBytes || len(wantCDATAText(from)) > MaxUserNameBytes {
			// Names over the cap render, but do not parse back.
			if !errors.Is(err, ErrFieldTooLong) {
				t.Fatalf("Parse of a reply with a name over the cap: got %v, want ErrFieldTooLong", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Parse(%q): %v", out, err)
		}
		wantContent := wantCDATAText(wantTruncated(content, MaxTextBytes))
		if got := string(m.Content); got != wantContent {
			t.Errorf("Content: got %q, want %q", got, wantContent)
		}
		if len(m.Content) > MaxTextBytes {
			t.Errorf("Content: %d bytes, want at most %d", len(m.Content), MaxTextBytes)
		}
		if got, want := string(m.ToUserName), wantCDATAText(to); got != want {
			t.Errorf("ToUserName: got %q, want %q", got, want)
		}
		if got, want := string(m.FromUserName), wantCDATAText(from); got != want {
			t.Errorf("FromUserName: got %q, want %q", got, want)
		}
		if m.CreateTime != createTime {
			t.Errorf("CreateTime: got %d, want %d", m.CreateTime, createTime)
		}
		if !m.IsType("text") {
			t.Errorf("MsgType: got %q, want %q", m.MsgType, "text")
		}
		var o oracleMessage
		if err := xml.Unmarshal(out, &o); err != nil {
			t.Fatalf("encoding/xml rejects %q: %v", out, err)
		}
		agreeWithOracle(t, &m, &o)
	})
}

func BenchmarkRenderText(b *testing.B) {
	to, from := []byte("oFLjC5kdmb6CwVtIWLr5xa-DKQhM"), []byte("gh_6b9aa8a6f1e2")
	content := []byte("[18-546]的工作台位为[车体新厂房3号]")
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendTextReply(buf[:0], to, from, 1714036504, content)
	}
}

// answer is the hot path of the webhook in plaintext mode: parse the message, render
// the reply into a reused buffer.
func answer(tb testing.TB, m *Message, in, buf []byte) []byte {
	if err := m.Parse(in); err != nil {
		tb.Fatal(err)
	}
	if !m.IsType("text") {
		tb.Fatalf("MsgType: got %q, want %q", m.MsgType, "text")
	}
	return AppendTextReply(buf[:0], m.FromUserName, m.ToUserName, m.CreateTime, []byte("[18-546]的工作台位为[车体新厂房3号]"))
}

func BenchmarkParseRender(b *testing.B) {
	var m Message
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(textMessage)))
	for b.Loop() {
		buf = answer(b, &m, textMessage, buf)
	}
}

// TestParseRenderAllocs pins the hot-path promise of the package doc: parsing a text
// message and rendering its reply into a reused buffer allocates nothing.
func TestParseRenderAllocs(t *testing.T) {
	var m Message
	buf := make([]byte, 0, 4096)
	buf = answer(t, &m, textMessage, buf)
	want := "<xml><ToUserName><![CDATA[oFLjC5kdmb6CwVtIWLr5xa-DKQhM]]></ToUserName>"
	if !bytes.HasPrefix(buf, []byte(want)) {
		t.Fatalf("reply: got %q, want it to start %q", buf, want)
	}
	allocs := testing.AllocsPerRun(1000, func() { buf = answer(t, &m, textMessage, buf) })
	if allocs != 0 {
		t.Errorf("allocs per parse+render of a text message: got %v, want 0", allocs)
	}
}
