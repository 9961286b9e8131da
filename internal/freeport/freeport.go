// Package freeport hands tests a loopback TCP port to give to a process that binds it
// later (a wxlookup started with WXLOOKUP_LISTEN, a mariadbd restarted on its port).
//
// Asking the kernel for port 0 and closing the listener is not enough: the port returned
// comes from the ephemeral range, and until the process binds it any outgoing connection
// or other listener on port 0 may be given the same port (a wxlookup that waits for its
// first load before it listens leaves it open for tens of milliseconds while parallel tests
// connect to MariaDB). Ports below the ephemeral range are never handed out that way.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// lowest is the lowest port Pick returns: below it, services of the machine may listen.
const lowest = 10000

var (
	mu    sync.Mutex
	given = map[int]bool{} // ports this process handed out already
)

// Pick returns a loopback port below the kernel's ephemeral range that was free a moment
// ago and that this process has not handed out before.
func Pick() (int, error) {
	hi := ephemeralLow()
	if hi <= lowest {
		hi = 32768
	}
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lowest + rand.IntN(hi-lowest)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		given[p] = true
		return p, nil
	}
	return 0, errors.New("freeport: no free loopback port found in 200 tries")
}

// ephemeralLow returns the first port of the kernel's ephemeral range, 32768 when it
// cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
