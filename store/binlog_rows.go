package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	vmysql "vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/binlog"
	querypb "vitess.io/vitess/go/vt/proto/query"

	"wxlookup/cache"
)

// A row event carries a row as binary column values in table order; the snapshot reads the
// same row as text. This file turns the first into the second for the mapped columns, so
// that a row has the same Values (and so the same Sum) whichever way it arrived.
// binlog.CellValue (vitess) decodes each value into MySQL's text form, which is what the
// snapshot reads too (every column as CONVERT(… USING utf8mb4)), with two exceptions: a
// TIMESTAMP is stored as a Unix time, and CellValue writes it in UTC where the snapshot's
// session writes it in its own time zone; and CONVERT turns the bytes of a binary string
// that are not UTF-8 into '?'. asSnapshot does both; it must change if the snapshot's
// statements do. Floating-point columns (rendered differently), ENUM and SET (the
// log holds their numbers, not their labels), BIT, JSON and spatial columns are not
// supported as key or value columns.

// feedColumn is a mapped column as information_schema describes it.
type feedColumn struct {
	name  string
	types []byte         // the binlog column types it may be written with
	field *querypb.Field // what binlog.CellValue needs to know (sign, binary)
	form  valueForm      // how the snapshot's scan turns MySQL's text form into its own
}

// valueForm is a conversion asSnapshot applies.
type valueForm byte

const (
	asText    valueForm = iota // kept as MySQL writes it (DATE, DATETIME and YEAR included)
	asUTCTime                  // TIMESTAMP: CellValue writes it in UTC; the snapshot in the session zone
	asUTF8                     // BINARY, VARBINARY, BLOB: bytes that are not UTF-8 become '?', as CONVERT makes them
)

// tableShape is what Follow expects the mapped table's TABLE_MAP events to say.
type tableShape struct {
	ncols int
	pos   []int        // table positions of the key column, then the value columns
	cols  []feedColumn // the columns at pos
	loc   *time.Location
}

// binlogTypes lists, per information_schema DATA_TYPE, the binlog column types a supported
// column is written with (the older types where a table made by an old server keeps them).
var binlogTypes = map[string][]byte{
	"tinyint":    {binlog.TypeTiny},
	"smallint":   {binlog.TypeShort},
	"mediumint":  {binlog.TypeInt24},
	"int":        {binlog.TypeLong},
	"integer":    {binlog.TypeLong},
	"bigint":     {binlog.TypeLongLong},
	"decimal":    {binlog.TypeNewDecimal},
	"numeric":    {binlog.TypeNewDecimal},
	"char":       {binlog.TypeString},
	"binary":     {binlog.TypeString},
	"varchar":    {binlog.TypeVarchar},
	"varbinary":  {binlog.TypeVarchar},
	"tinytext":   {binlog.TypeBlob},
	"text":       {binlog.TypeBlob},
	"mediumtext": {binlog.TypeBlob},
	"longtext":   {binlog.TypeBlob},
	"tinyblob":   {binlog.TypeBlob},
	"blob":       {binlog.TypeBlob},
	"mediumblob": {binlog.TypeBlob},
	"longblob":   {binlog.TypeBlob},
	"date":       {binlog.TypeDate, binlog.TypeNewDate},
	"datetime":   {binlog.TypeDateTime2, binlog.TypeDateTime},
	"timestamp":  {binlog.TypeTimestamp2, binlog.TypeTimestamp},
	"time":       {binlog.TypeTime2, binlog.TypeTime},
	"year":       {binlog.TypeYear},
}

// feedCharsets are the character sets whose bytes the text protocol (utf8mb4) returns
// unchanged, so the log's bytes are the snapshot's.
var feedCharsets = map[string]bool{"utf8mb4": true, "utf8mb3": true, "utf8": true, "ascii": true, "binary": true}

// shapeError is readShape's error when the server answered and the table is not as the
// mapping needs it: missing, without a mapped column, or with a column the feed cannot
// follow. Follow then asks for a new snapshot, whose mapping check names the problem.
type shapeError struct{ err error }

func (e *shapeError) Error() string { return e.err.Error() }
func (e *shapeError) Unwrap() error { return e.err }

// readShape reads the mapped table's columns from information_schema (through the main
// account, which sees the columns of the table it may read) and checks that the mapped
// ones can be followed.
func (b *Binlog) readShape(ctx context.Context) (*tableShape, error) {
	ctx, cancel := context.WithTimeout(ctx, b.MySQL.timeout)
	defer cancel()
	rows, err := b.DB().QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(CHARACTER_SET_NAME, '')
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
		b.table.db, b.table.table)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s.%s: %w", b.table.db, b.table.table, err)
	}
	defer rows.Close()
	want := append([]string{b.mapping.KeyColumn}, b.mapping.ValueColumns...)
	sh := &tableShape{pos: make([]int, len(want)), cols: make([]feedColumn, len(want)), loc: b.loc}
	for i := range sh.pos {
		sh.pos[i] = -1
	}
	for rows.Next() {
		var name, dataType, colType, charset string
		if err := rows.Scan(&name, &dataType, &colType, &charset); err != nil {
			return nil, fmt.Errorf("read columns of %s.%s: %w", b.table.db, b.table.table, err)
		}
		for i, w := range want {
			if !strings.EqualFold(name, w) {
				continue
			}
			c, err := newColumn(name, strings.ToLower(dataType), strings.ToLower(colType), strings.ToLower(charset))
			if err != nil {
				return nil, &shapeError{err}
			}
			sh.pos[i], sh.cols[i] = sh.ncols, c
		}
		sh.ncols++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s.%s: %w", b.table.db, b.table.table, err)
	}
	if sh.ncols == 0 {
		return nil, &shapeError{fmt.Errorf("table %s.%s not found (or the account may not read it)", b.table.db, b.table.table)}
	}
	for i, p := range sh.pos {
		if p < 0 {
			return nil, &shapeError{fmt.Errorf("table %s.%s has no column %s", b.table.db, b.table.table, want[i])}
		}
	}
	return sh, nil
}

// newColumn describes a mapped column, or says why the change feed cannot render it as the
// snapshot does.
func newColumn(name, dataType, colType, charset string) (feedColumn, error) {
	types, ok := binlogTypes[dataType]
	if !ok {
		return feedColumn{}, fmt.Errorf("column %s is %s: the binlog change feed supports integer, DECIMAL, string and date/time key and value columns", name, colType)
	}
	if charset != "" && !feedCharsets[charset] {
		return feedColumn{}, fmt.Errorf("column %s has character set %s: the binlog change feed supports utf8mb4, utf8mb3, ascii and binary (ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4)", name, charset)
	}
	c := feedColumn{name: name, types: types, field: &querypb.Field{Type: querypb.Type_VARCHAR, ColumnType: colType}}
	switch {
	case dataType == "timestamp":
		c.form = asUTCTime
	case strings.HasSuffix(dataType, "int") || dataType == "integer":
		c.field.Type = querypb.Type_INT64
		if strings.Contains(colType, "unsigned") {
			c.field.Type = querypb.Type_UINT64
		}
	case dataType == "decimal" || dataType == "numeric":
		c.field.Type = querypb.Type_DECIMAL
	case dataType == "binary":
		c.field.Type = querypb.Type_BINARY // CellValue pads it with zero bytes, as stored
		c.form = asUTF8
	case dataType == "varbinary" || strings.HasSuffix(dataType, "blob"):
		c.field.Type = querypb.Type_VARBINARY
		c.form = asUTF8
	}
	return c, nil
}

// check compares a TABLE_MAP event of the mapped table with the shape and describes the
// first difference, or returns "".
func (sh *tableShape) check(tm *vmysql.TableMap) string {
	if len(tm.Types) != sh.ncols {
		return fmt.Sprintf("it has %d columns, the table had %d", len(tm.Types), sh.ncols)
	}
	for i, p := range sh.pos {
		if !containsByte(sh.cols[i].types, tm.Types[p]) {
			return fmt.Sprintf("column %s (position %d) is of binlog type %d, want one of %v", sh.cols[i].name, p+1, tm.Types[p], sh.cols[i].types)
		}
	}
	return ""
}

func containsByte(bs []byte, b byte) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

// rowDecoder renders the mapped columns of row images.
type rowDecoder struct {
	sh  *tableShape
	val [][]byte // per mapped column, the rendered value of the current image; nil: NULL
	buf []byte
}

func newRowDecoder(sh *tableShape) *rowDecoder {
	return &rowDecoder{sh: sh, val: make([][]byte, len(sh.pos))}
}

// image decodes one row image (the data of its present columns, and which of them are
// NULL) and returns it as a cache.Row, or ok false when its key is NULL (a row the
// snapshot does not read either). The row's strings are freshly allocated.
func (d *rowDecoder) image(tm *vmysql.TableMap, data []byte, present, nulls vmysql.Bitmap) (row cache.Row, ok bool, err error) {
	for i := range d.val {
		d.val[i] = nil
	}
	pos, seen := 0, 0 // byte offset in data; index among present columns (for nulls)
	for c := 0; c < len(tm.Types); c++ {
		if !present.Bit(c) {
			if i := d.mapped(c); i >= 0 {
				return cache.Row{}, false, fmt.Errorf("the row image lacks column %s: set binlog_row_image=FULL", d.sh.cols[i].name)
			}
			continue
		}
		isNull := nulls.Bit(seen)
		seen++
		if isNull {
			continue
		}
		i := d.mapped(c)
		if i < 0 {
			n, err := binlog.CellLength(data, pos, tm.Types[c], tm.Metadata[c])
			if err != nil {
				return cache.Row{}, false, fmt.Errorf("column %d: %w", c+1, err)
			}
			pos += n
			continue
		}
		v, n, err := binlog.CellValue(data, pos, tm.Types[c], tm.Metadata[c], d.sh.cols[i].field, false)
		if err != nil {
			return cache.Row{}, false, fmt.Errorf("column %s: %w", d.sh.cols[i].name, err)
		}
		pos += n
		raw := v.Raw()
		if raw == nil {
			raw = []byte{}
		}
		d.val[i] = asSnapshot(raw, d.sh.cols[i].form, d.sh.loc)
	}
	if d.val[0] == nil {
		return cache.Row{}, false, nil
	}
	d.buf = d.buf[:0]
	for _, v := range d.val {
		d.buf = append(d.buf, v...)
	}
	all := string(d.buf)
	row = cache.Row{Key: all[:len(d.val[0])], Values: make([]string, len(d.val)-1)}
	off := len(d.val[0])
	for i, v := range d.val[1:] {
		row.Values[i] = all[off : off+len(v)]
		off += len(v)
	}
	row.Sum = cache.RowSum(row.Key, row.Values)
	return row, true, nil
}

// mapped returns the index in sh.pos of table column c, or -1.
func (d *rowDecoder) mapped(c int) int {
	for i, p := range d.sh.pos {
		if p == c {
			return i
		}
	}
	return -1
}

// asSnapshot converts a value from CellValue's text form to the snapshot's (see the top of
// this file): a TIMESTAMP from UTC to the session's zone, keeping its fractional digits
// (the zero timestamp, and anything that does not read as a time, is kept as it is); the
// bytes of a binary string as CONVERT(… USING utf8mb4) gives them, each byte that does not
// begin a valid UTF-8 sequence replaced by '?'.
func asSnapshot(v []byte, r valueForm, loc *time.Location) []byte {
	switch r {
	case asText:
		return v
	case asUTF8:
		if utf8.Valid(v) {
			return v
		}
		out := make([]byte, 0, len(v))
		for len(v) > 0 {
			r, n := utf8.DecodeRune(v)
			if r == utf8.RuneError && n == 1 {
				out = append(out, '?')
			} else {
				out = append(out, v[:n]...)
			}
			v = v[n:]
		}
		return out
	}
	t, ok := parseTextTime(v, time.UTC)
	if !ok || t.IsZero() {
		return v
	}
	layout := "2006-01-02 15:04:05"
	if len(v) > len(layout)+1 {
		layout += "." + strings.Repeat("0", len(v)-len(layout)-1)
	}
	return t.In(loc).AppendFormat(nil, layout)
}

// parseTextTime reads "YYYY-MM-DD[ HH:MM:SS[.f…]]" as a wall time in loc; an all-zero
// value is the zero time.Time.
func parseTextTime(b []byte, loc *time.Location) (time.Time, bool) {
	const zero = "0000-00-00 00:00:00.000000"
	if len(b) != 10 && (len(b) < 19 || len(b) > 26) || len(b) == 20 {
		return time.Time{}, false
	}
	if string(b) == zero[:len(b)] {
		return time.Time{}, true
	}
	num := func(s []byte) (int, bool) {
		n, err := strconv.Atoi(string(s))
		return n, err == nil
	}
	year, ok1 := num(b[0:4])
	month, ok2 := num(b[5:7])
	day, ok3 := num(b[8:10])
	if !ok1 || !ok2 || !ok3 || b[4] != '-' || b[7] != '-' {
		return time.Time{}, false
	}
	if len(b) == 10 {
		return time.Date(year, time.Month(month), day, 0, 0, 0, 0, loc), true
	}
	hour, ok1 := num(b[11:13])
	min, ok2 := num(b[14:16])
	sec, ok3 := num(b[17:19])
	if !ok1 || !ok2 || !ok3 || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	nsec := 0
	if len(b) > 19 {
		frac := string(b[20:]) + "000000000"[len(b)-20:]
		n, ok := num([]byte(frac))
		if !ok || b[19] != '.' {
			return time.Time{}, false
		}
		nsec = n
	}
	return time.Date(year, time.Month(month), day, hour, min, sec, nsec, loc), true
}
