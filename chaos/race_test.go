//go:build race

package chaos

// raceEnabled: the service binary is built with -race too, so the race detector watches
// the service through the faults.
const raceEnabled = true
