package fresh

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	keys := []Key{{Name: "A-FRESH-00"}, {Name: "H-FRESH-01", Churn: true}, {Name: "O-FRESH-02", Churn: true}}
	group := []int{0, 1, 2}
	found := func(k string, seq string) string { return "[" + k + "]的工作台位为[" + valueMark + seq + "#]" }
	missing := func(k string) string { return "[" + k + "]未找到，请核对工件号。" }
	tests := []struct {
		name    string
		content string
		err     string // part of the error; "" for none
		wrong   int    // observations judged wrong: each state below is compared with the initial one
	}{
		{"initial states", strings.Join([]string{found("A-FRESH-00", "0"), found("H-FRESH-01", "0"), found("O-FRESH-02", "0")}, "\n"), "", 0},
		{"lines in another order", strings.Join([]string{found("O-FRESH-02", "0"), found("A-FRESH-00", "0"), found("H-FRESH-01", "0")}, "\n"), "", 0},
		{"a value never written, a row never deleted", strings.Join([]string{found("A-FRESH-00", "7"), missing("H-FRESH-01"), found("O-FRESH-02", "0")}, "\n"), "", 2},
		{"a key without a line", found("A-FRESH-00", "0") + "\n" + missing("H-FRESH-01"), "does not name [O-FRESH-02]", 0},
		{"a key named only inside another line", found("A-FRESH-00", "0") + " [O-FRESH-02]\n" + missing("H-FRESH-01"), "does not name [O-FRESH-02]", 0},
		{"a value without its closing mark", strings.Join([]string{"[A-FRESH-00]的工作台位为[FRESH#12", missing("H-FRESH-01"), missing("O-FRESH-02")}, "\n"), "no closing #", 0},
		{"a value that is not a number", strings.Join([]string{found("A-FRESH-00", "x1"), missing("H-FRESH-01"), missing("O-FRESH-02")}, "\n"), "not a sequence number", 0},
		{"the rate-limited text", "您的查询过于频繁，请稍后再试。", "does not name [A-FRESH-00]", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(keys)
			err := tr.Check(group, []byte(tt.content), at(1), at(2))
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("Check: %v, want nil", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("Check: %v, want an error with %q", err, tt.err)
			}
			r := tr.Finish(at(10))
			wantObs := 3
			if tt.err != "" {
				wantObs = 0 // nothing recorded from a reply that fails the check
			}
			if r.Observations != wantObs || r.Wrong != tt.wrong {
				t.Errorf("observations %d, wrong %d (%q); want %d, %d", r.Observations, r.Wrong, r.Examples, wantObs, tt.wrong)
			}
		})
	}
}

func TestCheckRecordsChange(t *testing.T) {
	keys := Keys(1, 1)
	tr := NewTracker(keys)
	k, op, _, value, ok := tr.Pick(at(0))
	if !ok || k != 0 || op != Update || value != "FRESH#1#" {
		t.Fatalf("Pick = %d %s %q %v, want key 0, update, FRESH#1#", k, op, value, ok)
	}
	tr.Committed(0, at(10))
	content := "[" + keys[0].Name + "]的工作台位为[" + value + "]\n[" + keys[1].Name + "]的工作台位为[FRESH#0#]"
	if err := tr.Check([]int{0, 1}, []byte(content), at(12), at(14)); err != nil {
		t.Fatal(err)
	}
	r := tr.Finish(at(20))
	if got := r.Kinds[Updates].Latencies; len(got) != 1 || got[0] != at(14).Sub(at(10)) {
		t.Errorf("update latencies %v, want [4ms]", got)
	}
}
