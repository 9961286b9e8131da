package server

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"wxlookup/internal/logtest"
	"wxlookup/internal/metrictest"
)

// memWriter is an audit log output in memory. When gate is set, each Write first signals
// entered (when there is room) and then waits for gate to close: a test can hold the
// writer inside a write.
type memWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	closed  bool
	entered chan struct{}
	gate    chan struct{}
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.gate != nil {
		select {
		case w.entered <- struct{}{}:
		default:
		}
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func (w *memWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return nil
}

// auditLine is an audit line as JSON gives it back; the pointers tell absent from empty.
type auditLine struct {
	Time       string   `json:"time"`
	Query      string   `json:"query"`
	OpenID     *string  `json:"openid"`
	OpenIDHash *string  `json:"openid_hash"`
	Text       string   `json:"text"`
	Keys       []string `json:"keys"`
	Result     string   `json:"result"`
	LatencyUS  int64    `json:"latency_us"`
}

// parseLines decodes every line of b, failing the test on any that is not one JSON object.
func parseLines(tb testing.TB, b []byte) []auditLine {
	tb.Helper()
	var out []auditLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			tb.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// newTestAudit returns an AuditLog writing to w, with its metrics on a fresh registry.
func newTestAudit(tb testing.TB, cfg AuditConfig, w io.WriteCloser) (*AuditLog, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	a, err := newAuditLog(cfg, reg, w)
	if err != nil {
		tb.Fatalf("newAuditLog: %v", err)
	}
	tb.Cleanup(func() { a.Close() })
	return a, reg
}

// wantHash is the documented openid_hash: hex of HMAC-SHA-256's first 16 bytes.
func wantHash(key, openID string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(openID))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

func TestAuditLogLines(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.FixedZone("CST", 8*3600))
	long := strings.Repeat("车", 100) // 300 bytes: cut to 85 runes (255 bytes)
	var manyKeys [][]byte
	for i := range 12 {
		manyKeys = append(manyKeys, []byte("k"+strconv.Itoa(i)))
	}
	tests := []struct {
		name    string
		hashKey string
		rec     AuditRecord
		want    auditLine
	}{
		{"found", "", AuditRecord{Time: when, Query: "location", OpenID: []byte("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
			Text: []byte("?18-546"), Keys: [][]byte{[]byte("18-546")}, Result: AuditFound, Latency: 42 * time.Microsecond},
			auditLine{Time: "2026-01-02T03:04:05.678+08:00", Query: "location", OpenID: ptr("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
				Text: "?18-546", Keys: []string{"18-546"}, Result: "found", LatencyUS: 42}},
		{"hashed openid", "s3cret", AuditRecord{Time: when.UTC(), Query: "stock", OpenID: []byte("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
			Text: []byte("#P-100"), Keys: [][]byte{[]byte("p-100")}, Result: AuditNotFound, Latency: 1500 * time.Microsecond},
			auditLine{Time: "2026-01-01T19:04:05.678Z", Query: "stock", OpenIDHash: ptr(wantHash("s3cret", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M")),
				Text: "#P-100", Keys: []string{"p-100"}, Result: "not_found", LatencyUS: 1500}},
		{"escaped text", "", AuditRecord{Time: when, OpenID: []byte("o1"), Text: []byte("a\"b\\c\nd\x01e\xffé\u2028"),
			Result: AuditHelp},
			auditLine{Time: "2026-01-02T03:04:05.678+08:00", OpenID: ptr("o1"), Text: "a\"b\\c\nd\x01e\uFFFDé\u2028",
				Keys: []string{}, Result: "help"}},
		{"long text cut", "", AuditRecord{Time: when, OpenID: []byte("o1"), Text: []byte(long), Result: AuditRejected},
			auditLine{Time: "2026-01-02T03:04:05.678+08:00", OpenID: ptr("o1"), Text: strings.Repeat("车", 85) + "…",
				Keys: []string{}, Result: "rejected"}},
		{"keys capped", "", AuditRecord{Time: when, OpenID: []byte("o1"), Keys: manyKeys, Result: AuditSuggested},
			auditLine{Time: "2026-01-02T03:04:05.678+08:00", OpenID: ptr("o1"),
				Keys: []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}, Result: "suggested"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &memWriter{}
			a, _ := newTestAudit(t, AuditConfig{HashKey: []byte(tt.hashKey)}, w)
			rec := tt.rec
			a.log(&rec)
			if err := a.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			lines := parseLines(t, w.buf.Bytes())
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want 1: %q", len(lines), w.buf.String())
			}
			got, want := lines[0], tt.want
			if got.Keys == nil {
				got.Keys = []string{}
			}
			if !equalLine(got, want) {
				t.Errorf("got %s, want %s", show(got), show(want))
			}
		})
	}
}

func ptr(s string) *string { return &s }

func equalLine(a, b auditLine) bool {
	eq := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.Time == b.Time && a.Query == b.Query && eq(a.OpenID, b.OpenID) && eq(a.OpenIDHash, b.OpenIDHash) &&
		a.Text == b.Text && slices.Equal(a.Keys, b.Keys) && a.Result == b.Result && a.LatencyUS == b.LatencyUS
}

func show(l auditLine) string {
	b, _ := json.Marshal(l)
	return string(b)
}

// TestAuditLogHashIsKeyedAndStable: the same OpenID hashes the same under one key, and
// differently under another key; distinct OpenIDs hash differently.
func TestAuditLogHashIsKeyedAndStable(t *testing.T) {
	hashes := func(key string, ids ...string) []string {
		w := &memWriter{}
		a, _ := newTestAudit(t, AuditConfig{HashKey: []byte(key)}, w)
		for _, id := range ids {
			a.log(&AuditRecord{OpenID: []byte(id), Result: AuditFound})
		}
		a.Close()
		var out []string
		for _, l := range parseLines(t, w.buf.Bytes()) {
			if l.OpenID != nil || l.OpenIDHash == nil {
				t.Fatalf("line has openid %v and openid_hash %v: want only the hash", l.OpenID, l.OpenIDHash)
			}
			out = append(out, *l.OpenIDHash)
		}
		return out
	}
	one := hashes("k1", "alice", "bob", "alice")
	other := hashes("k2", "alice")
	if one[0] != one[2] {
		t.Errorf("same OpenID, same key: got %q and %q, want equal", one[0], one[2])
	}
	if one[0] == one[1] {
		t.Errorf("distinct OpenIDs: both hash to %q", one[0])
	}
	if one[0] == other[0] {
		t.Errorf("distinct keys: both hash alice to %q", one[0])
	}
	if len(one[0]) != 32 {
		t.Errorf("hash %q: got %d hex digits, want 32", one[0], len(one[0]))
	}
}

// TestAuditLogDropsWhenFull holds the writer inside a write: once every slot is queued,
// log drops and counts instead of blocking.
func TestAuditLogDropsWhenFull(t *testing.T) {
	w := &memWriter{entered: make(chan struct{}, 16), gate: make(chan struct{})}
	a, reg := newTestAudit(t, AuditConfig{QueueSize: 4}, w)
	rec := func(i int) *AuditRecord {
		return &AuditRecord{OpenID: []byte("o"), Text: []byte(strconv.Itoa(i)), Result: AuditFound}
	}
	a.log(rec(0))
	<-w.entered // the writer is inside Write with record 0; every slot is free again
	for i := 1; i <= 7; i++ {
		a.log(rec(i)) // 1-4 fill the four slots, 5-7 are dropped
	}
	if got := metrictest.Value(t, reg, "wxlookup_audit_dropped_total"); got != 3 {
		t.Errorf("dropped: got %v, want 3", got)
	}
	close(w.gate)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var texts []string
	for _, l := range parseLines(t, w.buf.Bytes()) {
		texts = append(texts, l.Text)
	}
	if want := []string{"0", "1", "2", "3", "4"}; !slices.Equal(texts, want) {
		t.Errorf("lines written: got %q, want %q", texts, want)
	}
}

// TestAuditLogCloseFlushes: Close returns after every queued record is written, in order,
// and the output is closed; logging after Close is dropped and counted, not a panic.
func TestAuditLogCloseFlushes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	w := &memWriter{}
	reg := prometheus.NewRegistry()
	a, err := newAuditLog(AuditConfig{QueueSize: 1000}, reg, w)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		a.log(&AuditRecord{OpenID: []byte("o"), Text: []byte(strconv.Itoa(i)), Result: AuditFound})
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lines := parseLines(t, w.buf.Bytes())
	if len(lines) != n {
		t.Fatalf("got %d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l.Text != strconv.Itoa(i) {
			t.Fatalf("line %d: got text %q, want %q", i, l.Text, strconv.Itoa(i))
		}
	}
	if !w.closed {
		t.Error("output not closed")
	}
	a.log(&AuditRecord{Result: AuditFound})
	if got := metrictest.Value(t, reg, "wxlookup_audit_dropped_total"); got != 1 {
		t.Errorf("dropped after Close: got %v, want 1", got)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestAuditLogRotates writes about 1.5 MB through the real file rotation with a 1 MB limit:
// the file is rotated once, no file exceeds the limit, and every line is whole and present
// exactly once across the two files. The writer goroutine is gone after Close.
func TestAuditLogRotates(t *testing.T) {
	// lumberjack v2.2.1 starts a goroutine per Logger that Close does not stop
	// (natefinch/lumberjack#56, #205); every other goroutine must be gone.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	a, err := NewAuditLog(AuditConfig{Path: path, MaxSizeMB: 1, QueueSize: 4000}, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("NewAuditLog: %v", err)
	}
	text := []byte(strings.Repeat("x", 300))
	const n = 3800 // lines of about 400 bytes
	for i := range n {
		a.log(&AuditRecord{Time: time.Now(), OpenID: []byte("o"), Text: text,
			Keys: [][]byte{[]byte(strconv.Itoa(i))}, Result: AuditFound})
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "audit*.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("files: got %q, want audit.log and one rotated file", files)
	}
	seen := make([]bool, n)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1<<20 {
			t.Errorf("%s: %d bytes, want ≤ 1 MiB", f, len(b))
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s ends inside a line", f)
		}
		for _, l := range parseLines(t, b) {
			i, err := strconv.Atoi(l.Keys[0])
			if err != nil || seen[i] {
				t.Fatalf("%s: line %q read twice or bad", f, l.Keys[0])
			}
			seen[i] = true
		}
	}
	if i := slices.Index(seen, false); i >= 0 {
		t.Errorf("line %d missing", i)
	}
}

// panicWriter panics in its first Write and then writes to w.
type panicWriter struct {
	memWriter
	once sync.Once
}

func (w *panicWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { panic("disk on fire") })
	return w.memWriter.Write(p)
}

// TestAuditLogWriterSurvivesPanic: a panic in the writer goroutine is recovered, logged and
// counted, and the writer goes on with the next records.
func TestAuditLogWriterSurvivesPanic(t *testing.T) {
	var logs logtest.Buffer
	w := &panicWriter{}
	a, reg := newTestAudit(t, AuditConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, w)
	a.log(&AuditRecord{Text: []byte("lost"), Result: AuditFound})
	for deadline := time.Now().Add(10 * time.Second); metrictest.Value(t, reg, "wxlookup_audit_write_errors_total") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the writer's panic was not counted within 10s")
		}
		runtime.Gosched()
	}
	a.log(&AuditRecord{Text: []byte("kept"), Result: AuditFound})
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if lines := parseLines(t, w.buf.Bytes()); len(lines) != 1 || lines[0].Text != "kept" {
		t.Errorf("lines after the panic: got %+v, want the one with text \"kept\"", lines)
	}
	if got := logs.String(); !strings.Contains(got, "disk on fire") {
		t.Errorf("log: got %q, want the panic logged", got)
	}
}

func TestNewAuditLogErrors(t *testing.T) {
	tests := []struct {
		name, path, want string
	}{
		{"empty path", "", "server: audit log: empty path"},
		{"missing directory", filepath.Join(t.TempDir(), "no", "audit.log"), "server: open audit log: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAuditLog(AuditConfig{Path: tt.path}, nil)
			if err == nil {
				a.Close()
				t.Fatalf("got no error, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("got %q, want it to start with %q", err, tt.want)
			}
		})
	}
}

// TestAuditLogEnqueueAllocs: once the slots are warm, log allocates nothing (and neither
// does the writer, with a plain output).
func TestAuditLogEnqueueAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	a, _ := newTestAudit(t, AuditConfig{QueueSize: 64}, nopWriteCloser{io.Discard})
	rec := &AuditRecord{Time: time.Now(), Query: "location", OpenID: []byte("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
		Text: []byte("?18-546 a7-001"), Keys: [][]byte{[]byte("18-546"), []byte("a7-001")}, Result: AuditFound}
	if got := testing.AllocsPerRun(1000, func() { a.log(rec) }); got != 0 {
		t.Errorf("allocations per log: got %v, want 0", got)
	}
}

// nopWriteCloser adds a Close that does nothing to a Writer.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// BenchmarkAuditLog times log: "enqueue" queues every record (the timer stops after each
// queue-full of records until the writer has drained them), "full" drops every record (the
// writer is held inside a write), and "encode…" is the writer's work per line.
//
//	go test -run '^$' -bench AuditLog -benchmem ./server/
func BenchmarkAuditLog(b *testing.B) {
	rec := &AuditRecord{Time: time.Now(), Query: "location", OpenID: []byte("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
		Text: []byte("?18-546"), Keys: [][]byte{[]byte("18-546")}, Result: AuditFound, Latency: 40 * time.Microsecond}
	b.Run("enqueue", func(b *testing.B) {
		const n = 1024
		a, reg := newTestAudit(b, AuditConfig{QueueSize: n}, nopWriteCloser{io.Discard})
		i := 0
		for b.Loop() {
			a.log(rec)
			if i++; i%n == 0 {
				b.StopTimer()
				waitAuditIdle(b, a)
				b.StartTimer()
			}
		}
		b.ReportMetric(metrictest.Value(b, reg, "wxlookup_audit_dropped_total")/float64(b.N), "drops/op")
	})
	b.Run("full", func(b *testing.B) {
		w := &memWriter{entered: make(chan struct{}, 1), gate: make(chan struct{})}
		a, _ := newTestAudit(b, AuditConfig{QueueSize: 16}, w)
		a.log(rec)
		<-w.entered
		for range 16 {
			a.log(rec)
		}
		for b.Loop() {
			a.log(rec)
		}
		b.StopTimer()
		close(w.gate)
	})
	for _, tt := range []struct {
		name, key string
		ids       int // distinct OpenIDs, in turn
	}{
		{"encode", "", 1},
		{"encode-hashed", "k", 1},                   // the hash of an OpenID seen before
		{"encode-hashed-new", "k", 4 * auditHashes}, // mostly OpenIDs not seen lately
	} {
		b.Run(tt.name, func(b *testing.B) {
			a, _ := newTestAudit(b, AuditConfig{HashKey: []byte(tt.key)}, nopWriteCloser{io.Discard})
			slots := make([]auditSlot, tt.ids)
			for i := range slots {
				r := *rec
				r.OpenID = fmt.Appendf(nil, "o6_bmjrPTlm6_2sgVt7h%08d", i)
				slots[i].fill(&r)
			}
			buf := make([]byte, 0, 512)
			i := 0
			for b.Loop() {
				buf = a.encode(buf[:0], &slots[i])
				if i++; i == len(slots) {
					i = 0
				}
			}
		})
	}
}

// pending returns the records queued and not yet taken by the writer.
func (a *AuditLog) pending() int { return int(a.tail.Load()&^auditClosed - a.head.Load()) }

// waitAuditIdle wakes a's writer and waits until it has taken every queued record.
func waitAuditIdle(tb testing.TB, a *AuditLog) {
	tb.Helper()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	for deadline := time.Now().Add(10 * time.Second); a.pending() > 0; {
		if time.Now().After(deadline) {
			tb.Fatalf("the audit log's writer left %d records queued for 10s", a.pending())
		}
		runtime.Gosched()
	}
}

// TestAuditSlotSize: a slot is a whole number of cache lines, so that the writer reading
// one slot and a producer filling the next touch no line in common, and its data starts
// early enough for a usual record (about 45 bytes of data) to end in its second line.
func TestAuditSlotSize(t *testing.T) {
	if got, want := unsafe.Sizeof(auditSlot{}), uintptr(1152); got != want {
		t.Errorf("size: got %d bytes, want %d (adjust auditSlotPad)", got, want)
	}
	if got, want := unsafe.Offsetof(auditSlot{}.data), uintptr(128-48); got > want {
		t.Errorf("data at offset %d, want at most %d", got, want)
	}
}

// TestAuditLogConcurrentProducers: producers log at once into a small ring, some while
// Close runs. Every record is written exactly once or counted as dropped, each producer's
// lines keep its order, and every line is whole.
func TestAuditLogConcurrentProducers(t *testing.T) {
	const producers, each = 4, 3000
	tests := []struct {
		name       string
		closeAfter int // records of producer 0 logged before Close runs; 0: after all
	}{
		{"then close", 0},
		{"close while logging", each / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &memWriter{}
			a, reg := newTestAudit(t, AuditConfig{QueueSize: 64}, w)
			closing := make(chan struct{})
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					id := []byte("o" + strconv.Itoa(p))
					var text []byte
					for i := range each {
						if p == 0 && i == tt.closeAfter && tt.closeAfter > 0 {
							close(closing)
						}
						text = strconv.AppendInt(text[:0], int64(i), 10)
						a.log(&AuditRecord{OpenID: id, Text: text, Keys: [][]byte{id, text}, Result: AuditFound})
					}
				})
			}
			if tt.closeAfter > 0 {
				<-closing
			} else {
				wg.Wait()
			}
			if err := a.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			wg.Wait()
			last := make(map[string]int)
			lines := parseLines(t, w.buf.Bytes())
			for _, l := range lines {
				i, err := strconv.Atoi(l.Text)
				if err != nil || l.OpenID == nil || !slices.Equal(l.Keys, []string{*l.OpenID, l.Text}) {
					t.Fatalf("line %s: mixed or bad fields", show(l))
				}
				if prev, ok := last[*l.OpenID]; ok && i <= prev {
					t.Fatalf("%s: record %d after %d", *l.OpenID, i, prev)
				}
				last[*l.OpenID] = i
			}
			dropped := metrictest.Value(t, reg, "wxlookup_audit_dropped_total")
			if got := len(lines) + int(dropped); got != producers*each {
				t.Errorf("written %d + dropped %v: got %d, want %d", len(lines), dropped, got, producers*each)
			}
		})
	}
}

// TestAuditLogCloseWaitsForFilling: a producer that claimed a slot before Close and is still
// filling it (held here by claiming as log does, and filling later) has its record written:
// Close's writer waits for it rather than stopping at the first slot not ready.
func TestAuditLogCloseWaitsForFilling(t *testing.T) {
	w := &memWriter{}
	a, reg := newTestAudit(t, AuditConfig{QueueSize: 4}, w)
	a.log(&AuditRecord{Text: []byte("before"), Result: AuditFound})
	p := a.tail.Load()
	if !a.tail.CompareAndSwap(p, p+1) {
		t.Fatal("could not claim the next position")
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	for deadline := time.Now().Add(10 * time.Second); a.head.Load() != p || a.tail.Load()&auditClosed == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the writer did not reach the claimed position within 10s (head %d, tail %#x)", a.head.Load(), a.tail.Load())
		}
		runtime.Gosched()
	}
	a.log(&AuditRecord{Text: []byte("after"), Result: AuditFound}) // after Close: dropped
	s := &a.ring[p&a.mask]
	s.fill(&AuditRecord{Text: []byte("filling"), Result: AuditFound})
	s.ready.Store(p + 1)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	var texts []string
	for _, l := range parseLines(t, w.buf.Bytes()) {
		texts = append(texts, l.Text)
	}
	if want := []string{"before", "filling"}; !slices.Equal(texts, want) {
		t.Errorf("lines: got %q, want %q", texts, want)
	}
	if got := metrictest.Value(t, reg, "wxlookup_audit_dropped_total"); got != 1 {
		t.Errorf("dropped: got %v, want 1", got)
	}
}

func TestAuditLogPace(t *testing.T) {
	a := &AuditLog{size: 1024, every: 20 * time.Millisecond}
	tests := []struct {
		name    string
		n       uint64
		elapsed time.Duration
		want    time.Duration
	}{
		{"idle", 0, 20 * time.Millisecond, 20 * time.Millisecond},
		{"slow", 10, 20 * time.Millisecond, 20 * time.Millisecond},
		{"long asleep", 1000, time.Hour, 20 * time.Millisecond},
		{"a quarter in 1ms", 256, time.Millisecond, time.Millisecond},
		{"a half in 1ms", 512, time.Millisecond, 500 * time.Microsecond},
		{"a quarter in 8ms", 256, 8 * time.Millisecond, 8 * time.Millisecond},
		{"floor", 1024, 100 * time.Microsecond, 20 * time.Millisecond / 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.pace(tt.n, tt.elapsed); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestAuditLogHashTable: with more OpenIDs than the writer keeps hashes of, asked in turn
// and again, every line carries the OpenID's own hash.
func TestAuditLogHashTable(t *testing.T) {
	w := &memWriter{}
	a, _ := newTestAudit(t, AuditConfig{HashKey: []byte("k"), QueueSize: 8192}, w)
	var ids []string
	for i := range 3 * auditHashes {
		ids = append(ids, "o"+strconv.Itoa(i%(2*auditHashes)))
	}
	ids = append(ids, "", strings.Repeat("x", 200)) // empty; cut to 128 bytes
	for _, id := range ids {
		a.log(&AuditRecord{OpenID: []byte(id), Result: AuditFound})
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lines := parseLines(t, w.buf.Bytes())
	if len(lines) != len(ids) {
		t.Fatalf("got %d lines, want %d", len(lines), len(ids))
	}
	for i, l := range lines {
		want := wantHash("k", ids[i][:min(len(ids[i]), auditOpenIDMax)])
		if l.OpenIDHash == nil || *l.OpenIDHash != want {
			t.Fatalf("line %d (%q): got %v, want %q", i, ids[i], l.OpenIDHash, want)
		}
	}
}

// TestAuditLogTimes: the time of each line is time.Format's, whether the second or the
// zone changes from one record to the next or not.
func TestAuditLogTimes(t *testing.T) {
	cst := time.FixedZone("CST", 8*3600)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, cst)
	times := []time.Time{
		t0, t0.Add(-999_999_999), t0.UTC(), t0.Add(1), t0.Add(time.Millisecond),
		t0.In(time.FixedZone("X", -(3*3600 + 30*60))), time.Date(1969, 12, 31, 23, 59, 59, 5e6, time.UTC), t0,
	}
	w := &memWriter{}
	a, _ := newTestAudit(t, AuditConfig{}, w)
	for _, tm := range times {
		a.log(&AuditRecord{Time: tm, Result: AuditFound})
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lines := parseLines(t, w.buf.Bytes())
	if len(lines) != len(times) {
		t.Fatalf("got %d lines, want %d", len(lines), len(times))
	}
	for i, l := range lines {
		if want := times[i].Format("2006-01-02T15:04:05.000Z07:00"); l.Time != want {
			t.Errorf("line %d: got %q, want %q", i, l.Time, want)
		}
	}
}

// FuzzAuditJSONString: any bytes encode to one JSON string that decodes to the same text,
// each byte of invalid UTF-8 read as U+FFFD, with no raw line end in it.
func FuzzAuditJSONString(f *testing.F) {
	for _, s := range []string{"", "?18-546", "a\"b\\c\nd\x01e\xffé\u2028\u2029", "车体新厂房3号", "\xe8\xbd", "\x7f\x00\t\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		b := appendJSONString(nil, s)
		if i := bytes.IndexAny(b, "\n\r\u2028\u2029"); i >= 0 {
			t.Fatalf("%q: a line end at %d", b, i)
		}
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if want := string([]rune(string(s))); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}
