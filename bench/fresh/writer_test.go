package fresh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a Store that records the changes and fails those of the keys in fail.
type recorder struct {
	mu      sync.Mutex
	applied []string
	fail    map[string]bool
}

func (r *recorder) Apply(_ context.Context, op Op, key, value string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail[key] {
		return errors.New("refused")
	}
	r.applied = append(r.applied, fmt.Sprintf("%s %s %s", op, key, value))
	return nil
}

func TestWriter(t *testing.T) {
	keys := []Key{{Name: "A-FRESH-00"}, {Name: "H-FRESH-01", Churn: true}, {Name: "O-FRESH-02", Churn: true}}
	background := func(n int64) (string, string) { return fmt.Sprintf("BG-%d", n), "v" }
	tests := []struct {
		name       string
		background func(int64) (string, string)
		fail       map[string]bool
		// Nothing is ever seen, so each probe key is changed once and then waits: the
		// other ticks are background updates, or skipped without Background.
		want                                      []string // the first changes applied, in order
		probe, bg, failed, skipped, writeFailures int
	}{
		{name: "probe keys once each, then background", background: background,
			want:  []string{"update A-FRESH-00 FRESH#1#", "delete H-FRESH-01 ", "delete O-FRESH-02 ", "update BG-1 v"},
			probe: 3, bg: 97},
		{name: "no background", want: []string{"update A-FRESH-00 FRESH#1#"}, probe: 3, skipped: 97},
		{name: "failures", background: background, fail: map[string]bool{"H-FRESH-01": true, "BG-1": true},
			want: []string{"update A-FRESH-00 FRESH#1#", "delete O-FRESH-02 ", "update BG-2 v"}, probe: 2, bg: 96, failed: 1, writeFailures: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(keys)
			st := &recorder{fail: tt.fail}
			// One connection, so the changes are applied in the order of their ticks.
			w := &Writer{Store: st, Tracker: tr, Rate: 2000, Conns: 1, Background: tt.background}
			stats, err := w.Run(context.Background(), 50*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if stats.Probe != tt.probe || stats.Background != tt.bg || stats.Failed != tt.failed || stats.Skipped != tt.skipped {
				t.Errorf("probe %d, background %d, failed %d, skipped %d; want %d, %d, %d, %d",
					stats.Probe, stats.Background, stats.Failed, stats.Skipped, tt.probe, tt.bg, tt.failed, tt.skipped)
			}
			if tt.failed > 0 && !strings.Contains(stats.Error, "BG-1: ") && !strings.Contains(stats.Error, "refused") {
				t.Errorf("Error = %q, want the failure of BG-1", stats.Error)
			}
			if len(st.applied) < len(tt.want) {
				t.Fatalf("applied %q, want it to start with %q", st.applied, tt.want)
			}
			for i, w := range tt.want {
				if st.applied[i] != w {
					t.Errorf("change %d = %q, want %q", i, st.applied[i], w)
				}
			}
			if r := tr.Finish(time.Now()); r.WriteErrors != tt.writeFailures {
				t.Errorf("tracker write errors %d, want %d", r.WriteErrors, tt.writeFailures)
			}
		})
	}
}

func TestWriterRefusesBadSettings(t *testing.T) {
	for _, w := range []*Writer{{}, {Store: &recorder{}, Tracker: NewTracker(nil), Rate: 10}, {Store: &recorder{}, Rate: 10, Conns: 1}} {
		if _, err := w.Run(context.Background(), time.Millisecond); err == nil {
			t.Errorf("Run with %+v: nil error, want one", *w)
		}
	}
}

// TestWriterStopsWithContext checks that a cancelled run ends at once and does not leave
// a picked change pending.
func TestWriterStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tr := NewTracker([]Key{{Name: "A-FRESH-00"}})
	w := &Writer{Store: &recorder{}, Tracker: tr, Rate: 10, Conns: 1}
	start := time.Now()
	if _, err := w.Run(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %s after its context was cancelled", d)
	}
	if n := tr.Pending(); n > 1 {
		t.Errorf("%d keys pending, want at most the one handed out", n)
	}
}
