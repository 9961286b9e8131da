//go:build race

package cache

// raceEnabled says that the race detector is on. It makes sync.Pool drop items at random,
// so ristretto's Get (which takes a buffer from a pool) allocates now and then.
const raceEnabled = true
