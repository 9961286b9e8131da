package main

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// allowed returns the CPUs this process may run on.
func allowed(t *testing.T) []int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

func TestPlanPin(t *testing.T) {
	cpus := allowed(t)
	if _, err := planPin(len(cpus)); err == nil {
		t.Errorf("planPin(%d) on %d CPUs: want an error, nothing would be left for the servers", len(cpus), len(cpus))
	}
	if _, err := planPin(0); err == nil {
		t.Error("planPin(0): want an error")
	}
	if len(cpus) < 2 {
		t.Fatalf("this test needs 2 CPUs to split, the process may use %v", cpus)
	}
	p, err := planPin(1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.gen, cpus[len(cpus)-1:]) || !slices.Equal(p.servers, cpus[:len(cpus)-1]) || !p.on() {
		t.Errorf("planPin(1) on %v = %+v, want the last CPU for the generator and the rest for the servers", cpus, p)
	}
	if (cpuSplit{}).on() {
		t.Error("the zero cpuSplit says it is pinned")
	}
}

func TestPinSelfBindsEveryThread(t *testing.T) {
	cpus := allowed(t)
	if len(cpus) < 2 {
		t.Fatalf("this test needs 2 CPUs, the process may use %v", cpus)
	}
	defer func() {
		if err := pinSelf(cpus); err != nil {
			t.Fatalf("restore affinity: %v", err)
		}
	}()
	last := cpus[len(cpus)-1:]
	if err := pinSelf(last); err != nil {
		t.Fatal(err)
	}
	// A thread started after pinning inherits the mask.
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		<-done
	}()
	defer close(done)
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("list threads: %v (%d)", err, len(tasks))
	}
	want := cpuList(last)
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) != want {
				t.Errorf("%s: Cpus_allowed_list %q, want %q", f, strings.TrimSpace(v), want)
			}
		}
	}
}

func TestPinnedCommand(t *testing.T) {
	cmd, err := pinnedCommand(nil, "/bin/true", "-x")
	if err != nil || !slices.Equal(cmd.Args, []string{"/bin/true", "-x"}) {
		t.Errorf("unpinned: %v, %v", cmd.Args, err)
	}
	cmd, err = pinnedCommand([]int{0, 2}, "/bin/true", "-x")
	if err != nil {
		t.Fatal(err)
	}
	if got := cmd.Args[1:]; !slices.Equal(got, []string{"-c", "0,2", "/bin/true", "-x"}) || filepath.Base(cmd.Path) != "taskset" {
		t.Errorf("pinned: %s %v, want taskset -c 0,2 /bin/true -x", cmd.Path, got)
	}
}
