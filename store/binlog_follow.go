package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vmysql "vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/sqlerror"

	"wxlookup/cache"
)

// Binlog event types read from the header where vitess has no predicate for them.
const (
	evStop             = 3
	evHeartbeat        = 27
	evPreviousGTIDs    = 35
	evXAPrepare        = 38
	evHeartbeatV2      = 41 // MySQL 8.0.26+
	evBinlogCheckpoint = 161
	evGTIDList         = 163
)

// stallAfter is how long Follow waits for any event, heartbeats included, before it takes
// the connection for dead.
func (b *Binlog) stallAfter() time.Duration { return 5*b.heartbeat + 5*time.Second }

// Follow streams the changes to the mapped table committed after cursor (a Position, or a
// Change's Cursor) to fn, one call per transaction, until ctx is done (it then returns
// ctx's error) or an error occurs. It connects with the replication account as a replica
// with ServerID and asks the server for the log from cursor on.
//
// What fn receives:
//   - A Change per committed transaction, at its commit, with the transaction's rows of
//     the mapped table (Rows empty when it wrote other tables only), Cursor the position
//     after its commit event and Time the commit's timestamp. A DDL statement on another
//     table is a Change without rows. Rows carry Values rendered as the snapshot reads
//     them, and their Sum; a delete carries the deleted values.
//   - A transaction of more than MaxChangeRows rows of the table arrives as several
//     Changes as its events are read, the last at its commit. The earlier ones carry the
//     cursor of the previous commit: following again from any of them replays the whole
//     transaction, and applying rows is idempotent. So memory stays bounded by
//     MaxChangeRows rows whatever the transaction's size, at the price that readers may
//     see part of a large committed transaction for a moment.
//   - While the server is idle, a Change without rows per heartbeat (every Heartbeat),
//     with the cursor of the last commit and Time the time it arrived.
//
// Follow calls fn from its own goroutine, one call at a time; while fn runs, no events
// are read, and a server drops a replica that does not read for net_write_timeout (60 s
// by default), so fn should return promptly.
//
// Errors: a lost connection, or no event nor heartbeat for 5×Heartbeat+5 s, returns an
// error after which following again from the last Change's cursor loses nothing. An error
// wrapping cache.ErrResnapshot says following cannot go on from any cursor it gave: the
// position was purged from the server, the table was truncated, altered, renamed, dropped
// or replaced, a TABLE_MAP event no longer matches its columns, or a write to it was
// logged as a statement. Errors fn returns are returned wrapped.
func (b *Binlog) Follow(ctx context.Context, cursor string, fn func(cache.Change) error) error {
	file, pos, err := parseCursor(cursor)
	if err != nil {
		return err
	}
	sh, err := b.readShape(ctx)
	if err != nil {
		return fmt.Errorf("store: binlog: follow from %s: %w", cursor, err)
	}
	params := b.params
	conn, err := vmysql.Connect(ctx, &params)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("store: binlog: follow from %s: connect: %w", cursor, err)
	}
	defer conn.Close()
	// Two ways out of a blocked read: ctx is done, or nothing arrived for stallAfter.
	// Either closes the connection, which ends the read with an error.
	stop := context.AfterFunc(ctx, conn.Close)
	defer stop()
	var stalled atomic.Bool
	watchdog := time.AfterFunc(b.stallAfter(), func() {
		stalled.Store(true)
		conn.Close()
	})
	defer watchdog.Stop()

	// Announce what this client understands, as a replica does: checksummed events, and
	// MariaDB's GTID events (capability 4); ask for heartbeats (in nanoseconds). MySQL
	// 8.0.26+ reads the source_… names, older servers and MariaDB the master_… ones.
	hb := strconv.FormatInt(b.heartbeat.Nanoseconds(), 10)
	setup := "SET @master_binlog_checksum = @@global.binlog_checksum, @source_binlog_checksum = @@global.binlog_checksum, " +
		"@mariadb_slave_capability = 4, @master_heartbeat_period = " + hb + ", @source_heartbeat_period = " + hb
	if _, err := conn.ExecuteFetch(setup, 0, false); err != nil {
		return b.readError(ctx, cursor, "set up the replica session", err, false)
	}
	if err := conn.SendBinlogDumpCommand(b.serverID, file, pos); err != nil {
		return b.readError(ctx, cursor, "send binlog dump", err, false)
	}

	s := &binlogStream{
		b: b, sh: sh, dec: newRowDecoder(sh), file: file, boundary: cursor,
		tables: map[uint64]*vmysql.TableMap{},
		fn: func(ch cache.Change) error {
			watchdog.Stop()
			defer watchdog.Reset(b.stallAfter())
			if err := fn(ch); err != nil {
				return fmt.Errorf("store: binlog: apply change at %s: %w", ch.Cursor, err)
			}
			return nil
		},
	}
	for {
		ev, err := conn.ReadBinlogEvent()
		if err != nil {
			return b.readError(ctx, s.boundary, "read event", err, stalled.Load())
		}
		watchdog.Reset(b.stallAfter())
		if err := s.event(ev); err != nil {
			return err
		}
	}
}

// readError turns an error of the replication connection into Follow's error.
func (b *Binlog) readError(ctx context.Context, cursor, step string, err error, stalled bool) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if stalled {
		return fmt.Errorf("store: binlog: follow from %s: nothing from the server for %s (no heartbeat): connection closed", cursor, b.stallAfter())
	}
	var se *sqlerror.SQLError
	if errors.As(err, &se) {
		switch se.Num {
		case sqlerror.ERMasterFatalReadingBinlog: // 1236
			if strings.Contains(se.Message, "same server") {
				return fmt.Errorf("store: binlog: follow from %s: %w (another replica uses server_id %d: give each wxlookup instance its own WXLOOKUP_BINLOG_SERVER_ID)", cursor, err, b.serverID)
			}
			b.log.Warn("binlog position no longer available on the server (binary logs purged?); a new snapshot is needed",
				"cursor", cursor, "error", se.Message)
			return fmt.Errorf("store: binlog: follow from %s: the server cannot send it (%s): %w", cursor, se.Message, cache.ErrResnapshot)
		case sqlerror.ERSpecifiedAccessDenied: // 1227
			return fmt.Errorf("store: binlog: follow from %s: %s: %w (%s)", cursor, step, err, b.grantHint(ctx))
		}
	}
	return fmt.Errorf("store: binlog: follow from %s: %s: %w", cursor, step, err)
}

// binlogStream is the state of one Follow: where it is in the log, and the transaction being
// read.
type binlogStream struct {
	b   *Binlog
	sh  *tableShape
	dec *rowDecoder
	fn  func(cache.Change) error

	format   vmysql.BinlogFormat
	file     string // the log file being read
	boundary string // cursor after the last whole transaction: where a new Follow may start

	// inTx is set from a transaction's start (BEGIN, or a MariaDB GTID event that begins
	// one) to its commit; the boundary moves only outside.
	inTx bool
	// pending is set after a GTID event that does not begin a transaction: the next
	// statement (DDL) or BEGIN belongs to it, so the boundary may not move past it.
	pending bool
	// tables holds the TABLE_MAPs of the mapped table in the current transaction, by
	// table id; row events of other ids are of other tables.
	tables map[uint64]*vmysql.TableMap
	ch     cache.Change // the rows read of the current transaction
}

// event handles one event of the log.
func (s *binlogStream) event(ev vmysql.BinlogEvent) error {
	if !ev.IsValid() {
		return fmt.Errorf("store: binlog: follow: invalid event after %s", s.boundary)
	}
	if ev.IsFormatDescription() {
		f, err := ev.Format()
		if err != nil {
			return fmt.Errorf("store: binlog: follow: format description in %s: %w", s.file, err)
		}
		s.format = f
		return nil
	}
	typ := ev.Bytes()[vmysql.BinlogEventTypeOffset]
	if s.format.IsZero() {
		// Only the server's artificial ROTATE, naming the file we asked for, comes before
		// the first FORMAT_DESCRIPTION (which says how to read it).
		if ev.IsRotate() {
			return nil
		}
		return fmt.Errorf("store: binlog: follow: event type %d before the format description", typ)
	}
	if typ == evHeartbeat || typ == evHeartbeatV2 {
		if s.inTx || s.pending {
			return nil
		}
		return s.fn(cache.Change{Cursor: s.boundary, Time: time.Now()})
	}
	ev, _, err := ev.StripChecksum(s.format)
	if err != nil {
		return fmt.Errorf("store: binlog: follow: strip checksum: %w", err)
	}
	f := s.format
	switch {
	case ev.IsRotate():
		return s.rotate(ev)
	case ev.IsGTID():
		_, begins, _, _, err := ev.GTID(f)
		if err != nil {
			return fmt.Errorf("store: binlog: follow: GTID event after %s: %w", s.boundary, err)
		}
		if begins {
			s.inTx = true
		} else {
			s.pending = true
		}
	case ev.IsQuery():
		q, err := ev.Query(f)
		if err != nil {
			return fmt.Errorf("store: binlog: follow: query event after %s: %w", s.boundary, err)
		}
		return s.query(ev, q)
	case ev.IsXID():
		return s.commit(ev)
	case typ == evXAPrepare:
		// The end of the first phase of an XA transaction; its rows are applied now, as
		// nearly every prepared transaction commits (an XA ROLLBACK then reloads, see query).
		return s.commit(ev)
	case ev.IsTableMap():
		tm, err := ev.TableMap(f)
		if err != nil {
			return fmt.Errorf("store: binlog: follow: table map after %s: %w", s.boundary, err)
		}
		id := ev.TableID(f)
		if !strings.EqualFold(tm.Database, s.b.table.db) || !strings.EqualFold(tm.Name, s.b.table.table) {
			delete(s.tables, id)
			return nil
		}
		if diff := s.sh.check(tm); diff != "" {
			return fmt.Errorf("store: binlog: follow: table %s.%s changed shape after %s: %s: %w", tm.Database, tm.Name, s.boundary, diff, cache.ErrResnapshot)
		}
		s.tables[id] = tm
	case ev.IsWriteRows(), ev.IsUpdateRows(), ev.IsPartialUpdateRows(), ev.IsDeleteRows():
		tm := s.tables[ev.TableID(f)]
		if tm == nil {
			return nil
		}
		rs, err := ev.Rows(f, tm)
		if err != nil {
			return fmt.Errorf("store: binlog: follow: rows event after %s: %w", s.boundary, err)
		}
		if err := s.rows(ev, tm, rs); err != nil {
			return fmt.Errorf("store: binlog: follow: rows of %s.%s after %s: %w", tm.Database, tm.Name, s.boundary, err)
		}
	case ev.IsTransactionPayload():
		return fmt.Errorf("store: binlog: follow: a compressed transaction after %s: set binlog_transaction_compression=OFF", s.boundary)
	case typ == evBinlogCheckpoint || typ == evGTIDList || typ == evPreviousGTIDs || typ == evStop:
		// Bookkeeping between transactions: a new Follow may start after it.
		if !s.inTx && !s.pending && ev.NextPosition() > 0 {
			s.boundary = formatCursor(s.file, ev.NextPosition())
		}
	}
	return nil
}

// rotate follows a ROTATE event to the file it names. vitess's NextLogFile assumes a
// checksum is present; reading the body here works with binlog_checksum NONE too: 8 bytes
// of position, then the file name.
func (s *binlogStream) rotate(ev vmysql.BinlogEvent) error {
	body := ev.Bytes()[s.format.HeaderLength:]
	if len(body) <= 8 {
		return fmt.Errorf("store: binlog: follow: short rotate event after %s", s.boundary)
	}
	s.file = string(body[8:])
	if !s.inTx && !s.pending {
		s.boundary = formatCursor(s.file, binary.LittleEndian.Uint64(body[:8]))
	}
	return nil
}

// query handles a QUERY event: a transaction's BEGIN, COMMIT or ROLLBACK, or a statement
// (DDL, or a write logged as a statement).
func (s *binlogStream) query(ev vmysql.BinlogEvent, q vmysql.Query) error {
	sql := strings.TrimSpace(q.SQL)
	switch {
	case strings.EqualFold(sql, "BEGIN"):
		s.inTx, s.pending = true, false
		return nil
	case strings.EqualFold(sql, "COMMIT"):
		return s.commit(ev)
	case strings.EqualFold(sql, "ROLLBACK"):
		// Only a transaction that also wrote a non-transactional table (MyISAM, Aria) is
		// logged and then rolled back; the rows logged are those that stayed written.
		return s.commit(ev)
	}
	if kind, hit := stmtTouches(sql, q.Database, s.b.table); hit {
		return fmt.Errorf("store: binlog: follow: %s of %s.%s after %s: %w", kind, s.b.table.db, s.b.table.table, s.boundary, cache.ErrResnapshot)
	}
	if toks := tokenizeSQL(sql); len(toks) >= 2 && strings.EqualFold(toks[0].text, "XA") && strings.EqualFold(toks[1].text, "ROLLBACK") {
		// A prepared XA transaction rolled back: its rows, if it wrote the table, were
		// applied at XA PREPARE (see event).
		return fmt.Errorf("store: binlog: follow: XA ROLLBACK after %s: %w", s.boundary, cache.ErrResnapshot)
	}
	if s.inTx {
		return nil // a statement inside a transaction (SAVEPOINT, another table's write)
	}
	return s.commit(ev) // a statement on its own (DDL) commits implicitly
}

// rows buffers the rows of a rows event of the mapped table: an insert's after image, a
// delete's before image, an update's after image preceded, when the key changed, by a
// delete of the old key. When a row would take the buffer past MaxChangeRows, what is
// buffered is delivered first with the previous boundary as cursor (see Follow).
func (s *binlogStream) rows(ev vmysql.BinlogEvent, tm *vmysql.TableMap, rs vmysql.Rows) error {
	var add []cache.Row
	for i := range rs.Rows {
		r := &rs.Rows[i]
		add = add[:0]
		switch {
		case ev.IsWriteRows():
			s.ch.Inserts++
			row, ok, err := s.dec.image(tm, r.Data, rs.DataColumns, r.NullColumns)
			if err != nil {
				return err
			}
			if ok {
				add = append(add, row)
			}
		case ev.IsDeleteRows():
			s.ch.Deletes++
			row, ok, err := s.dec.image(tm, r.Identify, rs.IdentifyColumns, r.NullIdentifyColumns)
			if err != nil {
				return err
			}
			if ok {
				row.Deleted = true
				add = append(add, row)
			}
		default: // update
			s.ch.Updates++
			before, hadKey, err := s.dec.image(tm, r.Identify, rs.IdentifyColumns, r.NullIdentifyColumns)
			if err != nil {
				return err
			}
			after, hasKey, err := s.dec.image(tm, r.Data, rs.DataColumns, r.NullColumns)
			if err != nil {
				return err
			}
			if hadKey && (!hasKey || before.Key != after.Key) {
				before.Deleted = true
				add = append(add, before)
			}
			if hasKey {
				add = append(add, after)
			}
		}
		if len(s.ch.Rows) > 0 && len(s.ch.Rows)+len(add) > s.b.maxRows {
			if err := s.deliver(s.boundary, ev.Timestamp()); err != nil {
				return err
			}
		}
		s.ch.Rows = append(s.ch.Rows, add...)
	}
	return nil
}

// commit ends the current transaction at ev, its commit event, and delivers it.
func (s *binlogStream) commit(ev vmysql.BinlogEvent) error {
	cursor := s.boundary
	if next := ev.NextPosition(); next > 0 {
		cursor = formatCursor(s.file, next)
	}
	s.inTx, s.pending = false, false
	clear(s.tables)
	s.boundary = cursor
	return s.deliver(cursor, ev.Timestamp())
}

// deliver hands the rows read so far to fn as one Change and starts a new one.
func (s *binlogStream) deliver(cursor string, ts uint32) error {
	ch := s.ch
	ch.Cursor, ch.Time = cursor, time.Unix(int64(ts), 0)
	s.ch = cache.Change{Rows: make([]cache.Row, 0, min(len(ch.Rows), s.b.maxRows))}
	return s.fn(ch)
}
