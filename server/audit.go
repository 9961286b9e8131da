package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Defaults of AuditConfig.
const (
	DefaultAuditQueue      = 1024 // records waiting for the writer
	DefaultAuditMaxSizeMB  = 100  // file size that triggers a rotation
	DefaultAuditMaxBackups = 10   // rotated files kept
	// DefaultAuditFlushInterval is how often the writer wakes to write what was queued
	// (sooner under load): a record reaches the file within about this.
	DefaultAuditFlushInterval = 20 * time.Millisecond
)

// Caps on what an audit record keeps of a message (SPEC 9 caps OpenIDs at 128 bytes and a
// message at 10 keys); each is cut on a rune boundary.
const (
	auditOpenIDMax = 128
	auditTextMax   = 256 // a longer text is logged cut, ending in "…"
	auditKeysMax   = 10
	auditKeyMax    = notFoundKeyMax
)

const (
	// auditDataMax is the room for a record's bytes in a slot (see auditSlot).
	auditDataMax = auditOpenIDMax + auditTextMax + auditKeysMax*(1+auditKeyMax)
	// auditBatchMax is the bytes of lines the writer gathers before writing them.
	auditBatchMax = 64 << 10
	// auditHashes is how many OpenIDs' keyed hashes the writer keeps.
	auditHashes = 256
)

// auditClosed is the bit of AuditLog.tail that Close sets: once it is set no position is
// claimed, so the tail without it is where the writer's work ends.
const auditClosed = 1 << 63

// AuditConfig configures the audit log (SPEC 10). cmd fills it from WXLOOKUP_AUDIT_LOG
// (Path) and WXLOOKUP_AUDIT_HASH_KEY (HashKey); zero fields take the Default… values.
type AuditConfig struct {
	Path       string // the JSON-lines file; rotated files sit beside it
	HashKey    []byte // when set, lines carry openid_hash (keyed HMAC) instead of openid
	QueueSize  int    // records that may wait for the writer; more are dropped and counted
	MaxSizeMB  int    // a write that would grow the file beyond this rotates it first
	MaxBackups int    // rotated files kept (the oldest are removed)
	MaxAgeDays int    // rotated files older than this are removed; 0 keeps them
	Compress   bool   // gzip rotated files
	// FlushInterval is how often the writer wakes to write the queued records, at the
	// most: under load it comes back sooner (see AuditLog).
	FlushInterval time.Duration
	Logger        *slog.Logger
}

// AuditResult is how a message was answered, the audit line's "result".
type AuditResult string

// The results of an audited message.
const (
	AuditFound        AuditResult = "found"        // every key was found
	AuditNotFound     AuditResult = "not_found"    // a key was not found, nothing close
	AuditSuggested    AuditResult = "suggested"    // a key was not found, nearest keys offered
	AuditHelp         AuditResult = "help"         // the help text
	AuditWelcome      AuditResult = "welcome"      // a subscribe event's welcome text
	AuditUnauthorised AuditResult = "unauthorised" // the sender is not on the allow-list
	AuditRateLimited  AuditResult = "rate_limited" // the sender is over the rate limit
	AuditStarting     AuditResult = "starting"     // the query's first load had not completed
	AuditUnavailable  AuditResult = "unavailable"  // a read-through to the database failed
	AuditRejected     AuditResult = "rejected"     // refused otherwise
)

// AuditRecord is what the webhook reports of one answered message. Its byte slices may
// point into request buffers: AuditLog.log copies what it keeps before returning.
type AuditRecord struct {
	Time    time.Time
	Query   string // the query that answered; "" when none matched
	OpenID  []byte
	Text    []byte   // the text asked (kept up to 256 bytes)
	Keys    [][]byte // the keys asked (kept up to 10 of 64 bytes each)
	Result  AuditResult
	Latency time.Duration
}

// AuditLog writes one JSON line per answered message to a file rotated by size, off the
// hot path. log copies a record into the next slot of a fixed ring and marks it ready; a
// writer goroutine takes the ready slots in order, encodes them into a batch and writes it.
// log takes no lock, blocks on nothing and, once warm, allocates nothing: claiming a slot is
// one compare-and-swap. The writer wakes by itself: every FlushInterval, or sooner under
// load, paced to come back before a quarter of the queue fills at the rate it last saw (but
// not more often than 64 times per FlushInterval). Only when the queue is half full does
// log wake it, never for each record: waking a parked goroutine costs the webhook's handler
// a scheduler hand-off and, with an idle CPU, a futex call of several microseconds, which
// showed in its p99 while the writer relied on it under load. When QueueSize records
// wait, or the log is closed, log drops the record and counts it in
// wxlookup_audit_dropped_total. Memory is fixed: QueueSize slots (rounded up to a power of
// two) of 1,152 bytes allocated up front, a 64 KiB batch and, with a hash key, the hashes
// of 256 OpenIDs (41 KiB).
// Close writes every record queued before it and closes the file. Safe for concurrent use.
//
// The ring is a queue of many producers and one consumer. Positions 0, 1, 2, … are claimed
// in order at tail and taken in order by the writer; position p uses slot p&mask, whose
// ready holds p+1 once the record of p is in it. head is the first position the writer has
// not finished with: slots of positions before it are free.
//  1. A producer reads p = tail and head. If p-head ≥ QueueSize the queue is full: the
//     record is dropped. Otherwise it claims p by moving tail from p to p+1 with a
//     compare-and-swap (on losing the race it reads both again), fills slot p&mask (the
//     ring has at least QueueSize slots, so the slot's last position, before head, is
//     done) and stores ready = p+1.
//  2. The writer, at position p, waits for ready == p+1 and encodes the record. It moves
//     head past what it has encoded before each write and before it sleeps, not for each
//     record: producers read head, and a line the writer stores to for each record would
//     move between the CPUs for each record.
//  3. Close sets the auditClosed bit of tail, which makes every later compare-and-swap
//     fail, so tail (without the bit) is final; the writer then takes every position up to
//     it, waiting for any still being filled (filling never blocks).
type AuditLog struct {
	logger *slog.Logger
	out    io.WriteCloser
	key    []byte
	ring   []auditSlot
	mask   uint64 // len(ring)-1; len(ring) is a power of two
	size   uint64 // QueueSize
	half   uint64 // QueueSize/2: the queue length that makes log wake the writer

	_    [64]byte      // tail and head each on a cache line of its own
	tail atomic.Uint64 // written by producers
	_    [56]byte
	head atomic.Uint64 // written by the writer
	_    [56]byte

	kick  chan struct{} // wakes the writer before its interval: the queue is half full
	stop  chan struct{} // closed by Close
	every time.Duration // FlushInterval

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	// The writer's own state.
	buf      []byte
	cur      uint64 // the position being encoded …
	encoding bool   // … if any (a panic then skips it)
	mac      hash.Hash
	sum      []byte
	seed     maphash.Seed
	hashes   []auditHash
	tsec     int64          // the second of tdate and tzone
	tloc     *time.Location // … and its location
	tdate    []byte         // "2006-01-02T15:04:05" of tsec
	tzone    []byte         // "Z07:00" of tsec

	dropped, writeErrors prometheus.Counter
}

// auditSlot holds a copy of one record while it waits for the writer: the OpenID, the text
// and the keys one after another in data, right after the fixed fields, so that a usual
// record (an OpenID of 28 bytes, a key or two) fills the slot's first two cache lines only.
type auditSlot struct {
	ready   atomic.Uint64 // p+1 when it holds the record of position p (see AuditLog)
	time    time.Time
	query   string
	result  AuditResult
	latency time.Duration
	idEnd   uint16             // data[:idEnd] is the OpenID
	textEnd uint16             // data[idEnd:textEnd] the text, then each key: its length (a byte), itself
	nkeys   uint8              // keys kept
	textCut bool               // the text was cut
	data    [auditDataMax]byte // see idEnd and textEnd
	_       [auditSlotPad]byte // a slot is a whole number of cache lines
}

// auditSlotPad pads auditSlot to 1,152 bytes (18 cache lines); TestAuditSlotSize checks it.
const auditSlotPad = 40

// auditHash is an OpenID's keyed hash, kept by the writer: a plant's workers ask again and
// again, and HMAC-SHA-256 costs more than the rest of a line.
type auditHash struct {
	idLen uint8 // 0 is an empty entry (an empty OpenID is not kept)
	id    [auditOpenIDMax]byte
	hex   [32]byte
}

// NewAuditLog opens the audit log at cfg.Path (creating the file, to fail at start-up on a
// bad path) and starts its writer; it registers its metrics on reg when reg is not nil.
// Files are rotated by gopkg.in/natefinch/lumberjack.v2, whose v2.2.1 keeps one idle
// goroutine per log alive after Close (natefinch/lumberjack#56): open one per process.
// Close it to flush.
func NewAuditLog(cfg AuditConfig, reg prometheus.Registerer) (*AuditLog, error) {
	if cfg.Path == "" {
		return nil, errors.New("server: audit log: empty path")
	}
	f, err := os.OpenFile(cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("server: open audit log: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("server: open audit log: %w", err)
	}
	out := &lumberjack.Logger{
		Filename:   cfg.Path,
		MaxSize:    cmpOr(cfg.MaxSizeMB, DefaultAuditMaxSizeMB),
		MaxBackups: cmpOr(cfg.MaxBackups, DefaultAuditMaxBackups),
		MaxAge:     cfg.MaxAgeDays,
		Compress:   cfg.Compress,
	}
	return newAuditLog(cfg, reg, out)
}

// cmpOr returns v, or def when v ≤ 0.
func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// newAuditLog returns an AuditLog writing to out and starts its writer.
func newAuditLog(cfg AuditConfig, reg prometheus.Registerer, out io.WriteCloser) (*AuditLog, error) {
	a := &AuditLog{
		logger: cfg.Logger,
		out:    out,
		key:    cfg.HashKey,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wxlookup_audit_dropped_total",
			Help: "Audit records dropped because the audit log's queue was full (or the log closed).",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wxlookup_audit_write_errors_total",
			Help: "Failed writes of the audit log (each loses the lines it carried).",
		}),
	}
	if a.logger == nil {
		a.logger = slog.Default()
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.dropped, a.writeErrors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("server: register audit metrics: %w", err)
			}
		}
	}
	if len(a.key) > 0 {
		a.mac = hmac.New(sha256.New, a.key)
		a.seed, a.hashes = maphash.MakeSeed(), make([]auditHash, auditHashes)
	}
	a.size = uint64(cmpOr(cfg.QueueSize, DefaultAuditQueue))
	a.half = max(a.size/2, 1)
	a.ring = make([]auditSlot, 1<<bits.Len64(a.size-1))
	a.mask = uint64(len(a.ring) - 1)
	a.kick, a.stop, a.every = make(chan struct{}, 1), make(chan struct{}), cfg.FlushInterval
	if a.every <= 0 {
		a.every = DefaultAuditFlushInterval
	}
	a.buf = make([]byte, 0, auditBatchMax+4096)
	a.wg.Add(1)
	go a.run()
	return a, nil
}

// log queues rec for the writer, or drops and counts it when the queue is full or the log
// is closed (see AuditLog for the steps). It copies what it keeps of rec, takes no lock,
// never blocks, and allocates nothing. A nil AuditLog (the audit log off) ignores rec. Safe
// for concurrent use.
func (a *AuditLog) log(rec *AuditRecord) {
	if a == nil {
		return
	}
	for {
		p := a.tail.Load()
		// head may have passed a p read before it (p is then stale and the swap fails):
		// the difference is signed.
		queued := int64(p - a.head.Load())
		if p&auditClosed != 0 || queued >= int64(a.size) {
			a.dropped.Inc()
			return
		}
		if a.tail.CompareAndSwap(p, p+1) {
			s := &a.ring[p&a.mask]
			s.fill(rec)
			s.ready.Store(p + 1)
			if queued+1 >= int64(a.half) {
				select {
				case a.kick <- struct{}{}:
				default: // the writer has been told already
				}
			}
			return
		}
	}
}

// fill copies rec into s, within the slot's caps.
func (s *auditSlot) fill(rec *AuditRecord) {
	s.time, s.query, s.result, s.latency = rec.Time, rec.Query, rec.Result, rec.Latency
	o := copy(s.data[:], cutUTF8(rec.OpenID, auditOpenIDMax))
	s.idEnd = uint16(o)
	text := cutUTF8(rec.Text, auditTextMax)
	o += copy(s.data[o:], text)
	s.textEnd, s.textCut = uint16(o), len(text) < len(rec.Text)
	nkeys := min(len(rec.Keys), auditKeysMax)
	for _, k := range rec.Keys[:nkeys] {
		k = cutUTF8(k, auditKeyMax)
		s.data[o] = byte(len(k))
		o += 1 + copy(s.data[o+1:], k)
	}
	s.nkeys = uint8(nkeys)
}

// Close stops accepting records, waits until the writer has written every one queued
// before, and closes the file. It returns the error of closing the file; failed writes
// before it are logged and counted. Safe to call more than once and concurrently with log.
func (a *AuditLog) Close() error {
	a.closeOnce.Do(func() {
		a.tail.Or(auditClosed)
		close(a.stop)
		a.wg.Wait()
		if err := a.out.Close(); err != nil {
			a.closeErr = fmt.Errorf("server: close audit log: %w", err)
		}
	})
	return a.closeErr
}

// run is the writer goroutine: it writes what is queued until Close, restarting after a
// panic.
func (a *AuditLog) run() {
	defer a.wg.Done()
	for a.serve() {
	}
}

// serve writes what is queued each time the writer wakes (at the pace set by pace, on a
// kick, and on Close). It returns false when the log is closed and everything queued is written,
// and true after a recovered panic (logged and counted; the record being encoded, or the
// batch being written, is lost) so that run starts it again.
func (a *AuditLog) serve() (again bool) {
	defer func() {
		if r := recover(); r != nil {
			a.logger.Error("server: audit log writer: panic", "panic", r, "stack", string(debug.Stack()))
			a.writeErrors.Inc()
			a.buf = a.buf[:0]
			if a.encoding {
				a.encoding = false
				a.head.Store(a.cur + 1) // the batch is lost, and the record that panicked
			}
			again = true
		}
	}()
	tick := time.NewTicker(a.every)
	defer tick.Stop()
	last := time.Now()
	for {
		n := a.take(false)
		now := time.Now()
		tick.Reset(a.pace(n, now.Sub(last)))
		last = now
		select {
		case <-tick.C:
		case <-a.kick:
		case <-a.stop:
			a.take(true)
			return false
		}
	}
}

// pace returns how long the writer may sleep, having taken n records written in about
// elapsed: the time in which a quarter of the queue fills at that rate, between
// FlushInterval/64 and FlushInterval.
func (a *AuditLog) pace(n uint64, elapsed time.Duration) time.Duration {
	if n == 0 || elapsed >= a.every {
		return a.every
	}
	return min(a.every, max(a.every/64, elapsed*time.Duration(max(a.size/4, 1))/time.Duration(n)))
}

// take encodes the ready records from head on, in order, into the batch, writing it
// whenever it is full and at the end, so lines reach the file whole (a rotation never splits
// a line). It stops at the first position not ready; with closed (after Close) it instead
// takes every position up to the final tail, waiting for those still being filled. It
// returns how many it took.
func (a *AuditLog) take(closed bool) uint64 {
	end := a.tail.Load() &^ auditClosed // final when closed
	p := a.head.Load()
	from := p
	for ; !closed || p != end; p++ {
		s := &a.ring[p&a.mask]
		if s.ready.Load() != p+1 {
			if !closed {
				break
			}
			a.head.Store(p)
			for s.ready.Load() != p+1 {
				runtime.Gosched() // a producer claimed p before Close and is filling it
			}
		}
		a.cur, a.encoding = p, true
		a.buf = a.encode(a.buf, s)
		a.encoding = false
		if len(a.buf) >= auditBatchMax {
			a.head.Store(p + 1)
			a.flush()
		}
	}
	a.head.Store(p)
	a.flush()
	return p - from
}

// flush writes the batch, if any. A failed write is logged and counted, and its lines lost.
func (a *AuditLog) flush() {
	if len(a.buf) == 0 {
		return
	}
	if _, err := a.out.Write(a.buf); err != nil {
		a.writeErrors.Inc()
		a.logger.Error("server: write audit log", "err", err)
	}
	a.buf = a.buf[:0]
}

// encode appends the JSON line of s to dst:
//
//	{"time":"2026-01-02T03:04:05.678+08:00","query":"location","openid":"o6_bm…",
//	 "text":"?18-546","keys":["18-546"],"result":"found","latency_us":42}
//
// with "openid_hash" (hex of the first 16 bytes of HMAC-SHA-256 under the hash key) in
// place of "openid" when a hash key is set.
func (a *AuditLog) encode(dst []byte, s *auditSlot) []byte {
	dst = append(dst, `{"time":"`...)
	dst = a.appendTime(dst, s.time)
	dst = append(dst, `","query":`...)
	dst = appendJSONString(dst, s.query)
	id := s.data[:s.idEnd]
	if a.mac != nil {
		dst = append(dst, `,"openid_hash":"`...)
		dst = append(dst, a.hashOf(id)...)
		dst = append(dst, '"')
	} else {
		dst = append(dst, `,"openid":`...)
		dst = appendJSONString(dst, id)
	}
	dst = append(dst, `,"text":`...)
	dst = appendJSONString(dst, s.data[s.idEnd:s.textEnd])
	if s.textCut {
		dst = append(dst[:len(dst)-1], `…"`...) // mark the cut inside the string
	}
	dst = append(dst, `,"keys":[`...)
	keys := s.data[s.textEnd:]
	for i := range s.nkeys {
		if i > 0 {
			dst = append(dst, ',')
		}
		n := int(keys[0])
		dst = appendJSONString(dst, keys[1:1+n])
		keys = keys[1+n:]
	}
	dst = append(dst, `],"result":`...)
	dst = appendJSONString(dst, s.result)
	dst = append(dst, `,"latency_us":`...)
	dst = strconv.AppendInt(dst, s.latency.Microseconds(), 10)
	return append(dst, "}\n"...)
}

// appendTime appends t as 2006-01-02T15:04:05.000Z07:00 (milliseconds cut, not rounded, as
// time.Format does). Records come in time order, many to a second, so the date, the time to
// the second and the zone are formatted once per second and kept.
func (a *AuditLog) appendTime(dst []byte, t time.Time) []byte {
	if sec, loc := t.Unix(), t.Location(); sec != a.tsec || loc != a.tloc {
		a.tsec, a.tloc = sec, loc
		a.tdate = t.AppendFormat(a.tdate[:0], "2006-01-02T15:04:05")
		a.tzone = t.AppendFormat(a.tzone[:0], "Z07:00")
	}
	ms := t.Nanosecond() / 1e6
	dst = append(dst, a.tdate...)
	dst = append(dst, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(dst, a.tzone...)
}

// hashOf returns the hex of the first 16 bytes of id's HMAC-SHA-256 under the hash key,
// from the writer's table of recent OpenIDs (one entry per bucket; a new OpenID replaces
// the one in its bucket). The result is valid until the next call.
func (a *AuditLog) hashOf(id []byte) []byte {
	h := &a.hashes[maphash.Bytes(a.seed, id)%auditHashes]
	if h.idLen == 0 || string(h.id[:h.idLen]) != string(id) {
		a.mac.Reset()
		a.mac.Write(id)
		a.sum = a.mac.Sum(a.sum[:0])
		hex.Encode(h.hex[:], a.sum[:16])
		h.idLen = uint8(copy(h.id[:], id)) // an empty id leaves the entry empty
	}
	return h.hex[:]
}

// appendJSONString appends s as a JSON string: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, and U+2028/U+2029 escaped (JavaScript reads
// them as line ends). What needs no escape is copied in runs.
func appendJSONString[T ~string | ~[]byte](dst []byte, s T) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	run := 0 // s[run:i] is copied as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonPlain[c] {
				i++
				continue
			}
			dst = append(dst, s[run:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			run = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[run:i]...)
			dst = append(dst, `\ufffd`...)
			run = i + size
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[run:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xF])
			run = i + size
		}
		i += size
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"')
}

// jsonPlain says which ASCII bytes a JSON string holds as they are.
var jsonPlain = func() (t [utf8.RuneSelf]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\'
	}
	return t
}()
