package server

import (
	"fmt"
	"testing"
	"time"
)

func TestDedupe(t *testing.T) {
	d := newDedupe(time.Minute, 4)
	t0 := time.Unix(1_700_000_000, 0)
	if _, _, ok := d.find(nil, []byte("m1"), t0); ok {
		t.Fatalf("found a reply in an empty dedupe")
	}
	d.store([]byte("m1"), []byte("reply one"), outcomeFound, t0)
	d.store([]byte("m1"), []byte("a different reply"), outcomeNotFound, t0.Add(time.Second))
	got, o, ok := d.find(nil, []byte("m1"), t0.Add(59*time.Second))
	if !ok || string(got) != "reply one" || o != outcomeFound {
		t.Fatalf("got %q %s %v, want the first reply within the window", got, outcomeNames[o], ok)
	}
	if _, _, ok := d.find(nil, []byte("m1"), t0.Add(61*time.Second)); ok {
		t.Fatalf("found a reply after the window")
	}
	// The ring keeps the newest: five stores into four slots drop the oldest.
	for i := range 5 {
		d.store(fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "r%d", i), outcomeFound, t0)
	}
	if _, _, ok := d.find(nil, []byte("k0"), t0); ok {
		t.Errorf("the oldest entry survived a full ring")
	}
	for i := 1; i < 5; i++ {
		got, _, ok := d.find(nil, fmt.Appendf(nil, "k%d", i), t0)
		if want := fmt.Sprintf("r%d", i); !ok || string(got) != want {
			t.Errorf("k%d: got %q %v, want %q", i, got, ok, want)
		}
	}
}

func TestDedupeNoAllocsWhenWarm(t *testing.T) {
	d := newDedupe(time.Minute, 64)
	now := time.Now()
	key, reply := []byte("gh_x\x0012345678901234"), make([]byte, 300)
	buf := make([]byte, 0, 512)
	for i := range 200 { // fill every slot's buffers
		key[len(key)-1] = byte(i)
		d.store(key, reply, outcomeFound, now)
	}
	i := 0
	n := testing.AllocsPerRun(200, func() {
		i++
		key[len(key)-1] = byte(i)
		d.store(key, reply, outcomeFound, now)
		buf, _, _ = d.find(buf[:0], key, now)
	})
	if n != 0 {
		t.Fatalf("store+find allocate %v times, want 0", n)
	}
}
