package cache

import (
	"os"
	"runtime"
	"sync"
)

// background runs the calling goroutine at the operating system's idle priority until the
// returned function is called, for a rebuild that must not take CPU from the webhook (a
// Reload, a reconcile scan). It locks the goroutine to its thread, lowers that thread's
// scheduling policy (SCHED_IDLE on Linux; elsewhere the thread is left as it is), and
// raises GOMAXPROCS by one.
//
// Why: at 20,000 req/s on two cores the webhook, the load generator and MySQL keep the
// cores about 80 % busy, so any CPU a rebuild takes comes out of a time slice someone else
// needed. An execution trace showed the webhook's goroutines held off their thread for
// the kernel's whole 3–4 ms slice while the rebuild ran, whatever the pacer did between
// its slices. A thread at idle priority runs only on a core that would otherwise be idle.
//
// Why the extra P: a Go thread holds its P (the right to run Go code) while the kernel
// keeps it waiting, so a rebuild starved of CPU would also starve the webhook of that P.
// With one more P the webhook keeps as many as it had.
//
// On a machine whose cores are all busy, a thread at idle priority would barely run, and
// the refresh waits for a rebuild. The pacer therefore puts the thread back to normal
// priority once it finds the rebuild starved (paceStarvedSlice, paceStarvedTotal), and then
// spaces the work out on its own.
//
// The restore undoes all three, and it must run on the same goroutine. Callers may overlap
// (two caches in one process, as in tests): the first raises GOMAXPROCS and the last to
// leave puts it back.
func background() (restore func()) {
	bgProcs.Lock()
	if bgProcs.n == 0 {
		bgProcs.procs = runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(bgProcs.procs + 1)
	}
	bgProcs.n++
	bgProcs.Unlock()
	runtime.LockOSThread()
	lowered := lowerThreadPriority()
	return func() {
		if lowered {
			restoreThreadPriority()
		}
		runtime.UnlockOSThread()
		bgProcs.Lock()
		defer bgProcs.Unlock()
		if bgProcs.n--; bgProcs.n > 0 {
			return
		}
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.SetDefaultGOMAXPROCS() // and keep following the CPU quota, as Go does by default
		} else {
			runtime.GOMAXPROCS(bgProcs.procs)
		}
	}
}

// bgProcs counts the goroutines in background and keeps GOMAXPROCS from before the first.
var bgProcs struct {
	sync.Mutex
	n     int
	procs int
}
