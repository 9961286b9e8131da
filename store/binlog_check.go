package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	vmysql "vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/sqlerror"
)

// Check tells whether the binary log can be followed, and if not, what to change: a
// *CannotFollowError listing every problem found, each with the setting or statement
// that fixes it. Any other error means the server could not be asked (an outage).
// It checks that the log is on, in ROW format with full row images and without
// transaction compression; that the replication account may read the position
// (REPLICATION CLIENT) and the log itself (REPLICATION SLAVE — tried with a
// non-blocking dump that ends at once); that ServerID is not the server's own; and that
// the mapped table's key and value columns are of types the change feed renders as the
// snapshot does.
func (b *Binlog) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	vars, err := b.globals(ctx)
	if err != nil {
		return fmt.Errorf("store: binlog: check: %w", err)
	}
	if v := vars["log_bin"]; !strings.EqualFold(v, "ON") && v != "1" {
		add("the binary log is off (log_bin=%s): start the server with log_bin (my.cnf [mysqld]: log_bin=mysql-bin, binlog_format=ROW, server_id=1)", v)
	} else {
		if v := vars["binlog_format"]; !strings.EqualFold(v, "ROW") {
			add("binlog_format is %s: run SET GLOBAL binlog_format='ROW' and set binlog_format=ROW in my.cnf (sessions keep their format until they reconnect)", v)
		}
		if v, ok := vars["binlog_row_image"]; ok && !strings.EqualFold(v, "FULL") {
			add("binlog_row_image is %s: run SET GLOBAL binlog_row_image='FULL' and set binlog_row_image=FULL in my.cnf", v)
		}
		if v := vars["binlog_transaction_compression"]; strings.EqualFold(v, "ON") {
			add("binlog_transaction_compression is ON: run SET GLOBAL binlog_transaction_compression=OFF and set it in my.cnf")
		}
	}
	if vars["server_id"] == fmt.Sprint(b.serverID) {
		add("the server's own server_id is %d, the one this replica was given: choose another WXLOOKUP_BINLOG_SERVER_ID", b.serverID)
	}

	cursor, err := b.Position(ctx)
	switch {
	case mysqlErrorIs(err, 1227):
		add("the replication account may not read the binlog position: %s", b.grantHint(ctx))
	case err != nil && len(problems) == 0:
		return fmt.Errorf("store: binlog: check: %w", err)
	case err == nil:
		if err := b.probeDump(ctx, cursor); err != nil {
			var se *sqlerror.SQLError
			if errors.As(err, &se) && se.Num == sqlerror.ERSpecifiedAccessDenied {
				add("the replication account may not read the binary log (%s): %s", se.Message, b.grantHint(ctx))
			} else {
				add("reading the binary log from %s failed: %v", cursor, err)
			}
		}
	}

	if _, err := b.readShape(ctx); err != nil {
		add("%v", err)
	}
	if len(problems) > 0 {
		return &CannotFollowError{Table: b.table.db + "." + b.table.table, Problems: problems}
	}
	return nil
}

// CannotFollowError is the error Check returns when the server answered and the binary log
// cannot be followed as it is configured: a setting or grant to change, not an outage.
// Each problem names its fix.
type CannotFollowError struct {
	Table    string   // db.table the feed would follow
	Problems []string // what is wrong, each with the setting or statement that fixes it
}

func (e *CannotFollowError) Error() string {
	return "store: binlog: the change feed cannot follow " + e.Table + ": " + strings.Join(e.Problems, "; ")
}

// globals reads the server settings Check looks at, by name; a setting the server does
// not have is absent.
func (b *Binlog) globals(ctx context.Context) (map[string]string, error) {
	rows, err := b.admin.QueryContext(ctx, `SHOW GLOBAL VARIABLES WHERE Variable_name IN
		('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_transaction_compression', 'server_id')`)
	if err != nil {
		return nil, fmt.Errorf("read server variables: %w", err)
	}
	defer rows.Close()
	vars := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("read server variables: %w", err)
		}
		vars[strings.ToLower(k)] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read server variables: %w", err)
	}
	return vars, nil
}

// probeDump asks for the log from cursor in non-blocking mode, as server_id 0: the server
// sends what there is (at the end of the log, only its preamble) and ends the stream, or
// refuses without REPLICATION SLAVE. Id 0 marks a client that is not a replica, so the
// probe does not displace a Follow running with ServerID.
func (b *Binlog) probeDump(ctx context.Context, cursor string) error {
	file, pos, err := parseCursor(cursor)
	if err != nil {
		return err
	}
	params := b.params
	conn, err := vmysql.Connect(ctx, &params)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, conn.Close)
	defer stop()
	if _, err := conn.ExecuteFetch("SET @master_binlog_checksum = @@global.binlog_checksum, "+
		"@source_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4", 0, false); err != nil {
		return err
	}
	if err := conn.WriteComBinlogDump(0, file, uint64(pos), vmysql.BinlogDumpNonBlock); err != nil {
		return err
	}
	for events := 0; ; events++ {
		if _, err := conn.ReadBinlogEvent(); err != nil {
			var se *sqlerror.SQLError
			if events > 0 && errors.As(err, &se) && se.Num == sqlerror.CRServerLost && ctx.Err() == nil {
				return nil // the end of a non-blocking dump
			}
			return err
		}
	}
}
