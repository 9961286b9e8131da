package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAllowRefresh is how often an allow-list is read again.
const DefaultAllowRefresh = 30 * time.Second

// AllowList is the set of OpenIDs that may query, read from a file (one OpenID per line,
// # comments) or a MySQL table, and read again every refresh period by a background loop.
// A failed read keeps the previous set. Allowed is safe for concurrent use and does no I/O.
type AllowList struct {
	name string
	load func(ctx context.Context) (map[string]struct{}, error)
	set  atomic.Pointer[map[string]struct{}]
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// OpenAllowList reads the allow-list file at path. It fails if the file cannot be read.
func OpenAllowList(path string) (*AllowList, error) {
	a := &AllowList{name: path, load: func(context.Context) (map[string]struct{}, error) { return readAllowFile(path) }}
	if err := a.first(); err != nil {
		return nil, err
	}
	return a, nil
}

// OpenAllowTable reads the allow-list from column of table through m's connection pool.
// Both names are validated as plain identifiers. When the first read fails (MySQL is down
// at start-up) it returns the error together with a usable, empty list — nobody is allowed
// until a later read succeeds — so the caller can start anyway.
func OpenAllowTable(ctx context.Context, m *MySQL, table, column string) (*AllowList, error) {
	if err := checkTable(table); err != nil {
		return nil, &MappingError{"AllowTable", err}
	}
	if err := checkIdent(column); err != nil {
		return nil, &MappingError{"AllowColumn", err}
	}
	q := "SELECT " + quote(column) + " FROM " + quote(table)
	a := &AllowList{name: table + "." + column, load: func(ctx context.Context) (map[string]struct{}, error) {
		ctx, cancel := context.WithTimeout(ctx, m.timeout)
		defer cancel()
		rows, err := m.db.QueryContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("store: allow-list %s: %w", table, err)
		}
		defer rows.Close()
		set := make(map[string]struct{})
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return nil, fmt.Errorf("store: allow-list %s: %w", table, err)
			}
			if id = strings.TrimSpace(id); id != "" {
				set[id] = struct{}{}
			}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: allow-list %s: %w", table, err)
		}
		return set, nil
	}}
	if err := a.first(); err != nil {
		empty := map[string]struct{}{}
		a.set.Store(&empty)
		return a, err
	}
	return a, nil
}

func (a *AllowList) first() error {
	set, err := a.load(context.Background())
	if err != nil {
		return err
	}
	a.set.Store(&set)
	return nil
}

// Allowed reports whether openID is on the list.
func (a *AllowList) Allowed(openID []byte) bool {
	_, ok := (*a.set.Load())[string(openID)]
	return ok
}

// Len returns how many OpenIDs the list holds.
func (a *AllowList) Len() int { return len(*a.set.Load()) }

// String names the list's origin.
func (a *AllowList) String() string { return "allow-list " + a.name }

// Start reads the list again every interval until Close. Errors are logged and the
// previous list kept.
func (a *AllowList) Start(interval time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	a.log = log
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-a.ctx.Done():
				return
			case <-t.C:
				a.Reload(a.ctx)
			}
		}
	}()
}

// Reload reads the list now; on error the previous list stays and the error is returned.
func (a *AllowList) Reload(ctx context.Context) error {
	set, err := a.load(ctx)
	if err != nil {
		if a.log != nil && ctx.Err() == nil {
			a.log.Warn("allow-list: read failed, keeping the previous list", "list", a.name, "err", err)
		}
		return err
	}
	a.set.Store(&set)
	return nil
}

// Close stops the refresh loop and waits for it.
func (a *AllowList) Close() error {
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
	}
	return nil
}

func readAllowFile(path string) (map[string]struct{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: allow-list: %w", err)
	}
	set := make(map[string]struct{})
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.ContainsAny(s, " \t,;") {
			return nil, fmt.Errorf("store: allow-list %s:%d: %q is not one OpenID", path, line, s)
		}
		set[s] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("store: allow-list %s: %w", path, err)
	}
	return set, nil
}
