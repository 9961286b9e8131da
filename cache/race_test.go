//go:build race

package cache

// raceEnabled says the race detector is on: sync.Pool then drops items at random, so
// allocation counts of pooled paths are not exact.
const raceEnabled = true
