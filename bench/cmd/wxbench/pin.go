package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuSplit is how -pin divides the machine's CPUs: the generator gets gen, the servers
// the rest. Zero values mean nothing is pinned.
type cpuSplit struct {
	gen     []int
	servers []int
}

func (c cpuSplit) on() bool { return len(c.gen) > 0 }

// planPin gives the generator the last n CPUs the harness may run on and the servers the
// others; it fails when that would leave the servers none.
func planPin(n int) (cpuSplit, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return cpuSplit{}, fmt.Errorf("read CPU affinity: %w", err)
	}
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if n < 1 || n >= len(cpus) {
		return cpuSplit{}, fmt.Errorf("-pin %d: need at least one CPU left for the servers of the %d this process may use", n, len(cpus))
	}
	return cpuSplit{gen: cpus[len(cpus)-n:], servers: cpus[:len(cpus)-n]}, nil
}

// pinSelf binds every thread of this process to cpus. Threads the Go runtime starts later
// are cloned from pinned ones and inherit the mask; the loop repeats until a pass finds no
// thread it had not seen, so one started during a pass is not missed.
func pinSelf(cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	done := map[int]bool{}
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pin thread %d: %w", tid, err)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			return nil
		}
		runtime.Gosched()
	}
}

// pinnedCommand returns a command that runs bin on cpus (through taskset, so the mask is
// in place before the program's first instruction), or on any CPU when cpus is empty.
func pinnedCommand(cpus []int, bin string, args ...string) (*exec.Cmd, error) {
	if len(cpus) == 0 {
		return exec.Command(bin, args...), nil
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("-pin needs taskset (Debian package util-linux): %w", err)
	}
	return exec.Command(ts, append([]string{"-c", cpuList(cpus), bin}, args...)...), nil
}

// cpuList writes cpus as taskset reads them: "0,1".
func cpuList(cpus []int) string {
	list := make([]string, len(cpus))
	for i, c := range cpus {
		list[i] = strconv.Itoa(c)
	}
	return strings.Join(list, ",")
}
