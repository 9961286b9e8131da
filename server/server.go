// Package server is wxlookup's HTTP side: the WeChat webhook routes on fasthttp, the
// answering logic (query parsing, reply templates, retry dedupe, access control) and the
// admin listener (metrics, health, status page, reload).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"wxlookup/wechat"
)

// Defaults of the webhook settings (SPEC section 4).
const (
	DefaultListen        = ":8080"
	DefaultPath          = "/wx"
	DefaultWeComPath     = "/wecom"
	DefaultTimestampSkew = 5 * time.Minute
	// MaxTimestampSkew is the largest TimestampSkew accepted: a wider window keeps a
	// captured request good for longer, and the replay guard's bindings with it.
	MaxTimestampSkew = time.Hour
	// MaxBodyBytes is the largest request body accepted; larger ones get 413.
	MaxBodyBytes = 64 << 10
	// DefaultReadTimeout is how long a client may take to send a whole request; a slower
	// one (a slow-loris) gets 408 and its connection is closed.
	DefaultReadTimeout = 5 * time.Second
)

// Config is the webhook's configuration. Zero values take the defaults above.
type Config struct {
	Path           string // Official Account webhook path
	Token          string // Official Account token (required)
	AppID          string // checked against the receive id of decrypted messages; "" accepts any
	AESKey         string // EncodingAESKey (43 characters); "" disables safe mode
	AESKeyPrevious string // the key before the last rotation, tried when AESKey fails
	// RequireEncryption refuses plaintext POSTs (403, reason plaintext). cmd/wxlookup sets
	// it when an AES key is configured unless WXLOOKUP_REQUIRE_ENCRYPTION=false; here it is
	// what it says, and New logs which way it is.
	RequireEncryption bool

	WeComPath   string // WeCom callback path
	WeComCorpID string // WeCom corp id (the receive id); the WeCom route is off unless set
	WeComToken  string
	WeComAESKey string

	// TimestampSkew is the largest |now − timestamp| accepted: 0 takes
	// DefaultTimestampSkew, otherwise it must be positive and at most MaxTimestampSkew.
	TimestampSkew time.Duration
	DedupeWindow  time.Duration // 0 takes DefaultDedupeWindow; negative disables dedupe
	ReadTimeout   time.Duration // 0 takes DefaultReadTimeout

	RatePerMinute int // per-OpenID messages a minute; 0 takes the default, negative disables
	RateBurst     int
	// Allowed reports whether an OpenID may query; nil lets everyone.
	Allowed func(openID []byte) bool

	// Templates are the reply texts. Found and NotFound serve the implicit query that New
	// builds around its lookup; configured queries carry their own (QuerySpec).
	Templates TemplateTexts
	// ValueColumns names the implicit query's value columns, for {{.Column.name}}.
	ValueColumns []string

	// Audit, when set, receives one record per answered message (SPEC section 10). The
	// caller closes it after Shutdown, which flushes it.
	Audit *AuditLog

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time // nil: time.Now, read once per request
}

// Server serves the WeChat webhook. Create it with New, run it with Serve and stop it with
// Shutdown. Its handler is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	m       *metrics
	ans     *answerer
	dedupe  *dedupe
	replay  *replayGuard
	oa      *wechat.Crypter // nil without an AES key
	wecom   *wechat.Crypter // nil without WeCom
	srv     *fasthttp.Server
	free    chan *work // reusable request scratch (see getWork)
	works   atomic.Uint64
	rejects *logLimiter
	audit   *AuditLog

	// routesMu serialises the bookkeeping of SetRoutes; requests never take it.
	routesMu sync.Mutex
	reports  map[string]*notFoundReport // by query name, for the routed queries

	// draining is set by Drain: every reply then asks the client to close the connection.
	draining atomic.Bool
	conns    atomic.Int64 // open connections (fasthttp's ConnState hook)
}

// New validates cfg and returns a server. When lookup is not nil it answers the implicit
// query (ImplicitQuery, SPEC section 10) from it, with cfg.Templates' found and not-found
// texts; with nil it answers no query until SetRoutes. Errors name the setting.
func New(cfg Config, lookup Lookuper) (*Server, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.WeComPath == "" {
		cfg.WeComPath = DefaultWeComPath
	}
	if cfg.TimestampSkew == 0 {
		cfg.TimestampSkew = DefaultTimestampSkew
	}
	if cfg.DedupeWindow == 0 {
		cfg.DedupeWindow = DefaultDedupeWindow
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.RatePerMinute == 0 {
		cfg.RatePerMinute, cfg.RateBurst = DefaultRatePerMinute, DefaultRateBurst
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tmpl, err := NewTemplates(cfg.Templates, cfg.ValueColumns)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		now:     time.Now,
		m:       newMetrics(cfg.Registerer),
		dedupe:  newDedupe(cfg.DedupeWindow, DefaultDedupeCapacity, DefaultDedupeRingBytes),
		replay:  newReplayGuard(cfg.TimestampSkew, DefaultReplayCapacity),
		rejects: newLogLimiter(10, time.Second),
		audit:   cfg.Audit,
	}
	if cfg.Now != nil {
		s.now = cfg.Now
	}
	s.ans = &answerer{tmpl: tmpl, allowed: cfg.Allowed, limiter: newLimiter(cfg.RatePerMinute, cfg.RateBurst), audit: cfg.Audit != nil}
	s.ans.routes.Store(newRouter(nil))
	if lookup != nil {
		if err := s.SetRoutes([]Route{{Query: tmpl.location, Cache: lookup}}); err != nil {
			return nil, err
		}
	}
	if cfg.AESKey != "" {
		if s.oa, err = wechat.NewCrypter(cfg.Token, cfg.AppID, cfg.AESKey, cfg.AESKeyPrevious); err != nil {
			return nil, fmt.Errorf("server: WXLOOKUP_AES_KEY: %w", err)
		}
	}
	if cfg.WeComCorpID != "" {
		if s.wecom, err = wechat.NewCrypter(cfg.WeComToken, cfg.WeComCorpID, cfg.WeComAESKey, ""); err != nil {
			return nil, fmt.Errorf("server: WXLOOKUP_WECOM_AES_KEY: %w", err)
		}
	}
	s.logTrust()
	s.free = make(chan *work, freeWorks)
	s.srv = &fasthttp.Server{
		Handler:                      s.Handler(),
		ErrorHandler:                 s.errorHandler,
		Name:                         "",
		NoDefaultServerHeader:        true,
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 5 * time.Second,
		IdleTimeout:                  60 * time.Second,
		MaxRequestBodySize:           MaxBodyBytes,
		ReadBufferSize:               8 << 10, // bounds the request line and headers (431 beyond)
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{cfg.Logger},
		ConnState:                    s.connState,
	}
	return s, nil
}

func (c *Config) validate() error {
	switch {
	case c.Token == "":
		return errors.New("server: WXLOOKUP_TOKEN is required")
	case !strings.HasPrefix(c.Path, "/"):
		return fmt.Errorf("server: WXLOOKUP_PATH %q must start with /", c.Path)
	case c.AESKeyPrevious != "" && c.AESKey == "":
		return errors.New("server: WXLOOKUP_AES_KEY_PREVIOUS is set without WXLOOKUP_AES_KEY")
	case c.RequireEncryption && c.AESKey == "":
		return errors.New("server: WXLOOKUP_REQUIRE_ENCRYPTION needs WXLOOKUP_AES_KEY")
	case c.TimestampSkew < 0 || c.TimestampSkew > MaxTimestampSkew:
		return fmt.Errorf("server: WXLOOKUP_TIMESTAMP_SKEW %s: must be positive and at most %s", c.TimestampSkew, MaxTimestampSkew)
	}
	if c.WeComCorpID != "" {
		switch {
		case !strings.HasPrefix(c.WeComPath, "/"):
			return fmt.Errorf("server: WXLOOKUP_WECOM_PATH %q must start with /", c.WeComPath)
		case c.WeComPath == c.Path:
			return errors.New("server: WXLOOKUP_WECOM_PATH must differ from WXLOOKUP_PATH")
		case c.WeComToken == "":
			return errors.New("server: WXLOOKUP_WECOM_TOKEN is required with WXLOOKUP_WECOM_CORP_ID")
		case c.WeComAESKey == "":
			return errors.New("server: WXLOOKUP_WECOM_AES_KEY is required with WXLOOKUP_WECOM_CORP_ID")
		}
	}
	return nil
}

// logTrust logs, at start-up, the settings that decide which requests are trusted: whether
// plaintext POSTs are accepted, and a warning when decrypted messages' AppID is not
// checked.
func (s *Server) logTrust() {
	plaintext := "accepted (no WXLOOKUP_AES_KEY)"
	switch {
	case s.cfg.AESKey != "" && s.cfg.RequireEncryption:
		plaintext = "refused (WXLOOKUP_REQUIRE_ENCRYPTION=true)"
	case s.cfg.AESKey != "":
		plaintext = "accepted (WXLOOKUP_REQUIRE_ENCRYPTION=false)"
	}
	s.log.Info("webhook: message encryption", "plaintext", plaintext, "timestamp_skew", s.cfg.TimestampSkew.String())
	if s.cfg.AESKey != "" && s.cfg.AppID == "" {
		s.log.Warn("webhook: WXLOOKUP_APPID is not set: the AppID inside decrypted messages is not checked")
	}
}

// Serve answers webhook requests on ln until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(ln)
}

// Shutdown stops accepting connections and waits for in-flight requests to finish, or for
// ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.ShutdownWithContext(ctx)
}

// Drain begins a graceful stop: every reply from now on carries "Connection: close", so a
// client on a keep-alive connection sends its next request on a new connection (to the
// process that takes the port over) instead of racing Shutdown's close of its idle
// connection, which would lose the request. Drain returns when no connection is open, or
// with ctx's error when ctx is done first (connections idle all along are left to
// Shutdown). The caller stops accepting connections first; Shutdown follows.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// connState counts open connections for Drain.
func (s *Server) connState(_ net.Conn, st fasthttp.ConnState) {
	switch st {
	case fasthttp.StateNew:
		s.conns.Add(1)
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		s.conns.Add(-1)
	}
}

// errorHandler answers requests fasthttp could not read: 413 for an oversize body, 431 for
// oversize headers (a flood of headers included), 408 when the request did not arrive
// within ReadTimeout (a slow-loris client), 400 otherwise. Each is counted in
// wxlookup_rejected_total and logged (rate-limited) like any other rejection.
func (s *Server) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	r, status, msg := reasonBadRequest, fasthttp.StatusBadRequest, "bad request"
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		r, status, msg = reasonTooLarge, fasthttp.StatusRequestEntityTooLarge, "request body too large"
	case errors.As(err, &small):
		r, status, msg = reasonHeadersTooLarge, fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large"
	case errors.As(err, &netErr) && netErr.Timeout():
		r, status, msg = reasonTimeout, fasthttp.StatusRequestTimeout, "request timeout"
	}
	s.m.rejected[r].Inc()
	if ok, dropped := s.rejects.allow(s.now()); ok {
		attrs := []any{"reason", reasonNames[r], "status", status, "remote", ctx.RemoteIP().String()}
		if dropped > 0 {
			attrs = append(attrs, "similar_lines_dropped", dropped)
		}
		s.log.Warn("webhook: request rejected", attrs...)
	}
	ctx.Error(msg, status)
}

// fasthttpLogger sends fasthttp's own messages to slog at debug level.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// logLimiter lets at most n log lines through per period, so a flood of bad requests
// cannot flood the log.
type logLimiter struct {
	n      int
	period time.Duration

	mu      sync.Mutex
	start   time.Time
	count   int
	dropped int
}

func newLogLimiter(n int, period time.Duration) *logLimiter {
	return &logLimiter{n: n, period: period}
}

// allow reports whether a line may be logged now, and how many were dropped before it.
func (l *logLimiter) allow(now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.period {
		l.start, l.count = now, 0
	}
	if l.count >= l.n {
		l.dropped++
		return false, 0
	}
	l.count++
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}
