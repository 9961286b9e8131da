package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"wxlookup/cache"
	"wxlookup/internal/mariadbtest"
)

// TestCheckMapping: with MySQL reachable, each wrong name is a *MappingError naming the
// field, with the table's columns to help; a table that works but costs more is a
// *MappingWarning; a read-only account can run the check.
func TestCheckMapping(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	root, db := seededDB(t, srv, 10)
	dbName := dsnDB(t, root)
	ctx := testCtx(t)
	for _, q := range []string{
		"CREATE TABLE no_unique (part_no VARCHAR(64) NOT NULL, location VARCHAR(64), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), KEY (part_no), KEY (updated_at))",
		"CREATE TABLE pair_key (part_no VARCHAR(64) NOT NULL, bay INT NOT NULL, location VARCHAR(64), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (part_no, bay), KEY (updated_at))",
		"CREATE TABLE unique_key (id INT AUTO_INCREMENT PRIMARY KEY, part_no VARCHAR(64), location VARCHAR(64), updated_at DATETIME(6), UNIQUE KEY (part_no), KEY (updated_at, id))",
		"CREATE TABLE no_index (part_no VARCHAR(64) PRIMARY KEY, location VARCHAR(64), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
		"CREATE TABLE text_stamp (part_no VARCHAR(64) PRIMARY KEY, location VARCHAR(64), updated_at VARCHAR(32))",
		"CREATE VIEW located AS SELECT part_no, location, updated_at FROM workpiece_location",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	noDB, err := mysql.ParseDSN(root)
	if err != nil {
		t.Fatal(err)
	}
	noDB.DBName = ""
	const columns = " (columns: part_no, location, updated_at)"
	tests := []struct {
		name        string
		dsn         string // "" for root
		m           Mapping
		needUpdated bool
		field, msg  string // want a *MappingError (or with warning a *MappingWarning); "" for none
		warning     bool
	}{
		{"default", "", Mapping{}, true, "", "", false},
		{"read-only account", readOnlyDSN(t, srv, root, "pw"), Mapping{}, true, "", "", false},
		{"qualified, DSN without database", noDB.FormatDSN(), Mapping{Table: dbName + "." + DefaultTable}, true, "", "", false},
		{"unique index key", "", Mapping{Table: "unique_key"}, true, "", "", false},
		{"updated column misspelt", "", Mapping{UpdatedColumn: "updatd_at"}, true,
			"UpdatedColumn", `no column "updatd_at" in table workpiece_location` + columns, false},
		{"updated column misspelt, not needed", "", Mapping{UpdatedColumn: "updatd_at"}, false, "", "", false},
		{"table misspelt", "", Mapping{Table: "workpiece_locaton"}, true,
			"Table", `no table "workpiece_locaton" in database ` + dbName + " (tables: located, no_index, no_unique, pair_key, text_stamp, unique_key, workpiece_location)", false},
		{"table in another database", "", Mapping{Table: "plant_nowhere.workpiece_location"}, true,
			"Table", `no table "workpiece_location" in database plant_nowhere (the account sees no table there)`, false},
		{"table names case-sensitive", "", Mapping{Table: "Workpiece_Location"}, true,
			"Table", `no table "Workpiece_Location" in database ` + dbName + " (tables: located, no_index, no_unique, pair_key, text_stamp, unique_key, workpiece_location)", false},
		{"no database", noDB.FormatDSN(), Mapping{}, true,
			"Table", `"workpiece_location" names no database and the DSN selects none: write database.table, or end the DSN with /database`, false},
		{"key column misspelt", "", Mapping{KeyColumn: "part_nr"}, true,
			"KeyColumn", `no column "part_nr" in table workpiece_location` + columns, false},
		{"second value column misspelt", "", Mapping{ValueColumns: []string{"location", "bay"}}, true,
			"ValueColumns", `no column "bay" in table workpiece_location` + columns, false},
		{"column names ignore case", "", Mapping{KeyColumn: "PART_NO", ValueColumns: []string{"Location"}, UpdatedColumn: "UPDATED_AT"}, true, "", "", false},
		{"key not unique", "", Mapping{Table: "no_unique"}, true,
			"KeyColumn", "part_no is not unique in table no_unique: make it the primary key or give it a unique index of its own", false},
		{"key first of a composite primary key", "", Mapping{Table: "pair_key"}, true,
			"KeyColumn", "part_no is not unique in table pair_key: make it the primary key or give it a unique index of its own", false},
		{"updated column not a time", "", Mapping{Table: "text_stamp"}, true,
			"UpdatedColumn", "updated_at is a varchar column, want timestamp or datetime", false},
		{"updated column not indexed", "", Mapping{Table: "no_index"}, true,
			"UpdatedColumn", "updated_at has no index, so every refresh reads the whole table no_index: add one (CREATE INDEX … ON no_index (updated_at))", true},
		{"updated column not indexed, not needed", "", Mapping{Table: "no_index"}, false, "", "", false},
		{"view", "", Mapping{Table: "located"}, true,
			"Table", "located is a view: whether part_no is unique cannot be checked", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := tt.dsn
			if dsn == "" {
				dsn = root
			}
			s := openSource(t, dsn, MySQLConfig{Mapping: tt.m})
			err := s.CheckMapping(testCtx(t), tt.needUpdated)
			var me *MappingError
			var mw *MappingWarning
			switch {
			case tt.field == "":
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
			case tt.warning:
				if !errors.As(err, &mw) || errors.As(err, &me) {
					t.Fatalf("got %v (%T), want a *MappingWarning", err, err)
				}
				if mw.Field != tt.field || mw.Err.Error() != tt.msg {
					t.Fatalf("got %s: %q, want %s: %q", mw.Field, mw.Err, tt.field, tt.msg)
				}
			default:
				if !errors.As(err, &me) {
					t.Fatalf("got %v (%T), want a *MappingError", err, err)
				}
				if me.Field != tt.field || me.Err.Error() != tt.msg {
					t.Fatalf("got %s: %q, want %s: %q", me.Field, me.Err, tt.field, tt.msg)
				}
				if want := "store: mapping: " + tt.field + ": " + tt.msg; err.Error() != want {
					t.Fatalf("got %q, want %q", err, want)
				}
			}
		})
	}
}

// TestCheckMappingUnreachable: with MySQL unreachable the error is neither a *MappingError
// nor a *MappingWarning, so the caller tries again later.
func TestCheckMappingUnreachable(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	s := openSource(t, "ro:pw@tcp("+closedAddr(t)+")/plant", MySQLConfig{QueryTimeout: 2 * time.Second})
	err := s.CheckMapping(context.Background(), true)
	var me *MappingError
	if err == nil || errors.As(err, &me) || isWarning(err) || !strings.HasPrefix(err.Error(), "store: check mapping: ") {
		t.Fatalf("got %v (%T), want a plain store: check mapping error", err, err)
	}
}

// TestMappingChangedUnderSource: a column dropped or renamed while the service runs makes
// the next Snapshot, Changes and Get fail with the *MappingError naming it.
func TestMappingChangedUnderSource(t *testing.T) {
	mariadbtest.CheckLeaks(t)
	srv := mariadbtest.Shared(t)
	tests := []struct {
		name, ddl string
		field     string
		msg       string
	}{
		{"value column dropped", "ALTER TABLE workpiece_location DROP COLUMN location", "ValueColumns",
			`no column "location" in table workpiece_location (columns: part_no, updated_at)`},
		{"updated column renamed", "ALTER TABLE workpiece_location RENAME COLUMN updated_at TO changed_at", "UpdatedColumn",
			`no column "updated_at" in table workpiece_location (columns: part_no, location, changed_at)`},
		{"table renamed", "RENAME TABLE workpiece_location TO wl_old", "Table", `no table "workpiece_location" in database `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn, db := seededDB(t, srv, 10)
			s := openSource(t, dsn, MySQLConfig{})
			_, wm := snapshotRows(t, s)
			if _, err := db.ExecContext(testCtx(t), tt.ddl); err != nil {
				t.Fatal(err)
			}
			check := func(what string, err error, field string) {
				t.Helper()
				var me *MappingError
				if !errors.As(err, &me) || me.Field != field || !strings.HasPrefix(me.Err.Error(), tt.msg) {
					t.Errorf("%s: got %v, want a *MappingError %s: %q…", what, err, field, tt.msg)
				}
			}
			_, err := s.Snapshot(testCtx(t), func(cache.Row) error { return nil })
			if tt.field == "UpdatedColumn" {
				if err != nil {
					t.Errorf("Snapshot: got %v, want none (it does not read the updated column)", err)
				}
			} else {
				check("Snapshot", err, tt.field)
			}
			_, err = s.Changes(testCtx(t), wm, func(cache.Row) error { return nil })
			check("Changes", err, tt.field)
			if tt.field != "UpdatedColumn" {
				_, err = s.Get(testCtx(t), DemoKey)
				check("Get", err, tt.field)
			}
		})
	}
}
