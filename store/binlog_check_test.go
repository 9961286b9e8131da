package store

import (
	"crypto/tls"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"wxlookup/internal/mariadbtest"
)

// replicaUserDSN creates an account with grants on srv, dropped when the test ends, and returns
// dsn with that account instead of root.
func replicaUserDSN(t *testing.T, srv *mariadbtest.Server, dsn, user string, grants ...string) string {
	t.Helper()
	srv.Exec(t, "", "CREATE USER '"+user+"'@'%' IDENTIFIED BY 'pw'")
	t.Cleanup(func() { srv.Exec(t, "", "DROP USER IF EXISTS '"+user+"'@'%'") })
	for _, g := range grants {
		srv.Exec(t, "", "GRANT "+g+" TO '"+user+"'@'%'")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Passwd = user, "pw"
	return cfg.FormatDSN()
}

// setServerGlobal sets a global variable of srv and restores it when the test ends.
func setServerGlobal(t *testing.T, srv *mariadbtest.Server, name, value string) {
	t.Helper()
	db, err := sql.Open("mysql", srv.RootDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var old string
	if err := db.QueryRow("SELECT @@GLOBAL." + name).Scan(&old); err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, "", "SET GLOBAL "+name+" = '"+value+"'")
	t.Cleanup(func() { srv.Exec(t, "", "SET GLOBAL "+name+" = '"+old+"'") })
}

func TestBinlogCheck(t *testing.T) {
	srv := mariadbtest.SharedBinlog(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, fx *binlogFixture) BinlogConfig // nil: the fixture's own
		want  []string                                           // in the error; none: no error
	}{
		{name: "ready"},
		{name: "binary log off",
			setup: func(t *testing.T, _ *binlogFixture) BinlogConfig {
				dsn, _ := seededDB(t, mariadbtest.Start(t), 1) // private servers run without a binary log
				return BinlogConfig{MySQLConfig: MySQLConfig{DSN: dsn}, ServerID: nextServerID()}
			},
			want: []string{"the binary log is off", "log_bin=mysql-bin"}},
		{name: "statement format",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				setServerGlobal(t, srv, "binlog_format", "STATEMENT")
				return fx.cfg()
			},
			want: []string{"binlog_format is STATEMENT", "SET GLOBAL binlog_format='ROW'"}},
		{name: "minimal row image",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				setServerGlobal(t, srv, "binlog_row_image", "MINIMAL")
				return fx.cfg()
			},
			want: []string{"binlog_row_image is MINIMAL", "SET GLOBAL binlog_row_image='FULL'"}},
		{name: "no replication grants",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				cfg := fx.cfg()
				cfg.BinlogDSN = replicaUserDSN(t, srv, fx.dsn, "wxt_norepl", "SELECT ON *.*")
				return cfg
			},
			want: []string{"may not read the binlog position", "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'wxt_norepl'@'%'"}},
		{name: "replication client only",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				cfg := fx.cfg()
				cfg.BinlogDSN = replicaUserDSN(t, srv, fx.dsn, "wxt_client", "REPLICATION CLIENT ON *.*")
				return cfg
			},
			want: []string{"may not read the binary log", "REPLICATION SLAVE", "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'wxt_client'@'%'"}},
		{name: "server id of the server",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				cfg := fx.cfg()
				cfg.ServerID = mariadbtest.BinlogServerID
				return cfg
			},
			want: []string{"server_id is 1", "WXLOOKUP_BINLOG_SERVER_ID"}},
		{name: "unsupported value column",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				fx.exec(t, "ALTER TABLE workpiece_location ADD COLUMN weight FLOAT")
				cfg := fx.cfg()
				cfg.Mapping.ValueColumns = []string{"location", "weight"}
				return cfg
			},
			want: []string{"column weight is float", "integer, DECIMAL, string and date/time"}},
		{name: "latin1 value column",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				fx.exec(t, "ALTER TABLE workpiece_location ADD COLUMN note VARCHAR(10) CHARACTER SET latin1")
				cfg := fx.cfg()
				cfg.Mapping.ValueColumns = []string{"location", "note"}
				return cfg
			},
			want: []string{"column note has character set latin1", "CONVERT TO CHARACTER SET utf8mb4"}},
		{name: "missing column",
			setup: func(t *testing.T, fx *binlogFixture) BinlogConfig {
				cfg := fx.cfg()
				cfg.Mapping.ValueColumns = []string{"nowhere"}
				return cfg
			},
			want: []string{"has no column nowhere"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newBinlogFixture(t, srv, 1)
			b := fx.b
			if tt.setup != nil {
				var err error
				if b, err = OpenBinlog(tt.setup(t, fx)); err != nil {
					t.Fatalf("OpenBinlog: %v", err)
				}
				defer b.Close()
			}
			err := b.Check(testCtx(t))
			t.Logf("Check: %v", err)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got nil, want an error saying %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

// cfg returns the configuration the fixture's source was opened with.
func (fx *binlogFixture) cfg() BinlogConfig {
	return BinlogConfig{MySQLConfig: MySQLConfig{DSN: fx.dsn}, ServerID: fx.b.ServerID(), Heartbeat: testHeartbeat}
}

func TestBinlogPosition(t *testing.T) {
	srv := mariadbtest.SharedBinlog(t)
	fx := newBinlogFixture(t, srv, 1)
	first := fx.position(t)
	if ok, _ := regexp.MatchString(`^wxlookup-bin\.[0-9]{6}:[0-9]+$`, first); !ok {
		t.Fatalf("got position %q, want wxlookup-bin.NNNNNN:pos", first)
	}
	fx.exec(t, "INSERT INTO workpiece_location (part_no, location) VALUES ('P-1', 'x')")
	if second := fx.position(t); !cursorLess(first, second) {
		t.Fatalf("got position %q after a write, want past %q", second, first)
	}

	cfg := fx.cfg()
	cfg.BinlogDSN = replicaUserDSN(t, srv, fx.dsn, "wxt_posuser", "SELECT ON *.*")
	b, err := OpenBinlog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.Position(testCtx(t))
	if want := "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'wxt_posuser'@'%'"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an error containing %q", err, want)
	}
}

func TestOpenBinlogRefuses(t *testing.T) {
	if err := mysql.RegisterTLSConfig("wxt-custom", &tls.Config{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  BinlogConfig
		want string
	}{
		{"server id 0", BinlogConfig{MySQLConfig: MySQLConfig{DSN: "u@tcp(127.0.0.1:1)/db"}}, "ServerID is 0"},
		{"one row per change", BinlogConfig{MySQLConfig: MySQLConfig{DSN: "u@tcp(127.0.0.1:1)/db"}, ServerID: 7, MaxChangeRows: 1}, "MaxChangeRows 1"},
		{"negative heartbeat", BinlogConfig{MySQLConfig: MySQLConfig{DSN: "u@tcp(127.0.0.1:1)/db"}, ServerID: 7, Heartbeat: -1}, "Heartbeat"},
		{"no database", BinlogConfig{MySQLConfig: MySQLConfig{DSN: "u@tcp(127.0.0.1:1)/"}, ServerID: 7}, "has no database"},
		{"custom tls", BinlogConfig{MySQLConfig: MySQLConfig{DSN: "u@tcp(127.0.0.1:1)/db"}, ServerID: 7, BinlogDSN: "u@tcp(127.0.0.1:1)/?tls=wxt-custom"}, "tls=wxt-custom"},
		{"bad mapping", BinlogConfig{MySQLConfig: MySQLConfig{DSN: "u@tcp(127.0.0.1:1)/db", Mapping: Mapping{Table: "x;y"}}, ServerID: 7}, "Table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := OpenBinlog(tt.cfg)
			if err == nil {
				b.Close()
				t.Fatalf("got nil, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestConnParams(t *testing.T) {
	tests := []struct {
		dsn  string
		want string
	}{
		{"u:p@tcp(db.example:3307)/x", "host=db.example port=3307 socket= user=u ssl=disabled server=db.example"},
		{"u@tcp(db.example)/x", "host=db.example port=3306 socket= user=u ssl=disabled server=db.example"},
		{"u@tcp([::1]:3306)/x?tls=true", "host=::1 port=3306 socket= user=u ssl=verify_identity server=::1"},
		{"u@tcp(127.0.0.1:3306)/x?tls=skip-verify", "host=127.0.0.1 port=3306 socket= user=u ssl=required server=127.0.0.1"},
		{"u@tcp(127.0.0.1:3306)/x?tls=preferred", "host=127.0.0.1 port=3306 socket= user=u ssl=preferred server=127.0.0.1"},
		{"u@unix(/run/mysqld/mysqld.sock)/x", "host= port=0 socket=/run/mysqld/mysqld.sock user=u ssl=disabled server="},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			dc, err := mysql.ParseDSN(tt.dsn)
			if err != nil {
				t.Fatal(err)
			}
			p, err := replicaConnParams(dc)
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("host=%s port=%d socket=%s user=%s ssl=%s server=%s", p.Host, p.Port, p.UnixSocket, p.Uname, p.SslMode, p.ServerName)
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
