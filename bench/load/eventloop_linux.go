package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// errClosed is a connection the server closed before its reply was complete.
var errClosed = errors.New("load: connection closed by the server")

// eventLoops runs Loops event loops (threads), each sending every Loops-th request
// on its own share of the connections.
func (g *run) eventLoops(ctx context.Context) error {
	cfg := g.cfg
	sa, family, err := sockaddr(cfg.Addr)
	if err != nil {
		return err
	}
	loops := make([]*eventLoop, cfg.Loops)
	defer func() {
		for _, l := range loops {
			if l != nil {
				l.close()
			}
		}
	}()
	for k := range loops {
		conns := cfg.Conns / cfg.Loops
		if k < cfg.Conns%cfg.Loops {
			conns++
		}
		if loops[k], err = newEventLoop(g, k, conns, sa, family); err != nil {
			return err
		}
	}
	g.start = time.Now().Add(10 * time.Millisecond)
	g.r.Start = g.start
	stopProgress := g.progress()
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Go(func() { l.run(ctx) })
	}
	wg.Wait()
	stopProgress()
	return nil
}

// econn is a connection of an event loop. req is the request in flight, or -1.
type econn struct {
	fd        int
	req       int
	due, sent time.Time
	buf       []byte
}

// eventLoop sends requests first, first+step, first+2·step, … of the schedule. Its
// connections are non-blocking sockets in an epoll set, with a timerfd for the next due
// request or timeout. All its state is its own: loops share only the Result slots, each
// written by one loop, and the run's counters.
type eventLoop struct {
	g           *run
	first, step int
	sa          unix.Sockaddr
	family      int
	ep, tfd     int
	conns       []econn
	idle        fifo // conns with no request in flight, least recently used first
	events      []unix.EpollEvent
}

// fifo is a queue of connection indexes. Taking the least recently used connection keeps
// every connection busy in turn, as a proxy's pool of upstream connections is, rather
// than a few hot ones while the rest sit idle (and time out on the server's side).
type fifo struct {
	buf        []int
	head, size int
}

func (q *fifo) len() int { return q.size }

func (q *fifo) push(i int) {
	q.buf[(q.head+q.size)%len(q.buf)] = i
	q.size++
}

func (q *fifo) pop() int {
	i := q.buf[q.head]
	q.head = (q.head + 1) % len(q.buf)
	q.size--
	return i
}

// timerTag marks the timerfd's epoll events; connections carry their index.
const timerTag = -1

func newEventLoop(g *run, k, conns int, sa unix.Sockaddr, family int) (*eventLoop, error) {
	l := &eventLoop{g: g, first: k, step: g.cfg.Loops, sa: sa, family: family, ep: -1, tfd: -1}
	var err error
	if l.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return l, fmt.Errorf("load: epoll: %w", err)
	}
	if l.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		return l, fmt.Errorf("load: timerfd: %w", err)
	}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, l.tfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: timerTag}); err != nil {
		return l, fmt.Errorf("load: epoll add timerfd: %w", err)
	}
	l.conns = make([]econn, conns)
	l.idle.buf = make([]int, conns)
	l.events = make([]unix.EpollEvent, conns+1)
	for i := range l.conns {
		l.conns[i] = econn{fd: -1, req: -1, buf: make([]byte, 0, 4<<10)}
		if err := l.connect(i); err != nil {
			return l, fmt.Errorf("load: connect to %s: %w", g.cfg.Addr, err)
		}
		l.idle.push(i)
	}
	return l, nil
}

func (l *eventLoop) close() {
	for i := range l.conns {
		l.drop(i)
	}
	if l.tfd >= 0 {
		unix.Close(l.tfd)
	}
	if l.ep >= 0 {
		unix.Close(l.ep)
	}
}

// connect opens connection i: a TCP socket with TCP_NODELAY, connected (waiting at most
// five seconds), then non-blocking in the epoll set.
func (l *eventLoop) connect(i int) error {
	fd, err := unix.Socket(l.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	err = unix.Connect(fd, l.sa)
	if errors.Is(err, unix.EINPROGRESS) || errors.Is(err, unix.EINTR) {
		err = waitConnected(fd)
	}
	if err != nil {
		unix.Close(fd)
		return err
	}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
		unix.Close(fd)
		return err
	}
	l.conns[i].fd = fd
	return nil
}

func waitConnected(fd int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return errors.New("connect timed out")
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			break
		}
	}
	if e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
		return err
	} else if e != 0 {
		return unix.Errno(e)
	}
	return nil
}

// drop closes connection i (closing removes it from the epoll set).
func (l *eventLoop) drop(i int) {
	if c := &l.conns[i]; c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func (l *eventLoop) run(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g, cfg := l.g, l.g.cfg
	sched, timeout := cfg.Schedule, cfg.Timeout
	hard := g.deadline()
	next, busy := l.first, 0
	var armed time.Time // when the timerfd will fire; zero when it is not armed
	for {
		now := time.Now()
		if ctx.Err() != nil || !now.Before(hard) {
			break
		}
		// Time out what has waited too long for its reply.
		earliest := hard
		if busy > 0 {
			for i := range l.conns {
				c := &l.conns[i]
				if c.req < 0 {
					continue
				}
				if dl := c.due.Add(timeout); !now.Before(dl) {
					g.finish(c.req, now.Sub(c.due), c.sent.Sub(c.due), Timeout, errors.New("no reply in time"))
					c.req = -1
					busy--
					l.drop(i)
					l.idle.push(i)
				} else if dl.Before(earliest) {
					earliest = dl
				}
			}
		}
		// Send what is due, while a connection is free.
		for next < len(sched) && l.idle.len() > 0 {
			due := g.start.Add(sched[next])
			if due.After(now) {
				break
			}
			if now.Sub(due) >= timeout { // waited for a free connection past the timeout
				g.finish(next, now.Sub(due), -1, Timeout, errors.New("no free connection in time"))
				next += l.step
				continue
			}
			i := l.idle.pop()
			if l.conns[i].fd < 0 {
				if err := l.connect(i); err != nil {
					g.finish(next, time.Since(due), -1, ConnError, err)
					l.idle.push(i)
					next += l.step
					continue
				}
			}
			c := &l.conns[i]
			req := cfg.Request(next)
			c.sent = time.Now()
			if err := writeAll(c.fd, req); err != nil {
				g.finish(next, time.Since(due), c.sent.Sub(due), ConnError, err)
				l.drop(i)
				l.idle.push(i)
				next += l.step
				continue
			}
			c.req, c.due, c.buf = next, due, c.buf[:0]
			busy++
			next += l.step
			if dl := due.Add(timeout); dl.Before(earliest) {
				earliest = dl
			}
		}
		if next >= len(sched) && busy == 0 {
			break
		}
		// Sleep until a reply, the next due request (if a connection is free) or a timeout.
		wake := earliest
		if next < len(sched) && l.idle.len() > 0 {
			if due := g.start.Add(sched[next]); due.Before(wake) {
				wake = due
			}
		}
		wait := 0 // epoll_wait timeout: 0 polls, -1 blocks until an event (the timer's)
		if d := time.Until(wake); d > 0 {
			wait = -1
			if armed.IsZero() || wake.Before(armed) {
				spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
				if err := unix.TimerfdSettime(l.tfd, 0, &spec, nil); err != nil {
					wait = int(d/time.Millisecond) + 1
				} else {
					armed = wake
				}
			}
		}
		n, err := unix.EpollWait(l.ep, l.events, wait)
		if err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
		for _, ev := range l.events[:max(n, 0)] {
			if ev.Fd == timerTag {
				var b [8]byte
				unix.Read(l.tfd, b[:])
				armed = time.Time{}
				continue
			}
			if l.readable(int(ev.Fd)) {
				busy--
			}
		}
	}
	// Whatever is left: in flight, or never sent.
	end := time.Now()
	for i := range l.conns {
		if c := &l.conns[i]; c.req >= 0 {
			g.finish(c.req, end.Sub(c.due), c.sent.Sub(c.due), Timeout, errors.New("run ended"))
			c.req = -1
		}
	}
	for ; next < len(sched); next += l.step {
		g.finish(next, max(end.Sub(g.start.Add(sched[next])), 0), -1, Unsent, nil)
	}
}

// readable reads what connection i has and reports whether its request finished.
func (l *eventLoop) readable(i int) (finished bool) {
	g, c := l.g, &l.conns[i]
	if c.fd < 0 {
		return false
	}
	for {
		if cap(c.buf)-len(c.buf) < 1024 {
			c.buf = append(c.buf[:cap(c.buf)], make([]byte, cap(c.buf))...)[:len(c.buf)]
		}
		n, err := unix.Read(c.fd, c.buf[len(c.buf):cap(c.buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return false
		}
		if err != nil || n == 0 {
			if err == nil {
				err = errClosed
			}
			l.drop(i)
			if c.req < 0 { // the server closed an idle connection: reconnect when next used
				return false
			}
			g.finish(c.req, time.Since(c.due), c.sent.Sub(c.due), ConnError, err)
			c.req = -1
			l.idle.push(i)
			return true
		}
		c.buf = c.buf[:len(c.buf)+n]
		if c.req < 0 { // bytes nobody asked for
			l.drop(i)
			return false
		}
		rep, complete, perr := parseReply(c.buf)
		if perr == nil && !complete {
			if len(c.buf) > 2*maxReplyBody {
				perr = fmt.Errorf("%w: reply over %d bytes", errProtocol, len(c.buf))
			} else {
				continue // read on: more may be there; EAGAIN ends the turn
			}
		}
		end := time.Now()
		lat, lag := end.Sub(c.due), c.sent.Sub(c.due)
		if perr != nil {
			g.finish(c.req, lat, lag, ConnError, perr)
			l.drop(i)
		} else {
			g.judge(c.req, lat, lag, rep)
			if !rep.keepAlive {
				l.drop(i)
			}
		}
		c.req = -1
		l.idle.push(i)
		return true
	}
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n < len(b) { // a loopback socket takes a whole small request; more would block
			return fmt.Errorf("short write: %d of %d bytes", n, len(b))
		}
		b = b[n:]
	}
	return nil
}

// sockaddr resolves a loopback host:port.
func sockaddr(addr string) (unix.Sockaddr, int, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, 0, fmt.Errorf("load: %w", err)
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: ta.Port}
		copy(sa.Addr[:], ip4)
		return sa, unix.AF_INET, nil
	}
	sa := &unix.SockaddrInet6{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To16())
	return sa, unix.AF_INET6, nil
}
