// Package chaos proves that wxlookup keeps answering through faults and hostile input
// (issue 6): MySQL killed, restarted, slowed or black-holed behind a fault proxy; SIGTERM
// with a new process taking the port; two replicas behind nginx with one killed; secrets
// kept out of logs and pages; a SELECT-only account; bursts from many OpenIDs.
//
// Everything lives in the package's tests. They build the real binary (cmd/wxlookup) into
// a temporary directory, run it as a subprocess on loopback addresses, and drive it with
// signed WeChat requests from bounded load loops. Each fault test logs one line per run in
// the form
//
//	FIGURES <test>: sent=N failed=N p50=… p99=… max=… (…)
//
// which docs/OPERATIONS.md quotes. `make test` runs them short; `make chaos` runs them
// longer (CHAOS_LONG=1), without the race detector, for the recorded figures.
package chaos
