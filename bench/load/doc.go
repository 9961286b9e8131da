// Package load is an open-loop HTTP/1.1 load generator for the benchmark harness.
//
// Requests are dispatched on a fixed Schedule whatever the replies do, and every latency is
// measured from the request's scheduled time, not from when it could finally be sent. A
// server that stalls therefore cannot hide its stall by slowing the generator down (the
// "coordinated omission" of closed-loop tools): the requests that queued behind the stall
// carry it in their latency. Each request goes out on a free keep-alive connection; when
// every connection has a request in flight, a due request waits for the next free one, its
// clock already running.
//
// The generator is built to cost little CPU, since on a small machine it shares the cores
// with the server it measures: requests are pre-built byte strings, the client speaks just
// enough HTTP/1.1 to read a reply, results go into per-request slots without locks, and
// each event loop is one thread with non-blocking sockets in an epoll set and a timerfd for
// the next due request, like wrk2: two system calls a request and no scheduler hand-offs.
// That needs Linux: elsewhere Run returns an error.
package load
