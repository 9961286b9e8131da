package cache

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	var pauses []time.Duration
	p := newPacer(true)
	p.sleep = func(_ context.Context, d time.Duration) error {
		pauses = append(pauses, d)
		return nil
	}
	for range 3*paceEvery + 10 {
		if err := p.tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(pauses) != 3 {
		t.Fatalf("got %d pauses for 3 slices of rows, want 3", len(pauses))
	}
	for i, d := range pauses {
		if d < 0 {
			t.Errorf("pause %d is %v, want the slice's own duration (≥ 0)", i, d)
		}
	}

	off := newPacer(false)
	off.sleep = func(context.Context, time.Duration) error { t.Fatal("an unpaced build paused"); return nil }
	for range 2 * paceEvery {
		off.tick(context.Background())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	real := newPacer(true)
	var err error
	for range paceEvery {
		err = real.tick(ctx)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("pause after cancel: got %v, want context.Canceled", err)
	}
}
