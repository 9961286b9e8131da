//go:build !linux

package cache

import "time"

// Elsewhere than Linux the rebuild's thread keeps its priority; the pacer alone leaves CPU
// to the webhook.
func lowerThreadPriority() bool { return false }

func restoreThreadPriority() {}

func threadRunWait() (time.Duration, bool) { return 0, false }
