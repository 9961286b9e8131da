package server

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// at returns a fixed time plus s seconds.
func at(s int) time.Time {
	return time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC).Add(time.Duration(s) * time.Second)
}

func TestNotFoundReportOrder(t *testing.T) {
	r := newNotFoundReport(10)
	asks := []struct {
		key string
		at  int
	}{
		{"18-564", 1}, {"a7-002", 2}, {"18-564", 3}, {"zz", 4}, {"a7-002", 5}, {"18-564", 6}, {"b", 7},
	}
	for _, a := range asks {
		r.record([]byte(a.key), at(a.at))
	}
	want := []NotFoundKey{
		{Key: "18-564", Count: 3, First: at(1), Last: at(6)},
		{Key: "a7-002", Count: 2, First: at(2), Last: at(5)},
		{Key: "b", Count: 1, First: at(7), Last: at(7)}, // asked once, after zz: first
		{Key: "zz", Count: 1, First: at(4), Last: at(4)},
	}
	got := r.top()
	if len(got) != len(want) {
		t.Fatalf("got %d keys, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Key != w.Key || g.Count != w.Count || g.Error != w.Error || !g.First.Equal(w.First) || !g.Last.Equal(w.Last) {
			t.Errorf("row %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestNotFoundReportCapsAndCopiesKeys(t *testing.T) {
	tests := []struct {
		name, key, want string
	}{
		{"short", "18-546", "18-546"},
		{"64 bytes kept", strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{"ascii cut", strings.Repeat("a", 70), strings.Repeat("a", 64)},
		// 21 three-byte runes are 63 bytes; the 22nd would end at 66: cut before it.
		{"cut on a rune boundary", strings.Repeat("车", 30), strings.Repeat("车", 21)},
		{"boundary after ascii", "a" + strings.Repeat("车", 30), "a" + strings.Repeat("车", 21)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newNotFoundReport(4)
			buf := []byte(tt.key)
			r.record(buf, at(0))
			for i := range buf {
				buf[i] = 'x' // the caller reuses its buffer
			}
			got := r.top()[0].Key
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("stored key %q is not valid UTF-8", got)
			}
		})
	}
}

// TestNotFoundReportFixedMemory feeds 100,000 distinct keys: the report must stay at k
// entries, and recording allocates nothing, for a tracked key or a new one.
func TestNotFoundReportFixedMemory(t *testing.T) {
	const k = 100
	r := newNotFoundReport(k)
	for i := range 100_000 {
		r.record([]byte("noise-"+strconv.Itoa(i)), at(i))
	}
	if got := len(r.top()); got != k {
		t.Errorf("entries: got %d, want %d", got, k)
	}
	if len(r.index) != k || len(r.heap) != k || cap(r.slots) != k {
		t.Errorf("index %d, heap %d, slot capacity %d: want all %d", len(r.index), len(r.heap), cap(r.slots), k)
	}
	if raceEnabled {
		return // the race detector's instrumentation allocates
	}
	tracked, key := []byte("noise-99999"), []byte("new-0000000")
	n := 0
	tests := []struct {
		name string
		key  func() []byte
	}{
		{"tracked key", func() []byte { return tracked }},
		{"new key", func() []byte {
			n++
			return strconv.AppendInt(key[:4], int64(n), 10)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, func() { r.record(tt.key(), at(200_000)) }); got != 0 {
				t.Errorf("allocations per record: got %v, want 0", got)
			}
		})
	}
	// The tracked key was counted each time (AllocsPerRun runs once more to warm up), on
	// top of the count it inherited when it entered.
	if got := r.top()[0]; got.Key != "noise-99999" || got.Count-got.Error != 1002 {
		t.Errorf("top: got %q × %d-%d, want %q × 1002 above its error", got.Key, got.Count, got.Error, "noise-99999")
	}
}

// TestNotFoundReportKeepsHeavyHitters hides five keys asked 3,000 to 15,000 times among
// 100,000 keys asked once, in random order. Space-saving with k = 100 over N = 145,000
// requests keeps every key asked more than N/k = 1,450 times with a count at most N/k too
// high, so the five are the top five in the right order (their counts differ by more).
func TestNotFoundReportKeepsHeavyHitters(t *testing.T) {
	heavy := map[string]uint64{"h-1": 15000, "h-2": 12000, "h-3": 9000, "h-4": 6000, "h-5": 3000}
	var stream []string
	for k, n := range heavy {
		for range n {
			stream = append(stream, k)
		}
	}
	for i := range 100_000 {
		stream = append(stream, fmt.Sprintf("noise-%d", i))
	}
	rng := rand.New(rand.NewPCG(15, 100))
	rng.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })

	r := newNotFoundReport(100)
	for i, k := range stream {
		r.record([]byte(k), at(i))
	}
	top := r.top()
	bound := uint64(len(stream) / 100)
	for i, want := range []string{"h-1", "h-2", "h-3", "h-4", "h-5"} {
		got := top[i]
		if got.Key != want {
			t.Fatalf("rank %d: got %q, want %q (top %+v)", i, got.Key, want, top[:6])
		}
		if truth := heavy[want]; got.Count < truth || got.Count-got.Error > truth || got.Error > bound {
			t.Errorf("%s: count %d error %d, true count %d: want count-error ≤ %d ≤ count, error ≤ %d",
				want, got.Count, got.Error, truth, truth, bound)
		}
	}
	var sum uint64
	for _, e := range top {
		sum += e.Count
	}
	if sum != uint64(len(stream)) {
		t.Errorf("sum of counts: got %d, want %d (every request counts once)", sum, len(stream))
	}
}

func TestNotFoundReportConcurrent(t *testing.T) {
	r := newNotFoundReport(50)
	const workers, per = 4, 5000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 0, 16)
			for i := range per {
				buf = strconv.AppendInt(buf[:0], int64((i*7+w)%200), 10)
				r.record(buf, at(i))
				if i%1000 == 0 {
					_ = r.top()
				}
			}
		})
	}
	wg.Wait()
	var sum uint64
	top := r.top()
	for _, e := range top {
		sum += e.Count
	}
	if len(top) != 50 || sum != workers*per {
		t.Errorf("got %d entries summing %d, want 50 summing %d", len(top), sum, workers*per)
	}
}

// BenchmarkNotFoundRecord times record for a tracked key, for a new key (which takes over
// the least-asked counter), and for tracked keys from all CPUs.
//
//	go test -run '^$' -bench NotFoundRecord -benchmem ./server/
func BenchmarkNotFoundRecord(b *testing.B) {
	now := at(0)
	b.Run("tracked", func(b *testing.B) {
		r := newNotFoundReport(DefaultNotFoundTop)
		key := []byte("18-564")
		for b.Loop() {
			r.record(key, now)
		}
	})
	b.Run("new", func(b *testing.B) {
		r := newNotFoundReport(DefaultNotFoundTop)
		key := make([]byte, 0, 24)
		i := 0
		for b.Loop() {
			i++
			key = strconv.AppendInt(append(key[:0], "miss-"...), int64(i), 10)
			r.record(key, now)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		r := newNotFoundReport(DefaultNotFoundTop)
		b.RunParallel(func(pb *testing.PB) {
			key := make([]byte, 0, 24)
			i := 0
			for pb.Next() {
				i++
				key = strconv.AppendInt(append(key[:0], "k-"...), int64(i%150), 10)
				r.record(key, now)
			}
		})
	})
}
