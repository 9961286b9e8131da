//go:build !linux

package load

import "time"

// sleeper sleeps with time.Sleep where there is no timerfd.
type sleeper struct{}

func newSleeper() (*sleeper, error) { return &sleeper{}, nil }

func (s *sleeper) sleep(d time.Duration) error {
	time.Sleep(d)
	return nil
}

func (s *sleeper) close() error { return nil }
