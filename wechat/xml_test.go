package wechat

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMalformed(t *testing.T) {
	tests := []struct {
		name string
		xml  string
	}{
		{name: "empty", xml: ""},
		{name: "white space only", xml: " \n"},
		{name: "not XML", xml: "success"},
		{name: "JSON", xml: `{"ToUserName":"x"}`},
		{name: "truncated in text", xml: `<xml><Content>abc`},
		{name: "truncated in tag", xml: `<xml><Content`},
		{name: "truncated after <", xml: `<xml><`},
		{name: "root not closed", xml: `<xml><Content>abc</Content>`},
		{name: "unbalanced", xml: `<xml><a></b></xml>`},
		{name: "end tag prefix of start", xml: `<xml><Content>x</Conten></xml>`},
		{name: "other root", xml: `<message><Content>x</Content></message>`},
		{name: "root name case", xml: `<XML></XML>`},
		{name: "text before root", xml: `x<xml></xml>`},
		{name: "text after root", xml: `<xml></xml>x`},
		{name: "second root", xml: `<xml></xml><xml></xml>`},
		{name: "extra end tag", xml: `<xml></xml></xml>`},
		{name: "bare ampersand", xml: `<xml><Content>a & b</Content></xml>`},
		{name: "unknown entity", xml: `<xml><Content>&nbsp;</Content></xml>`},
		{name: "entity without semicolon", xml: `<xml><Content>&lt</Content></xml>`},
		{name: "NUL character reference", xml: `<xml><Content>&#0;</Content></xml>`},
		{name: "surrogate character reference", xml: `<xml><Content>&#xD800;</Content></xml>`},
		{name: "out of range character reference", xml: `<xml><Content>&#x110000;</Content></xml>`},
		{name: "upper-case X in a character reference", xml: `<xml><Content>&#X4e2d;</Content></xml>`},
		{name: "empty character reference", xml: `<xml><Content>&#x;</Content></xml>`},
		{name: "signed character reference", xml: `<xml><Content>&#+65;</Content></xml>`},
		{name: "negative character reference", xml: `<xml><Content>&#-65;</Content></xml>`},
		{name: "signed hex character reference", xml: `<xml><Content>&#x+41;</Content></xml>`},
		{name: "character reference with a prefix", xml: `<xml><Content>&#x0x41;</Content></xml>`},
		{name: "character reference with an underscore", xml: `<xml><Content>&#6_5;</Content></xml>`},
		{name: "character reference that wraps 32 bits", xml: `<xml><Content>&#x100000041;</Content></xml>`},
		{name: "character reference that wraps to negative", xml: `<xml><Content>&#x80000041;</Content></xml>`},
		{name: "character reference too long for 64 bits", xml: `<xml><Content>&#99999999999999999999999;</Content></xml>`},
		{name: "bad entity in a skipped element", xml: `<xml><Foo>&bogus;</Foo></xml>`},
		{name: "]]> in text", xml: `<xml><Content>a]]>b</Content></xml>`},
		{name: "unterminated CDATA", xml: `<xml><Content><![CDATA[abc</Content></xml>`},
		{name: "unterminated comment", xml: `<xml><!-- abc</xml>`},
		{name: "unterminated PI", xml: `<?xml version="1.0"<xml></xml>`},
		{name: "DOCTYPE", xml: `<!DOCTYPE xml [<!ENTITY a "b">]><xml></xml>`},
		{name: "unquoted attribute", xml: `<xml a=b></xml>`},
		{name: "attribute without value", xml: `<xml a></xml>`},
		{name: "unterminated attribute", xml: `<xml a="b></xml>`},
		{name: "space after <", xml: `< xml></xml>`},
		{name: "name starting with a digit", xml: `<xml><1a/></xml>`},
		{name: "slash without >", xml: `<xml/ ></xml>`},
		{name: "CreateTime not a number", xml: `<xml><CreateTime>12a</CreateTime></xml>`},
		{name: "CreateTime overflows", xml: `<xml><CreateTime>9223372036854775808</CreateTime></xml>`},
		{name: "CreateTime sign only", xml: `<xml><CreateTime>-</CreateTime></xml>`},
		{name: "nested too deep", xml: "<xml>" + strings.Repeat("<a>", maxDepth) + strings.Repeat("</a>", maxDepth) + "</xml>"},
		// Characters XML forbids, anywhere in the document (SPEC section 9: 400 bad_xml).
		{name: "NUL in a field", xml: "<xml><FromUserName>o\x00x</FromUserName></xml>"},
		{name: "NUL in CDATA", xml: "<xml><Content><![CDATA[a\x00]]></Content></xml>"},
		{name: "NUL in a skipped element", xml: "<xml><Foo>\x00</Foo></xml>"},
		{name: "NUL in an attribute", xml: "<xml a=\"\x00\"></xml>"},
		{name: "NUL in a comment", xml: "<xml><!-- \x00 --></xml>"},
		{name: "control character", xml: "<xml><Content>a\x01b</Content></xml>"},
		{name: "invalid UTF-8 in a field", xml: "<xml><FromUserName><![CDATA[o\xff]]></FromUserName></xml>"},
		{name: "truncated UTF-8 sequence", xml: "<xml><Content>\xe4\xb8</Content></xml>"},
		{name: "UTF-8 of a surrogate", xml: "<xml><Content>\xed\xa0\x80</Content></xml>"},
		{name: "overlong UTF-8", xml: "<xml><Content>\xc0\xaf</Content></xml>"},
		{name: "U+FFFE", xml: "<xml><Content>\xef\xbf\xbe</Content></xml>"},
		{name: "invalid UTF-8 in an element name", xml: "<xml><Con\xfftent>a</Con\xfftent></xml>"},
		// A field given twice is not a WeChat message: which one would count?
		{name: "FromUserName twice", xml: `<xml><FromUserName>a</FromUserName><FromUserName>b</FromUserName></xml>`},
		{name: "Content twice", xml: `<xml><Content>first</Content><Content>second</Content></xml>`},
		{name: "MsgId and MsgID", xml: `<xml><MsgId>1</MsgId><MsgID>2</MsgID></xml>`},
		{name: "self-closing element repeated", xml: `<xml><EventKey/><EventKey>k</EventKey></xml>`},
		{name: "MsgId not digits", xml: `<xml><MsgId>12a</MsgId></xml>`},
		{name: "MsgId with a sign", xml: `<xml><MsgId>-12</MsgId></xml>`},
		{name: "MsgId with white space", xml: `<xml><MsgId> 12</MsgId></xml>`},
	}
	var m Message
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.Parse([]byte(tt.xml))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q): got error %v, want ErrMalformed", tt.xml, err)
			}
			if !strings.HasPrefix(err.Error(), "wechat: ") {
				t.Errorf("error text: got %q, want the prefix %q", err.Error(), "wechat: ")
			}
		})
	}
}

func TestParseDepthLimit(t *testing.T) {
	var m Message
	ok := "<xml>" + strings.Repeat("<a>", maxDepth-1) + strings.Repeat("</a>", maxDepth-1) + "</xml>"
	if err := m.Parse([]byte(ok)); err != nil {
		t.Errorf("Parse at the depth limit: got %v, want nil", err)
	}
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
		ok   bool
	}{
		{name: "zero", in: "0", want: 0, ok: true},
		{name: "max", in: "9223372036854775807", want: 1<<63 - 1, ok: true},
		{name: "min", in: "-9223372036854775808", want: -1 << 63, ok: true},
		{name: "max+1", in: "9223372036854775808", ok: false},
		{name: "min-1", in: "-9223372036854775809", ok: false},
		{name: "huge", in: "99999999999999999999999", ok: false},
		{name: "empty", in: "", want: 0, ok: true},
		{name: "space inside", in: "1 2", ok: false},
		{name: "hex", in: "0x10", ok: false},
		{name: "underscore", in: "1_000", ok: false},
		{name: "plus", in: "+7", want: 7, ok: true},
		{name: "sign only", in: "-", ok: false},
		{name: "surrounding white space", in: "\n 12\t", want: 12, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseInt([]byte(tt.in))
			if ok != tt.ok || ok && got != tt.want {
				t.Errorf("parseInt(%q): got %d, %v, want %d, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}
