package store

import (
	"context"
	"errors"
	"fmt"

	"wxlookup/cache"
)

// subscriptionBuffer is how many Changes the stream queues for one Follow call whose fn has
// not taken them yet. When a table's queue is full the stream waits for it: a slow table
// slows every table of the stream, and none loses a change. A queue holds at most
// subscriptionBuffer × MaxChangeRows rows.
const subscriptionBuffer = 8

// Follow streams the changes to the mapped table committed after cursor (a Position, or a
// Change's Cursor) to fn, one call per transaction, until ctx is done (it then returns
// ctx's error) or an error occurs. It subscribes to the table's BinlogStream, which reads
// the log over its one replication connection for every table following it.
//
// What fn receives:
//   - A Change per committed transaction after cursor, at its commit, with the
//     transaction's rows of the mapped table (Rows empty when it wrote other tables only),
//     Cursor the position after its commit event and Time the commit's timestamp. A DDL
//     statement on another table is a Change without rows. Rows carry Values rendered as
//     the snapshot reads them, and their Sum; a delete carries the deleted values.
//   - A transaction of more than MaxChangeRows rows of the table arrives as several
//     Changes as its events are read, the last at its commit. The earlier ones carry the
//     cursor of the previous commit: following again from any of them replays the whole
//     transaction, and applying rows is idempotent. So memory stays bounded by
//     MaxChangeRows rows whatever the transaction's size, at the price that readers may
//     see part of a large committed transaction for a moment.
//   - While the server is idle, a Change without rows per heartbeat (every Heartbeat),
//     with the cursor of the last commit and Time the time it arrived.
//
// Follow calls fn on the caller's goroutine, one call at a time. The stream queues a few
// Changes per table meanwhile (subscriptionBuffer) and then waits; a server drops a
// replica that does not read for net_write_timeout (60 s by default), so fn should return
// promptly.
//
// Errors: a lost connection, or no event nor heartbeat for 5×Heartbeat+5 s, ends the
// Follow calls of every table with an error after which following again from the last
// Change's cursor loses nothing. An error wrapping cache.ErrResnapshot says following
// cannot go on from any cursor it gave: the position was purged from the server, the
// table was truncated, altered, renamed, dropped or replaced, a TABLE_MAP event no longer
// matches its columns, a write to it was logged as a statement, or an XA transaction was
// rolled back after its prepare; only the tables concerned get it, the others go on.
// Errors fn returns are returned wrapped.
func (b *Binlog) Follow(ctx context.Context, cursor string, fn func(cache.Change) error) error {
	file, pos, err := parseCursor(cursor)
	if err != nil {
		return err
	}
	sh, err := b.readShape(ctx)
	var se *shapeError
	switch {
	case errors.As(err, &se):
		// The table is gone or changed since the snapshot (renamed away while no Follow
		// was running to see the DDL): only a new snapshot can say what to do.
		return fmt.Errorf("store: binlog: follow from %s: %w (%w)", cursor, err, cache.ErrResnapshot)
	case err != nil:
		return fmt.Errorf("store: binlog: follow from %s: %w", cursor, err)
	}
	sub := &subscription{b: b, sh: sh, dec: newRowDecoder(sh), from: binlogPos{file, uint64(pos)},
		ch: make(chan delivery, subscriptionBuffer), done: make(chan struct{})}
	if err := b.stream.subscribe(sub); err != nil {
		return err
	}
	defer b.stream.unsubscribe(sub)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.stream.ctx.Done():
			return errStreamClosed
		case d := <-sub.ch:
			if d.err != nil {
				return d.err
			}
			if err := fn(d.change); err != nil {
				return fmt.Errorf("store: binlog: apply change at %s: %w", d.change.Cursor, err)
			}
		}
	}
}

// errStreamClosed is the error of Follow after the stream's Close.
var errStreamClosed = errors.New("store: binlog: the stream is closed")

// subscription is one Follow call's place in its stream.
type subscription struct {
	b    *Binlog
	sh   *tableShape
	dec  *rowDecoder
	ch   chan delivery // to Follow
	done chan struct{} // closed when Follow returns

	// The rest belongs to the stream's reader goroutine once subscribed.
	//
	// from is where the subscription stands: it gets the transactions that begin at or
	// after from, and from moves to the commit of each it is given. A reader that starts
	// again from an older position (for another table) so skips what it already queued.
	from   binlogPos
	dead   bool         // an error ended it: it gets nothing more
	change cache.Change // its rows of the transaction being read
}

// delivery is what a subscription's Follow receives: a Change, or the error that ends it.
type delivery struct {
	change cache.Change
	err    error
}

// subscribe adds sub to the stream and starts the reader if none runs. It reads from the
// oldest position of its subscriptions; a subscription older than where a running reader
// is makes it start again from there (reader.adopt).
func (s *BinlogStream) subscribe(sub *subscription) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return errStreamClosed
	}
	s.subs = append(s.subs, sub)
	s.gen++
	if !s.running {
		s.running = true
		s.wg.Add(1)
		go s.run()
	}
	return nil
}

// unsubscribe takes sub off the stream when its Follow returns; with nobody left, the
// replication connection is closed.
func (s *BinlogStream) unsubscribe(sub *subscription) {
	close(sub.done)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.subs {
		if x == sub {
			s.subs = append(s.subs[:i], s.subs[i+1:]...)
			break
		}
	}
	s.gen++
	if len(s.subs) == 0 && s.stopRead != nil {
		s.stopRead()
	}
}

// run is the stream's reader goroutine: while any subscription is live, it reads the log
// over one connection from the oldest position among them (read), and when read ends it
// decides, step by step:
//   - restart (a subscription older than the reader's position arrived): read again
//     from the oldest position, with the same subscriptions;
//   - everybody left (the connection was stopped): go on only if one came back;
//   - the server no longer has the position (purged): the subscriptions that needed it
//     get ErrResnapshot, the others are read for again;
//   - any other error (a lost connection, a stall): every subscription gets it, as its
//     Follow would have on a connection of its own; each follows again after its
//     loader's back-off, and the first to come back starts a new reader.
func (s *BinlogStream) run() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		var start binlogPos
		live := 0
		for _, sub := range s.subs {
			if !sub.dead && (live == 0 || sub.from.before(start)) {
				start = sub.from
			}
			if !sub.dead {
				live++
			}
		}
		if live == 0 || s.ctx.Err() != nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		rctx, cancel := context.WithCancel(s.ctx)
		s.stopRead = cancel
		s.mu.Unlock()

		err := s.read(rctx, start)
		stopped := rctx.Err() != nil // by Close, or because everybody left
		s.mu.Lock()
		s.stopRead = nil
		s.mu.Unlock()
		cancel()
		var purged *purgedError
		switch {
		case errors.Is(err, errRestart), errors.Is(err, errIdle):
		case stopped: // Follow returns errStreamClosed by itself after Close
		case errors.As(err, &purged):
			s.failWhere(err, func(sub *subscription) bool { return !purged.at.before(sub.from) })
		default:
			s.failWhere(err, func(*subscription) bool { return true })
		}
	}
}

// failWhere ends every live subscription for which match is true with err.
func (s *BinlogStream) failWhere(err error, match func(*subscription) bool) {
	s.mu.Lock()
	var subs []*subscription
	for _, sub := range s.subs {
		if !sub.dead && match(sub) {
			subs = append(subs, sub)
		}
	}
	s.mu.Unlock()
	for _, sub := range subs {
		s.fail(s.ctx, sub, err)
	}
}

// fail ends sub with err: Follow returns it. It runs on the reader goroutine.
func (s *BinlogStream) fail(ctx context.Context, sub *subscription, err error) {
	sub.dead = true
	select {
	case sub.ch <- delivery{err: err}:
	case <-sub.done:
	case <-ctx.Done():
	}
}

var (
	// errRestart ends a read that must start again from an older position.
	errRestart = errors.New("store: binlog: restart from an older position")
	// errIdle ends a read that has no live subscription left.
	errIdle = errors.New("store: binlog: nobody follows")
)

// purgedError is the error of a read whose position the server no longer has: at is
// where the reader stood. It wraps cache.ErrResnapshot.
type purgedError struct {
	at  binlogPos
	err error
}

func (e *purgedError) Error() string { return e.err.Error() }
func (e *purgedError) Unwrap() error { return e.err }
