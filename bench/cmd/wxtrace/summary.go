package main

import (
	"slices"
	"time"
)

// The loader's share of a core, in percent, below which a window counts as quiet and at
// or above which it counts as busy in the summary's comparison.
const (
	quietLoader = 3
	busyLoader  = 15
)

// summary compares the webhook's scheduling delay while the loader was quiet and while it
// was busy, and counts the windows it left out.
type summary struct {
	quiet, busy group
	gc          int // windows left out for GC marking or assists
	between     int // for the loader's share between quiet and busy
	unscheduled int // for no webhook goroutine scheduled
}

// group is the webhook's p99 scheduling delay over a set of windows.
type group struct {
	windows     int
	median, p90 time.Duration
}

// summarise compares the windows in which the loader ran under quietLoader % of a core
// with those in which it ran busyLoader % or more. It leaves out windows in which the
// collector marked or assisted, whose delay has another cause, and windows in which no
// webhook goroutine was scheduled.
func summarise(res *result) summary {
	var s summary
	var quiet, busy []time.Duration
	for _, w := range res.windows {
		if w.marking || w.assist > 0 {
			s.gc++
			continue
		}
		if w.delay.n == 0 {
			s.unscheduled++
			continue
		}
		switch share := w.percent(w.cpu[classLoader]); {
		case share < quietLoader:
			quiet = append(quiet, w.delay.p99)
		case share >= busyLoader:
			busy = append(busy, w.delay.p99)
		default:
			s.between++
		}
	}
	s.quiet, s.busy = groupOf(quiet), groupOf(busy)
	return s
}

func groupOf(p99s []time.Duration) group {
	if len(p99s) == 0 {
		return group{}
	}
	slices.Sort(p99s)
	return group{windows: len(p99s), median: percentile(p99s, 50), p90: percentile(p99s, 90)}
}
