//go:build !linux

package cache

// Elsewhere than Linux the rebuild's thread keeps its priority; the pacer alone leaves CPU
// to the webhook.
func lowerThreadPriority() bool { return false }

func restoreThreadPriority() {}
