package cache

import (
	"os"
	"runtime"
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
// The restore undoes all three, and it must run on the same goroutine. Only one caller may
// be in background at a time; the loader's srcMu sees to that.
func background() (restore func()) {
	procs := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(procs + 1)
	runtime.LockOSThread()
	lowered := lowerThreadPriority()
	return func() {
		if lowered {
			restoreThreadPriority()
		}
		runtime.UnlockOSThread()
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.SetDefaultGOMAXPROCS() // and keep following the CPU quota, as Go does by default
		} else {
			runtime.GOMAXPROCS(procs)
		}
	}
}
