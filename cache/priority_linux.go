package cache

import (
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lowerThreadPriority puts the calling thread in the SCHED_IDLE class: the kernel runs it
// only when no other thread wants its core. It reports whether it did. Any process may
// lower its own threads' priority, so it fails only where sched_setattr is filtered out.
func lowerThreadPriority() bool {
	return setThreadPolicy(unix.SCHED_IDLE) == nil
}

// restoreThreadPriority puts the calling thread back in the normal class.
func restoreThreadPriority() { setThreadPolicy(unix.SCHED_NORMAL) }

func setThreadPolicy(policy uint32) error {
	return unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: policy}, 0)
}

// threadPolicy is the calling thread's scheduling class, for tests.
func threadPolicy() (uint32, error) {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return 0, err
	}
	return a.Policy, nil
}

// threadRunWait is how long the calling thread has waited, in all, on the kernel's run
// queue: ready to run but kept off the CPU (the second field of /proc/thread-self/schedstat).
// It reports false where the kernel does not keep the figure.
func threadRunWait() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/thread-self/schedstat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(ns), true
}
