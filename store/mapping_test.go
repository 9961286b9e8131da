package store

import (
	"strings"
	"testing"
)

func TestMappingValidate(t *testing.T) {
	ok := DefaultMapping()
	with := func(f func(*Mapping)) Mapping {
		m := ok
		m.ValueColumns = append([]string(nil), ok.ValueColumns...)
		f(&m)
		return m
	}
	tests := []struct {
		name    string
		m       Mapping
		setting string // "" when valid
	}{
		{"default", ok, ""},
		{"qualified table", with(func(m *Mapping) { m.Table = "plant.workpiece_location" }), ""},
		{"several values", with(func(m *Mapping) { m.ValueColumns = []string{"location", "bay_2", "x$y"} }), ""},
		{"64 chars", with(func(m *Mapping) { m.KeyColumn = strings.Repeat("k", 64) }), ""},
		{"empty table", with(func(m *Mapping) { m.Table = "" }), "Table"},
		{"injection in table", with(func(m *Mapping) { m.Table = "x; DROP TABLE workpiece_location" }), "Table"},
		{"backtick in table", with(func(m *Mapping) { m.Table = "x`; DROP TABLE t; --" }), "Table"},
		{"three-part table", with(func(m *Mapping) { m.Table = "a.b.c" }), "Table"},
		{"empty db part", with(func(m *Mapping) { m.Table = ".t" }), "Table"},
		{"empty key", with(func(m *Mapping) { m.KeyColumn = "" }), "KeyColumn"},
		{"injection in key", with(func(m *Mapping) { m.KeyColumn = "x; DROP TABLE" }), "KeyColumn"},
		{"backtick in key", with(func(m *Mapping) { m.KeyColumn = "part`no" }), "KeyColumn"},
		{"comment in key", with(func(m *Mapping) { m.KeyColumn = "part_no--" }), "KeyColumn"},
		{"leading digit", with(func(m *Mapping) { m.KeyColumn = "1part" }), "KeyColumn"},
		{"65 chars", with(func(m *Mapping) { m.KeyColumn = strings.Repeat("k", 65) }), "KeyColumn"},
		{"no values", with(func(m *Mapping) { m.ValueColumns = nil }), "ValueColumns"},
		{"bad second value", with(func(m *Mapping) { m.ValueColumns = []string{"location", "a b"} }), "ValueColumns[1]"},
		{"quote in value", with(func(m *Mapping) { m.ValueColumns = []string{"loc'ation"} }), "ValueColumns[0]"},
		{"empty updated", with(func(m *Mapping) { m.UpdatedColumn = "" }), "UpdatedColumn"},
		{"paren in updated", with(func(m *Mapping) { m.UpdatedColumn = "now()" }), "UpdatedColumn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			if tt.setting == "" {
				if err != nil {
					t.Fatalf("got %q, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one naming %q", tt.setting)
			}
			want := "store: mapping: " + tt.setting + ": "
			if strings.HasSuffix(tt.setting, "]") {
				want = "store: mapping: " + tt.setting + " " // ValueColumns[1] "a b" is …
			}
			if !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("got %q, want prefix %q", err, want)
			}
		})
	}
}

func TestMappingWithDefaults(t *testing.T) {
	got := Mapping{KeyColumn: "teil"}.WithDefaults()
	if got.Table != DefaultTable || got.KeyColumn != "teil" || got.UpdatedColumn != DefaultUpdatedColumn ||
		len(got.ValueColumns) != 1 || got.ValueColumns[0] != DefaultValueColumn {
		t.Fatalf("got %+v, want defaults except KeyColumn teil", got)
	}
}

func TestQuote(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "workpiece_location", "`workpiece_location`"},
		{"qualified", "plant.t", "`plant`.`t`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quote(tt.in); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
