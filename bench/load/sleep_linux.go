package load

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// sleeper sleeps with microsecond precision. time.Sleep rounds a short sleep up to the
// runtime's netpoll timeout, a millisecond on Linux, when nothing else wakes the process;
// a timerfd registered with the netpoller wakes it when due. Not safe for concurrent use.
type sleeper struct {
	fd  int
	f   *os.File
	buf [8]byte
}

func newSleeper() (*sleeper, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("load: timerfd: %w", err)
	}
	// A non-blocking fd makes the File pollable: Read parks the goroutine, not the thread.
	return &sleeper{fd: fd, f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// sleep returns after d.
func (s *sleeper) sleep(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(s.fd, 0, &spec, nil); err != nil {
		return fmt.Errorf("load: timerfd settime: %w", err)
	}
	if _, err := s.f.Read(s.buf[:]); err != nil {
		return fmt.Errorf("load: timerfd read: %w", err)
	}
	return nil
}

func (s *sleeper) close() error { return s.f.Close() }
