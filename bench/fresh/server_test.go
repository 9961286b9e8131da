package fresh_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"wxlookup/bench/fresh"
	"wxlookup/bench/load"
	"wxlookup/bench/traffic"
	"wxlookup/cache"
	"wxlookup/server"
)

// laggingTable is a Store whose changes the server sees lag after they are committed, as
// wxlookup sees MySQL's through its change feed.
type laggingTable struct {
	mu       sync.Mutex
	lag      time.Duration
	versions map[string][]version // by normalised key, oldest first
	names    map[string]string    // normalised key → key as stored
}

type version struct {
	visible time.Time
	present bool
	value   string
}

func newLaggingTable(keys []fresh.Key, lag time.Duration) *laggingTable {
	t := &laggingTable{lag: lag, versions: map[string][]version{}, names: map[string]string{}}
	for _, k := range keys {
		t.names[cache.Key(k.Name)] = k.Name
		t.versions[cache.Key(k.Name)] = []version{{present: true, value: fresh.Value(0)}}
	}
	return t
}

// Apply checks the change against the committed state, as MySQL would, and makes it
// visible lag from now.
func (t *laggingTable) Apply(_ context.Context, op fresh.Op, key, value string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	nk := cache.Key(key)
	vs := t.versions[nk]
	present := len(vs) > 0 && vs[len(vs)-1].present
	if present != (op != fresh.Insert) {
		return errors.New("laggingTable: " + op.String() + " " + key + ": no such row, or already there")
	}
	t.names[nk] = key
	t.versions[nk] = append(vs, version{visible: time.Now().Add(t.lag), present: op != fresh.Delete, value: value})
	return nil
}

// get returns the newest version of key visible at now.
func (t *laggingTable) get(key string, now time.Time) (name, value string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	vs := t.versions[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if !vs[i].visible.After(now) {
			return t.names[key], vs[i].value, vs[i].present
		}
	}
	return "", "", false
}

// TestFreshnessAgainstServer runs the whole measurement against the real webhook over a
// table whose changes become visible 40ms after their commit: the probe messages mixed
// into the traffic, the replies read by the Tracker, the Writer changing probe keys only
// once their last change was seen. Every change must be seen, none lost or wrong, and no
// change may appear before its lag.
func TestFreshnessAgainstServer(t *testing.T) {
	const lag = 40 * time.Millisecond
	keys := fresh.Keys(4, 6)
	table := newLaggingTable(keys, lag)
	tmpl, err := server.NewTemplates(server.TemplateTexts{}, []string{"location"})
	if err != nil {
		t.Fatal(err)
	}
	lookup := server.LookupFunc(func(_ context.Context, key []byte) ([]byte, string, bool, error) {
		name, value, ok := table.get(string(key), time.Now())
		if !ok {
			return nil, "", false, nil
		}
		return tmpl.Found(name, []string{value}), name, true, nil
	})
	const token = "freshtoken"
	s, err := server.New(server.Config{Token: token}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())

	tr := fresh.NewTracker(keys)
	groups := fresh.Groups(keys)
	texts := make([]string, len(groups))
	for g, group := range groups {
		texts[g] = fresh.Text(keys, group)
	}
	picker, err := traffic.NewKeys(1, 100, 1.1, 0.1) // the other messages ask for rows the table lacks
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000 // 1s at 2,000/s: a probe every other request, so each key every millisecond
	b, err := traffic.Build(traffic.Spec{
		Account: traffic.Account{Token: token, ID: "gh_fresh", Host: ln.Addr().String(), Path: "/wx"},
		N:       n, OpenIDs: n, Keys: picker,
		Probe: &traffic.Probe{Every: 2, Texts: texts, Check: func(g int, content []byte, sent, recv time.Time) error {
			return tr.Check(groups[g], content, sent, recv)
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sched, err := load.Constant(2000, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// No background updates: every tick changes a settled probe key or is skipped.
	w := &fresh.Writer{Store: table, Tracker: tr, Rate: 200, Conns: 2}
	var stats fresh.WriteStats
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		stats, werr = w.Run(context.Background(), 500*time.Millisecond)
	}()
	res, err := load.Run(context.Background(), load.Config{Addr: ln.Addr().String(), Conns: 8, Schedule: sched,
		Request: b.Request, Check: b.Check})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	if res.Errors() != 0 {
		t.Fatalf("%d of %d requests failed: %q", res.Errors(), n, res.Failures)
	}
	r := tr.Finish(time.Now())
	all := []fresh.Kind{fresh.Updates, fresh.Inserts, fresh.Deletes, fresh.NewDeletes}
	t.Logf("changes committed: %d probe; seen: %d updates, %d inserts, %d deletes, p50 %s; interval p50 %s",
		stats.Probe, r.Kinds[fresh.Updates].Seen(), r.Kinds[fresh.Inserts].Seen(), r.Of(fresh.Deletes, fresh.NewDeletes).Seen(),
		r.Of(all...).Percentile(50), r.Intervals.Percentile(50))
	if r.Wrong != 0 || r.WriteErrors != 0 {
		t.Fatalf("%d wrong replies, %d failed changes (%s): %q", r.Wrong, r.WriteErrors, r.WriteError, r.Examples)
	}
	if r.Observations != n/2*fresh.GroupSize {
		t.Errorf("%d observations, want %d (10 keys in each of %d probes)", r.Observations, n/2*fresh.GroupSize, n/2)
	}
	for _, k := range all {
		o := r.Kinds[k]
		if o.Lost != 0 {
			t.Errorf("%d %s lost: %q", o.Lost, k, r.Examples)
		}
		if o.Seen() < 3 {
			t.Errorf("%d %s seen, want at least 3 (%d probe changes committed)", o.Seen(), k, stats.Probe)
		}
		// A change is visible lag after the table took it; the writer heard back a moment
		// after that. Nothing may be seen much sooner.
		if lo := o.Percentile(1); lo < lag-10*time.Millisecond {
			t.Errorf("%s: a change seen %s after its commit, before the %s lag", k, lo, lag)
		}
	}
	if got := r.Of(all...).Seen(); got != stats.Probe {
		t.Errorf("%d changes seen, %d committed; want all seen", got, stats.Probe)
	}
	if r.Intervals.Count() == 0 {
		t.Error("no interval between probes of a key recorded")
	}
}
