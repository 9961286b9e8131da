package logtest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&b, "line %d\n", i)
		}()
	}
	wg.Wait()
	if got := strings.Count(b.String(), "\n"); got != 8 {
		t.Fatalf("got %d lines, want 8", got)
	}
	b.Reset()
	if got := b.String(); got != "" {
		t.Fatalf("after Reset got %q, want empty", got)
	}
}
