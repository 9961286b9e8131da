package load

import (
	"fmt"
	"math"
	"time"
)

// MaxRequests bounds the length of a Schedule, and so the memory and time of one run.
const MaxRequests = 20_000_000

// Schedule is when each request of a run is due, as offsets from the run's start, in
// non-decreasing order.
type Schedule []time.Duration

// Duration is the offset of the last request: how long dispatching the schedule takes.
func (s Schedule) Duration() time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// Constant returns the schedule of rate requests a second, evenly spaced, for d.
func Constant(rate float64, d time.Duration) (Schedule, error) {
	if rate <= 0 || d <= 0 {
		return nil, fmt.Errorf("load: constant schedule: rate %g/s for %s, want both > 0", rate, d)
	}
	n := int(rate * d.Seconds())
	if n > MaxRequests {
		return nil, fmt.Errorf("load: constant schedule: %d requests, more than %d", n, MaxRequests)
	}
	s := make(Schedule, n)
	for i := range s {
		s[i] = time.Duration(float64(i) * 1e9 / rate)
	}
	return s, nil
}

// Ramp returns the shift-change schedule: the rate rises linearly from `from` to `to`
// requests a second over ramp, then holds at `to` for hold. Offsets are the exact solution
// of "i requests are due by offset t", so rounding does not drift.
func Ramp(from, to float64, ramp, hold time.Duration) (Schedule, error) {
	if from <= 0 || to <= 0 || ramp < 0 || hold < 0 || ramp+hold <= 0 {
		return nil, fmt.Errorf("load: ramp schedule: %g/s to %g/s over %s then %s, want rates > 0 and a duration", from, to, ramp, hold)
	}
	r := ramp.Seconds()
	inRamp := (from + to) / 2 * r // requests due during the ramp
	n := int(inRamp + to*hold.Seconds())
	if n > MaxRequests {
		return nil, fmt.Errorf("load: ramp schedule: %d requests, more than %d", n, MaxRequests)
	}
	a := 0.0 // acceleration, requests/s²
	if r > 0 {
		a = (to - from) / r
	}
	s := make(Schedule, n)
	for i := range s {
		x := float64(i)
		var t float64
		switch {
		case x >= inRamp:
			t = r + (x-inRamp)/to
		case math.Abs(a) < 1e-9:
			t = x / from
		default: // from·t + a·t²/2 = x
			t = (-from + math.Sqrt(from*from+2*a*x)) / a
		}
		s[i] = time.Duration(t * 1e9)
	}
	return s, nil
}
