package fresh

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Store applies one change to the database and returns when it is committed. It must be
// safe for concurrent use.
type Store interface {
	Apply(ctx context.Context, op Op, key, value string) error
}

// Writer commits changes at a fixed rate, Conns at a time at most: each change goes to a
// settled probe key when there is one (Tracker.Pick), else it is a background update.
type Writer struct {
	Store   Store
	Tracker *Tracker
	// Rate is changes a second; Conns how many may be in flight at once.
	Rate  float64
	Conns int
	// Background returns the key and new value of the n-th background update: a row the
	// traffic may ask for but whose value nothing checks. nil: a tick with no settled
	// probe key makes no change. It is called from one goroutine.
	Background func(n int64) (key, value string)
}

// WriteStats is what a Writer did in one run.
type WriteStats struct {
	// Probe and Background count the changes committed; Failed the background changes
	// that failed (probe failures are in the Tracker's Result), Error the first.
	Probe, Background, Failed int
	Error                     string
	// Skipped counts ticks with no settled probe key and no Background.
	Skipped int
	// Behind is the furthest a change was handed to a connection after its tick: how far
	// the database fell behind the rate.
	Behind time.Duration
	// Elapsed is from the first tick to the last commit.
	Elapsed time.Duration
}

// Rate is the changes committed a second.
func (s WriteStats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Probe+s.Background) / s.Elapsed.Seconds()
}

type job struct {
	k          int // probe key, or -1 for a background update
	op         Op
	key, value string
}

// Run makes changes at w.Rate for d (Rate·d ticks) and returns when every change made has
// been committed or has failed, or when ctx is done.
func (w *Writer) Run(ctx context.Context, d time.Duration) (WriteStats, error) {
	if w.Rate <= 0 || w.Conns < 1 || w.Store == nil || w.Tracker == nil {
		return WriteStats{}, errors.New("fresh: a writer needs a Store, a Tracker, a rate and at least one connection")
	}
	var (
		st  WriteStats
		mu  sync.Mutex
		wg  sync.WaitGroup
		bgN int64
	)
	jobs := make(chan job, w.Conns)
	for range w.Conns {
		wg.Go(func() {
			for j := range jobs {
				err := w.Store.Apply(ctx, j.op, j.key, j.value)
				at := time.Now()
				if j.k >= 0 {
					if err != nil {
						w.Tracker.Failed(j.k, err)
					} else {
						w.Tracker.Committed(j.k, at)
					}
				}
				mu.Lock()
				switch {
				case err != nil && j.k < 0:
					st.Failed++
					if st.Error == "" {
						st.Error = fmt.Sprintf("%s %s: %v", j.op, j.key, err)
					}
				case err == nil && j.k >= 0:
					st.Probe++
				case err == nil:
					st.Background++
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	n := int(w.Rate * d.Seconds())
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
tick:
	for i := range n {
		due := start.Add(time.Duration(float64(i) * float64(time.Second) / w.Rate))
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				break tick
			case <-timer.C:
			}
		}
		j := job{k: -1}
		if k, op, key, value, ok := w.Tracker.Pick(time.Now()); ok {
			j = job{k: k, op: op, key: key, value: value}
		} else if w.Background != nil {
			bgN++
			j.op = Update
			j.key, j.value = w.Background(bgN)
		} else {
			st.Skipped++
			continue
		}
		select {
		case jobs <- j:
		case <-ctx.Done():
			if j.k >= 0 {
				w.Tracker.Failed(j.k, ctx.Err())
			}
			break tick
		}
		if late := time.Since(due); late > st.Behind {
			st.Behind = late
		}
	}
	close(jobs)
	wg.Wait()
	st.Elapsed = time.Since(start)
	return st, ctx.Err()
}

// MySQL is a Store over a table with a key column and one value column, through
// prepared statements. Each change is one autocommitted statement that must change
// exactly one row. Safe for concurrent use.
type MySQL struct {
	update, insert, delete *sql.Stmt
}

// NewMySQL prepares the changes to table (key column keyCol, value column valCol) on db,
// whose account may INSERT, UPDATE and DELETE there.
func NewMySQL(ctx context.Context, db *sql.DB, table, keyCol, valCol string) (*MySQL, error) {
	q := func(s string) string { return "`" + s + "`" }
	m := &MySQL{}
	for _, s := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&m.update, "UPDATE " + q(table) + " SET " + q(valCol) + " = ? WHERE " + q(keyCol) + " = ?"},
		{&m.insert, "INSERT INTO " + q(table) + " (" + q(keyCol) + ", " + q(valCol) + ") VALUES (?, ?)"},
		{&m.delete, "DELETE FROM " + q(table) + " WHERE " + q(keyCol) + " = ?"},
	} {
		stmt, err := db.PrepareContext(ctx, s.query)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("fresh: prepare %q: %w", s.query, err)
		}
		*s.stmt = stmt
	}
	return m, nil
}

// Apply commits one change of key.
func (m *MySQL) Apply(ctx context.Context, op Op, key, value string) error {
	var (
		res sql.Result
		err error
	)
	switch op {
	case Update:
		res, err = m.update.ExecContext(ctx, value, key)
	case Insert:
		res, err = m.insert.ExecContext(ctx, key, value)
	case Delete:
		res, err = m.delete.ExecContext(ctx, key)
	default:
		return fmt.Errorf("fresh: unknown change %s", op)
	}
	if err != nil {
		return fmt.Errorf("fresh: %s %s: %w", op, key, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("fresh: %s %s changed %d rows, want 1 (%v)", op, key, n, err)
	}
	return nil
}

// Close releases the prepared statements.
func (m *MySQL) Close() error {
	var first error
	for _, s := range []*sql.Stmt{m.update, m.insert, m.delete} {
		if s != nil {
			if err := s.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}
