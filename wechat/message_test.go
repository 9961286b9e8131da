package wechat

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// fieldsOf flattens the exported fields of m that are set into names and values, so a
// table test can state exactly what a document yields: a []byte field that is nil is
// absent, one that is empty is present as "".
func fieldsOf(tb testing.TB, m *Message) map[string]string {
	tb.Helper()
	got := map[string]string{}
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		switch x := f.Interface().(type) {
		case []byte:
			if x != nil {
				got[sf.Name] = string(x)
			}
		case int64:
			if x != 0 {
				got[sf.Name] = fmt.Sprint(x)
			}
		default:
			tb.Fatalf("fieldsOf: field %s has unhandled type %T", sf.Name, x)
		}
	}
	return got
}

func checkFields(tb testing.TB, got, want map[string]string) {
	tb.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			tb.Errorf("%s: absent, want %q", k, want[k])
		} else if g != want[k] {
			tb.Errorf("%s: got %q, want %q", k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			tb.Errorf("%s: got %q, want it absent", k, got[k])
		}
	}
}

// head is the common start of the documents below, as WeChat sends it.
const head = `<xml><ToUserName><![CDATA[gh_6b9aa8a6f1e2]]></ToUserName>` +
	`<FromUserName><![CDATA[oFLjC5kdmb6CwVtIWLr5xa-DKQhM]]></FromUserName>` +
	`<CreateTime>1714036504</CreateTime>`

var headFields = map[string]string{
	"ToUserName":   "gh_6b9aa8a6f1e2",
	"FromUserName": "oFLjC5kdmb6CwVtIWLr5xa-DKQhM",
	"CreateTime":   "1714036504",
}

func with(extra map[string]string) map[string]string {
	m := maps.Clone(headFields)
	maps.Copy(m, extra)
	return m
}

// parseTests are the message types and events of the Official Account docs ("接收普通消息",
// "接收事件推送", "自定义菜单事件推送"), WeCom and the encrypted envelopes, in the form the
// docs show them. Message models text messages, events and envelopes; every other type
// parses as a generic message: its type, sender and id, the rest skipped.
var parseTests = []struct {
	name  string
	xml   string
	want  map[string]string
	typ   string // IsType must be true for it
	event string // IsEvent must be true for it
}{
	{
		name: "text",
		xml:  head + `<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[?18-546]]></Content><MsgId>24500000000000001</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "text", "Content": "?18-546", "MsgID": "24500000000000001"}),
		typ:  "text",
	},
	{
		name: "image",
		xml:  head + `<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://mmbiz.qpic.cn/pic]]></PicUrl><MediaId><![CDATA[media_id]]></MediaId><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "image", "MsgID": "1234567890123456"}),
		typ:  "IMAGE",
	},
	{
		name: "voice with recognition",
		xml:  head + `<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[腾讯微信团队]]></Recognition><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "voice", "MsgID": "1234567890123456"}),
		typ:  "voice",
	},
	{
		name: "video",
		xml:  head + `<MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "video", "MsgID": "1234567890123456"}),
		typ:  "video",
	},
	{
		name: "shortvideo",
		xml:  head + `<MsgType><![CDATA[shortvideo]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "shortvideo", "MsgID": "1234567890123456"}),
		typ:  "shortvideo",
	},
	{
		name: "location",
		xml:  head + `<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[位置信息]]></Label><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "location", "MsgID": "1234567890123456"}),
		typ:  "location",
	},
	{
		name: "link",
		xml:  head + `<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[公众平台官网链接]]></Title><Description><![CDATA[公众平台官网链接]]></Description><Url><![CDATA[https://mp.weixin.qq.com]]></Url><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "link", "MsgID": "1234567890123456"}),
		typ:  "link",
	},
	{
		name:  "subscribe",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "subscribe"}),
		event: "subscribe",
	},
	{
		name:  "subscribe with qrscene",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "subscribe", "EventKey": "qrscene_123123"}),
		event: "SUBSCRIBE",
	},
	{
		name:  "unsubscribe",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "unsubscribe"}),
		event: "unsubscribe",
	},
	{
		name:  "SCAN",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[SCENE_VALUE]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "SCAN", "EventKey": "SCENE_VALUE"}),
		event: "scan",
	},
	{
		name:  "LOCATION",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[LOCATION]]></Event><Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "LOCATION"}),
		event: "location",
	},
	{
		name:  "CLICK",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[EVENTKEY]]></EventKey></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "CLICK", "EventKey": "EVENTKEY"}),
		event: "click",
	},
	{
		name:  "VIEW",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[VIEW]]></Event><EventKey><![CDATA[www.qq.com]]></EventKey><MenuId>MENUID</MenuId></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "VIEW", "EventKey": "www.qq.com"}),
		event: "View",
	},
	{
		name: "scancode_push",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_push]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "scancode_push", "EventKey": "6"}),
		event: "scancode_push",
	},
	{
		name: "scancode_waitmsg",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_waitmsg]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[2]]></ScanResult></ScanCodeInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "scancode_waitmsg", "EventKey": "6"}),
		event: "SCANCODE_WAITMSG",
	},
	{
		name: "pic_sysphoto",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_sysphoto]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "pic_sysphoto", "EventKey": "6"}),
		event: "pic_sysphoto",
	},
	{
		name: "pic_photo_or_album",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_photo_or_album]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum><![CDATA[5a75aaca956d97be686719218f275c6b]]></PicMd5Sum></item>` +
			`<item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "pic_photo_or_album", "EventKey": "6"}),
		event: "pic_photo_or_album",
	},
	{
		name: "pic_weixin",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_weixin]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[5a75aaca956d97be686719218f275c6b]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "pic_weixin", "EventKey": "6"}),
		event: "pic_weixin",
	},
	{
		name: "location_select",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[location_select]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendLocationInfo><Location_X><![CDATA[23]]></Location_X><Location_Y><![CDATA[113]]></Location_Y><Scale><![CDATA[15]]></Scale>` +
			`<Label><![CDATA[ 广州市海珠区客村艺苑路 106号]]></Label><Poiname><![CDATA[]]></Poiname></SendLocationInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "location_select", "EventKey": "6"}),
		event: "location_select",
	},
	{
		// Any event is an event with its key; the elements Message does not model
		// (Status) are skipped.
		name:  "unknown event",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID><Status><![CDATA[success]]></Status></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "TEMPLATESENDJOBFINISH", "MsgID": "200163836"}),
		event: "templatesendjobfinish",
	},
	{
		name: "WeCom text (AgentID skipped)",
		xml: `<xml><ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName><FromUserName><![CDATA[ZhangSan]]></FromUserName>` +
			`<CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content>` +
			`<MsgId>1234567890123456</MsgId><AgentID>1</AgentID></xml>`,
		want: map[string]string{"ToUserName": "ww0123456789abcdef", "FromUserName": "ZhangSan", "CreateTime": "1348831860",
			"MsgType": "text", "Content": "this is a test", "MsgID": "1234567890123456"},
		typ: "text",
	},
	{
		name: "encrypted envelope",
		xml:  `<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJl]]></Encrypt></xml>`,
		want: map[string]string{"ToUserName": "gh_10f6c3c3ac5a", "Encrypt": "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJl"},
	},
	{
		name: "WeCom encrypted envelope",
		xml:  `<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>`,
		want: map[string]string{"ToUserName": "wx5823bf96d3bd56c7", "Encrypt": "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo"},
	},
	{
		name: "encrypted reply envelope",
		xml:  "<xml>\n<Encrypt><![CDATA[msg_encrypt]]></Encrypt>\n<MsgSignature><![CDATA[msg_signature]]></MsgSignature>\n<TimeStamp>1409735669</TimeStamp>\n<Nonce><![CDATA[1320562132]]></Nonce>\n</xml>",
		want: map[string]string{"Encrypt": "msg_encrypt", "MsgSignature": "msg_signature", "TimeStamp": "1409735669", "Nonce": "1320562132"},
	},
	{
		name: "declaration, comments, white space and a BOM",
		xml: "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- from WeChat -->\n<xml>\n  <ToUserName><![CDATA[to]]></ToUserName>\n" +
			"  <!-- a comment -->\n  <MsgType>text</MsgType>\n  <Content><![CDATA[hi]]></Content>\n</xml>\n<!-- bye -->\n",
		want: map[string]string{"ToUserName": "to", "MsgType": "text", "Content": "hi"},
		typ:  "text",
	},
	{
		name: "entity-escaped text",
		xml:  `<xml><MsgType>text</MsgType><Content>a &lt;b&gt; &amp; &#x4e2d;&#25991; &quot;&apos; &#x1F600;&#65;</Content></xml>`,
		want: map[string]string{"MsgType": "text", "Content": "a <b> & 中文 \"' \U0001F600A"},
	},
	{
		name: "CDATA keeps markup and entities literally",
		xml:  `<xml><Content><![CDATA[<b>&amp; ]] ]>]]></Content></xml>`,
		want: map[string]string{"Content": "<b>&amp; ]] ]>"},
	},
	{
		name: "text in pieces: text, CDATA, comment, entity",
		xml:  `<xml><Content>ab<![CDATA[<c>]]>d<!-- x -->e&amp;<![CDATA[]]>f</Content></xml>`,
		want: map[string]string{"Content": "ab<c>de&f"},
	},
	{
		name: "split ]]> written as two CDATA sections",
		xml:  `<xml><Content><![CDATA[a]]]]><![CDATA[>b]]></Content></xml>`,
		want: map[string]string{"Content": "a]]>b"},
	},
	{
		name: "line endings normalised, &#13; kept",
		xml:  "<xml><Content>a\r\nb\rc&#13;\n<![CDATA[d\r\ne]]></Content></xml>",
		want: map[string]string{"Content": "a\nb\nc\r\nd\ne"},
	},
	{
		name: "white space around CDATA is part of the value",
		xml:  `<xml><MsgType>  <![CDATA[video]]></MsgType></xml>`,
		want: map[string]string{"MsgType": "  video"},
		typ:  "video",
	},
	{
		name:  "empty and self-closing elements are present and empty",
		xml:   `<xml><MsgType><![CDATA[event]]></MsgType><Event>subscribe</Event><EventKey/><Nonce></Nonce><Content><![CDATA[]]></Content><CreateTime/></xml>`,
		want:  map[string]string{"MsgType": "event", "Event": "subscribe", "EventKey": "", "Nonce": "", "Content": ""},
		event: "subscribe",
	},
	{
		name: "unknown elements are skipped with what they contain",
		xml:  `<xml><Foo a="1"><Content>no</Content><Bar/></Foo><Content b='x>y'>yes</Content><Extra>&amp;</Extra></xml>`,
		want: map[string]string{"Content": "yes"},
	},
	{
		name: "a child element inside a text field is skipped",
		xml:  `<xml><Content>a<b>x<ToUserName>t</ToUserName></b>c</Content></xml>`,
		want: map[string]string{"Content": "ac"},
	},
	{
		name: "fields inside other elements are skipped",
		xml:  `<xml><ScanType>qrcode</ScanType><PicMd5Sum>x</PicMd5Sum><Poiname>p</Poiname><ScanCodeInfo><Content>c</Content></ScanCodeInfo></xml>`,
		want: map[string]string{},
	},
	{
		name: "an element Message does not model may repeat",
		xml: `<xml><Status>a</Status><Status>b</Status><Articles><item><Title>t1</Title></item><item><Title>t2</Title></item></Articles>` +
			`<ScanCodeInfo><ScanType>a</ScanType><ScanType>b</ScanType></ScanCodeInfo><Content>c</Content></xml>`,
		want: map[string]string{"Content": "c"},
	},
	{
		name: "MsgId at the cap: 20 digits",
		xml:  `<xml><MsgId>18446744073709551615</MsgId><MsgType>text</MsgType></xml>`,
		want: map[string]string{"MsgID": "18446744073709551615", "MsgType": "text"},
	},
	{
		name: "self-closing root",
		xml:  `<xml/>`,
		want: map[string]string{},
	},
	{
		name: "negative and signed numbers, white space around them",
		xml:  "<xml><CreateTime>\n -42 \n</CreateTime><ArticleCount>+2</ArticleCount></xml>",
		want: map[string]string{"CreateTime": "-42"},
	},
	{
		name: "text reply",
		xml:  `<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[fromUser]]></FromUserName><CreateTime>12345678</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content></xml>`,
		want: map[string]string{"ToUserName": "toUser", "FromUserName": "fromUser", "CreateTime": "12345678", "MsgType": "text", "Content": "你好"},
		typ:  "text",
	},
	{
		name: "music reply",
		xml: `<xml><MsgType><![CDATA[music]]></MsgType><Music><Title><![CDATA[TITLE]]></Title><Description><![CDATA[DESCRIPTION]]></Description>` +
			`<MusicUrl><![CDATA[MUSIC_Url]]></MusicUrl><HQMusicUrl><![CDATA[HQ_MUSIC_Url]]></HQMusicUrl><ThumbMediaId><![CDATA[media_id]]></ThumbMediaId></Music></xml>`,
		want: map[string]string{"MsgType": "music"},
		typ:  "music",
	},
	{
		name: "transfer_customer_service reply",
		xml:  `<xml><MsgType><![CDATA[transfer_customer_service]]></MsgType><TransInfo><KfAccount><![CDATA[test1@test]]></KfAccount></TransInfo></xml>`,
		want: map[string]string{"MsgType": "transfer_customer_service"},
		typ:  "transfer_customer_service",
	},
}

func TestParse(t *testing.T) {
	var m Message
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := m.Parse([]byte(tt.xml)); err != nil {
				t.Fatalf("Parse: got error %v, want nil", err)
			}
			checkFields(t, fieldsOf(t, &m), tt.want)
			if tt.typ != "" && !m.IsType(tt.typ) {
				t.Errorf("IsType(%q): got false, want true (MsgType %q)", tt.typ, m.MsgType)
			}
			if tt.event != "" && !m.IsEvent(tt.event) {
				t.Errorf("IsEvent(%q): got false, want true (Event %q)", tt.event, m.Event)
			}
			if tt.event == "" && m.IsEvent("subscribe") {
				t.Errorf("IsEvent(%q): got true, want false", "subscribe")
			}
		})
	}
}

func TestParseValuesAreCapped(t *testing.T) {
	var m Message
	data := []byte(`<xml><ToUserName>to</ToUserName><Content>a&amp;b</Content><FromUserName>from</FromUserName><MsgType>x&lt;</MsgType></xml>`)
	if err := m.Parse(data); err != nil {
		t.Fatal(err)
	}
	_ = append(m.ToUserName, "XXXX"...)
	_ = append(m.Content, "YYYY"...)
	if got, want := string(m.FromUserName), "from"; got != want {
		t.Errorf("FromUserName after appending to ToUserName: got %q, want %q", got, want)
	}
	if got, want := string(m.MsgType), "x<"; got != want {
		t.Errorf("MsgType after appending to Content: got %q, want %q", got, want)
	}
}

// parseTest returns the document of parseTests named name.
func parseTest(tb testing.TB, name string) string {
	tb.Helper()
	for _, tt := range parseTests {
		if tt.name == name {
			return tt.xml
		}
	}
	tb.Fatalf("no parse test named %q", name)
	return ""
}

func TestParseReuse(t *testing.T) {
	var m Message
	first := parseTest(t, "pic_photo_or_album") // many fields, and elements to skip
	if err := m.Parse([]byte(first)); err != nil {
		t.Fatal(err)
	}
	if err := m.Parse([]byte(`<xml><MsgType>text</MsgType><Content>a&amp;b</Content></xml>`)); err != nil {
		t.Fatal(err)
	}
	checkFields(t, fieldsOf(t, &m), map[string]string{"MsgType": "text", "Content": "a&b"})

	// Once warm, parsing a message with entities and character references (which go
	// through scratch space), a number and skipped elements allocates nothing.
	data := []byte(`<xml><Content>a&amp;b&#x4e2d;&#25991;</Content>` + strings.TrimPrefix(first, "<xml>"))
	allocs := testing.AllocsPerRun(100, func() {
		if err := m.Parse(data); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per Parse of a warm Message: got %v, want 0", allocs)
	}
}

func TestIsEvent(t *testing.T) {
	tests := []struct {
		name  string
		xml   string
		event string
		want  bool
	}{
		{name: "same case", xml: `<xml><MsgType>event</MsgType><Event>subscribe</Event></xml>`, event: "subscribe", want: true},
		{name: "other case", xml: `<xml><MsgType>EVENT</MsgType><Event>Subscribe</Event></xml>`, event: "subscribe", want: true},
		{name: "surrounding space", xml: "<xml><MsgType> event\n</MsgType><Event>\tSCAN </Event></xml>", event: "scan", want: true},
		{name: "other event", xml: `<xml><MsgType>event</MsgType><Event>unsubscribe</Event></xml>`, event: "subscribe", want: false},
		{name: "not an event", xml: `<xml><MsgType>text</MsgType><Event>subscribe</Event></xml>`, event: "subscribe", want: false},
		{name: "prefix only", xml: `<xml><MsgType>event</MsgType><Event>subscribe</Event></xml>`, event: "sub", want: false},
		{name: "Unicode case folding does not count", xml: "<xml><MsgType>event</MsgType><Event>\u017Fubscribe</Event></xml>", event: "subscribe", want: false},
		{name: "Kelvin sign is not K", xml: "<xml><MsgType>event</MsgType><Event>CLIC\u212A</Event></xml>", event: "click", want: false},
	}
	var m Message
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := m.Parse([]byte(tt.xml)); err != nil {
				t.Fatal(err)
			}
			if got := m.IsEvent(tt.event); got != tt.want {
				t.Errorf("IsEvent(%q): got %v, want %v", tt.event, got, tt.want)
			}
		})
	}
}

// textMessage is the document of the hot path: a worker's query as WeChat sends it.
var textMessage = []byte(`<xml><ToUserName><![CDATA[gh_6b9aa8a6f1e2]]></ToUserName>` +
	`<FromUserName><![CDATA[oFLjC5kdmb6CwVtIWLr5xa-DKQhM]]></FromUserName><CreateTime>1714036504</CreateTime>` +
	`<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[?18-546]]></Content><MsgId>24500000000000001</MsgId></xml>`)

func BenchmarkParseText(b *testing.B) {
	var m Message
	b.ReportAllocs()
	b.SetBytes(int64(len(textMessage)))
	for b.Loop() {
		if err := m.Parse(textMessage); err != nil {
			b.Fatal(err)
		}
	}
}

// oracleMessage is what encoding/xml makes of a document, the oracle FuzzParse checks
// Parse against. Every field is a pointer so that "absent" and "empty" differ, as they do
// in Message. Like Message, it reads only the children of <xml>.
type oracleMessage struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   *string
	FromUserName *string
	CreateTime   *int64
	MsgType      *string
	MsgId        *string `xml:"MsgId"`
	MsgID        *string `xml:"MsgID"`
	Content      *string
	Event        *string
	EventKey     *string
	Encrypt      *string
	MsgSignature *string
	TimeStamp    *string
	Nonce        *string
}

// hasPrefixedName reports whether an element name in data has a namespace prefix. For
// encoding/xml <a:Content> is a Content element; for Parse, which has no use for
// namespaces (WeChat sends none), it is an element named "a:Content", and skipped.
func hasPrefixedName(data []byte) bool {
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := d.RawToken()
		if err != nil {
			return false
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if tok.Name.Space != "" {
				return true
			}
		case xml.EndElement:
			if tok.Name.Space != "" {
				return true
			}
		}
	}
}

// agreeWithOracle reports every field where m differs from what encoding/xml found.
func agreeWithOracle(tb testing.TB, m *Message, o *oracleMessage) {
	tb.Helper()
	one := func(name string, got []byte, cands ...*string) {
		tb.Helper()
		var present []string
		for _, c := range cands {
			if c != nil {
				present = append(present, *c)
			}
		}
		switch {
		case len(present) == 0 && got != nil:
			tb.Errorf("%s: got %q, encoding/xml found no element", name, got)
		case len(present) > 1:
			tb.Errorf("%s: Parse accepted a document with %d such elements %q", name, len(present), present)
		case len(present) == 1 && (got == nil || string(got) != present[0]):
			tb.Errorf("%s: got %q, want %q (encoding/xml)", name, got, present[0])
		}
	}
	one("ToUserName", m.ToUserName, o.ToUserName)
	one("FromUserName", m.FromUserName, o.FromUserName)
	if o.CreateTime != nil && m.CreateTime != *o.CreateTime || o.CreateTime == nil && m.CreateTime != 0 {
		tb.Errorf("CreateTime: got %d, want %v (encoding/xml)", m.CreateTime, o.CreateTime)
	}
	one("MsgType", m.MsgType, o.MsgType)
	one("MsgID", m.MsgID, o.MsgId, o.MsgID)
	one("Content", m.Content, o.Content)
	one("Event", m.Event, o.Event)
	one("EventKey", m.EventKey, o.EventKey)
	one("Encrypt", m.Encrypt, o.Encrypt)
	one("MsgSignature", m.MsgSignature, o.MsgSignature)
	one("TimeStamp", m.TimeStamp, o.TimeStamp)
	one("Nonce", m.Nonce, o.Nonce)
}

// FuzzParse checks that Parse never panics, fails only with ErrMalformed or
// ErrFieldTooLong, gives the same answer on a reused Message, and, for every document that
// both it and encoding/xml accept, finds the same field values as encoding/xml.
//
// It also checks what SPEC section 9 asks of every accepted document (checkLimits: fields
// within their caps, no character XML forbids, valid UTF-8), and that ParseEnvelope
// accepts it too and finds the same envelope fields.
//
// The two legitimately disagree on which documents to accept, so only common ground is
// compared. encoding/xml accepts and Parse refuses: text or markup before the root
// element or after it, a DOCTYPE, attributes not separated by white space, a field given
// twice, an identifier over its cap. Parse accepts and encoding/xml refuses: names that are
// not XML names, "--" in comments, XML declarations of other versions and encodings, and
// unescaped "<" in attribute values (Parse skips attributes). Namespace prefixes are left
// out (see hasPrefixedName).
func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.xml))
	}
	f.Add(textMessage)
	f.Add([]byte(`<xml><Content>a&#13;&#x0d;&#10;<![CDATA[]]]]><![CDATA[>]]>&lt;&#xD7FF;</Content></xml>`))
	f.Add([]byte("<xml><Content>\r\n\r<![CDATA[\r\r\n]]>\r</Content></xml>"))
	f.Add([]byte(`<xml><CreateTime> 12 </CreateTime><SendPicsInfo><Count/><PicList><item/></PicList></SendPicsInfo></xml>`))
	f.Add([]byte(`<xml><Content>a<?pi x?>b</Content><ScanCodeInfo>text<ScanType>q</ScanType></ScanCodeInfo></xml>`))
	f.Add([]byte(`<xml xmlns="urn:x"><Content xmlns="urn:y">a</Content><Video><MediaId>v</MediaId></Video><MediaId>m</MediaId></xml>`))
	f.Add([]byte(`<xml><SendPicsInfo><PicList><item><PicMd5Sum>a</PicMd5Sum><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo>` +
		`<SendPicsInfo><PicList><item/></PicList></SendPicsInfo></xml>`))
	f.Add([]byte("<xml><FromUserName><![CDATA[o\xff]]></FromUserName><Content>\x00</Content></xml>"))
	f.Add([]byte(`<xml><FromUserName>a</FromUserName><FromUserName>b</FromUserName><MsgId>1</MsgId><MsgID>2</MsgID></xml>`))
	f.Add([]byte("<xml><ToUserName>" + strings.Repeat("t", MaxUserNameBytes+1) + "</ToUserName><MsgId>" + strings.Repeat("9", MaxMsgIDDigits+1) + "</MsgId></xml>"))
	f.Add([]byte(`<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><Encrypt>e</Encrypt><AgentID>1</AgentID><Content>c</Content></xml>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		err := m.Parse(data)
		var env Message
		envErr := env.ParseEnvelope(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFieldTooLong) {
				t.Fatalf("Parse: got error %v, want ErrMalformed or ErrFieldTooLong", err)
			}
			if envErr != nil && !errors.Is(envErr, ErrMalformed) && !errors.Is(envErr, ErrFieldTooLong) {
				t.Fatalf("ParseEnvelope: got error %v, want ErrMalformed or ErrFieldTooLong", envErr)
			}
			return
		}
		want := fieldsOf(t, &m)
		checkLimits(t, &m)

		// The envelope of a message Parse accepts is accepted, with the same values.
		if envErr != nil {
			t.Fatalf("ParseEnvelope: got %v on a document Parse accepts", envErr)
		}
		wantEnv := map[string]string{}
		for _, k := range []string{"ToUserName", "Encrypt"} {
			if v, ok := want[k]; ok {
				wantEnv[k] = v
			}
		}
		checkFields(t, fieldsOf(t, &env), wantEnv)

		// A dirty, reused Message gives the same answer.
		var dirty Message
		if err := dirty.Parse([]byte(parseTest(t, "pic_photo_or_album"))); err != nil {
			t.Fatal(err)
		}
		if err := dirty.Parse(data); err != nil {
			t.Fatalf("Parse on a reused Message: got %v, want nil", err)
		}
		checkFields(t, fieldsOf(t, &dirty), want)

		var o oracleMessage
		if xml.Unmarshal(data, &o) != nil || hasPrefixedName(data) {
			return
		}
		agreeWithOracle(t, &m, &o)
	})
}

// checkLimits fails the test if a field Parse filled breaks a rule of SPEC section 9: a
// value over the cap elements gives it, or not digits where it asks for them, a character
// XML forbids, invalid UTF-8.
func checkLimits(tb testing.TB, m *Message) {
	tb.Helper()
	for _, e := range elements {
		if e.bytes == nil {
			continue
		}
		v := *e.bytes(m)
		if e.max > 0 && len(v) > e.max {
			tb.Errorf("%s: %d bytes, over its cap of %d", e.name, len(v), e.max)
		}
		if e.digits && strings.Trim(string(v), "0123456789") != "" {
			tb.Errorf("%s: %q is not digits", e.name, v)
		}
		if !utf8.Valid(v) {
			tb.Errorf("%s: invalid UTF-8 %q", e.name, v)
		}
		for _, r := range string(v) {
			if !isXMLChar(r) {
				tb.Errorf("%s: character %U that XML forbids", e.name, r)
			}
		}
	}
}

// BenchmarkParseTextEncodingXML is the baseline Parse replaces: encoding/xml into a
// struct of strings, the seed design of SPEC section 8.
func BenchmarkParseTextEncodingXML(b *testing.B) {
	var v struct {
		ToUserName, FromUserName string
		CreateTime               int64
		MsgType, Content         string
		MsgId                    int64
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(textMessage)))
	for b.Loop() {
		if err := xml.Unmarshal(textMessage, &v); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseFieldCaps: an identifier field over its cap (SPEC section 9) fails Parse with
// ErrFieldTooLong, however the value is written; at the cap it parses.
func TestParseFieldCaps(t *testing.T) {
	cdata := func(el string, n int) string {
		return "<xml><" + el + "><![CDATA[" + strings.Repeat("o", n) + "]]></" + el + "></xml>"
	}
	tests := []struct {
		name string
		xml  string
		want error // nil: parses
	}{
		{"ToUserName at the cap", cdata("ToUserName", MaxUserNameBytes), nil},
		{"ToUserName over the cap", cdata("ToUserName", MaxUserNameBytes+1), ErrFieldTooLong},
		{"FromUserName at the cap", cdata("FromUserName", MaxUserNameBytes), nil},
		{"FromUserName over the cap", cdata("FromUserName", MaxUserNameBytes+1), ErrFieldTooLong},
		{"FromUserName of 60 KB", cdata("FromUserName", 60<<10), ErrFieldTooLong},
		{"FromUserName over the cap through entities", "<xml><FromUserName>" + strings.Repeat("&amp;", MaxUserNameBytes+1) + "</FromUserName></xml>", ErrFieldTooLong},
		{"FromUserName over the cap in pieces", "<xml><FromUserName>" + strings.Repeat("<![CDATA[oooo]]>", MaxUserNameBytes/4+1) + "</FromUserName></xml>", ErrFieldTooLong},
		{"Event at the cap", cdata("Event", MaxEventBytes), nil},
		{"Event over the cap", cdata("Event", MaxEventBytes+1), ErrFieldTooLong},
		{"EventKey at the cap", cdata("EventKey", MaxEventBytes), nil},
		{"EventKey over the cap", cdata("EventKey", MaxEventBytes+1), ErrFieldTooLong},
		{"MsgId of 20 digits", "<xml><MsgId>" + strings.Repeat("9", MaxMsgIDDigits) + "</MsgId></xml>", nil},
		{"MsgId of 21 digits", "<xml><MsgId>" + strings.Repeat("9", MaxMsgIDDigits+1) + "</MsgId></xml>", ErrFieldTooLong},
		{"MsgID of 21 digits", "<xml><MsgID>" + strings.Repeat("1", MaxMsgIDDigits+1) + "</MsgID></xml>", ErrFieldTooLong},
		{"MsgId of 60 KB", "<xml><MsgId>" + strings.Repeat("1", 60<<10) + "</MsgId></xml>", ErrFieldTooLong},
		{"MsgId empty", "<xml><MsgId></MsgId></xml>", nil},
		{"MsgId of letters", "<xml><MsgId>abc</MsgId></xml>", ErrMalformed},
		{"Content is not capped below the body", cdata("Content", 60<<10), nil},
		{"an element Message does not model is not capped", cdata("Status", 60<<10), nil},
		{"FromUserName inside an unmodelled element is not read", "<xml><Foo>" + strings.TrimSuffix(strings.TrimPrefix(cdata("FromUserName", 1000), "<xml>"), "</xml>") + "</Foo></xml>", nil},
	}
	var m Message
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.Parse([]byte(tt.xml))
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("got error %v, want nil", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("got error %v, want %v", err, tt.want)
			case tt.want == ErrFieldTooLong && errors.Is(err, ErrMalformed):
				t.Fatalf("got %v, which is also ErrMalformed: the server could not tell the reasons apart", err)
			}
			if err != nil && len(err.Error()) > 200 {
				t.Errorf("error message is %d bytes long, want it short (it is logged): %.80q…", len(err.Error()), err.Error())
			}
		})
	}
}

// TestParseEnvelope: ParseEnvelope reads only what identifies and carries the ciphertext
// (ToUserName, Encrypt), so that nothing else in a body is read before its
// msg_signature is checked; the document must still be well-formed XML.
func TestParseEnvelope(t *testing.T) {
	long := strings.Repeat("o", 60<<10)
	tests := []struct {
		name string
		xml  string
		want map[string]string
		err  error
	}{
		{
			name: "safe mode envelope",
			xml:  `<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[hyzAe4Ozm]]></Encrypt></xml>`,
			want: map[string]string{"ToUserName": "gh_10f6c3c3ac5a", "Encrypt": "hyzAe4Ozm"},
		},
		{
			name: "WeCom envelope",
			xml:  `<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8Q]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>`,
			want: map[string]string{"ToUserName": "wx5823bf96d3bd56c7", "Encrypt": "RypEvHKD8Q"},
		},
		{
			name: "compatible mode: the plaintext fields are not read",
			xml:  head + `<MsgType>text</MsgType><Content>c</Content><MsgId>1</MsgId><Encrypt>e</Encrypt></xml>`,
			want: map[string]string{"ToUserName": "gh_6b9aa8a6f1e2", "Encrypt": "e"},
		},
		{
			name: "over-long and repeated fields outside the envelope are not read",
			xml:  `<xml><FromUserName>` + long + `</FromUserName><FromUserName>x</FromUserName><MsgId>abc</MsgId><Event>` + long + `</Event><Encrypt>e</Encrypt></xml>`,
			want: map[string]string{"Encrypt": "e"},
		},
		{name: "ToUserName over the cap", xml: `<xml><ToUserName>` + long + `</ToUserName><Encrypt>e</Encrypt></xml>`, err: ErrFieldTooLong},
		{name: "Encrypt twice", xml: `<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>`, err: ErrMalformed},
		{name: "NUL outside the envelope fields", xml: "<xml><Encrypt>e</Encrypt><Foo>\x00</Foo></xml>", err: ErrMalformed},
		{name: "not XML", xml: `<xml><Encrypt>e</Encrypt>`, err: ErrMalformed},
	}
	var m Message
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.ParseEnvelope([]byte(tt.xml))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("got error %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			checkFields(t, fieldsOf(t, &m), tt.want)
		})
	}
}

// TestResetLetsLargeScratchGo: Reset keeps the scratch space of usual messages for the
// next Parse, but lets go of what an unusual document grew it to, so a Message reused
// from a pool does not hold on to a body's worth of memory.
func TestResetLetsLargeScratchGo(t *testing.T) {
	var m Message
	if err := m.Parse([]byte(`<xml><Content>a&amp;b</Content></xml>`)); err != nil {
		t.Fatal(err)
	}
	m.Reset()
	if cap(m.scratch) == 0 {
		t.Errorf("after a usual message: got %d bytes of scratch kept, want them kept", cap(m.scratch))
	}
	if err := m.Parse([]byte("<xml><Content>" + strings.Repeat("&amp;", 20<<10) + "</Content></xml>")); err != nil {
		t.Fatal(err)
	}
	m.Reset()
	if cap(m.scratch) > maxKeptScratch {
		t.Errorf("after a large message: got %d bytes of scratch kept, want at most %d", cap(m.scratch), maxKeptScratch)
	}
}

// TestElements checks the table that drives Parse against Message: each element (and
// its other spelling) fills exactly one exported field, no two elements fill the same
// one, every exported field has an element, and ParseEnvelope reads an element just when
// the table says it is part of the envelope.
func TestElements(t *testing.T) {
	filledBy := map[string]string{} // Message field → element
	for _, e := range elements {
		for _, name := range []string{e.name, e.alias} {
			if name == "" {
				continue
			}
			t.Run(name, func(t *testing.T) {
				doc := []byte("<xml><" + name + ">7</" + name + "></xml>")
				var m Message
				if err := m.Parse(doc); err != nil {
					t.Fatalf("Parse(%q): got error %v, want nil", doc, err)
				}
				got := fieldsOf(t, &m)
				if len(got) != 1 {
					t.Fatalf("Parse(%q): got fields %q, want exactly one", doc, got)
				}
				for f, v := range got {
					if v != "7" {
						t.Errorf("%s: got %q, want %q", f, v, "7")
					}
					if by, ok := filledBy[f]; ok && by != e.name {
						t.Errorf("%s: filled by <%s> and by <%s>, want one element", f, by, e.name)
					}
					filledBy[f] = e.name
				}
				var env Message
				if err := env.ParseEnvelope(doc); err != nil {
					t.Fatalf("ParseEnvelope(%q): got error %v, want nil", doc, err)
				}
				if got := len(fieldsOf(t, &env)) == 1; got != e.envelope {
					t.Errorf("ParseEnvelope reads <%s>: got %v, want %v", name, got, e.envelope)
				}
			})
		}
	}
	typ := reflect.TypeFor[Message]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.IsExported() && filledBy[f.Name] == "" {
			t.Errorf("Message.%s: no element fills it", f.Name)
		}
	}
}
