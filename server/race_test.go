//go:build race

package server

// raceEnabled says the race detector is on: its instrumentation and sync.Pool's random drops
// make allocation counts inexact.
const raceEnabled = true
