package cache

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBackground(t *testing.T) {
	// Locked here too, so that the test stays on the thread whose policy it checks after
	// restore unlocks its own (nested) lock.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	procs := runtime.GOMAXPROCS(0)

	restore := background()
	if got := runtime.GOMAXPROCS(0); got != procs+1 {
		t.Errorf("GOMAXPROCS in the background: %d, want %d", got, procs+1)
	}
	if p, err := threadPolicy(); err != nil || p != unix.SCHED_IDLE {
		t.Errorf("thread policy in the background: %d (%v), want SCHED_IDLE (%d)", p, err, unix.SCHED_IDLE)
	}
	restore()
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS after: %d, want %d", got, procs)
	}
	if p, err := threadPolicy(); err != nil || p != unix.SCHED_NORMAL {
		t.Errorf("thread policy after: %d (%v), want SCHED_NORMAL (%d)", p, err, unix.SCHED_NORMAL)
	}
}
