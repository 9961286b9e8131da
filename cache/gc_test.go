package cache

import (
	"runtime/debug"
	"testing"
)

func TestDeferGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(80))
	restore := deferGC()
	if got := debug.SetGCPercent(240); got != 80*rebuildGCFactor {
		t.Errorf("GOGC during a rebuild: %d, want %d", got, 80*rebuildGCFactor)
	}
	restore()
	if got := debug.SetGCPercent(80); got != 80 {
		t.Errorf("GOGC after a rebuild: %d, want 80 restored", got)
	}

	debug.SetGCPercent(-1) // GOGC=off
	deferGC()()
	if got := debug.SetGCPercent(-1); got >= 0 {
		t.Errorf("GOGC=off became %d across a rebuild, want it left off", got)
	}
}
