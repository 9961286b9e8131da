package load

import (
	"errors"
	"testing"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		complete  bool
		status    int
		body      string
		keepAlive bool
		bad       bool
	}{
		{"fixed", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsuccess", true, 200, "success", true, false},
		{"close", "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", true, 403, "no", false, false},
		{"http/1.0", "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", true, 200, "", false, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n", true, 200, "abcde", true, false},
		{"headers cut", "HTTP/1.1 200 OK\r\nContent-Len", false, 0, "", false, false},
		{"body cut", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsuc", false, 0, "", false, false},
		{"chunk cut", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", false, 0, "", false, false},
		{"trailer cut", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", false, 0, "", false, false},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", false, 0, "", false, true},
		{"no length", "HTTP/1.1 200 OK\r\nServer: x\r\n\r\nabc", false, 0, "", false, true},
		{"extra bytes", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", false, 0, "", false, true},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, 0, "", false, true},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, 0, "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, complete, err := parseReply([]byte(tt.in))
			if tt.bad {
				if !errors.Is(err, errProtocol) {
					t.Fatalf("got err %v, want a protocol error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if complete != tt.complete {
				t.Fatalf("complete = %v, want %v", complete, tt.complete)
			}
			if !complete {
				return
			}
			if r.status != tt.status || string(r.body) != tt.body || r.keepAlive != tt.keepAlive {
				t.Errorf("got %d %q keepAlive=%v, want %d %q keepAlive=%v", r.status, r.body, r.keepAlive, tt.status, tt.body, tt.keepAlive)
			}
		})
	}
}
