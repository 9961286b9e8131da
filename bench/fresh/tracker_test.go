package fresh

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)

func at(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }

// step is one event of a tracker scenario, at times in milliseconds from t0.
type step struct {
	pick      int     // key Pick must choose (-1: none), when want is set
	want      Op      // the change Pick must choose
	commit    float64 // Committed at this time (of key)
	fail      bool    // Failed
	observe   bool    // Observe key with found/seq, sent/recv
	found     bool
	seq       int64
	sent, rcv float64
	key       int
}

func pick(k int, op Op) step        { return step{pick: k, want: op, key: -2} }
func commit(k int, ms float64) step { return step{key: k, commit: ms} }
func seen(k int, found bool, seq int64, sent, recv float64) step {
	return step{key: k, observe: true, found: found, seq: seq, sent: sent, rcv: recv}
}

func run(t *testing.T, tr *Tracker, steps []step) {
	t.Helper()
	for i, s := range steps {
		switch {
		case s.key == -2:
			k, op, _, _, ok := tr.Pick(at(0))
			if s.pick < 0 {
				if ok {
					t.Fatalf("step %d: Pick chose key %d (%s), want none", i, k, op)
				}
				continue
			}
			if !ok || k != s.pick || op != s.want {
				t.Fatalf("step %d: Pick = key %d %s (ok %v), want key %d %s", i, k, op, ok, s.pick, s.want)
			}
		case s.fail:
			tr.Failed(s.key, errTest)
		case s.observe:
			tr.Observe(s.key, s.found, s.seq, at(s.sent), at(s.rcv))
		default:
			tr.Committed(s.key, at(s.commit))
		}
	}
}

type testError struct{}

func (testError) Error() string { return "test failure" }

var errTest = testError{}

func TestTracker(t *testing.T) {
	keys := []Key{{Name: "A-FRESH-00"}, {Name: "H-FRESH-01", Churn: true}}
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	tests := []struct {
		name  string
		steps []step
		lat   map[Kind][]time.Duration
		lost  map[Kind]int
		wrong int
		early int
		// failed changes
		writeErrors int
	}{
		{
			name:  "update seen after its commit",
			steps: []step{pick(0, Update), commit(0, 10), seen(0, true, 0, 9, 11), seen(0, true, 1, 12, 13)},
			lat:   map[Kind][]time.Duration{Updates: {ms(3)}},
		},
		{
			name:  "seen before the commit returned counts as 0",
			steps: []step{pick(0, Update), seen(0, true, 1, 4, 5), commit(0, 10)},
			lat:   map[Kind][]time.Duration{Updates: {0}}, early: 1,
		},
		{
			name:  "the old value after the new was seen, from a later request, is a regression",
			steps: []step{pick(0, Update), commit(0, 10), seen(0, true, 1, 14, 15), seen(0, true, 0, 20, 21)},
			lat:   map[Kind][]time.Duration{Updates: {ms(5)}}, wrong: 1,
		},
		{
			name:  "the old value in a reply sent before the new was seen is a late reply",
			steps: []step{pick(0, Update), commit(0, 10), seen(0, true, 1, 14, 15), seen(0, true, 0, 13, 30)},
			lat:   map[Kind][]time.Duration{Updates: {ms(5)}},
		},
		{
			name:  "a value never written is wrong",
			steps: []step{seen(0, true, 99, 1, 2), seen(1, true, 5, 1, 2)},
			wrong: 2,
		},
		{
			name:  "absent while nothing is pending is wrong",
			steps: []step{seen(0, false, 0, 1, 2), seen(1, false, 0, 1, 2)},
			wrong: 2,
		},
		{
			name: "delete, insert, delete of a churn key: the second delete is of a new row",
			steps: []step{pick(0, Update), pick(1, Delete), commit(1, 10), seen(1, true, 0, 10, 11), seen(1, false, 0, 18, 20),
				pick(1, Insert), commit(1, 30), seen(1, false, 0, 31, 32), seen(1, true, 3, 40, 41),
				pick(1, Delete), commit(1, 50), seen(1, true, 3, 51, 52), seen(1, false, 0, 60, 62)},
			// key 0: picked, never committed: not lost
			lat: map[Kind][]time.Duration{Deletes: {ms(10)}, Inserts: {ms(11)}, NewDeletes: {ms(12)}},
		},
		{
			name: "an absent reply sent before the insert was seen does not show the next delete",
			steps: []step{pick(0, Update), pick(1, Delete), commit(1, 10), seen(1, false, 0, 18, 20),
				pick(1, Insert), commit(1, 30), seen(1, true, 3, 38, 40),
				pick(1, Delete), commit(1, 50), seen(1, false, 0, 35, 55), seen(1, false, 0, 60, 61)},
			lat: map[Kind][]time.Duration{Deletes: {ms(10)}, Inserts: {ms(10)}, NewDeletes: {ms(11)}},
		},
		{
			name:  "a committed change never seen is lost",
			steps: []step{pick(0, Update), commit(0, 10), seen(0, true, 0, 11, 12)},
			lost:  map[Kind]int{Updates: 1},
		},
		{
			name:  "a pending key is not picked again",
			steps: []step{pick(0, Update), pick(1, Delete), {pick: -1, key: -2}, commit(0, 5), commit(1, 5), seen(0, true, 1, 6, 7), pick(0, Update)},
			lat:   map[Kind][]time.Duration{Updates: {ms(2)}},
			lost:  map[Kind]int{Deletes: 1}, // the second update of key 0 is never committed: not lost
		},
		{
			name:        "a failed change takes its key out",
			steps:       []step{pick(0, Update), {key: 0, fail: true}, seen(0, true, 7, 1, 2), pick(1, Delete), {pick: -1, key: -2}},
			writeErrors: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(keys)
			run(t, tr, tt.steps)
			r := tr.Finish(at(1000))
			for k := range numKinds {
				got, want := r.Kinds[k].Latencies, tt.lat[k]
				if len(got) != len(want) {
					t.Fatalf("%s latencies = %v, want %v", k, got, want)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Errorf("%s latencies = %v, want %v", k, got, want)
					}
				}
				if r.Kinds[k].Lost != tt.lost[k] {
					t.Errorf("%s lost = %d, want %d (%q)", k, r.Kinds[k].Lost, tt.lost[k], r.Examples)
				}
			}
			if r.Wrong != tt.wrong {
				t.Errorf("wrong = %d, want %d (%q)", r.Wrong, tt.wrong, r.Examples)
			}
			if r.WriteErrors != tt.writeErrors {
				t.Errorf("write errors = %d, want %d", r.WriteErrors, tt.writeErrors)
			}
			if r.Early != tt.early {
				t.Errorf("early = %d, want %d", r.Early, tt.early)
			}
		})
	}
}

// TestTrackerCarriesState checks that a run starts from what the database holds: a change
// lost in one run is the key's state in the next, a row inserted in one run is an old row
// in the next, and the figures start again.
func TestTrackerCarriesState(t *testing.T) {
	tr := NewTracker([]Key{{Name: "H-FRESH-01", Churn: true}})
	run(t, tr, []step{pick(0, Delete), commit(0, 5), seen(0, false, 0, 6, 7), pick(0, Insert), commit(0, 10)})
	r := tr.Finish(at(100))
	if r.Kinds[Inserts].Lost != 1 || !strings.Contains(r.Examples[0], "insert committed 90ms before the end, never seen") {
		t.Fatalf("first run: lost %d, examples %q; want 1 lost insert", r.Kinds[Inserts].Lost, r.Examples)
	}
	// The next run (a server that read the table afresh) shows the insert, value 2.
	run(t, tr, []step{seen(0, true, 2, 200, 201), pick(0, Delete), commit(0, 210), seen(0, false, 0, 215, 216)})
	r = tr.Finish(at(300))
	if r.Wrong != 0 || r.Kinds[Inserts].Lost != 0 || r.Kinds[Deletes].Seen() != 1 || r.Kinds[Deletes].Percentile(50) != 6*time.Millisecond {
		t.Errorf("second run: wrong %d, lost inserts %d, deletes %v; want 0, 0, [6ms]", r.Wrong, r.Kinds[Inserts].Lost, r.Kinds[Deletes].Latencies)
	}
}

// TestTrackerDwell checks that a key whose change was seen is not picked again until its
// dwell has passed, and is picked after it.
func TestTrackerDwell(t *testing.T) {
	tr := NewTracker([]Key{{Name: "A-FRESH-00"}})
	tr.SetDwell(time.Second)
	run(t, tr, []step{pick(0, Update), commit(0, 10), seen(0, true, 1, 11, 12)})
	if _, _, _, _, ok := tr.Pick(at(12)); ok {
		t.Fatal("Pick chose the key at once after its change was seen, want it to wait its dwell")
	}
	if k, op, _, _, ok := tr.Pick(at(1012)); !ok || k != 0 || op != Update {
		t.Fatalf("Pick a second after = %d %s %v, want key 0 update", k, op, ok)
	}
}

// TestTrackerIntervals checks the resolution figure: the time between two probe requests
// for the same key, by the time they were sent.
func TestTrackerIntervals(t *testing.T) {
	tr := NewTracker([]Key{{Name: "A-FRESH-00"}, {Name: "B-FRESH-01"}})
	for i := range 10 {
		tr.Observe(0, true, 0, at(float64(2*i)), at(float64(2*i)+0.5))
		tr.Observe(1, true, 0, at(float64(2*i)), at(float64(2*i)+0.5))
	}
	r := tr.Finish(at(100))
	if got := r.Intervals.Count(); got != 18 {
		t.Errorf("%d intervals, want 18 (9 per key)", got)
	}
	if got := r.Intervals.Percentile(100); got != 2*time.Millisecond {
		t.Errorf("largest interval %s, want 2ms", got)
	}
	if r.Observations != 20 {
		t.Errorf("%d observations, want 20", r.Observations)
	}
}

func TestOpResultPercentile(t *testing.T) {
	var o OpResult
	for i := 1; i <= 200; i++ {
		o.Latencies = append(o.Latencies, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		name string
		p    float64
		want time.Duration
	}{
		{"p50", 50, 100 * time.Millisecond},
		{"p99", 99, 198 * time.Millisecond},
		{"p100", 100, 200 * time.Millisecond},
		{"tiny", 0.1, time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := o.Percentile(tt.p); got != tt.want {
				t.Errorf("Percentile(%g) = %s, want %s", tt.p, got, tt.want)
			}
		})
	}
	if got := o.Max(); got != 200*time.Millisecond {
		t.Errorf("Max() = %s, want 200ms", got)
	}
	if got := (OpResult{}).Percentile(99); got != 0 {
		t.Errorf("empty Percentile(99) = %s, want 0", got)
	}
	r := Result{}
	r.Kinds[Updates] = OpResult{Latencies: []time.Duration{1, 5}, Lost: 1}
	r.Kinds[Inserts] = OpResult{Latencies: []time.Duration{3}, Lost: 2}
	if m := r.Of(Updates, Inserts); m.Seen() != 3 || m.Lost != 3 || m.Latencies[1] != 3 {
		t.Errorf("Of(update, insert) = %+v, want 3 seen in order, 3 lost", m)
	}
}

func TestKeys(t *testing.T) {
	keys := Keys(10, 30)
	seen := map[string]bool{}
	letters := map[byte]bool{}
	for i, k := range keys {
		if seen[k.Name] {
			t.Fatalf("key %q repeats", k.Name)
		}
		seen[k.Name] = true
		letters[k.Name[0]] = true
		if k.Churn != (i >= 10) {
			t.Errorf("key %d %q churn %v, want %v", i, k.Name, k.Churn, i >= 10)
		}
		if k.Name[1] != '-' {
			t.Errorf("key %q: want a letter then a dash (no demo row has that shape)", k.Name)
		}
	}
	if len(letters) != 26 {
		t.Errorf("%d first letters among 40 keys, want all 26", len(letters))
	}
	groups := Groups(keys)
	if len(groups) != 4 || len(groups[3]) != 10 || groups[1][0] != 10 {
		t.Errorf("Groups = %v, want 4 groups of 10 in order", groups)
	}
	if got := Text(keys, []int{0, 1}); got != "?A-FRESH-00 H-FRESH-01" {
		t.Errorf("Text = %q, want %q", got, "?A-FRESH-00 H-FRESH-01")
	}
}
