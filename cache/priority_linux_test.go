package cache

import (
	"runtime"
	"sync"
	"testing"
	"time"

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

// TestBackgroundOverlapping checks that GOMAXPROCS is raised once and put back by the last
// of two overlapping callers, whichever order they leave in.
func TestBackgroundOverlapping(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	enter := func() (leave chan struct{}, left chan struct{}) {
		leave, left, entered := make(chan struct{}), make(chan struct{}), make(chan struct{})
		go func() {
			restore := background()
			close(entered)
			<-leave
			restore()
			close(left)
		}()
		<-entered
		return leave, left
	}
	leaveA, leftA := enter()
	leaveB, leftB := enter()
	if got := runtime.GOMAXPROCS(0); got != procs+1 {
		t.Errorf("GOMAXPROCS with two in the background: %d, want %d (raised once)", got, procs+1)
	}
	close(leaveA)
	<-leftA
	if got := runtime.GOMAXPROCS(0); got != procs+1 {
		t.Errorf("GOMAXPROCS after the first left: %d, want %d until the last leaves", got, procs+1)
	}
	close(leaveB)
	<-leftB
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS after both left: %d, want %d", got, procs)
	}
}

// TestThreadRunWaitSeesStarvation checks the figure the pacer's starvation guard reads: a
// thread at idle priority, runnable while every core spins at normal priority, waits on the
// run queue, and threadRunWait says so.
func TestThreadRunWaitSeesStarvation(t *testing.T) {
	restore := background()
	defer restore()
	before, ok := threadRunWait()
	if !ok {
		t.Fatal("threadRunWait: /proc/thread-self/schedstat unreadable on Linux")
	}
	const spin = 300 * time.Millisecond
	deadline := time.Now().Add(spin)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() { // each on a thread of its own, at normal priority
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for time.Now().Before(deadline) {
			}
		}()
	}
	for time.Now().Before(deadline) { // runnable all along, at idle priority
	}
	wg.Wait()
	after, _ := threadRunWait()
	if waited := after - before; waited < spin/10 {
		t.Errorf("an idle-priority thread against %d spinning ones waited %v on the run queue in %v, want at least %v", runtime.NumCPU(), waited, spin, spin/10)
	}
}
