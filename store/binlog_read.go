package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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

// read opens the stream's replication connection, asks the server for the log from start
// and hands each subscription its transactions until ctx is done or an error occurs (see
// run for what each error means).
func (s *BinlogStream) read(ctx context.Context, start binlogPos) error {
	r := &reader{s: s, ctx: ctx, file: start.file, boundary: start, txStart: start, maps: map[uint64]*mapped{}}
	if err := r.adopt(); err != nil { // before connecting: a restart costs nothing yet
		return err
	}
	params := s.params
	conn, err := vmysql.Connect(ctx, &params)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("store: binlog: follow from %s: connect: %w", start.cursor(), err)
	}
	s.dumps.Add(1)
	defer conn.Close()
	// Two ways out of a blocked read: ctx is done, or nothing arrived for stallAfter.
	// Either closes the connection, which ends the read with an error.
	stop := context.AfterFunc(ctx, conn.Close)
	defer stop()
	var stalled atomic.Bool
	r.watchdog = time.AfterFunc(s.stallAfter(), func() {
		stalled.Store(true)
		conn.Close()
	})
	defer r.watchdog.Stop()

	// Announce what this client understands, as a replica does: checksummed events, and
	// MariaDB's GTID events (capability 4); ask for heartbeats (in nanoseconds). MySQL
	// 8.0.26+ reads the source_… names, older servers and MariaDB the master_… ones.
	hb := strconv.FormatInt(s.heartbeat.Nanoseconds(), 10)
	setup := "SET @master_binlog_checksum = @@global.binlog_checksum, @source_binlog_checksum = @@global.binlog_checksum, " +
		"@mariadb_slave_capability = 4, @master_heartbeat_period = " + hb + ", @source_heartbeat_period = " + hb
	if _, err := conn.ExecuteFetch(setup, 0, false); err != nil {
		return s.readError(ctx, start, "set up the replica session", err, false)
	}
	if err := conn.SendBinlogDumpCommand(s.serverID, start.file, uint32(start.pos)); err != nil {
		return s.readError(ctx, start, "send binlog dump", err, false)
	}
	for {
		ev, err := conn.ReadBinlogEvent()
		if err != nil {
			return s.readError(ctx, r.boundary, "read event", err, stalled.Load())
		}
		r.watchdog.Reset(s.stallAfter())
		if err := r.event(ev); err != nil {
			return err
		}
	}
}

// readError turns an error of the replication connection at position at into read's.
func (s *BinlogStream) readError(ctx context.Context, at binlogPos, step string, err error, stalled bool) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	cursor := at.cursor()
	if stalled {
		return fmt.Errorf("store: binlog: follow from %s: nothing from the server for %s (no heartbeat): connection closed", cursor, s.stallAfter())
	}
	var se *sqlerror.SQLError
	if errors.As(err, &se) {
		switch se.Num {
		case sqlerror.ERMasterFatalReadingBinlog: // 1236
			if strings.Contains(se.Message, "same server") {
				return fmt.Errorf("store: binlog: follow from %s: %w (another replica uses server_id %d: give each wxlookup instance its own WXLOOKUP_BINLOG_SERVER_ID)", cursor, err, s.serverID)
			}
			s.log.Warn("binlog position no longer available on the server (binary logs purged?); a new snapshot is needed",
				"cursor", cursor, "error", se.Message)
			return &purgedError{at: at, err: fmt.Errorf("store: binlog: follow from %s: the server cannot send it (%s): %w", cursor, se.Message, cache.ErrResnapshot)}
		case sqlerror.ERSpecifiedAccessDenied: // 1227
			return fmt.Errorf("store: binlog: follow from %s: %s: %w (%s)", cursor, step, err, s.grantHint(ctx))
		}
	}
	return fmt.Errorf("store: binlog: follow from %s: %s: %w", cursor, step, err)
}

// reader is the state of one read: where it is in the log, the transaction being read, and
// the subscriptions it serves.
type reader struct {
	s        *BinlogStream
	ctx      context.Context
	watchdog *time.Timer
	subs     []*subscription // adopted at the last boundary
	gen      uint64          // the stream's gen when subs was adopted; 0: none yet

	format   vmysql.BinlogFormat
	file     string    // the log file being read
	boundary binlogPos // after the last whole transaction: where a new read may start
	txStart  binlogPos // where the transaction being read began (its first event)

	// inTx is set from a transaction's start (BEGIN, or a MariaDB GTID event that begins
	// one) to its commit; the boundary moves only outside.
	inTx bool
	// pending is set after a GTID event that does not begin a transaction: the next
	// statement (DDL) or BEGIN belongs to it, so the boundary may not move past it.
	pending bool
	// maps holds, by table id, the TABLE_MAPs of the current transaction that subscribed
	// tables use, and the subscriptions that want their rows.
	maps map[uint64]*mapped
}

// mapped is a TABLE_MAP of the current transaction and who wants its rows.
type mapped struct {
	tm   *vmysql.TableMap
	subs []*subscription
}

// wants reports whether sub gets the transaction being read: it began at or after sub's
// position.
func (r *reader) wants(sub *subscription) bool { return !sub.dead && !r.txStart.before(sub.from) }

// adopt brings the reader's subscriptions up to date with the stream's, at a boundary:
// those that left or ended are dropped; a new one is adopted if its position is not behind
// the boundary (it skips what comes before its position), else the read must start again
// from it (errRestart). With none live, the read ends (errIdle).
func (r *reader) adopt() error {
	s := r.s
	s.mu.Lock()
	if s.gen != r.gen {
		r.gen = s.gen
		subs := make([]*subscription, 0, len(s.subs))
		for _, sub := range s.subs {
			if sub.dead {
				continue
			}
			if !slices.Contains(r.subs, sub) && sub.from.before(r.boundary) {
				s.mu.Unlock()
				return errRestart
			}
			subs = append(subs, sub)
		}
		r.subs = subs
	}
	s.mu.Unlock()
	r.subs = slices.DeleteFunc(r.subs, func(sub *subscription) bool { return sub.dead })
	if len(r.subs) == 0 {
		return errIdle
	}
	return nil
}

// send queues d for sub, waiting while its queue is full (the watchdog does not count the
// wait). A subscription whose Follow returned meanwhile is marked dead.
func (r *reader) send(sub *subscription, d delivery) error {
	select {
	case sub.ch <- d:
		return nil
	case <-sub.done:
		sub.dead = true
		return nil
	default:
	}
	r.watchdog.Stop()
	defer r.watchdog.Reset(r.s.stallAfter())
	select {
	case sub.ch <- d:
	case <-sub.done:
		sub.dead = true
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	return nil
}

// event handles one event of the log.
func (r *reader) event(ev vmysql.BinlogEvent) error {
	if !ev.IsValid() {
		return fmt.Errorf("store: binlog: follow: invalid event after %s", r.boundary.cursor())
	}
	if ev.IsFormatDescription() {
		f, err := ev.Format()
		if err != nil {
			return fmt.Errorf("store: binlog: follow: format description in %s: %w", r.file, err)
		}
		r.format = f
		return nil
	}
	typ := ev.Bytes()[vmysql.BinlogEventTypeOffset]
	if r.format.IsZero() {
		// Only the server's artificial ROTATE, naming the file we asked for, comes before
		// the first FORMAT_DESCRIPTION (which says how to read it).
		if ev.IsRotate() {
			return nil
		}
		return fmt.Errorf("store: binlog: follow: event type %d before the format description", typ)
	}
	if typ == evHeartbeat || typ == evHeartbeatV2 {
		if r.inTx || r.pending {
			return nil
		}
		return r.heartbeat()
	}
	if next, size := ev.NextPosition(), uint64(len(ev.Bytes())); !r.inTx && !r.pending && next >= size {
		r.txStart = binlogPos{r.file, next - size} // the first event of what comes next
	}
	ev, _, err := ev.StripChecksum(r.format)
	if err != nil {
		return fmt.Errorf("store: binlog: follow: strip checksum: %w", err)
	}
	f := r.format
	switch {
	case ev.IsRotate():
		return r.rotate(ev)
	case ev.IsGTID():
		_, begins, _, _, err := ev.GTID(f)
		if err != nil {
			return fmt.Errorf("store: binlog: follow: GTID event after %s: %w", r.boundary.cursor(), err)
		}
		if begins {
			r.inTx = true
		} else {
			r.pending = true
		}
	case ev.IsQuery():
		q, err := ev.Query(f)
		if err != nil {
			return fmt.Errorf("store: binlog: follow: query event after %s: %w", r.boundary.cursor(), err)
		}
		return r.query(ev, q)
	case ev.IsXID():
		return r.commit(ev)
	case typ == evXAPrepare:
		// The end of the first phase of an XA transaction; its rows are applied now, as
		// nearly every prepared transaction commits (an XA ROLLBACK then reloads, see query).
		return r.commit(ev)
	case ev.IsTableMap():
		return r.tableMap(ev)
	case ev.IsWriteRows(), ev.IsUpdateRows(), ev.IsPartialUpdateRows(), ev.IsDeleteRows():
		return r.rowsEvent(ev)
	case ev.IsTransactionPayload():
		return fmt.Errorf("store: binlog: follow: a compressed transaction after %s: set binlog_transaction_compression=OFF", r.boundary.cursor())
	case typ == evBinlogCheckpoint || typ == evGTIDList || typ == evPreviousGTIDs || typ == evStop:
		// Bookkeeping between transactions: a new read may start after it.
		if !r.inTx && !r.pending && ev.NextPosition() > 0 {
			r.boundary = binlogPos{r.file, ev.NextPosition()}
			return r.adopt()
		}
	}
	return nil
}

// heartbeat gives every subscription at or behind the boundary a Change without rows, so
// each table stays fresh while the server is idle.
func (r *reader) heartbeat() error {
	now := time.Now()
	for _, sub := range r.subs {
		if !sub.dead && !r.boundary.before(sub.from) {
			if err := r.send(sub, delivery{change: cache.Change{Cursor: r.boundary.cursor(), Time: now}}); err != nil {
				return err
			}
		}
	}
	return r.adopt()
}

// rotate follows a ROTATE event to the file it names. vitess's NextLogFile assumes a
// checksum is present; reading the body here works with binlog_checksum NONE too: 8 bytes
// of position, then the file name.
func (r *reader) rotate(ev vmysql.BinlogEvent) error {
	body := ev.Bytes()[r.format.HeaderLength:]
	if len(body) <= 8 {
		return fmt.Errorf("store: binlog: follow: short rotate event after %s", r.boundary.cursor())
	}
	r.file = string(body[8:])
	if r.inTx || r.pending {
		return nil
	}
	r.boundary = binlogPos{r.file, binary.LittleEndian.Uint64(body[:8])}
	return r.adopt()
}

// query handles a QUERY event: a transaction's BEGIN, COMMIT or ROLLBACK, or a statement
// (DDL, or a write logged as a statement).
func (r *reader) query(ev vmysql.BinlogEvent, q vmysql.Query) error {
	sql := strings.TrimSpace(q.SQL)
	switch {
	case strings.EqualFold(sql, "BEGIN"):
		r.inTx, r.pending = true, false
		return nil
	case strings.EqualFold(sql, "COMMIT"):
		return r.commit(ev)
	case strings.EqualFold(sql, "ROLLBACK"):
		// Only a transaction that also wrote a non-transactional table (MyISAM, Aria) is
		// logged and then rolled back; the rows logged are those that stayed written.
		return r.commit(ev)
	}
	xaRollback := false
	if toks := tokenizeSQL(sql); len(toks) >= 2 && strings.EqualFold(toks[0].text, "XA") && strings.EqualFold(toks[1].text, "ROLLBACK") {
		// A prepared XA transaction rolled back: its rows, if it wrote a table, were applied
		// at XA PREPARE (see event); which tables it wrote is not known here, so every
		// table following it reloads.
		xaRollback = true
	}
	for _, sub := range r.subs {
		if !r.wants(sub) {
			continue
		}
		t := sub.b.table
		var err error
		if kind, hit := stmtTouches(sql, q.Database, t); hit {
			err = fmt.Errorf("store: binlog: follow: %s of %s.%s after %s: %w", kind, t.db, t.table, r.boundary.cursor(), cache.ErrResnapshot)
		} else if xaRollback {
			err = fmt.Errorf("store: binlog: follow: XA ROLLBACK after %s: %w", r.boundary.cursor(), cache.ErrResnapshot)
		}
		if err != nil {
			r.s.fail(r.ctx, sub, err)
		}
	}
	if r.inTx {
		return nil // a statement inside a transaction (SAVEPOINT, another table's write)
	}
	return r.commit(ev) // a statement on its own (DDL) commits implicitly
}

// tableMap notes, for the transaction being read, which subscriptions want the rows of a
// table it maps, after checking that the map still matches each one's columns.
func (r *reader) tableMap(ev vmysql.BinlogEvent) error {
	tm, err := ev.TableMap(r.format)
	if err != nil {
		return fmt.Errorf("store: binlog: follow: table map after %s: %w", r.boundary.cursor(), err)
	}
	id := ev.TableID(r.format)
	delete(r.maps, id)
	for _, sub := range r.subs {
		t := sub.b.table
		if !r.wants(sub) || !strings.EqualFold(tm.Database, t.db) || !strings.EqualFold(tm.Name, t.table) {
			continue
		}
		if diff := sub.sh.check(tm); diff != "" {
			r.s.fail(r.ctx, sub, fmt.Errorf("store: binlog: follow: table %s.%s changed shape after %s: %s: %w",
				tm.Database, tm.Name, r.boundary.cursor(), diff, cache.ErrResnapshot))
			continue
		}
		m := r.maps[id]
		if m == nil {
			m = &mapped{tm: tm}
			r.maps[id] = m
		}
		m.subs = append(m.subs, sub)
	}
	return nil
}

// rowsEvent hands the rows of a rows event to the subscriptions that want its table.
func (r *reader) rowsEvent(ev vmysql.BinlogEvent) error {
	m := r.maps[ev.TableID(r.format)]
	if m == nil {
		return nil
	}
	rs, parseErr := ev.Rows(r.format, m.tm)
	for _, sub := range m.subs {
		if sub.dead {
			continue
		}
		err := parseErr
		if err == nil {
			err = r.rows(sub, ev, m.tm, rs)
		}
		switch {
		case err == nil:
		case r.ctx.Err() != nil:
			return r.ctx.Err()
		default: // this table's rows cannot be read (a row image without a mapped column)
			r.s.fail(r.ctx, sub, fmt.Errorf("store: binlog: follow: rows of %s.%s after %s: %w", m.tm.Database, m.tm.Name, r.boundary.cursor(), err))
		}
	}
	return nil
}

// rows buffers, for sub, the rows of a rows event of its table: an insert's after image, a
// delete's before image, an update's after image preceded, when the key changed, by a
// delete of the old key. When a row would take the buffer past MaxChangeRows, what is
// buffered is delivered first with the boundary before the transaction as cursor (see
// Follow).
func (r *reader) rows(sub *subscription, ev vmysql.BinlogEvent, tm *vmysql.TableMap, rs vmysql.Rows) error {
	var add []cache.Row
	ch := &sub.change
	for i := range rs.Rows {
		row := &rs.Rows[i]
		add = add[:0]
		switch {
		case ev.IsWriteRows():
			ch.Inserts++
			after, ok, err := sub.dec.image(tm, row.Data, rs.DataColumns, row.NullColumns)
			if err != nil {
				return err
			}
			if ok {
				add = append(add, after)
			}
		case ev.IsDeleteRows():
			ch.Deletes++
			before, ok, err := sub.dec.image(tm, row.Identify, rs.IdentifyColumns, row.NullIdentifyColumns)
			if err != nil {
				return err
			}
			if ok {
				before.Deleted = true
				add = append(add, before)
			}
		default: // update
			ch.Updates++
			before, hadKey, err := sub.dec.image(tm, row.Identify, rs.IdentifyColumns, row.NullIdentifyColumns)
			if err != nil {
				return err
			}
			after, hasKey, err := sub.dec.image(tm, row.Data, rs.DataColumns, row.NullColumns)
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
		if len(ch.Rows) > 0 && len(ch.Rows)+len(add) > r.s.maxRows {
			if err := r.deliver(sub, r.boundary, ev.Timestamp()); err != nil {
				return err
			}
		}
		ch.Rows = append(ch.Rows, add...)
	}
	return nil
}

// commit ends the current transaction at ev, its commit event: every subscription that
// wants it gets its Change (its rows, or none), and moves to the commit.
func (r *reader) commit(ev vmysql.BinlogEvent) error {
	at := r.boundary
	if next := ev.NextPosition(); next > 0 {
		at = binlogPos{r.file, next}
	}
	for _, sub := range r.subs {
		if !r.wants(sub) {
			sub.change = cache.Change{}
			continue
		}
		if err := r.deliver(sub, at, ev.Timestamp()); err != nil {
			return err
		}
		if !sub.dead {
			sub.from = at
		}
	}
	r.inTx, r.pending = false, false
	clear(r.maps)
	r.boundary = at
	return r.adopt()
}

// deliver hands sub the rows read so far as one Change, at cursor at, and starts a new one.
func (r *reader) deliver(sub *subscription, at binlogPos, ts uint32) error {
	ch := sub.change
	ch.Cursor, ch.Time = at.cursor(), time.Unix(int64(ts), 0)
	sub.change = cache.Change{Rows: make([]cache.Row, 0, min(len(ch.Rows), r.s.maxRows))}
	return r.send(sub, delivery{change: ch})
}
