package wechat

import "testing"

func TestInbound(t *testing.T) {
	to, from := []byte("gh_account"), []byte("oUser")
	tests := []struct {
		name string
		doc  []byte
		want map[string]string
	}{
		{
			name: "text message",
			doc:  AppendTextMessage(nil, to, from, 1714036504, []byte("?18-546 & <x>"), 24500000000000001),
			want: map[string]string{"ToUserName": "gh_account", "FromUserName": "oUser", "CreateTime": "1714036504",
				"MsgType": "text", "Content": "?18-546 & <x>", "MsgID": "24500000000000001"},
		},
		{
			name: "subscribe event with a scene",
			doc:  AppendEventMessage(nil, to, from, 1, []byte("subscribe"), []byte("qrscene_7")),
			want: map[string]string{"ToUserName": "gh_account", "FromUserName": "oUser", "CreateTime": "1",
				"MsgType": "event", "Event": "subscribe", "EventKey": "qrscene_7"},
		},
		{
			name: "event without a key",
			doc:  AppendEventMessage(nil, to, from, 1, []byte("unsubscribe"), nil),
			want: map[string]string{"ToUserName": "gh_account", "FromUserName": "oUser", "CreateTime": "1",
				"MsgType": "event", "Event": "unsubscribe"},
		},
		{
			name: "request envelope",
			doc:  AppendRequestEnvelope(nil, to, []byte("aGVsbG8=")),
			want: map[string]string{"ToUserName": "gh_account", "Encrypt": "aGVsbG8="},
		},
		{
			name: "WeCom request envelope",
			doc:  AppendWeComRequestEnvelope(nil, []byte("ww0123456789abcdef"), []byte("1000002"), []byte("aGVsbG8=")),
			want: map[string]string{"ToUserName": "ww0123456789abcdef", "Encrypt": "aGVsbG8="},
		},
	}
	var m Message
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := m.Parse(tt.doc); err != nil {
				t.Fatalf("Parse(%q): %v", tt.doc, err)
			}
			checkFields(t, fieldsOf(t, &m), tt.want)
		})
	}
}
