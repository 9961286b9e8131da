// Package mariadbtest starts private MariaDB servers for tests.
//
// A test package that needs MySQL calls Shared for a server started once per test binary
// (or the one named by WXLOOKUP_TEST_MYSQL_DSN), and CreateDatabase for a fresh database of its
// own. A fault test that must stop and restart the database calls Start for a private server
// it owns. Packages using Shared call Main from their TestMain so the server is stopped.
//
// A program that is not a test (the load harness in bench/) calls StartServer and uses the
// error-returning StopServer, RestartServer and Close instead of the testing.TB methods.
//
// Private servers run without a binary log unless started WithBinlog; tests of the binlog
// change feed call SharedBinlog for a binlog-enabled server shared by the binary, or Start
// with WithBinlog for one they stop and restart.
package mariadbtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"go.uber.org/goleak"

	"wxlookup/internal/freeport"
)

// EnvDSN names the environment variable that points the tests at an existing server.
// Its DSN must be for an account that may create and drop databases.
const EnvDSN = "WXLOOKUP_TEST_MYSQL_DSN"

// startTimeout bounds how long a private server may take to accept connections.
const startTimeout = 60 * time.Second

// Server is a MariaDB server for tests: either a private mariadbd this package started in a
// temporary directory, or an external one from EnvDSN (which cannot be stopped).
// Its methods are safe for concurrent use.
type Server struct {
	// Addr is host:port of the server.
	Addr string

	base    *mysql.Config // root account, no database selected
	dir     string        // private servers only
	port    int
	private bool
	opts    options // private servers only: how mariadbd runs, on every start

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of mariadbd; done is closed when it has exited.
type process struct {
	cmd  *exec.Cmd
	out  *os.File
	done chan struct{}
}

// BinlogServerID is the server_id of a private server started WithBinlog. A binlog client
// (a replica) must use another id.
const BinlogServerID = 1

// Option changes how a private server runs. An external server (EnvDSN) ignores options.
type Option func(*options)

type options struct {
	binlog bool
}

// WithBinlog starts the server with a binary log in row format, as a primary with
// server_id BinlogServerID: --log-bin --binlog-format=ROW --server-id=1. The log files
// are wxlookup-bin.NNNNNN in the data directory.
func WithBinlog() Option {
	return func(o *options) { o.binlog = true }
}

// serverArgs returns the arguments of mariadbd that o selects.
func (o options) serverArgs() []string {
	if !o.binlog {
		return []string{"--skip-log-bin"}
	}
	return []string{"--log-bin=wxlookup-bin", "--binlog-format=ROW", "--server-id=" + strconv.Itoa(BinlogServerID)}
}

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
	dbSeq      atomic.Int64

	binlogOnce   sync.Once
	sharedBinlog *Server
	binlogErr    error
)

// Main runs the tests of a package that uses Shared and stops the shared server after them.
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared stops the shared server, if this binary started one, and removes its files.
// It is for a TestMain that cannot use Main, such as one that checks for leaked goroutines
// after the tests (the server's process waiter is one until it is stopped). Call it after
// m.Run, once no test uses the server.
func StopShared() {
	if shared != nil {
		shared.close()
	}
	if sharedBinlog != nil {
		sharedBinlog.close()
	}
}

// Shared returns the server shared by the tests of this binary: the one named by
// WXLOOKUP_TEST_MYSQL_DSN if set, else a private mariadbd started on first use.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedOnce.Do(func() {
		if dsn := os.Getenv(EnvDSN); dsn != "" {
			shared, sharedErr = external(dsn)
			return
		}
		shared, sharedErr = startPrivate()
	})
	if sharedErr != nil {
		tb.Fatalf("mariadbtest: %v", sharedErr)
	}
	return shared
}

// SharedBinlog returns a private mariadbd started WithBinlog on first use and shared by the
// tests of this binary, like Shared (but never the EnvDSN server, whose settings a test
// cannot choose). Tests that change its global state (binlog_format, PURGE BINARY LOGS)
// must not run in parallel with others using it, and must restore what they change.
func SharedBinlog(tb testing.TB) *Server {
	tb.Helper()
	binlogOnce.Do(func() {
		sharedBinlog, binlogErr = startPrivate(WithBinlog())
	})
	if binlogErr != nil {
		tb.Fatalf("mariadbtest: %v", binlogErr)
	}
	return sharedBinlog
}

// Start starts a private mariadbd owned by the calling test; it is stopped and its files
// removed when the test ends. Use it when the test stops or restarts the server.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := startPrivate(opts...)
	if err != nil {
		tb.Fatalf("mariadbtest: %v", err)
	}
	tb.Cleanup(s.close)
	return s
}

// StartServer starts a private mariadbd on a free loopback port in a temporary directory,
// like Start, for a program that is not a test. The caller owns it: Close stops it and
// removes its files.
func StartServer(opts ...Option) (*Server, error) {
	s, err := startPrivate(opts...)
	if err != nil {
		return nil, fmt.Errorf("mariadbtest: %w", err)
	}
	return s, nil
}

func external(dsn string) (*Server, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", EnvDSN, err)
	}
	cfg.DBName = ""
	s := &Server{Addr: cfg.Addr, base: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.ping(ctx); err != nil {
		return nil, fmt.Errorf("connect to %s server %s: %w", EnvDSN, cfg.Addr, err)
	}
	return s, nil
}

// Binary returns the path of mariadbd (or mysqld), or an error naming what to install.
func Binary() (string, error) {
	for _, name := range []string{"mariadbd", "mysqld"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		if p := filepath.Join("/usr/sbin", name); isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New("no mariadbd found: install mariadb-server (make test does this) or set " + EnvDSN)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

func startPrivate(opts ...Option) (*Server, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "wxlookup-mariadb-")
	if err != nil {
		return nil, err
	}
	// A private tmpdir: in the shared /tmp, concurrent installs (other test binaries, other
	// work trees) collide on their temporary tables ("Could not remove temporary table").
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	install := exec.Command(installDBPath(bin), "--no-defaults", "--user="+currentUser(),
		"--datadir="+filepath.Join(dir, "data"), "--tmpdir="+tmp, "--auth-root-authentication-method=normal",
		"--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
	}
	s := &Server{dir: dir, private: true, opts: o}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freeport.Pick()
		if err != nil {
			return nil, err
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.base = rootConfig(s.Addr)
		if lastErr = s.startProcess(); lastErr == nil {
			return s, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func installDBPath(mariadbd string) string {
	for _, name := range []string{"mariadb-install-db", "mysql_install_db"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if p := filepath.Join(filepath.Dir(filepath.Dir(mariadbd)), "bin", name); isExecutable(p) {
			return p
		}
	}
	return "mariadb-install-db"
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}

func rootConfig(addr string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "tcp"
	cfg.Addr = addr
	cfg.ParseTime = true
	cfg.Params = map[string]string{"charset": "utf8mb4"}
	cfg.Timeout = 5 * time.Second
	return cfg
}

// startProcess runs mariadbd on s.dir and s.port and waits until it accepts connections or
// exits.
func (s *Server) startProcess() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	logPath := filepath.Join(s.dir, "mariadbd.log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{"--no-defaults", "--user=" + currentUser(),
		"--datadir=" + filepath.Join(s.dir, "data"), "--tmpdir=" + filepath.Join(s.dir, "tmp"),
		"--port=" + strconv.Itoa(s.port), "--bind-address=127.0.0.1",
		"--socket=" + filepath.Join(s.dir, "mysqld.sock"),
		"--pid-file=" + filepath.Join(s.dir, "mysqld.pid"),
		"--skip-name-resolve",
		"--innodb-buffer-pool-size=256M", "--innodb-log-file-size=64M",
		"--innodb-flush-log-at-trx-commit=2", "--max-connections=500",
		"--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci"}
	cmd := exec.Command(bin, append(args, s.opts.serverArgs()...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start mariadbd: %w", err)
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		out.Close()
		close(p.done)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.ping(ctx) == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return nil
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("mariadbd exited before accepting connections: %v\n%s", cmd.ProcessState, tail(log, 2000))
		case <-ctx.Done():
			cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("mariadbd on %s did not accept connections within %s", s.Addr, startTimeout)
		case <-tick.C:
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (s *Server) ping(ctx context.Context) error {
	db, err := sql.Open("mysql", s.base.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return db.PingContext(pctx)
}

// Private reports whether this package started the server (so it can be stopped).
func (s *Server) Private() bool { return s.private }

// RootDSN returns a DSN for the administrative account with database db selected ("" for none).
func (s *Server) RootDSN(db string) string {
	cfg := s.base.Clone()
	cfg.DBName = db
	return cfg.FormatDSN()
}

// Exec runs statements as the administrative account, failing the test on error.
func (s *Server) Exec(tb testing.TB, db string, stmts ...string) {
	tb.Helper()
	conn, err := sql.Open("mysql", s.RootDSN(db))
	if err != nil {
		tb.Fatalf("mariadbtest: open: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			tb.Fatalf("mariadbtest: %s: %v", q, err)
		}
	}
}

// CreateDatabase creates an empty database for the calling test, dropped when the test ends,
// and returns a root DSN that selects it.
func (s *Server) CreateDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("wxt_%d_%d", os.Getpid(), dbSeq.Add(1))
	s.Exec(tb, "", "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
	tb.Cleanup(func() {
		if s.Running() {
			s.Exec(tb, "", "DROP DATABASE IF EXISTS `"+name+"`")
		}
	})
	return s.RootDSN(name)
}

// Running reports whether the server accepts connections now (an external server always
// counts as running).
func (s *Server) Running() bool {
	if !s.private {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// Stop shuts a private server down cleanly and waits for it to exit. Data survives for Restart.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if err := s.stop(syscall.SIGTERM); err != nil {
		tb.Fatalf("mariadbtest: stop: %v", err)
	}
}

// Kill kills a private server with SIGKILL, as a crash would, and waits for it to exit.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	if err := s.stop(syscall.SIGKILL); err != nil {
		tb.Fatalf("mariadbtest: kill: %v", err)
	}
}

// Restart starts a stopped private server again on the same port and data.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if !s.private {
		tb.Fatalf("mariadbtest: Restart needs a private server (from Start)")
	}
	if err := s.startProcess(); err != nil {
		tb.Fatalf("mariadbtest: restart: %v", err)
	}
}

// StopServer is Stop for a program that is not a test: it shuts a private server down
// cleanly, waits for it to exit and returns any error. Data survives for RestartServer.
func (s *Server) StopServer() error {
	if err := s.stop(syscall.SIGTERM); err != nil {
		return fmt.Errorf("mariadbtest: stop: %w", err)
	}
	return nil
}

// RestartServer is Restart for a program that is not a test: it starts a stopped private
// server again on the same port and data, and returns once it accepts connections.
func (s *Server) RestartServer() error {
	if !s.private {
		return errors.New("mariadbtest: restart needs a private server (from Start or StartServer)")
	}
	if err := s.startProcess(); err != nil {
		return fmt.Errorf("mariadbtest: restart: %w", err)
	}
	return nil
}

// Close kills a private server and removes its files; it does nothing for an external one.
// It is for servers from StartServer (Start and Shared clean up on their own).
func (s *Server) Close() error {
	s.close()
	return nil
}

func (s *Server) stop(sig syscall.Signal) error {
	if !s.private {
		return errors.New("an external server cannot be stopped; use Start for a private one")
	}
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(startTimeout):
		p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

func (s *Server) close() {
	if !s.private {
		return
	}
	_ = s.stop(syscall.SIGKILL)
	os.RemoveAll(s.dir)
}

// String describes the server for test logs.
func (s *Server) String() string {
	kind := "external"
	if s.private {
		kind = "private"
	}
	return strings.Join([]string{kind, "mariadb at", s.Addr}, " ")
}

// CheckLeaks fails t if a goroutine started during the test outlives it. It runs after the
// test's cleanups (which close caches and sources), and ignores the goroutines that wait on
// this package's mariadbd processes: they belong to the servers, stopped later.
func CheckLeaks(t *testing.T) {
	t.Helper()
	opts := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("wxlookup/internal/mariadbtest.(*Server).startProcess.func1"),
	}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}
