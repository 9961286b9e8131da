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
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	"wxlookup/cache"
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
	// SIGHUP re-reads the configuration (ReloadConfig); caught from the start, so that one
	// sent while starting does not end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	m := NewMain(cfg)
	m.ConfigPath, m.Getenv = *configPath, getenv
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
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			m.ReloadConfig(ctx) // logs what it did, or why it refused the file
		}
	}
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

// Main is the running service: the configured queries (each with its source, cache and
// loader), the webhook, the audit log and the admin listener. Run starts it; Close stops it
// gracefully. End-to-end tests run it on 127.0.0.1:0 and read WebhookAddr and AdminAddr.
type Main struct {
	Config   Config
	Logger   *slog.Logger
	Registry *prometheus.Registry

	// ConfigPath and Getenv are where ReloadConfig (SIGHUP, POST /admin/reload-config)
	// reads the configuration again: serve's --config file and the environment.
	ConfigPath string
	Getenv     func(string) string

	// WebhookAddr and AdminAddr are the listeners' addresses once Run has returned.
	WebhookAddr, AdminAddr net.Addr

	queries  *querySet
	shared   sharedSources // the queries' connection pool and binlog stream
	allow    *store.AllowList
	allowDB  io.Closer // the allow-list table's connection pool
	audit    *server.AuditLog
	ln       *handoverListener // the webhook's
	webhook  *server.Server
	admin    *server.Admin
	adminSrv *http.Server
	served   chan error // the webhook's Serve result
	reloadMu sync.Mutex // one configuration reload at a time
}

// NewMain returns a Main for cfg with a fresh metrics registry.
func NewMain(cfg Config) *Main {
	return &Main{Config: cfg, Logger: slog.Default(), Registry: prometheus.NewRegistry(), Getenv: os.Getenv}
}

// Run opens every query's source (checking a MySQL table's mapping), starts their loaders
// and both listeners, and returns once they accept connections. It does not wait for the
// first loads: until a query's completes the webhook answers it with the "starting up"
// text, and /readyz is 503 until every one has. With ListenWhenReady it opens the webhook
// listener (and returns) only after every first load, or returns ctx's error if ctx ends
// first; the admin listener opens at once either way.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "wxlookup_build_info", Help: "Always 1; the version label says which build runs.",
		ConstLabels: prometheus.Labels{"version": version}})
	buildInfo.Set(1)
	m.Registry.MustRegister(buildInfo)

	m.queries = newQuerySet(m)
	if err := m.queries.start(ctx, cfg.queryList()); err != nil {
		return err
	}
	var err error
	if cfg.AuditLog != "" {
		if m.audit, err = server.NewAuditLog(server.AuditConfig{Path: cfg.AuditLog, HashKey: []byte(cfg.AuditHashKey),
			Logger: m.Logger.With("component", "audit")}, m.Registry); err != nil {
			return fmt.Errorf("WXLOOKUP_AUDIT_LOG: %w", err)
		}
	}
	sc := server.Config{
		Path: cfg.Path, Token: cfg.Token, AppID: cfg.AppID,
		AESKey: cfg.AESKey, AESKeyPrevious: cfg.AESKeyPrevious, RequireEncryption: cfg.RequireEncryption,
		WeComPath: cfg.WeComPath, WeComCorpID: cfg.WeComCorpID, WeComToken: cfg.WeComToken, WeComAESKey: cfg.WeComAESKey,
		TimestampSkew: cfg.TimestampSkew, RatePerMinute: cfg.RateLimit, RateBurst: cfg.RateBurst,
		Templates: cfg.Templates, ValueColumns: cfg.ValueColumns, Audit: m.audit,
		Logger: m.Logger.With("component", "webhook"), Registerer: m.Registry,
	}
	if cfg.Queries != nil && strings.TrimSpace(sc.Templates.Help) == "" {
		sc.Templates.Help = server.DefaultQueriesHelp // the queries' own lines follow it
	}
	if cfg.RateLimit == 0 {
		sc.RatePerMinute = -1
	}
	if err := m.openAllowList(ctx); err != nil {
		return err
	}
	if m.allow != nil {
		sc.Allowed = m.allow.Allowed
	}
	if m.webhook, err = server.New(sc, nil); err != nil {
		return err
	}

	adminLn, err := listen(ctx, cfg.AdminListen, false)
	if err != nil {
		return fmt.Errorf("WXLOOKUP_ADMIN_LISTEN %s: %w", cfg.AdminListen, err)
	}
	m.AdminAddr = adminLn.Addr()
	m.admin = server.NewAdmin(server.AdminConfig{
		Token: cfg.AdminToken, StaleAfter: cfg.StaleAfter, Gatherer: prometheus.Gatherers{m.Registry, m.queries},
		Queries: m.queries.adminQueries, ReloadConfig: m.ReloadConfig, Webhook: m.webhook,
		Version: version, Logger: m.Logger.With("component", "admin"),
	})
	m.adminSrv = &http.Server{Handler: m.admin, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(m.Logger.Handler(), slog.LevelDebug)}
	if err := m.queries.goLive(); err != nil {
		return err
	}
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
		if err := m.queries.waitReady(ctx); err != nil {
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
	var names, sources []string
	for _, q := range m.queries.adminQueries() {
		names, sources = append(names, q.Name), append(sources, q.Cache.Status().Source)
	}
	m.Logger.Info("wxlookup started", "version", version, "webhook", m.WebhookAddr.String()+cfg.Path,
		"admin", m.AdminAddr.String(), "admin_token", cfg.AdminToken != "", "queries", names, "sources", sources, "demo", cfg.Demo,
		"change_feed", cfg.ChangeFeed, "safe_mode", cfg.AESKey != "", "wecom", cfg.WeComCorpID != "", "audit_log", cfg.AuditLog != "")
	return nil
}

// WaitReady waits until every live query has completed its first load, or ctx ends.
func (m *Main) WaitReady(ctx context.Context) error { return m.queries.waitReady(ctx) }

// QueryCache returns the cache of the live query named name, or nil.
func (m *Main) QueryCache(name string) *cache.Cache { return m.queries.cacheOf(name) }

// openAllowList opens the configured allow-list, if any, and starts its refresh loop. An
// allow-list table is read through the queries' connection pool.
func (m *Main) openAllowList(ctx context.Context) error {
	cfg := m.Config
	var err error
	switch {
	case cfg.AllowFile != "":
		m.allow, err = store.OpenAllowList(cfg.AllowFile)
	case cfg.AllowTable != "":
		var pool *store.Pool
		var my *store.MySQL
		if pool, err = m.mysqlPool(); err == nil {
			my, err = pool.Table(store.TableConfig{})
		}
		if err != nil {
			return fmt.Errorf("allow-list: %w", err)
		}
		m.allowDB = my
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
// requests, then the audit log is flushed, and the admin listener, the queries' loaders and
// sources close. It returns the first error.
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
	// No message is answered any more: what the audit log holds goes to its file.
	if m.audit != nil {
		errs = append(errs, m.audit.Close())
	}
	// The admin handler first: it cancels a reload that a POST /admin/reload is waiting
	// for, which then answers 503 at once instead of holding the listener's shutdown.
	if m.admin != nil {
		errs = append(errs, m.admin.Close())
	}
	if m.adminSrv != nil {
		errs = append(errs, m.adminSrv.Shutdown(ctx))
	}
	if m.queries != nil {
		errs = append(errs, m.queries.close())
	}
	if m.allow != nil {
		errs = append(errs, m.allow.Close())
	}
	if m.allowDB != nil {
		errs = append(errs, m.allowDB.Close())
	}
	errs = append(errs, m.closeShared())
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
		fmt.Fprintf(w, "demo mode: %s, token %q\n", "embedded examples/locations.csv and examples/stock.csv", cfg.Token)
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
	if cfg.Demo {
		fmt.Fprintf(w, "  %s '#P-100'\n", ask)
	}
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
