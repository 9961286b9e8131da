package store

import "strings"

// This file reads the statements of binlog QUERY events just far enough to tell whether
// one changes the mapped table in a way row events do not describe: TRUNCATE, ALTER,
// RENAME, DROP, CREATE OR REPLACE, DROP DATABASE — or a write logged as a statement
// (a session that switched binlog_format to STATEMENT). It is not an SQL parser: it
// skips comments, honours the executable comments MySQL and MariaDB write (/*! … */),
// reads plain, `backtick` and "double-quoted" names, qualified or not, in any case, and
// errs on the side of "yes": a false alarm costs a reload, a missed one stale answers.

// qualifiedTable is a table named by a statement, resolved against the statement's default
// database.
type qualifiedTable struct{ db, table string }

// stmtTouches reports whether sql, run with default database defaultDB, changes the shape
// or the whole content of table t, and names the statement kind ("TRUNCATE", "ALTER
// TABLE", …) for the error.
func stmtTouches(sql, defaultDB string, t qualifiedTable) (kind string, ok bool) {
	toks := tokenizeSQL(sql)
	kind, names := affectedTables(toks, defaultDB)
	for _, n := range names {
		if strings.EqualFold(n.table, t.table) && strings.EqualFold(n.db, t.db) {
			return kind, true
		}
		if n.table == "" && strings.EqualFold(n.db, t.db) { // DROP DATABASE
			return kind, true
		}
	}
	return kind, false
}

// sqlToken is a word (keyword or bare name, as written), a quoted name, or one punctuation
// character. String literals are kept as kind 's' so they are never taken for names.
type sqlToken struct {
	kind byte // 'w' word, 'q' quoted name, 's' string literal, 'p' punctuation
	text string
}

// tokenizeSQL splits sql into tokens, dropping whitespace and comments but reading the
// inside of executable comments (/*!50100 … */, /*M!100301 … */) as code.
func tokenizeSQL(sql string) []sqlToken {
	var toks []sqlToken
	inExec := 0 // depth of executable comments open
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '#':
			i = skipSQLLine(sql, i)
		case c == '-' && strings.HasPrefix(sql[i:], "--") && (i+2 == len(sql) || isSQLSpace(sql[i+2])):
			i = skipSQLLine(sql, i)
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			j := i + 2
			switch {
			case strings.HasPrefix(sql[j:], "!"):
				j++
			case strings.HasPrefix(sql[j:], "M!"):
				j += 2
			default:
				end := strings.Index(sql[j:], "*/")
				if end < 0 {
					return toks
				}
				i = j + end + 2
				continue
			}
			for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
				j++ // the version the code needs
			}
			inExec++
			i = j
		case c == '*' && inExec > 0 && strings.HasPrefix(sql[i:], "*/"):
			inExec--
			i += 2
		case c == '`' || c == '"' || c == '\'':
			text, next := readSQLQuoted(sql, i)
			kind := byte('q')
			if c == '\'' {
				kind = 's'
			}
			toks = append(toks, sqlToken{kind, text})
			i = next
		case isSQLWordByte(c):
			j := i
			for j < len(sql) && isSQLWordByte(sql[j]) {
				j++
			}
			toks = append(toks, sqlToken{'w', sql[i:j]})
			i = j
		default:
			toks = append(toks, sqlToken{'p', sql[i : i+1]})
			i++
		}
	}
	return toks
}

func isSQLSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// isSQLWordByte reports whether c may be part of a bare identifier or keyword. Bytes of
// multi-byte UTF-8 characters count, as MySQL allows them in bare names.
func isSQLWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

func skipSQLLine(sql string, i int) int {
	if end := strings.IndexByte(sql[i:], '\n'); end >= 0 {
		return i + end + 1
	}
	return len(sql)
}

// readSQLQuoted reads the quoted text starting at sql[i] (its quote character), where a
// doubled quote stands for one (and, in string literals, a backslash escapes the next
// byte), and returns the unquoted text and the index after the closing quote.
func readSQLQuoted(sql string, i int) (string, int) {
	q := sql[i]
	var b strings.Builder
	j := i + 1
	for j < len(sql) {
		c := sql[j]
		switch {
		case c == '\\' && q == '\'' && j+1 < len(sql):
			b.WriteByte(sql[j+1])
			j += 2
		case c == q && j+1 < len(sql) && sql[j+1] == q:
			b.WriteByte(q)
			j += 2
		case c == q:
			return b.String(), j + 1
		default:
			b.WriteByte(c)
			j++
		}
	}
	return b.String(), j
}

// stmtParser walks tokens.
type stmtParser struct {
	toks []sqlToken
	i    int
	db   string // the statement's default database
}

// word reports whether the next token is one of the keywords and, if so, consumes it.
func (p *stmtParser) word(kws ...string) bool {
	if p.i >= len(p.toks) || p.toks[p.i].kind != 'w' {
		return false
	}
	for _, kw := range kws {
		if strings.EqualFold(p.toks[p.i].text, kw) {
			p.i++
			return true
		}
	}
	return false
}

// skipWords consumes any of the keywords, in any order and number.
func (p *stmtParser) skipWords(kws ...string) {
	for p.word(kws...) {
	}
}

func (p *stmtParser) punct(s string) bool {
	if p.i < len(p.toks) && p.toks[p.i].kind == 'p' && p.toks[p.i].text == s {
		p.i++
		return true
	}
	return false
}

// ident reads a name (bare or quoted).
func (p *stmtParser) ident() (string, bool) {
	if p.i >= len(p.toks) {
		return "", false
	}
	t := p.toks[p.i]
	if t.kind != 'w' && t.kind != 'q' {
		return "", false
	}
	p.i++
	return t.text, true
}

// name reads a table name, name or db.name, resolved against the default database.
func (p *stmtParser) name() (qualifiedTable, bool) {
	a, ok := p.ident()
	if !ok {
		return qualifiedTable{}, false
	}
	if p.punct(".") {
		if b, ok := p.ident(); ok {
			return qualifiedTable{a, b}, true
		}
		return qualifiedTable{}, false
	}
	return qualifiedTable{p.db, a}, true
}

// names reads a comma-separated list of table names.
func (p *stmtParser) names() []qualifiedTable {
	var out []qualifiedTable
	for {
		n, ok := p.name()
		if !ok {
			return out
		}
		out = append(out, n)
		if !p.punct(",") {
			return out
		}
	}
}

// everyName returns each name (or db.name) found anywhere in the remaining tokens: the
// over-approximation for the tails of statements (RENAME TO inside ALTER, multi-table
// writes) that are not worth parsing exactly.
func (p *stmtParser) everyName() []qualifiedTable {
	var out []qualifiedTable
	for p.i < len(p.toks) {
		if n, ok := p.name(); ok {
			out = append(out, n)
			continue
		}
		p.i++
	}
	return out
}

// affectedTables returns the kind of statement toks is and the tables it replaces,
// truncates, renames, drops or writes to; a name with an empty table stands for a whole
// database. Statements that cannot change the mapped table outside row events return
// no names.
func affectedTables(toks []sqlToken, defaultDB string) (string, []qualifiedTable) {
	p := &stmtParser{toks: toks, db: defaultDB}
	switch {
	case p.word("TRUNCATE"):
		p.word("TABLE")
		n, _ := p.name()
		return "TRUNCATE", []qualifiedTable{n}
	case p.word("ALTER"):
		p.skipWords("ONLINE", "OFFLINE", "IGNORE")
		if !p.word("TABLE") {
			return "ALTER", nil
		}
		if p.word("IF") {
			p.word("EXISTS")
		}
		return "ALTER TABLE", p.everyName()
	case p.word("RENAME"):
		if !p.word("TABLE", "TABLES") {
			return "RENAME", nil
		}
		return "RENAME TABLE", p.everyName()
	case p.word("DROP"):
		if p.word("DATABASE", "SCHEMA") {
			if p.word("IF") {
				p.word("EXISTS")
			}
			db, _ := p.ident()
			return "DROP DATABASE", []qualifiedTable{{db: db}}
		}
		if p.word("TEMPORARY") {
			return "DROP TEMPORARY TABLE", nil
		}
		if !p.word("TABLE", "TABLES") {
			return "DROP", nil
		}
		if p.word("IF") {
			p.word("EXISTS")
		}
		return "DROP TABLE", p.names()
	case p.word("CREATE"):
		if !p.word("OR") || !p.word("REPLACE") {
			return "CREATE", nil
		}
		if p.word("TEMPORARY") || !p.word("TABLE") {
			return "CREATE OR REPLACE", nil
		}
		n, _ := p.name()
		return "CREATE OR REPLACE TABLE", []qualifiedTable{n}
	case p.word("INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD"):
		kind := strings.ToUpper(p.toks[p.i-1].text)
		return kind + " logged as a statement", p.everyName()
	}
	return "", nil
}
