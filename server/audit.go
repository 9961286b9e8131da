package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
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
	// (sooner when the queue is half full): a record reaches the file within about this.
	DefaultAuditFlushInterval = 20 * time.Millisecond
)

// Caps on what an audit record keeps of a message (SPEC 9 caps OpenIDs at 128 bytes and a
// message at 10 keys); each is cut on a rune boundary.
const (
	auditOpenIDMax = 128
	auditTextMax   = 256 // a longer text is logged cut, ending in "…"
	auditKeysMax   = 10
	auditKeyMax    = notFoundKeyMax
	auditBatchMax  = 64 << 10 // bytes of lines the writer gathers before writing
)

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
	// FlushInterval is how often the writer wakes to write the queued records.
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
// hot path: log copies a record into a free slot of a fixed pool and queues it, and a
// writer goroutine encodes and writes. The writer wakes every FlushInterval, or when the
// queue is half full, never for each record: waking a parked goroutine from the webhook's
// handler would cost it a scheduler hand-off (and, with an idle CPU, a futex call) on
// every message, which showed in the handler's p99. When every slot is taken, log drops the record and
// counts it in wxlookup_audit_dropped_total; it never blocks and, once the slots' buffers
// are warm, never allocates. Its memory is fixed: QueueSize slots of about 1 KiB (the caps
// below), allocated up front, and a 64 KiB batch. Close writes every queued record and
// closes the file. Safe for concurrent use.
type AuditLog struct {
	logger *slog.Logger
	out    io.WriteCloser
	key    []byte

	// mu orders log against Close: log holds it shared while it queues, Close exclusively
	// to stop queueing and close the queue, so no record is queued after the writer's last.
	mu     sync.RWMutex
	closed bool
	free   chan *auditSlot // slots not in use
	queue  chan *auditSlot // slots waiting for the writer (room for every slot)
	kick   chan struct{}   // wakes the writer before its interval: the queue is half full
	stop   chan struct{}   // closed by Close, after queue
	every  time.Duration   // FlushInterval

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	// The writer's own state.
	buf []byte
	cur *auditSlot // the slot being encoded, returned to free after a panic
	mac hash.Hash
	sum []byte

	dropped, writeErrors prometheus.Counter
}

// auditSlot holds a copy of one record while it waits for the writer.
type auditSlot struct {
	time    time.Time
	query   string
	result  AuditResult
	latency time.Duration
	openID  []byte
	text    []byte
	textCut bool
	keys    []byte            // the keys, concatenated
	ends    [auditKeysMax]int // keys[i] is keys[ends[i-1]:ends[i]]
	nkeys   int
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
	}
	n := cmpOr(cfg.QueueSize, DefaultAuditQueue)
	a.free, a.queue = make(chan *auditSlot, n), make(chan *auditSlot, n)
	a.kick, a.stop, a.every = make(chan struct{}, 1), make(chan struct{}), cfg.FlushInterval
	if a.every <= 0 {
		a.every = DefaultAuditFlushInterval
	}
	for range n {
		a.free <- &auditSlot{
			openID: make([]byte, 0, auditOpenIDMax),
			text:   make([]byte, 0, auditTextMax),
			keys:   make([]byte, 0, auditKeysMax*auditKeyMax),
		}
	}
	a.buf = make([]byte, 0, auditBatchMax+4096)
	a.wg.Add(1)
	go a.run()
	return a, nil
}

// log queues rec for the writer, or drops and counts it when every slot is taken or the
// log is closed. It copies what it keeps of rec, never blocks, and allocates nothing. A nil
// AuditLog (the audit log off) ignores rec. Safe for concurrent use.
func (a *AuditLog) log(rec *AuditRecord) {
	if a == nil {
		return
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.dropped.Inc()
		return
	}
	select {
	case s := <-a.free:
		s.fill(rec)
		a.queue <- s // never blocks: the queue has room for every slot
		if len(a.queue) >= cap(a.queue)/2 {
			select {
			case a.kick <- struct{}{}:
			default: // the writer has been told already
			}
		}
	default:
		a.dropped.Inc()
	}
}

// fill copies rec into s, within the slot's caps.
func (s *auditSlot) fill(rec *AuditRecord) {
	s.time, s.query, s.result, s.latency = rec.Time, rec.Query, rec.Result, rec.Latency
	s.openID = append(s.openID[:0], cutUTF8(rec.OpenID, auditOpenIDMax)...)
	text := cutUTF8(rec.Text, auditTextMax)
	s.text, s.textCut = append(s.text[:0], text...), len(text) < len(rec.Text)
	s.keys, s.nkeys = s.keys[:0], min(len(rec.Keys), auditKeysMax)
	for i, k := range rec.Keys[:s.nkeys] {
		s.keys = append(s.keys, cutUTF8(k, auditKeyMax)...)
		s.ends[i] = len(s.keys)
	}
}

// Close stops accepting records, waits until the writer has written every queued one,
// and closes the file. It returns the error of closing the file; failed writes before it
// are logged and counted. Safe to call more than once and concurrently with log.
func (a *AuditLog) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		close(a.queue)
		close(a.stop)
		a.mu.Unlock()
		a.wg.Wait()
		if err := a.out.Close(); err != nil {
			a.closeErr = fmt.Errorf("server: close audit log: %w", err)
		}
	})
	return a.closeErr
}

// run is the writer goroutine: it drains the queue until Close, restarting after a panic.
func (a *AuditLog) run() {
	defer a.wg.Done()
	for a.drain() {
	}
}

// drain writes, each time the writer wakes (every FlushInterval, on a kick, or on Close),
// every queued record: encoded into a batch, written whenever the batch is full and when
// the queue is empty, so lines reach the file whole (a rotation never splits a line). It
// returns false when the queue is closed and drained, and true after a recovered panic
// (logged and counted) so that run starts it again.
func (a *AuditLog) drain() (again bool) {
	defer func() {
		if r := recover(); r != nil {
			a.logger.Error("server: audit log writer: panic", "panic", r, "stack", string(debug.Stack()))
			a.writeErrors.Inc()
			a.buf = a.buf[:0]
			if a.cur != nil {
				a.free <- a.cur
				a.cur = nil
			}
			again = true
		}
	}()
	tick := time.NewTicker(a.every)
	defer tick.Stop()
	for {
		for empty := false; !empty; {
			select {
			case s, ok := <-a.queue:
				if !ok {
					a.flush()
					return false
				}
				a.cur = s
				a.buf = a.encode(a.buf, s)
				a.cur = nil
				a.free <- s // never blocks: free has room for every slot
				if len(a.buf) >= auditBatchMax {
					a.flush()
				}
			default:
				empty = true
			}
		}
		a.flush()
		select {
		case <-tick.C:
		case <-a.kick:
		case <-a.stop:
		}
	}
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
	dst = s.time.AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","query":`...)
	dst = appendJSONString(dst, s.query)
	if a.mac != nil {
		a.mac.Reset()
		a.mac.Write(s.openID)
		a.sum = a.mac.Sum(a.sum[:0])
		dst = append(dst, `,"openid_hash":"`...)
		dst = hex.AppendEncode(dst, a.sum[:16])
		dst = append(dst, '"')
	} else {
		dst = append(dst, `,"openid":`...)
		dst = appendJSONString(dst, s.openID)
	}
	dst = append(dst, `,"text":`...)
	dst = appendJSONString(dst, s.text)
	if s.textCut {
		dst = append(dst[:len(dst)-1], `…"`...) // mark the cut inside the string
	}
	dst = append(dst, `,"keys":[`...)
	start := 0
	for i := range s.nkeys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, s.keys[start:s.ends[i]])
		start = s.ends[i]
	}
	dst = append(dst, `],"result":`...)
	dst = appendJSONString(dst, s.result)
	dst = append(dst, `,"latency_us":`...)
	dst = strconv.AppendInt(dst, s.latency.Microseconds(), 10)
	return append(dst, "}\n"...)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, and U+2028/U+2029 escaped (JavaScript reads
// them as line ends).
func appendJSONString[T ~string | ~[]byte](dst []byte, s T) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xF])
		default:
			for k := i; k < i+size; k++ {
				dst = append(dst, s[k])
			}
		}
		i += size
	}
	return append(dst, '"')
}
