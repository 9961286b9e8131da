package load

import (
	"math"
	"testing"
	"time"
)

func TestConstant(t *testing.T) {
	s, err := Constant(1000, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(s), 2000; got != want {
		t.Fatalf("got %d requests, want %d", got, want)
	}
	for i, at := range s {
		if want := time.Duration(i) * time.Millisecond; at != want {
			t.Fatalf("request %d due at %s, want %s", i, at, want)
		}
	}
	if _, err := Constant(0, time.Second); err == nil {
		t.Fatalf("Constant(0, 1s) succeeded, want an error")
	}
	if _, err := Constant(1e9, time.Minute); err == nil {
		t.Fatalf("Constant(1e9/s, 1m) succeeded, want an error: more than MaxRequests")
	}
}

func TestRamp(t *testing.T) {
	tests := []struct {
		name       string
		from, to   float64
		ramp, hold time.Duration
		want       int
	}{
		{"burst", 1000, 20000, 5 * time.Second, 30 * time.Second, 52500 + 600000},
		{"flat", 500, 500, time.Second, time.Second, 1000},
		{"down", 2000, 1000, time.Second, 0, 1500},
		{"no ramp", 10, 100, 0, time.Second, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Ramp(tt.from, tt.to, tt.ramp, tt.hold)
			if err != nil {
				t.Fatal(err)
			}
			if len(s) != tt.want {
				t.Fatalf("got %d requests, want %d", len(s), tt.want)
			}
			for i := 1; i < len(s); i++ {
				if s[i] < s[i-1] {
					t.Fatalf("request %d due at %s before request %d at %s", i, s[i], i-1, s[i-1])
				}
			}
			if end := tt.ramp + tt.hold; s.Duration() > end || s.Duration() < end-time.Duration(2e9/tt.to) {
				t.Fatalf("last request due at %s, want just before %s", s.Duration(), end)
			}
			// The rate at the start and at the end: the inverse of the spacing.
			if tt.ramp > 0 {
				if got := 1e9 / float64(s[1]-s[0]); math.Abs(got-tt.from)/tt.from > 0.01 {
					t.Fatalf("starting rate %.0f/s, want %.0f/s", got, tt.from)
				}
			}
			n := len(s)
			if got := 1e9 / float64(s[n-1]-s[n-2]); math.Abs(got-tt.to)/tt.to > 0.01 {
				t.Fatalf("final rate %.0f/s, want %.0f/s", got, tt.to)
			}
		})
	}
}

func TestDueBy(t *testing.T) {
	s := Schedule{0, 10, 10, 20}
	for _, tt := range []struct {
		at   time.Duration
		want int
	}{{-1, 0}, {0, 1}, {9, 1}, {10, 3}, {20, 4}, {100, 4}} {
		if got := dueBy(s, tt.at); got != tt.want {
			t.Errorf("dueBy(%d) = %d, want %d", tt.at, got, tt.want)
		}
	}
}
