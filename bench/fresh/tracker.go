// Package fresh measures freshness (SPEC section 8): how long after a change is committed
// to MySQL wxlookup's replies show it. A Writer commits changes at a fixed rate; some of
// them go to probe keys, which the measured traffic asks for every millisecond or two (a
// probe message asks for ten keys at once). A Tracker matches each probe reply with the
// changes committed and records, per change, commit → first reply that shows it.
//
// A probe key is changed again only once its last change has been seen, so every change
// is seen on its own (none is hidden by a later one), and a change still unseen when a run
// ends is lost.
package fresh

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"wxlookup/bench/load"
)

// Op is the kind of a change.
type Op uint8

// The kinds of change. An update rewrites the value of a present key, an insert adds an
// absent one, a delete removes a present one.
const (
	Update Op = iota
	Insert
	Delete
	numOps
)

var opNames = [numOps]string{"update", "insert", "delete"}

func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", o)
}

// Kind is how a Result sorts the changes: by Op, and the deletes by the age of the row.
type Kind uint8

// The kinds of change in a Result.
const (
	Updates Kind = iota
	Inserts
	// Deletes are deletes of rows that were there when the run began.
	Deletes
	// NewDeletes are deletes of rows inserted during the run: in poll mode the
	// reconcile finds those by another path than rows it has read in a key range.
	NewDeletes
	numKinds
)

var kindNames = [numKinds]string{"updates", "inserts", "deletes", "deletes of new rows"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// state is what a reply shows for a probe key: present with the value written by change
// seq, or absent.
type state struct {
	found bool
	seq   int64 // 0 when absent
}

func (s state) String() string {
	if !s.found {
		return "absent"
	}
	return fmt.Sprintf("value %d", s.seq)
}

// era is one state a key held, as the replies showed it: from the receipt of the first
// reply that showed it (zero: before the run) to the receipt of the first reply that
// showed the next state (zero: still current).
type era struct {
	st           state
	since, until time.Time
}

// histLen is how many past states of a key are kept to judge late replies by: a reply
// sent before the next state was first seen may still show an old one.
const histLen = 8

// change is a change to a probe key from the moment it is picked until it is both
// committed and seen.
type change struct {
	op                      Op
	kind                    Kind
	to                      state
	committed, seen, issued time.Time
}

type keyState struct {
	churn    bool
	inserted bool      // an insert of it was picked in this run
	readyAt  time.Time // Pick leaves it alone until then (the dwell after a change was seen)
	hist     []era     // oldest first; the last is the current state
	pending  *change   // nil: settled, the key may be changed
	lastSent time.Time
	broken   bool // a change to it failed: the database's state is unknown
}

func (ks *keyState) current() *era { return &ks.hist[len(ks.hist)-1] }

// Tracker follows the probe keys through a run: the writer picks a settled key and
// reports its change committed (Pick, Committed, Failed), the reply checker reports what
// each probe reply showed (Check, Observe), and Finish ends the run. The states of the
// keys carry over from one run to the next. Safe for concurrent use.
type Tracker struct {
	mu      sync.Mutex
	names   []string
	needles [][]byte // "[name]", as a reply line names the key
	keys    []keyState
	next    int   // where Pick starts looking
	seq     int64 // of the last change picked
	dwell   time.Duration
	rng     *rand.Rand

	// The run's figures, reset by Finish.
	lat          [numKinds][]time.Duration
	observations int
	early        int // seen before the writer's commit returned
	wrong        int
	examples     []string
	intervals    *load.Histogram
	writeErrors  int
	writeError   string
}

// maxExamples is how many wrong or lost observations a Result describes.
const maxExamples = 5

// NewTracker returns a tracker of keys, every one of them present with Value(0).
func NewTracker(keys []Key) *Tracker {
	t := &Tracker{intervals: load.NewHistogram(), rng: rand.New(rand.NewPCG(1, 2))}
	for _, k := range keys {
		t.names = append(t.names, k.Name)
		t.needles = append(t.needles, []byte("["+k.Name+"]"))
		t.keys = append(t.keys, keyState{churn: k.Churn, hist: []era{{st: state{found: true}}}})
	}
	return t
}

// SetDwell makes a key wait a random time in [0, d) after its change was seen before
// Pick chooses it again. Without it a key is changed again at once, so its next change
// starts in step with whatever made the last one visible (a poll's refresh), and every
// change then waits a whole period. d ≥ that period spreads the changes over it.
func (t *Tracker) SetDwell(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dwell = d
}

// Pick chooses the next settled probe key, round the keys in turn, and the change to make
// to it: an update of an update key, a delete of a present churn key, an insert of an
// absent one. It marks the key pending until the change is committed and seen. value is
// what the change writes (empty for a delete). ok is false when every key is pending.
func (t *Tracker) Pick(now time.Time) (k int, op Op, name, value string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for n := range t.keys {
		k = (t.next + n) % len(t.keys)
		ks := &t.keys[k]
		if ks.broken || ks.pending != nil || now.Before(ks.readyAt) {
			continue
		}
		t.next = k + 1
		kind := Updates
		switch {
		case !ks.churn:
			op = Update
		case ks.current().st.found:
			op, kind = Delete, Deletes
			if ks.inserted {
				kind = NewDeletes
			}
		default:
			op, kind = Insert, Inserts
			ks.inserted = true
		}
		t.seq++
		to := state{found: op != Delete}
		if to.found {
			to.seq = t.seq
			value = Value(t.seq)
		}
		ks.pending = &change{op: op, kind: kind, to: to, issued: now}
		return k, op, t.names[k], value, true
	}
	return 0, 0, "", "", false
}

// Committed records that the change picked for key k was committed at at (when the
// database's answer arrived).
func (t *Tracker) Committed(k int, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.keys[k].pending
	if p == nil {
		return
	}
	p.committed = at
	if !p.seen.IsZero() {
		t.complete(&t.keys[k])
	}
}

// Failed records that the change picked for key k failed. The key is not changed or
// judged again: whether the database applied the change is unknown.
func (t *Tracker) Failed(k int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ks := &t.keys[k]
	ks.broken, ks.pending = true, nil
	t.writeErrors++
	if t.writeError == "" {
		t.writeError = fmt.Sprintf("%s: %v", t.names[k], err)
	}
}

// Observe records that a reply to a probe message sent at sent and received at recv showed
// key k present with the value of change seq (found), or absent. The reply shows the
// server's state at some moment between the two.
//
// A reply that shows the pending change marks it seen at recv. A reply that shows an
// earlier state is fine if it was sent before the next state was first seen: replies can
// arrive out of order. Any other state is wrong: a regression, or a value never written.
func (t *Tracker) Observe(k int, found bool, seq int64, sent, recv time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := state{found: found}
	if found {
		st.seq = seq
	}
	t.observe(k, st, sent, recv)
}

func (t *Tracker) observe(k int, st state, sent, recv time.Time) {
	ks := &t.keys[k]
	t.observations++
	if sent.After(ks.lastSent) {
		if !ks.lastSent.IsZero() {
			t.intervals.Record(sent.Sub(ks.lastSent))
		}
		ks.lastSent = sent
	}
	if ks.broken {
		return
	}
	cur := ks.current()
	p := ks.pending
	// An absent state repeats (delete, insert, delete): a reply showing "absent" is the
	// pending delete only if it was sent after the present state before it was seen.
	if p != nil && st == p.to && (st.found || sent.After(cur.since)) {
		if p.seen.IsZero() {
			p.seen = recv
			if !p.committed.IsZero() {
				t.complete(ks)
			}
		}
		return
	}
	for i := len(ks.hist) - 1; i >= 0; i-- {
		e := ks.hist[i]
		if e.st != st {
			continue
		}
		next := e.until
		if i == len(ks.hist)-1 && p != nil {
			next = p.seen // zero while the pending change is unseen
		}
		if next.IsZero() || !sent.After(next) {
			return
		}
		t.wrongf("%s: a reply sent %s after %s was first seen shows %s", t.names[k], sent.Sub(next).Round(time.Microsecond), t.newer(ks, i), st)
		return
	}
	t.wrongf("%s: a reply shows %s, which was never written to it (current: %s)", t.names[k], st, cur.st)
}

// newer names the state after era i of ks.
func (t *Tracker) newer(ks *keyState, i int) string {
	if i+1 < len(ks.hist) {
		return ks.hist[i+1].st.String()
	}
	return ks.pending.to.String()
}

func (t *Tracker) wrongf(format string, args ...any) {
	t.wrong++
	if len(t.examples) < maxExamples {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

// complete records the latency of ks's pending change, seen and committed, and makes its
// state the current one.
func (t *Tracker) complete(ks *keyState) {
	p := ks.pending
	lat := p.seen.Sub(p.committed)
	if lat < 0 { // the feed applied it before the writer heard back from MySQL
		t.early++
		lat = 0
	}
	t.lat[p.kind] = append(t.lat[p.kind], lat)
	ks.current().until = p.seen
	ks.hist = append(ks.hist, era{st: p.to, since: p.seen})
	if len(ks.hist) > histLen {
		ks.hist = slices.Delete(ks.hist, 0, len(ks.hist)-histLen)
	}
	ks.pending = nil
	if t.dwell > 0 {
		ks.readyAt = p.seen.Add(time.Duration(t.rng.Int64N(int64(t.dwell))))
	}
}

// Pending returns how many probe keys wait for their change to be seen.
func (t *Tracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, ks := range t.keys {
		if ks.pending != nil {
			n++
		}
	}
	return n
}

// Finish ends a run at end: a committed change not seen by then is lost. The writer must
// have returned. It returns the
// run's figures and starts the next run from the database's state: every key holds what
// was last committed to it, as a server that (re)reads the table will show.
func (t *Tracker) Finish(end time.Time) Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := Result{Observations: t.observations, Early: t.early, Wrong: t.wrong, Examples: t.examples,
		Intervals: t.intervals, WriteErrors: t.writeErrors, WriteError: t.writeError}
	for k := range numKinds {
		lat := slices.Clone(t.lat[k])
		slices.Sort(lat)
		r.Kinds[k].Latencies = lat
	}
	for k := range t.keys {
		ks := &t.keys[k]
		// A change picked but never committed (the run was cancelled) is not in the
		// database: the key keeps its state.
		if p := ks.pending; p != nil && !p.committed.IsZero() {
			r.Kinds[p.kind].Lost++
			if len(r.Examples) < maxExamples {
				r.Examples = append(r.Examples, fmt.Sprintf("%s: %s committed %s before the end, never seen (last seen: %s)",
					t.names[k], p.op, end.Sub(p.committed).Round(time.Millisecond), ks.current().st))
			}
			ks.hist = append(ks.hist, era{st: p.to})
		}
		ks.pending = nil
		ks.hist = []era{{st: ks.current().st}}
		ks.lastSent, ks.inserted, ks.readyAt = time.Time{}, false, time.Time{}
	}
	t.lat = [numKinds][]time.Duration{}
	t.observations, t.early, t.wrong, t.examples = 0, 0, 0, nil
	t.intervals = load.NewHistogram()
	t.writeErrors, t.writeError = 0, ""
	return r
}

// Result is what a Tracker measured in one run.
type Result struct {
	// Kinds holds the changes of each kind, by Kind.
	Kinds [numKinds]OpResult
	// Observations counts the probe keys' lines read in replies.
	Observations int
	// Intervals holds the time between two probe messages asking for the same key: how
	// finely a change's first appearance is placed.
	Intervals *load.Histogram
	// Early counts changes seen before the writer's commit returned (latency taken as 0).
	Early int
	// Wrong counts replies that showed a state the key never had, or an older state after
	// a newer one was seen (a regression).
	Wrong int
	// Examples describes the first few wrong replies and lost changes.
	Examples []string
	// WriteErrors counts probe changes that failed; WriteError is the first.
	WriteErrors int
	WriteError  string
}

// OpResult is the changes of one kind.
type OpResult struct {
	// Latencies holds commit → first seen of each change seen, in increasing order.
	Latencies []time.Duration
	// Lost counts committed changes never seen before the run ended.
	Lost int
}

// Of merges the changes of the given kinds.
func (r *Result) Of(kinds ...Kind) OpResult {
	var o OpResult
	for _, k := range kinds {
		o.Latencies = append(o.Latencies, r.Kinds[k].Latencies...)
		o.Lost += r.Kinds[k].Lost
	}
	slices.Sort(o.Latencies)
	return o
}

// Seen is how many changes were seen.
func (o OpResult) Seen() int { return len(o.Latencies) }

// Percentile returns the latency at or below which p percent (0–100] of the seen changes
// fall (nearest rank); 0 when none was seen.
func (o OpResult) Percentile(p float64) time.Duration {
	n := len(o.Latencies)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(float64(n)*p/100)) - 1
	return o.Latencies[min(max(i, 0), n-1)]
}

// Max returns the largest latency; 0 when none was seen.
func (o OpResult) Max() time.Duration {
	if len(o.Latencies) == 0 {
		return 0
	}
	return o.Latencies[len(o.Latencies)-1]
}
