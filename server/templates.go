package server

import (
	"bytes"
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
	DefaultWelcome      = "欢迎关注！发送工件号即可查询工作台位，例如：?18-546\n发送“帮助”查看用法。"
	DefaultHelp         = "发送工件号查询工作台位，例如：?18-546\n一次可查多个，用空格、逗号或换行分开（最多10个）。"
	DefaultFound        = "[{{.Key}}]的工作台位为[{{.Value}}]"
	DefaultNotFound     = "[{{.Key}}]未找到，请核对工件号。"
	DefaultUnauthorised = "抱歉，您没有查询权限，请联系管理员开通。"
	DefaultStarting     = "系统正在启动，请稍后再试。"
	DefaultRateLimited  = "查询太频繁，请稍后再试。"
	DefaultUnavailable  = "查询暂时不可用，请稍后再试。"
	DefaultTooMany      = "（一次最多查询{{.Max}}个，只查询了前{{.Max}}个）"
)

// TemplateTexts holds the reply texts as Go text/template sources. Empty fields take the
// defaults. The fields a template may use are listed on each field.
type TemplateTexts struct {
	Welcome      string // {{.OpenID}}
	Help         string // {{.OpenID}}
	Found        string // {{.Key}} as stored, {{.Value}} first value column, {{.Values}} all, {{.Column.name}}
	NotFound     string // {{.Key}} as asked
	Unauthorised string // {{.OpenID}}
	Starting     string // {{.OpenID}}
	RateLimited  string // {{.OpenID}}
	Unavailable  string // {{.Key}} as asked
	TooMany      string // {{.Max}}
}

// FoundData is what the found template sees for one row.
type FoundData struct {
	Key    string            // the key as stored in the database
	Value  string            // the first value column
	Values []string          // every value column, in configured order
	Column map[string]string // value columns by name
}

// queryData is what the per-query templates (not found, unavailable) see.
type queryData struct {
	Key    string
	OpenID string
	Max    int
}

// Templates are the compiled reply texts. The found template runs in the loader (Found);
// the others run on the webhook's hot path, where a template of only text and {{.Key}},
// {{.OpenID}} or {{.Max}} actions is rendered by appending its pieces without allocating.
// Templates is safe for concurrent use.
type Templates struct {
	found                                   *template.Template
	foundPieces                             []foundPiece // nil when found is not simple
	columns                                 []string
	welcome, help, unauthorised, starting   *fastTemplate
	rateLimited, notFound, unavailable, too *fastTemplate
}

// NewTemplates compiles texts; valueColumns names the value columns for {{.Column.name}}.
// An invalid template is reported with the name of its setting.
func NewTemplates(texts TemplateTexts, valueColumns []string) (*Templates, error) {
	t := &Templates{columns: valueColumns}
	var err error
	pick := func(s, def string) string {
		if strings.TrimSpace(s) == "" {
			return def
		}
		return s
	}
	if t.found, err = template.New("found").Option("missingkey=zero").Parse(pick(texts.Found, DefaultFound)); err != nil {
		return nil, fmt.Errorf("server: template found: %w", err)
	}
	// Try the found template once on a sample row with every value column, so a reference
	// to a missing field fails at start-up rather than on a worker's message.
	sample := make([]string, max(len(valueColumns), 1))
	for i := range sample {
		sample[i] = "v"
	}
	if _, err := t.render(t.data("k", sample)); err != nil {
		return nil, fmt.Errorf("server: template found: %w", err)
	}
	t.foundPieces = simpleFoundPieces(t.found.Tree, valueColumns)
	for _, f := range []struct {
		dst       **fastTemplate
		name, src string
	}{
		{&t.welcome, "welcome", pick(texts.Welcome, DefaultWelcome)},
		{&t.help, "help", pick(texts.Help, DefaultHelp)},
		{&t.unauthorised, "unauthorised", pick(texts.Unauthorised, DefaultUnauthorised)},
		{&t.starting, "starting", pick(texts.Starting, DefaultStarting)},
		{&t.rateLimited, "rate_limited", pick(texts.RateLimited, DefaultRateLimited)},
		{&t.notFound, "not_found", pick(texts.NotFound, DefaultNotFound)},
		{&t.unavailable, "unavailable", pick(texts.Unavailable, DefaultUnavailable)},
		{&t.too, "too_many", pick(texts.TooMany, DefaultTooMany)},
	} {
		if *f.dst, err = newFastTemplate(f.name, f.src); err != nil {
			return nil, fmt.Errorf("server: template %s: %w", f.name, err)
		}
	}
	return t, nil
}

// Found renders the found line of a row: the key as stored and its value columns. It is
// called by the loader when a row enters the cache, never per request.
func (t *Templates) Found(key string, values []string) []byte {
	return t.AppendFound(nil, key, values)
}

// AppendFound is Found appending to dst. A found template of only text and {{.Key}},
// {{.Value}} or {{.Column.name}} actions (the default is one) is rendered by appending its
// pieces, without reflection or allocation beyond dst's growth: the loader renders every
// row of the table on each full reload, a million times on a large plant.
func (t *Templates) AppendFound(dst []byte, key string, values []string) []byte {
	if t.foundPieces != nil {
		for _, p := range t.foundPieces {
			switch {
			case p.value == pieceText:
				dst = append(dst, p.text...)
			case p.value == pieceKey:
				dst = append(dst, key...)
			case p.value < len(values):
				dst = append(dst, values[p.value]...)
			}
		}
		return dst
	}
	b, err := t.render(t.data(key, values))
	if err != nil {
		// The template was tried at start-up; a failure here can only come from data
		// (such as an index out of range); show the row plainly rather than nothing.
		return append(dst, "["+key+"] "+strings.Join(values, " ")...)
	}
	return append(dst, b...)
}

// foundPiece is one piece of a simple found template: text, the key, or a value column
// by index.
type foundPiece struct {
	text  string
	value int // pieceText, pieceKey, or the index of a value column
}

const (
	pieceText = -2
	pieceKey  = -1
)

// simpleFoundPieces splits a found template into pieces when it is only text and {{.Key}},
// {{.Value}} or {{.Column.name}} (name a configured value column) actions; otherwise nil,
// and text/template renders it.
func simpleFoundPieces(tree *parse.Tree, columns []string) []foundPiece {
	if tree == nil || tree.Root == nil {
		return []foundPiece{}
	}
	pieces := []foundPiece{}
	for _, n := range tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			pieces = append(pieces, foundPiece{text: string(n.Text), value: pieceText})
		case *parse.ActionNode:
			f := soleField(n)
			switch {
			case len(f) == 1 && f[0] == "Key":
				pieces = append(pieces, foundPiece{value: pieceKey})
			case len(f) == 1 && f[0] == "Value":
				pieces = append(pieces, foundPiece{value: 0})
			case len(f) == 2 && f[0] == "Column" && slices.Contains(columns, f[1]):
				pieces = append(pieces, foundPiece{value: slices.Index(columns, f[1])})
			default:
				return nil
			}
		default:
			return nil
		}
	}
	return pieces
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

func (t *Templates) data(key string, values []string) FoundData {
	d := FoundData{Key: key, Values: values, Column: make(map[string]string, len(values))}
	if len(values) > 0 {
		d.Value = values[0]
	}
	for i, c := range t.columns {
		if i < len(values) {
			d.Column[c] = values[i]
		}
	}
	return d
}

func (t *Templates) render(d FoundData) ([]byte, error) {
	var b bytes.Buffer
	if err := t.found.Execute(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// fastTemplate renders a template of text and simple field actions by appending its pieces;
// anything richer falls back to text/template.
type fastTemplate struct {
	tmpl   *template.Template
	pieces []piece // nil when the template is not simple
}

type piece struct {
	text  string
	field string // "" for text; else Key, OpenID or Max
}

func newFastTemplate(name, src string) (*fastTemplate, error) {
	tmpl, err := template.New(name).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, err
	}
	ft := &fastTemplate{tmpl: tmpl}
	// Execute once with sample data so unknown fields fail now, not on a worker's message.
	if err := tmpl.Execute(&bytes.Buffer{}, queryData{Key: "k", OpenID: "o", Max: 1}); err != nil {
		return nil, err
	}
	ft.pieces = simplePieces(tmpl.Tree)
	return ft, nil
}

// simplePieces returns the pieces of a template made only of text and {{.Key}}, {{.OpenID}}
// or {{.Max}}, or nil when it has anything else.
func simplePieces(tree *parse.Tree) []piece {
	if tree == nil || tree.Root == nil {
		return []piece{}
	}
	pieces := []piece{}
	for _, n := range tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			pieces = append(pieces, piece{text: string(n.Text)})
		case *parse.ActionNode:
			f := soleField(n)
			if len(f) != 1 {
				return nil
			}
			switch f[0] {
			case "Key", "OpenID", "Max":
				pieces = append(pieces, piece{field: f[0]})
			default:
				return nil
			}
		default:
			return nil
		}
	}
	return pieces
}

// appendTo renders the template with key, openID and max appended to dst.
func (ft *fastTemplate) appendTo(dst []byte, key, openID []byte, max int) []byte {
	if ft.pieces == nil {
		var b bytes.Buffer
		if err := ft.tmpl.Execute(&b, queryData{Key: string(key), OpenID: string(openID), Max: max}); err != nil {
			return append(dst, key...)
		}
		return append(dst, b.Bytes()...)
	}
	for _, p := range ft.pieces {
		switch p.field {
		case "":
			dst = append(dst, p.text...)
		case "Key":
			dst = append(dst, key...)
		case "OpenID":
			dst = append(dst, openID...)
		case "Max":
			dst = strconv.AppendInt(dst, int64(max), 10)
		}
	}
	return dst
}
