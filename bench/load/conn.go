package load

import (
	"errors"
	"fmt"
	"io"
	"net"
)

// maxReplyBody bounds a reply body; WeChat replies are at most a few KiB.
const maxReplyBody = 1 << 20

// errProtocol marks a reply that is not HTTP/1.1 as this client reads it.
var errProtocol = errors.New("load: malformed HTTP reply")

// errClosed is a connection the server closed before its reply was complete.
var errClosed = errors.New("load: connection closed by the server")

// conn is one keep-alive HTTP/1.1 client connection of the goroutine engine: it writes a
// pre-built request and reads until parseReply has a whole reply. Not safe for concurrent
// use.
type conn struct {
	nc  net.Conn
	buf []byte
}

func newConn(nc net.Conn) *conn { return &conn{nc: nc, buf: make([]byte, 0, 4<<10)} }

// roundTrip writes req and reads the reply, whose body is valid until the next call.
func (c *conn) roundTrip(req []byte) (reply, error) {
	if _, err := c.nc.Write(req); err != nil {
		return reply{}, err
	}
	c.buf = c.buf[:0]
	for {
		if cap(c.buf)-len(c.buf) < 1024 {
			if cap(c.buf) > 2*maxReplyBody {
				return reply{}, fmt.Errorf("%w: reply over %d bytes", errProtocol, cap(c.buf))
			}
			c.buf = append(c.buf[:cap(c.buf)], make([]byte, cap(c.buf))...)[:len(c.buf)]
		}
		n, err := c.nc.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+n]
		if n > 0 {
			r, complete, perr := parseReply(c.buf)
			if perr != nil {
				return reply{}, perr
			}
			if complete {
				return r, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return reply{}, errClosed
		}
		if err != nil {
			return reply{}, err
		}
	}
}

func (c *conn) close() error { return c.nc.Close() }
