package cache_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"wxlookup/cache"
	"wxlookup/store"
)

// suggest1M is the index of the first 1,000,000 demo keys (normalised), built once per
// binary for the suggestion benchmarks.
var suggest1M struct {
	once sync.Once
	keys []string
	s    cache.Suggester
}

// demoKeys1M returns the normalised keys of demo rows 0 … 999,999.
func demoKeys1M() []string {
	keys := make([]string, 1_000_000)
	for i := range keys {
		k, _ := store.DemoRow(i)
		keys[i] = cache.Key(k)
	}
	return keys
}

// suggestIndex1M returns the shared 1M-key index and its keys.
func suggestIndex1M() (cache.Suggester, []string) {
	suggest1M.once.Do(func() {
		suggest1M.keys = demoKeys1M()
		suggest1M.s = cache.NewSuggester()
		for _, k := range suggest1M.keys {
			suggest1M.s.Add(k)
		}
	})
	return suggest1M.s, suggest1M.keys
}

// BenchmarkSuggesterBuild1M adds the 1,000,000 demo keys to an empty suggester in row order
// (as a warm applies them) and reports the index's bytes per key.
//
//	go test -run '^$' -bench SuggesterBuild1M -benchtime 3x ./cache/
func BenchmarkSuggesterBuild1M(b *testing.B) {
	keys := demoKeys1M()
	var s cache.Suggester
	b.ResetTimer()
	for b.Loop() {
		s = cache.NewSuggester()
		for _, k := range keys {
			s.Add(k)
		}
	}
	b.StopTimer()
	if s.Len() != len(keys) {
		b.Fatalf("len: got %d, want %d", s.Len(), len(keys))
	}
	b.ReportMetric(float64(s.Bytes())/float64(len(keys)), "bytes/key")
}

// edit applies one random edit of kind op to key: 's' substitution, 't' transposition of
// two adjacent runes, 'd' deletion, 'i' insertion.
func edit(rng *rand.Rand, key []rune, op byte) []rune {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
	key = slices.Clone(key)
	i := rng.IntN(len(key))
	c := rune(alphabet[rng.IntN(len(alphabet))])
	switch op {
	case 's':
		for c == key[i] {
			c = rune(alphabet[rng.IntN(len(alphabet))])
		}
		key[i] = c
	case 't':
		i = rng.IntN(len(key) - 1)
		key[i], key[i+1] = key[i+1], key[i]
	case 'd':
		key = slices.Delete(key, i, i+1)
	case 'i':
		key = slices.Insert(key, i, c)
	}
	return key
}

// suggestQueries returns n queries of a kind, deterministically: typos of demo keys (one
// substitution, one transposition, one deletion, two edits) or unknown keys (random text of
// the demo keys' length over letters, digits and '-', Chinese text, long numbers).
func suggestQueries(keys []string, kind string, n int) [][]byte {
	rng := rand.New(rand.NewPCG(15, uint64(len(kind))))
	out := make([][]byte, n)
	for i := range out {
		key := []rune(keys[rng.IntN(len(keys))])
		var q []rune
		switch kind {
		case "substitution":
			q = edit(rng, key, 's')
		case "transposition":
			q = edit(rng, key, 't')
		case "deletion":
			q = edit(rng, key, 'd')
		case "two-edits":
			ops := "stdi"
			q = edit(rng, edit(rng, key, ops[rng.IntN(4)]), ops[rng.IntN(4)])
		case "unknown":
			switch i % 3 {
			case 0:
				const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
				q = make([]rune, 4+rng.IntN(6))
				for j := range q {
					q[j] = rune(alphabet[rng.IntN(len(alphabet))])
				}
			case 1:
				q = make([]rune, 2+rng.IntN(6))
				for j := range q {
					q[j] = rune(0x4E00 + rng.IntN(0x5000))
				}
			default:
				q = []rune(key)
				for range 3 + rng.IntN(4) {
					q = append(q, rune('0'+rng.IntN(10)))
				}
			}
		}
		out[i] = []byte(string(q))
	}
	return out
}

// BenchmarkSuggest1M times suggestions (up to 3) over the 1,000,000 demo keys, per kind of
// query, and reports the latency's p50 and p99 and the suggestions found per query.
//
//	go test -run '^$' -bench Suggest1M ./cache/
func BenchmarkSuggest1M(b *testing.B) {
	s, keys := suggestIndex1M()
	for _, kind := range []string{"substitution", "transposition", "deletion", "two-edits", "unknown"} {
		b.Run(kind, func(b *testing.B) {
			queries := suggestQueries(keys, kind, 4096)
			var lat latencies
			dst := make([]string, 0, 3)
			found := 0
			i := 0
			for b.Loop() {
				q := queries[i%len(queries)]
				i++
				start := time.Now()
				dst = s.Suggest(dst[:0], q, 3)
				lat.add(time.Since(start))
				found += len(dst)
			}
			b.ReportMetric(lat.quantile(0.50).Seconds()*1e6, "p50-µs")
			b.ReportMetric(lat.quantile(0.99).Seconds()*1e6, "p99-µs")
			b.ReportMetric(float64(found)/float64(i), "suggestions/op")
		})
	}
}

// BenchmarkCacheSuggest1M times Cache.Suggest (up to 3) with the 1,000,000 demo rows held by
// a real Cache, warmed from a CSV source, per kind of query as BenchmarkSuggest1M, and
// reports the latency's p50 and p99, and what the suggester adds to each row's cost
// (suggest-bytes/row) beside the cost of a row as the cache accounts it (cost-bytes/row).
//
//	go test -run '^$' -bench CacheSuggest1M ./cache/
func BenchmarkCacheSuggest1M(b *testing.B) {
	const n = 1_000_000
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{store.DefaultKeyColumn, store.DefaultValueColumn})
	for i := range n {
		k, v := store.DemoRow(i)
		w.Write([]string{k, v})
	}
	w.Flush()
	src, err := store.NewCSV("1M demo rows", buf.Bytes(), store.Mapping{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := cache.New(src, cache.Config{Mode: cache.ModeCSV, RefreshInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Start()
	if err := c.WaitReady(context.Background()); err != nil {
		b.Fatal(err)
	}
	st := c.Status()
	if !st.Complete || st.Entries != n {
		b.Fatalf("got complete %v, %d entries; want a complete cache of %d", st.Complete, st.Entries, n)
	}
	_, keys := suggestIndex1M()
	for _, kind := range []string{"substitution", "transposition", "deletion", "two-edits", "unknown"} {
		b.Run(kind, func(b *testing.B) {
			queries := suggestQueries(keys, kind, 4096)
			var lat latencies
			dst := make([]string, 0, 3)
			found, i := 0, 0
			for b.Loop() {
				q := queries[i%len(queries)]
				i++
				start := time.Now()
				dst = c.Suggest(dst[:0], q, 3)
				lat.add(time.Since(start))
				found += len(dst)
			}
			b.ReportMetric(lat.quantile(0.50).Seconds()*1e6, "p50-µs")
			b.ReportMetric(lat.quantile(0.99).Seconds()*1e6, "p99-µs")
			b.ReportMetric(float64(found)/float64(i), "suggestions/op")
			b.ReportMetric(float64(c.SuggestBytes())/n, "suggest-bytes/row")
			b.ReportMetric(float64(st.CostBytes)/n, "cost-bytes/row")
		})
	}
}

// BenchmarkSuggesterChurn1M times removing one of the 1,000,000 demo keys and adding it
// back (two writes, as a refresh that deletes and re-inserts a row).
//
//	go test -run '^$' -bench SuggesterChurn1M -benchmem ./cache/
func BenchmarkSuggesterChurn1M(b *testing.B) {
	s, keys := suggestIndex1M()
	i := 0
	for b.Loop() {
		k := keys[(i*7919)%len(keys)]
		i++
		s.Remove(k)
		s.Add(k)
	}
	if s.Len() != len(keys) {
		b.Fatalf("len: got %d, want %d", s.Len(), len(keys))
	}
}

// BenchmarkSuggest1MWhileWriting times suggestions for one-substitution typos while another
// goroutine removes and re-adds keys without pause: the latency a writer adds to readers.
//
//	go test -run '^$' -bench Suggest1MWhileWriting ./cache/
func BenchmarkSuggest1MWhileWriting(b *testing.B) {
	s, keys := suggestIndex1M()
	queries := suggestQueries(keys, "substitution", 4096)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[(i*7919)%len(keys)]
			s.Remove(k)
			s.Add(k)
		}
	}()
	var lat latencies
	dst := make([]string, 0, 3)
	i := 0
	for b.Loop() {
		q := queries[i%len(queries)]
		i++
		start := time.Now()
		dst = s.Suggest(dst[:0], q, 3)
		lat.add(time.Since(start))
	}
	close(stop)
	<-done
	b.ReportMetric(lat.quantile(0.50).Seconds()*1e6, "p50-µs")
	b.ReportMetric(lat.quantile(0.99).Seconds()*1e6, "p99-µs")
}

// latencies is a histogram of durations in 100 ns buckets up to 1 ms (longer ones count in
// the last), so that timing every operation allocates nothing.
type latencies struct {
	n       int
	buckets [10001]int
}

// add counts one duration.
func (l *latencies) add(d time.Duration) {
	l.buckets[min(int(d/(100*time.Nanosecond)), len(l.buckets)-1)]++
	l.n++
}

// quantile returns the upper bound of the bucket holding quantile q.
func (l *latencies) quantile(q float64) time.Duration {
	rank := int(q * float64(l.n))
	for i, c := range l.buckets {
		if rank -= c; rank < 0 {
			return time.Duration(i+1) * 100 * time.Nanosecond
		}
	}
	return time.Duration(len(l.buckets)) * 100 * time.Nanosecond
}
