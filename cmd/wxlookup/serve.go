package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	"wxlookup/cache"
	"wxlookup/examples"
	"wxlookup/server"
	"wxlookup/store"
)

// shutdownTimeout bounds how long a stopping server waits for in-flight requests.
const shutdownTimeout = 10 * time.Second

// drainTimeout bounds how long a stopping server, its listening socket already closed, lets
// clients on open connections move to the process that took the port over (Main.Drain).
const drainTimeout = 2 * time.Second

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", getenv("WXLOOKUP_CONFIG"), "YAML configuration file (settings in the environment win)")
	if err := parseFlags(fs, "usage: wxlookup serve [--config FILE]\n\nRuns the responder; settings come from WXLOOKUP_* and the file (see README.md).", args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{"serve takes no arguments"}
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	m := NewMain(cfg)
	m.Logger = newLogger(cfg, stderr)
	for _, w := range unknownEnv(os.Environ()) {
		m.Logger.Warn(w)
	}
	if err := m.Run(ctx); err != nil {
		cerr := m.Close()
		if ctx.Err() != nil { // stopped while waiting for the first load
			return cerr
		}
		return err
	}
	m.printBanner(stdout)
	<-ctx.Done()
	m.Logger.Info("shutting down: handing the port over, finishing in-flight requests", "timeout", drainTimeout+shutdownTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	m.Drain(dctx)
	cancel()
	return m.Close()
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Main is the running service: the source, the cache and its loader, the webhook and the
// admin listener. Run starts it; Close stops it gracefully. End-to-end tests run it on
// 127.0.0.1:0 and read WebhookAddr and AdminAddr.
type Main struct {
	Config   Config
	Logger   *slog.Logger
	Registry *prometheus.Registry

	// WebhookAddr and AdminAddr are the listeners' addresses once Run has returned.
	WebhookAddr, AdminAddr net.Addr

	// Cache is the entry cache, set by Run.
	Cache *cache.Cache

	source   io.Closer
	allow    *store.AllowList
	ln       *handoverListener // the webhook's
	webhook  *server.Server
	admin    *server.Admin
	adminSrv *http.Server
	served   chan error // the webhook's Serve result
}

// NewMain returns a Main for cfg with a fresh metrics registry.
func NewMain(cfg Config) *Main {
	return &Main{Config: cfg, Logger: slog.Default(), Registry: prometheus.NewRegistry()}
}

// Run opens the source, starts the loader and both listeners, and returns once they accept
// connections. It does not wait for the first load: until it completes the webhook answers
// the "starting up" text and /readyz is 503. With ListenWhenReady it opens the webhook
// listener (and returns) only after the first load, or returns ctx's error if ctx ends
// first; the admin listener opens at once either way.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "wxlookup_build_info", Help: "Always 1; the version label says which build runs.",
		ConstLabels: prometheus.Labels{"version": version}})
	buildInfo.Set(1)
	m.Registry.MustRegister(buildInfo)

	q, err := server.NewQuery(server.QuerySpec{Name: server.ImplicitQuery, ValueColumns: cfg.ValueColumns,
		Found: cfg.Templates.Found, NotFound: cfg.Templates.NotFound})
	if err != nil {
		return err
	}
	src, mode, err := m.openSource()
	if err != nil {
		return err
	}
	if c, ok := src.(io.Closer); ok {
		m.source = c
	}
	if my := mysqlOf(src); my != nil {
		if err := m.checkMapping(ctx, my); err != nil {
			return err
		}
	}
	if b, ok := src.(*store.Binlog); ok {
		if err := m.checkBinlog(ctx, b); err != nil {
			return err
		}
	}
	m.Cache, err = cache.New(src, cache.Config{
		Mode:              mode,
		MaxBytes:          cfg.CacheMaxBytes,
		RefreshInterval:   cfg.RefreshInterval,
		ReconcileInterval: cfg.ReconcileInterval,
		Render:            func(dst []byte, r cache.Row) []byte { return q.AppendFound(dst, r.Key, r.Values) },
		Logger:            m.Logger.With("component", "loader"),
		Registerer:        m.Registry,
	})
	if err != nil {
		return err
	}

	sc := server.Config{
		Path: cfg.Path, Token: cfg.Token, AppID: cfg.AppID,
		AESKey: cfg.AESKey, AESKeyPrevious: cfg.AESKeyPrevious, RequireEncryption: cfg.RequireEncryption,
		WeComPath: cfg.WeComPath, WeComCorpID: cfg.WeComCorpID, WeComToken: cfg.WeComToken, WeComAESKey: cfg.WeComAESKey,
		TimestampSkew: cfg.TimestampSkew, RatePerMinute: cfg.RateLimit, RateBurst: cfg.RateBurst,
		Templates: cfg.Templates, ValueColumns: cfg.ValueColumns,
		Logger: m.Logger.With("component", "webhook"), Registerer: m.Registry,
	}
	if cfg.RateLimit == 0 {
		sc.RatePerMinute = -1
	}
	if err := m.openAllowList(ctx, src); err != nil {
		return err
	}
	if m.allow != nil {
		sc.Allowed = m.allow.Allowed
	}
	if m.webhook, err = server.New(sc, m.Cache); err != nil {
		return err
	}

	adminLn, err := listen(ctx, cfg.AdminListen, false)
	if err != nil {
		return fmt.Errorf("WXLOOKUP_ADMIN_LISTEN %s: %w", cfg.AdminListen, err)
	}
	m.AdminAddr = adminLn.Addr()
	m.admin = server.NewAdmin(server.AdminConfig{
		Token: cfg.AdminToken, StaleAfter: cfg.StaleAfter, Gatherer: m.Registry, Webhook: m.webhook,
		Queries: func() []server.AdminQuery {
			return []server.AdminQuery{{Name: server.ImplicitQuery, Cache: m.Cache, Live: true}}
		},
		Version: version, Logger: m.Logger.With("component", "admin"),
	})
	m.adminSrv = &http.Server{Handler: m.admin, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(m.Logger.Handler(), slog.LevelDebug)}
	m.Cache.Start()
	m.admin.Start()
	go func() {
		if err := m.adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("admin listener stopped", "err", err)
		}
	}()

	if cfg.ListenWhenReady {
		// Behind nginx with other replicas, or taking a port over from a running process
		// (WXLOOKUP_REUSE_PORT), a listener open before the first load would answer "starting up"
		// to requests the others can answer; closed, nginx and the kernel send them there.
		m.Logger.Info("waiting for the first load before opening the webhook listener", "setting", "WXLOOKUP_LISTEN_WHEN_READY")
		if err := m.Cache.WaitReady(ctx); err != nil {
			return fmt.Errorf("WXLOOKUP_LISTEN_WHEN_READY: waiting for the first load: %w", err)
		}
	}
	ln, err := listen(ctx, cfg.Listen, cfg.ReusePort)
	if err != nil {
		return fmt.Errorf("WXLOOKUP_LISTEN %s: %w", cfg.Listen, err)
	}
	m.ln = &handoverListener{Listener: ln, closed: make(chan struct{})}
	m.WebhookAddr = ln.Addr()
	m.served = make(chan error, 1)
	go func() { m.served <- m.webhook.Serve(m.ln) }()
	m.Logger.Info("wxlookup started", "version", version, "webhook", m.WebhookAddr.String()+cfg.Path,
		"admin", m.AdminAddr.String(), "admin_token", cfg.AdminToken != "", "source", fmt.Sprint(src), "demo", cfg.Demo,
		"change_feed", mode, "safe_mode", cfg.AESKey != "", "wecom", cfg.WeComCorpID != "")
	return nil
}

// openSource opens the configured source and says how the loader follows it: MySQL polled
// (by the updated column) or followed (by its binary log), a CSV file, or the embedded demo
// rows.
func (m *Main) openSource() (cache.Source, string, error) {
	cfg := m.Config
	my := store.MySQLConfig{DSN: cfg.MySQLDSN, Mapping: cfg.mapping(), Logger: m.Logger}
	switch {
	case cfg.MySQLDSN != "" && cfg.ChangeFeed == feedBinlog:
		id, err := cfg.binlogServerID()
		if err != nil {
			return nil, "", err
		}
		b, err := store.OpenBinlog(store.BinlogConfig{MySQLConfig: my, BinlogDSN: cfg.BinlogDSN, ServerID: id})
		return b, cache.ModeBinlog, err
	case cfg.MySQLDSN != "":
		src, err := store.OpenMySQL(my)
		return src, cache.ModePoll, err
	case cfg.CSV != "":
		src, err := store.OpenCSV(cfg.CSV, cfg.mapping())
		return src, cache.ModeCSV, err
	}
	src, err := store.NewCSV("examples/locations.csv (embedded demo)", examples.LocationsCSV, cfg.mapping())
	return src, cache.ModeCSV, err
}

// binlogServerID is WXLOOKUP_BINLOG_SERVER_ID, or one derived from the host name and the
// webhook's port, so that replicas on different hosts, or on one host with different
// ports, differ without configuration.
func (c *Config) binlogServerID() (uint32, error) {
	if c.BinlogServerID != 0 {
		return c.BinlogServerID, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return 0, fmt.Errorf("WXLOOKUP_BINLOG_SERVER_ID is not set and the host name cannot be read to derive one: %w", err)
	}
	_, p, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return 0, fmt.Errorf("WXLOOKUP_LISTEN %q: want host:port: %w", c.Listen, err)
	}
	port, _ := strconv.Atoi(p)
	return store.DefaultServerID(host, port), nil
}

// mysqlOf returns the MySQL source behind src, or nil for a CSV source.
func mysqlOf(src cache.Source) *store.MySQL {
	switch s := src.(type) {
	case *store.MySQL:
		return s
	case *store.Binlog:
		return s.MySQL
	}
	return nil
}

// checkBinlog stops start-up when MySQL answers that its binary log cannot be followed as
// configured (binlog off or not ROW, grants missing, an unsupported column type), naming
// each fix. When MySQL cannot be asked now it logs one line and lets the loader retry.
func (m *Main) checkBinlog(ctx context.Context, b *store.Binlog) error {
	ctx, cancel := context.WithTimeout(ctx, mappingCheckTimeout)
	defer cancel()
	err := b.Check(ctx)
	var cf *store.CannotFollowError
	switch {
	case err == nil:
		m.Logger.Info("binlog change feed: the binary log can be followed", "source", b.String(), "server_id", b.ServerID())
	case errors.As(err, &cf):
		return fmt.Errorf("WXLOOKUP_CHANGE_FEED=binlog: %w", err)
	default:
		m.Logger.Warn("cannot check the binary log now; starting anyway, the loader retries", "source", b.String(), "err", err)
	}
	return nil
}

// mappingCheckTimeout bounds the start-up check of the table mapping.
const mappingCheckTimeout = 5 * time.Second

// checkMapping stops start-up, naming the setting, when MySQL answers that the mapped table
// or a column is missing or unfit; a warning (no index on the updated column) is logged.
// When MySQL cannot be asked now it logs one line and lets the loader retry.
func (m *Main) checkMapping(ctx context.Context, my *store.MySQL) error {
	ctx, cancel := context.WithTimeout(ctx, mappingCheckTimeout)
	defer cancel()
	err := my.CheckMapping(ctx, m.Config.ChangeFeed != feedBinlog) // the binlog feed needs no updated column
	var me *store.MappingError
	var mw *store.MappingWarning
	switch {
	case err == nil:
	case errors.As(err, &me):
		return fmt.Errorf("%s: %v", mappingSettings[me.Field], me.Err)
	case errors.As(err, &mw):
		m.Logger.Warn(mappingSettings[mw.Field]+": "+mw.Err.Error(), "source", my.String())
	default:
		m.Logger.Warn("cannot check the table mapping now; starting anyway, the loader retries", "source", my.String(), "err", err)
	}
	return nil
}

// openAllowList opens the configured allow-list, if any, and starts its refresh loop.
func (m *Main) openAllowList(ctx context.Context, src cache.Source) error {
	cfg := m.Config
	var err error
	switch {
	case cfg.AllowFile != "":
		m.allow, err = store.OpenAllowList(cfg.AllowFile)
	case cfg.AllowTable != "":
		my := mysqlOf(src)
		if my == nil {
			return errors.New("WXLOOKUP_ALLOW_TABLE needs WXLOOKUP_MYSQL_DSN")
		}
		m.allow, err = store.OpenAllowTable(ctx, my, cfg.AllowTable, cfg.AllowColumn)
		if err != nil && m.allow != nil {
			m.Logger.Warn("allow-list: first read failed; nobody may query until a read succeeds",
				"list", m.allow.String(), "err", err)
			err = nil
		}
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("allow-list: %w", err)
	}
	m.allow.Start(store.DefaultAllowRefresh, m.Logger.With("component", "allow-list"))
	m.Logger.Info("allow-list loaded", "list", m.allow.String(), "openids", m.allow.Len())
	return nil
}

// listen opens a TCP listener on addr. A port in use is an error ("address already in
// use") unless reusePort is set: then the socket has SO_REUSEPORT, so a new process started
// with the same setting can take over the port while this one drains its connections on
// shutdown (WXLOOKUP_REUSE_PORT).
func listen(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			return errors.Join(err, serr)
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}

// handoverListener lets a stopping process close its listening socket early, so that the
// kernel sends new connections only to the process that shares the port (ReusePort),
// while fasthttp's accept loop, and with it the connections already open, keeps running
// until Close.
type handoverListener struct {
	net.Listener
	closed   chan struct{} // closed by Close
	once     sync.Once
	released atomic.Bool
}

// Release closes the listening socket; Accept then waits for Close.
func (l *handoverListener) Release() error {
	l.released.Store(true)
	return l.Listener.Close()
}

func (l *handoverListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.released.Load() {
		<-l.closed
		return nil, net.ErrClosed
	}
	return c, err
}

// Close closes the socket unless Release did, and ends a waiting Accept.
func (l *handoverListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	if l.released.Load() {
		return nil
	}
	return l.Listener.Close()
}

// Drain hands the webhook's port over before Close: it closes the listening socket, so
// that new connections go to the process that shares the port, and has every open
// connection's next reply ask the client to reconnect (there), returning when no connection
// is left or ctx is done. Requests keep being answered throughout. Without Drain, Close
// closes idle keep-alive connections at once and loses a request sent on one just then.
func (m *Main) Drain(ctx context.Context) error {
	if m.ln == nil || m.webhook == nil {
		return nil
	}
	if err := m.ln.Release(); err != nil {
		return err
	}
	return m.webhook.Drain(ctx)
}

// Close stops the service gracefully: the webhook stops accepting and finishes in-flight
// requests, then the admin listener, the loader and the source close. It returns the first
// error.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	if m.webhook != nil && m.served != nil {
		errs = append(errs, m.webhook.Shutdown(ctx))
		// Shutdown closes only the listeners Serve has registered, and a Close right
		// after Run may come before Serve has: close the socket here too, so that Serve,
		// whenever it starts, returns at once instead of accepting for ever.
		m.ln.Close()
		errs = append(errs, <-m.served)
	}
	// The admin handler first: it cancels a reload that a POST /admin/reload is waiting
	// for, which then answers 503 at once instead of holding the listener's shutdown.
	if m.admin != nil {
		errs = append(errs, m.admin.Close())
	}
	if m.adminSrv != nil {
		errs = append(errs, m.adminSrv.Shutdown(ctx))
	}
	if m.Cache != nil {
		errs = append(errs, m.Cache.Close())
	}
	if m.allow != nil {
		errs = append(errs, m.allow.Close())
	}
	if m.source != nil {
		errs = append(errs, m.source.Close())
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// printBanner tells a person at the terminal where the webhook is and how to try it.
func (m *Main) printBanner(w io.Writer) {
	cfg := m.Config
	url := "http://" + hostPort(m.WebhookAddr) + cfg.Path
	fmt.Fprintf(w, "wxlookup %s listening\n  webhook: %s\n  admin:   http://%s/status\n", version, url, hostPort(m.AdminAddr))
	if a, ok := m.AdminAddr.(*net.TCPAddr); ok && a.IP.IsUnspecified() {
		fmt.Fprintf(w, "  (the admin listener is on %s: every interface)\n", m.AdminAddr)
	}
	if cfg.AdminToken != "" {
		fmt.Fprintln(w, "  every admin route but /healthz and /readyz needs WXLOOKUP_ADMIN_TOKEN as a bearer token")
	}
	if cfg.Demo {
		fmt.Fprintf(w, "demo mode: %s, token %q\n", "embedded examples/locations.csv", cfg.Token)
	}
	ask := fmt.Sprintf("go run ./cmd/wxlookup ask --url %s", url)
	if exe, err := os.Executable(); err == nil && !strings.Contains(exe, "go-build") {
		ask = fmt.Sprintf("%s ask --url %s", exe, url)
	}
	if !cfg.Demo {
		ask += " --token <token>"
	}
	if cfg.AESKey != "" {
		ask += " --aes-key <EncodingAESKey>"
		if cfg.AppID != "" {
			ask += " --appid " + cfg.AppID
		}
	}
	fmt.Fprintf(w, "try it:\n  %s '?18-546'\n", ask)
}

// hostPort renders a listener address for a URL, showing 127.0.0.1 for a wildcard bind.
func hostPort(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
