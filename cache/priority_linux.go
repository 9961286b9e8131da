package cache

import "golang.org/x/sys/unix"

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
