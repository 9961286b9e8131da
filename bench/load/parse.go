package load

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// maxReplyBody bounds a reply body; WeChat replies are at most a few KiB.
const maxReplyBody = 1 << 20

// errProtocol marks a reply that is not HTTP/1.1 as this client reads it.
var errProtocol = errors.New("load: malformed HTTP reply")

// reply is an HTTP/1.1 reply parsed out of a connection's buffer.
type reply struct {
	status    int
	body      []byte // aliases the buffer; for a chunked reply, a copy
	keepAlive bool
}

// parseReply parses one reply from the start of b. It returns complete=false when b holds
// only part of it; then more must be read. It reads just what the generator needs: the
// status, the body (Content-Length or chunked), and whether the connection stays open.
// A reply without a length is not supported: every server measured sends one.
func parseReply(b []byte) (r reply, complete bool, err error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > 16<<10 {
			return r, false, fmt.Errorf("%w: no end of headers in %d bytes", errProtocol, len(b))
		}
		return r, false, nil
	}
	head, rest := b[:end], b[end+4:]
	line, headers, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return r, false, fmt.Errorf("%w: status line %.60q", errProtocol, line)
	}
	if r.status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return r, false, fmt.Errorf("%w: status line %.60q", errProtocol, line)
	}
	r.keepAlive = line[7] == '1' // HTTP/1.0 closes unless told otherwise; we never ask it to
	length, chunked := -1, false
	for len(headers) > 0 {
		var h []byte
		h, headers, _ = bytes.Cut(headers, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return r, false, fmt.Errorf("%w: header %.60q", errProtocol, h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 || length > maxReplyBody {
				return r, false, fmt.Errorf("%w: Content-Length %.20q", errProtocol, value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			r.keepAlive = !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		body, n, complete, err := dechunk(rest)
		if !complete || err != nil {
			return r, false, err
		}
		if len(rest) > n {
			return r, false, fmt.Errorf("%w: %d bytes after the reply", errProtocol, len(rest)-n)
		}
		r.body = body
		return r, true, nil
	case length >= 0:
		if len(rest) < length {
			return r, false, nil
		}
		if len(rest) > length {
			return r, false, fmt.Errorf("%w: %d bytes after the reply", errProtocol, len(rest)-length)
		}
		r.body = rest
		return r, true, nil
	}
	return r, false, fmt.Errorf("%w: a reply without Content-Length or chunked encoding", errProtocol)
}

// dechunk decodes a chunked body from the start of b and returns it with the number of
// bytes it took (trailers included), or complete=false when b ends before it does.
func dechunk(b []byte) (body []byte, n int, complete bool, err error) {
	for {
		i := bytes.Index(b[n:], []byte("\r\n"))
		if i < 0 {
			return nil, 0, false, nil
		}
		size, _, _ := bytes.Cut(b[n:n+i], []byte(";"))
		sz, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 32)
		if err != nil || sz < 0 || len(body)+int(sz) > maxReplyBody {
			return nil, 0, false, fmt.Errorf("%w: chunk size %.20q", errProtocol, b[n:n+i])
		}
		n += i + 2
		if sz == 0 { // trailers, up to a blank line
			for {
				j := bytes.Index(b[n:], []byte("\r\n"))
				if j < 0 {
					return nil, 0, false, nil
				}
				n += j + 2
				if j == 0 {
					return body, n, true, nil
				}
			}
		}
		if len(b) < n+int(sz)+2 {
			return nil, 0, false, nil
		}
		body = append(body, b[n:n+int(sz)]...)
		if b[n+int(sz)] != '\r' || b[n+int(sz)+1] != '\n' {
			return nil, 0, false, fmt.Errorf("%w: no CRLF after a chunk", errProtocol)
		}
		n += int(sz) + 2
	}
}
