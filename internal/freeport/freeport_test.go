package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestPick: ports are below the ephemeral range, distinct, and bindable.
func TestPick(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if p < lowest || p >= low || seen[p] {
			t.Fatalf("got port %d (seen before: %v), want one in [%d, %d) not handed out before", p, seen[p], lowest, low)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		l.Close()
	}
}
