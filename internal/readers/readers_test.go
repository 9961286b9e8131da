package readers

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRetire: Retire returns at once with no reader inside, and otherwise once the last
// reader inside has left, whatever shards they entered on.
func TestRetire(t *testing.T) {
	tests := []struct {
		name   string
		shards []uint64 // readers inside when Retire starts, leaving in this order
	}{
		{"no reader", nil},
		{"one reader", []uint64{7}},
		{"readers on one shard", []uint64{3, 3 + Shards, 3}},
		{"readers on several shards", []uint64{0, 1, Shards - 1, 1 << 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Count
			for _, s := range tt.shards {
				c.Enter(s)
			}
			done := make(chan struct{})
			go func() {
				c.Retire()
				close(done)
			}()
			for deadline := time.Now().Add(10 * time.Second); !c.Retired(); runtime.Gosched() {
				if time.Now().After(deadline) {
					t.Fatal("Retired() still false after Retire began")
				}
			}
			for i, s := range tt.shards {
				select {
				case <-done:
					t.Fatalf("Retire returned with %d readers inside", len(tt.shards)-i)
				default:
				}
				c.Leave(s)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Retire did not return after the last reader left")
			}
		})
	}
}

// value is a published value with its readers, and whether its owner has closed it.
type value struct {
	readers Count
	closed  atomic.Bool
}

// TestNoReaderAfterRetire: readers that enter, re-check and use the published value, while
// the owner replaces and retires it over and over, never use a value after Retire
// returned (its owner marks it closed then).
func TestNoReaderAfterRetire(t *testing.T) {
	const readersN, reads, swaps = 4, 20000, 200
	var cur atomic.Pointer[value]
	cur.Store(new(value))
	var wg sync.WaitGroup
	var used atomic.Int64
	for r := range readersN {
		wg.Go(func() {
			for i := range reads {
				s := uint64(r*reads + i)
				for {
					v := cur.Load()
					v.readers.Enter(s)
					if cur.Load() != v {
						v.readers.Leave(s)
						continue
					}
					if v.closed.Load() {
						t.Errorf("a reader is inside a retired value")
					}
					used.Add(1)
					v.readers.Leave(s)
					break
				}
			}
		})
	}
	for range swaps {
		old := cur.Swap(new(value))
		old.readers.Retire()
		old.closed.Store(true)
	}
	wg.Wait()
	if got := used.Load(); got != readersN*reads {
		t.Errorf("got %d reads, want %d", got, readersN*reads)
	}
}
