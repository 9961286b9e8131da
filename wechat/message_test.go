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
		case int:
			if x != 0 {
				got[sf.Name] = fmt.Sprint(x)
			}
		case [][]byte:
			if len(x) > 0 {
				s := make([]string, len(x))
				for j, b := range x {
					s[j] = string(b)
				}
				got[sf.Name] = strings.Join(s, ",")
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
// docs show them.
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
		want: with(map[string]string{"MsgType": "image", "PicURL": "http://mmbiz.qpic.cn/pic", "MediaID": "media_id", "MsgID": "1234567890123456"}),
		typ:  "IMAGE",
	},
	{
		name: "voice with recognition",
		xml:  head + `<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[腾讯微信团队]]></Recognition><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "voice", "MediaID": "media_id", "Format": "amr", "Recognition": "腾讯微信团队", "MsgID": "1234567890123456"}),
		typ:  "voice",
	},
	{
		name: "video",
		xml:  head + `<MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "video", "MediaID": "media_id", "ThumbMediaID": "thumb_media_id", "MsgID": "1234567890123456"}),
		typ:  "video",
	},
	{
		name: "shortvideo",
		xml:  head + `<MsgType><![CDATA[shortvideo]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "shortvideo", "MediaID": "media_id", "ThumbMediaID": "thumb_media_id", "MsgID": "1234567890123456"}),
		typ:  "shortvideo",
	},
	{
		name: "location",
		xml:  head + `<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[位置信息]]></Label><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "location", "LocationX": "23.134521", "LocationY": "113.358803", "Scale": "20", "Label": "位置信息", "MsgID": "1234567890123456"}),
		typ:  "location",
	},
	{
		name: "link",
		xml:  head + `<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[公众平台官网链接]]></Title><Description><![CDATA[公众平台官网链接]]></Description><Url><![CDATA[https://mp.weixin.qq.com]]></Url><MsgId>1234567890123456</MsgId></xml>`,
		want: with(map[string]string{"MsgType": "link", "Title": "公众平台官网链接", "Description": "公众平台官网链接", "URL": "https://mp.weixin.qq.com", "MsgID": "1234567890123456"}),
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
		want:  with(map[string]string{"MsgType": "event", "Event": "subscribe", "EventKey": "qrscene_123123", "Ticket": "TICKET"}),
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
		want:  with(map[string]string{"MsgType": "event", "Event": "SCAN", "EventKey": "SCENE_VALUE", "Ticket": "TICKET"}),
		event: "scan",
	},
	{
		name:  "LOCATION",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[LOCATION]]></Event><Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "LOCATION", "Latitude": "23.137466", "Longitude": "113.352425", "Precision": "119.385040"}),
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
		want:  with(map[string]string{"MsgType": "event", "Event": "VIEW", "EventKey": "www.qq.com", "MenuID": "MENUID"}),
		event: "View",
	},
	{
		name: "scancode_push",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_push]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "scancode_push", "EventKey": "6", "ScanType": "qrcode", "ScanResult": "1"}),
		event: "scancode_push",
	},
	{
		name: "scancode_waitmsg",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_waitmsg]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[2]]></ScanResult></ScanCodeInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "scancode_waitmsg", "EventKey": "6", "ScanType": "qrcode", "ScanResult": "2"}),
		event: "SCANCODE_WAITMSG",
	},
	{
		name: "pic_sysphoto",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_sysphoto]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "pic_sysphoto", "EventKey": "6", "PicCount": "1", "PicMD5s": "1b5f7c23b5bf75682a53e7b6d163e185"}),
		event: "pic_sysphoto",
	},
	{
		name: "pic_photo_or_album",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_photo_or_album]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum><![CDATA[5a75aaca956d97be686719218f275c6b]]></PicMd5Sum></item>` +
			`<item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>`,
		want: with(map[string]string{"MsgType": "event", "Event": "pic_photo_or_album", "EventKey": "6", "PicCount": "2",
			"PicMD5s": "5a75aaca956d97be686719218f275c6b,1b5f7c23b5bf75682a53e7b6d163e185"}),
		event: "pic_photo_or_album",
	},
	{
		name: "pic_weixin",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[pic_weixin]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[5a75aaca956d97be686719218f275c6b]]></PicMd5Sum></item></PicList></SendPicsInfo></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "pic_weixin", "EventKey": "6", "PicCount": "1", "PicMD5s": "5a75aaca956d97be686719218f275c6b"}),
		event: "pic_weixin",
	},
	{
		name: "location_select",
		xml: head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[location_select]]></Event><EventKey><![CDATA[6]]></EventKey>` +
			`<SendLocationInfo><Location_X><![CDATA[23]]></Location_X><Location_Y><![CDATA[113]]></Location_Y><Scale><![CDATA[15]]></Scale>` +
			`<Label><![CDATA[ 广州市海珠区客村艺苑路 106号]]></Label><Poiname><![CDATA[]]></Poiname></SendLocationInfo></xml>`,
		want: with(map[string]string{"MsgType": "event", "Event": "location_select", "EventKey": "6",
			"SendLocationX": "23", "SendLocationY": "113", "SendScale": "15", "SendLabel": " 广州市海珠区客村艺苑路 106号", "SendPoiname": ""}),
		event: "location_select",
	},
	{
		// An event this package does not know is still an event with its key; the
		// elements it does not model (Status) are skipped.
		name:  "unknown event",
		xml:   head + `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID><Status><![CDATA[success]]></Status></xml>`,
		want:  with(map[string]string{"MsgType": "event", "Event": "TEMPLATESENDJOBFINISH", "MsgID": "200163836"}),
		event: "templatesendjobfinish",
	},
	{
		name: "WeCom text with AgentID",
		xml: `<xml><ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName><FromUserName><![CDATA[ZhangSan]]></FromUserName>` +
			`<CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content>` +
			`<MsgId>1234567890123456</MsgId><AgentID>1</AgentID></xml>`,
		want: map[string]string{"ToUserName": "ww0123456789abcdef", "FromUserName": "ZhangSan", "CreateTime": "1348831860",
			"MsgType": "text", "Content": "this is a test", "MsgID": "1234567890123456", "AgentID": "1"},
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
		want: map[string]string{"ToUserName": "wx5823bf96d3bd56c7", "Encrypt": "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo", "AgentID": "218"},
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
		xml:   `<xml><MsgType><![CDATA[event]]></MsgType><Event>subscribe</Event><EventKey/><Ticket></Ticket><Content><![CDATA[]]></Content><CreateTime/></xml>`,
		want:  map[string]string{"MsgType": "event", "Event": "subscribe", "EventKey": "", "Ticket": "", "Content": ""},
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
		name: "fields outside their container are skipped",
		xml:  `<xml><ScanType>qrcode</ScanType><PicMd5Sum>x</PicMd5Sum><Poiname>p</Poiname><ScanCodeInfo><Content>c</Content></ScanCodeInfo></xml>`,
		want: map[string]string{},
	},
	{
		name: "an element Message does not model may repeat",
		xml:  `<xml><Status>a</Status><Status>b</Status><Articles><item><Title>t1</Title></item><item><Title>t2</Title></item></Articles><Content>c</Content></xml>`,
		want: map[string]string{"Content": "c"},
	},
	{
		name: "MsgId at the cap: 20 digits",
		xml:  `<xml><MsgId>18446744073709551615</MsgId><MsgType>text</MsgType></xml>`,
		want: map[string]string{"MsgID": "18446744073709551615", "MsgType": "text"},
	},
	{
		name: "pic items without checksum",
		xml:  `<xml><SendPicsInfo><Count>3</Count><PicList><item/><item><PicMd5Sum>a</PicMd5Sum></item><item></item></PicList></SendPicsInfo></xml>`,
		want: map[string]string{"PicCount": "3", "PicMD5s": ",a,"},
	},
	{
		name: "self-closing root",
		xml:  `<xml/>`,
		want: map[string]string{},
	},
	{
		name: "negative and signed numbers, white space around them",
		xml:  "<xml><CreateTime>\n -42 \n</CreateTime><ArticleCount>+2</ArticleCount></xml>",
		want: map[string]string{"CreateTime": "-42", "ArticleCount": "2"},
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
		want: map[string]string{"MsgType": "music", "Title": "TITLE", "Description": "DESCRIPTION", "MusicURL": "MUSIC_Url", "HQMusicURL": "HQ_MUSIC_Url", "ThumbMediaID": "media_id"},
		typ:  "music",
	},
	{
		name: "transfer_customer_service reply",
		xml:  `<xml><MsgType><![CDATA[transfer_customer_service]]></MsgType><TransInfo><KfAccount><![CDATA[test1@test]]></KfAccount></TransInfo></xml>`,
		want: map[string]string{"MsgType": "transfer_customer_service", "KfAccount": "test1@test"},
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

func TestParseReuse(t *testing.T) {
	var m Message
	first := parseTests[16].xml // pic_photo_or_album: two PicMD5s
	if err := m.Parse([]byte(first)); err != nil {
		t.Fatal(err)
	}
	if err := m.Parse([]byte(`<xml><MsgType>text</MsgType><Content>a&amp;b</Content></xml>`)); err != nil {
		t.Fatal(err)
	}
	checkFields(t, fieldsOf(t, &m), map[string]string{"MsgType": "text", "Content": "a&b"})

	// Once warm, parsing a message with entities (which go through scratch space) and
	// pictures (which go into PicMD5s) allocates nothing.
	data := []byte(`<xml><Content>a&amp;b</Content>` + strings.TrimPrefix(first, "<xml>"))
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

func TestSubscribeScene(t *testing.T) {
	tests := []struct {
		name, key, want string
	}{
		{name: "qrscene prefix", key: "qrscene_123123", want: "123123"},
		{name: "string scene", key: "qrscene_line-3", want: "line-3"},
		{name: "bare scene of SCAN", key: "123123", want: "123123"},
		{name: "prefix alone", key: "qrscene_", want: ""},
		{name: "empty", key: "", want: ""},
		{name: "other case is not the prefix", key: "QRSCENE_1", want: "QRSCENE_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(SubscribeScene([]byte(tt.key))); got != tt.want {
				t.Errorf("SubscribeScene(%q): got %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

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
		{name: "Count sign only", xml: `<xml><SendPicsInfo><Count>-</Count></SendPicsInfo></xml>`},
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
		{name: "field twice in a container", xml: `<xml><ScanCodeInfo><ScanType>a</ScanType><ScanType>b</ScanType></ScanCodeInfo></xml>`},
		{name: "field in two containers", xml: `<xml><SendPicsInfo><Count>1</Count></SendPicsInfo><SendPicsInfo><Count>2</Count></SendPicsInfo></xml>`},
		{name: "checksum twice in one picture", xml: `<xml><SendPicsInfo><PicList><item><PicMd5Sum>a</PicMd5Sum><PicMd5Sum>b</PicMd5Sum></item></PicList></SendPicsInfo></xml>`},
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseInt([]byte(tt.in))
			if ok != tt.ok || got != tt.want {
				t.Errorf("parseInt(%q): got %d, %v, want %d, %v", tt.in, got, ok, tt.want, tt.ok)
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
// in Message. Containers are nested structs, as in Message's model: a field inside the
// wrong parent is skipped by both.
type oracleMessage struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   *string
	FromUserName *string
	CreateTime   *int64
	MsgType      *string
	MsgId        *string `xml:"MsgId"`
	MsgID        *string `xml:"MsgID"`
	Content      *string
	PicUrl       *string
	MediaId      *string
	Format       *string
	Recognition  *string
	ThumbMediaId *string
	LocationX    *string `xml:"Location_X"`
	LocationY    *string `xml:"Location_Y"`
	Scale        *string
	Label        *string
	Title        *string
	Description  *string
	Url          *string
	Event        *string
	EventKey     *string
	Ticket       *string
	Latitude     *string
	Longitude    *string
	Precision    *string
	MenuId       *string `xml:"MenuId"`
	MenuID       *string `xml:"MenuID"`
	AgentID      *string
	Encrypt      *string
	MsgSignature *string
	TimeStamp    *string
	Nonce        *string
	ArticleCount *int
	ScanCodeInfo *struct {
		ScanType, ScanResult *string
	}
	SendPicsInfo *struct {
		Count   *int
		PicList *struct {
			Item []struct {
				PicMd5Sum *string
			} `xml:"item"`
		}
	}
	SendLocationInfo *struct {
		LocationX *string `xml:"Location_X"`
		LocationY *string `xml:"Location_Y"`
		Scale     *string
		Label     *string
		Poiname   *string
	}
	Image *struct{ MediaId *string }
	Voice *struct{ MediaId *string }
	Video *struct {
		MediaId, Title, Description *string
	}
	Music *struct {
		Title, Description, MusicUrl, HQMusicUrl, ThumbMediaId *string
	}
	TransInfo *struct{ KfAccount *string }
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
//
// Where Message folds several elements into one field (MsgId and MsgID; MediaId at the
// top and inside <Image>, <Voice>, <Video>; …) and the document has more than one of
// them, Message holds the last one in document order, which the oracle's separate fields
// cannot tell; then m's value must be one of the oracle's.
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
		case len(present) > 0 && got == nil:
			tb.Errorf("%s: absent, encoding/xml found %q", name, present)
		case len(present) == 1 && string(got) != present[0]:
			tb.Errorf("%s: got %q, want %q (encoding/xml)", name, got, present[0])
		case len(present) > 1 && !slices.Contains(present, string(got)):
			tb.Errorf("%s: got %q, want one of %q (encoding/xml)", name, got, present)
		}
	}
	num := func(name string, got int64, want *int64) {
		tb.Helper()
		w := int64(0)
		if want != nil {
			w = *want
		}
		if got != w {
			tb.Errorf("%s: got %d, want %d (encoding/xml)", name, got, w)
		}
	}
	one("ToUserName", m.ToUserName, o.ToUserName)
	one("FromUserName", m.FromUserName, o.FromUserName)
	num("CreateTime", m.CreateTime, o.CreateTime)
	one("MsgType", m.MsgType, o.MsgType)
	one("MsgID", m.MsgID, o.MsgId, o.MsgID)
	one("Content", m.Content, o.Content)
	one("PicURL", m.PicURL, o.PicUrl)
	one("Format", m.Format, o.Format)
	one("Recognition", m.Recognition, o.Recognition)
	one("LocationX", m.LocationX, o.LocationX)
	one("LocationY", m.LocationY, o.LocationY)
	one("Scale", m.Scale, o.Scale)
	one("Label", m.Label, o.Label)
	one("URL", m.URL, o.Url)
	one("Event", m.Event, o.Event)
	one("EventKey", m.EventKey, o.EventKey)
	one("Ticket", m.Ticket, o.Ticket)
	one("Latitude", m.Latitude, o.Latitude)
	one("Longitude", m.Longitude, o.Longitude)
	one("Precision", m.Precision, o.Precision)
	one("MenuID", m.MenuID, o.MenuId, o.MenuID)
	one("AgentID", m.AgentID, o.AgentID)
	one("Encrypt", m.Encrypt, o.Encrypt)
	one("MsgSignature", m.MsgSignature, o.MsgSignature)
	one("TimeStamp", m.TimeStamp, o.TimeStamp)
	one("Nonce", m.Nonce, o.Nonce)
	var article *int64
	if o.ArticleCount != nil {
		n := int64(*o.ArticleCount)
		article = &n
	}
	num("ArticleCount", int64(m.ArticleCount), article)

	var scanType, scanResult *string
	if s := o.ScanCodeInfo; s != nil {
		scanType, scanResult = s.ScanType, s.ScanResult
	}
	one("ScanType", m.ScanType, scanType)
	one("ScanResult", m.ScanResult, scanResult)

	var count *int64
	var pics []*string
	if s := o.SendPicsInfo; s != nil {
		if s.Count != nil {
			n := int64(*s.Count)
			count = &n
		}
		if s.PicList != nil {
			for _, it := range s.PicList.Item {
				pics = append(pics, it.PicMd5Sum)
			}
		}
	}
	num("PicCount", int64(m.PicCount), count)
	if len(m.PicMD5s) != len(pics) {
		tb.Errorf("PicMD5s: got %d items, want %d (encoding/xml)", len(m.PicMD5s), len(pics))
	} else {
		for i := range pics {
			one(fmt.Sprintf("PicMD5s[%d]", i), m.PicMD5s[i], pics[i])
		}
	}

	var lx, ly, sc, lb, poi *string
	if s := o.SendLocationInfo; s != nil {
		lx, ly, sc, lb, poi = s.LocationX, s.LocationY, s.Scale, s.Label, s.Poiname
	}
	one("SendLocationX", m.SendLocationX, lx)
	one("SendLocationY", m.SendLocationY, ly)
	one("SendScale", m.SendScale, sc)
	one("SendLabel", m.SendLabel, lb)
	one("SendPoiname", m.SendPoiname, poi)

	media := []*string{o.MediaId}
	title := []*string{o.Title}
	desc := []*string{o.Description}
	thumb := []*string{o.ThumbMediaId}
	var musicURL, hqMusicURL, kf *string
	if s := o.Image; s != nil {
		media = append(media, s.MediaId)
	}
	if s := o.Voice; s != nil {
		media = append(media, s.MediaId)
	}
	if s := o.Video; s != nil {
		media = append(media, s.MediaId)
		title = append(title, s.Title)
		desc = append(desc, s.Description)
	}
	if s := o.Music; s != nil {
		title = append(title, s.Title)
		desc = append(desc, s.Description)
		thumb = append(thumb, s.ThumbMediaId)
		musicURL, hqMusicURL = s.MusicUrl, s.HQMusicUrl
	}
	if s := o.TransInfo; s != nil {
		kf = s.KfAccount
	}
	one("MediaID", m.MediaID, media...)
	one("Title", m.Title, title...)
	one("Description", m.Description, desc...)
	one("ThumbMediaID", m.ThumbMediaID, thumb...)
	one("MusicURL", m.MusicURL, musicURL)
	one("HQMusicURL", m.HQMusicURL, hqMusicURL)
	one("KfAccount", m.KfAccount, kf)
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
		checkLimits(t, want)

		// The envelope of a message Parse accepts is accepted, with the same values.
		if envErr != nil {
			t.Fatalf("ParseEnvelope: got %v on a document Parse accepts", envErr)
		}
		wantEnv := map[string]string{}
		for _, k := range []string{"ToUserName", "Encrypt", "AgentID"} {
			if v, ok := want[k]; ok {
				wantEnv[k] = v
			}
		}
		checkFields(t, fieldsOf(t, &env), wantEnv)

		// A dirty, reused Message gives the same answer.
		var dirty Message
		if err := dirty.Parse([]byte(parseTests[16].xml)); err != nil {
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

// checkLimits fails the test if a parsed field breaks a rule of SPEC section 9: an
// identifier over its cap, a character XML forbids, invalid UTF-8.
func checkLimits(tb testing.TB, fields map[string]string) {
	tb.Helper()
	caps := map[string]int{"ToUserName": MaxUserNameBytes, "FromUserName": MaxUserNameBytes,
		"MsgID": MaxMsgIDDigits, "Event": MaxEventBytes, "EventKey": MaxEventBytes}
	for name, v := range fields {
		if c, ok := caps[name]; ok && len(v) > c {
			tb.Errorf("%s: %d bytes, over its cap of %d", name, len(v), c)
		}
		if !utf8.ValidString(v) {
			tb.Errorf("%s: invalid UTF-8 %q", name, v)
		}
		for _, r := range v {
			if !isXMLChar(r) {
				tb.Errorf("%s: character %U that XML forbids", name, r)
			}
		}
	}
	if id := fields["MsgID"]; strings.Trim(id, "0123456789") != "" {
		tb.Errorf("MsgID %q is not digits", id)
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
// (ToUserName, Encrypt, AgentID), so that nothing else in a body is read before its
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
			want: map[string]string{"ToUserName": "wx5823bf96d3bd56c7", "Encrypt": "RypEvHKD8Q", "AgentID": "218"},
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

// TestResetLetsLargeScratchGo: Reset keeps the scratch space and picture list of usual
// messages for the next Parse, but lets go of what an unusual document grew them to, so
// a Message reused from a pool does not hold on to a body's worth of memory.
func TestResetLetsLargeScratchGo(t *testing.T) {
	var m Message
	if err := m.Parse([]byte(`<xml><Content>a&amp;b</Content><SendPicsInfo><PicList><item/><item/></PicList></SendPicsInfo></xml>`)); err != nil {
		t.Fatal(err)
	}
	m.Reset()
	if cap(m.scratch) == 0 || cap(m.PicMD5s) == 0 {
		t.Errorf("after a usual message: scratch %d, pictures %d bytes kept; want both kept", cap(m.scratch), cap(m.PicMD5s))
	}
	big := "<xml><Content>" + strings.Repeat("&amp;", 12<<10) + "</Content><SendPicsInfo><PicList>" +
		strings.Repeat("<item/>", 2000) + "</PicList></SendPicsInfo></xml>"
	if err := m.Parse([]byte(big)); err != nil {
		t.Fatal(err)
	}
	m.Reset()
	if cap(m.scratch) > maxKeptScratch || cap(m.PicMD5s) > maxKeptPictures {
		t.Errorf("after a large message: scratch %d bytes, %d pictures kept; want at most %d and %d",
			cap(m.scratch), cap(m.PicMD5s), maxKeptScratch, maxKeptPictures)
	}
}
