package server

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"wxlookup/wechat"
)

func TestDedupe(t *testing.T) {
	d := newDedupe(time.Minute, 4, maxDedupeReply)
	t0 := time.Unix(1_700_000_000, 0)
	if _, _, ok := d.find(nil, d.key([]byte("m1")), t0); ok {
		t.Fatalf("found a reply in an empty dedupe")
	}
	d.store(d.key([]byte("m1")), []byte("reply one"), outcomeFound, t0)
	d.store(d.key([]byte("m1")), []byte("a different reply"), outcomeNotFound, t0.Add(time.Second))
	got, o, ok := d.find(nil, d.key([]byte("m1")), t0.Add(59*time.Second))
	if !ok || string(got) != "reply one" || o != outcomeFound {
		t.Fatalf("got %q %s %v, want the first reply within the window", got, outcomeNames[o], ok)
	}
	if _, _, ok := d.find(nil, d.key([]byte("m1")), t0.Add(61*time.Second)); ok {
		t.Fatalf("found a reply after the window")
	}
	// The oldest go first: five stores into four slots drop the first.
	for i := range 5 {
		d.store(d.key(fmt.Appendf(nil, "k%d", i)), fmt.Appendf(nil, "r%d", i), outcomeFound, t0)
	}
	if _, _, ok := d.find(nil, d.key([]byte("k0")), t0); ok {
		t.Errorf("the oldest entry survived a full table")
	}
	for i := 1; i < 5; i++ {
		got, _, ok := d.find(nil, d.key(fmt.Appendf(nil, "k%d", i)), t0)
		if want := fmt.Sprintf("r%d", i); !ok || string(got) != want {
			t.Errorf("k%d: got %q %v, want %q", i, got, ok, want)
		}
	}
	// An empty reply ("success") is a reply too.
	d.store(d.key([]byte("ev")), nil, outcomeSuccess, t0)
	if got, o, ok := d.find(nil, d.key([]byte("ev")), t0); !ok || len(got) != 0 || o != outcomeSuccess {
		t.Errorf("empty reply: got %q %s %v, want it found", got, outcomeNames[o], ok)
	}
}

// TestDedupeRingOverwrite: a reply whose bytes the ring has since reused is not found (it
// is never answered with someone else's bytes); the newer reply is found intact.
func TestDedupeRingOverwrite(t *testing.T) {
	d := newDedupe(time.Minute, 64, maxDedupeReply) // the smallest ring: 16 KiB
	t0 := time.Unix(1_700_000_000, 0)
	r1, r2 := bytes.Repeat([]byte("1"), 10<<10), bytes.Repeat([]byte("2"), 10<<10)
	d.store(d.key([]byte("k1")), r1, outcomeFound, t0)
	d.store(d.key([]byte("k2")), r2, outcomeFound, t0)
	if got, _, ok := d.find(nil, d.key([]byte("k1")), t0); ok {
		t.Errorf("k1: found %.20q… after the ring reused its bytes, want not found", got)
	}
	if got, _, ok := d.find(nil, d.key([]byte("k2")), t0); !ok || !bytes.Equal(got, r2) {
		t.Errorf("k2: got %.20q… %v, want its reply", got, ok)
	}
	// A third store wraps again and k2's bytes go the same way.
	d.store(d.key([]byte("k3")), r1, outcomeFound, t0)
	if _, _, ok := d.find(nil, d.key([]byte("k2")), t0); ok {
		t.Errorf("k2 found after the ring reused its bytes")
	}
	if got, _, ok := d.find(nil, d.key([]byte("k3")), t0); !ok || !bytes.Equal(got, r1) {
		t.Errorf("k3: got %.20q… %v, want its reply", got, ok)
	}
}

// TestDedupeKeysIncludeWholeIdentity: identities that differ anywhere, the sender
// included, are different messages, even when they are long.
func TestDedupeKeysIncludeWholeIdentity(t *testing.T) {
	d := newDedupe(time.Minute, 64, 1<<16)
	t0 := time.Unix(1_700_000_000, 0)
	a := bytes.Repeat([]byte("a"), 4096)
	b := bytes.Clone(a)
	b[4000] = 'b'
	d.store(d.key(a), []byte("reply a"), outcomeFound, t0)
	if _, _, ok := d.find(nil, d.key(b), t0); ok {
		t.Fatalf("an identity differing in its 4000th byte found another's reply")
	}
}

// TestDedupeMaxReply: the largest reply the webhook can render — MaxTextBytes of content
// that is all "]]>", to and from names at their cap and likewise — fits maxDedupeReply, so
// every reply is stored; a larger one is not (and is answered afresh on a retry).
func TestDedupeMaxReply(t *testing.T) {
	name := []byte(strings.Repeat("]]>", wechat.MaxUserNameBytes/3))
	content := []byte(strings.Repeat("]]>", wechat.MaxTextBytes/3+1))
	worst := wechat.AppendTextReply(nil, name, name, 1<<62, content)
	if len(worst) > maxDedupeReply {
		t.Fatalf("the largest reply is %d bytes, over maxDedupeReply (%d)", len(worst), maxDedupeReply)
	}
	d := newDedupe(time.Minute, 64, DefaultDedupeRingBytes)
	t0 := time.Unix(1_700_000_000, 0)
	d.store(d.key([]byte("worst")), worst, outcomeFound, t0)
	if got, _, ok := d.find(nil, d.key([]byte("worst")), t0); !ok || !bytes.Equal(got, worst) {
		t.Errorf("the largest reply was not kept byte for byte")
	}
	d.store(d.key([]byte("over")), make([]byte, maxDedupeReply+1), outcomeFound, t0)
	if _, _, ok := d.find(nil, d.key([]byte("over")), t0); ok {
		t.Errorf("a reply over maxDedupeReply was stored")
	}
}

// liveHeap is the live heap after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestDedupeBoundedMemory: 100,000 distinct messages with 1 KiB identities (128-byte
// names and 256-byte event fields are the caps; a kilobyte is more than any identity
// can be) grow the live heap by no more than the stated bound, which with the defaults
// is at most 19 MiB and 4 KiB (the shards' headers).
func TestDedupeBoundedMemory(t *testing.T) {
	before := liveHeap()
	d := newDedupe(time.Minute, DefaultDedupeCapacity, DefaultDedupeRingBytes)
	if b := d.bound(); b > 19<<20+4<<10 {
		t.Errorf("bound %d bytes, over the 19 MiB and 4 KiB the doc states", b)
	}
	t0 := time.Unix(1_700_000_000, 0)
	id := make([]byte, 1024)
	reply := bytes.Repeat([]byte("r"), 300)
	for i := range 100_000 {
		binary.LittleEndian.PutUint64(id, uint64(i))
		d.store(d.key(id), reply, outcomeFound, t0)
	}
	growth := int64(liveHeap()) - int64(before)
	if growth > int64(d.bound())+1<<20 {
		t.Errorf("live heap grew by %d bytes for 100,000 messages, over the bound of %d", growth, d.bound())
	}
	// The newest are still answered byte for byte.
	binary.LittleEndian.PutUint64(id, 99_999)
	if got, _, ok := d.find(nil, d.key(id), t0); !ok || !bytes.Equal(got, reply) {
		t.Errorf("the newest message: got %.20q… %v, want its reply", got, ok)
	}
	runtime.KeepAlive(d)
}

func TestDedupeNoAllocsWhenWarm(t *testing.T) {
	d := newDedupe(time.Minute, 64, 1<<16)
	now := time.Now()
	key, reply := []byte("gh_x\x0012345678901234"), make([]byte, 300)
	buf := make([]byte, 0, 512)
	for i := range 200 {
		key[len(key)-1] = byte(i)
		d.store(d.key(key), reply, outcomeFound, now)
	}
	i := 0
	n := testing.AllocsPerRun(200, func() {
		i++
		key[len(key)-1] = byte(i)
		d.store(d.key(key), reply, outcomeFound, now)
		buf, _, _ = d.find(buf[:0], d.key(key), now)
	})
	if n != 0 {
		t.Fatalf("store+find allocate %v times, want 0", n)
	}
}
