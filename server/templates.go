package server

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// Default reply templates (SPEC section 4). The found template gives exactly
// `[18-546]的工作台位为[车体新厂房3号]` for the demo row.
const (
	DefaultWelcome = "欢迎关注！发送工件号即可查询工作台位，例如：?18-546\n发送“帮助”查看用法。"
	DefaultHelp    = "发送工件号查询工作台位，例如：?18-546\n一次可查多个，用空格、逗号或换行分开（最多10个）。"
	// DefaultQueriesHelp is the help text's first line when queries are configured; each
	// query's help line follows it.
	DefaultQueriesHelp  = "可以发送以下查询，一次可查多个，用空格、逗号或换行分开（最多10个）："
	DefaultFound        = "[{{.Key}}]的工作台位为[{{.Value}}]"
	DefaultNotFound     = "[{{.Key}}]未找到，请核对工件号。"
	DefaultDidYouMean   = "您是不是要找：{{.Suggestions}}"
	DefaultUnauthorised = "抱歉，您没有查询权限，请联系管理员开通。"
	DefaultStarting     = "系统正在启动，请稍后再试。"
	DefaultRateLimited  = "查询太频繁，请稍后再试。"
	DefaultUnavailable  = "查询暂时不可用，请稍后再试。"
	DefaultTooMany      = "（一次最多查询{{.Max}}个，只查询了前{{.Max}}个）"
)

// TemplateTexts holds the reply texts as Go text/template sources. Empty fields take the
// defaults. Found and NotFound are the templates of the implicit query (and the defaults of
// configured queries that set none); the found template sees FoundData, every other one
// MessageData.
type TemplateTexts struct {
	Welcome      string // {{.OpenID}}
	Help         string // {{.OpenID}}; each query's help line follows it
	Found        string // FoundData: {{.Key}} as stored, {{.Value}}, {{.Values}}, {{.Column.name}}, {{.Query}}
	NotFound     string // {{.Key}} and {{.Query}}: the number as asked; {{.Suggestions}}
	DidYouMean   string // {{.Suggestions}}: the line after a not-found line that offers the nearest keys
	Unauthorised string // {{.OpenID}}
	Starting     string // {{.OpenID}}
	RateLimited  string // {{.OpenID}}
	Unavailable  string // {{.Key}} as asked
	TooMany      string // {{.Max}}
}

// FoundData is what a query's found template sees for one row. The loader renders it when
// the row enters the cache, so it knows the row and the query, never the message.
type FoundData struct {
	Key    string            // the key as stored in the database
	Value  string            // the first value column
	Values []string          // every value column, in configured order
	Column map[string]string // value columns by name
	Query  string            // the name of the query
}

// MessageData is what every template but found sees.
type MessageData struct {
	// Key and Query are the number as asked, without the query's prefix (not found,
	// unavailable): Query is the name for it, Key the one templates have always had.
	Key, Query string
	// Suggestions are the nearest keys of the query's table to a number not found, as
	// stored; empty when nothing is close. {{.Suggestions}} prints them joined by "、".
	Suggestions Suggestions
	OpenID      string // the sender
	Max         int    // MaxQueries
}

// Suggestions are the keys a not-found reply offers; printed by a template, they read
// "18-546、18-564".
type Suggestions []string

// String joins the suggestions with the ideographic comma.
func (s Suggestions) String() string { return strings.Join(s, "、") }

// MaxSuggestions is how many nearest keys a not-found reply offers at most.
const MaxSuggestions = 3

// Templates are the compiled reply texts shared by every query, and the found and not-found
// templates of the implicit query. Safe for concurrent use.
type Templates struct {
	location                                *Query // the implicit query's templates (TemplateTexts.Found, NotFound)
	welcome, help, didYouMean, unauthorised *replyTemplate
	starting, rateLimited, unavailable, too *replyTemplate
}

// NewTemplates compiles texts; valueColumns names the value columns for {{.Column.name}}.
// An invalid template is reported with the name of its setting.
func NewTemplates(texts TemplateTexts, valueColumns []string) (*Templates, error) {
	loc, err := NewQuery(QuerySpec{Name: ImplicitQuery, ValueColumns: valueColumns, Found: texts.Found, NotFound: texts.NotFound})
	if err != nil {
		var qe *QueryError
		if errors.As(err, &qe) {
			return nil, fmt.Errorf("server: template %s: %w", qe.Field, qe.Err)
		}
		return nil, err
	}
	t := &Templates{location: loc}
	for _, f := range []struct {
		dst       **replyTemplate
		name, src string
	}{
		{&t.welcome, "welcome", pick(texts.Welcome, DefaultWelcome)},
		{&t.help, "help", pick(texts.Help, DefaultHelp)},
		{&t.didYouMean, "did_you_mean", pick(texts.DidYouMean, DefaultDidYouMean)},
		{&t.unauthorised, "unauthorised", pick(texts.Unauthorised, DefaultUnauthorised)},
		{&t.starting, "starting", pick(texts.Starting, DefaultStarting)},
		{&t.rateLimited, "rate_limited", pick(texts.RateLimited, DefaultRateLimited)},
		{&t.unavailable, "unavailable", pick(texts.Unavailable, DefaultUnavailable)},
		{&t.too, "too_many", pick(texts.TooMany, DefaultTooMany)},
	} {
		if *f.dst, err = compileTemplate(f.name, f.src, nil); err != nil {
			return nil, fmt.Errorf("server: template %s: %w", f.name, err)
		}
	}
	return t, nil
}

// pick returns s, or def when s is blank.
func pick(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

// Found renders the found line of a row of the implicit query: the key as stored and its
// value columns (see Query.AppendFound).
func (t *Templates) Found(key string, values []string) []byte {
	return t.location.AppendFound(nil, key, values)
}

// replyTemplate is one compiled reply text. A template of only text and single-field
// actions ({{.Key}}, {{.Value}}, {{.Column.name}}, {{.Suggestions}}, …) is rendered by
// appending its pieces, without reflection or allocation beyond dst's growth: the found
// template runs for every row of every full reload, the others on the webhook's hot path.
// Anything richer runs through text/template. A replyTemplate is immutable and safe for
// concurrent use.
type replyTemplate struct {
	tmpl   *template.Template
	pieces []piece     // nil when the template is not simple
	found  *foundScope // the found template's row scope; nil for the message templates
	uses   map[string]bool
}

// foundScope is what a found template's fields refer to: the query's name and its value
// columns.
type foundScope struct {
	query   string
	columns []string
}

// piece is one piece of a simple template: literal text, or one field of the data.
type piece struct {
	field field
	text  string // fieldText
	col   int    // fieldValue: the index of the value column
}

// field is what a piece renders.
type field uint8

const (
	fieldText        field = iota
	fieldStoredKey         // found: the key as stored
	fieldValue             // found: a value column by index
	fieldKey               // the number as asked
	fieldSuggestions       // the nearest keys, joined by "、"
	fieldOpenID            // the sender
	fieldMax               // MaxQueries
)

// vars are what a template renders: a row (found) or a message's context (the others).
type vars struct {
	stored      string   // found: the key as stored
	values      []string // found: the value columns
	asked       []byte   // the number as asked
	suggestions []string
	openID      []byte
}

// compileTemplate parses src and tries it once on sample data, so that a reference to a
// field the data does not have fails at start-up rather than on a worker's message. With
// found set it is a found template (FoundData), else a message template (MessageData).
func compileTemplate(name, src string, found *foundScope) (*replyTemplate, error) {
	tmpl, err := template.New(name).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, err
	}
	t := &replyTemplate{tmpl: tmpl, found: found, uses: fieldsUsed(tmpl.Tree)}
	var sample any = MessageData{Key: "k", Query: "k", Suggestions: Suggestions{"s"}, OpenID: "o", Max: MaxQueries}
	if found != nil {
		if err := found.checkColumns(tmpl.Tree); err != nil {
			return nil, err
		}
		values := make([]string, max(len(found.columns), 1))
		for i := range values {
			values[i] = "v"
		}
		sample = t.foundData(&vars{stored: "k", values: values})
	}
	if err := tmpl.Execute(&bytes.Buffer{}, sample); err != nil {
		return nil, err
	}
	t.pieces = t.simplePieces(tmpl.Tree)
	return t, nil
}

// simplePieces splits a template into pieces when it is only text and actions that name
// one field the fast path renders; otherwise nil, and text/template renders it.
func (t *replyTemplate) simplePieces(tree *parse.Tree) []piece {
	pieces := []piece{}
	if tree == nil || tree.Root == nil {
		return pieces
	}
	for _, n := range tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			pieces = append(pieces, piece{field: fieldText, text: string(n.Text)})
		case *parse.ActionNode:
			p, ok := t.fieldPiece(soleField(n))
			if !ok {
				return nil
			}
			pieces = append(pieces, p)
		default:
			return nil
		}
	}
	return pieces
}

// fieldPiece returns the piece that renders the field reference ident (such as [Column
// location] for {{.Column.location}}), or false when the fast path does not render it.
func (t *replyTemplate) fieldPiece(ident []string) (piece, bool) {
	if t.found != nil {
		switch {
		case len(ident) == 1 && ident[0] == "Key":
			return piece{field: fieldStoredKey}, true
		case len(ident) == 1 && ident[0] == "Value":
			return piece{field: fieldValue, col: 0}, true
		case len(ident) == 1 && ident[0] == "Query":
			return piece{field: fieldText, text: t.found.query}, true
		case len(ident) == 2 && ident[0] == "Column" && slices.Contains(t.found.columns, ident[1]):
			return piece{field: fieldValue, col: slices.Index(t.found.columns, ident[1])}, true
		}
		return piece{}, false
	}
	if len(ident) != 1 {
		return piece{}, false
	}
	switch ident[0] {
	case "Key", "Query":
		return piece{field: fieldKey}, true
	case "Suggestions":
		return piece{field: fieldSuggestions}, true
	case "OpenID":
		return piece{field: fieldOpenID}, true
	case "Max":
		return piece{field: fieldMax}, true
	}
	return piece{}, false
}

// soleField returns the identifiers of an action that is one field reference, such as
// [Column location] for {{.Column.location}}, or nil.
func soleField(n *parse.ActionNode) []string {
	if n.Pipe == nil || len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
		return nil
	}
	f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
	if !ok {
		return nil
	}
	return f.Ident
}

// append renders the template with v appended to dst. A failure of text/template (the
// template was tried at start-up, so only data can cause one) appends a plain rendering:
// "[key] v1 v2" for a row, the number as asked otherwise.
func (t *replyTemplate) append(dst []byte, v *vars) []byte {
	if t.pieces == nil {
		var b bytes.Buffer
		var data any
		if t.found != nil {
			data = t.foundData(v)
		} else {
			data = MessageData{Key: string(v.asked), Query: string(v.asked), Suggestions: v.suggestions,
				OpenID: string(v.openID), Max: MaxQueries}
		}
		if err := t.tmpl.Execute(&b, data); err != nil {
			if t.found != nil {
				return append(dst, "["+v.stored+"] "+strings.Join(v.values, " ")...)
			}
			return append(dst, v.asked...)
		}
		return append(dst, b.Bytes()...)
	}
	for _, p := range t.pieces {
		switch p.field {
		case fieldText:
			dst = append(dst, p.text...)
		case fieldStoredKey:
			dst = append(dst, v.stored...)
		case fieldValue:
			if p.col < len(v.values) {
				dst = append(dst, v.values[p.col]...)
			}
		case fieldKey:
			dst = append(dst, v.asked...)
		case fieldSuggestions:
			for i, s := range v.suggestions {
				if i > 0 {
					dst = append(dst, "、"...)
				}
				dst = append(dst, s...)
			}
		case fieldOpenID:
			dst = append(dst, v.openID...)
		case fieldMax:
			dst = strconv.AppendInt(dst, MaxQueries, 10)
		}
	}
	return dst
}

// foundData is the FoundData of the row in v: every configured column is in Column, empty
// when the row has fewer values.
func (t *replyTemplate) foundData(v *vars) FoundData {
	d := FoundData{Key: v.stored, Values: v.values, Column: make(map[string]string, len(t.found.columns)), Query: t.found.query}
	if len(v.values) > 0 {
		d.Value = v.values[0]
	}
	for i, c := range t.found.columns {
		d.Column[c] = ""
		if i < len(v.values) {
			d.Column[c] = v.values[i]
		}
	}
	return d
}

// checkColumns reports a {{.Column.name}} (or {{$.Column.name}}) whose name is not a value
// column.
func (s *foundScope) checkColumns(tree *parse.Tree) error {
	var err error
	eachField(tree, func(ident []string) {
		if err == nil && len(ident) >= 2 && ident[0] == "Column" && !slices.Contains(s.columns, ident[1]) {
			err = fmt.Errorf("{{.Column.%s}}: no value column %q (value_columns: %s)", ident[1], ident[1], strings.Join(s.columns, ", "))
		}
	})
	return err
}

// fieldsUsed returns the names of the data's fields a template refers to (Key,
// Suggestions, …), so the server can tell whether a not-found template shows the
// suggestions itself.
func fieldsUsed(tree *parse.Tree) map[string]bool {
	used := map[string]bool{}
	eachField(tree, func(ident []string) { used[ident[0]] = true })
	return used
}

// eachField calls fn with the identifiers of every reference to a field of the template's
// data: {{.X.Y}} outside {{range}} and {{with}} (inside them the dot is something else),
// and {{$.X.Y}} anywhere.
func eachField(tree *parse.Tree, fn func(ident []string)) {
	var walk func(n parse.Node, dotIsData bool)
	walk = func(n parse.Node, dotIsData bool) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(c, dotIsData)
				}
			}
		case *parse.ActionNode:
			walk(n.Pipe, dotIsData)
		case *parse.PipeNode:
			if n != nil {
				for _, c := range n.Cmds {
					walk(c, dotIsData)
				}
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a, dotIsData)
			}
		case *parse.ChainNode:
			walk(n.Node, dotIsData)
		case *parse.FieldNode:
			if dotIsData {
				fn(n.Ident)
			}
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				fn(n.Ident[1:])
			}
		case *parse.IfNode:
			walk(n.Pipe, dotIsData)
			walk(n.List, dotIsData)
			walk(n.ElseList, dotIsData)
		case *parse.RangeNode:
			walk(n.Pipe, dotIsData)
			walk(n.List, false)
			walk(n.ElseList, dotIsData)
		case *parse.WithNode:
			walk(n.Pipe, dotIsData)
			walk(n.List, false)
			walk(n.ElseList, dotIsData)
		}
	}
	if tree != nil && tree.Root != nil {
		walk(tree.Root, true)
	}
}
