package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// maxHint is how many table or column names an error lists to help find the right one;
// a longer list is left out.
const maxHint = 20

// MappingWarning is the error CheckMapping returns when the mapping works but costs more
// than it should: the updated column has no index (every refresh scans the table), or the
// table is a view (its key's uniqueness cannot be checked). Field names the Mapping field,
// as in MappingError. A caller logs it and carries on.
type MappingWarning struct {
	Field string
	Err   error
}

func (w *MappingWarning) Error() string { return "store: mapping: " + w.Field + ": " + w.Err.Error() }

// Unwrap returns the reason.
func (w *MappingWarning) Unwrap() error { return w.Err }

// Statements of CheckMapping: parameters only, names never spliced in. A table not
// qualified by a database is looked up in the connection's (DATABASE()).
const (
	checkTableSQL = "SELECT COALESCE(?, DATABASE()), (SELECT TABLE_TYPE FROM information_schema.TABLES " +
		"WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?)"
	listTablesSQL  = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME LIMIT ?"
	listColumnsSQL = "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS " +
		"WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
	listIndexesSQL = "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS " +
		"WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX"
)

// CheckMapping asks MySQL (information_schema) whether the mapping fits the table: the
// table exists; the key column, every value column and, when needUpdated (poll mode), the
// updated column exist; the updated column is a TIMESTAMP or DATETIME; the key column is
// unique (the primary key, or a unique index of that column alone). The first problem is
// returned as a *MappingError naming the field, for example `store: mapping:
// UpdatedColumn: no column "updatd_at" in table workpiece_location (columns: part_no,
// location, updated_at)`. When all that holds but the updated column has no index (with
// needUpdated) or the table is a view, it returns a *MappingWarning. Any other error (MySQL
// unreachable, a timeout) is neither, so the caller can try again later.
func (s *MySQL) CheckMapping(ctx context.Context, needUpdated bool) error {
	err := s.checkMapping(ctx, needUpdated)
	var me *MappingError
	if err == nil || errors.As(err, &me) || isWarning(err) {
		return err
	}
	return fmt.Errorf("store: check mapping: %w", err)
}

// checkMapping is CheckMapping with its other errors not yet prefixed.
func (s *MySQL) checkMapping(ctx context.Context, needUpdated bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var dbArg any // nil: the connection's database
	table := s.m.Table
	if db, t, ok := strings.Cut(table, "."); ok {
		dbArg, table = db, t
	}
	var schema, kind sql.NullString
	if err := s.db.QueryRowContext(ctx, checkTableSQL, dbArg, dbArg, table).Scan(&schema, &kind); err != nil {
		return fmt.Errorf("find table: %w", err)
	}
	if !schema.Valid {
		return &MappingError{"Table", fmt.Errorf("%q names no database and the DSN selects none: write database.table, or end the DSN with /database", s.m.Table)}
	}
	if !kind.Valid {
		tables, err := s.names(ctx, listTablesSQL, schema.String, maxHint+1)
		if err != nil {
			return fmt.Errorf("list tables: %w", err)
		}
		hint := " (the account sees no table there)"
		if len(tables) > 0 {
			hint = namesHint("tables", tables)
		}
		return &MappingError{"Table", fmt.Errorf("no table %q in database %s%s", table, schema.String, hint)}
	}

	type column struct{ name, dataType string }
	var cols []column
	if err := s.query(ctx, listColumnsSQL, []any{schema.String, table}, func(rows *sql.Rows) error {
		var c column
		err := rows.Scan(&c.name, &c.dataType)
		cols = append(cols, c)
		return err
	}); err != nil {
		return fmt.Errorf("list columns: %w", err)
	}
	find := func(name string) (column, bool) {
		for _, c := range cols {
			if strings.EqualFold(c.name, name) {
				return c, true
			}
		}
		return column{}, false
	}
	missing := func(field, name string) error {
		names := make([]string, len(cols))
		for i, c := range cols {
			names[i] = c.name
		}
		return &MappingError{field, fmt.Errorf("no column %q in table %s%s", name, s.m.Table, namesHint("columns", names))}
	}
	if _, ok := find(s.m.KeyColumn); !ok {
		return missing("KeyColumn", s.m.KeyColumn)
	}
	for _, v := range s.m.ValueColumns {
		if _, ok := find(v); !ok {
			return missing("ValueColumns", v)
		}
	}
	if needUpdated {
		c, ok := find(s.m.UpdatedColumn)
		if !ok {
			return missing("UpdatedColumn", s.m.UpdatedColumn)
		}
		if t := strings.ToLower(c.dataType); t != "timestamp" && t != "datetime" {
			return &MappingError{"UpdatedColumn", fmt.Errorf("%s is a %s column, want timestamp or datetime", c.name, t)}
		}
	}
	if kind.String == "VIEW" {
		return &MappingWarning{"Table", fmt.Errorf("%s is a view: whether %s is unique cannot be checked", s.m.Table, s.m.KeyColumn)}
	}

	type index struct {
		unique bool
		cols   []string
	}
	indexes := map[string]*index{}
	if err := s.query(ctx, listIndexesSQL, []any{schema.String, table}, func(rows *sql.Rows) error {
		var name, col string
		var nonUnique int
		if err := rows.Scan(&name, &nonUnique, &col); err != nil {
			return err
		}
		ix := indexes[name]
		if ix == nil {
			ix = &index{unique: nonUnique == 0}
			indexes[name] = ix
		}
		ix.cols = append(ix.cols, col)
		return nil
	}); err != nil {
		return fmt.Errorf("list indexes: %w", err)
	}
	keyUnique, updatedIndexed := false, false
	for _, ix := range indexes {
		keyUnique = keyUnique || ix.unique && len(ix.cols) == 1 && strings.EqualFold(ix.cols[0], s.m.KeyColumn)
		updatedIndexed = updatedIndexed || strings.EqualFold(ix.cols[0], s.m.UpdatedColumn)
	}
	if !keyUnique {
		return &MappingError{"KeyColumn", fmt.Errorf("%s is not unique in table %s: make it the primary key or give it a unique index of its own", s.m.KeyColumn, s.m.Table)}
	}
	if needUpdated && !updatedIndexed {
		return &MappingWarning{"UpdatedColumn", fmt.Errorf("%s has no index, so every refresh reads the whole table %s: add one (CREATE INDEX … ON %s (%s))", s.m.UpdatedColumn, s.m.Table, s.m.Table, s.m.UpdatedColumn)}
	}
	return nil
}

// query runs a small statement and calls each for every row.
func (s *MySQL) query(ctx context.Context, q string, args []any, each func(*sql.Rows) error) error {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// names returns the first column of q's rows.
func (s *MySQL) names(ctx context.Context, q string, args ...any) ([]string, error) {
	var names []string
	err := s.query(ctx, q, args, func(rows *sql.Rows) error {
		var n string
		err := rows.Scan(&n)
		names = append(names, n)
		return err
	})
	return names, err
}

// namesHint renders a short list of names for an error, " (columns: a, b)", or "" when it
// is longer than maxHint.
func namesHint(what string, names []string) string {
	if len(names) == 0 || len(names) > maxHint {
		return ""
	}
	return " (" + what + ": " + strings.Join(names, ", ") + ")"
}

// isWarning reports whether err is a *MappingWarning.
func isWarning(err error) bool {
	var w *MappingWarning
	return errors.As(err, &w)
}

// MySQL's error numbers for a statement naming a column or a table that does not exist.
const (
	errBadField    = 1054 // ER_BAD_FIELD_ERROR
	errNoSuchTable = 1146 // ER_NO_SUCH_TABLE
)

// explain returns the *MappingError behind err when err is MySQL's "unknown column" or "no
// such table" and checkMapping names the cause (the table changed under the running
// service), and err otherwise.
func (s *MySQL) explain(ctx context.Context, err error, needUpdated bool) error {
	var my *mysql.MySQLError
	if !errors.As(err, &my) || my.Number != errBadField && my.Number != errNoSuchTable {
		return err
	}
	var me *MappingError
	if errors.As(s.checkMapping(ctx, needUpdated), &me) {
		return me
	}
	return err
}

// mappingOr returns the *MappingError in err as it is — it names the setting and the
// table, all there is to say — and otherwise err wrapped by format, whose last verb is %w.
func mappingOr(err error, format string, args ...any) error {
	var me *MappingError
	if errors.As(err, &me) {
		return me
	}
	return fmt.Errorf(format, append(args, err)...)
}
