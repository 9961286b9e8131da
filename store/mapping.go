package store

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// The default mapping: the table and columns of schema.sql.
const (
	DefaultTable         = "workpiece_location"
	DefaultKeyColumn     = "part_no"
	DefaultValueColumn   = "location"
	DefaultUpdatedColumn = "updated_at"
)

// Mapping names the table a source reads and its columns. Names are SQL identifiers checked
// by Validate and quoted with backticks; they come from configuration, never from a message.
// A Mapping is a plain value, safe to copy and to use from several goroutines.
type Mapping struct {
	// Table is the table name, optionally qualified by a database ("plant.workpiece_location").
	Table string
	// KeyColumn is the looked-up column. It must be unique in the table (the primary key or
	// a unique index): the sources page through the table by it.
	KeyColumn string
	// ValueColumns are the columns a reply shows, in order; at least one.
	ValueColumns []string
	// UpdatedColumn is a TIMESTAMP column the writers keep current on every insert and
	// change (schema.sql has the server do it); incremental refreshes read by it.
	UpdatedColumn string
}

// DefaultMapping returns the mapping of schema.sql: workpiece_location(part_no → location),
// changes by updated_at.
func DefaultMapping() Mapping {
	return Mapping{
		Table:         DefaultTable,
		KeyColumn:     DefaultKeyColumn,
		ValueColumns:  []string{DefaultValueColumn},
		UpdatedColumn: DefaultUpdatedColumn,
	}
}

// WithDefaults returns m with each empty setting replaced by its Default… value.
func (m Mapping) WithDefaults() Mapping {
	d := DefaultMapping()
	if m.Table == "" {
		m.Table = d.Table
	}
	if m.KeyColumn == "" {
		m.KeyColumn = d.KeyColumn
	}
	if len(m.ValueColumns) == 0 {
		m.ValueColumns = d.ValueColumns
	}
	if m.UpdatedColumn == "" {
		m.UpdatedColumn = d.UpdatedColumn
	}
	return m
}

// identifier is what a table or column name may be: a plain, unquoted SQL identifier.
// Anything else (spaces, quotes, backticks, semicolons, comments) is refused rather than
// escaped, so no configured name can change the shape of a statement.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,63}$`)

// MappingError is the error Validate and CheckMapping return: which setting of the mapping
// is wrong, and why. Field is the Mapping field's name ("Table", "KeyColumn",
// "ValueColumns", "UpdatedColumn"), so a caller can name its own setting for it; Err says
// why without naming the field, for example `no column "updatd_at" in table
// workpiece_location`.
type MappingError struct {
	Field string
	Err   error
}

func (e *MappingError) Error() string {
	sep := ": "
	if strings.HasPrefix(e.Err.Error(), "[") {
		sep = "" // ValueColumns[2] …
	}
	return "store: mapping: " + e.Field + sep + e.Err.Error()
}

// Unwrap returns the reason.
func (e *MappingError) Unwrap() error { return e.Err }

// Validate reports the first setting of m that is not a plain SQL identifier, as a
// *MappingError naming it (for example `store: mapping: KeyColumn: "x; DROP TABLE" is not a
// plain SQL identifier`). Table may be qualified by a database, "db.table". It checks m as
// given: apply WithDefaults first to fill empty settings.
func (m Mapping) Validate() error {
	if err := checkTable(m.Table); err != nil {
		return &MappingError{"Table", err}
	}
	if err := checkIdent(m.KeyColumn); err != nil {
		return &MappingError{"KeyColumn", err}
	}
	if len(m.ValueColumns) == 0 {
		return &MappingError{"ValueColumns", errors.New("is empty, want at least one column")}
	}
	for i, c := range m.ValueColumns {
		if err := checkIdent(c); err != nil {
			return &MappingError{"ValueColumns", fmt.Errorf("[%d] %w", i, err)}
		}
	}
	if err := checkIdent(m.UpdatedColumn); err != nil {
		return &MappingError{"UpdatedColumn", err}
	}
	return nil
}

func checkIdent(s string) error {
	if s == "" {
		return errors.New("is empty")
	}
	if !identifier.MatchString(s) {
		return fmt.Errorf("%q is not a plain SQL identifier (letters, digits, _ and $, not starting with a digit, at most 64)", s)
	}
	return nil
}

func checkTable(s string) error {
	if s == "" {
		return errors.New("is empty")
	}
	db, table, ok := strings.Cut(s, ".")
	if !ok {
		return checkIdent(s)
	}
	if !identifier.MatchString(db) || !identifier.MatchString(table) {
		return fmt.Errorf("%q is not a plain SQL identifier or db.table", s)
	}
	return nil
}

// quote returns the identifier (or db.table) of a validated mapping in backticks.
func quote(name string) string {
	db, table, ok := strings.Cut(name, ".")
	if ok {
		return "`" + db + "`.`" + table + "`"
	}
	return "`" + name + "`"
}
