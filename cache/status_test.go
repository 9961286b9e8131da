package cache

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestStatus(t *testing.T) {
	clock := newTestClock()
	src := newFakeSource(10)
	c := newTestCache(t, src, Config{Now: clock.Now, MaxBytes: 1 << 20})
	if st := c.Status(); st.Ready || st.Complete || st.Entries != 0 || st.Staleness != 0 {
		t.Errorf("before Start: %+v", st)
	}
	startReady(t, c)
	start := clock.Now()
	clock.Advance(5 * time.Second)
	st := c.Status()
	want := Status{Source: "fake source", Mode: "poll", Ready: true, Complete: true, Entries: 10, MaxBytes: 1 << 20,
		RowsLoaded: 10, LastSuccess: start, LastAttempt: start, Staleness: 5 * time.Second, LastReload: start, Ranges: 1}
	got := st
	got.CostBytes, got.ReloadDuration, got.RecentErrors = 0, 0, nil
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if st.CostBytes <= 10*entryOverhead || st.ReloadDuration <= 0 {
		t.Errorf("cost %d, reload took %v", st.CostBytes, st.ReloadDuration)
	}
}

func TestStatusRecentErrors(t *testing.T) {
	src := newFakeSource(10)
	c := newTestCache(t, src, Config{})
	startReady(t, c)
	for i := range 12 {
		src.fail(nil, fmt.Errorf("failure %d", i), nil, nil)
		if err := c.runStep(false); err == nil {
			t.Fatal("refresh succeeded")
		}
	}
	st := c.Status()
	if st.Errors != 12 || len(st.RecentErrors) != recentErrors {
		t.Fatalf("errors %d, recent %d; want 12 and %d", st.Errors, len(st.RecentErrors), recentErrors)
	}
	for i, ev := range st.RecentErrors { // newest first
		if want := fmt.Sprintf("failure %d", 11-i); !strings.Contains(ev.Err, want) || ev.Step != "refresh" {
			t.Errorf("RecentErrors[%d] = %+v, want %q", i, ev, want)
		}
	}
}

// TestStatusSourceWithoutStringer names the source by its type.
func TestStatusSourceWithoutStringer(t *testing.T) {
	f := newFakeSource(0)
	c := newTestCache(t, struct {
		Source
		Poller
	}{f, f}, Config{})
	if got, want := c.Status().Source, "struct { cache.Source; cache.Poller }"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
