package store

import (
	"net/url"
	"strings"
	"testing"
	"time"

	vmysql "vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/binlog"

	"wxlookup/internal/mariadbtest"
)

// typedColumns are the value columns of the rendering test: every supported type, with
// the values each row gets.
var typedColumns = []struct {
	name, def string
	values    []string // SQL literals, one per row of typedKeys
}{
	{"v_varchar", "VARCHAR(100)", []string{"'plain'", "'车体新厂房3号 🚚'", "''", "NULL", "'trailing  '"}},
	{"v_char", "CHAR(8)", []string{"'abc'", "'车体'", "''", "NULL", "'pad  '"}},
	{"v_text", "TEXT", []string{"'text'", "REPEAT('长', 300)", "''", "NULL", "'x\\ny'"}},
	{"v_mediumtext", "MEDIUMTEXT", []string{"'m'", "'🚚'", "''", "NULL", "REPEAT('ab', 40000)"}},
	{"v_mb3", "VARCHAR(20) CHARACTER SET utf8mb3", []string{"'mb3'", "'库位'", "''", "NULL", "'é'"}},
	{"v_ascii", "VARCHAR(20) CHARACTER SET ascii", []string{"'ascii'", "'A-1'", "''", "NULL", "' '"}},
	{"v_varbinary", "VARBINARY(16)", []string{"'bin'", "X'00FF10'", "''", "NULL", "X'000000'"}},
	{"v_binary", "BINARY(4)", []string{"'ab'", "X'00FF'", "''", "NULL", "X'01000000'"}},
	{"v_blob", "BLOB", []string{"'blob'", "X'DEADBEEF'", "''", "NULL", "REPEAT(X'00', 300)"}},
	{"v_tiny", "TINYINT", []string{"0", "-128", "127", "NULL", "1"}},
	{"v_utiny", "TINYINT UNSIGNED", []string{"0", "255", "1", "NULL", "128"}},
	{"v_small", "SMALLINT", []string{"0", "-32768", "32767", "NULL", "-1"}},
	{"v_usmall", "SMALLINT UNSIGNED", []string{"0", "65535", "1", "NULL", "32768"}},
	{"v_medium", "MEDIUMINT", []string{"0", "-8388608", "8388607", "NULL", "-1"}},
	{"v_umedium", "MEDIUMINT UNSIGNED", []string{"0", "16777215", "1", "NULL", "8388608"}},
	{"v_int", "INT", []string{"0", "-2147483648", "2147483647", "NULL", "-1"}},
	{"v_uint", "INT UNSIGNED", []string{"0", "4294967295", "1", "NULL", "2147483648"}},
	{"v_big", "BIGINT", []string{"0", "-9223372036854775808", "9223372036854775807", "NULL", "-1"}},
	{"v_ubig", "BIGINT UNSIGNED", []string{"0", "18446744073709551615", "1", "NULL", "9223372036854775808"}},
	{"v_dec", "DECIMAL(12,4)", []string{"0", "-12345678.9012", "12.5", "NULL", "-0.0001"}},
	{"v_dec0", "DECIMAL(30,0)", []string{"0", "-123456789012345678901234567890", "1", "NULL", "999999999999999999999999999999"}},
	{"v_dec_frac", "DECIMAL(20,18)", []string{"0", "-1.000000000000000001", "0.5", "NULL", "99.999999999999999999"}},
	{"v_date", "DATE", []string{"'2024-02-29'", "'1000-01-01'", "'9999-12-31'", "NULL", "'1970-01-01'"}},
	{"v_dt", "DATETIME", []string{"'2024-02-29 23:59:59'", "'1000-01-01 00:00:00'", "'9999-12-31 23:59:59'", "NULL", "'2000-01-01 12:00:00'"}},
	{"v_dt3", "DATETIME(3)", []string{"'2024-02-29 23:59:59.123'", "'1000-01-01 00:00:00.000'", "'9999-12-31 23:59:59.999'", "NULL", "'2000-01-01 12:00:00.5'"}},
	{"v_dt6", "DATETIME(6)", []string{"'2024-02-29 23:59:59.123456'", "'1000-01-01 00:00:00'", "'9999-12-31 23:59:59.999999'", "NULL", "'2000-01-01 12:00:00.000001'"}},
	{"v_ts", "TIMESTAMP NULL", []string{"'2024-02-29 23:59:59'", "'1970-01-01 00:00:01'", "'2038-01-19 03:14:07'", "NULL", "'2001-09-09 01:46:40'"}},
	{"v_ts6", "TIMESTAMP(6) NULL", []string{"'2024-02-29 23:59:59.123456'", "'1970-01-01 00:00:01.000001'", "'2038-01-19 03:14:07.999999'", "NULL", "'2001-09-09 01:46:40.5'"}},
	{"v_time", "TIME", []string{"'12:34:56'", "'-838:59:59'", "'838:59:59'", "NULL", "'00:00:00'"}},
	{"v_time3", "TIME(3)", []string{"'12:34:56.789'", "'-12:34:56.5'", "'838:59:59.000'", "NULL", "'-00:00:00.001'"}},
	{"v_time6", "TIME(6)", []string{"'12:34:56.000001'", "'-838:59:59.000000'", "'100:00:00.5'", "NULL", "'-00:00:01.999999'"}},
	{"v_year", "YEAR", []string{"2024", "1901", "2155", "NULL", "0"}},
}

var typedKeys = []string{"plain", "车体-1", "edge", "nulls", "odd  "}

// TestBinlogRendersLikeSnapshot writes rows with every supported column type and checks
// that following renders each value, and so each Sum, exactly as the snapshot reads it,
// in the default session zone (UTC) and in another one.
func TestBinlogRendersLikeSnapshot(t *testing.T) {
	srv := mariadbtest.SharedBinlog(t)
	zones := []struct {
		name   string
		params string // added to the DSN
	}{
		{"utc", ""},
		{"time_zone +08:00", "time_zone=" + url.QueryEscape("'+08:00'") + "&loc=" + url.QueryEscape("Asia/Shanghai")},
	}
	for _, z := range zones {
		t.Run(z.name, func(t *testing.T) {
			fx := newBinlogFixture(t, srv, 0, func(c *BinlogConfig) {
				if z.params != "" {
					sep := "?"
					if strings.Contains(c.DSN, "?") {
						sep = "&"
					}
					c.DSN += sep + z.params
				}
				c.Mapping = Mapping{Table: "typed", KeyColumn: "k", UpdatedColumn: "updated_at"}
				for _, col := range typedColumns {
					c.Mapping.ValueColumns = append(c.Mapping.ValueColumns, col.name)
				}
			})
			defs := []string{"k VARCHAR(32) NOT NULL PRIMARY KEY"}
			for _, col := range typedColumns {
				defs = append(defs, col.name+" "+col.def)
			}
			defs = append(defs, "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)")
			fx.exec(t, "CREATE TABLE typed ("+strings.Join(defs, ", ")+") DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci")
			if err := fx.b.Check(testCtx(t)); err != nil {
				t.Fatalf("Check: %v", err)
			}

			pos := fx.position(t)
			for i, k := range typedKeys {
				vals := []string{"'" + k + "'"}
				for _, col := range typedColumns {
					vals = append(vals, col.values[i])
				}
				fx.exec(t, "INSERT INTO typed (k, "+strings.Join(fx.b.mapping.ValueColumns, ", ")+") VALUES ("+strings.Join(vals, ", ")+")")
			}
			// The update's before and after images are decoded too.
			fx.exec(t, "UPDATE typed SET k = 'moved' WHERE k = 'plain'")
			a := newAppliedRows()
			f := startFollow(t, fx.b, pos, a)
			f.waitCursor(t, fx.position(t))

			snap := newAppliedRows()
			snap.snapshot(t, fx.b)
			want, _ := snap.state()
			got, _ := a.state()
			if len(got) != len(want) {
				t.Fatalf("got %d rows, want %d", len(got), len(want))
			}
			for i, col := range typedColumns {
				t.Run(col.name, func(t *testing.T) {
					for k, w := range want {
						if g := got[k].Values; len(g) <= i || g[i] != w.Values[i] {
							t.Errorf("row %q: got %q, want %q (snapshot)", k, valueAt(g, i), w.Values[i])
						}
					}
				})
			}
			for k, w := range want {
				if got[k].Sum != w.Sum {
					t.Errorf("row %q: Sum %d, want %d", k, got[k].Sum, w.Sum)
				}
			}
		})
	}
}

func valueAt(vs []string, i int) string {
	if i < len(vs) {
		return vs[i]
	}
	return "(missing)"
}

func TestShapeCheck(t *testing.T) {
	sh := &tableShape{ncols: 3, pos: []int{0, 2}, cols: []feedColumn{
		{name: "k", types: []byte{binlog.TypeVarchar}},
		{name: "v", types: []byte{binlog.TypeDateTime2, binlog.TypeDateTime}},
	}}
	tests := []struct {
		name  string
		types []byte
		want  string
	}{
		{"same", []byte{binlog.TypeVarchar, binlog.TypeLong, binlog.TypeDateTime2}, ""},
		{"old datetime", []byte{binlog.TypeVarchar, binlog.TypeBlob, binlog.TypeDateTime}, ""},
		{"column added", []byte{binlog.TypeVarchar, binlog.TypeLong, binlog.TypeDateTime2, binlog.TypeLong}, "it has 4 columns, the table had 3"},
		{"type changed", []byte{binlog.TypeVarchar, binlog.TypeLong, binlog.TypeLong}, "column v (position 3) is of binlog type 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sh.check(&vmysql.TableMap{Types: tt.types})
			if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAsSnapshot(t *testing.T) {
	cst := time.FixedZone("CST", 8*3600)
	tests := []struct {
		in   string
		r    valueForm
		loc  *time.Location
		want string
	}{
		{"abc ", asText, time.UTC, "abc "},
		{"0000", asText, time.UTC, "0000"},
		{"2024-02-29 23:59:59.500", asText, cst, "2024-02-29 23:59:59.500"},
		{"0000-00-00 00:00:00.000000", asUTCTime, cst, "0000-00-00 00:00:00.000000"},
		{"2024-02-29 20:00:00", asUTCTime, time.UTC, "2024-02-29 20:00:00"},
		{"2024-02-29 20:00:00.25", asUTCTime, cst, "2024-03-01 04:00:00.25"},
		{"2024-02-29 20:00:00.000001", asUTCTime, cst, "2024-03-01 04:00:00.000001"},
		{"not a time", asUTCTime, time.UTC, "not a time"},
		{"\xde\xad\xbe\xef", asUTF8, time.UTC, "\xde\xad??"},
		{"\x00\xff\x10", asUTF8, time.UTC, "\x00?\x10"},
		{"车体", asUTF8, time.UTC, "车体"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := string(asSnapshot([]byte(tt.in), tt.r, tt.loc)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
