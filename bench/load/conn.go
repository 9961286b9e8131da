package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
)

// maxReplyBody bounds a reply body; WeChat replies are at most a few KiB.
const maxReplyBody = 1 << 20

// errProtocol marks a reply that is not HTTP/1.1 as this client reads it.
var errProtocol = errors.New("load: malformed HTTP reply")

// conn is one keep-alive HTTP/1.1 client connection that sends pre-built requests. It
// reads just enough of a reply to find its status and body: the status line, the
// Content-Length, Transfer-Encoding and Connection headers. Not safe for concurrent use.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader
	body []byte
}

func newConn(nc net.Conn) *conn {
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10), body: make([]byte, 0, 4<<10)}
}

// roundTrip writes req and reads the reply. body is valid until the next call. keepAlive
// is false when the server said it will close the connection.
func (c *conn) roundTrip(req []byte) (status int, body []byte, keepAlive bool, err error) {
	if _, err = c.nc.Write(req); err != nil {
		return 0, nil, false, err
	}
	line, err := c.line()
	if err != nil {
		return 0, nil, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, nil, false, fmt.Errorf("%w: status line %q", errProtocol, line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("%w: status line %q", errProtocol, line)
	}
	keepAlive = line[7] == '1' // HTTP/1.0 closes unless told otherwise; we never ask it to
	length, chunked := -1, false
	for {
		h, err := c.line()
		if err != nil {
			return status, nil, false, err
		}
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return status, nil, false, fmt.Errorf("%w: header %q", errProtocol, h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 || length > maxReplyBody {
				return status, nil, false, fmt.Errorf("%w: Content-Length %q", errProtocol, value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keepAlive = !bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		body, err = c.chunked()
	case length >= 0:
		body, err = c.fixed(length)
	default: // no length: the body runs to the end of the connection
		c.body, err = io.ReadAll(io.LimitReader(c.br, maxReplyBody))
		body, keepAlive = c.body, false
	}
	return status, body, keepAlive, err
}

// line reads one CRLF-terminated line without its terminator. It is valid until the next read.
func (c *conn) line() ([]byte, error) {
	l, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: header line longer than %d bytes", errProtocol, c.br.Size())
		}
		return nil, err
	}
	return bytes.TrimRight(l, "\r\n"), nil
}

func (c *conn) fixed(n int) ([]byte, error) {
	if cap(c.body) < n {
		c.body = make([]byte, n)
	}
	c.body = c.body[:n]
	_, err := io.ReadFull(c.br, c.body)
	return c.body, err
}

func (c *conn) chunked() ([]byte, error) {
	c.body = c.body[:0]
	for {
		l, err := c.line()
		if err != nil {
			return nil, err
		}
		size, _, _ := bytes.Cut(l, []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 32)
		if err != nil || n < 0 || len(c.body)+int(n) > maxReplyBody {
			return nil, fmt.Errorf("%w: chunk size %q", errProtocol, l)
		}
		if n == 0 {
			for { // trailers, up to the blank line
				if l, err = c.line(); err != nil || len(l) == 0 {
					return c.body, err
				}
			}
		}
		start := len(c.body)
		c.body = slices.Grow(c.body, int(n))[:start+int(n)]
		if _, err := io.ReadFull(c.br, c.body[start:]); err != nil {
			return nil, err
		}
		if l, err = c.line(); err != nil || len(l) != 0 {
			return nil, fmt.Errorf("%w: no CRLF after a chunk", errProtocol)
		}
	}
}

func (c *conn) close() error { return c.nc.Close() }
